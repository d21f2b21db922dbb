//! The LDAP backend against a real OpenLDAP `slapd` on loopback, configured
//! by the test (cn=config LDIF, the schema fixture, the directory LDIF).

use super::{load, LdapSettings};
use crate::exum::directory::LoadOptions;
use crate::exum::error::DirectoryError;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCHEMA: &str = include_str!("../../tests/fixtures/exum/ldap/umproxy-schema.ldif");
const ENTRIES: &str = include_str!("../../tests/fixtures/exum/ldap/directory.ldif");
const TOPOLOGY: &str = include_str!("../../tests/fixtures/exum/ldap/topology.toml");
/// Where Debian's `slapd` package puts things; each can be overridden by
/// the environment variable named beside it (other distributions).
const SLAPD: (&str, &str) = ("UMPROXY_TEST_SLAPD", "/usr/sbin/slapd");
const SLAPADD: (&str, &str) = ("UMPROXY_TEST_SLAPADD", "/usr/sbin/slapadd");
const SCHEMA_DIR: (&str, &str) = ("UMPROXY_TEST_LDAP_SCHEMA_DIR", "/etc/ldap/schema");
const MODULE_DIR: (&str, &str) = ("UMPROXY_TEST_LDAP_MODULE_DIR", "/usr/lib/ldap");

fn setting((var, default): (&str, &str)) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}
const BASE: &str = "dc=contoso,dc=test";

/// A slapd child process; killed (by its own pid) and its files removed on drop.
struct Slapd {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn start_slapd(tag: &str, entries: &str) -> Option<Slapd> {
    let (slapd_bin, slapadd) = (setting(SLAPD), setting(SLAPADD));
    let (schema_dir, module_dir) = (setting(SCHEMA_DIR), setting(MODULE_DIR));
    if !Path::new(&slapd_bin).exists() {
        // Under CI the real server is required: a skipped test would hide
        // a missing install step.
        assert!(
            std::env::var_os("CI").is_none(),
            "{slapd_bin} is not installed (Debian package slapd); CI must install it"
        );
        eprintln!("SKIPPED: {slapd_bin} is not installed (Debian package slapd; or set {})", SLAPD.0);
        return None;
    }
    let dir = std::env::temp_dir().join(format!("umproxy-exum-slapd-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (conf, data) = (dir.join("slapd.d"), dir.join("data"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let config = format!(
        "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n\n\
         dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
         olcModulePath: {module_dir}\nolcModuleLoad: back_mdb\n\n\
         dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
         include: file://{schema_dir}/core.ldif\n\n\
         include: file://{schema_dir}/cosine.ldif\n\n\
         include: file://{schema_dir}/inetorgperson.ldif\n\n\
         {SCHEMA}\n\
         dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\n\
         olcDatabase: {{1}}mdb\nolcDbDirectory: {}\nolcSuffix: {BASE}\nolcRootDN: cn=admin,{BASE}\n\
         olcRootPW: secret\nolcDbMaxSize: 16777216\n",
        data.display()
    );
    std::fs::write(dir.join("config.ldif"), config).unwrap();
    std::fs::write(dir.join("entries.ldif"), entries).unwrap();
    run(Command::new(&slapadd).arg("-n0").arg("-F").arg(&conf).arg("-l").arg(dir.join("config.ldif")));
    run(Command::new(&slapadd).arg("-F").arg(&conf).arg("-b").arg(BASE).arg("-l").arg(dir.join("entries.ldif")));
    // A free port: bind 0, read it, release it for slapd.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ldap://127.0.0.1:{port}");
    // `-d 0` keeps slapd in the foreground, so the child is slapd itself.
    let child = Command::new(&slapd_bin)
        .arg("-d")
        .arg("0")
        .arg("-F")
        .arg(&conf)
        .arg("-h")
        .arg(format!("{url}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let slapd = Slapd { child, dir, url };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "slapd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(slapd)
}

fn settings(url: &str, password: &str) -> LdapSettings {
    LdapSettings {
        url: url.to_owned(),
        bind_dn: Some(format!("cn=admin,{BASE}")),
        bind_password: Some(password.to_owned()),
        base_dn: BASE.to_owned(),
        timeout: Duration::from_secs(5),
        // Small pages so that paging is exercised.
        page_size: 3,
    }
}

fn opts() -> LoadOptions {
    LoadOptions { has_tls_listener: true, domains: vec!["contoso.test".to_owned()] }
}

#[tokio::test]
async fn ldap_directory_reproduces_the_reference_decisions() {
    let Some(slapd) = start_slapd("ok", ENTRIES) else { return };
    let dir = match load(&settings(&slapd.url, "secret"), TOPOLOGY, "topology.toml", &opts()).await {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    // Disabled accounts (msRTCSIP-UserEnabled=FALSE) are not loaded.
    assert_eq!(dir.users().len(), 8);
    assert!(dir.user("mallory", "contoso.test").is_none());
    assert_eq!(dir.contacts().len(), 2);
    crate::exum::tests::assert_reference_decisions(&dir);
}

#[tokio::test]
async fn ldap_errors_name_the_source_object_and_attribute() {
    let bad = ENTRIES
        .replace(
            "proxyAddresses: EUM:2006;phone-context=dp-redmond",
            "proxyAddresses: EUM:2006;phone-context=dp-nowhere",
        )
        .replace("umproxyRingTimeS: 20", "umproxyRingTimeS: twenty")
        .replace(
            "msExchUCVoiceMailSettings: CsHostedVoiceMail=1\numproxyHostedVoicemailPolicy: tag:tenant-a",
            "msExchUCVoiceMailSettings: CsHostedVoiceMail=1\numproxyHostedVoicemailPolicy: tag:tenant-x",
        );
    let Some(slapd) = start_slapd("bad", &bad) else { return };
    let err = load(&settings(&slapd.url, "secret"), TOPOLOGY, "topology.toml", &opts()).await.unwrap_err();
    let text = err.to_string();
    let source = format!("topology.toml + {}", slapd.url);
    for expected in [
        format!("{source}: user[sip:grace@contoso.test].um_dial_plan: no dial plan \"dp-nowhere\""),
        format!("{source}: user[sip:alice@contoso.test].umproxyRingTimeS: \"twenty\" is not a number"),
        format!("{source}: user[sip:bob@contoso.test].hosted_voicemail_policy: no policy \"tag:tenant-x\""),
    ] {
        assert!(text.lines().any(|l| l == expected), "missing {expected:?} in:\n{text}");
    }
    // A wrong password is an LDAP bind error naming the server.
    match load(&settings(&slapd.url, "wrong"), TOPOLOGY, "topology.toml", &opts()).await {
        Err(DirectoryError::Ldap { url, operation: "bind", .. }) => assert_eq!(url, slapd.url),
        other => panic!("expected a bind error, got {other:?}"),
    }
}
