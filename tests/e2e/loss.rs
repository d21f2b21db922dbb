//! Retransmissions absorbed under packet loss: SIPp drops packets on both
//! sides, the proxy's transactions (and SIPp's) retransmit, every call
//! still completes.

use std::time::Duration;

use e2e_support::{Proxy, ProxyConfig, Sipp};

use crate::{have_sipp, scenario, umproxy};

#[test]
fn calls_survive_ten_percent_packet_loss_on_both_sides() {
    if !have_sipp() {
        return;
    }
    let calls = 50;
    // The callee runs until the caller is done (a callee that stopped after
    // its last call could not answer that call's retransmitted BYE), and
    // lingers 4 s after each call to absorb retransmissions.
    let callee = std::fs::read_to_string(scenario("uas_rr.xml"))
        .expect("scenario")
        .replace(r#"<timewait milliseconds="500"/>"#, r#"<timewait milliseconds="4000"/>"#);
    let uas = Sipp::scenario_text(callee).lost(10).timeout(Duration::from_secs(90));
    let hop = format!("sip:127.0.0.1:{};transport=udp", uas.port);
    let proxy = Proxy::start(umproxy(), ProxyConfig::new().route("*", &[&hop]));
    let uas = uas.spawn();
    let uac = Sipp::scenario_file(scenario("uac_rr.xml"))
        .remote(proxy.udp_addr())
        .service("bob")
        .calls(calls)
        .rate(20)
        .lost(10)
        .timeout(Duration::from_secs(90))
        .run();
    let uas = uas.stop();
    assert!(uac.succeeded(), "caller:\n{}\ncallee:\n{}\nproxy:\n{}", uac.describe(), uas.describe(), proxy.log());
    assert_eq!(uac.successful, calls as u64, "{}", uac.describe());
    assert_eq!(uac.failed, 0, "{}", uac.describe());
    // Loss really happened and was repaired by retransmission.
    assert!(uac.retransmissions + uas.retransmissions > 0, "no retransmission at all: the loss was not exercised");
}
