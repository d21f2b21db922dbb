//! A real softphone: Debian's baresip, headless, registering over TLS with
//! digest authentication and calling through umproxy (finding 7, item 10).

use std::time::Duration;

use e2e_support::{require_tool, Baresip, Ca, Proxy, ProxyConfig, WAIT};

use crate::umproxy;

const DOMAIN: &str = "example.test";
/// Registration, call set-up and teardown on loopback.
const CALL_WAIT: Duration = Duration::from_secs(15);

/// A proxy with a TLS listener, the users' digest hashes in a directory
/// file, and `auth_extra` in `[auth]` (empty: the default).
fn proxy_for(users: &[(&str, &str)], auth_extra: &str) -> (Proxy, Ca, tempfile::TempDir) {
    let ca = Ca::new("baresip-test");
    let cert = ca.server_cert(&["127.0.0.1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut directory = String::new();
    for (user, password) in users {
        let h = umproxy::location::auth::hash_password(user, DOMAIN, password);
        directory.push_str(&format!(
            "[[user]]\nsip_address = \"sip:{user}@{DOMAIN}\"\nha1 = {{ md5 = \"{}\", sha256 = \"{}\" }}\n\n",
            h.md5.unwrap_or_default(),
            h.sha256.unwrap_or_default()
        ));
    }
    let file = dir.path().join("directory.toml");
    std::fs::write(&file, directory).expect("write directory");
    let config = ProxyConfig::new()
        .with_tls(&cert.cert_path, &cert.key_path, None)
        .extra(&format!("[directory]\nfile = \"{}\"\n\n[auth]\n{auth_extra}\n", file.display()));
    // The certificate files live as long as the CA's directory.
    (Proxy::start(umproxy(), config), ca, dir)
}

/// Finding 7: with the default `[auth]`, baresip 1.0 registers (MD5); with
/// SHA-256 offered first (the opt-in), Debian 12's baresip 1.0 takes the
/// first challenge, cannot do SHA-256 and gives up, as the README says.
#[test]
fn baresip_registers_with_the_default_auth_and_not_with_sha256_first() {
    if !require_tool("baresip") {
        return;
    }
    let (proxy, ca, _dir) = proxy_for(&[("alice", "wonderland")], "");
    let alice = Baresip::start("alice", DOMAIN, "wonderland", proxy.tls_addr(), &ca.pem_path);
    assert!(
        alice.wait_log("200 OK", CALL_WAIT),
        "baresip did not register with the default [auth]:\n{}\nproxy:\n{}",
        alice.log(),
        proxy.log()
    );
    let (status, body) = proxy.admin_get("/api/registrations/sip:alice@example.test").expect("lookup");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"contact\""), "{body}");
    drop(alice);

    let (proxy, ca, _dir) = proxy_for(&[("alice", "wonderland")], "algorithms = [\"SHA-256\", \"MD5\"]");
    let alice = Baresip::start("alice", DOMAIN, "wonderland", proxy.tls_addr(), &ca.pem_path);
    let answered = e2e_support::poll_until(CALL_WAIT, || {
        let log = alice.log();
        (log.contains("200 OK") || log.contains("Register:")).then_some(log)
    })
    .unwrap_or_else(|| panic!("baresip neither registered nor failed:\n{}", alice.log()));
    if answered.contains("baresip v1.0.") {
        assert!(answered.contains("Function not implemented"), "baresip 1.0 and SHA-256 first:\n{answered}");
        let (status, _) = proxy.admin_get("/api/registrations/sip:alice@example.test").expect("lookup");
        assert_eq!(status, 404, "no binding without a working digest");
    } else {
        // A baresip that speaks SHA-256 registers with it.
        assert!(answered.contains("200 OK"), "{answered}");
    }
}

/// Item 10: two baresip over TLS with digest authentication; one calls the
/// other through umproxy, the callee answers, the caller hangs up.
#[test]
fn two_baresip_over_tls_call_each_other_through_umproxy() {
    if !require_tool("baresip") {
        return;
    }
    let (proxy, ca, _dir) = proxy_for(&[("alice", "wonderland"), ("bob", "builder")], "");
    let mut alice = Baresip::start("alice", DOMAIN, "wonderland", proxy.tls_addr(), &ca.pem_path);
    let mut bob = Baresip::start("bob", DOMAIN, "builder", proxy.tls_addr(), &ca.pem_path);
    for ua in [&alice, &bob] {
        assert!(
            ua.wait_log("200 OK", CALL_WAIT),
            "{} did not register:\n{}\nproxy:\n{}",
            ua.aor,
            ua.log(),
            proxy.log()
        );
    }
    // Both phones are TLS peers of the proxy (their connections carry the calls).
    let (status, tls) = proxy.admin_get("/api/tls").expect("GET /api/tls");
    assert_eq!(status, 200, "{tls}");
    assert_eq!(tls.matches("\"remote\"").count(), 2, "{tls}");
    alice.attach();
    bob.attach();
    alice.command("dial", "sip:bob@example.test");
    let incoming = bob.wait_event("CALL_INCOMING", CALL_WAIT);
    assert!(incoming.is_some(), "bob was not called: {:?}\nalice:\n{}\nproxy:\n{}", bob.seen, alice.log(), proxy.log());
    bob.command("accept", "");
    for ua in [&mut alice, &mut bob] {
        let up = ua.wait_event("CALL_ESTABLISHED", CALL_WAIT);
        assert!(up.is_some(), "{}: no CALL_ESTABLISHED: {:?}\nproxy:\n{}", ua.aor, ua.seen, proxy.log());
    }
    assert!(proxy.metric("umproxy_dialogs_active") >= 1.0, "the call is counted in progress");
    alice.command("hangup", "");
    for ua in [&mut alice, &mut bob] {
        let closed = ua.wait_event("CALL_CLOSED", CALL_WAIT);
        assert!(closed.is_some(), "{}: no CALL_CLOSED: {:?}", ua.aor, ua.seen);
    }
    // The BYE went through the proxy and was answered.
    let bye_ok = r#"umproxy_responses_total{class="2xx",direction="out",method="BYE"}"#;
    assert!(
        e2e_support::poll_until(WAIT, || (proxy.metric(bye_ok) >= 1.0).then_some(())).is_some(),
        "{}",
        proxy.metrics()
    );
    assert_eq!(proxy.metric("umproxy_dialogs_active"), 0.0, "the call ended");
    let listener = format!(r#"umproxy_transport_tls_handshakes_total{{listener="{}",result="ok"}}"#, proxy.tls_addr());
    assert!(proxy.metric(&listener) >= 2.0, "handshakes by listener:\n{}", proxy.metrics());
}
