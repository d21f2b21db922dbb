//! SIPp as the registering UA, answering every 401 with MD5 digest
//! credentials: register, refresh, a second contact, removal by
//! `Expires: 0`, 423 below `min_expires`, removal of all by `Contact: *`.

use std::time::Duration;

use e2e_support::{SipMessage, Sipp};

use crate::client::{bindings, Alg, Ua};
use crate::harness::{Setup, Umproxy};
use crate::{have_sipp, scenario};

#[test]
fn sipp_registers_refreshes_and_removes_bindings_with_digest_auth() {
    if !have_sipp() {
        return;
    }
    // min_expires is 60 by default. SIPp answers only the first challenge
    // of a 401 and knows only MD5, so MD5 is offered first here (SHA-256
    // still offered, second).
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland").algorithms(&["MD5", "SHA-256"]));
    let sipp = Sipp::scenario_file(scenario("register_auth.xml"))
        .remote(proxy.sip_addr())
        .service("alice")
        .calls(1)
        .timeout(Duration::from_secs(30))
        .trace_msg()
        .arg("-au")
        .arg("alice")
        .arg("-ap")
        .arg("wonderland")
        // The digest uri must be the Request-URI (RFC 3261 §22.4); SIPp's
        // default is the remote address.
        .arg("-auth_uri")
        .arg("example.test");
    let sipp_contact = format!("sip:alice@127.0.0.1:{}", sipp.port);
    let desk_contact = format!("sip:alice-desk@127.0.0.1:{}", sipp.port);
    let run = sipp.run();
    assert!(run.succeeded(), "SIPp:\n{}\nmessages:\n{}\nproxy:\n{}", run.describe(), run.messages, proxy.log());

    let received: Vec<SipMessage> =
        run.received_messages().iter().filter_map(|m| SipMessage::parse(m.as_bytes())).collect();
    let codes: Vec<u16> = received.iter().filter_map(SipMessage::status).collect();
    assert_eq!(codes, [401, 200, 401, 200, 401, 200, 401, 200, 401, 423, 401, 200], "{}", run.messages);
    let oks: Vec<&SipMessage> = received.iter().filter(|m| m.status() == Some(200)).collect();
    let expiry_of = |m: &SipMessage, uri: &str| bindings(m).into_iter().find(|(u, _)| u == uri).and_then(|(_, e)| e);

    // 1. Registered for the hour asked.
    assert_eq!(bindings(oks[0]).len(), 1, "{}", oks[0]);
    assert!(expiry_of(oks[0], &sipp_contact).is_some_and(|e| (3590..=3600).contains(&e)), "{}", oks[0]);
    // 2. The refresh replaced the binding's expiry, not added one.
    assert_eq!(bindings(oks[1]).len(), 1, "{}", oks[1]);
    assert!(expiry_of(oks[1], &sipp_contact).is_some_and(|e| (1790..=1800).contains(&e)), "{}", oks[1]);
    // 3. A second contact: both listed.
    assert_eq!(bindings(oks[2]).len(), 2, "{}", oks[2]);
    assert!(expiry_of(oks[2], &desk_contact).is_some(), "{}", oks[2]);
    // 4. Expires: 0 removed only that one.
    let left: Vec<String> = bindings(oks[3]).into_iter().map(|(u, _)| u).collect();
    assert_eq!(left, std::slice::from_ref(&sipp_contact), "{}", oks[3]);
    // 5. 423 names the minimum.
    let too_brief = received.iter().find(|m| m.status() == Some(423)).expect("423");
    assert_eq!(too_brief.header("Min-Expires"), Some("60"), "{too_brief}");
    // 6. Contact: * removed everything.
    assert!(bindings(oks[4]).is_empty(), "{}", oks[4]);

    // The store agrees: a query (REGISTER without Contact) lists nothing.
    let fetched = Ua::new(proxy.sip_addr()).register("alice", "wonderland", Alg::Sha256, &[]);
    assert_eq!(fetched.status(), Some(200), "{fetched}");
    assert!(bindings(&fetched).is_empty(), "{fetched}");
}
