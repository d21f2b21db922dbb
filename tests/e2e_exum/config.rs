//! Configuration checks at load, through the binary's `check-config`
//! (EXUM.md behaviours 2, 3 and 9): a secured dial plan needs a TLS
//! listener; a hosted user needs a policy with a destination.

use std::time::Duration;

use e2e_support::{run_cli, ProxyConfig};

use crate::fixture::{dead_addr, directory_toml, Peers, DOMAIN};
use crate::umproxy;

/// Write `umproxy.toml` (no TLS listener unless `tls`) and `directory.toml`
/// to a tempdir and run `umproxy check-config`: (success, stderr+stdout).
fn check(directory: &str, tls: Option<&crate::fixture::Pki>) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_file = dir.path().join("directory.toml");
    std::fs::write(&dir_file, directory).expect("write directory");
    let mut config = ProxyConfig::new();
    if let Some(pki) = tls {
        config = config.with_tls(&pki.proxy_server.cert_path, &pki.proxy_server.key_path, None);
    }
    config.domains = vec![DOMAIN.into()];
    let config = config.extra(&format!("[directory]\nfile = {:?}\n", dir_file.display().to_string()));
    let file = dir.path().join("umproxy.toml");
    std::fs::write(&file, config.to_toml()).expect("write config");
    let out = run_cli(umproxy(), &["check-config".as_ref(), file.as_os_str()], Duration::from_secs(20));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    (out.status.success(), text)
}

fn peers() -> Peers {
    Peers { um: vec![("um1.contoso.test".into(), dead_addr())], exap: dead_addr(), sfb: dead_addr() }
}

#[test]
fn secured_dial_plan_without_a_tls_listener_is_refused_at_load() {
    let pki = crate::fixture::Pki::new();
    let (ok, text) = check(&directory_toml(&peers(), None), Some(&pki));
    assert!(ok, "the mixed directory with a TLS listener is valid:\n{text}");
    let (ok, text) = check(&directory_toml(&peers(), None), None);
    assert!(!ok, "a sip_secured dial plan without a TLS listener was accepted:\n{text}");
    assert!(text.contains("dp-redmond") || text.contains("security"), "the error names neither plan nor key:\n{text}");
}

#[test]
fn hosted_user_whose_policy_has_no_destination_is_refused_at_load() {
    let pki = crate::fixture::Pki::new();
    // tenant-a loses its destination: bob (granted tag:tenant-a) cannot
    // reach hosted voice mail.
    let broken = directory_toml(&peers(), None).replacen(
        "identity = \"tag:tenant-a\"\ndestination = \"exap.um.example.net\"\n",
        "identity = \"tag:tenant-a\"\n",
        1,
    );
    assert_ne!(broken, directory_toml(&peers(), None), "fixture text changed");
    let (ok, text) = check(&broken, Some(&pki));
    assert!(!ok, "a hosted user without a destination was accepted:\n{text}");
    assert!(text.contains("directory.toml"), "the error does not name the file:\n{text}");
    assert!(text.contains("tenant-a") || text.contains("bob"), "the error names neither policy nor user:\n{text}");
}
