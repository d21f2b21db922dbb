//! Transaction tests on a virtual clock: every `now` is a base `Instant`
//! plus a `Duration` the test chooses; nothing sleeps.

mod client;
mod matching;
mod pair;
mod props;
mod server;

use crate::*;
use sip_message::build;
use std::time::{Duration, Instant};

pub(crate) const PEER: &str = "peer";

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A request with the given method, branch, sent-by, transport and To tag.
pub(crate) fn request_with(
    method: &str,
    branch: &str,
    sent_by: &str,
    transport: &str,
    to_tag: Option<&str>,
) -> Message {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {sent_by};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:bob@example.com>{to_tag}\r\n\
         From: <sip:alice@example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@pc33.example.com\r\n\
         CSeq: 314159 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse_slice(text).unwrap()
}

pub(crate) fn request(method: &str, branch: &str) -> Message {
    request_with(method, branch, "pc33.example.com", "UDP", None)
}

/// A response to `req` with To tag `totag`.
pub(crate) fn response(req: &Message, code: u16) -> Message {
    Message::parse(response_bytes(req, code), &sip_message::Limits::default()).unwrap()
}

pub(crate) fn response_bytes(req: &Message, code: u16) -> Bytes {
    build::response(req, code, build::reason_phrase(code), Some("totag"))
}

/// A layer, a virtual clock, and everything that came out of the layer.
pub(crate) struct Harness {
    pub layer: TransactionLayer<&'static str>,
    pub base: Instant,
    pub now: Instant,
    /// (time since base, transmit) in order.
    pub sent: Vec<(Duration, Transmit<&'static str>)>,
    pub events: Vec<Event<&'static str>>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(Config::default())
    }

    pub fn with(config: Config) -> Self {
        let base = Instant::now();
        Harness { layer: TransactionLayer::new(config), base, now: base, sent: Vec::new(), events: Vec::new() }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// Drain the layer's outputs into `sent` and `events`.
    pub fn drain(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            self.sent.push((self.elapsed(), t));
        }
        while let Some(e) = self.layer.poll_event() {
            self.events.push(e);
        }
    }

    /// Advance the virtual clock to `base + to`, firing each deadline at its
    /// own instant.
    pub fn run_until(&mut self, to: Duration) {
        let end = self.base + to;
        while let Some(at) = self.layer.poll_timeout() {
            if at > end {
                break;
            }
            assert!(at >= self.now, "deadline in the past");
            self.now = at;
            self.layer.handle_timeout(at);
            self.drain();
        }
        self.now = end;
    }

    pub fn run_for(&mut self, d: Duration) {
        let to = self.elapsed() + d;
        self.run_until(to);
    }

    pub fn take_sent(&mut self) -> Vec<(Duration, Transmit<&'static str>)> {
        self.drain();
        std::mem::take(&mut self.sent)
    }

    pub fn take_events(&mut self) -> Vec<Event<&'static str>> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    pub fn request_in(&mut self, msg: Message, reliable: bool) -> Result<(), Rejected> {
        let r = self.layer.handle_request(self.now, msg, PEER, reliable);
        self.drain();
        r
    }

    pub fn response_in(&mut self, msg: Message) {
        self.layer.handle_response(self.now, msg);
        self.drain();
    }

    /// A new server transaction for `msg`; returns its id.
    pub fn server(&mut self, msg: Message, reliable: bool) -> ServerId {
        self.request_in(msg, reliable).unwrap();
        match self.take_events().pop() {
            Some(Event::Request { id, .. }) => id,
            other => panic!("expected a Request event, got {other:?}"),
        }
    }

    pub fn client(&mut self, msg: Message, reliable: bool) -> ClientId {
        let id = self.layer.send_request(self.now, msg, "upstream", reliable).unwrap();
        self.drain();
        id
    }

    pub fn respond(&mut self, id: ServerId, req: &Message, code: u16) -> Result<(), Rejected> {
        let r = self.layer.send_response(self.now, id, response_bytes(req, code), code);
        self.drain();
        r
    }
}

/// The instants (since base) of the transmits, in ms.
pub(crate) fn times_ms(sent: &[(Duration, Transmit<&'static str>)]) -> Vec<u128> {
    sent.iter().map(|(t, _)| t.as_millis()).collect()
}

pub(crate) fn parse(t: &Transmit<&'static str>) -> Message {
    Message::parse(t.bytes.clone(), &sip_message::Limits::default()).unwrap()
}

pub(crate) fn is_terminated(e: &Event<&'static str>, id: TxId) -> bool {
    matches!(e, Event::Terminated { id: i } if *i == id)
}

/// The memory report asked for by issue #3: an upper bound per live
/// transaction of struct size plus owned (or kept-alive) heap bytes.
#[test]
fn memory_per_transaction_is_bounded() {
    let mut h = Harness::new();
    let invite = request("INVITE", "z9hG4bKmem1");
    let sid = h.server(invite.clone(), false);
    h.respond(sid, &invite, 180).unwrap();
    let server_bytes = h.layer.memory_bytes();
    let out = request_with("INVITE", "z9hG4bKmem2", "proxy.example.net", "UDP", None);
    let request_len = out.len();
    h.client(out, false);
    let both = h.layer.memory_bytes();
    let client_bytes = both - server_bytes;
    println!(
        "memory per transaction: server INVITE (Proceeding, 180 kept) {server_bytes} B; \
         client INVITE (Calling, {request_len} B request kept) {client_bytes} B; \
         size_of ServerTx {} B, ClientTx {} B",
        std::mem::size_of::<crate::server::ServerTx<&str>>(),
        std::mem::size_of::<crate::client::ClientTx<&str>>(),
    );
    // Bounds: the structs and index entries stay small; the rest is the
    // message bytes themselves, shared with what the transport sent.
    println!(
        "SocketAddr: ServerTx {} B, ClientTx {} B",
        std::mem::size_of::<crate::server::ServerTx<std::net::SocketAddr>>(),
        std::mem::size_of::<crate::client::ClientTx<std::net::SocketAddr>>()
    );
    assert!(std::mem::size_of::<crate::server::ServerTx<std::net::SocketAddr>>() <= 192);
    assert!(std::mem::size_of::<crate::client::ClientTx<std::net::SocketAddr>>() <= 416);
    assert!(server_bytes <= 768, "{server_bytes}");
    assert!(client_bytes <= 1024 + request_len, "{client_bytes}");
}

#[test]
fn config_floors_keep_timers_from_spinning() {
    let layer = TransactionLayer::<()>::new(Config {
        t1: Duration::ZERO,
        t2: Duration::ZERO,
        t4: Duration::ZERO,
        max_transactions: 1,
    });
    assert_eq!(layer.config().t1, ms(1));
    assert_eq!(layer.config().t2, ms(1));
    assert_eq!(layer.config().t4, ms(1));
}

#[test]
fn a_table_grown_by_a_burst_gives_its_room_back_in_halves() {
    let mut m: std::collections::HashMap<u64, [u8; 64]> = (0..100_000).map(|i| (i, [0; 64])).collect();
    m.retain(|k, _| *k < 1_000);
    let peak = m.capacity();
    assert!(peak > 50_000, "a hash map keeps its room by itself: {peak}");
    crate::shrink_map(&mut m);
    assert!(m.capacity() < peak / 16 && m.capacity() >= 2_000, "capacity {} of {peak}", m.capacity());
    assert_eq!(m.len(), 1_000);
    // Small tables, and tables not oversized, are left alone.
    let before = m.capacity();
    crate::shrink_map(&mut m);
    assert_eq!(m.capacity(), before);
}
