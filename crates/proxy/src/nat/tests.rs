use super::keepalive::{Keepalive, KeepaliveConfig, PingTarget, Verdict};
use super::*;
use std::time::{Duration, Instant};

fn peer(transport: Transport, remote: &str) -> Peer {
    Peer { transport, remote: remote.parse().unwrap(), local: "10.0.0.1:5060".parse().unwrap(), flow: None }
}

fn req(via: &str, contact: &str) -> Message {
    let text = format!(
        "INVITE sip:bob@example.test SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@example.test>;tag=1\r\n\
         To: <sip:bob@example.test>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse_slice(text.as_bytes()).unwrap()
}

#[test]
fn nat_is_detected_by_via_or_contact_and_only_for_requests_straight_from_a_ua() {
    let udp = peer(Transport::Udp, "203.0.113.5:40000");
    let private = req("SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1", "<sip:a@192.168.1.10:5060>");
    assert!(is_behind_nat(NatMode::Auto, &private, &udp));
    assert!(!is_behind_nat(NatMode::Off, &private, &udp));
    // Via names the public address, the Contact a private one.
    let contact_only = req("SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bK1", "<sip:a@192.168.1.10:5060>");
    assert!(is_behind_nat(NatMode::Auto, &contact_only, &udp));
    // Everything public: no NAT, except in `always` mode.
    let public = req("SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bK1", "<sip:a@203.0.113.5:40000>");
    assert!(!is_behind_nat(NatMode::Auto, &public, &udp));
    assert!(is_behind_nat(NatMode::Always, &public, &udp));
    // The same address on another UDP port is a NAT's port mapping.
    let port = req("SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK1", "<sip:a@203.0.113.5>");
    assert!(is_behind_nat(NatMode::Auto, &port, &udp));
    // ... but not over TCP, whose source port is the connection's.
    assert!(!is_behind_nat(NatMode::Auto, &port, &peer(Transport::Tcp, "203.0.113.5:40000")));
    // Relayed by another proxy (two Vias): none of our business.
    let relayed = req(
        "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP 192.168.1.10;branch=z9hG4bK1",
        "<sip:a@192.168.1.10>",
    );
    assert!(!is_behind_nat(NatMode::Always, &relayed, &peer(Transport::Udp, "198.51.100.1:5060")));
    // Names cannot be compared: no sign of NAT.
    let named = req("SIP/2.0/UDP pc.example.test;branch=z9hG4bK1", "<sip:a@pc.example.test>");
    assert!(!is_behind_nat(NatMode::Auto, &named, &udp));
}

#[test]
fn ipv6_and_v4_mapped_sources_compare_as_addresses() {
    let v6 = peer(Transport::Udp, "[2001:db8::7]:5060");
    let same = req("SIP/2.0/UDP [2001:db8:0::7]:5060;branch=z9hG4bK1", "<sip:a@[2001:db8::7]>");
    assert!(!is_behind_nat(NatMode::Auto, &same, &v6));
    let other = req("SIP/2.0/UDP [fd00::7]:5060;branch=z9hG4bK1", "<sip:a@[fd00::7]>");
    assert!(is_behind_nat(NatMode::Auto, &other, &v6));
    let mapped = peer(Transport::Udp, "[::ffff:192.0.2.10]:5060");
    let v4 = req("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1", "<sip:a@192.0.2.10>");
    assert!(!is_behind_nat(NatMode::Auto, &v4, &mapped), "a dual-stack socket's view of an IPv4 peer");
}

#[test]
fn alias_values_round_trip_and_malformed_ones_are_refused() {
    for (addr, t) in [("203.0.113.5:40000", Transport::Udp), ("[2001:db8::7]:5061", Transport::Tls)] {
        let addr: SocketAddr = addr.parse().unwrap();
        let d = parse_alias(&alias_value(addr, t)).unwrap();
        assert_eq!((d.addr, d.transport), (addr, t));
    }
    for bad in ["", "1.2.3.4", "1.2.3.4~5060", "1.2.3.4~0~udp", "1.2.3.4~99999~udp", "x~5060~udp", "1.2.3.4~5060~sctp"]
    {
        assert_eq!(parse_alias(bad), None, "{bad:?}");
    }
}

#[test]
fn marking_keeps_display_name_uri_params_headers_and_contact_params() {
    let c =
        req("SIP/2.0/UDP 192.168.1.10;branch=z9hG4bK1", "\"A\" <sip:a@192.168.1.10:5060;ob?X-Y=1>;expires=60;+sip.x");
    let contact = c.contacts().next().unwrap();
    let marked = aliased_contact(&contact, "203.0.113.5:40000".parse().unwrap(), Transport::Udp).unwrap();
    assert_eq!(marked, "\"A\" <sip:a@192.168.1.10:5060;ob;alias=203.0.113.5~40000~udp?X-Y=1>;expires=60;+sip.x");
    // An addr-spec Contact: its parameters are the Contact's, not the URI's.
    let c = req("SIP/2.0/UDP 192.168.1.10;branch=z9hG4bK1", "sip:a@192.168.1.10;expires=60");
    let contact = c.contacts().next().unwrap();
    let marked = aliased_contact(&contact, "203.0.113.5:40000".parse().unwrap(), Transport::Udp).unwrap();
    assert_eq!(marked, "<sip:a@192.168.1.10;alias=203.0.113.5~40000~udp>;expires=60");
    // Marked once only.
    let c = req("SIP/2.0/UDP 192.168.1.10;branch=z9hG4bK1", "<sip:a@192.168.1.10;alias=1.2.3.4~5~udp>");
    assert_eq!(aliased_contact(&c.contacts().next().unwrap(), "203.0.113.5:1".parse().unwrap(), Transport::Udp), None);
}

#[test]
fn take_alias_gives_the_destination_and_the_uri_as_the_ua_wrote_it() {
    let (uri, d) = take_alias("sip:a@192.168.1.10:5060;transport=tcp;alias=203.0.113.5~40000~tcp;ob?X=1").unwrap();
    assert_eq!(uri, "sip:a@192.168.1.10:5060;transport=tcp;ob?X=1");
    assert_eq!((d.addr, d.transport), ("203.0.113.5:40000".parse().unwrap(), Transport::Tcp));
    let (uri, d) = take_alias("sip:a@[fd00::1];ALIAS=2001:db8::7~5060~udp").unwrap();
    assert_eq!(uri, "sip:a@[fd00::1]");
    assert_eq!(d.addr, "[2001:db8::7]:5060".parse().unwrap());
    assert_eq!(take_alias("sip:a@192.168.1.10"), None);
    assert_eq!(take_alias("sip:a@192.168.1.10;alias=nonsense"), None);
    assert_eq!(take_alias("not a uri"), None);
}

#[test]
fn mark_contact_leaves_star_and_several_contacts_alone() {
    let two = req("SIP/2.0/UDP 192.168.1.10;branch=z9hG4bK1", "<sip:a@192.168.1.10>, <sip:b@192.168.1.10>");
    let (_, marked) = mark_contact(two.edit(), &two, "203.0.113.5:1".parse().unwrap(), Transport::Udp);
    assert!(!marked);
    let one = req("SIP/2.0/UDP 192.168.1.10;branch=z9hG4bK1", "<sip:a@192.168.1.10>");
    let (ed, marked) = mark_contact(one.edit(), &one, "203.0.113.5:1".parse().unwrap(), Transport::Udp);
    assert!(marked);
    let out = Message::parse_slice(ed.finish()).unwrap();
    assert_eq!(out.contacts().count(), 1);
}

// ---- keep-alive schedule (virtual clock: instants passed in) ------------

fn schedule(rate: u32, failures: u32, capacity: usize) -> Keepalive {
    Keepalive::new(KeepaliveConfig { interval: Duration::from_secs(30), failures, rate_per_s: rate, capacity }, 7)
}

fn target(contact: &str, addr: &str) -> PingTarget {
    PingTarget { contact: contact.into(), addr: addr.parse().unwrap(), expires_at: u64::MAX }
}

fn drain(k: &mut Keepalive, now: Instant) -> Vec<String> {
    std::iter::from_fn(|| k.poll_ping(now, 0)).map(|p| p.contact).collect()
}

#[test]
fn pings_come_every_interval_with_jitter_within_twenty_percent() {
    let mut k = schedule(1000, 3, 100);
    let t0 = Instant::now();
    let targets: Vec<PingTarget> =
        (0..50).map(|i| target(&format!("sip:u{i}@192.168.1.10"), "203.0.113.5:40000")).collect();
    k.update_aor("sip:a@example.test", &targets, t0);
    assert!(drain(&mut k, t0 + Duration::from_secs(23)).is_empty(), "nothing before 80 % of the interval");
    let first = k.poll_timeout().unwrap();
    assert!(first >= t0 + Duration::from_secs(24) && first <= t0 + Duration::from_secs(36));
    let pinged = drain(&mut k, t0 + Duration::from_secs(36));
    assert_eq!(pinged.len(), 50, "every binding by 120 % of the interval");
    let spread: std::collections::BTreeSet<Instant> = std::iter::from_fn({
        let mut k2 = schedule(1000, 3, 100);
        k2.update_aor("sip:a@example.test", &targets, t0);
        move || {
            let due = k2.poll_timeout()?;
            k2.poll_ping(due, 0).map(|_| due)
        }
    })
    .take(50)
    .collect();
    assert!(spread.len() > 10, "bindings made at once do not all ping at once");
    // Each is rescheduled one (jittered) interval after its ping.
    assert!(k.poll_timeout().unwrap() >= t0 + Duration::from_secs(24 + 24));
}

#[test]
fn the_rate_limit_holds_across_bindings() {
    let mut k = schedule(10, 3, 1000);
    let t0 = Instant::now();
    let targets: Vec<PingTarget> =
        (0..100).map(|i| target(&format!("sip:u{i}@192.168.1.10"), "203.0.113.5:40000")).collect();
    k.update_aor("sip:a@example.test", &targets, t0);
    let late = t0 + Duration::from_secs(40);
    assert_eq!(drain(&mut k, late).len(), 10, "one second's budget");
    let next = k.poll_timeout().unwrap();
    assert_eq!(next, late + Duration::from_millis(100), "the next token");
    assert_eq!(drain(&mut k, late + Duration::from_millis(500)).len(), 5);
    assert_eq!(drain(&mut k, late + Duration::from_secs(10)).len(), 10, "the bucket holds one second at most");
}

#[test]
fn failed_pings_drop_the_binding_after_n_and_an_answer_resets_the_count() {
    let mut k = schedule(100, 3, 10);
    let t0 = Instant::now();
    let addr: SocketAddr = "203.0.113.5:40000".parse().unwrap();
    k.update_aor("sip:a@example.test", &[target("sip:a@192.168.1.10", "203.0.113.5:40000")], t0);
    let r = |k: &mut Keepalive, ok| k.handle_result("sip:a@example.test", "sip:a@192.168.1.10", addr, ok);
    assert_eq!(r(&mut k, false), Verdict::Failed(1));
    assert_eq!(r(&mut k, false), Verdict::Failed(2));
    assert_eq!(r(&mut k, true), Verdict::Alive);
    assert_eq!(r(&mut k, false), Verdict::Failed(1));
    assert_eq!(r(&mut k, false), Verdict::Failed(2));
    assert_eq!(r(&mut k, false), Verdict::Drop);
    assert!(k.is_empty());
    assert_eq!(k.poll_timeout(), None, "nothing left to ping");
    assert_eq!(r(&mut k, false), Verdict::Stale);
}

#[test]
fn a_binding_that_moved_or_went_is_rescheduled_or_forgotten() {
    let mut k = schedule(100, 2, 10);
    let t0 = Instant::now();
    let aor = "sip:a@example.test";
    k.update_aor(aor, &[target("sip:a@192.168.1.10", "203.0.113.5:40000")], t0);
    let old: SocketAddr = "203.0.113.5:40000".parse().unwrap();
    assert_eq!(k.handle_result(aor, "sip:a@192.168.1.10", old, false), Verdict::Failed(1));
    // Re-registered through a new NAT mapping: the failures start afresh,
    // and a late result about the old address changes nothing.
    k.update_aor(aor, &[target("sip:a@192.168.1.10", "203.0.113.5:40002")], t0);
    assert_eq!(k.handle_result(aor, "sip:a@192.168.1.10", old, false), Verdict::Stale);
    let new: SocketAddr = "203.0.113.5:40002".parse().unwrap();
    assert_eq!(k.handle_result(aor, "sip:a@192.168.1.10", new, false), Verdict::Failed(1));
    let pinged: Vec<SocketAddr> =
        std::iter::from_fn(|| k.poll_ping(t0 + Duration::from_secs(40), 0)).map(|p| p.addr).collect();
    assert_eq!(pinged, vec![new]);
    // Another AOR's REGISTER leaves this one alone.
    k.update_aor("sip:b@example.test", &[], t0);
    assert_eq!(k.len(), 1);
    // Unregistered: forgotten.
    k.update_aor(aor, &[], t0);
    assert!(k.is_empty());
    assert_eq!(k.poll_timeout(), None);
}

#[test]
fn expired_bindings_are_not_pinged_and_the_table_is_bounded() {
    let mut k = schedule(100, 2, 2);
    let t0 = Instant::now();
    let mut lapsing = target("sip:a@192.168.1.10", "203.0.113.5:40000");
    lapsing.expires_at = 1000;
    k.update_aor("sip:a@example.test", &[lapsing, target("sip:b@192.168.1.10", "203.0.113.5:40001")], t0);
    k.update_aor("sip:c@example.test", &[target("sip:c@192.168.1.10", "203.0.113.5:40002")], t0);
    assert_eq!(k.len(), 2, "the third binding finds the table full");
    assert_eq!(k.refused, 1);
    let pinged: Vec<String> =
        std::iter::from_fn(|| k.poll_ping(t0 + Duration::from_secs(40), 1000)).map(|p| p.contact).collect();
    assert_eq!(pinged, vec!["sip:b@192.168.1.10".to_string()], "the lapsed one is dropped, not pinged");
    assert_eq!(k.len(), 1);
}

/// After a restart, the NAT'd UDP bindings the embedded store loaded are
/// pinged again without waiting for their next REGISTER.
#[tokio::test]
async fn persisted_natted_udp_bindings_are_scheduled_again_at_start() {
    use crate::location::binding::{Binding, FlowToken, QValue};
    use crate::location::store::embedded::{EmbeddedConfig, EmbeddedStore};
    use crate::location::store::LocationStore;
    let store = EmbeddedStore::memory_only(EmbeddedConfig::default());
    let now = std::time::SystemTime::now();
    let binding = |contact: &str, flow: Option<FlowToken>| Binding {
        aor: "sip:a@example.test".into(),
        contact_uri: contact.into(),
        q: QValue::DEFAULT,
        expires_at: crate::location::binding::unix_secs(now) + 600,
        call_id: "c".into(),
        cseq: 1,
        path: Vec::new(),
        instance: None,
        reg_id: None,
        flow,
        received: Some("203.0.113.5:40000".parse().unwrap()),
        updated_at: 0,
    };
    let bindings = vec![
        binding("sip:a@192.168.1.10", Some(FlowToken::UDP_SOURCE)),
        binding("sip:a@203.0.113.5:40000", None),
        binding("sip:a@192.168.1.11;transport=tcp", Some(FlowToken(1 << 62 | 9))),
    ];
    store.replace("sip:a@example.test", 0, bindings, now).await.unwrap();
    let reg = prometheus::Registry::new();
    let metrics = keepalive::NatMetrics::register(&reg).unwrap();
    let handle = keepalive::KeepaliveHandle::new(schedule(10, 2, 10), metrics.clone());
    handle.resume(&store);
    assert_eq!(metrics.bindings.get(), 1, "only the NAT'd UDP binding is pinged");
}

#[test]
fn a_local_response_gets_its_via_fixed_by_splicing_whatever_the_via_layout() {
    let peer = peer(Transport::Udp, "203.0.113.5:40000");
    let limits = Limits::default();
    for via_lines in [
        "Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport",
        "v:SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport , SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0",
        "VIA :  SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0",
    ] {
        let text = format!(
            "REGISTER sip:example.test SIP/2.0\r\n{via_lines}\r\nFrom: <sip:a@example.test>;tag=1\r\n\
             To: <sip:a@example.test>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        );
        let req = Message::parse_slice(text.as_bytes()).unwrap();
        let resp = sip_message::build::response(&req, 200, "OK", Some("t"));
        let fixed = fix_top_via(&req.top_via(), &peer).unwrap();
        assert!(splice_top_via(&resp, &req, &fixed).is_some(), "spliced, not reparsed: {via_lines}");
        let out = Message::parse_slice(fix_local_response(resp, &req, &peer, &limits)).unwrap();
        let vias: Vec<String> = out.vias().map(|v| v.as_str().to_string()).collect();
        assert_eq!(vias[0], "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport=40000;received=203.0.113.5");
        assert_eq!(vias.len(), req.vias().count(), "the other Vias stay: {via_lines}");
    }
    // The via-parm not found where a Via starts (a router's response with
    // another layout): reparsed and edited instead.
    let req = Message::parse_slice(
        b"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10;branch=z9hG4bK2;rport\r\n\
          From: <sip:a@example.test>;tag=1\r\nTo: <sip:a@example.test>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
          Content-Length: 0\r\n\r\n",
    )
    .unwrap();
    let other = Bytes::from_static(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.168.1.10;rport;branch=z9hG4bK2\r\nFrom: <sip:a@example.test>;tag=1\r\n\
          To: <sip:a@example.test>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n",
    );
    let fixed = fix_top_via(&req.top_via(), &peer).unwrap();
    assert!(splice_top_via(&other, &req, &fixed).is_none());
    let out = Message::parse_slice(fix_local_response(other, &req, &peer, &limits)).unwrap();
    assert_eq!(out.top_via().received(), Some("203.0.113.5"));
}

/// Routing to a NAT'd binding: the branch goes to where the REGISTER came
/// from (over UDP: the address; over TCP: that connection), with the
/// registered Contact as its Request-URI; a public binding goes to its
/// Contact as before.
#[tokio::test]
async fn a_natted_binding_is_routed_to_its_source_with_its_contact_as_request_uri() {
    use crate::app::{fork_groups, Locations, RegistrarLocations};
    use crate::core::NextHop;
    use crate::location::binding::FlowToken;
    use crate::location::registrar::{RegisterContext, RegisterNat, Registrar, RegistrarConfig};
    use crate::location::store::embedded::{EmbeddedConfig, EmbeddedStore};
    use std::sync::Arc;
    let store = Arc::new(EmbeddedStore::memory_only(EmbeddedConfig::default()));
    let registrar = Arc::new(Registrar::new(
        store,
        RegistrarConfig { domains: vec!["example.test".into()], ..RegistrarConfig::default() },
        None,
    ));
    let register = |user: &str, via: &str, contact: &str| {
        Message::parse_slice(
            format!(
                "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK{user}\r\n\
                 From: <sip:{user}@example.test>;tag=1\r\nTo: <sip:{user}@example.test>\r\nCall-ID: {user}\r\n\
                 CSeq: 1 REGISTER\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let ctx = |src: &str, transport: Transport, flow: FlowToken| RegisterContext {
        received: Some(src.parse().unwrap()),
        flow: (transport != Transport::Udp).then_some(flow),
        authenticated_user: None,
        nat: Some(RegisterNat { is_natted: false, transport, flow }),
    };
    let now = std::time::SystemTime::now();
    let udp = register("u", "UDP 192.168.1.10:5060;rport", "sip:u@192.168.1.10:5060");
    let out =
        registrar.handle_register(&udp, &ctx("203.0.113.5:40000", Transport::Udp, FlowToken::UDP_SOURCE), now).await;
    assert_eq!(out.status, 200);
    let tcp = register("t", "TCP 192.168.1.11:5060", "sip:t@192.168.1.11:5060;transport=tcp");
    // The TCP flow token as the router mints it: transport in the top bits.
    let token = FlowToken((1 << 62) | 7);
    assert_eq!(
        registrar.handle_register(&tcp, &ctx("203.0.113.5:40001", Transport::Tcp, token), now).await.status,
        200
    );
    let public = register("p", "UDP 198.51.100.7:5060", "sip:p@198.51.100.7:5060");
    let out =
        registrar.handle_register(&public, &ctx("198.51.100.7:5060", Transport::Udp, FlowToken::UDP_SOURCE), now).await;
    assert_eq!(out.status, 200);

    let locations = RegistrarLocations(registrar);
    let target = |aor: &str| {
        let contacts = futures_util::FutureExt::now_or_never(locations.lookup(aor.into())).unwrap().unwrap();
        let groups = fork_groups(contacts, None);
        groups[0][0].clone()
    };
    let t = target("sip:u@example.test");
    assert_eq!(t.request_uri.as_deref(), Some("sip:u@192.168.1.10:5060"));
    match t.next_hop {
        Some(NextHop::Destination(d)) => {
            assert_eq!((d.transport, d.addr), (Transport::Udp, "203.0.113.5:40000".parse().unwrap()))
        }
        other => panic!("{other:?}"),
    }
    let t = target("sip:t@example.test");
    match t.next_hop {
        Some(NextHop::Destination(d)) => {
            assert_eq!((d.transport, d.addr), (Transport::Tcp, "203.0.113.5:40001".parse().unwrap()));
            assert_eq!(d.flow, Some(crate::transport::FlowId(7)), "over the connection it registered on");
        }
        other => panic!("{other:?}"),
    }
    let t = target("sip:p@example.test");
    assert_eq!((t.request_uri.as_deref(), t.next_hop), (Some("sip:p@198.51.100.7:5060"), None), "as before");
}
