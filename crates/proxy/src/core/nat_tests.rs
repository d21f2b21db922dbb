//! RFC 3581 on the responses the proxy builds itself, and the NAT marking
//! of Contacts (issue 18), on the shard harness of `tests.rs`.

use super::*;
use crate::nat::NatMode;
use crate::transport::FlowId;

/// The phone's private address, as its Via and Contact name it.
const PRIVATE: &str = "192.168.1.10";
/// Where the phone's packets come from: its NAT's public side.
const PUBLIC: &str = "203.0.113.5:40000";

/// Routes of these tests, by Request-URI user.
pub(super) fn route(user: &str, msg: &Message) -> Option<RouteDecision> {
    let local = |code: u16, reason: &str, extra: Option<(&str, &str)>| {
        let mut r = sip_message::build::Response::new(msg, code, reason, Some("loc1"));
        if let Some((n, v)) = extra {
            r = r.header(n, v);
        }
        RouteDecision::Respond { status: code, bytes: r.finish() }
    };
    Some(match user {
        "forbidden" => local(403, "Forbidden", None),
        "proxyauth" => local(407, "Proxy Authentication Required", Some(("Proxy-Authenticate", "Digest realm=\"x\""))),
        "registered" => RouteDecision::Respond {
            status: 200,
            bytes: crate::location::registrar::ok_response(msg, &[], std::time::SystemTime::now()),
        },
        "offline" => RouteDecision::Reject(Rejection::new(480, "Temporarily Unavailable")),
        // A binding registered from behind NAT over UDP: the Request-URI
        // is its Contact, the request goes to where the REGISTER came from.
        "natted" => RouteDecision::Forward(ForkPlan::single(Target {
            request_uri: Some(format!("sip:phone@{PRIVATE}:5060")),
            next_hop: Some(NextHop::Destination(Destination {
                transport: Transport::Udp,
                addr: PUBLIC.parse().ok()?,
                flow: Some(FlowId(0)),
                server_name: None,
            })),
            ..Target::default()
        })),
        _ => return None,
    })
}

fn harness(mode: NatMode) -> Harness {
    let wire = Arc::new(RecordingWire::default());
    let cfg = CoreConfig { workers: 1, nat: mode, ..CoreConfig::default() };
    let (metrics, drain) = (Arc::new(Metrics::new()), cfg.drain.clone());
    let vm = Arc::new(VoiceMail::default());
    let dns = Arc::new(NoDns::default());
    let shard = Shard::new(
        0,
        Arc::new(cfg),
        wire.clone(),
        Arc::new(TestRouter(vm.clone())),
        dns.clone(),
        Arc::new(crate::core::branch::BranchMinter::default()),
        metrics.clone(),
        std::sync::Weak::new(),
    );
    Harness { metrics, drain, dns, vm, shard, wire, now: Instant::now() }
}

fn feed_over(h: &mut Harness, text: &str, from: &str, transport: Transport) {
    let msg = Message::parse_slice(text.as_bytes()).expect("test message parses");
    let remote: SocketAddr = from.parse().expect("addr");
    let local = if remote.is_ipv4() { format!("{PROXY}:5060") } else { "[2001:db8::1]:5060".into() };
    let peer = Peer { transport, remote, local: local.parse().expect("addr"), flow: None };
    h.shard.handle_input(ShardInput::Inbound(Inbound { msg, peer, tls: None }), h.now);
}

/// A request from a UA whose top Via names `via_host:5060` with rport.
fn from_ua(method: &str, ruri: &str, via_host: &str, branch: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host}:5060;branch={branch};rport\r\n\
         From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c-{branch}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:alice@{via_host}:5060>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Every response the proxy builds itself, from an IPv4 and an IPv6 UA
/// behind NAT: each one's Via says where the request came from
/// (`received`, `rport` with the source port), and each goes there.
#[test]
fn every_locally_built_response_carries_received_and_rport_v4_and_v6() {
    let cases: [(&str, &str, u16); 9] = [
        ("REGISTER", "challenge", 401),
        ("REGISTER", "registered", 200),
        ("REGISTER", "forbidden", 403),
        ("INVITE", "proxyauth", 407),
        ("INVITE", "offline", 480),
        ("INVITE", "nobody", 404),
        ("OPTIONS", "", 200),
        ("MESSAGE", "nobody", 404),
        ("CANCEL", "nobody", 481),
    ];
    for (private, source) in [(PRIVATE, "203.0.113.7:40001"), ("[fd00::10]", "[2001:db8::7]:40001")] {
        let src: SocketAddr = source.parse().expect("addr");
        for (i, (method, user, code)) in cases.iter().enumerate() {
            let mut h = harness(NatMode::Auto);
            let ruri = if user.is_empty() { format!("sip:{PROXY}") } else { format!("sip:{user}@example.test") };
            feed_over(&mut h, &from_ua(method, &ruri, private, &format!("z9hG4bKl{i}")), source, Transport::Udp);
            let out = h.take();
            let (to, resp) = out
                .iter()
                .find(|(_, m)| m.status() == Some(*code))
                .unwrap_or_else(|| panic!("{method} {user} from {source}: no {code} in {:?}", statuses(&out)));
            assert_eq!(*to, src, "{code} goes back to the source address and port");
            let via = resp.top_via();
            assert_eq!(via.received(), Some(src.ip().to_string().as_str()), "{code} from {source}: received");
            assert_eq!(via.rport(), Some(Some(src.port())), "{code} from {source}: rport");
            assert_eq!(resp.via_count(), 1);
        }
    }
}

#[test]
fn received_is_added_when_rport_is_asked_even_if_the_host_is_the_source() {
    let mut h = harness(NatMode::Auto);
    // The basic caller: its Via host is its address, rport asked.
    h.feed(&request("MESSAGE", "sip:nobody@example.test", "z9hG4bKsame"), CALLER);
    let out = h.take();
    let via = out[0].1.top_via();
    assert_eq!(via.received(), Some("192.0.2.10"), "RFC 3581 §4: even if identical to sent-by");
    assert_eq!(via.rport(), Some(Some(5060)));
}

#[test]
fn a_via_without_rport_naming_its_source_is_left_alone() {
    let mut h = harness(NatMode::Auto);
    h.feed(&request("MESSAGE", "sip:nobody@example.test", "z9hG4bKnorp").replace(";rport", ""), CALLER);
    let out = h.take();
    let via = out[0].1.top_via();
    assert_eq!(via.received(), None);
    assert_eq!(via.rport(), None);
    assert_eq!(via.as_str(), "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnorp");
}

/// A response from the NAT'd callee, carrying `contact`.
fn callee_answer(fwd: &Message, code: u16, contact: &str) -> String {
    answer(fwd, code, "ph1").replace("Contact: <sip:callee@192.0.2.99>", &format!("Contact: {contact}"))
}

fn in_dialog(method: &str, ruri: &str, branch: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n\
         Route: <sip:10.0.0.1:5060;transport=udp;lr>\r\nFrom: <sip:alice@example.test>;tag=a1\r\n\
         To: <sip:bob@example.test>;tag=ph1\r\nCall-ID: call-z9hG4bKnat1\r\nCSeq: 2 {method}\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The callee registered from behind NAT: the INVITE goes to its public
/// address with its Contact as Request-URI; its 2xx's Contact reaches the
/// caller marked, and the caller's ACK and BYE to that Contact go to the
/// public address, with the Contact as the UA wrote it.
#[test]
fn a_natted_callees_contact_is_marked_and_in_dialog_requests_reach_it() {
    let mut h = harness(NatMode::Auto);
    h.feed(&invite("sip:natted@example.test", "z9hG4bKnat1"), CALLER);
    let out = h.take();
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd.len(), 1);
    let (to, f) = fwd[0];
    assert_eq!(to.to_string(), PUBLIC);
    assert_eq!(f.request_uri_str(), Some("sip:phone@192.168.1.10:5060"));
    let f = f.clone();

    h.feed(&callee_answer(&f, 180, "<sip:phone@192.168.1.10:5060>"), PUBLIC);
    h.feed(&callee_answer(&f, 200, "\"Phone\" <sip:phone@192.168.1.10:5060;transport=udp>;+sip.foo"), PUBLIC);
    let out = h.take();
    assert_eq!(statuses(&out), vec![180, 200]);
    let contact = |m: &Message| m.contacts().next().map(|c| c.as_str().to_string());
    assert_eq!(
        contact(&out[0].1).as_deref(),
        Some("<sip:phone@192.168.1.10:5060;alias=203.0.113.5~40000~udp>"),
        "a provisional's Contact is marked too (early dialogs)"
    );
    let marked = contact(&out[1].1).expect("contact");
    assert_eq!(marked, "\"Phone\" <sip:phone@192.168.1.10:5060;transport=udp;alias=203.0.113.5~40000~udp>;+sip.foo");
    let target = "sip:phone@192.168.1.10:5060;transport=udp;alias=203.0.113.5~40000~udp";

    h.feed(&in_dialog("ACK", target, "z9hG4bKack9"), CALLER);
    h.feed(&in_dialog("BYE", target, "z9hG4bKbye9"), CALLER);
    let out = h.take();
    for method in ["ACK", "BYE"] {
        let sent = requests(&out, method);
        assert_eq!(sent.len(), 1, "{method}");
        assert_eq!(sent[0].0.to_string(), PUBLIC, "{method} goes to the NAT's public address");
        assert_eq!(
            sent[0].1.request_uri_str(),
            Some("sip:phone@192.168.1.10:5060;transport=udp"),
            "{method}: the Request-URI is the UA's own Contact again"
        );
    }
}

/// A callee whose Contact is its public address is not marked.
#[test]
fn a_callee_with_a_public_contact_is_not_marked() {
    let mut h = harness(NatMode::Auto);
    h.feed(&invite("sip:natted@example.test", "z9hG4bKnat2"), CALLER);
    let out = h.take();
    let f = requests(&out, "INVITE")[0].1.clone();
    h.feed(&callee_answer(&f, 200, "<sip:phone@203.0.113.5:40000>"), PUBLIC);
    let out = h.take();
    let c = out[0].1.contacts().next().map(|c| c.as_str().to_string());
    assert_eq!(c.as_deref(), Some("<sip:phone@203.0.113.5:40000>"));
}

/// A caller behind NAT: the forwarded INVITE's Contact is marked with the
/// caller's public address; a caller whose Contact is where it sends from
/// is forwarded with its Contact untouched.
#[test]
fn a_natted_callers_contact_is_marked_and_a_public_one_is_not() {
    let mut h = harness(NatMode::Auto);
    feed_over(
        &mut h,
        &from_ua("INVITE", "sip:bob@192.0.2.20", PRIVATE, "z9hG4bKcal1"),
        "203.0.113.7:40001",
        Transport::Udp,
    );
    let out = h.take();
    let f = requests(&out, "INVITE")[0].1.clone();
    let c = f.contacts().next().map(|c| c.as_str().to_string());
    assert_eq!(c.as_deref(), Some("<sip:alice@192.168.1.10:5060;alias=203.0.113.7~40001~udp>"));

    h.feed(&invite("sip:bob@192.0.2.20", "z9hG4bKcal2"), CALLER);
    let out = h.take();
    let f = requests(&out, "INVITE")[0].1.clone();
    let c = f.contacts().next().map(|c| c.as_str().to_string());
    assert_eq!(c.as_deref(), Some("<sip:alice@192.0.2.10>"));
}

#[test]
fn with_nat_off_nothing_is_marked() {
    let mut h = harness(NatMode::Off);
    feed_over(
        &mut h,
        &from_ua("INVITE", "sip:bob@192.0.2.20", PRIVATE, "z9hG4bKoff1"),
        "203.0.113.7:40001",
        Transport::Udp,
    );
    let out = h.take();
    let f = requests(&out, "INVITE")[0].1.clone();
    assert_eq!(f.contacts().next().map(|c| c.as_str().to_string()).as_deref(), Some("<sip:alice@192.168.1.10:5060>"));
    // RFC 3581 still applies.
    assert_eq!(f.vias().nth(1).and_then(|v| v.received().map(str::to_string)).as_deref(), Some("203.0.113.7"));
}

/// A TCP caller: its source port is a connection's, not a sign of NAT.
#[test]
fn over_tcp_only_the_address_shows_nat() {
    let mut h = harness(NatMode::Auto);
    let text =
        from_ua("INVITE", "sip:bob@192.0.2.20", "192.0.2.10", "z9hG4bKtcp1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    feed_over(&mut h, &text, "192.0.2.10:51000", Transport::Tcp);
    let out = h.take();
    let f = requests(&out, "INVITE")[0].1.clone();
    assert_eq!(f.contacts().next().map(|c| c.as_str().to_string()).as_deref(), Some("<sip:alice@192.0.2.10:5060>"));
}

/// A forwarded response (not built here) reaches an IPv6 caller behind NAT
/// with `received` and `rport` in its Via, at its source address and port.
#[test]
fn a_forwarded_response_carries_received_and_rport_to_an_ipv6_caller() {
    let mut h = harness(NatMode::Auto);
    let src: SocketAddr = "[2001:db8::7]:40001".parse().expect("addr");
    feed_over(
        &mut h,
        &from_ua("INVITE", "sip:bob@192.0.2.20", "[fd00::10]", "z9hG4bKv6f"),
        "[2001:db8::7]:40001",
        Transport::Udp,
    );
    let out = h.take();
    let f = requests(&out, "INVITE")[0].1.clone();
    h.feed(&answer(&f, 486, "b6"), "192.0.2.20:5060");
    let out = h.take();
    let (to, resp) = out.iter().find(|(_, m)| m.status() == Some(486)).expect("486 upstream");
    assert_eq!(*to, src);
    let via = resp.top_via();
    assert_eq!(via.received(), Some("2001:db8::7"), "RFC 5118 §4.5: no brackets");
    assert_eq!(via.rport(), Some(Some(40001)));
    assert_eq!(via.host(), "[fd00::10]");
}
