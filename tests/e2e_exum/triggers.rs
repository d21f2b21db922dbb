//! What diverts a call to voice mail and what never does (EXUM.md
//! behaviours 4, 5 and 6): busy-everywhere and decline finals, forward to
//! voice mail, the mailbox owner calling; an answered call and the caller's
//! own CANCEL never reach UM.

use std::time::Duration;

use e2e_support::{TlsUas, WAIT};

use crate::fixture::{
    answering_callee, assert_call_succeeded, assert_um_invite, callee, dead_addr, directory_toml, um_invite, Backend,
    Call, Expected, Exum, Peers, Pki, ACCEPT, RING_TIME_S,
};
use crate::have_sipp;

async fn setup(pki: &Pki) -> (Exum, TlsUas) {
    setup_on(Backend::File, pki).await.expect("file backend")
}

/// [`setup`] on `backend`; `None` when the backend cannot run here (skip).
async fn setup_on(backend: Backend, pki: &Pki) -> Option<(Exum, TlsUas)> {
    let um1 = pki.uas(&["um1.contoso.test"], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), um1.addr)], exap: dead_addr(), sfb: dead_addr() };
    Some((Exum::start_on(backend, pki, &directory_toml(&peers, None), "")?, um1))
}

fn invites(uas: &TlsUas) -> usize {
    uas.received().iter().filter(|m| m.method() == Some("INVITE")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_everywhere_decline_and_unavailable_finals_divert_with_their_reason() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    // (callee's final, Diversion reason, RFC 4458 cause per RFC 6044).
    for (status, reason, cause) in [(600, "user-busy", 486), (603, "deflection", 480), (480, "unavailable", 404)] {
        let (exum, um1) = setup(&pki).await;
        let alice = callee(Some(status));
        exum.register("alice", alice.local_addr()).await;
        let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
        let caller = call.run(exum.proxy.udp_addr(), None).await;
        let log = || exum.proxy.log();
        assert_call_succeeded(&caller, &log);
        let invite = um_invite(&um1, WAIT, &log).await;
        let history = format!("<sip:um1.contoso.test;transport=tls;cause={cause}>;index=1.1;mp=1");
        assert_um_invite(
            &invite,
            &call,
            &Expected {
                request_uri: "sip:um1.contoso.test;transport=tls",
                diversion: Some(&format!("<sip:alice@contoso.test>;reason={reason};counter=1")),
                history_info: &["<sip:alice@contoso.test>;index=1", &history],
            },
            &log,
        );
        let callee_out = alice.wait();
        assert!(callee_out.succeeded(), "{status}: callee:\n{}", callee_out.describe());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_call_never_reaches_voice_mail() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let (exum, um1) = setup(&pki).await;
    let alice = answering_callee();
    exum.register("alice", alice.local_addr()).await;
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let callee_out = alice.wait();
    assert!(callee_out.succeeded(), "callee:\n{}", callee_out.describe());
    // Past the ring time: nothing may divert late.
    tokio::time::sleep(Duration::from_secs(RING_TIME_S) + Duration::from_millis(500)).await;
    assert_eq!(invites(&um1), 0, "an answered call reached UM; proxy log:\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_cancel_while_ringing_never_diverts() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let (exum, um1) = setup(&pki).await;
    let alice = callee(None);
    exum.register("alice", alice.local_addr()).await;
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let caller = call.run_cancelled(exum.proxy.udp_addr()).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let callee_out = alice.wait();
    assert!(callee_out.succeeded(), "callee not cancelled:\n{}", callee_out.describe());
    // Wait out the ring time: the cancelled call must not divert then.
    tokio::time::sleep(Duration::from_secs(RING_TIME_S) + Duration::from_millis(500)).await;
    assert_eq!(invites(&um1), 0, "a call the caller cancelled reached UM; proxy log:\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_to_voicemail_user_diverts_unconditionally_without_ringing() {
    forward_to_voicemail_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_forward_to_voicemail_user_diverts_unconditionally_without_ringing() {
    forward_to_voicemail_scenario(Backend::Ldap).await;
}

/// A user forwarding every call to voice mail is diverted without ringing.
async fn forward_to_voicemail_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let Some((exum, um1)) = setup_on(backend, &pki).await else { return };
    // grace's phone is registered but must not ring (the answering callee
    // would take the call).
    let grace = answering_callee();
    exum.register("grace", grace.local_addr()).await;
    let call = Call::new("sip:carl@example.net", "sip:grace@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    assert_um_invite(
        &invite,
        &call,
        &Expected {
            request_uri: "sip:um1.contoso.test;transport=tls",
            diversion: Some("<sip:grace@contoso.test>;reason=unconditional;counter=1"),
            history_info: &[
                "<sip:grace@contoso.test>;index=1",
                "<sip:um1.contoso.test;transport=tls;cause=302>;index=1.1;mp=1",
            ],
        },
        &log,
    );
    let rang = grace.stop();
    assert_eq!(rang.created, 0, "grace's phone rang:\n{}", rang.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_owner_calling_their_own_number_gets_no_diversion() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let (exum, um1) = setup(&pki).await;
    // alice calls alice (not registered): unavailable, but caller ==
    // callee, so no Diversion (EXUM.md behaviour 6).
    let call = Call::new("sip:alice@contoso.test", "sip:alice@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    let log = || exum.proxy.log();
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    assert!(invite.header_values("Diversion").is_empty(), "the owner's call carries a Diversion:\n{invite}");
    assert_eq!(invite.request_uri(), Some("sip:um1.contoso.test;transport=tls"));
}

/// A phone that rang and went away (answers neither the CANCEL nor the
/// INVITE): the caller reaches voice mail at the ring timeout, not after
/// the INVITE's 64·T1 (32 s, longer than the caller waits here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_rang_and_went_away_reaches_voice_mail_at_the_ring_timeout() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let (exum, um1) = setup(&pki).await;
    let log = || exum.proxy.log();
    let phone = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind the phone");
    exum.register("alice", phone.local_addr().expect("phone address")).await;
    let ringing = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut heard = Vec::new();
        // Ring once, then stay silent for whatever comes (CANCEL, retransmissions).
        while let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_secs(8), phone.recv_from(&mut buf)).await {
            let Some(m) = e2e_support::SipMessage::parse(&buf[..n]) else { continue };
            if m.method() == Some("INVITE") && heard.iter().all(|h: &String| h != "INVITE") {
                let ringing = m.response(180, "Ringing", Some("gone-away")).to_bytes();
                let _ = phone.send_to(&ringing, from).await;
            }
            heard.push(m.method().unwrap_or("response").to_owned());
        }
        heard
    });
    let call = Call { timeout: Duration::from_secs(20), ..Call::new("sip:carl@example.net", "sip:alice@contoso.test") };
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    assert_call_succeeded(&caller, &log);
    let invite = um_invite(&um1, WAIT, &log).await;
    assert_eq!(invite.header_values("Diversion"), vec!["<sip:alice@contoso.test>;reason=no-answer;counter=1"]);
    let heard = ringing.await.expect("phone task");
    assert!(heard.iter().any(|m| m == "CANCEL"), "the ringing phone was not cancelled: {heard:?}");
}
