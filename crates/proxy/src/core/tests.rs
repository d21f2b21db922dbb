//! The proxy core driven without sockets: a recording [`Wire`], messages fed
//! straight into a shard, and a virtual clock (instants passed in).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sip_message::{HeaderName, Message};

use super::router::{
    Fallback, FallbackAction, ForkOutcome, ForkPlan, NextHop, RouteDecision, RouteRequest, Router, Routing, Target,
};
use super::shard::{Resolve, Resolving, Shard, ShardInput, Wire};
use super::validate::Rejection;
use super::CoreConfig;
use crate::metrics::Metrics;
use crate::transport::{Destination, Inbound, ListenerInfo, Outbound, Peer, SendFailure, SendToken, Transport};

const PROXY: &str = "10.0.0.1";

#[derive(Default)]
struct RecordingWire {
    sent: Mutex<Vec<Outbound>>,
    aliases: Mutex<Vec<(crate::transport::FlowId, SocketAddr)>>,
}

impl Wire for RecordingWire {
    fn send(&self, out: Outbound) {
        self.sent.lock().expect("lock").push(out);
    }
    fn listener_for(&self, transport: Transport, _remote: &SocketAddr) -> Option<ListenerInfo> {
        let port = if transport == Transport::Tls { 5061 } else { 5060 };
        Some(ListenerInfo { transport, local: format!("{PROXY}:{port}").parse().ok()?, host: PROXY.into(), port })
    }
    fn is_local(&self, host: &str, port: Option<u16>) -> bool {
        host == PROXY && matches!(port, None | Some(5060) | Some(5061))
    }
    fn alias(&self, flow: crate::transport::FlowId, addr: SocketAddr) {
        self.aliases.lock().expect("lock").push((flow, addr));
    }
}

#[derive(Default)]
struct NoDns {
    marked_down: Mutex<Vec<(SocketAddr, Duration)>>,
    failures: Mutex<Vec<(SocketAddr, &'static str)>>,
}
impl Resolve for NoDns {
    fn resolve(&self, uri: String) -> Resolving {
        Box::pin(async move { Err(format!("no DNS in this test: {uri}")) })
    }
    fn mark_down(&self, dest: &Destination, duration: Duration) {
        self.marked_down.lock().expect("lock").push((dest.addr, duration));
    }
    fn report_failure(&self, dest: &Destination, what: &'static str) {
        self.failures.lock().expect("lock").push((dest.addr, what));
    }
}

/// Routes by the Request-URI user: `fork` → two parallel branches,
/// `serial` → two serial groups, `nobody` → 404, `vm` → one branch with a
/// ring timeout and a voice-mail fallback, `unreg` → no target but the
/// fallback, else the R-URI itself.
struct TestRouter(Arc<VoiceMail>);

/// A fallback like the ExUM one: first failure → two UM servers in turn
/// with a per-attempt timer and redirects followed, carrying a rewritten
/// request; second failure → 480.
#[derive(Default)]
struct VoiceMail {
    outcomes: Mutex<Vec<ForkOutcome>>,
}

impl Fallback for VoiceMail {
    fn on_failure(&self, original: &Message, outcome: &ForkOutcome) -> FallbackAction {
        self.outcomes.lock().expect("lock").push(outcome.clone());
        if outcome.stage > 0 {
            return FallbackAction::Reject(Rejection::new(480, "Temporarily Unavailable"));
        }
        let request =
            original.edit().add_header("Diversion", "<sip:vm@example.test>;reason=no-answer;counter=1").finish();
        FallbackAction::Divert {
            plan: ForkPlan {
                groups: vec![
                    vec![Target::to_uri("sip:um@192.0.2.51")],
                    // The second server gets a request of its own.
                    vec![Target {
                        request: Some(original.edit().add_header("X-Um-Server", "2").finish()),
                        ..Target::to_uri("sip:um@192.0.2.52")
                    }],
                ],
                attempt_timeout: Some(Duration::from_secs(4)),
                follow_redirects: 2,
                ..ForkPlan::default()
            },
            request: Some(request),
        }
    }
}
impl Router for TestRouter {
    fn route(&self, req: &RouteRequest<'_>) -> Routing {
        let user = req.msg.request_uri().and_then(|u| u.user()).unwrap_or_default().to_string();
        let d = match user.as_str() {
            "fork" => RouteDecision::Forward(ForkPlan {
                groups: vec![vec![Target::to_uri("sip:b1@192.0.2.21"), Target::to_uri("sip:b2@192.0.2.22")]],
                ..ForkPlan::default()
            }),
            "serial" => RouteDecision::Forward(ForkPlan {
                groups: vec![vec![Target::to_uri("sip:s1@192.0.2.31")], vec![Target::to_uri("sip:s2@192.0.2.32")]],
                ..ForkPlan::default()
            }),
            "failover" => RouteDecision::Forward(ForkPlan::single(Target {
                next_hop: Some(NextHop::Destination(dest("192.0.2.41:5060"))),
                ..Target::default()
            })),
            "nobody" => RouteDecision::Reject(Rejection::new(404, "Not Found")),
            "vm" => RouteDecision::Forward(ForkPlan {
                groups: vec![vec![Target::to_uri("sip:vm@192.0.2.20")]],
                ring_timeout: Some(Duration::from_secs(20)),
                fallback: Some(self.0.clone()),
                ..ForkPlan::default()
            }),
            "escape" => RouteDecision::Forward(ForkPlan {
                groups: vec![vec![
                    Target { escape: Some(Duration::from_millis(1500)), ..Target::to_uri("sip:mobile@192.0.2.61") },
                    Target { escape: Some(Duration::from_millis(1500)), ..Target::to_uri("sip:desk@192.0.2.62") },
                ]],
                ..ForkPlan::default()
            }),
            "unreg" => RouteDecision::Forward(ForkPlan { fallback: Some(self.0.clone()), ..ForkPlan::default() }),
            "challenge" => RouteDecision::Respond {
                status: 401,
                bytes: sip_message::build::Response::new(req.msg, 401, "Unauthorized", Some("c1"))
                    .header("WWW-Authenticate", "Digest realm=\"example.test\", nonce=\"n1\"")
                    .finish(),
            },
            other => match nat_tests::route(other, req.msg) {
                Some(d) => d,
                None => RouteDecision::Forward(ForkPlan::single(Target::default())),
            },
        };
        Routing::Ready(d)
    }
}

fn dest(addr: &str) -> Destination {
    Destination { transport: Transport::Udp, addr: addr.parse().expect("addr"), flow: None, server_name: None }
}

struct Harness {
    metrics: Arc<Metrics>,
    drain: super::DrainGate,
    dns: Arc<NoDns>,
    vm: Arc<VoiceMail>,
    shard: Shard,
    wire: Arc<RecordingWire>,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(|_| {})
    }

    fn with_config(tune: impl FnOnce(&mut CoreConfig)) -> Harness {
        let wire = Arc::new(RecordingWire::default());
        let drain = super::DrainGate::new(30);
        let metrics = Arc::new(Metrics::new());
        let cfg = CoreConfig {
            workers: 1,
            max_forwards: 40,
            own_realms: vec!["example.test".into()],
            drain: drain.clone(),
            ..CoreConfig::default()
        };
        let mut cfg = cfg;
        tune(&mut cfg);
        let vm = Arc::new(VoiceMail::default());
        let dns = Arc::new(NoDns::default());
        let shard = Shard::new(
            0,
            Arc::new(cfg),
            wire.clone(),
            Arc::new(TestRouter(vm.clone())),
            dns.clone(),
            Arc::new(super::branch::BranchMinter::default()),
            metrics.clone(),
            std::sync::Weak::new(),
        );
        Harness { metrics, drain, dns, vm, shard, wire, now: Instant::now() }
    }

    fn feed(&mut self, text: &str, from: &str) {
        let msg = Message::parse_slice(text.as_bytes()).expect("test message parses");
        let peer = Peer {
            transport: Transport::Udp,
            remote: from.parse().expect("addr"),
            local: format!("{PROXY}:5060").parse().expect("addr"),
            flow: None,
        };
        self.shard.handle_input(ShardInput::Inbound(Inbound { msg, peer, tls: None }), self.now);
    }

    fn advance(&mut self, d: Duration) {
        // Step in 100 ms slices so that every timer fires at its time.
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(100);
            self.shard.handle_timeout(self.now);
        }
    }

    /// Everything sent since the last call, parsed.
    fn take(&self) -> Vec<(SocketAddr, Message)> {
        let mut sent = self.wire.sent.lock().expect("lock");
        sent.drain(..)
            .map(|o| (o.dest.addr, Message::parse(o.bytes, &Default::default()).expect("proxy output parses")))
            .collect()
    }

    fn shard_transactions(&self) -> usize {
        self.shard.transactions()
    }

    fn fail_send(&mut self, token: SendToken) {
        self.shard.handle_input(ShardInput::SendFailed(token, SendFailure::Connect), self.now);
    }
}

const CALLER: &str = "192.0.2.10:5060";

fn invite(ruri: &str, branch: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: call-{branch}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.10>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A response to a forwarded request, as the next hop would send it.
fn answer(fwd: &Message, code: u16, to_tag: &str) -> String {
    let mut out = format!("SIP/2.0 {code} Whatever\r\n");
    for v in fwd.vias() {
        out.push_str(&format!("Via: {}\r\n", v.as_str()));
    }
    for rr in fwd.record_routes() {
        out.push_str(&format!("Record-Route: {}\r\n", rr.as_str()));
    }
    out.push_str(&format!(
        "From: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContact: <sip:callee@192.0.2.99>\r\n\
         Content-Length: 0\r\n\r\n",
        fwd.from().as_str(),
        fwd.to().as_str(),
        fwd.call_id(),
        fwd.cseq().0,
        fwd.cseq_method_str()
    ));
    out
}

fn statuses(out: &[(SocketAddr, Message)]) -> Vec<u16> {
    out.iter().filter_map(|(_, m)| m.status()).collect()
}

fn requests<'a>(out: &'a [(SocketAddr, Message)], method: &str) -> Vec<&'a (SocketAddr, Message)> {
    out.iter().filter(|(_, m)| m.method_str() == Some(method)).collect()
}

#[test]
fn basic_call_is_forwarded_with_via_record_route_and_max_forwards() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20:5070", "z9hG4bKc1"), CALLER);
    let out = h.take();
    assert_eq!(statuses(&out), vec![100], "100 Trying goes upstream at once");
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd.len(), 1);
    let (to, f) = fwd[0];
    assert_eq!(to.to_string(), "192.0.2.20:5070");
    assert_eq!(f.via_count(), 2);
    let top = f.top_via();
    assert_eq!(top.host(), PROXY);
    assert!(top.branch().is_some_and(|b| b.starts_with("z9hG4bK-um-")));
    let second = f.vias().nth(1).expect("caller's via");
    assert_eq!(second.rport(), Some(Some(5060)), "RFC 3581 rport filled in");
    assert_eq!(f.max_forwards(), Some(69));
    let rr: Vec<_> = f.record_routes().map(|r| r.as_str().to_string()).collect();
    assert_eq!(rr, vec!["<sip:10.0.0.1:5060;transport=udp;lr>"]);

    h.feed(&answer(f, 180, "b1"), "192.0.2.20:5070");
    let out = h.take();
    assert_eq!(statuses(&out), vec![180]);
    assert_eq!(out[0].0.to_string(), CALLER);
    assert_eq!(out[0].1.via_count(), 1, "our Via is removed from the response");

    h.feed(&answer(f, 200, "b1"), "192.0.2.20:5070");
    let out = h.take();
    assert_eq!(statuses(&out), vec![200]);

    // The ACK for the 2xx follows the route set statelessly.
    h.feed(
        "ACK sip:callee@192.0.2.99 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKack1\r\n\
         Route: <sip:10.0.0.1:5060;transport=udp;lr>\r\nFrom: <sip:alice@example.test>;tag=a1\r\n\
         To: <sip:bob@example.test>;tag=b1\r\nCall-ID: call-z9hG4bKc1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        CALLER,
    );
    let out = h.take();
    let acks = requests(&out, "ACK");
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].0.to_string(), "192.0.2.99:5060");
    assert_eq!(acks[0].1.route_count(), 0, "our Route entry is popped");
}

#[test]
fn invite_retransmission_is_absorbed() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKr1"), CALLER);
    let first = h.take();
    assert_eq!(requests(&first, "INVITE").len(), 1);
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKr1"), CALLER);
    let again = h.take();
    assert!(requests(&again, "INVITE").is_empty(), "not forwarded twice");
    assert_eq!(statuses(&again), vec![100], "the last response is resent");
}

#[test]
fn parallel_fork_forwards_the_2xx_and_cancels_the_other_branch() {
    let mut h = Harness::new();
    h.feed(&invite("sip:fork@example.test", "z9hG4bKf1"), CALLER);
    let out = h.take();
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd.len(), 2);
    let (b1, b2) = (fwd[0].1.clone(), fwd[1].1.clone());
    assert_ne!(b1.branch(), b2.branch());
    h.feed(&answer(&b1, 180, "t1"), "192.0.2.21:5060");
    h.feed(&answer(&b2, 180, "t2"), "192.0.2.22:5060");
    h.take();
    h.feed(&answer(&b2, 200, "t2"), "192.0.2.22:5060");
    let out = h.take();
    assert_eq!(statuses(&out), vec![200]);
    let cancels = requests(&out, "CANCEL");
    assert_eq!(cancels.len(), 1, "the ringing branch is cancelled");
    assert_eq!(cancels[0].0.to_string(), "192.0.2.21:5060");
    assert_eq!(cancels[0].1.branch(), b1.branch(), "CANCEL matches its INVITE's branch");
    // The cancelled branch's 487 is not forwarded.
    h.feed(&answer(&b1, 487, "t1"), "192.0.2.21:5060");
    let out = h.take();
    assert!(statuses(&out).is_empty(), "{:?}", statuses(&out));
}

#[test]
fn best_response_is_chosen_when_all_branches_fail() {
    let mut h = Harness::new();
    h.feed(&invite("sip:fork@example.test", "z9hG4bKf2"), CALLER);
    let out = h.take();
    let fwd: Vec<Message> = requests(&out, "INVITE").into_iter().map(|(_, m)| m.clone()).collect();
    h.feed(&answer(&fwd[0], 486, "t1"), "192.0.2.21:5060");
    assert!(statuses(&h.take()).is_empty(), "waits for the other branch");
    h.feed(&answer(&fwd[1], 404, "t2"), "192.0.2.22:5060");
    let out = h.take();
    assert_eq!(statuses(&out), vec![486], "lowest class wins (4xx); within it busy beats not found");
}

#[test]
fn six_hundred_ends_the_fork_at_once() {
    let mut h = Harness::new();
    h.feed(&invite("sip:fork@example.test", "z9hG4bKf3"), CALLER);
    let out = h.take();
    let fwd: Vec<Message> = requests(&out, "INVITE").into_iter().map(|(_, m)| m.clone()).collect();
    h.feed(&answer(&fwd[1], 180, "t2"), "192.0.2.22:5060");
    h.take();
    h.feed(&answer(&fwd[0], 603, "t1"), "192.0.2.21:5060");
    let out = h.take();
    // §16.7 step 5: the 6xx is held while the other branches are cancelled,
    // and no new branch starts.
    assert!(statuses(&out).is_empty());
    assert_eq!(requests(&out, "CANCEL").len(), 1);
    h.feed(&answer(&fwd[1], 487, "t2"), "192.0.2.22:5060");
    let out = h.take();
    assert_eq!(statuses(&out), vec![603], "the 6xx wins over the 487");
}

#[test]
fn serial_fork_tries_the_next_group_after_a_failure() {
    let mut h = Harness::new();
    h.feed(&invite("sip:serial@example.test", "z9hG4bKs1"), CALLER);
    let out = h.take();
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].1.request_uri_str(), Some("sip:s1@192.0.2.31"));
    let first = fwd[0].1.clone();
    h.feed(&answer(&first, 480, "t1"), "192.0.2.31:5060");
    let out = h.take();
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd.len(), 1, "second group starts");
    assert_eq!(fwd[0].1.request_uri_str(), Some("sip:s2@192.0.2.32"));
    assert!(statuses(&out).is_empty());
}

#[test]
fn caller_cancel_is_answered_and_propagated() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKx1"), CALLER);
    let out = h.take();
    let fwd = requests(&out, "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 180, "t"), "192.0.2.20:5060");
    h.take();
    h.feed(
        "CANCEL sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx1;rport\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: call-z9hG4bKx1\r\n\
         CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        CALLER,
    );
    let out = h.take();
    assert_eq!(statuses(&out), vec![200], "200 to the CANCEL");
    assert_eq!(out.iter().find(|(_, m)| m.status() == Some(200)).map(|(_, m)| m.cseq_method_str()), Some("CANCEL"));
    let cancels = requests(&out, "CANCEL");
    assert_eq!(cancels.len(), 1);
    h.feed(&answer(&fwd, 487, "t"), "192.0.2.20:5060");
    let out = h.take();
    assert_eq!(statuses(&out), vec![487], "the 487 goes upstream");
}

#[test]
fn cancel_for_an_unknown_invite_is_481() {
    let mut h = Harness::new();
    h.feed(
        "CANCEL sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnone\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: nothing\r\n\
         CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        CALLER,
    );
    assert_eq!(statuses(&h.take()), vec![481]);
}

#[test]
fn unanswered_invite_gets_408_after_timer_b() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKt1"), CALLER);
    let out = h.take();
    assert_eq!(requests(&out, "INVITE").len(), 1);
    h.advance(Duration::from_secs(31));
    let out = h.take();
    assert!(requests(&out, "INVITE").len() >= 5, "Timer A retransmissions");
    assert!(statuses(&out).is_empty(), "no final before 64*T1");
    h.advance(Duration::from_secs(2));
    let out = h.take();
    // Over UDP the 408 is retransmitted by Timer G until an ACK comes.
    let codes = statuses(&out);
    assert!(!codes.is_empty() && codes.iter().all(|c| *c == 408), "{codes:?}");
}

#[test]
fn timer_c_cancels_a_branch_that_rings_too_long() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKc9"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 180, "t"), "192.0.2.20:5060");
    h.take();
    h.advance(Duration::from_secs(179));
    assert!(requests(&h.take(), "CANCEL").is_empty());
    h.advance(Duration::from_secs(2));
    let out = h.take();
    let cancels = requests(&out, "CANCEL");
    assert!(!cancels.is_empty(), "Timer C fired");
    assert!(cancels.iter().all(|(_, c)| c.branch() == fwd.branch()));
    let codes = statuses(&out);
    assert!(!codes.is_empty() && codes.iter().all(|c| *c == 408), "{codes:?}");
}

#[test]
fn transport_failure_moves_to_the_next_destination_then_503s_as_500() {
    let mut h = Harness::new();
    h.feed(&invite("sip:failover@example.test", "z9hG4bKd1"), CALLER);
    let sent: Vec<Outbound> = h.wire.sent.lock().expect("lock").drain(..).collect();
    let inv = sent.iter().find(|o| o.bytes.starts_with(b"INVITE")).expect("forwarded");
    assert_eq!(inv.dest.addr.to_string(), "192.0.2.41:5060");
    let token = inv.token.expect("client sends carry a token");
    h.fail_send(token);
    let out = h.take();
    assert_eq!(statuses(&out), vec![503], "§16.9: transport error is a 503 at once, not after Timer B");
    let failures = h.dns.failures.lock().expect("lock").clone();
    assert_eq!(
        failures,
        vec![("192.0.2.41:5060".parse().expect("addr"), "transport error")],
        "reported for the operator"
    );
}

#[test]
fn request_that_comes_back_is_a_loop() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKl1"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    // The next hop sends it straight back, unchanged but for its own Via.
    let mut text = String::from_utf8(fwd.as_bytes().to_vec()).expect("utf8");
    text = text.replacen("Via: ", "Via: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKback\r\nVia: ", 1);
    h.feed(&text, "192.0.2.20:5060");
    let out = h.take();
    assert!(statuses(&out).contains(&482), "{:?}", statuses(&out));
}

#[test]
fn validation_failures_are_answered() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKv1").replace("Max-Forwards: 70", "Max-Forwards: 0"), CALLER);
    assert_eq!(statuses(&h.take()), vec![483]);
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKv2").replace("Max-Forwards: 70", "Proxy-Require: x-foo"), CALLER);
    let out = h.take();
    assert_eq!(statuses(&out), vec![100, 420].into_iter().filter(|c| *c != 100).collect::<Vec<_>>());
    let unsupported = out[0].1.header_values_named("Unsupported").next().map(|v| v.to_vec());
    assert_eq!(unsupported.as_deref(), Some(&b"x-foo"[..]));
    h.feed(&invite("sip:nobody@example.test", "z9hG4bKv3"), CALLER);
    assert_eq!(statuses(&h.take()), vec![100, 404]);
}

#[test]
fn options_to_the_proxy_itself_is_answered() {
    let mut h = Harness::new();
    h.feed(
        "OPTIONS sip:10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKo1\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:10.0.0.1>\r\nCall-ID: ping\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        CALLER,
    );
    assert_eq!(statuses(&h.take()), vec![200]);
}

#[test]
fn stray_2xx_retransmission_is_forwarded_by_via() {
    let mut h = Harness::new();
    h.feed(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-um-0000000000000001-1\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKc1;rport=5099;received=192.0.2.11\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>;tag=b\r\nCall-ID: gone\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        "192.0.2.20:5060",
    );
    let out = h.take();
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(out[0].0.to_string(), "192.0.2.11:5099");
    assert_eq!(out[0].1.via_count(), 1);
}

fn outcomes(h: &Harness) -> Vec<ForkOutcome> {
    h.vm.outcomes.lock().expect("lock").clone()
}

#[test]
fn busy_callee_is_diverted_with_the_rewritten_request() {
    let mut h = Harness::new();
    h.feed(&invite("sip:vm@example.test", "z9hG4bKv1"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 486, "t"), "192.0.2.20:5060");
    let out = h.take();
    assert!(statuses(&out).is_empty(), "the 486 is not forwarded: the call diverts");
    let um = requests(&out, "INVITE");
    assert_eq!(um.len(), 1);
    assert_eq!(um[0].0.to_string(), "192.0.2.51:5060");
    assert_eq!(um[0].1.request_uri_str(), Some("sip:um@192.0.2.51"));
    let div: Vec<_> = um[0].1.header_values_named("Diversion").map(<[u8]>::to_vec).collect();
    assert_eq!(div, vec![b"<sip:vm@example.test>;reason=no-answer;counter=1".to_vec()]);
    assert_eq!(um[0].1.call_id(), fwd.call_id(), "same Call-ID");
    let o = &outcomes(&h)[0];
    assert_eq!((o.stage, o.best, o.no_answer, o.codes.clone()), (0, Some(486), false, vec![486]));
    let um_inv = um[0].1.clone();
    h.feed(&answer(&um_inv, 200, "um"), "192.0.2.51:5060");
    assert_eq!(statuses(&h.take()), vec![200], "voice mail answers the caller");
}

#[test]
fn ring_timeout_cancels_and_diverts_as_no_answer() {
    let mut h = Harness::new();
    h.feed(&invite("sip:vm@example.test", "z9hG4bKv2"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 180, "t"), "192.0.2.20:5060");
    h.take();
    h.advance(Duration::from_secs(19));
    assert!(requests(&h.take(), "CANCEL").is_empty());
    h.advance(Duration::from_millis(1100));
    let out = h.take();
    assert!(!requests(&out, "CANCEL").is_empty(), "branches cancelled at the ring timeout");
    assert_eq!(requests(&out, "INVITE").len(), 1, "diverted to voice mail");
    assert!(outcomes(&h)[0].no_answer);
    h.feed(&answer(&fwd, 487, "t"), "192.0.2.20:5060");
    assert!(requests(&h.take(), "INVITE").is_empty(), "diverted once");
}

/// A phone that rang and went away answers neither the CANCEL nor the
/// INVITE: the caller reaches voice mail at the ring timeout, not 64·T1
/// later.
#[test]
fn ring_timeout_diverts_at_once_when_a_ringing_branch_never_answers_its_cancel() {
    let mut h = Harness::new();
    h.feed(&invite("sip:vm@example.test", "z9hG4bKv9"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 180, "t"), "192.0.2.20:5060");
    h.take();
    h.advance(Duration::from_millis(20_100));
    let out = h.take();
    assert!(!requests(&out, "CANCEL").is_empty(), "the branch is cancelled at the ring timeout");
    let um = requests(&out, "INVITE");
    assert_eq!(um.len(), 1, "diverted at once, without the CANCEL's answer");
    assert_eq!(um[0].1.request_uri_str(), Some("sip:um@192.0.2.51"));
    let o = &outcomes(&h)[0];
    assert_eq!((o.no_answer, o.codes.clone()), (true, vec![487]));
    // The phone's late 487 changes nothing; voice mail answers the caller.
    h.feed(&answer(&fwd, 487, "t"), "192.0.2.20:5060");
    assert!(statuses(&h.take()).is_empty(), "no answer upstream from the cancelled branch");
    let um_inv = um[0].1.clone();
    h.feed(&answer(&um_inv, 200, "um"), "192.0.2.51:5060");
    assert_eq!(statuses(&h.take()), vec![200]);
}

#[test]
fn caller_cancel_never_diverts() {
    let mut h = Harness::new();
    h.feed(&invite("sip:vm@example.test", "z9hG4bKv3"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 180, "t"), "192.0.2.20:5060");
    h.take();
    h.feed(
        "CANCEL sip:vm@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKv3;rport\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: call-z9hG4bKv3\r\n\
         CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        CALLER,
    );
    h.take();
    h.feed(&answer(&fwd, 487, "t"), "192.0.2.20:5060");
    let out = h.take();
    assert_eq!(statuses(&out), vec![487]);
    assert!(requests(&out, "INVITE").is_empty());
    assert!(outcomes(&h).is_empty(), "the fallback was not even asked");
}

#[test]
fn unresponsive_um_server_times_out_and_the_next_answers_after_a_redirect() {
    let mut h = Harness::new();
    h.feed(&invite("sip:vm@example.test", "z9hG4bKv4"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 480, "t"), "192.0.2.20:5060");
    let first_um = requests(&h.take(), "INVITE")[0].1.clone();
    assert_eq!(first_um.request_uri_str(), Some("sip:um@192.0.2.51"));
    h.feed(&answer(&first_um, 100, "x"), "192.0.2.51:5060");
    h.advance(Duration::from_millis(4100));
    let out = h.take();
    let next: Vec<_> =
        requests(&out, "INVITE").into_iter().filter(|(a, _)| a.to_string() == "192.0.2.52:5060").collect();
    assert_eq!(next.len(), 1, "per-attempt timer moved to the second UM server");
    let second = next[0].1.clone();
    assert_eq!(second.header_values_named("X-Um-Server").next(), Some(&b"2"[..]), "its own request");
    assert_eq!(second.header_values_named("Diversion").count(), 0, "not the plan's shared request");
    let mut redirect = answer(&second, 302, "r");
    redirect = redirect.replace("Contact: <sip:callee@192.0.2.99>", "Contact: <sip:um-node@192.0.2.53>");
    h.feed(&redirect, "192.0.2.52:5060");
    let out = h.take();
    let third = requests(&out, "INVITE");
    assert_eq!(third.len(), 1, "the UM call router's redirect is followed");
    assert_eq!(third[0].0.to_string(), "192.0.2.53:5060");
    assert_eq!(third[0].1.request_uri_str(), Some("sip:um-node@192.0.2.53"), "retargeted to the Contact");
    assert_eq!(
        third[0].1.header_values_named("X-Um-Server").next(),
        Some(&b"2"[..]),
        "the redirected attempt keeps the branch's own request"
    );
    assert!(statuses(&out).iter().all(|c| *c < 200), "{:?}", statuses(&out));
}

#[test]
fn all_um_servers_failing_gives_the_fallbacks_answer() {
    let mut h = Harness::new();
    h.feed(&invite("sip:vm@example.test", "z9hG4bKv5"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 486, "t"), "192.0.2.20:5060");
    let um1 = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&um1, 500, "a"), "192.0.2.51:5060");
    let um2 = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&um2, 503, "b"), "192.0.2.52:5060");
    let out = h.take();
    assert_eq!(statuses(&out), vec![480]);
    assert_eq!(outcomes(&h)[1].stage, 1);
}

#[test]
fn a_user_with_no_target_goes_straight_to_the_fallback() {
    let mut h = Harness::new();
    h.feed(&invite("sip:unreg@example.test", "z9hG4bKv6"), CALLER);
    let out = h.take();
    let um = requests(&out, "INVITE");
    assert_eq!(um.len(), 1);
    assert_eq!(um[0].0.to_string(), "192.0.2.51:5060");
    let o = &outcomes(&h)[0];
    assert_eq!((o.stage, o.best, o.no_answer, o.codes.clone()), (0, None, false, vec![]));
}

#[test]
fn a_branch_answered_within_the_escape_window_is_ended_and_the_others_ring_on() {
    let mut h = Harness::new();
    h.feed(&invite("sip:escape@example.test", "z9hG4bKe1"), CALLER);
    let out = h.take();
    let fwd: Vec<Message> = requests(&out, "INVITE").into_iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(fwd.len(), 2);
    h.advance(Duration::from_millis(500));
    h.take();
    // The mobile's mailbox picks up 0.5 s after the INVITE: too fast.
    h.feed(&answer(&fwd[0], 200, "mbx"), "192.0.2.61:5060");
    let out = h.take();
    assert!(statuses(&out).is_empty(), "the caller never sees that 2xx: {:?}", statuses(&out));
    let acks = requests(&out, "ACK");
    let byes = requests(&out, "BYE");
    assert_eq!((acks.len(), byes.len()), (1, 1), "the leg is completed and ended by the proxy");
    assert_eq!(acks[0].0.to_string(), "192.0.2.99:5060", "to the answering contact");
    assert_eq!(byes[0].1.to_tag(), Some("mbx"));
    assert_eq!(byes[0].1.cseq().0, 2);
    assert!(requests(&out, "CANCEL").is_empty(), "the other branch rings on");
    // A person answers the desk phone after 3 s: that one goes through.
    h.advance(Duration::from_millis(2500));
    h.take();
    h.feed(&answer(&fwd[1], 200, "desk"), "192.0.2.62:5060");
    assert_eq!(statuses(&h.take()), vec![200]);
}

#[test]
fn a_non_invite_whose_branch_times_out_gets_no_408_and_is_freed() {
    let mut h = Harness::new();
    h.feed(
        "MESSAGE sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKm1\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: msg-1\r\n\
         CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        CALLER,
    );
    assert_eq!(requests(&h.take(), "MESSAGE").len(), 1);
    h.advance(Duration::from_secs(33));
    let out = h.take();
    assert!(statuses(&out).is_empty(), "RFC 4320: no 408 upstream: {:?}", statuses(&out));
    h.advance(Duration::from_secs(6));
    assert_eq!(h.shard_transactions(), 0, "nothing is left behind");
}

#[test]
fn originated_requests_report_their_final_status_or_none_on_timeout() {
    let mut h = Harness::new();
    let options = bytes::Bytes::from_static(
        b"OPTIONS sip:um1.example.test SIP/2.0\r\nFrom: <sip:umproxy@example.test>;tag=hc\r\n\
          To: <sip:um1.example.test>\r\nCall-ID: hc-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
          Content-Length: 0\r\n\r\n",
    );
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    h.shard.handle_input(
        ShardInput::Originate { request: options.clone(), dest: dest("192.0.2.71:5061"), reply: tx },
        h.now,
    );
    let out = h.take();
    let sent = requests(&out, "OPTIONS");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.top_via().host(), PROXY, "our Via was added");
    h.feed(&answer(&sent[0].1, 200, "um"), "192.0.2.71:5061");
    assert_eq!(rx.try_recv().ok(), Some(Some(200)));
    // A server that never answers: None after Timer F.
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    h.shard.handle_input(ShardInput::Originate { request: options, dest: dest("192.0.2.72:5061"), reply: tx }, h.now);
    assert_eq!(h.metrics.in_flight(), 0, "the proxy's own ping holds no drain");
    h.advance(Duration::from_secs(33));
    assert_eq!(rx.try_recv().ok(), Some(None));
    assert_eq!(h.metrics.transactions_active().get(), 0);
}

#[test]
fn via_alias_on_tcp_lets_the_connection_be_reused() {
    let mut h = Harness::new();
    let text = invite("sip:bob@192.0.2.20", "z9hG4bKa1").replace(";rport\r\n", ";rport;alias\r\n");
    let msg = Message::parse_slice(text.as_bytes()).expect("parses");
    let peer = Peer {
        transport: Transport::Tcp,
        remote: "192.0.2.10:40000".parse().expect("addr"),
        local: format!("{PROXY}:5060").parse().expect("addr"),
        flow: Some(crate::transport::FlowId(7)),
    };
    h.shard.handle_input(ShardInput::Inbound(Inbound { msg, peer, tls: None }), h.now);
    let aliases = h.wire.aliases.lock().expect("lock").clone();
    assert_eq!(aliases, vec![(crate::transport::FlowId(7), "192.0.2.10:5060".parse().expect("addr"))]);
}

#[test]
fn a_503_with_retry_after_marks_the_next_hop_down() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKra"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    let busy =
        answer(&fwd, 503, "t").replace("Content-Length: 0", "Retry-After: 120 (maintenance)\r\nContent-Length: 0");
    h.feed(&busy, "192.0.2.20:5060");
    assert_eq!(statuses(&h.take()), vec![500], "§16.7: a downstream 503 goes up as 500");
    let marked = h.dns.marked_down.lock().expect("lock").clone();
    assert_eq!(marked, vec![("192.0.2.20:5060".parse().expect("addr"), Duration::from_secs(120))]);
}

#[test]
fn a_request_without_max_forwards_gets_the_configured_value() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKmf").replace("Max-Forwards: 70\r\n", ""), CALLER);
    let out = h.take();
    assert_eq!(requests(&out, "INVITE")[0].1.max_forwards(), Some(40), "the configured [proxy] max_forwards");
}

#[test]
fn an_overloaded_shard_refuses_new_requests_but_keeps_room_for_responses() {
    use crate::transport::Dispatch;
    let core =
        super::Core::new(CoreConfig { workers: 1, queue_depth: 16, ..CoreConfig::default() }, Arc::new(Metrics::new()));
    let dispatch = core.dispatch();
    let inbound = |text: String| Inbound {
        msg: Message::parse_slice(text.as_bytes()).expect("parses"),
        peer: Peer {
            transport: Transport::Tcp,
            remote: CALLER.parse().expect("addr"),
            local: format!("{PROXY}:5060").parse().expect("addr"),
            flow: None,
        },
        tls: None,
    };
    let mut accepted = 0;
    while dispatch.deliver(inbound(invite("sip:bob@192.0.2.20", &format!("z9hG4bKq{accepted}")))).is_ok() {
        accepted += 1;
        assert!(accepted <= 16, "requests must be refused before the queue is full");
    }
    assert_eq!(accepted, 12, "a quarter of the queue is kept");
    let fwd = Message::parse_slice(invite("sip:bob@192.0.2.20", "z9hG4bKq0").as_bytes()).expect("parses");
    for _ in 0..4 {
        assert!(dispatch.deliver(inbound(answer(&fwd, 200, "t"))).is_ok(), "responses still fit");
    }
}

#[test]
fn a_silent_branch_does_not_hold_the_ring_timeout_until_timer_b() {
    let mut h = Harness::new();
    h.feed(&invite("sip:vm@example.test", "z9hG4bKsil"), CALLER);
    assert_eq!(requests(&h.take(), "INVITE").len(), 1);
    // The contact never answers, not even 100 Trying.
    h.advance(Duration::from_millis(20_100));
    let out = h.take();
    let um: Vec<_> = requests(&out, "INVITE").into_iter().filter(|(a, _)| a.to_string() == "192.0.2.51:5060").collect();
    assert_eq!(um.len(), 1, "voice mail at the ring timeout, not after Timer B");
    assert!(outcomes(&h)[0].no_answer);
}

#[test]
fn our_own_credentials_are_not_forwarded_but_others_are() {
    let mut h = Harness::new();
    let ours = "Proxy-Authorization: Digest username=\"alice\", realm=\"example.test\", nonce=\"n\", uri=\"sip:bob@192.0.2.20\", response=\"00\"\r\n";
    h.feed(
        &invite("sip:bob@192.0.2.20", "z9hG4bKpa1")
            .replace("Max-Forwards: 70\r\n", &format!("{ours}Max-Forwards: 70\r\n")),
        CALLER,
    );
    let out = h.take();
    assert_eq!(
        requests(&out, "INVITE")[0].1.header_values(HeaderName::ProxyAuthorization).count(),
        0,
        "RFC 3261 §22.3"
    );
    let theirs = ours.replace("example.test", "downstream.test");
    h.feed(
        &invite("sip:bob@192.0.2.20", "z9hG4bKpa2")
            .replace("Max-Forwards: 70\r\n", &format!("{theirs}Max-Forwards: 70\r\n")),
        CALLER,
    );
    let out = h.take();
    assert_eq!(
        requests(&out, "INVITE")[0].1.header_values(HeaderName::ProxyAuthorization).count(),
        1,
        "not ours: kept"
    );
}

fn request(method: &str, ruri: &str, branch: &str) -> String {
    invite(ruri, branch).replace("INVITE ", &format!("{method} ")).replace("1 INVITE", &format!("1 {method}"))
}

#[test]
fn a_non_invite_challenge_keeps_no_state_and_a_retransmission_is_challenged_again() {
    let mut h = Harness::new();
    let register = request("REGISTER", "sip:challenge@example.test", "z9hG4bKreg1");
    h.feed(&register, CALLER);
    let out = h.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.status(), Some(401));
    assert_eq!(h.shard_transactions(), 0, "RFC 3261 §8.2.7: a challenge is sent statelessly");
    assert_eq!(h.shard.contexts_held(), 0);
    // The same request again (a retransmission): answered again, not absorbed.
    h.feed(&register, CALLER);
    let out = h.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.status(), Some(401));
    assert_eq!(h.shard_transactions(), 0);
}

#[test]
fn an_invite_challenge_stays_stateful_for_its_ack() {
    let mut h = Harness::new();
    h.feed(&invite("sip:challenge@example.test", "z9hG4bKinv401"), CALLER);
    let out = h.take();
    assert!(out.iter().any(|(_, m)| m.status() == Some(401)));
    assert_eq!(h.shard_transactions(), 1, "the INVITE transaction waits for the ACK");
}

#[test]
fn a_non_invite_answered_by_the_proxy_frees_its_context_at_once() {
    let mut h = Harness::new();
    h.feed(&request("MESSAGE", "sip:nobody@example.test", "z9hG4bKmsg404"), CALLER);
    let out = h.take();
    assert_eq!(out[0].1.status(), Some(404));
    assert_eq!(h.shard_transactions(), 1, "the transaction absorbs retransmissions until Timer J");
    assert_eq!(h.shard.contexts_held(), 0, "but the request and its context are gone");
    // An INVITE answered locally keeps its context (a CANCEL may follow).
    h.feed(&invite("sip:nobody@example.test", "z9hG4bKinv404"), CALLER);
    assert_eq!(h.shard.contexts_held(), 1);
}

/// A BYE from the caller within the dialog `call-{branch}` answered with
/// To tag `b1`, routed through the proxy.
fn bye(branch: &str, via_branch: &str) -> String {
    format!(
        "BYE sip:callee@192.0.2.99 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={via_branch}\r\n\
         Route: <sip:10.0.0.1:5060;transport=udp;lr>\r\nFrom: <sip:alice@example.test>;tag=a1\r\n\
         To: <sip:bob@example.test>;tag=b1\r\nCall-ID: call-{branch}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn draining_refuses_new_calls_with_503_and_serves_the_calls_already_up() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20:5070", "z9hG4bKd1"), CALLER);
    let out = h.take();
    let fwd = requests(&out, "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 200, "b1"), "192.0.2.20:5070");
    assert_eq!(statuses(&h.take()), vec![200]);
    assert_eq!(h.metrics.dialogs_active().get(), 1, "an answered call is in progress");
    assert_eq!(h.metrics.transactions_active().get(), 0, "both INVITE transactions are past their 2xx");
    assert_eq!(h.metrics.in_flight(), 1, "the call holds a drain");

    h.drain.start();
    h.feed(&invite("sip:carol@192.0.2.20:5070", "z9hG4bKd2"), CALLER);
    let out = h.take();
    assert_eq!(statuses(&out), vec![503], "a new call is refused at once, without 100 Trying");
    assert_eq!(out[0].1.header_values_named("Retry-After").next(), Some(&b"30"[..]));
    assert!(requests(&out, "INVITE").is_empty(), "nothing is forwarded");

    // The call that was up ends normally: its BYE goes through.
    h.feed(&bye("z9hG4bKd1", "z9hG4bKbye1"), CALLER);
    let out = h.take();
    let fwd_bye = requests(&out, "BYE");
    assert_eq!(fwd_bye.len(), 1, "BYE within a dialog is forwarded while draining");
    assert_eq!(h.metrics.in_flight(), 3, "the call and its BYE (a server and a client transaction) hold it");
    let fwd_bye = fwd_bye[0].1.clone();
    h.feed(&answer(&fwd_bye, 200, "b1"), "192.0.2.99:5060");
    assert_eq!(statuses(&h.take()), vec![200]);
    assert_eq!(h.metrics.dialogs_active().get(), 0, "the BYE's 200 ends the call");
    assert_eq!(h.metrics.in_flight(), 0, "nothing holds the exit");
    assert!(h.metrics.transactions_finishing().get() > 0, "finished transactions wait on their timers, apart");
    h.advance(Duration::from_secs(40));
    assert_eq!(h.metrics.transactions_finishing().get(), 0);
}

#[test]
fn the_callee_hanging_up_ends_the_call_too() {
    let mut h = Harness::new();
    h.feed(&invite("sip:bob@192.0.2.20:5070", "z9hG4bKd3"), CALLER);
    let fwd = requests(&h.take(), "INVITE")[0].1.clone();
    h.feed(&answer(&fwd, 200, "b1"), "192.0.2.20:5070");
    h.take();
    assert_eq!(h.metrics.dialogs_active().get(), 1);
    // From and To swapped: the key is the same dialog.
    h.feed(
        "BYE sip:alice@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKbye3\r\n\
         Route: <sip:10.0.0.1:5060;transport=udp;lr>\r\nFrom: <sip:bob@example.test>;tag=b1\r\n\
         To: <sip:alice@example.test>;tag=a1\r\nCall-ID: call-z9hG4bKd3\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        "192.0.2.99:5060",
    );
    let fwd_bye = requests(&h.take(), "BYE")[0].1.clone();
    h.feed(&answer(&fwd_bye, 481, "a1"), CALLER);
    h.take();
    assert_eq!(h.metrics.dialogs_active().get(), 0, "any final response to BYE ends the call");
}

#[test]
fn a_call_whose_bye_never_comes_is_forgotten_after_the_idle_time_and_a_live_one_is_kept() {
    let mut h = Harness::with_config(|c| c.dialog_idle = Duration::from_secs(300));
    for (branch, tag) in [("z9hG4bKi1", "b1"), ("z9hG4bKi2", "b1")] {
        h.feed(&invite("sip:bob@192.0.2.20:5070", branch), CALLER);
        let fwd = requests(&h.take(), "INVITE")[0].1.clone();
        h.feed(&answer(&fwd, 200, tag), "192.0.2.20:5070");
        h.take();
    }
    assert_eq!(h.metrics.dialogs_active().get(), 2);
    // Four minutes on, the second call sends a re-INVITE: it is alive.
    h.advance(Duration::from_secs(240));
    h.feed(
        "INVITE sip:callee@192.0.2.99 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKre2\r\n\
         Route: <sip:10.0.0.1:5060;transport=udp;lr>\r\nFrom: <sip:alice@example.test>;tag=a1\r\n\
         To: <sip:bob@example.test>;tag=b1\r\nCall-ID: call-z9hG4bKi2\r\nCSeq: 2 INVITE\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        CALLER,
    );
    h.take();
    h.advance(Duration::from_secs(120));
    assert_eq!(h.metrics.dialogs_active().get(), 1, "the idle call is forgotten, the refreshed one kept");
    h.advance(Duration::from_secs(300));
    assert_eq!(h.metrics.dialogs_active().get(), 0);
    assert_eq!(h.metrics.in_flight(), 0);
}

#[tokio::test]
async fn a_running_core_answers_the_liveness_ping_and_a_stopped_one_does_not() {
    let metrics = Arc::new(Metrics::new());
    let core = super::Core::new(CoreConfig { workers: 2, ..CoreConfig::default() }, metrics);
    let handle = core.start(
        Arc::new(RecordingWire::default()),
        Arc::new(TestRouter(Arc::new(VoiceMail::default()))),
        Arc::new(NoDns::default()),
    );
    assert!(handle.is_responsive(Duration::from_secs(5)).await);
    handle.abort();
    assert!(!handle.is_responsive(Duration::from_secs(5)).await);
}
#[path = "nat_tests.rs"]
mod nat_tests;
