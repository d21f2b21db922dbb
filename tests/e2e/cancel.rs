//! CANCEL before the answer (RFC 3261 §16.10).

use e2e_support::{Proxy, ProxyConfig, Sipp};

use crate::{have_sipp, scenario, umproxy};

#[test]
fn cancel_before_answer_gets_200_and_487_and_reaches_callee() {
    if !have_sipp() {
        return;
    }
    let calls = 3;
    let uas = Sipp::scenario_file(scenario("uas_ring_cancel.xml")).calls(calls).trace_msg();
    let hop = format!("sip:127.0.0.1:{};transport=udp", uas.port);
    let proxy = Proxy::start(umproxy(), ProxyConfig::new().route("*", &[&hop]));
    let uas = uas.spawn();
    // The caller's scenario only succeeds if the CANCEL gets 200 and the
    // INVITE 487; the callee's only if the CANCEL reached it.
    let uac = Sipp::scenario_file(scenario("uac_cancel.xml"))
        .remote(proxy.udp_addr())
        .service("bob")
        .calls(calls)
        .rate(5)
        .trace_msg()
        .run();
    let uas = uas.wait();
    assert!(uac.succeeded(), "caller:\n{}\ncallee:\n{}\nproxy:\n{}", uac.describe(), uas.describe(), proxy.log());
    assert_eq!(uac.successful, calls as u64, "{}", uac.describe());
    assert!(uas.succeeded(), "callee:\n{}", uas.describe());
    assert_eq!(uas.successful, calls as u64, "{}", uas.describe());

    let cancels = uas.received_messages().iter().filter(|m| m.starts_with("CANCEL ")).count();
    assert_eq!(cancels, calls as usize, "one CANCEL per call at the callee");
    let finals: Vec<String> = uac
        .received_messages()
        .iter()
        .filter_map(|m| m.lines().next().map(str::to_owned))
        .filter(|l| l.starts_with("SIP/2.0 200") || l.starts_with("SIP/2.0 487"))
        .collect();
    assert_eq!(finals.iter().filter(|l| l.starts_with("SIP/2.0 487")).count(), calls as usize, "{finals:?}");
}
