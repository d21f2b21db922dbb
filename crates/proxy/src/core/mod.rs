//! The RFC 3261 §16 stateful proxy core.
//!
//! Decision code lives in plain functions (validation, loop detection, route
//! processing, best-response selection) tested without a runtime; worker
//! [`shard::Shard`]s drive the sans-IO transaction layer. Messages are spread
//! over the shards by a hash of their Call-ID, so every message of a call is
//! handled by one shard, in arrival order; a shard runs in the task that
//! delivers to it ([`cell`]), with one timer task each.

pub mod admission;
pub mod branch;
pub mod cell;
pub mod response;
pub mod route;
pub mod router;
pub mod shard;
pub mod validate;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use sip_message::{Limits, Method};
use tokio::task::JoinHandle;

use crate::metrics::{DropReason, Metrics};
use crate::transport::{Destination, Dispatch, Inbound, Overloaded, SendFailure, SendToken};
use admission::Admission;
use cell::ShardCell;
pub use router::{
    Fallback, FallbackAction, ForkOutcome, ForkPlan, HeaderRewrite, NextHop, RouteDecision, RouteRequest, Router,
    Routing, StaticRouter, Target,
};
use shard::clock_now;
pub use shard::{Resolve, Resolving, ShardInput, Wire};
use tracing::warn;

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Worker shards; one per core by default.
    pub workers: usize,
    /// Messages waiting per shard while it is busy on another thread.
    /// Requests are refused (503) once a quarter of it is left, so that
    /// responses and ACKs, which nothing retransmits on TCP, still find room.
    pub queue_depth: usize,
    pub record_route: bool,
    /// RFC 3261 §16.6 step 11.
    pub timer_c: Duration,
    pub transactions: sip_transaction::Config,
    /// Limits for reparsing what the proxy itself forwards.
    pub limits: Limits,
    /// Max-Forwards given to requests that arrive without one (§16.6 step 3).
    pub max_forwards: u32,
    /// The realms this proxy challenges in (its domains): credentials for
    /// them are removed before forwarding (RFC 3261 §22.3).
    pub own_realms: Vec<String>,
    /// Calls in progress tracked per shard (for the drain and the
    /// `umproxy_dialogs_active` gauge); beyond it calls work but are not
    /// tracked.
    pub max_dialogs: usize,
    /// A tracked call with no request for this long is forgotten (its BYE
    /// went another way or never came).
    pub dialog_idle: Duration,
    /// Set at shutdown: new dialogs are refused with 503.
    pub drain: DrainGate,
    /// `[nat] mode`: marking the Contacts of NAT'd user agents.
    pub nat: crate::nat::NatMode,
    /// Per-source limit on new requests (`[limits] source_rate`).
    pub sources: admission::SourceLimits,
}

/// The shutdown switch the shards read: once set, requests that would
/// create a dialog are answered 503 with `Retry-After`, and everything
/// within existing dialogs is still served.
#[derive(Debug, Clone)]
pub struct DrainGate {
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// The `Retry-After` of the 503, seconds.
    pub retry_after_s: u32,
}

impl DrainGate {
    pub fn new(retry_after_s: u32) -> DrainGate {
        DrainGate { draining: Arc::default(), retry_after_s }
    }

    /// Start draining (there is no way back: the process is stopping).
    pub fn start(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Default for DrainGate {
    fn default() -> Self {
        DrainGate::new(30)
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            queue_depth: 32_768,
            record_route: true,
            timer_c: shard::DEFAULT_TIMER_C,
            transactions: sip_transaction::Config::default(),
            limits: Limits::default(),
            max_forwards: 70,
            own_realms: Vec::new(),
            max_dialogs: 100_000,
            dialog_idle: Duration::from_secs(6 * 3600),
            drain: DrainGate::default(),
            nat: crate::nat::NatMode::default(),
            sources: admission::SourceLimits::default(),
        }
    }
}

/// The transports' way in: spreads messages over the shards.
pub struct CoreDispatch {
    cells: Vec<Arc<ShardCell>>,
    /// Inbox capacity per shard.
    depth: usize,
    /// Free inbox slots kept for responses and ACKs.
    reserve: usize,
    /// SipHash with a random key: Call-IDs are chosen by peers, who must not
    /// be able to aim every call at one shard.
    hasher: RandomState,
    metrics: Arc<Metrics>,
    /// Per-source admission of new requests (None: no limit).
    sources: Option<admission::SourceLimiter>,
}

impl CoreDispatch {
    fn shard_for(&self, call_id: &str) -> usize {
        let n = self.cells.len().max(1);
        (self.hasher.hash_one(call_id) % n as u64) as usize
    }
}

impl Dispatch for CoreDispatch {
    fn deliver(&self, inbound: Inbound) -> Result<(), Overloaded> {
        let idx = self.shard_for(inbound.msg.call_id());
        let Some(cell) = self.cells.get(idx) else { return Err(Overloaded) };
        // What starts something new: a request out of any dialog, other than
        // ACK and CANCEL (which belong to an INVITE). Requests within
        // dialogs (BYE, re-INVITE), ACK, CANCEL and responses belong to
        // calls in progress.
        let msg = &inbound.msg;
        let is_new =
            msg.is_request() && !matches!(msg.method(), Some(Method::Ack | Method::Cancel)) && msg.to_tag().is_none();
        if is_new {
            if let Some(limiter) = &self.sources {
                let verified = inbound.tls.as_ref().is_some_and(|t| !t.names.is_empty());
                if !verified {
                    if let Admission::Drop { log } = limiter.admit(inbound.peer.remote.ip(), clock_now()) {
                        self.metrics.dropped(DropReason::RateLimited);
                        if log {
                            warn!(source = %inbound.peer.remote.ip(), transport = %inbound.peer.transport, rate = limiter.rate(), "source over its request rate: new requests dropped until it slows down");
                        }
                        return Ok(());
                    }
                }
            }
        }
        let queued = cell.queued();
        if queued >= self.depth || (is_new && queued + self.reserve >= self.depth) {
            // Overloaded: new work is refused early (503), while the
            // headroom left lets calls in progress finish. A response, ACK
            // or in-dialog request dropped here comes back as the peer's
            // retransmission.
            self.metrics.dropped(DropReason::Overload);
            return if is_new { Err(Overloaded) } else { Ok(()) };
        }
        cell.push(ShardInput::Inbound(inbound));
        cell.drain();
        Ok(())
    }

    fn send_failed(&self, token: SendToken, _dest: &Destination, failure: SendFailure) {
        if let Some(cell) = self.cells.get(usize::from(token.shard)) {
            if cell.queued() >= self.depth {
                self.metrics.dropped(DropReason::Overload);
                return;
            }
            cell.push(ShardInput::SendFailed(token, failure));
            cell.drain();
        }
    }
}

/// The core before it is started: the dispatcher exists first so that the
/// transports can be built with it, then the shards start with the
/// transports as their [`Wire`]. Messages delivered before the start wait in
/// the shards' inboxes.
pub struct Core {
    dispatch: Arc<CoreDispatch>,
    cfg: Arc<CoreConfig>,
    metrics: Arc<Metrics>,
}

/// Running shards: their timer tasks.
pub struct CoreHandle {
    tasks: Vec<JoinHandle<()>>,
    dispatch: Arc<CoreDispatch>,
}

impl CoreHandle {
    /// Stop the shards and wait for their timer tasks.
    pub async fn join(mut self) {
        self.stop();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }

    /// Send a request the proxy itself originates (its top Via and branch
    /// are added) and wait for its final status; `None` after a timeout or
    /// a transport failure.
    /// `call_id` must be the request's Call-ID: its responses are handed to
    /// the shard its hash names, so the request must start there.
    pub async fn originate(&self, call_id: &str, request: bytes::Bytes, dest: Destination) -> Option<u16> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let shard = self.dispatch.shard_for(call_id);
        let cell = self.dispatch.cells.get(shard)?;
        cell.push(ShardInput::Originate { request, dest, reply });
        cell.drain();
        rx.await.ok().flatten()
    }

    /// Whether every shard handles its inbox: each gets a ping through it
    /// and must answer within `within` (for the systemd watchdog: a wedged
    /// shard stops the pings, and systemd restarts the process).
    pub async fn is_responsive(&self, within: Duration) -> bool {
        let mut answers = Vec::with_capacity(self.dispatch.cells.len());
        for cell in &self.dispatch.cells {
            let (reply, rx) = tokio::sync::oneshot::channel();
            cell.push(ShardInput::Ping(reply));
            cell.drain();
            answers.push(rx);
        }
        let all = async {
            for rx in answers {
                if rx.await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(within, all).await.unwrap_or(false)
    }

    /// Stop every shard: timers end, and the shards (with what they hold:
    /// transactions, the transports) are dropped.
    pub fn abort(&self) {
        self.stop();
        for t in &self.tasks {
            t.abort();
        }
    }

    fn stop(&self) {
        for cell in &self.dispatch.cells {
            cell.stop();
        }
    }
}

impl Drop for CoreHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Core {
    pub fn new(cfg: CoreConfig, metrics: Arc<Metrics>) -> Core {
        let n = cfg.workers.clamp(1, 256);
        let cells = (0..n).map(|_| Arc::new(ShardCell::new())).collect();
        let depth = cfg.queue_depth.max(16);
        let dispatch = Arc::new(CoreDispatch {
            cells,
            depth,
            reserve: depth / 4,
            hasher: RandomState::new(),
            metrics: metrics.clone(),
            sources: admission::SourceLimiter::new(cfg.sources.clone(), clock_now()),
        });
        Core { dispatch, cfg: Arc::new(cfg), metrics }
    }

    pub fn dispatch(&self) -> Arc<CoreDispatch> {
        self.dispatch.clone()
    }

    /// Start the shards (and handle what waited for them). They stop with
    /// [`CoreHandle::abort`] or when the handle is dropped.
    pub fn start(self, wire: Arc<dyn Wire>, router: Arc<dyn Router>, resolver: Arc<dyn Resolve>) -> CoreHandle {
        let minter = Arc::new(branch::BranchMinter::default());
        let mut tasks = Vec::with_capacity(self.dispatch.cells.len());
        for (i, cell) in self.dispatch.cells.iter().enumerate() {
            let shard = shard::Shard::new(
                i as u16,
                self.cfg.clone(),
                wire.clone(),
                router.clone(),
                resolver.clone(),
                minter.clone(),
                self.metrics.clone(),
                Arc::downgrade(cell),
            );
            cell.start(shard);
            tasks.push(tokio::spawn(cell.clone().run_timers()));
            cell.drain();
        }
        CoreHandle { tasks, dispatch: self.dispatch.clone() }
    }
}

#[cfg(test)]
mod tests;
