//! Parallel forking to two callees (RFC 3261 §16.6, §16.7).

use e2e_support::{Proxy, ProxyConfig, Sipp};

use crate::{have_sipp, scenario, umproxy};

fn udp_hop(port: u16) -> String {
    format!("sip:127.0.0.1:{port};transport=udp")
}

#[test]
fn fork_answered_by_one_callee_cancels_the_other() {
    if !have_sipp() {
        return;
    }
    let calls = 2;
    let answering = Sipp::scenario_file(scenario("uas_rr.xml")).calls(calls);
    let ringing = Sipp::scenario_file(scenario("uas_ring_cancel.xml")).calls(calls).trace_msg();
    let config = ProxyConfig::new().route_fork("*", &[&udp_hop(answering.port), &udp_hop(ringing.port)], "parallel");
    let proxy = Proxy::start(umproxy(), config);
    let (answering, ringing) = (answering.spawn(), ringing.spawn());
    let uac =
        Sipp::scenario_file(scenario("uac_rr.xml")).remote(proxy.udp_addr()).service("bob").calls(calls).rate(5).run();
    let (answering, ringing) = (answering.wait(), ringing.wait());
    assert!(uac.succeeded(), "caller:\n{}\nproxy:\n{}", uac.describe(), proxy.log());
    assert_eq!(uac.successful, calls as u64);
    assert!(answering.succeeded(), "answering callee:\n{}", answering.describe());
    // Its scenario requires a CANCEL for every call.
    assert!(ringing.succeeded(), "ringing callee:\n{}\nproxy:\n{}", ringing.describe(), proxy.log());
    assert_eq!(ringing.successful, calls as u64);
    let cancels = ringing.received_messages().iter().filter(|m| m.starts_with("CANCEL ")).count();
    assert_eq!(cancels, calls as usize);
}

/// The rejecting callee's scenario with its status filled in.
fn rejecting(status: u16) -> String {
    std::fs::read_to_string(scenario("uas_reject.xml")).expect("scenario").replace("STATUS", &status.to_string())
}

#[test]
fn fork_rejected_with_486_and_404_gives_caller_486() {
    if !have_sipp() {
        return;
    }
    // The 404 comes at once, the 486 later: the proxy must wait for every
    // branch and then prefer 486 (RFC 3261 §16.7 step 6).
    let not_found = Sipp::scenario_text(rejecting(404)).calls(1);
    let busy = Sipp::scenario_text(rejecting(486)).calls(1).arg("-d").arg("300");
    let config = ProxyConfig::new().route_fork("*", &[&udp_hop(not_found.port), &udp_hop(busy.port)], "parallel");
    let proxy = Proxy::start(umproxy(), config);
    let (not_found, busy) = (not_found.spawn(), busy.spawn());
    let uac = Sipp::scenario_file(scenario("uac_busy.xml"))
        .remote(proxy.udp_addr())
        .service("bob")
        .calls(1)
        .trace_msg()
        .run();
    let (not_found, busy) = (not_found.wait(), busy.wait());
    let finals: Vec<String> =
        uac.received_messages().iter().filter_map(|m| m.lines().next().map(str::to_owned)).collect();
    assert!(uac.succeeded(), "caller expected 486, got {finals:?}:\n{}\nproxy:\n{}", uac.describe(), proxy.log());
    assert!(!finals.iter().any(|l| l.starts_with("SIP/2.0 404")), "the 404 was not forwarded: {finals:?}");
    // Both callees got the proxy's ACK for their rejection.
    assert!(not_found.succeeded(), "404 callee:\n{}", not_found.describe());
    assert!(busy.succeeded(), "486 callee:\n{}", busy.describe());
}
