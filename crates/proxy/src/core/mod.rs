//! The RFC 3261 §16 stateful proxy core.
//!
//! Decision code lives in plain functions (validation, loop detection, route
//! processing, best-response selection) tested without a runtime; worker
//! [`shard::Shard`]s drive the sans-IO transaction layer from tokio. Messages
//! are spread over the shards by a hash of their Call-ID, so every message
//! of a call is handled by one shard, in arrival order.

pub mod branch;
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
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::{DropReason, Metrics};
use crate::transport::{Destination, Dispatch, Inbound, Overloaded, SendFailure, SendToken};
pub use router::{
    Fallback, FallbackAction, ForkOutcome, ForkPlan, NextHop, RouteDecision, RouteRequest, Router, Routing,
    StaticRouter, Target,
};
pub use shard::{Resolve, Resolving, ShardInput, Wire};

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Worker shards; one per core by default.
    pub workers: usize,
    /// Messages queued per shard. Requests are refused (503) once a
    /// quarter of it is left, so that responses and ACKs, which nothing
    /// retransmits on TCP, still find room.
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
        }
    }
}

/// The transports' way in: spreads messages over the shards.
pub struct CoreDispatch {
    shards: Vec<mpsc::Sender<ShardInput>>,
    /// Free queue slots kept for responses and ACKs.
    reserve: usize,
    /// SipHash with a random key: Call-IDs are chosen by peers, who must not
    /// be able to aim every call at one shard.
    hasher: RandomState,
    metrics: Arc<Metrics>,
}

impl CoreDispatch {
    fn shard_for(&self, call_id: &str) -> usize {
        let n = self.shards.len().max(1);
        (self.hasher.hash_one(call_id) % n as u64) as usize
    }
}

impl Dispatch for CoreDispatch {
    fn deliver(&self, inbound: Inbound) -> Result<(), Overloaded> {
        let idx = self.shard_for(inbound.msg.call_id());
        let Some(tx) = self.shards.get(idx) else { return Err(Overloaded) };
        let is_request = inbound.msg.is_request() && inbound.msg.method() != Some(Method::Ack);
        if is_request && tx.capacity() <= self.reserve {
            // Overloaded: new work is refused early, while the headroom
            // left lets calls in progress finish.
            self.metrics.dropped(DropReason::Overload);
            return Err(Overloaded);
        }
        match tx.try_send(ShardInput::Inbound(inbound)) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.metrics.dropped(DropReason::Overload);
                if is_request {
                    Err(Overloaded)
                } else {
                    // A response or ACK has nobody to answer; the peer's
                    // retransmission will come back when the queue drains.
                    Ok(())
                }
            }
        }
    }

    fn send_failed(&self, token: SendToken, _dest: &Destination, failure: SendFailure) {
        if let Some(tx) = self.shards.get(usize::from(token.shard)) {
            if tx.try_send(ShardInput::SendFailed(token, failure)).is_err() {
                self.metrics.dropped(DropReason::Overload);
            }
        }
    }
}

/// The core before it is started: the dispatcher exists first so that the
/// transports can be built with it, then the shards start with the
/// transports as their [`Wire`].
pub struct Core {
    dispatch: Arc<CoreDispatch>,
    receivers: Vec<mpsc::Receiver<ShardInput>>,
    cfg: Arc<CoreConfig>,
    metrics: Arc<Metrics>,
}

/// Running shards.
pub struct CoreHandle {
    tasks: Vec<JoinHandle<()>>,
    dispatch: Arc<CoreDispatch>,
}

impl CoreHandle {
    /// Wait for the shards to stop (after every dispatcher is dropped).
    pub async fn join(self) {
        for t in self.tasks {
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
        self.dispatch.shards.get(shard)?.send(ShardInput::Originate { request, dest, reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Core {
    pub fn new(cfg: CoreConfig, metrics: Arc<Metrics>) -> Core {
        let n = cfg.workers.clamp(1, 256);
        let mut shards = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::channel(cfg.queue_depth.max(16));
            shards.push(tx);
            receivers.push(rx);
        }
        let reserve = cfg.queue_depth.max(16) / 4;
        let dispatch = Arc::new(CoreDispatch { shards, reserve, hasher: RandomState::new(), metrics: metrics.clone() });
        Core { dispatch, receivers, cfg: Arc::new(cfg), metrics }
    }

    pub fn dispatch(&self) -> Arc<CoreDispatch> {
        self.dispatch.clone()
    }

    /// Start the shards. They stop when the dispatcher is gone (the
    /// transports shut down) and their queues are drained.
    pub fn start(self, wire: Arc<dyn Wire>, router: Arc<dyn Router>, resolver: Arc<dyn Resolve>) -> CoreHandle {
        let minter = Arc::new(branch::BranchMinter::default());
        let mut tasks = Vec::with_capacity(self.receivers.len());
        for (i, rx) in self.receivers.into_iter().enumerate() {
            let Some(tx) = self.dispatch.shards.get(i) else { break };
            let shard = shard::Shard::new(
                i as u16,
                self.cfg.clone(),
                wire.clone(),
                router.clone(),
                resolver.clone(),
                minter.clone(),
                self.metrics.clone(),
                tx.downgrade(),
            );
            tasks.push(tokio::spawn(shard.run(rx)));
        }
        CoreHandle { tasks, dispatch: self.dispatch.clone() }
    }
}

#[cfg(test)]
mod tests;
