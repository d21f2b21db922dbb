//! TLS end to end: TLS user agents on both sides of umproxy, and a SIPp
//! caller over UDP reaching a TLS callee (double Record-Route).

use e2e_support::{Answer, Ca, Proxy, ProxyConfig, Sipp, TlsClient, TlsUas, WAIT};

use crate::{have_sipp, scenario, umproxy};

/// A proxy with a TLS listener whose certificate `ca` signed, trusting
/// `ca` for outbound TLS, routing everything to `next_hop`.
fn tls_proxy(ca: &Ca, next_hop: &str) -> Proxy {
    let cert = ca.server_cert(&["127.0.0.1", "localhost"]);
    let config = ProxyConfig::new()
        .with_tls(&cert.cert_path, &cert.key_path, None)
        .route("*", &[next_hop])
        .extra(&format!("[tls_client]\nca = \"{}\"\n", ca.pem_path.display()));
    Proxy::start(umproxy(), config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_from_tls_caller_to_tls_callee_completes() {
    let ca = Ca::new("e2e test CA");
    let uas = TlsUas::start(&ca.server_cert(&["127.0.0.1"]), None, Answer::Accept).await.expect("TLS UAS");
    let proxy = tls_proxy(&ca, &format!("sip:127.0.0.1:{};transport=tls", uas.addr.port()));

    let mut caller = TlsClient::connect(proxy.tls_addr(), "127.0.0.1", &ca, None).await.expect("TLS to proxy");
    let call = caller.call("sip:bob@far.test", WAIT).await.expect("call");
    let statuses: Vec<_> = call.responses.iter().filter_map(|r| r.status()).collect();
    assert_eq!(call.final_status(), Some(200), "INVITE responses {statuses:?}; log:\n{}", proxy.log());
    assert!(statuses.contains(&180), "the 180 reached the caller: {statuses:?}");
    assert_eq!(call.bye_status(), Some(200), "BYE answered; log:\n{}", proxy.log());

    let invite = uas.wait_for("INVITE", WAIT).await.expect("callee got the INVITE");
    let tls_port = proxy.tls_addr().port();
    assert_eq!(invite.header_values("Record-Route"), vec![format!("<sip:127.0.0.1:{tls_port};transport=tls;lr>")]);
    let vias = invite.header_values("Via");
    assert!(vias[0].starts_with(&format!("SIP/2.0/TLS 127.0.0.1:{tls_port};")), "proxy Via on top: {vias:?}");
    assert_eq!(vias.len(), 2, "{vias:?}");
    // The ACK and the BYE followed the route set to the callee.
    assert!(uas.wait_for("ACK", WAIT).await.is_some(), "callee got the ACK");
    assert!(uas.wait_for("BYE", WAIT).await.is_some(), "callee got the BYE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_caller_reaches_tls_callee_with_double_record_route() {
    if !have_sipp() {
        return;
    }
    let ca = Ca::new("e2e test CA");
    let uas = TlsUas::start(&ca.server_cert(&["127.0.0.1"]), None, Answer::Accept).await.expect("TLS UAS");
    let proxy = tls_proxy(&ca, &format!("sip:127.0.0.1:{};transport=tls", uas.addr.port()));

    let uac = Sipp::scenario_file(scenario("uac_rr.xml")).remote(proxy.udp_addr()).service("bob").calls(2).rate(5);
    let uac = tokio::task::spawn_blocking(move || uac.run()).await.expect("sipp thread");
    uac.assert_all_succeeded(2);

    let invite = uas.wait_for("INVITE", WAIT).await.expect("callee got the INVITE");
    let rr = invite.header_values("Record-Route");
    let (tls_port, udp_port) = (proxy.tls_addr().port(), proxy.udp_addr().port());
    // RFC 3261 §16.6 step 4 / RFC 5658: the entry facing the callee on top.
    assert_eq!(
        rr,
        vec![
            format!("<sip:127.0.0.1:{tls_port};transport=tls;lr>"),
            format!("<sip:127.0.0.1:{udp_port};transport=udp;lr>"),
        ],
        "Record-Route at the TLS callee: {invite}"
    );
    let byes = uas.received().iter().filter(|m| m.method() == Some("BYE")).count();
    assert_eq!(byes, 2, "both BYEs crossed from UDP to TLS");
}
