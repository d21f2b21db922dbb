//! The split domain with digest authentication on: users of the shared
//! domain homed at a hosting provider call in over the provider's
//! mutual-TLS connection without a challenge; the provider may not speak
//! for users homed on premises, and a provider that shares no address space
//! may not send users of the domain at all (EXUM.md behaviour 11, issue 14).

use std::time::Duration;

use e2e_support::{CertKey, SipMessage, TlsClient, TlsUas, WAIT};

use crate::fixture::{
    answering_callee, assert_um_invite, callee, dead_addr, directory_toml, um_invite, Backend, Call, Expected, Exum,
    Peers, Pki, ACCEPT, ALICE_PASSWORD, SFB_FQDN,
};
use crate::have_sipp;

/// A federation partner that shares no address space with us.
const PARTNER_FQDN: &str = "sip.partner.example.net";
/// The value of the verification marker the proxy writes for a verified
/// provider (`always_verifiable`).
const VERIFIED: &str =
    "ms-edge-proxy-message-trust: ms-source-type=HostingProvider;ms-source-network=federation;ms-source-verified-user=verified";

/// The mixed directory plus the partner provider (no shared address space).
fn directory(peers: &Peers) -> String {
    let partner = format!(
        "\n[[hosting_provider]]\nidentity = \"partner\"\nproxy_fqdn = \"{PARTNER_FQDN}\"\nenabled = true\n\
         enabled_shared_address_space = false\nhosts_ocs_users = false\nverification_level = \"always_verifiable\"\n\
         address = \"{}\"\n",
        dead_addr()
    );
    directory_toml(peers, Some(&partner))
}

/// A proxy with digest authentication on, its dial plan's one UM server
/// answering 200; `None` when `backend` cannot run here.
async fn setup(backend: Backend, pki: &Pki) -> Option<(Exum, TlsUas)> {
    setup_logging(backend, pki, "info").await
}

/// [`setup`] with the proxy's `[log] level`.
async fn setup_logging(backend: Backend, pki: &Pki, log_level: &str) -> Option<(Exum, TlsUas)> {
    let um1 = pki.uas(&["um1.contoso.test"], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), um1.addr)], exap: dead_addr(), sfb: dead_addr() };
    Some((Exum::start_full(backend, pki, &directory(&peers), "", true, log_level)?, um1))
}

/// A mutual-TLS connection to the proxy presenting `cert`.
async fn connect(exum: &Exum, pki: &Pki, cert: &CertKey) -> TlsClient {
    match TlsClient::connect(exum.proxy.tls_addr(), "127.0.0.1", &pki.ca, Some(cert)).await {
        Ok(c) => c,
        Err(e) => panic!("TLS connect: {e}\nproxy log:\n{}", exum.proxy.log()),
    }
}

/// `method` to `uri` from `from` over `client`'s connection.
fn request_from(client: &TlsClient, method: &str, uri: &str, from: &str) -> SipMessage {
    with_from(client.request(method, uri), from)
}

/// `m` with its From set to `from` (and a fresh tag).
fn with_from(mut m: SipMessage, from: &str) -> SipMessage {
    let method = m.method().unwrap_or_default().to_owned();
    for (name, value) in &mut m.headers {
        if name == "From" {
            *value = format!("<{from}>;tag={}", e2e_support::sip::unique("prov"));
        }
    }
    match method.as_str() {
        "SUBSCRIBE" | "NOTIFY" => m.with_header("Event", "presence"),
        _ => m,
    }
}

/// The final status of `req` sent over `client`.
async fn final_status(client: &mut TlsClient, req: &SipMessage) -> Option<u16> {
    let responses = client.transact(req, WAIT).await.ok()?;
    responses.last().and_then(SipMessage::status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_user_calls_an_on_premises_user_through_the_provider() {
    online_user_calls_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_online_user_calls_an_on_premises_user_through_the_provider() {
    online_user_calls_scenario(Backend::Ldap).await;
}

/// `online-user` (unknown here, so homed at the provider) calls alice over
/// the provider's connection: it rings, is answered and hung up, with no
/// challenge; alice sees the request marked verified.
async fn online_user_calls_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let Some((exum, _um1)) = setup(backend, &pki).await else { return };
    let log = || exum.proxy.log();
    let alice = answering_callee();
    exum.register_with_digest("alice", ALICE_PASSWORD, alice.local_addr()).await;
    let mut sfb = connect(&exum, &pki, &pki.ca.client_cert(&[SFB_FQDN])).await;
    let invite = request_from(&sfb, "INVITE", "sip:alice@contoso.test", "sip:online-user@contoso.test")
        // A marker the provider wrote is replaced by the proxy's own.
        .with_header("ms-edge-proxy-message-trust", "ms-source-verified-user=forged");
    let call = sfb.call_with(invite, WAIT).await.unwrap_or_else(|e| panic!("call: {e}\nproxy log:\n{}", log()));
    let statuses: Vec<u16> = call.responses.iter().filter_map(SipMessage::status).collect();
    assert!(!statuses.contains(&407), "the provider's user was challenged: {statuses:?}");
    assert!(statuses.contains(&180), "no ringing: {statuses:?}\nproxy log:\n{}", log());
    assert_eq!(call.final_status(), Some(200), "proxy log:\n{}", log());
    assert_eq!(call.bye_status(), Some(200), "proxy log:\n{}", log());
    let callee_out = alice.wait();
    assert!(callee_out.succeeded(), "callee:\n{}", callee_out.describe());
    assert!(callee_out.messages.contains(VERIFIED), "alice's INVITE lacks the marker:\n{}", callee_out.messages);
    assert!(
        !callee_out.messages.contains("forged"),
        "the provider's own marker went through:\n{}",
        callee_out.messages
    );
    assert_eq!(exum.metric(r#"umproxy_exum_provider_requests_total{result="verified"}"#), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_user_calling_a_busy_on_premises_user_reaches_on_premises_um() {
    online_user_busy_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_online_user_calling_a_busy_on_premises_user_reaches_on_premises_um() {
    online_user_busy_scenario(Backend::Ldap).await;
}

/// alice is busy: the provider's caller reaches her on-premises UM with
/// her Diversion, and the operator's line names where the call came from
/// (at debug level, where connections have spans, none of theirs).
async fn online_user_busy_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let Some((exum, um1)) = setup_logging(backend, &pki, "umproxy=debug").await else { return };
    let log = || exum.proxy.log();
    let alice = callee(Some(486));
    exum.register_with_digest("alice", ALICE_PASSWORD, alice.local_addr()).await;
    let mut sfb = connect(&exum, &pki, &pki.ca.client_cert(&[SFB_FQDN])).await;
    let invite = request_from(&sfb, "INVITE", "sip:alice@contoso.test", "sip:online-user@contoso.test");
    let from_tag = invite.header("From").and_then(|f| f.split("tag=").nth(1)).unwrap_or_default().to_owned();
    let call = Call {
        call_id: invite.header("Call-ID").unwrap_or_default().to_owned(),
        from_tag,
        ..Call::new("sip:online-user@contoso.test", "sip:alice@contoso.test")
    };
    let outcome = sfb.call_with(invite, WAIT).await.unwrap_or_else(|e| panic!("call: {e}\nproxy log:\n{}", log()));
    assert_eq!(outcome.final_status(), Some(200), "UM answers; proxy log:\n{}", log());
    let um = um_invite(&um1, WAIT, &log).await;
    assert_um_invite(
        &um,
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
    assert_eq!(um.header("ms-edge-proxy-message-trust").map(|v| v.contains("verified-user=verified")), Some(true));
    let line = log().lines().find(|l| l.contains("ExUM: to voice mail")).map(str::to_owned);
    let line = line.unwrap_or_else(|| panic!("no operator log line:\n{}", log()));
    for part in [
        format!("source={}", sfb.local),
        "transport=tls".to_owned(),
        "caller=provider:sfb-online (verified)".to_owned(),
        "mailbox=alice@contoso.test".to_owned(),
    ] {
        assert!(line.contains(&part), "{part} missing from: {line}");
    }
    // A decision made as the request arrives over the provider's
    // connection (the Subscriber Access contact goes to UM at once): its
    // line is the call's, not that connection's.
    let sa = request_from(&sfb, "INVITE", "sip:sa-redmond@contoso.test", "sip:online-user@contoso.test");
    assert_eq!(final_status(&mut sfb, &sa).await, Some(200), "proxy log:\n{}", log());
    let lines: Vec<String> = log().lines().filter(|l| l.contains("ExUM: to voice mail")).map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in lines {
        assert!(!line.contains("conn{"), "a connection span on the decision line: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_claiming_an_on_premises_user_is_refused_and_counted() {
    impersonation_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_provider_claiming_an_on_premises_user_is_refused_and_counted() {
    impersonation_scenario(Backend::Ldap).await;
}

/// Every kind of request the provider sends is judged by its From: alice
/// (on premises) is refused; heidi (homed at the provider) and an unknown
/// user of the domain are accepted (and, for an unknown callee, answered
/// 404 rather than sent back to the provider).
async fn impersonation_scenario(backend: Backend) {
    let pki = Pki::new();
    let Some((exum, um1)) = setup(backend, &pki).await else { return };
    let log = || exum.proxy.log();
    let mut sfb = connect(&exum, &pki, &pki.ca.client_cert(&[SFB_FQDN])).await;
    let methods = ["INVITE", "OPTIONS", "MESSAGE", "SUBSCRIBE", "NOTIFY", "INFO", "BYE"];
    for method in methods {
        let claim = request_from(&sfb, method, "sip:sa-redmond@contoso.test", "sip:alice@contoso.test");
        assert_eq!(final_status(&mut sfb, &claim).await, Some(403), "{method} as alice; proxy log:\n{}", log());
        for from in ["sip:heidi@contoso.test", "sip:online-user@contoso.test"] {
            let own = request_from(&sfb, method, "sip:nobody@contoso.test", from);
            assert_eq!(final_status(&mut sfb, &own).await, Some(404), "{method} from {from}; proxy log:\n{}", log());
        }
    }
    // By number too: alice's line URI is hers.
    let by_number = request_from(&sfb, "MESSAGE", "sip:nobody@contoso.test", "tel:+15550100");
    assert_eq!(final_status(&mut sfb, &by_number).await, Some(403), "proxy log:\n{}", log());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(um1.received().iter().all(|m| m.method() == Some("OPTIONS")), "a refused request reached UM");
    let refused = methods.len() as f64 + 1.0;
    assert_eq!(exum.metric(r#"umproxy_exum_provider_requests_total{result="refused_impersonation"}"#), refused);
    assert_eq!(exum.metric(r#"umproxy_exum_provider_requests_total{result="verified"}"#), 2.0 * methods.len() as f64);
    let line = log().lines().find(|l| l.contains("may not speak for this caller")).map(str::to_owned);
    let line = line.unwrap_or_else(|| panic!("no refusal log line:\n{}", log()));
    for part in
        ["provider=sfb-online", "verdict=\"refused_impersonation\"", "transport=tls", "from=sip:alice@contoso.test"]
    {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_neither_provider_nor_trusted_nor_authenticated_gets_407() {
    let pki = Pki::new();
    let (exum, _um1) = setup(Backend::File, &pki).await.expect("file backend");
    let log = || exum.proxy.log();
    // Over UDP, From a user of the shared domain.
    let invite = |local| {
        let m = e2e_support::sip::request("INVITE", "sip:sa-redmond@contoso.test", "UDP", local);
        with_from(m, "sip:online-user@contoso.test").to_bytes()
    };
    let mut udp = e2e_support::sip::udp_exchange(exum.proxy.udp_addr(), invite, WAIT).await.expect("exchange");
    assert_eq!(udp.pop().and_then(|m| m.status()), Some(407), "proxy log:\n{}", log());
    // Over mutual TLS with a certificate our CA signed that names no provider.
    let stranger = pki.ca.client_cert(&["phone.contoso.test"]);
    let mut tls = connect(&exum, &pki, &stranger).await;
    let req = request_from(&tls, "INVITE", "sip:sa-redmond@contoso.test", "sip:online-user@contoso.test");
    assert_eq!(final_status(&mut tls, &req).await, Some(407), "proxy log:\n{}", log());
    // And a provider's name signed by nobody we trust never gets that far.
    let forged = pki.rogue.client_cert(&[SFB_FQDN]);
    if let Ok(mut c) = TlsClient::connect(exum.proxy.tls_addr(), "127.0.0.1", &pki.ca, Some(&forged)).await {
        let req = request_from(&c, "INVITE", "sip:sa-redmond@contoso.test", "sip:online-user@contoso.test");
        assert_eq!(final_status(&mut c, &req).await, None, "a forged provider was answered");
    }
    assert_eq!(exum.metric(r#"umproxy_exum_provider_requests_total{result="verified"}"#), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_a_shared_address_space_cannot_send_users_of_the_domain() {
    let pki = Pki::new();
    let (exum, um1) = setup(Backend::File, &pki).await.expect("file backend");
    let log = || exum.proxy.log();
    let mut partner = connect(&exum, &pki, &pki.ca.client_cert(&[PARTNER_FQDN])).await;
    for from in ["sip:online-user@contoso.test", "sip:heidi@contoso.test"] {
        let req = request_from(&partner, "INVITE", "sip:sa-redmond@contoso.test", from);
        assert_eq!(final_status(&mut partner, &req).await, Some(403), "from {from}; proxy log:\n{}", log());
    }
    assert_eq!(exum.metric(r#"umproxy_exum_provider_requests_total{result="refused_not_shared"}"#), 2.0);
    // Its own (foreign) users reach ours, no challenge: here the Subscriber
    // Access contact, answered by UM.
    let req = request_from(&partner, "INVITE", "sip:sa-redmond@contoso.test", "sip:carl@partner.example.net");
    assert_eq!(final_status(&mut partner, &req).await, Some(200), "proxy log:\n{}", log());
    um_invite(&um1, WAIT, &log).await;
    // But it is no relay to foreign domains.
    let relay = request_from(&partner, "MESSAGE", "sip:someone@elsewhere.example.org", "sip:carl@partner.example.net");
    assert_eq!(final_status(&mut partner, &relay).await, Some(403), "proxy log:\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_outbound_tls_handshake_names_the_peer_and_the_error() {
    let pki = Pki::new();
    // The UM server's certificate names another host.
    let um1 = pki.uas(&["wrong.contoso.test"], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), um1.addr)], exap: dead_addr(), sfb: dead_addr() };
    let exum = Exum::start(&pki, &directory(&peers));
    let log = || exum.proxy.log();
    let mut c = connect(&exum, &pki, &pki.ca.client_cert(&[SFB_FQDN])).await;
    let req = request_from(&c, "INVITE", "sip:sa-redmond@contoso.test", "sip:online-user@contoso.test");
    assert_eq!(final_status(&mut c, &req).await, Some(480), "proxy log:\n{}", log());
    let line = e2e_support::poll_until(WAIT, || {
        log().lines().find(|l| l.contains("TLS handshake failed") && l.contains("outbound")).map(str::to_owned)
    });
    let line = line.unwrap_or_else(|| panic!("no handshake failure line:\n{}", log()));
    for part in [
        format!("peer={}", um1.addr),
        "server_name=\"um1.contoso.test\"".to_owned(),
        "reason=\"name_mismatch\"".to_owned(),
        "certificate".to_owned(),
    ] {
        assert!(line.contains(&part), "{part} missing from: {line}");
    }
}
