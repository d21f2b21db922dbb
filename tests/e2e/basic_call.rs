//! A basic call (INVITE/100/180/200/ACK/BYE/200) through umproxy, with SIPp
//! on both sides, over UDP and over TCP.

use std::time::Duration;

use e2e_support::{Proxy, ProxyConfig, SipMessage, Sipp, SippTransport};

use crate::{have_sipp, scenario, umproxy};

/// Run `calls` calls of the Record-Route-honouring scenarios through a
/// fresh proxy, caller and callee both on `transport`; return the callee's
/// view of the messages.
fn call_through_proxy(transport: SippTransport, calls: u32) -> (Proxy, e2e_support::SippOutcome) {
    let uas = Sipp::scenario_file(scenario("uas_rr.xml")).transport(transport).calls(calls).trace_msg();
    let t = if transport == SippTransport::Tcp { "tcp" } else { "udp" };
    let hop = format!("sip:127.0.0.1:{};transport={t}", uas.port);
    let proxy = Proxy::start(umproxy(), ProxyConfig::new().route("*", &[&hop]));
    let uas = uas.spawn();
    let uac = Sipp::scenario_file(scenario("uac_rr.xml"))
        .transport(transport)
        .remote(proxy.udp_addr())
        .service("bob")
        .calls(calls)
        .rate(10)
        .run();
    let uas = uas.wait();
    uac.assert_all_succeeded(calls as u64);
    uas.assert_all_succeeded(calls as u64);
    (proxy, uas)
}

/// The INVITEs the callee received.
fn invites(uas: &e2e_support::SippOutcome) -> Vec<SipMessage> {
    uas.received_messages()
        .iter()
        .filter_map(|m| SipMessage::parse(m.as_bytes()))
        .filter(|m| m.method() == Some("INVITE"))
        .collect()
}

fn assert_proxy_in_path(proxy: &Proxy, uas: &e2e_support::SippOutcome, transport: &str) {
    let invites = invites(uas);
    assert!(!invites.is_empty(), "the callee saw no INVITE:\n{}", uas.messages);
    let port = proxy.udp_addr().port();
    for inv in &invites {
        let rr = inv.header_values("Record-Route");
        assert_eq!(
            rr,
            vec![format!("<sip:127.0.0.1:{port};transport={};lr>", transport.to_ascii_lowercase())],
            "Record-Route of {inv}"
        );
        let vias = inv.header_values("Via");
        assert_eq!(vias.len(), 2, "two Vias expected in {inv}");
        assert!(
            vias[0].starts_with(&format!("SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK")),
            "top Via is the proxy's: {inv}"
        );
        assert_eq!(inv.header("Max-Forwards"), Some("69"), "Max-Forwards decremented: {inv}");
    }
    // The ACK and BYE came through the proxy too (they are routed by the
    // Route header the caller built from Record-Route).
    let received: Vec<SipMessage> =
        uas.received_messages().iter().filter_map(|m| SipMessage::parse(m.as_bytes())).collect();
    for method in ["ACK", "BYE"] {
        let m = received.iter().find(|m| m.method() == Some(method)).unwrap_or_else(|| panic!("no {method}"));
        let vias = m.header_values("Via");
        assert!(vias.len() == 2 && vias[0].contains(&format!("127.0.0.1:{port}")), "{method} came via the proxy: {m}");
        assert!(m.header("Route").is_none(), "the proxy removed its own Route from {m}");
    }
}

#[test]
fn call_over_udp_is_record_routed_and_completes() {
    if !have_sipp() {
        return;
    }
    let (proxy, uas) = call_through_proxy(SippTransport::Udp, 3);
    assert_proxy_in_path(&proxy, &uas, "UDP");
}

#[test]
fn call_over_tcp_is_record_routed_and_completes() {
    if !have_sipp() {
        return;
    }
    let (proxy, uas) = call_through_proxy(SippTransport::Tcp, 3);
    assert_proxy_in_path(&proxy, &uas, "TCP");
}

/// SIPp's built-in scenarios ignore Record-Route; the proxy routes their
/// in-dialog requests (addressed to it, no Route) like new ones.
#[test]
fn builtin_sipp_scenarios_complete_over_udp_and_tcp() {
    if !have_sipp() {
        return;
    }
    for (transport, calls) in [(SippTransport::Udp, 10), (SippTransport::Tcp, 10)] {
        let uas = Sipp::builtin("uas").transport(transport).calls(calls);
        let t = if transport == SippTransport::Tcp { "tcp" } else { "udp" };
        let hop = format!("sip:127.0.0.1:{};transport={t}", uas.port);
        let proxy = Proxy::start(umproxy(), ProxyConfig::new().route("*", &[&hop]));
        let uas = uas.timeout(Duration::from_secs(30)).spawn();
        let uac = Sipp::builtin("uac")
            .transport(transport)
            .remote(proxy.udp_addr())
            .service("bob")
            .calls(calls)
            .rate(20)
            .run();
        uac.assert_all_succeeded(calls as u64);
        let uas = uas.wait();
        assert!(uas.succeeded(), "{transport:?} callee:\n{}\nproxy log:\n{}", uas.describe(), proxy.log());
    }
}

/// The callee scenario's Record-Route check is not vacuous: without
/// Record-Route (`proxy.record_route = false`) the callee fails the call.
#[test]
fn callee_scenario_rejects_a_call_without_record_route() {
    if !have_sipp() {
        return;
    }
    let uas = Sipp::scenario_file(scenario("uas_rr.xml")).calls(1).timeout(Duration::from_secs(10));
    let hop = format!("sip:127.0.0.1:{};transport=udp", uas.port);
    let mut config = ProxyConfig::new().route("*", &[&hop]);
    config.record_route = false;
    let proxy = Proxy::start(umproxy(), config);
    let uas = uas.spawn();
    let uac = Sipp::scenario_file(scenario("uac_rr.xml"))
        .remote(proxy.udp_addr())
        .service("bob")
        .calls(1)
        .timeout(Duration::from_secs(10))
        .run();
    let uas = uas.wait();
    assert!(!uas.succeeded(), "the callee accepted an INVITE without Record-Route:\n{}", uas.describe());
    assert_eq!(uas.successful, 0, "{}", uas.describe());
    assert!(
        uas.errors.contains("regexp"),
        "failed for another reason than the Record-Route check:\n{}",
        uas.describe()
    );
    drop(uac);
}
