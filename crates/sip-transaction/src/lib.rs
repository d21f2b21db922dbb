//! Sans-IO SIP transaction layer (RFC 3261 §17, RFC 6026, RFC 4320/4321).
//!
//! [`TransactionLayer`] does no I/O and reads no clock: parsed messages,
//! core commands and `now` go in; datagrams to send ([`Transmit`]),
//! notifications for the proxy core ([`Event`]) and the next deadline come
//! out. The caller's loop (quinn-proto's pattern):
//!
//! 1. feed input: `handle_request` / `handle_response` /
//!    `handle_transport_error` from the network, commands from the core;
//! 2. drain `poll_transmit` and `poll_event`;
//! 3. sleep until `poll_timeout`, then call `handle_timeout(now)` and go to 2.
//!
//! ```
//! use sip_message::Message;
//! use sip_transaction::{Config, Event, TransactionLayer};
//! use std::time::Instant;
//!
//! let mut layer = TransactionLayer::<&str>::new(Config::default());
//! let now = Instant::now(); // the caller's clock, passed in
//! let invite = Message::parse_slice(
//!     "INVITE sip:bob@example.com SIP/2.0\r\n\
//!      Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
//!      To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1928301774\r\n\
//!      Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContent-Length: 0\r\n\r\n",
//! ).unwrap();
//! layer.handle_request(now, invite, "192.0.2.1:5060", false).unwrap();
//! let Some(Event::Request { id, msg, .. }) = layer.poll_event() else { panic!() };
//! let ringing = sip_message::build::response(&msg, 180, "Ringing", Some("a6c85cf"));
//! layer.send_response(now, id, ringing, 180).unwrap();
//! assert_eq!(layer.poll_transmit().unwrap().dest, "192.0.2.1:5060");
//! ```
//!
//! Methods of [`TransactionLayer`], by kind: getters (`len`, `config`),
//! network in (`handle_*`), commands from the core (`send_request`,
//! `send_response`, `cancel`), out (`poll_*`).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod client;
pub mod error;
mod key;
mod server;
pub mod timers;

#[cfg(test)]
mod tests;

pub use error::Rejected;
pub use key::{IdBuildHasher, IdHasher};
pub use timers::Timer;

use bytes::Bytes;
use client::{ClientState, ClientTx, Cx};
use key::{ClientKey, ServerKey};
use server::{ServerState, ServerTx};
use sip_message::{Message, Method};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use timers::{Effects, Notify, Slots, TimerQueue};

/// Timer values and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// RTT estimate (RFC 3261 §17.1.1.1), 500 ms. Timers A, E, G start at
    /// T1; B, F, H, J, L, M are 64·T1.
    pub t1: Duration,
    /// Cap on non-INVITE request and INVITE response retransmit intervals
    /// (Timers E, G), 4 s.
    pub t2: Duration,
    /// How long a message may stay in the network, 5 s: Timers I and K.
    pub t4: Duration,
    /// Live transactions (server and client together). Past it a new
    /// request is refused with [`Rejected::Overloaded`] and the core answers
    /// 503 (a CANCEL for a live INVITE, and the CANCEL the layer sends for
    /// [`TransactionLayer::cancel`], are still admitted: at most one per
    /// INVITE). 200 000 by default: a proxied call over UDP keeps four
    /// transactions (INVITE and BYE, server and client) alive for up to
    /// 64·T1 = 32 s, so this carries about 1 500 calls/s; at under 1 KiB per
    /// transaction it is under 200 MiB. Raise it for more.
    pub max_transactions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            max_transactions: 200_000,
        }
    }
}

/// A server transaction: a request a peer sent us.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerId(pub u64);

/// A client transaction: a request the core sent.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TxId {
    Server(ServerId),
    Client(ClientId),
}

/// Bytes to send to `dest` on behalf of transaction `tx`.
#[derive(Debug, Clone)]
pub struct Transmit<A> {
    pub dest: A,
    pub bytes: Bytes,
    pub tx: TxId,
}

/// A notification for the proxy core.
#[derive(Debug, Clone)]
pub enum Event<A> {
    /// A new request (not ACK, not CANCEL) created server transaction `id`.
    /// The core must answer it.
    Request { id: ServerId, msg: Message, source: A },
    /// An ACK that matched no INVITE server transaction in Completed or
    /// Confirmed (an ACK for a 2xx, or a stray one): the core forwards it
    /// statelessly. An ACK matching a transaction in Accepted (RFC 6026
    /// §8.7) or in Proceeding also comes here.
    Ack { msg: Message, source: A },
    /// A CANCEL created non-INVITE server transaction `cancel`; `invite` is
    /// the INVITE server transaction it cancels (§9.2), if any. The core
    /// answers the CANCEL (200, or 481 when `invite` is `None`).
    Cancel { cancel: ServerId, invite: Option<ServerId>, msg: Message, source: A },
    /// A response for client transaction `id`: 1xx, the first non-2xx
    /// final, and for INVITE every 2xx including retransmissions (RFC 6026).
    Response { id: ClientId, msg: Message },
    /// A response that matched no client transaction (§16.7 step 1), or a
    /// 2xx reaching an INVITE client transaction in Completed: the core
    /// forwards it statelessly.
    StrayResponse { msg: Message },
    /// Timer B or F fired with no final response, or no final response came
    /// 64·T1 after our CANCEL (§9.1). RFC 4320: for non-INVITE the core
    /// must not send 408 upstream.
    Timeout { id: ClientId },
    /// A transport error the core reported: for a client transaction a
    /// final failure (§8.1.3.1, the core answers 503); for a server one,
    /// the response could not be sent.
    TransportError { id: TxId },
    /// The transaction is freed; the core may drop its state for it.
    Terminated { id: TxId },
}

/// The transaction layer: every live transaction, its timers and the
/// output queues. `A` is the caller's address type (a socket address, a
/// flow id …); the layer only clones and returns it.
#[derive(Debug)]
pub struct TransactionLayer<A> {
    config: Config,
    next_id: u64,
    servers: HashMap<u64, ServerTx<A>, IdBuildHasher>,
    clients: HashMap<u64, ClientTx<A>, IdBuildHasher>,
    /// Keys a peer chooses (branch, Call-ID, tags): the default SipHash
    /// hasher with its random keys, so a peer cannot flood one bucket.
    server_index: HashMap<ServerKey, ServerId>,
    /// Branches are ours, but lookups use a response's branch, which a peer
    /// chooses: SipHash as well.
    client_index: HashMap<ClientKey, ClientId>,
    timers: TimerQueue,
    transmits: VecDeque<Transmit<A>>,
    events: VecDeque<Event<A>>,
    /// Transactions past their final response, kept only by clean-up
    /// timers (counted on every state change, so reading it is free).
    finishing: usize,
}

impl<A: Clone> TransactionLayer<A> {
    /// A layer with `config`. T1, T2 and T4 below 1 ms are raised to 1 ms
    /// and T2 below T1 to T1, so that no timer can fire in a loop.
    pub fn new(mut config: Config) -> Self {
        let floor = Duration::from_millis(1);
        config.t1 = config.t1.max(floor);
        config.t2 = config.t2.max(config.t1);
        config.t4 = config.t4.max(floor);
        TransactionLayer {
            config,
            next_id: 0,
            servers: HashMap::default(),
            clients: HashMap::default(),
            server_index: HashMap::new(),
            client_index: HashMap::new(),
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            finishing: 0,
        }
    }

    // ---- getters ----

    /// Live transactions, server and client.
    pub fn len(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live transactions past their final response, waiting only on their
    /// clean-up timers (absorbing retransmissions, RFC 3261 Timers D, G–M):
    /// nothing is owed to anyone. A proxy draining for shutdown need not
    /// wait for them.
    pub fn finishing(&self) -> usize {
        self.finishing
    }

    /// Live transactions still owed or owing a final response:
    /// `len() - finishing()`.
    pub fn in_progress(&self) -> usize {
        self.len().saturating_sub(self.finishing)
    }

    /// Count a state change of one transaction into or out of finishing.
    fn count_finishing(&mut self, before: bool, after: bool) {
        match (before, after) {
            (false, true) => self.finishing += 1,
            (true, false) => self.finishing = self.finishing.saturating_sub(1),
            _ => {}
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The RFC state name of a live transaction ("Calling", "Accepted" …),
    /// `None` once it is freed. For tests, logs and metrics.
    pub fn state_name(&self, id: TxId) -> Option<&'static str> {
        match id {
            TxId::Server(ServerId(n)) => self.servers.get(&n).map(|t| t.state.name()),
            TxId::Client(ClientId(n)) => self.clients.get(&n).map(|t| t.state.name()),
        }
    }

    /// Upper bound of the memory the live transactions hold: each one's
    /// struct, its index entry and the heap bytes it owns or keeps alive
    /// (keys, kept requests and responses). Hash table slack excluded.
    pub fn memory_bytes(&self) -> usize {
        let server: usize = self.servers.values().map(|t| Self::server_footprint(t)).sum();
        let client: usize = self.clients.values().map(|t| Self::client_footprint(t)).sum();
        server
            + client
            + self.timers.len() * (std::mem::size_of::<timers::TimerKey>() + std::mem::size_of::<(TxId, Timer)>())
    }

    fn server_footprint(t: &ServerTx<A>) -> usize {
        std::mem::size_of::<(u64, ServerTx<A>)>() + std::mem::size_of::<(ServerKey, ServerId)>() + t.heap_bytes()
    }

    fn client_footprint(t: &ClientTx<A>) -> usize {
        std::mem::size_of::<(u64, ClientTx<A>)>() + std::mem::size_of::<(ClientKey, ClientId)>() + t.heap_bytes()
    }

    // ---- network in ----

    /// A request from the network. `source` is where responses go,
    /// `is_reliable` whether it came over TCP/TLS/SCTP (no retransmissions,
    /// zero Timers I and J).
    ///
    /// A retransmission is absorbed (the last response re-sent); an ACK
    /// completes its INVITE transaction or goes to the core as
    /// [`Event::Ack`]; a CANCEL creates a transaction and is matched to its
    /// INVITE ([`Event::Cancel`]); any other new request creates a server
    /// transaction ([`Event::Request`]). A response given here is ignored.
    pub fn handle_request(&mut self, now: Instant, msg: Message, source: A, is_reliable: bool) -> Result<(), Rejected> {
        let Some(method) = msg.method() else { return Ok(()) };
        if method == Method::Ack {
            self.handle_ack(now, msg, source);
            return Ok(());
        }
        let key = ServerKey::of_request(&msg, msg.to_tag());
        let invite = if method == Method::Cancel {
            // §9.2: the INVITE whose key equals the CANCEL's with method INVITE.
            self.server_index.get(&ServerKey::cancelled_invite(&msg)).copied()
        } else {
            None
        };
        let live = self.len();
        // One lookup (one SipHash of the key) finds a retransmission or
        // makes room for the new transaction.
        let id = match self.server_index.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => {
                // §17.2.3 match: a retransmission.
                let id = *e.get();
                self.step_server(now, id, |state, _cx, fx| match state {
                    ServerState::Invite(s) => ServerState::Invite(s.on_retransmission(fx)),
                    ServerState::NonInvite(s) => ServerState::NonInvite(s.on_retransmission(fx)),
                });
                return Ok(());
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                // A CANCEL for a live INVITE is admitted past the cap: it sheds
                // load, and there is at most one per INVITE (a second is a
                // retransmission).
                if live >= self.config.max_transactions && invite.is_none() {
                    return Err(Rejected::Overloaded);
                }
                self.next_id = self.next_id.wrapping_add(1);
                let id = ServerId(self.next_id);
                let key = slot.key().clone();
                slot.insert(id);
                let state = match method {
                    Method::Invite => ServerState::Invite(server::invite::State::start()),
                    _ => ServerState::NonInvite(server::non_invite::State::start()),
                };
                self.servers.insert(
                    id.0,
                    ServerTx {
                        key,
                        peer: source.clone(),
                        is_reliable,
                        slots: Slots::default(),
                        state,
                        response_to_tag: None,
                    },
                );
                id
            }
        };
        self.events.push_back(match method {
            Method::Cancel => Event::Cancel { cancel: id, invite, msg, source },
            _ => Event::Request { id, msg, source },
        });
        Ok(())
    }

    /// §17.2.3 ACK matching: an ACK for a non-2xx final has the INVITE's
    /// branch; an ACK for a 2xx is a transaction of its own and goes to the
    /// core.
    fn handle_ack(&mut self, now: Instant, msg: Message, source: A) {
        let key = ServerKey::of_request(&msg, None);
        let mut found = self.server_index.get(&key).copied();
        if found.is_none() && key.is_rfc2543() && msg.to_tag().is_some() {
            // RFC 2543 fallback: a re-INVITE carried the dialog's To tag.
            found = self.server_index.get(&ServerKey::of_request(&msg, msg.to_tag())).copied();
        }
        // RFC 2543 fallback: the ACK's To tag must be the response's
        // (§17.2.3); a branch with the cookie needs no such check.
        let matched = found.filter(|id| {
            self.servers.get(&id.0).is_some_and(|t| {
                matches!(t.state, ServerState::Invite(_))
                    && (!t.key.is_rfc2543() || t.response_to_tag.as_deref() == msg.to_tag())
            })
        });
        if let Some(id) = matched {
            let notify = self.step_server(now, id, |state, cx, fx| match state {
                ServerState::Invite(s) => ServerState::Invite(s.on_ack(cx, fx)),
                other => other,
            });
            if notify != Some(Notify::Ack) {
                return;
            }
        }
        self.events.push_back(Event::Ack { msg, source });
    }

    /// A response from the network: to its client transaction, or up as
    /// [`Event::StrayResponse`]. A request given here is ignored.
    pub fn handle_response(&mut self, now: Instant, msg: Message) {
        let Some(status) = msg.status() else { return };
        let found = ClientKey::of_response(&msg).and_then(|k| self.client_index.get(&k).copied());
        let Some(id) = found else {
            self.events.push_back(Event::StrayResponse { msg });
            return;
        };
        let Some(tx) = self.clients.get_mut(&id.0) else { return };
        let cx = Cx { config: &self.config, is_reliable: tx.is_reliable };
        let mut fx = Effects::default();
        let state = std::mem::replace(&mut tx.state, ClientState::Invite(client::invite::State::Terminated));
        let before = state.is_finishing();
        tx.state = match state {
            ClientState::Invite(s) => ClientState::Invite(s.on_response(&cx, &mut fx, &tx.request, &msg)),
            ClientState::NonInvite(s) => ClientState::NonInvite(s.on_response(&cx, &mut fx, status)),
        };
        let after = tx.state.is_finishing();
        self.count_finishing(before, after);
        let notify = fx.notify;
        self.finish_client(now, id, fx);
        match notify {
            Some(Notify::PassUp) if !self.is_internal(id) => self.events.push_back(Event::Response { id, msg }),
            Some(Notify::Stray) => self.events.push_back(Event::StrayResponse { msg }),
            _ => {}
        }
        self.reap_client(id);
    }

    /// The transport could not send for transaction `id` (ICMP unreachable,
    /// connection refused or reset). Unknown ids are ignored.
    pub fn handle_transport_error(&mut self, now: Instant, id: TxId) {
        match id {
            TxId::Server(sid) => {
                self.step_server(now, sid, |state, _cx, fx| match state {
                    ServerState::Invite(s) => ServerState::Invite(s.on_transport_error(fx)),
                    ServerState::NonInvite(s) => ServerState::NonInvite(s.on_transport_error(fx)),
                });
            }
            TxId::Client(cid) => {
                self.step_client(now, cid, |state, _cx, fx, _req| match state {
                    ClientState::Invite(s) => ClientState::Invite(s.on_transport_error(fx)),
                    ClientState::NonInvite(s) => ClientState::NonInvite(s.on_transport_error(fx)),
                });
            }
        }
    }

    // ---- commands from the core ----

    /// Start a client transaction for `request` (not ACK, not CANCEL: an ACK
    /// for a 2xx is sent statelessly, and CANCEL goes through
    /// [`cancel`](Self::cancel)). Its top Via carries the branch the core
    /// minted, with the magic cookie. The request is sent at once.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        dest: A,
        is_reliable: bool,
    ) -> Result<ClientId, Rejected> {
        match request.method() {
            None | Some(Method::Ack | Method::Cancel) => return Err(Rejected::NotAllowed),
            Some(_) => {}
        }
        let key = ClientKey::of_request(&request).ok_or(Rejected::NotAllowed)?;
        if self.client_index.contains_key(&key) {
            return Err(Rejected::NotAllowed);
        }
        if self.len() >= self.config.max_transactions {
            return Err(Rejected::Overloaded);
        }
        Ok(self.start_client(now, key, request, dest, is_reliable, None))
    }

    fn start_client(
        &mut self,
        now: Instant,
        key: ClientKey,
        request: Message,
        dest: A,
        is_reliable: bool,
        cancel_of: Option<ClientId>,
    ) -> ClientId {
        let id = ClientId(self.mint());
        let cx = Cx { config: &self.config, is_reliable };
        let mut fx = Effects::default();
        let state = if request.method() == Some(Method::Invite) {
            ClientState::Invite(client::invite::State::start(&cx, &mut fx))
        } else {
            ClientState::NonInvite(client::non_invite::State::start(&cx, &mut fx))
        };
        fx.send = Some(request_bytes(&request));
        self.client_index.insert(key.clone(), id);
        self.clients
            .insert(id.0, ClientTx { key, dest, is_reliable, slots: Slots::default(), state, request, cancel_of });
        self.finish_client(now, id, fx);
        id
    }

    /// Send a response for server transaction `id`. `response` is the
    /// complete message and `status` its code. 1xx any number of times; for
    /// INVITE a 2xx moves to Accepted (RFC 6026) and further 2xx are sent,
    /// 300–699 to Completed; for non-INVITE 101–699, but never 100 or 408
    /// (RFC 4320 §4.1). Anything after a final is [`Rejected::NotAllowed`]
    /// (except 2xx retransmissions in Accepted).
    pub fn send_response(&mut self, now: Instant, id: ServerId, response: Bytes, status: u16) -> Result<(), Rejected> {
        let tx = self.servers.get_mut(&id.0).ok_or(Rejected::UnknownTransaction)?;
        if !(100..700).contains(&status) {
            return Err(Rejected::NotAllowed);
        }
        if tx.key.is_rfc2543() && status >= 200 {
            // RFC 2543 fallback ACK matching needs the response's To tag.
            tx.response_to_tag = Message::parse_slice(&response).ok().and_then(|m| m.to_tag().map(Into::into));
        }
        let cx = Cx { config: &self.config, is_reliable: tx.is_reliable };
        let mut fx = Effects::default();
        let state = std::mem::replace(&mut tx.state, ServerState::NonInvite(server::non_invite::State::Terminated));
        let before = state.is_finishing();
        let (state, result) = match state {
            ServerState::Invite(s) => {
                let (s, r) = s.on_response(&cx, &mut fx, status, response);
                (ServerState::Invite(s), r)
            }
            ServerState::NonInvite(s) => {
                let (s, r) = s.on_response(&cx, &mut fx, status, response);
                (ServerState::NonInvite(s), r)
            }
        };
        let after = state.is_finishing();
        tx.state = state;
        self.count_finishing(before, after);
        self.finish_server(now, id, fx);
        self.reap_server(id);
        result
    }

    /// End non-INVITE server transaction `id` without a final response.
    /// RFC 4320 §4.1: a proxy whose branches all timed out must not answer
    /// 408, and then has nothing to send; without this the transaction
    /// would wait in Trying forever. The proxy calls it when its own client
    /// transaction's Timer F fired, by which time the caller's Timer F has
    /// ended the caller's side too. A later retransmission would start a new
    /// transaction.
    pub fn abandon(&mut self, id: ServerId) -> Result<(), Rejected> {
        let tx = self.servers.get_mut(&id.0).ok_or(Rejected::UnknownTransaction)?;
        if !matches!(tx.state, ServerState::NonInvite(_)) || tx.state.is_terminated() {
            return Err(Rejected::NotAllowed);
        }
        let before = tx.state.is_finishing();
        tx.state = ServerState::NonInvite(server::non_invite::State::Terminated);
        self.count_finishing(before, false);
        self.reap_server(id);
        Ok(())
    }

    /// Cancel INVITE client transaction `id` (§9.1): the CANCEL goes out as
    /// a client transaction of its own once a provisional has arrived (at
    /// once if one has, else on the first 1xx; nothing if a final has
    /// arrived). Its responses are absorbed. If the INVITE then gets no
    /// final response within 64·T1, it ends with [`Event::Timeout`].
    /// The CANCEL does not count against the cap (at most one per INVITE).
    pub fn cancel(&mut self, now: Instant, id: ClientId) -> Result<(), Rejected> {
        let tx = self.clients.get(&id.0).ok_or(Rejected::UnknownTransaction)?;
        if !matches!(tx.state, ClientState::Invite(_)) {
            return Err(Rejected::NotAllowed);
        }
        self.step_client(now, id, |state, cx, fx, _req| match state {
            ClientState::Invite(s) => ClientState::Invite(s.on_cancel(cx, fx)),
            other => other,
        });
        Ok(())
    }

    // ---- out ----

    /// The next datagram or stream write to hand to the transport.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.transmits.pop_front()
    }

    /// The next notification for the core.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<A>> {
        self.events.pop_front()
    }

    /// The earliest timer deadline; call [`handle_timeout`](Self::handle_timeout)
    /// once it has passed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first()
    }

    /// Fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((tx, timer)) = self.timers.pop_due(now) {
            match tx {
                TxId::Server(id) => {
                    if let Some(t) = self.servers.get_mut(&id.0) {
                        forget_slot(&mut t.slots, timer);
                    }
                    self.step_server(now, id, |state, cx, fx| match state {
                        ServerState::Invite(s) => ServerState::Invite(s.on_timer(cx, fx, timer)),
                        ServerState::NonInvite(s) => ServerState::NonInvite(s.on_timer(timer, fx)),
                    });
                }
                TxId::Client(id) => {
                    if let Some(t) = self.clients.get_mut(&id.0) {
                        forget_slot(&mut t.slots, timer);
                    }
                    self.step_client(now, id, |state, cx, fx, req| match state {
                        ClientState::Invite(s) => ClientState::Invite(s.on_timer(cx, fx, timer, req)),
                        ClientState::NonInvite(s) => ClientState::NonInvite(s.on_timer(cx, fx, timer, req)),
                    });
                }
            }
        }
        self.shrink_tables();
    }

    /// Give back the room a burst made the tables grow to: a hash map never
    /// shrinks by itself, so after a flood the tables would hold their peak
    /// capacity (tens of megabytes of slots) for good. A table four times
    /// larger than its content is halved to twice it: each shrink rehashes
    /// what is left, and the load falls by half before the next.
    pub fn shrink_tables(&mut self) {
        shrink_map(&mut self.servers);
        shrink_map(&mut self.clients);
        shrink_map(&mut self.server_index);
        shrink_map(&mut self.client_index);
        if self.transmits.capacity() > SHRINK_MIN && self.transmits.len() * 4 < self.transmits.capacity() {
            self.transmits.shrink_to(self.transmits.len() * 2);
        }
    }

    // ---- internals ----

    fn mint(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn is_internal(&self, id: ClientId) -> bool {
        self.clients.get(&id.0).is_some_and(|t| t.cancel_of.is_some())
    }

    /// Run one transition of server transaction `id`, apply its effects,
    /// free it if it terminated. Returns what it asked to tell the core
    /// (beyond what is reported here).
    fn step_server(
        &mut self,
        now: Instant,
        id: ServerId,
        f: impl FnOnce(ServerState, &Cx<'_>, &mut Effects) -> ServerState,
    ) -> Option<Notify> {
        let tx = self.servers.get_mut(&id.0)?;
        let cx = Cx { config: &self.config, is_reliable: tx.is_reliable };
        let mut fx = Effects::default();
        let state = std::mem::replace(&mut tx.state, ServerState::NonInvite(server::non_invite::State::Terminated));
        let before = state.is_finishing();
        tx.state = f(state, &cx, &mut fx);
        let after = tx.state.is_finishing();
        self.count_finishing(before, after);
        let notify = fx.notify;
        self.finish_server(now, id, fx);
        self.reap_server(id);
        notify
    }

    fn step_client(
        &mut self,
        now: Instant,
        id: ClientId,
        f: impl FnOnce(ClientState, &Cx<'_>, &mut Effects, &Bytes) -> ClientState,
    ) {
        let Some(tx) = self.clients.get_mut(&id.0) else { return };
        let cx = Cx { config: &self.config, is_reliable: tx.is_reliable };
        let mut fx = Effects::default();
        let state = std::mem::replace(&mut tx.state, ClientState::Invite(client::invite::State::Terminated));
        let before = state.is_finishing();
        let bytes = request_bytes(&tx.request);
        tx.state = f(state, &cx, &mut fx, &bytes);
        let after = tx.state.is_finishing();
        self.count_finishing(before, after);
        self.finish_client(now, id, fx);
        self.reap_client(id);
    }

    /// Apply a server transition's sends, timers and notifications.
    fn finish_server(&mut self, now: Instant, id: ServerId, fx: Effects) {
        let Some(tx) = self.servers.get_mut(&id.0) else { return };
        let tid = TxId::Server(id);
        self.timers.apply(&mut tx.slots.retransmit, fx.retransmit, now, tid);
        self.timers.apply(&mut tx.slots.lifetime, fx.lifetime, now, tid);
        if let Some(bytes) = fx.send {
            self.transmits.push_back(Transmit { dest: tx.peer.clone(), bytes, tx: tid });
        }
        if fx.notify == Some(Notify::TransportError) {
            self.events.push_back(Event::TransportError { id: tid });
        }
    }

    fn finish_client(&mut self, now: Instant, id: ClientId, fx: Effects) {
        let Some(tx) = self.clients.get_mut(&id.0) else { return };
        let tid = TxId::Client(id);
        self.timers.apply(&mut tx.slots.retransmit, fx.retransmit, now, tid);
        self.timers.apply(&mut tx.slots.lifetime, fx.lifetime, now, tid);
        if let Some(bytes) = fx.send {
            self.transmits.push_back(Transmit { dest: tx.dest.clone(), bytes, tx: tid });
        }
        let internal = tx.cancel_of.is_some();
        let cancel = fx.send_cancel.then(|| (sip_message::build::cancel(&tx.request), tx.dest.clone(), tx.is_reliable));
        match fx.notify {
            Some(Notify::Timeout) if !internal => self.events.push_back(Event::Timeout { id }),
            Some(Notify::TransportError) if !internal => self.events.push_back(Event::TransportError { id: tid }),
            _ => {}
        }
        if let Some((bytes, dest, is_reliable)) = cancel {
            // §9.1: same Request-URI, Call-ID, From, To, CSeq number and top
            // Via (same branch) as the INVITE, method CANCEL. We built it, so
            // it parses; if it somehow did not, no CANCEL is better than a
            // panic.
            if let Ok(msg) = Message::parse(bytes, &sip_message::Limits::default()) {
                if let Some(key) = ClientKey::of_request(&msg).filter(|k| !self.client_index.contains_key(k)) {
                    self.start_client(now, key, msg, dest, is_reliable, Some(id));
                }
            }
        }
    }

    fn reap_server(&mut self, id: ServerId) {
        if !self.servers.get(&id.0).is_some_and(|t| t.state.is_terminated()) {
            return;
        }
        if let Some(mut tx) = self.servers.remove(&id.0) {
            self.timers.clear(&mut tx.slots);
            self.server_index.remove(&tx.key);
            self.events.push_back(Event::Terminated { id: TxId::Server(id) });
        }
    }

    fn reap_client(&mut self, id: ClientId) {
        if !self.clients.get(&id.0).is_some_and(|t| t.state.is_terminated()) {
            return;
        }
        if let Some(mut tx) = self.clients.remove(&id.0) {
            self.timers.clear(&mut tx.slots);
            self.client_index.remove(&tx.key);
            if tx.cancel_of.is_none() {
                self.events.push_back(Event::Terminated { id: TxId::Client(id) });
            }
        }
    }
}

/// Tables smaller than this are left as they are.
const SHRINK_MIN: usize = 1024;

/// Halve `map`'s room when it holds less than a quarter of it (see
/// [`TransactionLayer::shrink_tables`]).
pub fn shrink_map<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > SHRINK_MIN && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// The request's bytes up to the end of its body (a datagram's trailing
/// bytes beyond Content-Length are not resent).
fn request_bytes(msg: &Message) -> Bytes {
    let all = msg.as_bytes();
    all.slice(..msg.len().min(all.len()))
}

/// A fired timer's key is gone from the queue; its slot must not point at it.
fn forget_slot(slots: &mut Slots, timer: Timer) {
    if timer.is_retransmit() {
        slots.retransmit = None;
    } else {
        slots.lifetime = None;
    }
}
