//! One worker of the stateful proxy: it owns a sans-IO transaction layer and
//! the response contexts of the calls hashed to it (by Call-ID), and drives
//! them from one tokio task. Every message of a call lands on the same
//! shard, and a shard handles its input in order, so an ACK can never
//! overtake its INVITE's 200 on the way through.
//!
//! The shard talks to the world through two traits, [`Wire`] (sending, and
//! the proxy's own addresses) and [`Resolve`] (RFC 3263), so it can be
//! driven in tests without sockets and on tokio's paused clock.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip_message::build::{self, Response};
use sip_message::{HeaderName, HostKind, Limits, Message, Method, Scheme, Uri, Via};
use sip_transaction::{ClientId, Event, IdBuildHasher, Rejected, ServerId, TransactionLayer, TxId};
use tracing::{debug, info, trace, warn};

use super::branch::{check_loop, BranchMinter, LoopCheck};
use super::cell::{post_back, PostBack};
use super::response::{upstream_code, BestResponse, Final};
use super::route::{self, RouteEdits};
use super::router::{
    Fallback, FallbackAction, ForkOutcome, ForkPlan, HeaderRewrite, NextHop, RouteDecision, RouteRequest, Router,
    Routing, Target,
};
use super::validate::{validate_request_with, Rejection};
use super::CoreConfig;
use crate::metrics::{Direction, Metrics};
pub use crate::nat::{fix_top_via, with_fixed_via};
use crate::transport::{
    Destination, FlowId, Inbound, ListenerInfo, Outbound, Peer, SendFailure, SendToken, TlsIdentity, Transport,
};

/// Sending, and the proxy's own addresses.
pub trait Wire: Send + Sync + 'static {
    fn send(&self, out: Outbound);
    /// The listener to send from towards `remote` over `transport`.
    fn listener_for(&self, transport: Transport, remote: &SocketAddr) -> Option<ListenerInfo>;
    /// Whether `host[:port]` names this proxy.
    fn is_local(&self, host: &str, port: Option<u16>) -> bool;
    /// RFC 5923: requests to `addr` may reuse connection `flow`.
    fn alias(&self, flow: FlowId, addr: SocketAddr) {
        let _ = (flow, addr);
    }
}

/// A future resolving a next-hop URI to the destinations to try in order.
pub type Resolving = Pin<Box<dyn Future<Output = Result<Vec<Destination>, String>> + Send>>;

/// RFC 3263 next-hop resolution.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, uri: String) -> Resolving;
    /// `dest` answered 503 with Retry-After: avoid it for `duration`.
    fn mark_down(&self, dest: &Destination, duration: Duration) {
        let _ = (dest, duration);
    }
    /// Sending to `dest` failed (`what`: a transport error or a timeout);
    /// for the operator's view of next hops.
    fn report_failure(&self, dest: &Destination, what: &'static str) {
        let _ = (dest, what);
    }
    /// The targets of an SRV service name, in RFC 2782 order.
    fn resolve_service(&self, name: String, transport: Transport) -> Resolving {
        let _ = transport;
        Box::pin(async move { Err(format!("no SRV resolution for {name}")) })
    }
}

/// What reaches a shard. Almost every input is an `Inbound` message, so
/// the channel's slots are that size anyway; boxing it would add an
/// allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum ShardInput {
    Inbound(Inbound),
    SendFailed(SendToken, SendFailure),
    Routed {
        server: ServerId,
        decision: RouteDecision,
    },
    Resolved {
        server: ServerId,
        branch: usize,
        result: Result<Vec<Destination>, String>,
    },
    /// A request the proxy itself sends (e.g. an OPTIONS health check); its
    /// final status, or `None` on timeout or transport failure, is sent back.
    Originate {
        request: Bytes,
        dest: Destination,
        reply: tokio::sync::oneshot::Sender<Option<u16>>,
    },
    /// Liveness check (the systemd watchdog): answered as soon as the shard
    /// gets to it.
    Ping(tokio::sync::oneshot::Sender<()>),
}

/// A send token's id says which transaction sent it: the raw id shifted
/// left, low bit set for a client transaction.
fn token_id(tx: TxId) -> u64 {
    match tx {
        TxId::Server(ServerId(n)) => n << 1,
        TxId::Client(ClientId(n)) => (n << 1) | 1,
    }
}

fn token_tx(id: u64) -> TxId {
    if id & 1 == 1 {
        TxId::Client(ClientId(id >> 1))
    } else {
        TxId::Server(ServerId(id >> 1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchState {
    /// Waiting for DNS.
    Resolving,
    /// Client transaction started, no provisional yet.
    Calling,
    /// A provisional arrived.
    Proceeding,
    /// Final response (or failure) recorded.
    Done,
}

#[derive(Debug)]
struct Branch {
    target: Target,
    state: BranchState,
    client: Option<ClientId>,
    /// Destinations not tried yet (RFC 3263 failover).
    dests: VecDeque<Destination>,
    /// Where the current attempt went.
    current: Option<Destination>,
    timer_c: Option<(Instant, u64)>,
    /// The fork's per-attempt timer.
    attempt: Option<(Instant, u64)>,
    /// When the current attempt's INVITE left (voice-mail escape).
    sent_at: Option<Instant>,
}

impl Branch {
    /// A branch about to look for its destinations.
    fn new(target: Target) -> Branch {
        Branch {
            target,
            state: BranchState::Resolving,
            client: None,
            dests: VecDeque::new(),
            current: None,
            timer_c: None,
            attempt: None,
            sent_at: None,
        }
    }

    fn is_active(&self) -> bool {
        self.state != BranchState::Done
    }
}

/// The response context of one server transaction (RFC 3261 §16).
struct ProxyTx {
    request: Message,
    peer: Peer,
    tls: Option<Arc<TlsIdentity>>,
    method: Method,
    /// The request's loop-detection hash, computed when first needed (a Via
    /// of ours, or the first branch minted).
    loop_hash: OnceCell<u64>,
    route_edits: RouteEdits,
    record_route: bool,
    /// Every Proxy-Authorization is for a realm of ours: removed when
    /// forwarding (RFC 3261 §22.3).
    strip_proxy_auth: bool,
    /// The caller is behind NAT: its Contact is marked with the address
    /// its packets come from when forwarded ([`crate::nat`]).
    nat_mark: bool,
    groups: VecDeque<Vec<Target>>,
    branches: Vec<Branch>,
    best: BestResponse,
    /// A 2xx went upstream (INVITE): no new branches, the others cancelled.
    answered: bool,
    /// The caller cancelled.
    cancelled: bool,
    /// A final response went upstream.
    finished: bool,
    /// Routing or resolution still pending.
    routing: bool,
    started: Instant,
    first_response: bool,
    /// After a fallback's divert: the request new branches are built from.
    forward_base: Option<Message>,
    ring_timer: Option<(Instant, u64)>,
    /// The ring timeout expired.
    no_answer: bool,
    attempt_timeout: Option<Duration>,
    redirects_left: u8,
    fallback: Option<Arc<dyn Fallback>>,
    /// Times the fallback was asked.
    stage: u8,
    /// Final codes of the branches, for the fallback.
    codes: Vec<u16>,
    /// A header the router owns on every branch (see [`HeaderRewrite`]).
    rewrite: Option<Arc<HeaderRewrite>>,
}

#[derive(Debug, Clone, Copy)]
enum TimerKind {
    /// RFC 3261 §16.6 step 11 / §16.8: no provisional for a while.
    TimerC { server: ServerId, branch: usize },
    /// A fork plan's per-attempt timer.
    Attempt { server: ServerId, branch: usize },
    /// A fork plan's ring timeout.
    Ring { server: ServerId },
}

/// One worker.
pub struct Shard {
    index: u16,
    cfg: Arc<CoreConfig>,
    layer: TransactionLayer<Destination>,
    wire: Arc<dyn Wire>,
    router: Arc<dyn Router>,
    resolver: Arc<dyn Resolve>,
    minter: Arc<BranchMinter>,
    metrics: Arc<Metrics>,
    /// To post results of async work back to this shard.
    back: PostBack,
    /// Keyed by transaction ids the layer mints, never by what a peer sent:
    /// the cheap id hasher, not SipHash.
    contexts: HashMap<ServerId, ProxyTx, IdBuildHasher>,
    clients: HashMap<ClientId, (ServerId, usize), IdBuildHasher>,
    /// Client transactions of requests the proxy originated.
    originated: HashMap<ClientId, tokio::sync::oneshot::Sender<Option<u16>>, IdBuildHasher>,
    timers: BTreeMap<(Instant, u64), TimerKind>,
    timer_seq: u64,
    /// The peer of the message being handled, for the events it raises.
    current: Option<(Peer, Option<Arc<TlsIdentity>>)>,
    limits: Limits,
    /// Calls in progress: INVITE dialogs this proxy record-routed and saw
    /// answered, until their BYE is answered, with the time of their last
    /// request. Keys are peer-chosen (Call-ID, tags): SipHash. Capped by
    /// `CoreConfig::max_dialogs`; one idle for `CoreConfig::dialog_idle`
    /// is forgotten (its BYE went another way, or never came).
    dialogs: HashMap<DialogKey, Instant>,
    /// When idle dialogs are next looked for (while there are any).
    next_prune: Option<Instant>,
    /// What this shard last added to the shared gauges (live and finishing
    /// transactions): each shard adds its change, so the gauges are sums.
    reported: (i64, i64),
}

/// A dialog as both directions name it: the Call-ID and the two tags in a
/// fixed order (a BYE from the callee has them swapped in From and To).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DialogKey {
    call_id: Box<str>,
    tags: (Box<str>, Box<str>),
}

impl DialogKey {
    fn new(call_id: &str, a: &str, b: &str) -> DialogKey {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        DialogKey { call_id: call_id.into(), tags: (lo.into(), hi.into()) }
    }

    /// The dialog a message belongs to, when it has both tags.
    fn of(msg: &Message) -> Option<DialogKey> {
        Some(DialogKey::new(msg.call_id(), msg.from_tag()?, msg.to_tag()?))
    }
}

/// The current time on tokio's clock (virtual under a paused test clock),
/// as the `std` instant the transaction layer takes.
pub fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: u16,
        cfg: Arc<CoreConfig>,
        wire: Arc<dyn Wire>,
        router: Arc<dyn Router>,
        resolver: Arc<dyn Resolve>,
        minter: Arc<BranchMinter>,
        metrics: Arc<Metrics>,
        back: PostBack,
    ) -> Shard {
        Shard {
            index,
            layer: TransactionLayer::new(cfg.transactions.clone()),
            limits: cfg.limits.clone(),
            cfg,
            wire,
            router,
            resolver,
            minter,
            metrics,
            back,
            contexts: HashMap::default(),
            clients: HashMap::default(),
            originated: HashMap::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            current: None,
            dialogs: HashMap::new(),
            next_prune: None,
            reported: (0, 0),
        }
    }

    /// Proxy contexts held (requests being routed or waiting for Timer J).
    #[cfg(test)]
    pub(crate) fn contexts_held(&self) -> usize {
        self.contexts.len()
    }

    /// Live transactions of this shard's layer.
    pub fn transactions(&self) -> usize {
        self.layer.len()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let ours = match (self.timers.keys().next().map(|k| k.0), self.next_prune) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (self.layer.poll_timeout(), ours) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Feed one input and drain everything it caused.
    pub fn handle_input(&mut self, input: ShardInput, now: Instant) {
        match input {
            ShardInput::Inbound(inb) => self.handle_inbound(inb, now),
            ShardInput::SendFailed(token, failure) => {
                debug!(shard = self.index, failure = failure.as_str(), "send failed");
                self.layer.handle_transport_error(now, token_tx(token.id));
            }
            ShardInput::Routed { server, decision } => self.apply_decision(server, decision, now),
            ShardInput::Resolved { server, branch, result } => self.on_resolved(server, branch, result, now),
            ShardInput::Originate { request, dest, reply } => self.originate(request, dest, reply, now),
            ShardInput::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        self.drain(now);
    }

    /// Timers fired (ours and the layer's).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        if self.next_prune.is_some_and(|at| at <= now) {
            self.prune_dialogs(now);
        }
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let kind = entry.remove();
            match kind {
                TimerKind::TimerC { server, branch } | TimerKind::Attempt { server, branch } => {
                    self.on_timer_c(server, branch, now)
                }
                TimerKind::Ring { server } => self.on_ring_timeout(server, now),
            }
        }
        self.drain(now);
        // As the transaction layer does with its own (a burst's room is
        // given back once the calls are gone).
        sip_transaction::shrink_map(&mut self.contexts);
        sip_transaction::shrink_map(&mut self.clients);
        sip_transaction::shrink_map(&mut self.originated);
    }

    fn originate(
        &mut self,
        request: Bytes,
        dest: Destination,
        reply: tokio::sync::oneshot::Sender<Option<u16>>,
        now: Instant,
    ) {
        let Some(listener) = self.wire.listener_for(dest.transport, &dest.addr) else {
            let _ = reply.send(None);
            return;
        };
        // The request has no Via yet (the parser requires one), so ours goes
        // in right after the start line. Originated requests are no one's
        // loop: the loop hash part is zero.
        let via = format!(
            "Via: SIP/2.0/{} {}:{};branch={}\r\n",
            dest.transport.via_name(),
            listener.host,
            listener.port,
            self.minter.mint(0)
        );
        let sent = memchr::memmem::find(&request, b"\r\n")
            .map(|at| {
                let mut out = bytes::BytesMut::with_capacity(request.len() + via.len());
                out.extend_from_slice(request.get(..at + 2).unwrap_or_default());
                out.extend_from_slice(via.as_bytes());
                out.extend_from_slice(request.get(at + 2..).unwrap_or_default());
                out.freeze()
            })
            .and_then(|b| Message::parse(b, &self.limits).ok())
            .and_then(|m| self.layer.send_request(now, m, dest.clone(), dest.transport.is_reliable()).ok());
        match sent {
            Some(cid) => {
                self.originated.insert(cid, reply);
            }
            None => {
                let _ = reply.send(None);
            }
        }
    }

    fn handle_inbound(&mut self, inb: Inbound, now: Instant) {
        let Inbound { msg, peer, tls } = inb;
        let reliable = peer.transport.is_reliable();
        if msg.is_request() {
            if let Some(m) = msg.method() {
                self.metrics.request(m, Direction::In);
            }
            let reply = reply_destination(&msg, &peer);
            // RFC 5923 §5: `alias` in the top Via of a request on a TCP
            // connection lets requests to its sent-by reuse the connection.
            // Not on TLS, where the alias would need checking against the
            // peer's certificate.
            if let (Transport::Tcp, Some(flow)) = (peer.transport, peer.flow) {
                let via = msg.top_via();
                if via.params().has("alias") {
                    let ip = match via.host_kind() {
                        HostKind::Ipv4(a) => Some(IpAddr::V4(a)),
                        HostKind::Ipv6(a) => Some(IpAddr::V6(a)),
                        HostKind::Domain => None,
                    };
                    if let Some(ip) = ip {
                        self.wire.alias(flow, SocketAddr::new(ip, via.port().unwrap_or(5060)));
                    }
                }
            }
            let span = tracing::debug_span!("request", call_id = %escape(msg.call_id()), method = msg.method_str().unwrap_or("?"));
            let _entered = span.enter();
            self.current = Some((peer, tls));
            // The layer takes the message; keep its (refcounted) bytes for the
            // rare overload answer instead of cloning the parsed header index.
            let raw = msg.as_bytes().clone();
            let is_ack = msg.method() == Some(Method::Ack);
            if let Err(e) = self.layer.handle_request(now, msg, reply.clone(), reliable) {
                if e == Rejected::Overloaded && !is_ack {
                    self.metrics.dropped(crate::metrics::DropReason::Overload);
                    if let Ok(msg) = Message::parse(raw, &self.limits) {
                        // RFC 3261 §21.5.4: statelessly, with a hint of when to retry.
                        let bytes =
                            Response::new(&msg, 503, "Service Unavailable", None).header("Retry-After", "5").finish();
                        let bytes = match self.current.as_ref() {
                            Some((p, _)) => with_fixed_via(bytes, p, &self.limits),
                            None => bytes,
                        };
                        self.wire.send(Outbound { dest: reply, bytes, token: None });
                    }
                }
            }
            // The layer reports what the request caused in drain(); `current`
            // is read there.
            self.drain(now);
            self.current = None;
        } else {
            if let Some(code) = msg.status() {
                self.metrics.response(code, msg.cseq().1, Direction::In);
            }
            self.layer.handle_response(now, msg);
        }
    }

    /// Send what the layer wants sent and act on what it reports, until it
    /// has nothing left.
    fn drain(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.layer.poll_transmit() {
                progressed = true;
                trace!(shard = self.index, dest = %t.dest.addr, len = t.bytes.len(), "transmit");
                let token = Some(SendToken { shard: self.index, id: token_id(t.tx) });
                self.wire.send(Outbound { dest: t.dest, bytes: t.bytes, token });
            }
            while let Some(ev) = self.layer.poll_event() {
                progressed = true;
                self.handle_event(ev, now);
            }
            if !progressed {
                break;
            }
        }
        // The proxy's own requests (UM health pings) are nobody's call: they
        // do not hold a drain, nor count as work in progress.
        let ours = self.originated.len();
        let now_counts = (self.layer.in_progress().saturating_sub(ours) as i64, self.layer.finishing() as i64);
        if now_counts != self.reported {
            self.metrics.transactions_active().add(now_counts.0 - self.reported.0);
            self.metrics.transactions_finishing().add(now_counts.1 - self.reported.1);
            self.reported = now_counts;
        }
    }

    /// Calls in progress on this shard.
    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }

    /// An answered INVITE this proxy record-routed: a call is up.
    fn dialog_started(&mut self, response: &Message, now: Instant) {
        let Some(key) = DialogKey::of(response) else { return };
        if self.dialogs.len() >= self.cfg.max_dialogs && !self.dialogs.contains_key(&key) {
            // Memory stays bounded; the call still works, it only does not
            // hold a drain or show in the gauge.
            debug!(shard = self.index, "dialog table full; call not tracked");
            return;
        }
        if self.dialogs.insert(key, now).is_none() {
            self.metrics.dialogs_active().inc();
        }
        if self.next_prune.is_none() {
            self.next_prune = Some(now + DIALOG_PRUNE_EVERY);
        }
    }

    /// A request within a dialog: the call is still alive.
    fn dialog_seen(&mut self, msg: &Message, now: Instant) {
        if self.dialogs.is_empty() {
            return;
        }
        if let Some(seen) = DialogKey::of(msg).and_then(|k| self.dialogs.get_mut(&k)) {
            *seen = now;
        }
    }

    /// Forget dialogs idle for longer than `dialog_idle`: their BYE took
    /// another path or never came, and they must not hold a drain or
    /// inflate the gauge for ever.
    fn prune_dialogs(&mut self, now: Instant) {
        let idle = self.cfg.dialog_idle;
        let before = self.dialogs.len();
        self.dialogs.retain(|_, seen| now.saturating_duration_since(*seen) < idle);
        let gone = before - self.dialogs.len();
        if gone > 0 {
            self.metrics.dialogs_active().sub(gone as i64);
            debug!(shard = self.index, gone, "idle dialogs forgotten");
        }
        self.next_prune = (!self.dialogs.is_empty()).then(|| now + DIALOG_PRUNE_EVERY);
    }

    /// A BYE got its final response: the call is over (whatever the code:
    /// 481 and 408 end it too, RFC 3261 §15.1.1).
    fn dialog_ended(&mut self, bye: &Message) {
        if let Some(key) = DialogKey::of(bye) {
            if self.dialogs.remove(&key).is_some() {
                self.metrics.dialogs_active().dec();
            }
        }
    }

    fn handle_event(&mut self, ev: Event<Destination>, now: Instant) {
        match ev {
            Event::Request { id, msg, source: _ } => self.on_request(id, msg, now),
            Event::Ack { msg, source: _ } => self.forward_stateless_ack(msg),
            Event::Cancel { cancel, invite, msg, source: _ } => self.on_cancel(cancel, invite, &msg, now),
            Event::Response { id, msg } if self.originated.contains_key(&id) => {
                if let Some(code) = msg.status().filter(|c| *c >= 200) {
                    if let Some(reply) = self.originated.remove(&id) {
                        let _ = reply.send(Some(code));
                    }
                }
            }
            Event::Response { id, msg } => self.on_response(id, msg, now),
            Event::StrayResponse { msg } => self.forward_stray_response(msg),
            Event::Timeout { id } | Event::TransportError { id: TxId::Client(id) }
                if self.originated.contains_key(&id) =>
            {
                if let Some(reply) = self.originated.remove(&id) {
                    let _ = reply.send(None);
                }
            }
            Event::Timeout { id } => self.on_branch_failure(id, 408, now),
            Event::TransportError { id: TxId::Client(id) } => self.on_branch_failure(id, 503, now),
            Event::TransportError { id: TxId::Server(id) } => {
                debug!(shard = self.index, server = id.0, "response could not be sent upstream");
            }
            Event::Terminated { id: TxId::Server(id) } => {
                if let Some(ctx) = self.contexts.remove(&id) {
                    for b in &ctx.branches {
                        if let (Some(c), true) = (b.client, b.is_active()) {
                            let _ = self.layer.cancel(now, c);
                        }
                    }
                }
            }
            Event::Terminated { id: TxId::Client(id) } => {
                self.clients.remove(&id);
                if let Some(reply) = self.originated.remove(&id) {
                    let _ = reply.send(None);
                }
            }
        }
    }

    // ---- requests -------------------------------------------------------

    /// Answer `req` with a response built here. Its copy of the caller's top
    /// Via gains `received` and `rport` (RFC 3581 §4), as a forwarded
    /// request's does, so that the UA learns its public address from every
    /// answer (401, 200 to REGISTER or OPTIONS, 403, 480 …).
    fn respond(
        &mut self,
        server: ServerId,
        req: &Message,
        code: u16,
        reason: &str,
        headers: &[(&str, String)],
        now: Instant,
    ) {
        let tag = (code > 100).then(|| to_tag_for(req));
        let mut r = Response::new(req, code, reason, tag.as_deref());
        for (n, v) in headers {
            r = r.header(n, v);
        }
        let bytes = r.finish();
        let bytes = match self.contexts.get(&server).map(|c| &c.peer).or(self.current.as_ref().map(|c| &c.0)) {
            Some(peer) => crate::nat::fix_local_response(bytes, req, peer, &self.limits),
            None => bytes,
        };
        self.send_upstream_as(server, bytes, code, req.method().unwrap_or(Method::Other), now);
    }

    fn send_upstream(&mut self, server: ServerId, bytes: Bytes, code: u16, now: Instant) {
        let method = self.contexts.get(&server).map_or(Method::Other, |c| c.method);
        self.send_upstream_as(server, bytes, code, method, now);
    }

    fn send_upstream_as(&mut self, server: ServerId, bytes: Bytes, code: u16, method: Method, now: Instant) {
        match self.layer.send_response(now, server, bytes, code) {
            Ok(()) => self.metrics.response(code, method, Direction::Out),
            Err(e) => debug!(shard = self.index, server = server.0, code, error = %e, "response not sent"),
        }
        if code >= 200 {
            if method == Method::Bye {
                if let Some(bye) = self.contexts.get(&server).map(|c| c.request.clone()) {
                    self.dialog_ended(&bye);
                }
            }
            let forget = match self.contexts.get_mut(&server) {
                Some(ctx) => {
                    ctx.finished = true;
                    // A non-INVITE the proxy answered itself (REGISTER,
                    // OPTIONS, a rejection) has nothing left to do: its
                    // transaction absorbs retransmissions for Timer J, and no
                    // CANCEL applies. Free the request now, not 32 s later.
                    ctx.method != Method::Invite && ctx.branches.is_empty()
                }
                None => false,
            };
            if forget {
                self.contexts.remove(&server);
            }
        }
    }

    fn on_request(&mut self, id: ServerId, msg: Message, now: Instant) {
        let Some((peer, tls)) = self.current.clone() else {
            warn!(shard = self.index, "request event without a current peer");
            return;
        };
        let method = msg.method().unwrap_or(Method::Other);
        // Parsed once for validation, route preprocessing and the local
        // check below.
        let ruri = msg.request_uri();
        if let Err(r) = validate_request_with(&msg, ruri.as_ref()) {
            self.respond(id, &msg, r.code, r.reason, &r.headers, now);
            return;
        }
        if msg.to_tag().is_none() && self.cfg.drain.is_draining() && creates_dialog(method) {
            // Shutting down: a new call goes elsewhere (RFC 3261 §21.5.4),
            // calls already up keep being served.
            let retry = ("Retry-After", self.cfg.drain.retry_after_s.to_string());
            self.respond(id, &msg, 503, "Service Unavailable", &[retry], now);
            return;
        }
        if method == Method::Invite {
            // RFC 3261 §16.2: a 100 at once stops the caller's retransmissions.
            self.respond(id, &msg, 100, "Trying", &[], now);
        }
        let wire = self.wire.clone();
        let is_me = |host: &str, port: Option<u16>| wire.is_local(host, port);
        let loop_hash = OnceCell::new();
        if check_loop(&self.minter, &msg, &loop_hash, is_me) == LoopCheck::Loop {
            self.respond(id, &msg, 482, "Loop Detected", &[], now);
            return;
        }
        let route_edits = route::preprocess_with(&msg, ruri.as_ref(), |u| is_me(u.host(), u.port()));
        // Whether the Request-URI (after §16.4) names this proxy.
        let local_ruri = (route_edits.next_route().is_none() && route_edits.restore_request_uri.is_none())
            .then_some(ruri.as_ref())
            .flatten()
            .filter(|u| is_me(u.host(), u.port()));
        let ruri_local = local_ruri.is_some();
        // A request for this proxy itself (no user part): OPTIONS is
        // answered (keep-alive pings, §11), anything else has nowhere to go.
        let ruri_is_me = local_ruri.is_some_and(|u| u.user().is_none());
        if ruri_is_me || (method == Method::Options && msg.max_forwards() == Some(0)) {
            if method == Method::Options && self.cfg.drain.is_draining() {
                // A load balancer's keep-alive ping learns the drain too.
                let retry = ("Retry-After", self.cfg.drain.retry_after_s.to_string());
                self.respond(id, &msg, 503, "Service Unavailable", &[retry], now);
            } else if method == Method::Options {
                let allow = ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER, MESSAGE".to_string());
                self.respond(id, &msg, 200, "OK", &[allow], now);
            } else {
                self.respond(id, &msg, 404, "Not Found", &[], now);
            }
            return;
        }
        let in_dialog = msg.to_tag().is_some();
        if in_dialog {
            self.dialog_seen(&msg, now);
        }
        let record_route = self.cfg.record_route
            && !in_dialog
            && matches!(method, Method::Invite | Method::Subscribe | Method::Refer | Method::Notify);
        let strip_proxy_auth = own_credentials_only(&msg, &self.cfg.own_realms);
        // Requests whose Contact other parties use for the dialog's later
        // requests (RFC 3261 §12.1, target refresh §12.2).
        let sets_target =
            matches!(method, Method::Invite | Method::Subscribe | Method::Notify | Method::Refer | Method::Update);
        let nat_mark = sets_target && crate::nat::is_behind_nat(self.cfg.nat, &msg, &peer);
        let ctx = ProxyTx {
            request: msg,
            peer,
            tls,
            method,
            loop_hash,
            route_edits,
            record_route,
            strip_proxy_auth,
            nat_mark,
            groups: VecDeque::new(),
            branches: Vec::new(),
            best: BestResponse::default(),
            answered: false,
            cancelled: false,
            finished: false,
            routing: true,
            started: now,
            first_response: true,
            forward_base: None,
            ring_timer: None,
            no_answer: false,
            attempt_timeout: None,
            redirects_left: 0,
            fallback: None,
            stage: 0,
            codes: Vec::new(),
            rewrite: None,
        };
        // §16.6 step 6–7: a remaining Route decides the next hop; an
        // in-dialog request without one goes to its Request-URI, unless that
        // names this proxy (a UA that ignored Record-Route and sends
        // everything to its outbound proxy): then, like out-of-dialog
        // requests, it asks the router.
        let decision = if ctx.route_edits.next_route().is_some() || (in_dialog && !ruri_local) {
            Some(RouteDecision::Forward(ForkPlan::single(alias_target(&ctx.route_edits, &ctx.request))))
        } else {
            match self.router.route(&RouteRequest { msg: &ctx.request, source: &ctx.peer, tls: ctx.tls.as_deref() }) {
                Routing::Ready(d) => Some(d),
                Routing::Pending(mut fut) => {
                    // Most decisions need nothing remote (an in-memory
                    // location store, the directory): one poll settles them
                    // here, without a task and a trip back through the queue.
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    if let std::task::Poll::Ready(d) = fut.as_mut().poll(&mut cx) {
                        self.contexts.insert(id, ctx);
                        self.apply_decision(id, d, now);
                        return;
                    }
                    let back = self.back.clone();
                    tokio::spawn(async move {
                        let decision = fut.await;
                        post_back(&back, ShardInput::Routed { server: id, decision });
                    });
                    None
                }
            }
        };
        self.contexts.insert(id, ctx);
        if let Some(d) = decision {
            self.apply_decision(id, d, now);
        }
    }

    fn apply_decision(&mut self, server: ServerId, decision: RouteDecision, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        ctx.routing = false;
        if ctx.cancelled {
            let req = ctx.request.clone();
            self.respond(server, &req, 487, "Request Terminated", &[], now);
            return;
        }
        match decision {
            RouteDecision::Reject(Rejection { code, reason, headers }) => {
                let req = ctx.request.clone();
                let hs: Vec<(&str, String)> = headers.into_iter().collect();
                self.respond(server, &req, code, reason, &hs, now);
            }
            RouteDecision::Respond { status, bytes } => {
                let is_invite = ctx.method == Method::Invite;
                // RFC 3581 §4: the router's response (a challenge, the
                // registrar's 200 …) carries received/rport like any other,
                // so that the UA learns its public address from it.
                let bytes = crate::nat::fix_local_response(bytes, &ctx.request, &ctx.peer, &self.limits);
                self.send_upstream(server, bytes, status, now);
                if matches!(status, 401 | 407) && !is_invite {
                    // RFC 3261 §8.2.7: a challenge needs no transaction
                    // state. Nonces are stateless, so a retransmitted request
                    // is simply challenged again; nothing is kept for 64*T1.
                    let _ = self.layer.abandon(server);
                }
            }
            RouteDecision::Forward(plan) => self.start_plan(server, plan, now),
        }
    }

    /// Take a fork plan (the router's, or a fallback's divert) and start its
    /// first group. A plan with no target ends the fork at once, so that a
    /// fallback still gets its say (e.g. voice mail for an unregistered user).
    fn start_plan(&mut self, server: ServerId, plan: ForkPlan, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        ctx.groups = plan.groups.into_iter().filter(|g| !g.is_empty()).collect();
        ctx.attempt_timeout = plan.attempt_timeout;
        ctx.redirects_left = plan.follow_redirects;
        ctx.no_answer = false;
        if plan.fallback.is_some() {
            ctx.fallback = plan.fallback;
        }
        if plan.rewrite.is_some() {
            ctx.rewrite = plan.rewrite;
        }
        if let Some(old) = ctx.ring_timer.take() {
            self.timers.remove(&old);
        }
        if let Some(ring) = plan.ring_timeout {
            self.timer_seq += 1;
            let key = (now + ring, self.timer_seq);
            ctx.ring_timer = Some(key);
            self.timers.insert(key, TimerKind::Ring { server });
        }
        if ctx.groups.is_empty() {
            self.check_complete(server, now);
        } else {
            self.start_next_group(server, now);
        }
    }

    fn on_ring_timeout(&mut self, server: ServerId, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        ctx.ring_timer = None;
        if ctx.answered || ctx.finished || ctx.cancelled {
            return;
        }
        debug!(shard = self.index, call_id = %ctx.request.call_id(), "ring timeout: cancelling the branches");
        ctx.no_answer = true;
        self.cancel_pending(server, now);
        // The ring time is over for every branch at once (as Kamailio's
        // fr_inv_timer): one that rang and does not answer its CANCEL (a
        // phone gone away) must not hold the caller for 64·T1 before voice
        // mail. It counts as 487 now; its CANCEL and INVITE transactions run
        // out on their own, and a late 2xx still goes upstream (§16.7).
        if let Some(ctx) = self.contexts.get_mut(&server) {
            for b in ctx.branches.iter_mut().filter(|b| b.is_active()) {
                b.state = BranchState::Done;
                for k in [b.timer_c.take(), b.attempt.take()].into_iter().flatten() {
                    self.timers.remove(&k);
                }
                ctx.codes.push(487);
                ctx.best.offer(Final::Synthetic(487));
            }
        }
        self.check_complete(server, now);
    }

    fn start_next_group(&mut self, server: ServerId, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        let Some(group) = ctx.groups.pop_front() else { return };
        let first = ctx.branches.len();
        ctx.branches.extend(group.into_iter().map(Branch::new));
        let last = ctx.branches.len();
        for idx in first..last {
            self.resolve_branch(server, idx, now);
        }
        self.check_complete(server, now);
    }

    /// Find where branch `idx` goes: numeric next hops at once, names by
    /// RFC 3263 in a task that posts the result back.
    fn resolve_branch(&mut self, server: ServerId, idx: usize, now: Instant) {
        let Some(ctx) = self.contexts.get(&server) else { return };
        let Some(branch) = ctx.branches.get(idx) else { return };
        let hop_uri = match &branch.target.next_hop {
            Some(NextHop::Destination(d)) => {
                let d = d.clone();
                self.on_resolved(server, idx, Ok(vec![d]), now);
                return;
            }
            Some(NextHop::Service { name, transport, server_name }) => {
                let fut = self.resolver.resolve_service(name.clone(), *transport);
                let server_name: Arc<str> = server_name.as_str().into();
                let back = self.back.clone();
                tokio::spawn(async move {
                    let result = fut.await.map(|ds| {
                        ds.into_iter().map(|d| Destination { server_name: Some(server_name.clone()), ..d }).collect()
                    });
                    post_back(&back, ShardInput::Resolved { server, branch: idx, result });
                });
                return;
            }
            Some(NextHop::Uri(u)) => u.clone(),
            None => match branch.target.route.first() {
                // A pushed route (Path) decides the next hop.
                Some(r) => strip_brackets(r).to_string(),
                None => match ctx.route_edits.next_route() {
                    Some(r) => r.to_string(),
                    None => match &branch.target.request_uri {
                        Some(u) => u.clone(),
                        None => ctx
                            .route_edits
                            .restore_request_uri
                            .clone()
                            .or_else(|| ctx.request.request_uri_str().map(str::to_string))
                            .unwrap_or_default(),
                    },
                },
            },
        };
        match Uri::parse(hop_uri.as_bytes()).map(|u| numeric_destination(&u)) {
            Some(Some(d)) => self.on_resolved(server, idx, Ok(vec![d]), now),
            Some(None) => {
                let fut = self.resolver.resolve(hop_uri);
                let back = self.back.clone();
                tokio::spawn(async move {
                    let result = fut.await;
                    post_back(&back, ShardInput::Resolved { server, branch: idx, result });
                });
            }
            None => self.on_resolved(server, idx, Err(format!("next hop is not a SIP URI: {hop_uri}")), now),
        }
    }

    fn on_resolved(&mut self, server: ServerId, idx: usize, result: Result<Vec<Destination>, String>, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        let Some(branch) = ctx.branches.get_mut(idx) else { return };
        if branch.state != BranchState::Resolving {
            return;
        }
        match result {
            Ok(dests) if !dests.is_empty() => {
                branch.dests = dests.into();
                if ctx.cancelled || ctx.answered {
                    branch.state = BranchState::Done;
                    self.check_complete(server, now);
                } else {
                    self.try_next_destination(server, idx, now);
                }
            }
            Ok(_) | Err(_) => {
                if let Err(e) = &result {
                    info!(shard = self.index, call_id = %ctx.request.call_id(), error = %e, "next hop unresolved");
                }
                self.metrics.dns_failure();
                self.branch_final(server, idx, Final::Synthetic(503), now);
            }
        }
    }

    /// Start a client transaction to the branch's next destination, or end
    /// the branch when none is left.
    fn try_next_destination(&mut self, server: ServerId, idx: usize, now: Instant) {
        loop {
            let Some(ctx) = self.contexts.get_mut(&server) else { return };
            let Some(dest) = ctx.branches.get_mut(idx).and_then(|b| b.dests.pop_front()) else {
                self.branch_final(server, idx, Final::Synthetic(503), now);
                return;
            };
            let Some(out_listener) = self.wire.listener_for(dest.transport, &dest.addr) else {
                debug!(shard = self.index, dest = %dest.addr, transport = %dest.transport, "no listener to send from");
                continue;
            };
            let ctx = &*ctx;
            let Some(branch) = ctx.branches.get(idx) else { return };
            let in_listener = self.wire.listener_for(ctx.peer.transport, &ctx.peer.remote);
            let branch_id = self.minter.mint(*ctx.loop_hash.get_or_init(|| self.minter.loop_hash(&ctx.request)));
            let own = match &branch.target.request {
                Some(raw) => match Message::parse(raw.clone(), &self.limits) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        warn!(shard = self.index, error = %e, "a router's request for a branch does not parse");
                        self.branch_final(server, idx, Final::Synthetic(500), now);
                        return;
                    }
                },
                None => None,
            };
            let base = own.as_ref().or(ctx.forward_base.as_ref()).unwrap_or(&ctx.request);
            let bytes = build_forward(
                ctx,
                self.cfg.max_forwards,
                base,
                &branch.target,
                &dest,
                &out_listener,
                in_listener.as_ref(),
                &branch_id,
            );
            let is_invite = ctx.method == Method::Invite;
            let msg = match Message::parse(bytes, &self.limits) {
                Ok(m) => m,
                Err(e) => {
                    // Our own edit produced something we cannot parse: a bug
                    // of ours, or a peer header we copied that the limits
                    // refuse after growth (e.g. one Via too many).
                    warn!(shard = self.index, error = %e, "forwarded request does not reparse");
                    self.branch_final(server, idx, Final::Synthetic(500), now);
                    return;
                }
            };
            if let Some(m) = msg.method() {
                self.metrics.request(m, Direction::Out);
            }
            let reliable = dest.transport.is_reliable();
            match self.layer.send_request(now, msg, dest.clone(), reliable) {
                Ok(cid) => {
                    let Some(branch) = self.contexts.get_mut(&server).and_then(|c| c.branches.get_mut(idx)) else {
                        return;
                    };
                    branch.client = Some(cid);
                    branch.current = Some(dest);
                    branch.sent_at = Some(now);
                    branch.state = BranchState::Calling;
                    self.clients.insert(cid, (server, idx));
                    if is_invite {
                        self.arm_timer_c(server, idx, now);
                    }
                    self.arm_attempt(server, idx, now);
                    return;
                }
                Err(e) => {
                    debug!(shard = self.index, error = %e, "client transaction refused");
                    self.branch_final(server, idx, Final::Synthetic(503), now);
                    return;
                }
            }
        }
    }

    fn arm_timer_c(&mut self, server: ServerId, idx: usize, now: Instant) {
        let at = now + self.cfg.timer_c;
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        let Some(b) = self.contexts.get_mut(&server).and_then(|c| c.branches.get_mut(idx)) else { return };
        if let Some(old) = b.timer_c.replace(key) {
            self.timers.remove(&old);
        }
        self.timers.insert(key, TimerKind::TimerC { server, branch: idx });
    }

    fn arm_attempt(&mut self, server: ServerId, idx: usize, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        let Some(d) = ctx.attempt_timeout else { return };
        let Some(b) = ctx.branches.get_mut(idx) else { return };
        self.timer_seq += 1;
        let key = (now + d, self.timer_seq);
        if let Some(old) = b.attempt.replace(key) {
            self.timers.remove(&old);
        }
        self.timers.insert(key, TimerKind::Attempt { server, branch: idx });
    }

    /// Timer C or the attempt timer: cancel the branch, count it as 408.
    fn on_timer_c(&mut self, server: ServerId, idx: usize, now: Instant) {
        let Some(b) = self.contexts.get_mut(&server).and_then(|c| c.branches.get_mut(idx)) else { return };
        b.timer_c = None;
        if !b.is_active() {
            return;
        }
        // §16.8: CANCEL the branch and treat it as if it answered 408.
        if let Some(c) = b.client {
            let _ = self.layer.cancel(now, c);
        }
        self.branch_final(server, idx, Final::Synthetic(408), now);
    }

    // ---- responses ------------------------------------------------------

    fn on_response(&mut self, cid: ClientId, msg: Message, now: Instant) {
        let Some(&(server, idx)) = self.clients.get(&cid) else { return };
        let Some(code) = msg.status() else { return };
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        if ctx.first_response && code > 100 {
            ctx.first_response = false;
            self.metrics.request_latency(
                ctx.method,
                crate::metrics::LatencyKind::First,
                now.saturating_duration_since(ctx.started),
            );
        }
        let Some(branch) = ctx.branches.get_mut(idx) else { return };
        if branch.client != Some(cid) {
            return;
        }
        match code {
            100 => {}
            101..=199 => {
                if branch.state == BranchState::Calling {
                    branch.state = BranchState::Proceeding;
                }
                if ctx.method == Method::Invite && branch.is_active() {
                    self.arm_timer_c(server, idx, now);
                }
                let Some(ctx) = self.contexts.get(&server) else { return };
                if !ctx.finished && !ctx.cancelled {
                    // §16.7 step 5: provisionals other than 100 go upstream.
                    let dest = ctx.branches.get(idx).and_then(|b| b.current.as_ref());
                    let bytes = upstream_response(self.cfg.nat, &msg, dest);
                    self.send_upstream(server, bytes, code, now);
                }
            }
            200..=299 => {
                let escaped = match (branch.target.escape, branch.sent_at) {
                    (Some(window), Some(sent)) => {
                        ctx.method == Method::Invite && now.saturating_duration_since(sent) < window
                    }
                    _ => false,
                };
                if escaped && !ctx.answered {
                    self.escape_branch(server, idx, &msg, now);
                    return;
                }
                if let Some(k) = branch.timer_c.take() {
                    self.timers.remove(&k);
                }
                branch.state = BranchState::Done;
                let is_invite = ctx.method == Method::Invite;
                let starts_dialog = is_invite && ctx.record_route;
                let first_2xx = !ctx.answered;
                ctx.answered = true;
                // §16.7 step 5: every 2xx goes upstream, also from other
                // branches and retransmitted ones (RFC 6026).
                let bytes = upstream_response(self.cfg.nat, &msg, branch.current.as_ref());
                let code_sent = code;
                if first_2xx {
                    self.metrics.request_latency(
                        ctx.method,
                        crate::metrics::LatencyKind::Final,
                        now.saturating_duration_since(ctx.started),
                    );
                }
                if starts_dialog {
                    self.dialog_started(&msg, now);
                }
                self.send_upstream(server, bytes, code_sent, now);
                if is_invite && first_2xx {
                    // §16.7 step 10: cancel the branches still pending.
                    self.cancel_pending(server, now);
                }
                self.check_complete(server, now);
            }
            _ => {
                // RFC 3261 §21.5.4: a 503 with Retry-After says how long
                // this next hop is out; later requests try others first.
                if code == 503 {
                    if let (Some(secs), Some(dest)) = (retry_after(&msg), &branch.current) {
                        self.resolver.mark_down(dest, Duration::from_secs(secs));
                    }
                }
                // RFC 3263 §4.3 / DESIGN: a 503 moves to the next destination
                // of the same branch.
                if (300..400).contains(&code) && ctx.redirects_left > 0 && !ctx.cancelled && !ctx.no_answer {
                    if let Some(contact) = msg.contacts().next().map(|c| c.uri.as_str().to_string()) {
                        ctx.redirects_left -= 1;
                        branch.state = BranchState::Done;
                        for k in [branch.timer_c.take(), branch.attempt.take()].into_iter().flatten() {
                            self.timers.remove(&k);
                        }
                        debug!(shard = self.index, code, %contact, "following redirect");
                        // The new branch keeps the branch's own request (the
                        // INVITE to UM with its Diversion and History-Info),
                        // retargeted to the Contact.
                        let target = Target { request: branch.target.request.clone(), ..Target::to_uri(contact) };
                        ctx.branches.push(Branch::new(target));
                        let new_idx = ctx.branches.len() - 1;
                        self.resolve_branch(server, new_idx, now);
                        return;
                    }
                }
                if code == 503 && !branch.dests.is_empty() && !ctx.cancelled {
                    if let Some(k) = branch.timer_c.take() {
                        self.timers.remove(&k);
                    }
                    self.try_next_destination(server, idx, now);
                    return;
                }
                self.branch_final(server, idx, Final::Received(msg), now);
            }
        }
    }

    /// Voice-mail escape: the branch answered too fast to be a person. The
    /// proxy completes and ends that leg itself (ACK, then BYE, as the
    /// caller would) and counts the branch as unavailable (480); the
    /// caller never sees that 2xx.
    fn escape_branch(&mut self, server: ServerId, idx: usize, resp: &Message, now: Instant) {
        let Some(ctx) = self.contexts.get(&server) else { return };
        let Some(branch) = ctx.branches.get(idx) else { return };
        let call_id = ctx.request.call_id().to_string();
        debug!(shard = self.index, call_id = %escape(&call_id), "voice-mail escape: ending a branch answered too fast");
        let wire = self.wire.clone();
        // The leg's route set: the 2xx's Record-Route entries added below us,
        // reversed (RFC 3261 §12.1.2 from the caller's side, without the
        // entries of this proxy and those upstream of it).
        let mut route: Vec<String> = Vec::new();
        for rr in resp.record_routes() {
            if wire.is_local(rr.uri.host(), rr.uri.port()) {
                break;
            }
            route.push(rr.as_str().to_string());
        }
        route.reverse();
        let Some(contact) = resp.contacts().next().map(|c| c.uri.as_str().to_string()) else {
            self.branch_final(server, idx, Final::Synthetic(480), now);
            return;
        };
        let first_hop = route.first().map(|r| strip_brackets(r).to_string()).unwrap_or_else(|| contact.clone());
        let dest = Uri::parse(first_hop.as_bytes()).and_then(|u| numeric_destination(&u)).or(branch.current.clone());
        let Some(dest) = dest else {
            self.branch_final(server, idx, Final::Synthetic(480), now);
            return;
        };
        let Some(listener) = wire.listener_for(dest.transport, &dest.addr) else { return };
        let from =
            ctx.request.headers().iter().find(|h| h.name == HeaderName::From).map(|h| ctx.request.header_value(h));
        let to = resp.headers().iter().find(|h| h.name == HeaderName::To).map(|h| resp.header_value(h));
        let (Some(from), Some(to)) = (from, to) else { return };
        let (from, to) = (String::from_utf8_lossy(from).into_owned(), String::from_utf8_lossy(to).into_owned());
        let cseq = resp.cseq().0;
        let hash = self.minter.loop_hash(resp);
        let build = |method: &str, n: u32, branch_id: &str| {
            let mut m = format!(
                "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/{} {}:{};branch={branch_id}\r\nMax-Forwards: 70\r\n",
                dest.transport.via_name(),
                listener.host,
                listener.port
            );
            for r in &route {
                m.push_str(&format!("Route: {r}\r\n"));
            }
            m.push_str(&format!(
                "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {n} {method}\r\nContent-Length: 0\r\n\r\n"
            ));
            Bytes::from(m)
        };
        let ack = build("ACK", cseq, &self.minter.mint(hash));
        self.wire.send(Outbound { dest: dest.clone(), bytes: ack, token: None });
        let bye = build("BYE", cseq.saturating_add(1), &self.minter.mint(hash));
        if let Ok(bye) = Message::parse(bye, &self.limits) {
            // Its responses have no branch to go to and are dropped.
            let _ = self.layer.send_request(now, bye, dest.clone(), dest.transport.is_reliable());
        }
        self.branch_final(server, idx, Final::Synthetic(480), now);
    }

    /// A client transaction failed without a response: timeout (408) or
    /// transport error (503, §16.9). The next destination is tried first.
    fn on_branch_failure(&mut self, cid: ClientId, code: u16, now: Instant) {
        let Some(&(server, idx)) = self.clients.get(&cid) else { return };
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        let Some(branch) = ctx.branches.get_mut(idx) else { return };
        if branch.client != Some(cid) || !branch.is_active() {
            return;
        }
        if let Some(dest) = &branch.current {
            self.resolver.report_failure(dest, if code == 408 { "no answer (timeout)" } else { "transport error" });
        }
        if let Some(k) = branch.timer_c.take() {
            self.timers.remove(&k);
        }
        if !branch.dests.is_empty() && !ctx.cancelled && !ctx.answered {
            self.try_next_destination(server, idx, now);
        } else {
            self.branch_final(server, idx, Final::Synthetic(code), now);
        }
    }

    fn branch_final(&mut self, server: ServerId, idx: usize, f: Final, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        let Some(branch) = ctx.branches.get_mut(idx) else { return };
        if !branch.is_active() {
            return;
        }
        branch.state = BranchState::Done;
        for k in [branch.timer_c.take(), branch.attempt.take()].into_iter().flatten() {
            self.timers.remove(&k);
        }
        ctx.codes.push(f.code());
        ctx.best.offer(f);
        if ctx.best.has_global_failure() {
            // §16.7 step 5: a 6xx ends the search.
            ctx.groups.clear();
            self.cancel_pending(server, now);
        }
        self.check_complete(server, now);
    }

    fn cancel_pending(&mut self, server: ServerId, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        ctx.groups.clear();
        for b in ctx.branches.iter_mut().filter(|b| b.is_active()) {
            match (b.state, b.client) {
                (BranchState::Resolving, _) | (_, None) => b.state = BranchState::Done,
                (BranchState::Calling, Some(c)) => {
                    // RFC 3261 §9.1: no CANCEL before a provisional; the
                    // layer sends it if one comes. The fork does not wait
                    // for such a silent branch (up to Timer B): it counts as
                    // cancelled now.
                    let _ = self.layer.cancel(now, c);
                    b.state = BranchState::Done;
                    for k in [b.timer_c.take(), b.attempt.take()].into_iter().flatten() {
                        self.timers.remove(&k);
                    }
                    ctx.codes.push(487);
                    ctx.best.offer(Final::Synthetic(487));
                }
                (_, Some(c)) => {
                    let _ = self.layer.cancel(now, c);
                }
            }
        }
    }

    /// When no branch is active: start the next serial group, or send the
    /// best final response upstream (§16.7 step 6).
    fn check_complete(&mut self, server: ServerId, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&server) else { return };
        if ctx.finished || ctx.routing || ctx.branches.iter().any(Branch::is_active) {
            return;
        }
        if ctx.answered {
            ctx.finished = true;
            return;
        }
        if !ctx.cancelled && !ctx.no_answer && !ctx.groups.is_empty() {
            self.start_next_group(server, now);
            return;
        }
        // The fork failed. A fallback (voice mail …) may take over; the
        // caller's own CANCEL never diverts.
        if let (false, Some(fb)) = (ctx.cancelled, ctx.fallback.clone()) {
            let outcome = ForkOutcome {
                elapsed: now.saturating_duration_since(ctx.started),
                stage: ctx.stage,
                best: ctx.best.code(),
                no_answer: ctx.no_answer,
                codes: std::mem::take(&mut ctx.codes),
            };
            ctx.stage = ctx.stage.saturating_add(1);
            match fb.on_failure(&ctx.request, &outcome) {
                FallbackAction::Respond => {}
                FallbackAction::Reject(r) => {
                    let req = ctx.request.clone();
                    let hs: Vec<(&str, String)> = r.headers.into_iter().collect();
                    self.respond(server, &req, r.code, r.reason, &hs, now);
                    return;
                }
                FallbackAction::Divert { plan, request } => {
                    if let Some(bytes) = request {
                        match Message::parse(bytes, &self.limits) {
                            Ok(m) => ctx.forward_base = Some(m),
                            Err(e) => {
                                warn!(shard = self.index, error = %e, "diverted request does not parse");
                                let req = ctx.request.clone();
                                self.respond(server, &req, 500, "Server Internal Error", &[], now);
                                return;
                            }
                        }
                    }
                    ctx.best = BestResponse::default();
                    self.start_plan(server, plan, now);
                    return;
                }
            }
        }
        if let Some(k) = ctx.ring_timer.take() {
            self.timers.remove(&k);
        }
        let best = std::mem::take(&mut ctx.best);
        let (chosen, challenges) = best.take();
        let req = ctx.request.clone();
        let is_invite = ctx.method == Method::Invite;
        let cancelled = ctx.cancelled;
        self.metrics.request_latency(
            ctx.method,
            crate::metrics::LatencyKind::Final,
            now.saturating_duration_since(ctx.started),
        );
        match chosen {
            Some(Final::Received(m)) => {
                let code = m.status().unwrap_or(500);
                let up = upstream_code(code);
                if up == code {
                    let mut ed = m.edit().remove_top_via();
                    // §16.7 step 7: the challenges of every branch.
                    let own: Vec<Vec<u8>> = m
                        .header_values(HeaderName::WwwAuthenticate)
                        .chain(m.header_values(HeaderName::ProxyAuthenticate))
                        .map(<[u8]>::to_vec)
                        .collect();
                    for (name, v) in &challenges {
                        if !own.contains(v) {
                            ed = ed.add_header(name.as_str(), std::str::from_utf8(v).unwrap_or_default());
                        }
                    }
                    self.send_upstream(server, ed.finish(), code, now);
                } else {
                    self.respond(server, &req, up, build::reason_phrase(up), &[], now);
                }
            }
            Some(Final::Synthetic(code)) => {
                if code == 408 && !is_invite {
                    // RFC 4320 §4.1: never a 408 to a non-INVITE; the
                    // caller's own transaction times out, ours is let go.
                    let _ = self.layer.abandon(server);
                    if let Some(ctx) = self.contexts.get_mut(&server) {
                        ctx.finished = true;
                    }
                } else {
                    let up = if cancelled { 487 } else { code };
                    self.respond(server, &req, up, build::reason_phrase(up), &[], now);
                }
            }
            None => {
                // No branch ever ran: nobody to ring (480); else all timed out.
                let no_branch = self.contexts.get(&server).is_some_and(|c| c.branches.is_empty());
                let code = if cancelled {
                    487
                } else if no_branch {
                    480
                } else {
                    408
                };
                self.respond(server, &req, code, build::reason_phrase(code), &[], now);
            }
        }
    }

    // ---- CANCEL, ACK, stray responses -------------------------------------

    fn on_cancel(&mut self, cancel: ServerId, invite: Option<ServerId>, msg: &Message, now: Instant) {
        let Some(invite) = invite.filter(|i| self.contexts.contains_key(i)) else {
            // §16.10 lets a proxy without the INVITE's context forward the
            // CANCEL statelessly; we answer 481 instead: the INVITE never
            // passed through this proxy, so nothing downstream has it.
            self.respond(cancel, msg, 481, "Call/Transaction Does Not Exist", &[], now);
            return;
        };
        self.respond(cancel, msg, 200, "OK", &[], now);
        let Some(ctx) = self.contexts.get_mut(&invite) else { return };
        if ctx.finished {
            return;
        }
        ctx.cancelled = true;
        self.cancel_pending(invite, now);
        self.check_complete(invite, now);
    }

    /// ACK for a 2xx: forwarded statelessly along the route set (§16.11).
    fn forward_stateless_ack(&mut self, msg: Message) {
        if msg.max_forwards() == Some(0) {
            return;
        }
        let wire = self.wire.clone();
        let edits = route::preprocess(&msg, |u| wire.is_local(u.host(), u.port()));
        let hop = edits
            .next_route()
            .map(str::to_string)
            .or_else(|| edits.restore_request_uri.clone().or_else(|| msg.request_uri_str().map(str::to_string)));
        let Some(mut hop) = hop else { return };
        if edits.next_route().is_none() {
            // The callee's Contact, marked because it is behind NAT.
            if let Some((ruri, dest)) = crate::nat::take_alias(&hop) {
                send_stateless(&*self.wire, &self.minter, &self.metrics, &msg, &edits, Some(&ruri), dest);
                return;
            }
        }
        if Uri::parse(hop.as_bytes()).is_some_and(|u| wire.is_local(u.host(), u.port())) {
            // Addressed to us without a route (the UA ignored Record-Route):
            // the router knows where the dialog's INVITE went. Only a ready
            // answer is used; an ACK is never worth waiting for.
            let source = Peer {
                transport: Transport::Udp,
                remote: SocketAddr::from(([0, 0, 0, 0], 0)),
                local: SocketAddr::from(([0, 0, 0, 0], 0)),
                flow: None,
            };
            let source = self.current.as_ref().map(|c| c.0.clone()).unwrap_or(source);
            let Routing::Ready(RouteDecision::Forward(plan)) =
                self.router.route(&RouteRequest { msg: &msg, source: &source, tls: None })
            else {
                return;
            };
            let Some(t) = plan.groups.into_iter().flatten().next() else { return };
            hop = match (t.next_hop, t.request_uri) {
                (Some(NextHop::Destination(d)), _) => {
                    send_stateless(&*self.wire, &self.minter, &self.metrics, &msg, &edits, None, d);
                    return;
                }
                (Some(NextHop::Uri(u)), _) | (None, Some(u)) => u,
                // An ACK is not worth an SRV lookup: the dialog's route set
                // normally decides its path.
                (Some(NextHop::Service { .. }), _) | (None, None) => return,
            };
            if Uri::parse(hop.as_bytes()).is_some_and(|u| wire.is_local(u.host(), u.port())) {
                return;
            }
        }
        let Some(dest) = Uri::parse(hop.as_bytes()).and_then(|u| numeric_destination(&u)) else {
            // Rare: a dialog's next hop by name. Resolve off the shard.
            let resolver = self.resolver.clone();
            let minter = self.minter.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                if let Ok(dests) = resolver.resolve(hop).await {
                    if let Some(d) = dests.into_iter().next() {
                        send_stateless(&*wire, &minter, &metrics, &msg, &edits, None, d);
                    }
                }
            });
            return;
        };
        send_stateless(&*self.wire, &self.minter, &self.metrics, &msg, &edits, None, dest);
    }

    /// §16.7 step 1: a response with no transaction is forwarded statelessly
    /// by its next Via (e.g. a 2xx retransmission after the transaction
    /// ended).
    fn forward_stray_response(&mut self, msg: Message) {
        let mut vias = msg.vias();
        let Some(top) = vias.next() else { return };
        if !self.wire.is_local(top.host(), top.port()) {
            return;
        }
        let Some(next) = vias.next() else { return };
        let Some(dest) = via_destination(&next, None) else { return };
        let bytes = msg.edit().remove_top_via().finish();
        self.wire.send(Outbound { dest, bytes, token: None });
    }
}

fn send_stateless(
    wire: &dyn Wire,
    minter: &BranchMinter,
    metrics: &Metrics,
    msg: &Message,
    edits: &RouteEdits,
    request_uri: Option<&str>,
    dest: Destination,
) {
    let Some(listener) = wire.listener_for(dest.transport, &dest.addr) else { return };
    let branch = minter.stateless(msg.branch().unwrap_or_default());
    let via = format!("SIP/2.0/{} {}:{};branch={}", dest.transport.via_name(), listener.host, listener.port, branch);
    let ed = route::apply(msg.edit(), edits, request_uri).decrement_max_forwards().push_via(&via);
    wire.send(Outbound { dest, bytes: ed.finish(), token: None });
    metrics.request(Method::Ack, Direction::Out);
}

/// The forwarded copy of a request for one branch (RFC 3261 §16.6).
#[allow(clippy::too_many_arguments)]
fn build_forward(
    ctx: &ProxyTx,
    max_forwards: u32,
    msg: &Message,
    target: &Target,
    dest: &Destination,
    out: &ListenerInfo,
    inbound: Option<&ListenerInfo>,
    branch: &str,
) -> Bytes {
    let mut ed = route::apply(msg.edit(), &ctx.route_edits, target.request_uri.as_deref());
    // Step 7: pushed routes (Path) go on top of the route set, first on top.
    for r in &target.route {
        ed = ed.push_route(r);
    }
    if ctx.strip_proxy_auth {
        ed = ed.remove_header(HeaderName::ProxyAuthorization);
    }
    if let Some(rw) = &ctx.rewrite {
        ed = ed.remove_header_named(&rw.name);
        if let Some(v) = &rw.value {
            ed = ed.add_header(&rw.name, v);
        }
    }
    if ctx.nat_mark {
        ed = crate::nat::mark_contact(ed, msg, ctx.peer.remote, ctx.peer.transport).0;
    }
    // Step 3.
    ed = match msg.max_forwards() {
        Some(n) => ed.set_max_forwards(n.saturating_sub(1)),
        None => ed.set_max_forwards(max_forwards),
    };
    // Step 4 (RFC 5658 double Record-Route when the transport or interface
    // changes): the entry facing the callee on top.
    if ctx.record_route {
        ed = ed.push_record_route(&record_route_uri(out));
        if let Some(inb) = inbound {
            if inb.transport != out.transport || inb.local != out.local {
                ed = ed.push_record_route(&record_route_uri(inb));
            }
        }
    }
    // Step 8: our Via on top; the caller's top Via below it gains
    // received/rport (RFC 3581).
    let via = format!("SIP/2.0/{} {}:{};branch={}", dest.transport.via_name(), out.host, out.port, branch);
    ed = ed.push_via(&via);
    // Computed here, not on arrival: most requests a registrar sees are
    // answered locally and never need it.
    if let Some(fixed) = fix_top_via(&ctx.request.top_via(), &ctx.peer) {
        ed = ed.push_via(&fixed).remove_top_via();
    }
    ed.finish()
}

fn record_route_uri(l: &ListenerInfo) -> String {
    let host =
        if l.host.contains(':') && !l.host.starts_with('[') { format!("[{}]", l.host) } else { l.host.to_string() };
    format!("<sip:{}:{};transport={};lr>", host, l.port, l.transport.param_name())
}

fn strip_brackets(v: &str) -> &str {
    let v = v.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v.get(a + 1..b).unwrap_or(v),
        _ => v,
    }
}

/// A numeric next hop needs no DNS (RFC 3263 §4.1/§4.2 short-cut).
pub fn numeric_destination(uri: &Uri<'_>) -> Option<Destination> {
    let ip: IpAddr = match uri.param("maddr").flatten() {
        Some(m) => m.trim_start_matches('[').trim_end_matches(']').parse().ok()?,
        None => match uri.host_kind() {
            HostKind::Ipv4(a) => IpAddr::V4(a),
            HostKind::Ipv6(a) => IpAddr::V6(a),
            HostKind::Domain => return None,
        },
    };
    let transport = match uri.transport() {
        Some(t) => Transport::from_name(t)?,
        None if uri.scheme == Scheme::Sips => Transport::Tls,
        None => Transport::Udp,
    };
    let transport = if uri.scheme == Scheme::Sips { Transport::Tls } else { transport };
    let port = uri.port().unwrap_or(transport.default_port());
    Some(Destination { transport, addr: SocketAddr::new(ip, port), flow: None, server_name: None })
}

/// Where responses to a request go (RFC 3261 §18.2.2, RFC 3581 §4): back
/// on its connection for TCP/TLS; for UDP to the source address, at the
/// source port when the Via asked for rport, else at the Via port.
pub fn reply_destination(msg: &Message, peer: &Peer) -> Destination {
    if peer.transport.is_reliable() {
        return Destination::reply_to(peer);
    }
    let via = msg.top_via();
    let port = match via.rport() {
        Some(_) => peer.remote.port(),
        None => via.port().unwrap_or(5060),
    };
    Destination {
        transport: peer.transport,
        addr: SocketAddr::new(peer.remote.ip(), port),
        flow: None,
        server_name: None,
    }
}

/// Where a response goes by a Via (for stateless forwarding).
fn via_destination(via: &Via<'_>, _peer: Option<&Peer>) -> Option<Destination> {
    let transport = Transport::from_name(via.transport())?;
    let ip: IpAddr = match via.received() {
        Some(r) => r.parse().ok()?,
        None => match via.host_kind() {
            HostKind::Ipv4(a) => IpAddr::V4(a),
            HostKind::Ipv6(a) => IpAddr::V6(a),
            HostKind::Domain => return None,
        },
    };
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port().unwrap_or(transport.default_port()),
    };
    Some(Destination { transport, addr: SocketAddr::new(ip, port), flow: None, server_name: None })
}

/// A response going upstream without our Via. When it came back from a
/// registered contact (a flow, or a NAT'd binding's public address) and
/// its Contact hides that address, the Contact is marked with it
/// ([`crate::nat`]), so that the caller's in-dialog requests (BYE,
/// re-INVITE) reach the callee through its NAT.
fn upstream_response(mode: crate::nat::NatMode, msg: &Message, dest: Option<&Destination>) -> Bytes {
    let ed = msg.edit().remove_top_via();
    match dest {
        Some(d) if d.flow.is_some() && crate::nat::response_hides_source(mode, msg, d) => {
            crate::nat::mark_contact(ed, msg, d.addr, d.transport).0.finish()
        }
        _ => ed.finish(),
    }
}

/// The target of a request that goes by its Request-URI (in a dialog):
/// a Request-URI marked with an alias ([`crate::nat`]) goes to the marked
/// address, without the mark; any other keeps its Request-URI.
fn alias_target(edits: &RouteEdits, msg: &Message) -> Target {
    if edits.next_route().is_some() {
        return Target::default();
    }
    let ruri = edits.restore_request_uri.as_deref().or_else(|| msg.request_uri_str());
    match ruri.and_then(crate::nat::take_alias) {
        Some((uri, dest)) => {
            Target { request_uri: Some(uri), next_hop: Some(NextHop::Destination(dest)), ..Target::default() }
        }
        None => Target::default(),
    }
}

/// Requests that create a dialog (RFC 3261 §12.1, RFC 6665 §4.1, RFC 3515):
/// refused while draining when they come outside a dialog.
fn creates_dialog(method: Method) -> bool {
    matches!(method, Method::Invite | Method::Subscribe | Method::Refer)
}

/// The seconds of a Retry-After header (RFC 3261 §20.33: `delta-seconds
/// [comment] *(; params)`), bounded to a day.
fn retry_after(msg: &Message) -> Option<u64> {
    let v = msg.header_values_named("Retry-After").next()?;
    let digits: &[u8] = v.split(|c| !c.is_ascii_digit()).next()?;
    let secs: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(secs.min(86_400))
}

/// Whether the request carries Proxy-Authorization and every one of them
/// is for a realm of ours (credentials this proxy consumed).
fn own_credentials_only(msg: &Message, realms: &[String]) -> bool {
    let mut any = false;
    for value in msg.proxy_authorization() {
        let Ok(v) = value else { return false };
        let realm = v.param("realm").unwrap_or_default();
        let realm = realm.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")).unwrap_or(realm);
        if !realms.iter().any(|r| r.as_bytes().eq_ignore_ascii_case(realm)) {
            return false;
        }
        any = true;
    }
    any
}

/// Peer text made safe for a log line: control characters escaped.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.escape_default().to_string())
    }
}

/// The To tag for responses the proxy itself sends to a request: a pure
/// function of the request, so a retransmitted request gets the same tag.
fn to_tag_for(req: &Message) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.call_id().hash(&mut h);
    req.from_tag().hash(&mut h);
    req.branch().hash(&mut h);
    format!("um{:x}", h.finish())
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Shard>();
}

/// How long a proxy may wait for a final response after a provisional
/// (RFC 3261 §16.6 step 11: more than 3 minutes).
pub const DEFAULT_TIMER_C: Duration = Duration::from_secs(180);

/// How often a shard looks for idle dialogs (while it tracks any).
const DIALOG_PRUNE_EVERY: Duration = Duration::from_secs(60);
