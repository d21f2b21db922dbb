//! RFC 3263 through a real DNS server: the next hop is a domain whose SRV
//! records name two targets; the preferred one is down, the call reaches
//! the other.

use e2e_support::{DnsServer, Proxy, ProxyConfig, Sipp, SippTransport};

use crate::{have_sipp, scenario, umproxy};

#[test]
fn srv_failover_skips_a_dead_priority_10_target_and_reaches_priority_20() {
    if !have_sipp() {
        return;
    }
    let calls = 3;
    // The callee listens over TCP on the priority-20 target; nothing
    // listens on the priority-10 port, so connecting there fails at once.
    let uas = Sipp::scenario_file(scenario("uas_rr.xml")).transport(SippTransport::Tcp).calls(calls).trace_msg();
    let dead_port = e2e_support::free_port();
    let records = vec![
        // NAPTR steers to TCP (RFC 3263 §4.1), so the UDP SRV is never asked.
        "--naptr-record=svc.test,10,50,s,SIP+D2T,,_sip._tcp.svc.test".to_owned(),
        format!("--srv-host=_sip._tcp.svc.test,a.svc.test,{dead_port},10,50"),
        format!("--srv-host=_sip._tcp.svc.test,b.svc.test,{},20,50", uas.port),
        "--host-record=a.svc.test,127.0.0.1".to_owned(),
        "--host-record=b.svc.test,127.0.0.1".to_owned(),
    ];
    let Some(dns) = DnsServer::start(&records) else { return };
    let config = ProxyConfig::new()
        .route("*", &["sip:svc.test"])
        .extra(&format!("[dns]\nnameservers = [\"{}\"]\ntimeout_ms = 1000\nattempts = 1\n", dns.addr));
    let proxy = Proxy::start(umproxy(), config);
    let uas = uas.spawn();
    let uac =
        Sipp::scenario_file(scenario("uac_rr.xml")).remote(proxy.udp_addr()).service("bob").calls(calls).rate(5).run();
    let uas = uas.wait();
    assert!(uac.succeeded(), "caller:\n{}\ncallee:\n{}\nproxy:\n{}", uac.describe(), uas.describe(), proxy.log());
    assert_eq!(uac.successful, calls as u64);
    assert_eq!(uas.successful, calls as u64, "every call reached the priority-20 target: {}", uas.describe());
    // Each call tried the dead priority-10 target first.
    let failures = proxy.metric(r#"umproxy_transport_send_failures_total{reason="connect",transport="tcp"}"#);
    assert!(failures >= 1.0, "no connect failure counted: the dead target was never tried");
    // The proxy reached the callee over TCP, as the NAPTR said.
    let invite = uas.received_messages().into_iter().find(|m| m.starts_with("INVITE ")).expect("INVITE");
    assert!(invite.contains("SIP/2.0/TCP 127.0.0.1:"), "INVITE came over TCP: {invite}");
}
