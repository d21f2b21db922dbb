//! Retransmissions absorbed under packet loss: both SIPp peers drop 10 % of
//! what they send, the proxy's transactions (and SIPp's) retransmit, and
//! every call still completes.

use std::time::Duration;

use e2e_support::{Proxy, ProxyConfig, Sipp};

use crate::{have_sipp, scenario, umproxy};

/// `name` from `scenarios/` with every `<send>` losing `percent` of its
/// packets.
///
/// Loss is applied where SIPp sends only. SIPp's `-lost` also drops on
/// receive, but a SIPp that "lost" a received request then takes each
/// retransmission of it for a duplicate it already handled and never
/// answers, so the call dies whatever the proxy does. Dropping on send
/// still loses packets on both hops the proxy serves: requests to it from
/// the caller, final responses to it from the callee, and (through the
/// retransmissions that provokes) duplicates in both directions. The
/// callee's 180 is never lost (see `uas_rr.xml`).
fn lossy(name: &str, percent: u32) -> String {
    std::fs::read_to_string(scenario(name))
        .expect("scenario")
        .replace("<send>", &format!(r#"<send lost="{percent}">"#))
        .replace(r#"<send retrans="500">"#, &format!(r#"<send retrans="500" lost="{percent}">"#))
}

#[test]
fn calls_survive_ten_percent_packet_loss_on_both_sides() {
    if !have_sipp() {
        return;
    }
    let calls = 50;
    // The callee runs until the caller is done (one that stopped after its
    // last call could not answer that call's retransmitted BYE) and
    // lingers 4 s after each call to absorb retransmissions.
    let callee =
        lossy("uas_rr.xml", 10).replace(r#"<timewait milliseconds="500"/>"#, r#"<timewait milliseconds="4000"/>"#);
    let uas = Sipp::scenario_text(callee).timeout(Duration::from_secs(90)).trace_msg();
    let hop = format!("sip:127.0.0.1:{};transport=udp", uas.port);
    let proxy = Proxy::start(umproxy(), ProxyConfig::new().route("*", &[&hop]));
    let uas = uas.spawn();
    let uac = Sipp::scenario_text(lossy("uac_rr.xml", 10))
        .remote(proxy.udp_addr())
        .service("bob")
        .calls(calls)
        .rate(20)
        .timeout(Duration::from_secs(90))
        .run();
    let uas = uas.stop();
    assert!(
        uac.succeeded(),
        "caller:\n{}\ncallee errors:\n{:.3000}\nproxy:\n{}",
        uac.describe(),
        uas.errors,
        proxy.log()
    );
    assert_eq!(uac.successful, calls as u64, "{}", uac.describe());
    assert_eq!(uac.failed, 0, "{}", uac.describe());
    // Loss really happened and was repaired by retransmission.
    assert!(uac.retransmissions > 0 || uas.messages.contains("lost"), "no packet was lost: loss not exercised");
}
