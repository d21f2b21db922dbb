//! The LDAP directory backend for the scenario suite: the fixture's
//! `directory.toml` split into LDAP entries (its `[[user]]` and
//! `[[exum_contact]]` tables, mapped as `crates/proxy/src/exum/ldap.rs`
//! documents) and the topology file (everything else), served by a real
//! OpenLDAP `slapd` on a free loopback port.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The project's LDAP schema (the LDAP backend's own test fixture).
const SCHEMA: &str = include_str!("../../crates/proxy/tests/fixtures/exum/ldap/umproxy-schema.ldif");
/// Debian's locations of the standard schemas and slapd's modules; each can
/// be overridden by the environment variable named beside it.
const SCHEMA_DIR: (&str, &str) = ("UMPROXY_TEST_LDAP_SCHEMA_DIR", "/etc/ldap/schema");
const MODULE_DIR: (&str, &str) = ("UMPROXY_TEST_LDAP_MODULE_DIR", "/usr/lib/ldap");
pub const BASE_DN: &str = "dc=contoso,dc=test";
pub const BIND_DN: &str = "cn=admin,dc=contoso,dc=test";
pub const BIND_PASSWORD: &str = "secret";

fn setting((var, default): (&str, &str)) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// A running slapd; killed (by its own pid) on drop, its files in a tempdir.
pub struct Slapd {
    child: Child,
    pub url: String,
    _dir: TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Slapd {
    /// Start slapd serving `entries` (LDIF) under [`BASE_DN`], with root
    /// [`BIND_DN`] / [`BIND_PASSWORD`]. `None` (skip) when slapd is not
    /// installed; under `CI` that panics instead.
    pub fn start(entries: &str) -> Option<Slapd> {
        if !e2e_support::require_tool_sbin("slapd") || !e2e_support::require_tool_sbin("slapadd") {
            return None;
        }
        let (schema_dir, module_dir) = (setting(SCHEMA_DIR), setting(MODULE_DIR));
        let dir = tempfile::tempdir().expect("tempdir");
        let (conf, data) = (dir.path().join("slapd.d"), dir.path().join("data"));
        std::fs::create_dir_all(&conf).expect("slapd.d");
        std::fs::create_dir_all(&data).expect("data");
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
             olcDatabase: {{1}}mdb\nolcDbDirectory: {data}\nolcSuffix: {BASE_DN}\nolcRootDN: {BIND_DN}\n\
             olcRootPW: {BIND_PASSWORD}\nolcDbMaxSize: 16777216\n",
            data = data.display()
        );
        let (config_path, entries_path) = (dir.path().join("config.ldif"), dir.path().join("entries.ldif"));
        std::fs::write(&config_path, config).expect("write config.ldif");
        std::fs::write(&entries_path, entries).expect("write entries.ldif");
        let slapadd = e2e_support::tool_path("slapadd");
        run(Command::new(&slapadd).arg("-n0").arg("-F").arg(&conf).arg("-l").arg(&config_path));
        run(Command::new(&slapadd).arg("-F").arg(&conf).arg("-b").arg(BASE_DN).arg("-l").arg(&entries_path));
        let port = e2e_support::free_port();
        let url = format!("ldap://127.0.0.1:{port}");
        // `-d 0` keeps slapd in the foreground: the child is slapd itself.
        let child = Command::new(e2e_support::tool_path("slapd"))
            .args(["-d", "0", "-F"])
            .arg(&conf)
            .arg("-h")
            .arg(format!("{url}/"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn slapd");
        let slapd = Slapd { child, url, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(slapd)
    }
}

/// `directory.toml` split for the LDAP backend: (LDIF of its users and
/// contacts, the topology TOML of everything else). Handles the fixture's
/// own TOML: `[[table]]` headers and one `key = value` per line, values
/// being strings, numbers, booleans or arrays of strings.
pub fn split_directory(directory: &str) -> (String, String) {
    let mut ldif = format!(
        "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: contoso\no: Contoso\n\n\
         dn: ou=users,{BASE_DN}\nobjectClass: organizationalUnit\nou: users\n"
    );
    let mut topology = String::new();
    // The current table: its name (None before the first header) and lines.
    let mut tables: Vec<(Option<String>, Vec<String>)> = vec![(None, Vec::new())];
    for line in directory.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
            tables.push((Some(name.to_owned()), vec![line.to_owned()]));
        } else if let Some((_, lines)) = tables.last_mut() {
            lines.push(line.to_owned());
        }
    }
    for (name, lines) in tables {
        match name.as_deref() {
            Some(kind @ ("user" | "exum_contact")) => ldif.push_str(&entry(kind, &lines[1..])),
            _ => {
                for l in lines {
                    topology.push_str(&l);
                    topology.push('\n');
                }
            }
        }
    }
    (ldif, topology)
}

/// A TOML value as LDAP values: arrays give one each, booleans TRUE/FALSE.
fn ldap_values(value: &str) -> Vec<String> {
    let unquote = |v: &str| v.trim().trim_matches('"').to_owned();
    match value.trim() {
        "true" => vec!["TRUE".into()],
        "false" => vec!["FALSE".into()],
        v if v.starts_with('[') => v
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(unquote)
            .collect(),
        v => vec![unquote(v)],
    }
}

/// One `[[user]]` or `[[exum_contact]]` table as an LDIF entry.
fn entry(kind: &str, lines: &[String]) -> String {
    let fields: Vec<(String, Vec<String>)> =
        lines.iter().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_owned(), ldap_values(v))).collect();
    let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let sip = get("sip_address").into_iter().next().expect("sip_address");
    let cn = sip.trim_start_matches("sip:").split('@').next().unwrap_or_default().to_owned();
    let class = if kind == "user" { "umproxyUser" } else { "umproxyExumContact" };
    let mut e = format!(
        "\ndn: cn={cn},ou=users,{BASE_DN}\nobjectClass: inetOrgPerson\nobjectClass: {class}\ncn: {cn}\nsn: {cn}\n"
    );
    if kind == "user" {
        e.push_str("msRTCSIP-UserEnabled: TRUE\n");
        if let (Some(ext), Some(dp)) = (get("um_extension").first(), get("um_dial_plan").first()) {
            e.push_str(&format!("proxyAddresses: EUM:{ext};phone-context={dp}\n"));
        }
    }
    for (key, values) in &fields {
        if kind == "user" && key == "ha1" {
            // An inline table, `{ md5 = "…" }`: one attribute per algorithm.
            let table = values.join(",");
            for pair in table.trim_matches(|c| c == '{' || c == '}' || c == ' ').split(',') {
                let Some((alg, hex)) = pair.split_once('=') else { continue };
                let attr = match alg.trim() {
                    "md5" => "umproxyHa1Md5",
                    "sha256" => "umproxyHa1Sha256",
                    other => panic!("no LDAP mapping for user.ha1.{other} in this fixture"),
                };
                e.push_str(&format!("{attr}: {}\n", hex.trim().trim_matches('"')));
            }
            continue;
        }
        let attr = match (kind, key.as_str()) {
            (_, "sip_address") => "msRTCSIP-PrimaryUserAddress",
            (_, "line_uri") => "msRTCSIP-Line",
            (_, "hosted_voicemail_policy") => "umproxyHostedVoicemailPolicy",
            ("user", "site") => "umproxySite",
            ("user", "home") => "umproxyHome",
            ("user", "voicemail_settings") => "msExchUCVoiceMailSettings",
            ("user", "ring_time_s") => "umproxyRingTimeS",
            ("user", "forward_to_voicemail") => "umproxyForwardToVoicemail",
            ("user", "voicemail_escape_ms") => "umproxyVoicemailEscapeMs",
            ("user", "um_dial_plan" | "um_extension") => continue,
            ("exum_contact", "kind") => "umproxyExumKind",
            ("exum_contact", "um_dial_plan") => "umproxyUmDialPlan",
            _ => panic!("no LDAP mapping for {kind}.{key} in this fixture"),
        };
        for v in values {
            e.push_str(&format!("{attr}: {v}\n"));
        }
    }
    e
}

/// The `[directory]` section for the LDAP backend: `topology` is the
/// topology file; the bind password is written beside it.
pub fn directory_config(slapd: &Slapd, topology: &Path) -> String {
    let password = topology.with_file_name("ldap.pw");
    std::fs::write(&password, BIND_PASSWORD).expect("write ldap.pw");
    format!(
        "[directory]\nbackend = \"ldap\"\nfile = {file:?}\n\n[directory.ldap]\nurl = {url:?}\nbase_dn = {BASE_DN:?}\nbind_dn = {BIND_DN:?}\nbind_password_file = {pw:?}\n",
        file = topology.display().to_string(),
        url = slapd.url,
        pw = password.display().to_string(),
    )
}

#[test]
fn the_fixture_directory_splits_into_entries_and_a_topology_without_users() {
    let peers = crate::fixture::Peers {
        um: vec![("um1.contoso.test".into(), crate::fixture::dead_addr())],
        exap: crate::fixture::dead_addr(),
        sfb: crate::fixture::dead_addr(),
    };
    let (ldif, topology) = split_directory(&crate::fixture::directory_toml(&peers, None));
    assert!(!topology.contains("[[user]]") && !topology.contains("[[exum_contact]]"), "{topology}");
    for table in ["[[hosted_voicemail_policy]]", "[[um_dial_plan]]", "[[hosting_provider]]"] {
        assert!(topology.contains(table), "{table} missing from the topology:\n{topology}");
    }
    assert_eq!(ldif.matches("objectClass: umproxyUser\n").count(), 8, "{ldif}");
    assert_eq!(ldif.matches("objectClass: umproxyExumContact\n").count(), 2, "{ldif}");
    for line in [
        "proxyAddresses: EUM:2001;phone-context=dp-redmond\n",
        "umproxyRingTimeS: 2\n",
        "msExchUCVoiceMailSettings: CsHostedVoiceMail=1\n",
        "umproxyForwardToVoicemail: TRUE\n",
        "umproxyHome: sfb-online\n",
        "umproxyHa1Md5: ",
        "umproxyExumKind: subscriber_access\n",
        "umproxyUmDialPlan: dp-redmond\n",
    ] {
        assert!(ldif.contains(line), "{line:?} missing from:\n{ldif}");
    }
}
