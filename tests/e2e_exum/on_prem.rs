//! On-premises UM: busy, no answer and unregistered callees divert to the
//! dial plan's first UM server with one Diversion and History-Info; the
//! mailbox owner and the Subscriber Access contact reach UM without
//! Diversion (EXUM.md behaviours 4, 5, 6, 7, 14).

use std::time::Duration;

use e2e_support::WAIT;

use crate::fixture::{
    assert_call_succeeded, assert_um_invite, callee, directory_toml, um_invite, Backend, Call, Expected, Exum, Peers,
    Pki, ACCEPT, RING_TIME_S,
};
use crate::have_sipp;

const UM1: &str = "um1.contoso.test";

/// A proxy whose dial plan has one UM server answering 200, and dead
/// provider addresses (these tests never reach a provider).
async fn setup(pki: &Pki) -> (Exum, e2e_support::TlsUas) {
    setup_on(Backend::File, pki).await.expect("file backend")
}

/// [`setup`] on `backend`; `None` when the backend cannot run here (skip).
async fn setup_on(backend: Backend, pki: &Pki) -> Option<(Exum, e2e_support::TlsUas)> {
    let um1 = pki.uas(&[UM1], ACCEPT).await;
    let peers =
        Peers { um: vec![(UM1.into(), um1.addr)], exap: crate::fixture::dead_addr(), sfb: crate::fixture::dead_addr() };
    Some((Exum::start_on(backend, pki, &directory_toml(&peers, None), "")?, um1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callee_diverts_to_um_with_one_diversion_and_history_info() {
    busy_callee_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_busy_callee_diverts_to_um_with_one_diversion_and_history_info() {
    busy_callee_scenario(Backend::Ldap).await;
}

/// On-premises busy: exact Diversion and History-Info at UM.
async fn busy_callee_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let Some((exum, um1)) = setup_on(backend, &pki).await else { return };
    let alice = callee(Some(486));
    exum.register("alice", alice.local_addr()).await;
    // An incoming Diversion from an earlier hop must not reach UM.
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test")
        .header("Diversion: <sip:old@example.net>;reason=unconditional;counter=1");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    assert_um_invite(
        &invite,
        &call,
        &Expected {
            request_uri: "sip:um1.contoso.test;transport=tls",
            diversion: Some("<sip:alice@contoso.test>;reason=user-busy;counter=1"),
            history_info: &[
                "<sip:alice@contoso.test>;index=1",
                "<sip:um1.contoso.test;transport=tls;cause=486>;index=1.1;mp=1",
            ],
        },
        &log,
    );
    let callee_out = alice.wait();
    assert!(callee_out.succeeded(), "callee:\n{}", callee_out.describe());
    assert_eq!(exum.metric(r#"umproxy_exum_routes_total{mode="on_prem",reason="user-busy"}"#), 1.0);
    // The operator's line: call, mailbox, mode and reason.
    let line = log().lines().find(|l| l.contains("ExUM: to voice mail")).map(str::to_owned);
    let line = line.unwrap_or_else(|| panic!("no operator log line:\n{}", log()));
    for part in [call.call_id.as_str(), "alice@contoso.test", r#"mode="on_prem""#, r#"reason="user-busy""#] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_callee_is_cancelled_after_its_ring_time_and_diverted() {
    unanswered_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_unanswered_callee_is_cancelled_after_its_ring_time_and_diverted() {
    unanswered_scenario(Backend::Ldap).await;
}

/// No answer within the user's ring time (from the directory): CANCEL, then UM.
async fn unanswered_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let Some((exum, um1)) = setup_on(backend, &pki).await else { return };
    let alice = callee(None);
    exum.register("alice", alice.local_addr()).await;
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let started = std::time::Instant::now();
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(RING_TIME_S) && waited < Duration::from_secs(RING_TIME_S + 8),
        "diverted after {waited:?}, ring time {RING_TIME_S} s"
    );
    assert_um_invite(
        &invite,
        &call,
        &Expected {
            request_uri: "sip:um1.contoso.test;transport=tls",
            diversion: Some("<sip:alice@contoso.test>;reason=no-answer;counter=1"),
            history_info: &[
                "<sip:alice@contoso.test>;index=1",
                "<sip:um1.contoso.test;transport=tls;cause=408>;index=1.1;mp=1",
            ],
        },
        &log,
    );
    // The ringing branch got its CANCEL (the scenario requires it).
    let callee_out = alice.wait();
    assert!(callee_out.succeeded(), "callee was not cancelled cleanly:\n{}", callee_out.describe());
    assert_eq!(exum.metric(r#"umproxy_exum_routes_total{mode="on_prem",reason="no-answer"}"#), 1.0);
    // The latency histogram saw one diversion after at least the ring time.
    let count = exum.metric(r#"umproxy_exum_diversion_seconds_count{mode="on_prem",reason="no-answer"}"#);
    let sum = exum.metric(r#"umproxy_exum_diversion_seconds_sum{mode="on_prem",reason="no-answer"}"#);
    assert_eq!(count, 1.0, "{}", exum.proxy.metrics());
    assert!(sum >= RING_TIME_S as f64 - 0.1, "diversion latency {sum}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_callee_diverts_as_unavailable() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let (exum, um1) = setup(&pki).await;
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    // RFC 6044 as EXUM.md records it: unavailable ⇒ cause 404.
    assert_um_invite(
        &invite,
        &call,
        &Expected {
            request_uri: "sip:um1.contoso.test;transport=tls",
            diversion: Some("<sip:alice@contoso.test>;reason=unavailable;counter=1"),
            history_info: &[
                "<sip:alice@contoso.test>;index=1",
                "<sip:um1.contoso.test;transport=tls;cause=404>;index=1.1;mp=1",
            ],
        },
        &log,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_calling_own_voicemail_gets_subscriber_access_without_diversion() {
    own_voicemail_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_owner_calling_own_voicemail_gets_subscriber_access_without_diversion() {
    own_voicemail_scenario(Backend::Ldap).await;
}

/// The mailbox owner reaches their voice mail without Diversion.
async fn own_voicemail_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let Some((exum, um1)) = setup_on(backend, &pki).await else { return };
    // alice is registered and would ring: opaque=app:voicemail skips her
    // endpoints (the callee scenario would fail the call if it rang).
    let call = Call::new("sip:alice@contoso.test", "sip:alice@contoso.test;opaque=app:voicemail");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    assert_eq!(invite.request_uri(), Some("sip:um1.contoso.test;transport=tls"), "{invite}");
    assert!(invite.header_values("Diversion").is_empty(), "own voice mail carries a Diversion:\n{invite}");
    assert_eq!(invite.header("Call-ID"), Some(call.call_id.as_str()));
    assert_eq!(exum.metric(r#"umproxy_exum_routes_total{mode="on_prem",reason="subscriber_access"}"#), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_access_contact_reaches_its_dial_plan_without_diversion() {
    subscriber_access_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_subscriber_access_contact_reaches_its_dial_plan_without_diversion() {
    subscriber_access_scenario(Backend::Ldap).await;
}

/// The SA contact, by address and by number, reaches its dial plan.
async fn subscriber_access_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let Some((exum, um1)) = setup_on(backend, &pki).await else { return };
    let call = Call::new("sip:carl@example.net", "sip:sa-redmond@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    assert_eq!(invite.request_uri(), Some("sip:um1.contoso.test;transport=tls"), "{invite}\n{}", log());
    assert!(invite.header_values("Diversion").is_empty(), "SA call carries a Diversion:\n{invite}");
    // The same contact by its number (line_uri tel:+15550199).
    let call = Call::new("sip:carl@example.net", "sip:+15550199@contoso.test;user=phone");
    assert_call_succeeded(&call.run(exum.proxy.udp_addr(), None).await, &log);
    let by_number = um1
        .received()
        .into_iter()
        .find(|m| m.method() == Some("INVITE") && m.header("Call-ID") == Some(call.call_id.as_str()))
        .unwrap_or_else(|| panic!("the SA number did not reach UM; proxy log:\n{}", log()));
    assert_eq!(by_number.request_uri(), Some("sip:um1.contoso.test;transport=tls"), "{by_number}");
    assert!(by_number.header_values("Diversion").is_empty(), "SA number call carries a Diversion:\n{by_number}");
}

/// A registration whose phone has gone (the contact answers nothing, not
/// even 100 Trying): the ring time still bounds the wait before voice mail.
/// RFC 3261 §9.1 forbids a CANCEL before a provisional response, but it
/// does not make the caller wait for the branch's Timer B (32 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_but_silent_contact_diverts_when_the_ring_time_expires() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let (exum, um1) = setup(&pki).await;
    exum.register("alice", crate::fixture::dead_addr()).await;
    let mut call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    // Long enough to see when the proxy does divert.
    call.timeout = Duration::from_secs(45);
    let started = std::time::Instant::now();
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    let waited = started.elapsed();
    let bound = Duration::from_secs(RING_TIME_S + 4);
    assert!(waited < bound, "voice mail reached after {waited:?}; ring time {RING_TIME_S} s");
    assert_eq!(invite.header_values("Diversion"), vec!["<sip:alice@contoso.test>;reason=no-answer;counter=1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_history_info_is_kept_and_extended_with_privacy() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let (exum, um1) = setup(&pki).await;
    let log = || exum.proxy.log();
    // An upstream hop already recorded the mailbox as the target: only the
    // UM entry is added under it.
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test")
        .header("History-Info: <sip:alice@contoso.test>;index=1");
    assert_call_succeeded(&call.run(exum.proxy.udp_addr(), None).await, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    assert_um_invite(
        &invite,
        &call,
        &Expected {
            request_uri: "sip:um1.contoso.test;transport=tls",
            diversion: Some("<sip:alice@contoso.test>;reason=unavailable;counter=1"),
            history_info: &[
                "<sip:alice@contoso.test>;index=1",
                "<sip:um1.contoso.test;transport=tls;cause=404>;index=1.1;mp=1",
            ],
        },
        &log,
    );
    // Another original target, and Privacy: history: the mailbox is its
    // retarget, and our entries carry the privacy in their URIs.
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test")
        .header("History-Info: <sip:+15550100@contoso.test;user=phone>;index=1")
        .header("Privacy: history");
    assert_call_succeeded(&call.run(exum.proxy.udp_addr(), None).await, &log);
    let invite = um1
        .received()
        .into_iter()
        .find(|m| m.method() == Some("INVITE") && m.header("Call-ID") == Some(call.call_id.as_str()))
        .unwrap_or_else(|| panic!("second call did not reach UM; proxy log:\n{}", log()));
    assert_um_invite(
        &invite,
        &call,
        &Expected {
            request_uri: "sip:um1.contoso.test;transport=tls",
            diversion: Some("<sip:alice@contoso.test>;reason=unavailable;counter=1"),
            history_info: &[
                "<sip:+15550100@contoso.test;user=phone>;index=1",
                "<sip:alice@contoso.test?Privacy=history>;index=1.1",
                "<sip:um1.contoso.test;transport=tls;cause=404?Privacy=history>;index=1.1.1;mp=1.1",
            ],
        },
        &log,
    );
    assert_eq!(invite.header("Privacy"), Some("history"), "{invite}");
}
