//! A mutual-TLS listener (`client_ca`): only clients with a certificate
//! from the configured CA get in.

use std::time::Duration;

use e2e_support::{Ca, CertKey, Proxy, ProxyConfig, TlsClient, WAIT};

use crate::umproxy;

fn mtls_proxy(ca: &Ca) -> Proxy {
    let cert = ca.server_cert(&["127.0.0.1", "localhost"]);
    Proxy::start(umproxy(), ProxyConfig::new().with_tls(&cert.cert_path, &cert.key_path, Some(&ca.pem_path)))
}

/// Connect with `client_cert` and send OPTIONS to the proxy itself; the
/// status of the answer, or the error that stopped it.
async fn options_with(proxy: &Proxy, ca: &Ca, client_cert: Option<&CertKey>) -> Result<u16, String> {
    let mut client = TlsClient::connect(proxy.tls_addr(), "127.0.0.1", ca, client_cert)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let options = client.request("OPTIONS", &format!("sip:{};transport=tls", proxy.tls_addr()));
    // With TLS 1.3 the server checks the client certificate after the
    // client considers the handshake done: a refusal shows up here.
    client.send(&options).await.map_err(|e| format!("send: {e}"))?;
    match client.recv_until_final(WAIT).await {
        Ok(r) => r.last().and_then(|m| m.status()).ok_or_else(|| "no status".to_owned()),
        Err(e) => Err(format!("recv: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listener_accepts_trusted_client_certificate() {
    let ca = Ca::new("e2e trusted CA");
    let proxy = mtls_proxy(&ca);
    let client = ca.client_cert(&["client.example.test"]);
    let status = options_with(&proxy, &ca, Some(&client)).await;
    assert_eq!(status, Ok(200), "proxy log:\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listener_refuses_untrusted_or_missing_client_certificate() {
    let ca = Ca::new("e2e trusted CA");
    let rogue = Ca::new("e2e rogue CA");
    let proxy = mtls_proxy(&ca);
    let untrusted = rogue.client_cert(&["client.example.test"]);
    for (what, cert) in [("untrusted certificate", Some(&untrusted)), ("no certificate", None)] {
        let outcome = tokio::time::timeout(WAIT + Duration::from_secs(2), options_with(&proxy, &ca, cert))
            .await
            .unwrap_or_else(|_| panic!("{what}: no verdict in time"));
        let Err(e) = outcome else { panic!("{what}: a client was served: {outcome:?}") };
        // Refused by an alert or a close, not merely ignored.
        assert!(!e.contains("in time"), "{what}: the proxy went silent instead of refusing: {e}");
    }
    // The proxy is still serving trusted clients afterwards.
    let trusted = ca.client_cert(&["client.example.test"]);
    assert_eq!(options_with(&proxy, &ca, Some(&trusted)).await, Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listener_refuses_an_expired_client_certificate_and_counts_why() {
    let ca = Ca::new("e2e trusted CA");
    let proxy = mtls_proxy(&ca);
    let expired = ca.expired_client_cert(&["client.example.test"]);
    let outcome = tokio::time::timeout(WAIT + Duration::from_secs(2), options_with(&proxy, &ca, Some(&expired)))
        .await
        .unwrap_or_else(|_| panic!("no verdict in time"));
    assert!(outcome.is_err(), "an expired certificate was served: {outcome:?}");
    let series = r#"umproxy_transport_tls_handshake_failures_total{direction="inbound",reason="expired"}"#;
    let counted = e2e_support::poll_until(WAIT, || (proxy.metric(series) >= 1.0).then_some(()));
    assert!(counted.is_some(), "not counted as expired:\n{}", proxy.metrics());
    let log = proxy.log();
    let line = log.lines().find(|l| l.contains("TLS handshake failed") && l.contains("expired"));
    assert!(line.is_some_and(|l| l.contains("peer=127.0.0.1:")), "no line naming the peer:\n{log}");
}
