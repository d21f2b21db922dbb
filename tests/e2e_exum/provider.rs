//! The split domain and hosting providers: requests from a provider only
//! over mutual TLS with a certificate naming it (and its verification
//! marker when it uses source verification); unknown users of the shared
//! domain go to the provider hosting users, never back to the provider a
//! request came from (EXUM.md behaviours 11 and 12).

use std::time::Duration;

use e2e_support::{CertKey, TlsClient, WAIT};

use crate::fixture::{
    dead_addr, directory_toml, um_invite, Backend, Call, Exum, Peers, Pki, ACCEPT, EXAP_FQDN, SFB_FQDN,
};
use crate::have_sipp;

/// Connect to the proxy's mutual-TLS listener with `cert` and send an
/// INVITE to `uri` (with `extra` header lines); the final status, or the
/// error that stopped it.
async fn invite_from_provider(
    exum: &Exum,
    pki: &Pki,
    cert: &CertKey,
    uri: &str,
    extra: &[(&str, &str)],
) -> Result<u16, String> {
    let mut client = TlsClient::connect(exum.proxy.tls_addr(), "127.0.0.1", &pki.ca, Some(cert))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut invite = client.request("INVITE", uri);
    for (name, value) in extra {
        invite = invite.with_header(name, value);
    }
    // TLS 1.3: a refused client certificate shows up after the client
    // considers the handshake done, on the first read or write.
    client.send(&invite).await.map_err(|e| format!("send: {e}"))?;
    match client.recv_until_final(WAIT).await {
        Ok(r) => r.last().and_then(|m| m.status()).ok_or_else(|| "no status".into()),
        Err(e) => Err(format!("recv: {e}")),
    }
}

/// INVITEs a UM server received (the proxy's OPTIONS pings aside).
fn invites(uas: &e2e_support::TlsUas) -> usize {
    uas.received().iter().filter(|m| m.method() == Some("INVITE")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_with_an_untrusted_client_certificate_is_refused_and_a_trusted_one_routed() {
    let pki = Pki::new();
    let um1 = pki.uas(&["um1.contoso.test"], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), um1.addr)], exap: dead_addr(), sfb: dead_addr() };
    let exum = Exum::start(&pki, &directory_toml(&peers, None));
    let log = || exum.proxy.log();
    let before = exum.metric_sum("umproxy_transport_tls_handshake_failures_total", r#"direction="inbound""#);
    // The provider's name, signed by a CA the listener does not trust.
    let forged = pki.rogue.client_cert(&[SFB_FQDN]);
    let outcome = tokio::time::timeout(
        WAIT + Duration::from_secs(2),
        invite_from_provider(&exum, &pki, &forged, "sip:sa-redmond@contoso.test", &[]),
    )
    .await
    .expect("a verdict in time");
    assert!(outcome.is_err(), "a forged provider certificate was served: {outcome:?}");
    assert!(invites(&um1) == 0, "a request over a refused connection reached UM");
    let refused = e2e_support::poll_until(WAIT, || {
        let n = exum.metric_sum("umproxy_transport_tls_handshake_failures_total", r#"direction="inbound""#);
        (n > before).then_some(n)
    });
    assert!(refused.is_some(), "no inbound handshake failure counted:\n{}", exum.proxy.metrics());
    // The same name from the trusted CA is the provider: routed.
    let genuine = pki.ca.client_cert(&[SFB_FQDN]);
    let status = invite_from_provider(&exum, &pki, &genuine, "sip:sa-redmond@contoso.test", &[]).await;
    assert_eq!(status, Ok(200), "proxy log:\n{}", log());
    um_invite(&um1, WAIT, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_verification_provider_needs_its_marker_header() {
    let pki = Pki::new();
    let um1 = pki.uas(&["um1.contoso.test"], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), um1.addr)], exap: dead_addr(), sfb: dead_addr() };
    let exum = Exum::start(&pki, &directory_toml(&peers, None));
    let log = || exum.proxy.log();
    let exap = pki.ca.client_cert(&[EXAP_FQDN]);
    let bare = invite_from_provider(&exum, &pki, &exap, "sip:sa-redmond@contoso.test", &[]).await;
    assert_eq!(bare, Ok(403), "proxy log:\n{}", log());
    assert!(invites(&um1) == 0, "an unverified provider request reached UM");
    let marked = invite_from_provider(
        &exum,
        &pki,
        &exap,
        "sip:sa-redmond@contoso.test",
        &[("ms-edge-proxy-message-trust", "ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=exap.um.example.net")],
    )
    .await;
    assert_eq!(marked, Ok(200), "proxy log:\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_shared_domain_user_goes_to_the_provider_hosting_users() {
    shared_domain_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_unknown_shared_domain_user_goes_to_the_provider_hosting_users() {
    shared_domain_scenario(Backend::Ldap).await;
}

/// Unknown and provider-homed users of the shared domain go to the users-hosting provider.
async fn shared_domain_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let sfb = pki.uas(&[SFB_FQDN], ACCEPT).await;
    let exap = pki.uas(&[EXAP_FQDN], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), dead_addr())], exap: exap.addr, sfb: sfb.addr };
    let Some(exum) = Exum::start_on(backend, &pki, &directory_toml(&peers, None), "") else { return };
    let log = || exum.proxy.log();
    for user in ["nobody", "heidi"] {
        let call = Call::new("sip:carl@example.net", &format!("sip:{user}@contoso.test"));
        let caller = call.run(exum.proxy.udp_addr(), None).await;
        assert!(caller.succeeded(), "{user}: caller:\n{}\nproxy log:\n{}", caller.describe(), log());
        let invite = sfb
            .received()
            .into_iter()
            .find(|m| m.method() == Some("INVITE") && m.header("Call-ID") == Some(call.call_id.as_str()));
        let Some(invite) = invite else { panic!("{user}: the provider got no INVITE; proxy log:\n{}", log()) };
        assert_eq!(invite.request_uri(), Some(format!("sip:{user}@contoso.test").as_str()), "{invite}");
        assert!(invite.header_values("Diversion").is_empty(), "{invite}");
    }
    assert!(exap.received().is_empty(), "a provider that hosts no users got a user's call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_shared_domain_user_from_the_provider_gets_404_and_is_not_sent_back() {
    let pki = Pki::new();
    let sfb = pki.uas(&[SFB_FQDN], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), dead_addr())], exap: dead_addr(), sfb: sfb.addr };
    let exum = Exum::start(&pki, &directory_toml(&peers, None));
    let cert = pki.ca.client_cert(&[SFB_FQDN]);
    let status = invite_from_provider(&exum, &pki, &cert, "sip:nobody@contoso.test", &[]).await;
    assert_eq!(status, Ok(404), "proxy log:\n{}", exum.proxy.log());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sfb.received().is_empty(), "the request looped back to its provider: {:?}", sfb.received());
}
