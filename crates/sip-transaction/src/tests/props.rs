//! Random event sequences: never a panic, and once the core has answered
//! everything, every transaction ends within the longest timer with the
//! live set, the indexes and the timer queue empty afterwards.

use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const METHODS: [&str; 7] = ["INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "FOO", "INVITE"];
const BRANCHES: [&str; 4] = ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3", "rfc2543branch"];
const HOSTS: [&str; 2] = ["a.example.com", "b.example.com:5070"];
const STATUSES: [u16; 13] = [100, 180, 183, 200, 202, 300, 404, 408, 486, 487, 500, 603, 699];

#[derive(Debug, Clone)]
enum Op {
    /// A request from the network.
    RequestIn {
        method: usize,
        branch: usize,
        host: usize,
        to_tag: bool,
        reliable: bool,
    },
    /// A response from the network to one of the requests we sent.
    ResponseIn {
        to: usize,
        status: usize,
        reliable_branch: bool,
    },
    /// A message with one byte changed, fed as request and as response.
    Mutated {
        method: usize,
        at: usize,
        byte: u8,
    },
    SendRequest {
        method: usize,
        branch: usize,
        reliable: bool,
    },
    SendResponse {
        to: usize,
        status: usize,
    },
    Cancel {
        to: usize,
    },
    TransportError {
        server: bool,
        to: usize,
    },
    Advance {
        ms: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..METHODS.len(), 0..BRANCHES.len(), 0..HOSTS.len(), any::<bool>(), any::<bool>()).prop_map(
            |(method, branch, host, to_tag, reliable)| Op::RequestIn { method, branch, host, to_tag, reliable }
        ),
        (0usize..16, 0..STATUSES.len(), any::<bool>()).prop_map(|(to, status, reliable_branch)| Op::ResponseIn {
            to,
            status,
            reliable_branch
        }),
        (0..METHODS.len(), 0usize..400, any::<u8>()).prop_map(|(method, at, byte)| Op::Mutated { method, at, byte }),
        (0..METHODS.len(), 0..BRANCHES.len(), any::<bool>()).prop_map(|(method, branch, reliable)| Op::SendRequest {
            method,
            branch,
            reliable
        }),
        (0usize..16, 0..STATUSES.len()).prop_map(|(to, status)| Op::SendResponse { to, status }),
        (0usize..16).prop_map(|to| Op::Cancel { to }),
        (any::<bool>(), 0usize..16).prop_map(|(server, to)| Op::TransportError { server, to }),
        (0u32..40_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// The test plays the core: it remembers what the layer told it.
struct Core {
    h: Harness,
    servers: Vec<(ServerId, Message)>,
    clients: Vec<ClientId>,
    /// Requests the layer sent upstream (including ACK and CANCEL it made).
    outbound: Vec<Message>,
    created: HashSet<TxId>,
    terminated: HashMap<TxId, usize>,
}

impl Core {
    fn absorb(&mut self) {
        for (_, t) in self.h.take_sent() {
            if let Ok(m) = Message::parse(t.bytes.clone(), &sip_message::Limits::default()) {
                if m.is_request() && t.dest == "upstream" {
                    self.outbound.push(m);
                }
            }
        }
        for e in self.h.take_events() {
            match e {
                Event::Request { id, msg, .. } | Event::Cancel { cancel: id, msg, .. } => {
                    assert!(self.created.insert(TxId::Server(id)), "id reused");
                    self.servers.push((id, msg));
                }
                Event::Terminated { id } => {
                    assert!(self.created.contains(&id), "Terminated for an id the core never saw: {id:?}");
                    *self.terminated.entry(id).or_default() += 1;
                }
                Event::Response { id, .. } | Event::Timeout { id } => {
                    assert!(self.created.contains(&TxId::Client(id)));
                    assert!(!self.terminated.contains_key(&TxId::Client(id)), "event after Terminated");
                }
                Event::TransportError { id } => assert!(self.created.contains(&id)),
                Event::Ack { .. } | Event::StrayResponse { .. } => {}
            }
        }
        invariants(&self.h.layer);
    }

    fn apply(&mut self, op: &Op) {
        let now = self.h.now;
        match *op {
            Op::RequestIn { method, branch, host, to_tag, reliable } => {
                let m = request_with(
                    METHODS[method],
                    BRANCHES[branch],
                    HOSTS[host],
                    if reliable { "TCP" } else { "UDP" },
                    to_tag.then_some("totag"),
                );
                let _ = self.h.layer.handle_request(now, m, PEER, reliable);
            }
            Op::ResponseIn { to, status, reliable_branch } => {
                if let Some(req) = pick(&self.outbound, to).cloned() {
                    let m = if reliable_branch {
                        response(&req, STATUSES[status])
                    } else {
                        response(&request(METHODS[to % METHODS.len()], BRANCHES[to % 4]), STATUSES[status])
                    };
                    self.h.layer.handle_response(now, m);
                }
            }
            Op::Mutated { method, at, byte } => {
                let base = request(METHODS[method], BRANCHES[at % 4]);
                let mut bytes = base.as_bytes().to_vec();
                if let Some(b) = bytes.get_mut(at) {
                    *b = byte;
                }
                if let Ok(m) = Message::parse_slice(&bytes) {
                    let _ = self.h.layer.handle_request(now, m.clone(), PEER, false);
                    self.h.layer.handle_response(now, m);
                }
                let mut resp = response_bytes(&base, 180).to_vec();
                if let Some(b) = resp.get_mut(at) {
                    *b = byte;
                }
                if let Ok(m) = Message::parse_slice(&resp) {
                    self.h.layer.handle_response(now, m);
                }
            }
            Op::SendRequest { method, branch, reliable } => {
                let m =
                    request_with(METHODS[method], &format!("{}c", BRANCHES[branch]), "proxy.example.net", "UDP", None);
                if let Ok(id) = self.h.layer.send_request(now, m, "upstream", reliable) {
                    assert!(self.created.insert(TxId::Client(id)), "id reused");
                    self.clients.push(id);
                }
            }
            Op::SendResponse { to, status } => {
                if let Some((id, req)) = pick(&self.servers, to).cloned() {
                    let code = STATUSES[status];
                    let _ = self.h.layer.send_response(now, id, response_bytes(&req, code), code);
                }
            }
            Op::Cancel { to } => {
                if let Some(&id) = pick(&self.clients, to) {
                    let _ = self.h.layer.cancel(now, id);
                }
            }
            Op::TransportError { server, to } => {
                let id = if server {
                    pick(&self.servers, to).map(|(id, _)| TxId::Server(*id))
                } else {
                    pick(&self.clients, to).map(|id| TxId::Client(*id))
                };
                if let Some(id) = id {
                    self.h.layer.handle_transport_error(now, id);
                }
            }
            Op::Advance { ms: n } => self.h.run_for(ms(u64::from(n))),
        }
        self.absorb();
    }

    /// The core answers every request and cancels every INVITE it sent.
    fn settle(&mut self) {
        let now = self.h.now;
        for (id, req) in self.servers.clone() {
            let code = if req.method() == Some(sip_message::Method::Invite) { 486 } else { 200 };
            let _ = self.h.layer.send_response(now, id, response_bytes(&req, code), code);
        }
        for id in self.clients.clone() {
            let _ = self.h.layer.cancel(now, id);
        }
        self.absorb();
    }
}

fn pick<T>(v: &[T], i: usize) -> Option<&T> {
    if v.is_empty() {
        None
    } else {
        v.get(i % v.len())
    }
}

/// Internal consistency: every live transaction is indexed once, and holds
/// at most two timers.
fn invariants<A: Clone>(l: &TransactionLayer<A>) {
    assert_eq!(l.servers.len(), l.server_index.len());
    assert_eq!(l.clients.len(), l.client_index.len());
    assert!(l.timers.len() <= 2 * l.len());
    // The finishing count kept on every transition equals a recount.
    let recount = l.servers.values().filter(|t| t.state.is_finishing()).count()
        + l.clients.values().filter(|t| t.state.is_finishing()).count();
    assert_eq!(l.finishing(), recount, "finishing counter drifted");
    for (k, id) in &l.server_index {
        assert!(l.servers.get(&id.0).is_some_and(|t| &t.key == k));
    }
    for (k, id) in &l.client_index {
        assert!(l.clients.get(&id.0).is_some_and(|t| &t.key == k));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_events_never_panic_and_everything_terminates(
        ops in proptest::collection::vec(op(), 0..48),
        short_t1 in any::<bool>(),
    ) {
        let config = Config { t1: if short_t1 { ms(100) } else { ms(500) }, ..Config::default() };
        // The longest timer of the RFCs: 64·T1 (B, F, H, J, L, M, and §9.1
        // after a CANCEL), Timer D (32 s), T4 (I, K); clean-up timers fall
        // on a grid, up to one step later.
        let longest = (config.t1 * 64).max(timers::TIMER_D_UNRELIABLE).max(config.t4) + timers::CLEANUP_GRID;
        let mut core = Core {
            h: Harness::with(config),
            servers: Vec::new(),
            clients: Vec::new(),
            outbound: Vec::new(),
            created: HashSet::new(),
            terminated: HashMap::new(),
        };
        for op in &ops {
            core.apply(op);
        }
        core.settle();
        core.h.run_for(longest);
        core.absorb();
        let l = &core.h.layer;
        prop_assert_eq!(l.len(), 0, "live: {:?}", l.servers.values().map(|t| t.state.name()).chain(l.clients.values().map(|t| t.state.name())).collect::<Vec<_>>());
        prop_assert!(l.server_index.is_empty() && l.client_index.is_empty());
        prop_assert_eq!(l.timers.len(), 0);
        prop_assert_eq!(l.finishing(), 0);
        prop_assert_eq!(l.poll_timeout(), None);
        prop_assert_eq!(l.memory_bytes(), 0);
        // Every transaction the core saw ended exactly once.
        for id in &core.created {
            prop_assert_eq!(core.terminated.get(id).copied(), Some(1), "{:?}", id);
        }
    }
}
