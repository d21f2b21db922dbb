//! The example deployments under `deploy/` are valid: each configuration
//! and the directory it names pass the checks `umproxy check-config` runs,
//! with certificates generated here in place of the operator's.

use std::path::{Path, PathBuf};

use crate::config::{Config, DirectoryBackend};
use crate::exum::{Directory, LoadOptions};
use crate::transport::Transport;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Copy one example to a temp dir and give it the certificate files its
/// configuration names.
fn staged(mode: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(deploy_dir().join(mode)).expect("example exists") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).expect("copy");
    }
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).expect("certs dir");
    let me = rcgen::generate_simple_self_signed(vec!["sip.contoso.test".to_string()]).expect("cert");
    std::fs::write(certs.join("umproxy.pem"), me.cert.pem()).expect("write");
    std::fs::write(certs.join("umproxy.key"), me.signing_key.serialize_pem()).expect("write");
    for ca in ["ca.pem", "provider-ca.pem"] {
        let c = rcgen::generate_simple_self_signed(vec![format!("{ca}.test")]).expect("cert");
        std::fs::write(certs.join(ca), c.cert.pem()).expect("write");
    }
    tmp
}

fn check(mode: &str) -> Result<(Config, Directory), String> {
    let tmp = staged(mode);
    let config = Config::load(tmp.path().join("umproxy.toml")).map_err(|e| e.to_string())?;
    assert_eq!(config.directory.backend, DirectoryBackend::File);
    let opts = LoadOptions {
        has_tls_listener: config.listen.iter().any(|l| l.transport == Transport::Tls),
        domains: config.proxy.domains.clone(),
    };
    let file = config.directory.file.clone().ok_or("no directory file")?;
    let dir = Directory::load(&file, &opts).map_err(|e| e.to_string())?;
    Ok((config, dir))
}

#[test]
fn deploy_examples_pass_check_config() {
    for mode in ["edge", "on-premises", "cross-premises", "mixed"] {
        if let Err(e) = check(mode) {
            panic!("deploy/{mode}: {e}");
        }
    }
}

#[test]
fn the_mixed_example_really_mixes_modes() {
    let (_, dir) = check("mixed").expect("valid");
    let mode = |user: &str| {
        let u = dir.user(user, "contoso.test").expect("user exists");
        crate::exum::voicemail_target(&dir, u).map(|t| t.mode())
    };
    assert_eq!(mode("alice"), Some("on_prem"));
    assert_eq!(mode("dana"), Some("hosted"));
    assert_eq!(mode("erin"), Some("hosted"), "hosted wins over an on-premises binding");
}
