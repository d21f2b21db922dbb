//! A directory rewritten while calls are up: the proxy picks it up (it
//! polls the file) and drops none of the calls in progress.

use std::time::Duration;

use e2e_support::WAIT;

use crate::fixture::{dead_addr, directory_toml, Call, Exum, Peers, Pki, ACCEPT};
use crate::have_sipp;

const ZOE: &str = r#"
[[user]]
sip_address = "sip:zoe@contoso.test"
line_uri = "tel:+15550107"
um_dial_plan = "dp-redmond"
um_extension = "2007"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_rewritten_during_calls_is_reloaded_and_drops_none() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let um1 = pki.uas(&["um1.contoso.test"], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), um1.addr)], exap: dead_addr(), sfb: dead_addr() };
    let exum = Exum::start(&pki, &directory_toml(&peers, None));
    let log = || exum.proxy.log();
    // Six calls to voice mail, two a second, each held 3 s: calls are being
    // set up and are in progress when the directory changes.
    let calls = Call::new("sip:carl@example.net", "sip:alice@contoso.test").many(6, 2, 3000);
    let proxy_addr = exum.proxy.udp_addr();
    let running = tokio::spawn(async move { calls.run(proxy_addr, None).await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Rewrite atomically, as an operator's deploy tool would.
    let tmp = exum.directory.with_extension("toml.new");
    std::fs::write(&tmp, directory_toml(&peers, Some(ZOE))).expect("write directory");
    std::fs::rename(&tmp, &exum.directory).expect("replace directory");
    let reloaded = e2e_support::poll_until(WAIT, || log().contains("directory reloaded").then_some(()));
    assert!(reloaded.is_some(), "directory not reloaded:\n{}", log());
    assert!(!running.is_finished(), "the calls were over before the reload: nothing was tested");
    let outcome = tokio::time::timeout(Duration::from_secs(40), running).await.expect("caller in time").expect("task");
    assert!(outcome.succeeded(), "calls dropped across the reload:\n{}\nproxy log:\n{}", outcome.describe(), log());
    assert_eq!(outcome.successful, 6, "{}", outcome.describe());
    // The new user is served from the new directory.
    let call = Call::new("sip:carl@example.net", "sip:zoe@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    assert!(caller.succeeded(), "zoe: caller:\n{}\nproxy log:\n{}", caller.describe(), log());
    let invite = um1
        .received()
        .into_iter()
        .find(|m| m.method() == Some("INVITE") && m.header("Call-ID") == Some(call.call_id.as_str()))
        .unwrap_or_else(|| panic!("zoe's call did not reach UM; proxy log:\n{}", log()));
    assert_eq!(invite.header_values("Diversion"), vec!["<sip:zoe@contoso.test>;reason=unavailable;counter=1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_directory_rewrite_keeps_the_directory_in_use() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let um1 = pki.uas(&["um1.contoso.test"], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), um1.addr)], exap: dead_addr(), sfb: dead_addr() };
    let exum = Exum::start(&pki, &directory_toml(&peers, None));
    let log = || exum.proxy.log();
    // A dial plan pointing nowhere: refused at load, so the old one stays.
    let broken =
        directory_toml(&peers, None).replace("um_dial_plan = \"dp-redmond\"\n", "um_dial_plan = \"dp-nowhere\"\n");
    let tmp = exum.directory.with_extension("toml.new");
    std::fs::write(&tmp, broken).expect("write directory");
    std::fs::rename(&tmp, &exum.directory).expect("replace directory");
    let refused = e2e_support::poll_until(WAIT, || log().contains("directory not reloaded").then_some(()));
    assert!(refused.is_some(), "the broken directory was not reported:\n{}", log());
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    assert!(caller.succeeded(), "caller:\n{}\nproxy log:\n{}", caller.describe(), log());
    let invite = um1.wait_for("INVITE", WAIT).await.unwrap_or_else(|| panic!("no UM INVITE; log:\n{}", log()));
    assert_eq!(invite.header_values("Diversion"), vec!["<sip:alice@contoso.test>;reason=unavailable;counter=1"]);
}
