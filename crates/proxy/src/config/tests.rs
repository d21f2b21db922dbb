use std::path::Path;

use super::*;

/// A configuration directory with a self-signed certificate and key under
/// `certs/`.
fn dir_with_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["proxy.example.test".to_owned()]).unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/umproxy.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("certs/umproxy.key"), ck.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("certs/ca.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("certs/garbage.pem"), "not pem at all\n").unwrap();
    dir
}

const MINIMAL: &str = r#"
[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[proxy]
domains = ["example.test"]
"#;

/// Parse `MINIMAL` plus `extra` as `umproxy.toml` in `dir`.
fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    let path = dir.join("umproxy.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path)
}

/// The error text with the temporary directory replaced by `DIR`.
fn error_in(dir: &Path, text: &str) -> String {
    let path = dir.join("umproxy.toml");
    let e = parse_in(dir, text).expect_err("configuration should be rejected");
    e.to_string().replace(&path.display().to_string(), "umproxy.toml")
}

fn error_of(text: &str) -> String {
    Config::from_str_named(text, "umproxy.toml").expect_err("configuration should be rejected").to_string()
}

#[test]
fn builtin_example_parses() {
    let c = Config::example().unwrap();
    assert_eq!(c.source, EXAMPLE_NAME);
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.listen[0].transport, Transport::Udp);
    assert_eq!(c.listen[1].transport, Transport::Tcp);
    assert!(c.listen.iter().all(|l| l.tls.is_none() && l.address.ip().is_loopback()));
    assert_eq!(c.proxy.domains, vec!["example.test".to_owned()]);
    assert!(c.proxy.record_route);
    assert_eq!(c.proxy.max_forwards, 70);
    assert_eq!(c.admin.map(|a| a.address.to_string()).as_deref(), Some("127.0.0.1:9090"));
    assert_eq!(
        c.routes,
        vec![Route {
            matches: RouteMatch::Any,
            next_hop: vec!["sip:127.0.0.1:5070;transport=udp".into()],
            fork: Fork::Parallel
        }]
    );
    assert_eq!(c.registrar.store, StoreKind::Embedded);
    assert_eq!(c.exum, ExumConfig::default());
    assert_eq!(c.limits, LimitsConfig::default());
    assert_eq!(c.limits.sip_limits(), sip_message::Limits::default());
    assert_eq!(c.timers, TimersConfig::default());
    assert_eq!(c.log, LogConfig::default());
    assert!(c.dns.nameservers.is_empty());
}

#[test]
fn load_or_example_picks_the_file_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("umproxy.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    assert_eq!(Config::load_or_example(Some(&path)).unwrap().source, path.display().to_string());
    assert_eq!(Config::load_or_example(None).unwrap().source, EXAMPLE_NAME);
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_str_named(MINIMAL, "umproxy.toml").unwrap();
    assert!(c.admin.is_none());
    assert!(c.routes.is_empty());
    assert_eq!(c.registrar.min_expires, 60);
    assert_eq!(c.registrar.default_expires, 3600);
    assert_eq!(c.registrar.max_expires, 7200);
    assert_eq!(c.registrar.flush_interval, Duration::from_millis(100));
    assert_eq!(c.registrar.max_aors, 100_000);
    assert_eq!(c.directory.backend, DirectoryBackend::File);
    assert_eq!(c.timers.t1(), Duration::from_millis(500));
    assert_eq!(c.dns.timeout, Duration::from_millis(2000));
}

#[test]
fn full_design_shape_parses_and_resolves_relative_paths() {
    let dir = dir_with_certs();
    std::fs::write(dir.path().join("directory.toml"), "").unwrap();
    std::fs::write(dir.path().join("ldap.pw"), "secret\n").unwrap();
    let text = r#"
[[listen]]
transport = "udp"
address = "127.0.0.1:5060"
[[listen]]
transport = "tcp"
address = "127.0.0.1:5060"
advertise = "sip.example.test:5060"
[[listen]]
transport = "tls"
address = "127.0.0.1:5061"
certificate = "certs/umproxy.pem"
private_key = "certs/umproxy.key"
client_ca = "certs/ca.pem"

[proxy]
domains = ["Contoso.test", "fabrikam.test"]
trusted_peers = ["127.0.0.1/32", "10.0.0.0/8", "::1"]
record_route = false
max_forwards = 20

[admin]
address = "127.0.0.1:9090"

[[route]]
match = "+4930"
next_hop = "sips:gw.example.net"
[[route]]
match = "example.net"
next_hop = "sip:10.0.0.1:5070;transport=tcp"
[[route]]
match = "*"
next_hop = "sip:127.0.0.1:5070;transport=udp"

[registrar]
store = "embedded"
path = "state/registrations.db"
min_expires = 30
default_expires = 600
max_expires = 3600
max_aors = 5000

[directory]
backend = "ldap"
file = "directory.toml"
[directory.ldap]
url = "ldap://127.0.0.1:3389"
bind_dn = "cn=umproxy,dc=contoso,dc=test"
bind_password_file = "ldap.pw"
base_dn = "dc=contoso,dc=test"
cache_ttl_s = 60

[exum]
ring_time_s = 20
um_attempt_timeout_ms = 3000

[limits]
max_message_size = 32768
idle_timeout_s = 120

[timers]
t1_ms = 250
timer_c_s = 200

[log]
format = "json"
level = "umproxy=debug,info"

[tls_client]
certificate = "certs/umproxy.pem"
private_key = "certs/umproxy.key"
ca = "certs/ca.pem"

[dns]
nameservers = ["127.0.0.1:5353", "192.0.2.53"]
timeout_ms = 500
attempts = 1
"#;
    let c = parse_in(dir.path(), text).unwrap();
    let tls = c.listen[2].tls.as_ref().unwrap();
    assert_eq!(tls.certificate, dir.path().join("certs/umproxy.pem"));
    assert_eq!(tls.private_key, dir.path().join("certs/umproxy.key"));
    assert_eq!(tls.client_ca.as_deref(), Some(dir.path().join("certs/ca.pem").as_path()));
    assert_eq!(c.listen[1].advertise.as_deref(), Some("sip.example.test:5060"));
    assert_eq!(c.proxy.domains, vec!["contoso.test".to_owned(), "fabrikam.test".to_owned()]);
    assert_eq!(c.proxy.trusted_peers.len(), 3);
    assert!(!c.proxy.record_route);
    assert_eq!(c.proxy.max_forwards, 20);
    assert_eq!(c.routes[0].matches, RouteMatch::UserPrefix("+4930".into()));
    assert_eq!(c.routes[1].matches, RouteMatch::Domain("example.net".into()));
    assert_eq!(c.registrar.path, Some(dir.path().join("state/registrations.db")));
    assert_eq!(c.registrar.max_aors, 5000);
    assert_eq!(c.directory.file, Some(dir.path().join("directory.toml")));
    let ldap = c.directory.ldap.as_ref().unwrap();
    assert_eq!(ldap.bind_password_file, Some(dir.path().join("ldap.pw")));
    assert_eq!(ldap.cache_ttl, Duration::from_secs(60));
    assert_eq!((c.exum.ring_time_s, c.exum.um_attempt_timeout_ms), (20, 3000));
    assert_eq!(c.limits.max_message_size, 32768);
    assert_eq!(c.limits.max_headers, LimitsConfig::default().max_headers);
    assert_eq!(c.limits.idle_timeout(), Duration::from_secs(120));
    assert_eq!(c.timers.t1_ms, 250);
    assert_eq!(c.timers.t2_ms, 4000);
    assert_eq!(c.log.format, LogFormat::Json);
    let tc = c.tls_client.as_ref().unwrap();
    assert_eq!(tc.ca, Some(dir.path().join("certs/ca.pem")));
    assert_eq!(c.dns.nameservers[1].to_string(), "192.0.2.53:53");
}

#[test]
fn absolute_paths_are_kept() {
    let dir = dir_with_certs();
    let cert = dir.path().join("certs/umproxy.pem");
    let key = dir.path().join("certs/umproxy.key");
    let text = format!(
        "{MINIMAL}\n[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:5061\"\ncertificate = {:?}\nprivate_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    // Parsed from another directory: absolute paths do not move.
    let c = Config::from_str_named(&text, "elsewhere/umproxy.toml").unwrap();
    assert_eq!(c.listen[1].tls.as_ref().unwrap().certificate, cert);
}

#[test]
fn toml_syntax_error_keeps_line_and_column() {
    let e = error_of("[[listen]]\ntransport = \"udp\"\naddress = 127.0.0.1:5060\n");
    assert!(e.starts_with("umproxy.toml: "), "{e}");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("column"), "{e}");
}

#[test]
fn unknown_key_is_an_error_naming_its_key_path() {
    let e = error_of(&format!("{MINIMAL}record_rout = false\n"));
    assert!(e.starts_with("umproxy.toml: proxy.record_rout: unknown key"), "{e}");
    assert!(e.contains("record_route"), "the known keys are listed: {e}");
    let e = error_of(&format!("{MINIMAL}[timers]\nt3_ms = 1\n"));
    assert!(e.starts_with("umproxy.toml: timers.t3_ms: unknown key"), "{e}");
    let e = error_of(&format!("{MINIMAL}[proxies]\n"));
    assert!(e.starts_with("umproxy.toml: proxies: unknown key"), "{e}");
    let e = error_of(&format!("{MINIMAL}[[route]]\nmatch = \"*\"\nnext_hop = \"sip:a.test\"\nnexthop = 1\n"));
    assert!(e.starts_with("umproxy.toml: route[0].nexthop: unknown key"), "{e}");
    // Syntax errors keep the parser's line and column.
    let e = error_of(&format!("{MINIMAL}[admin\n"));
    assert!(e.contains("line"), "{e}");
}

#[test]
fn missing_file_is_named() {
    let e = Config::load("does/not/exist.toml").unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().starts_with("does/not/exist.toml: cannot read: "), "{e}");
}

#[test]
fn listener_errors_name_the_key() {
    assert_eq!(
        error_of("[proxy]\ndomains = [\"a.test\"]\n"),
        "umproxy.toml: listen: no listener: add at least one [[listen]] table"
    );
    let e =
        error_of("[[listen]]\ntransport = \"sctp\"\naddress = \"127.0.0.1:5060\"\n[proxy]\ndomains = [\"a.test\"]\n");
    assert_eq!(e, "umproxy.toml: listen[0].transport: unknown transport \"sctp\" (expected udp, tcp or tls)");
    let e = error_of("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1\"\n[proxy]\ndomains = [\"a.test\"]\n");
    assert!(e.starts_with("umproxy.toml: listen[0].address: not an address with port"), "{e}");
    let e = error_of(&format!("{MINIMAL}[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n"));
    assert_eq!(e, "umproxy.toml: listen[1].address: 127.0.0.1:5060 is already used by listen[0]");
    // UDP and TCP on one port is fine; TCP and TLS is not.
    let dir = dir_with_certs();
    let text = format!(
        "{MINIMAL}[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:5060\"\n[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:5060\"\ncertificate = \"certs/umproxy.pem\"\nprivate_key = \"certs/umproxy.key\"\n"
    );
    assert_eq!(
        error_in(dir.path(), &text),
        "umproxy.toml: listen[2].address: 127.0.0.1:5060 is already used by listen[1]"
    );
    let e = error_of("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\nadvertise = \"bad host!\"\n[proxy]\ndomains = [\"a.test\"]\n");
    assert_eq!(e, "umproxy.toml: listen[0].advertise: not a host or host:port: \"bad host!\"");
}

#[test]
fn tls_listener_errors_name_the_file() {
    let dir = dir_with_certs();
    let tls = |cert: &str, key: &str, ca: Option<&str>| {
        let mut t = format!("{MINIMAL}[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:5061\"\n");
        if !cert.is_empty() {
            t += &format!("certificate = \"{cert}\"\n");
        }
        if !key.is_empty() {
            t += &format!("private_key = \"{key}\"\n");
        }
        if let Some(ca) = ca {
            t += &format!("client_ca = \"{ca}\"\n");
        }
        t
    };
    let d = dir.path();
    assert_eq!(
        error_in(d, &tls("", "certs/umproxy.key", None)),
        "umproxy.toml: listen[1].certificate: required for a tls listener"
    );
    assert_eq!(
        error_in(d, &tls("certs/umproxy.pem", "", None)),
        "umproxy.toml: listen[1].private_key: required for a tls listener"
    );
    assert_eq!(
        error_in(d, &tls("certs/x.pem", "certs/umproxy.key", None)),
        "umproxy.toml: listen[1].certificate: file not found: certs/x.pem"
    );
    assert_eq!(
        error_in(d, &tls("certs/garbage.pem", "certs/umproxy.key", None)),
        "umproxy.toml: listen[1].certificate: no PEM certificate in certs/garbage.pem"
    );
    let e = error_in(d, &tls("certs/umproxy.pem", "certs/umproxy.pem", None));
    assert!(e.starts_with("umproxy.toml: listen[1].private_key: no PEM private key in certs/umproxy.pem"), "{e}");
    assert_eq!(
        error_in(d, &tls("certs/umproxy.pem", "certs/umproxy.key", Some("certs/missing-ca.pem"))),
        "umproxy.toml: listen[1].client_ca: file not found: certs/missing-ca.pem"
    );
    assert_eq!(
        error_in(d, &tls("certs", "certs/umproxy.key", None)),
        "umproxy.toml: listen[1].certificate: not a regular file: certs"
    );
    let e = error_in(d, &format!("{MINIMAL}[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:5062\"\ncertificate = \"certs/umproxy.pem\"\n"));
    assert_eq!(e, "umproxy.toml: listen[1].certificate: only allowed on a tls listener, this one is tcp");
}

#[test]
fn proxy_errors_name_the_key() {
    let base = "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n";
    assert_eq!(error_of(base), "umproxy.toml: proxy: missing section (at least proxy.domains is required)");
    assert_eq!(
        error_of(&format!("{base}[proxy]\ndomains = []\n")),
        "umproxy.toml: proxy.domains: at least one domain is required"
    );
    assert_eq!(error_of(&format!("{base}[proxy]\ndomains = [\"\"]\n")), "umproxy.toml: proxy.domains[0]: empty domain");
    assert_eq!(
        error_of(&format!("{base}[proxy]\ndomains = [\"a.test\", \"b c\"]\n")),
        "umproxy.toml: proxy.domains[1]: not a domain name: \"b c\""
    );
    assert_eq!(
        error_of(&format!("{base}[proxy]\ndomains = [\"a.test\", \"A.test\"]\n")),
        "umproxy.toml: proxy.domains[1]: duplicate domain a.test"
    );
    assert_eq!(
        error_of(&format!("{base}[proxy]\ndomains = [\"a.test\"]\ntrusted_peers = [\"10.0.0.0/33\"]\n")),
        "umproxy.toml: proxy.trusted_peers[0]: not a CIDR or address (like 10.0.0.0/8): \"10.0.0.0/33\""
    );
    assert_eq!(
        error_of(&format!("{base}[proxy]\ndomains = [\"a.test\"]\nmax_forwards = 0\n")),
        "umproxy.toml: proxy.max_forwards: must be 1 to 255, not 0"
    );
    assert_eq!(
        error_of(&format!("{base}[proxy]\ndomains = [\"a.test\"]\nmax_forwards = 300\n")),
        "umproxy.toml: proxy.max_forwards: must be 1 to 255, not 300"
    );
}

#[test]
fn a_route_may_fork_to_several_next_hops() {
    let ok = format!(
        "{MINIMAL}[[route]]\nmatch = \"*\"\nnext_hop = [\"sip:10.0.0.1\", \"sip:10.0.0.2\"]\nfork = \"serial\"\n"
    );
    let c = Config::from_str_named(&ok, "umproxy.toml").expect("valid");
    assert_eq!(c.routes[0].next_hop.len(), 2);
    assert_eq!(c.routes[0].fork, Fork::Serial);
    let bad_mode = format!("{MINIMAL}[[route]]\nmatch = \"*\"\nnext_hop = [\"sip:10.0.0.1\"]\nfork = \"random\"\n");
    assert_eq!(
        error_of(&bad_mode),
        "umproxy.toml: route[0].fork: unknown fork mode \"random\" (expected parallel or serial)"
    );
    let bad_hop = format!("{MINIMAL}[[route]]\nmatch = \"*\"\nnext_hop = [\"sip:10.0.0.1\", \"x\"]\n");
    assert_eq!(error_of(&bad_hop), "umproxy.toml: route[0].next_hop: not a SIP URI: \"x\"");
    let empty = format!("{MINIMAL}[[route]]\nmatch = \"*\"\nnext_hop = []\n");
    assert_eq!(error_of(&empty), "umproxy.toml: route[0].next_hop: needs at least one SIP URI");
}

#[test]
fn admin_and_route_errors_name_the_key() {
    assert_eq!(
        error_of(&format!("{MINIMAL}[admin]\naddress = \"localhost:9090\"\n")),
        "umproxy.toml: admin.address: not an address with port (like 127.0.0.1:5060 or [::1]:5060): \"localhost:9090\""
    );
    let tcp = "[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:9090\"\n[proxy]\ndomains = [\"a.test\"]\n";
    assert_eq!(
        error_of(&format!("{tcp}[admin]\naddress = \"127.0.0.1:9090\"\n")),
        "umproxy.toml: admin.address: 127.0.0.1:9090 is already used by listen[0]"
    );
    let route = |m: &str, h: &str| {
        format!("{MINIMAL}[[route]]\nmatch = \"*\"\nnext_hop = \"sip:a.test\"\n[[route]]\nmatch = \"{m}\"\nnext_hop = \"{h}\"\n")
    };
    assert_eq!(
        error_of(&route("*", "127.0.0.1:5070")),
        "umproxy.toml: route[1].next_hop: not a SIP URI: \"127.0.0.1:5070\""
    );
    assert_eq!(
        error_of(&route("*", "tel:+4930123")),
        "umproxy.toml: route[1].next_hop: must be a sip: or sips: URI: \"tel:+4930123\""
    );
    assert_eq!(
        error_of(&route("*", "sip:a.test;transport=sctp")),
        "umproxy.toml: route[1].next_hop: unknown transport \"sctp\" (expected udp, tcp or tls)"
    );
    assert_eq!(
        error_of(&route("*", "sips:a.test;transport=udp")),
        "umproxy.toml: route[1].next_hop: a sips: URI cannot use transport=udp"
    );
    assert_eq!(
        error_of(&route("+49x", "sip:a.test")),
        "umproxy.toml: route[1].match: a user prefix is digits with an optional leading +: \"+49x\""
    );
    assert_eq!(
        error_of(&route("bad domain", "sip:a.test")),
        "umproxy.toml: route[1].match: not a domain name: \"bad domain\" (expected \"*\", a domain or a user prefix like \"+4930\")"
    );
}

#[test]
fn section_errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("[registrar]\nstore = \"redis\"\n", "registrar.redis_url: required with store = \"redis\""),
        (
            "[registrar]\nstore = \"redis\"\nredis_url = \"http://x\"\n",
            "registrar.redis_url: must start with redis:// or rediss://: \"http://x\"",
        ),
        ("[registrar]\nredis_url = \"redis://127.0.0.1/0\"\n", "registrar.redis_url: only used with store = \"redis\""),
        ("[registrar]\nmin_expires = 0\n", "registrar.min_expires: must be at least 1"),
        (
            "[registrar]\nmin_expires = 600\ndefault_expires = 300\n",
            "registrar.default_expires: must be at least min_expires (600)",
        ),
        ("[registrar]\nmax_expires = 60\n", "registrar.max_expires: must be at least default_expires (3600)"),
        (
            "[registrar]\nflush_interval_ms = 60000\n",
            "registrar.flush_interval_ms: must be at most 10000 (0 = fsync before every 200)",
        ),
        ("[registrar]\nmax_aors = 0\n", "registrar.max_aors: must be at least 1"),
        ("[directory]\nbackend = \"ldap\"\n", "directory.ldap: required with backend = \"ldap\""),
        ("[directory]\nfile = \"nope.toml\"\n", "directory.file: file not found: nope.toml"),
        (
            "[directory.ldap]\nurl = \"http://x\"\nbase_dn = \"dc=x\"\n",
            "directory.ldap.url: must start with ldap:// or ldaps://: \"http://x\"",
        ),
        ("[exum]\nring_time_s = 0\n", "exum.ring_time_s: must be 1 to 600 seconds, not 0"),
        ("[exum]\nverification_header = \"a b\"\n", "exum.verification_header: not a header name: \"a b\""),
        ("[exum]\num_attempt_timeout_ms = 10\n", "exum.um_attempt_timeout_ms: must be at least 100, not 10"),
        ("[limits]\nmax_headers = 0\n", "limits.max_headers: must be at least 1"),
        ("[limits]\nmax_body = 100000\n", "limits.max_body: larger than max_message_size (65536)"),
        ("[limits]\nidle_timeout_s = 0\n", "limits.idle_timeout_s: must be at least 1"),
        ("[timers]\nt1_ms = 0\n", "timers.t1_ms: must be at least 1"),
        ("[timers]\nt1_ms = 5000\n", "timers.t2_ms: must be at least t1_ms (5000)"),
        ("[tls_client]\ncertificate = \"c.pem\"\n", "tls_client.private_key: required when certificate is set"),
        ("[tls_client]\nca = \"missing.pem\"\n", "tls_client.ca: file not found: missing.pem"),
        (
            "[dns]\nnameservers = [\"dns.example\"]\n",
            "dns.nameservers[0]: not an address with port (like 127.0.0.1:5060 or [::1]:5060): \"dns.example\"",
        ),
        ("[dns]\nattempts = 0\n", "dns.attempts: must be at least 1"),
        ("[auth]\nnonce_ttl_s = 1\n", "auth.nonce_ttl_s: must be 10 to 3600 seconds, not 1"),
        (
            "[auth]\nalgorithms = [\"SHA-1\"]\n",
            "auth.algorithms[0]: unknown algorithm \"SHA-1\" (SHA-256, SHA-512-256 or MD5)",
        ),
        ("[auth]\nalgorithms = []\n", "auth.algorithms: needs at least one of SHA-256, SHA-512-256, MD5"),
        ("[auth]\nsecret_file = \"none.key\"\n", "auth.secret_file: file not found: none.key"),
        ("[auth]\nlockout_s = 0\n", "auth.lockout_s: must be at least 1"),
    ];
    for (section, want) in cases {
        assert_eq!(error_of(&format!("{MINIMAL}{section}")), format!("umproxy.toml: {want}"), "for {section:?}");
    }
    let e = error_of(&format!("{MINIMAL}[exum]\non_prem_request_uri = \"sip:{{nope}}\"\n"));
    assert!(e.starts_with("umproxy.toml: exum.on_prem_request_uri: ") && e.contains("nope"), "{e}");
    let e = error_of(&format!("{MINIMAL}[log]\nlevel = \"umproxy=loud\"\n"));
    assert!(e.starts_with("umproxy.toml: log.level: not a log filter"), "{e}");
    let e = error_of(&format!("{MINIMAL}[log]\nformat = \"xml\"\n"));
    assert!(e.contains("unknown variant `xml`"), "{e}");
}

#[test]
fn config_error_exposes_the_key() {
    let e = Config::from_str_named(&format!("{MINIMAL}[timers]\nt4_ms = 0\n"), "x.toml").unwrap_err();
    assert_eq!(e.key(), Some("timers.t4_ms"));
}

#[test]
fn a_private_key_that_is_not_the_certificates_is_refused_naming_both_keys() {
    let dir = dir_with_certs();
    let other = rcgen::generate_simple_self_signed(vec!["other.example.test".to_owned()]).unwrap();
    std::fs::write(dir.path().join("certs/other.key"), other.signing_key.serialize_pem()).unwrap();
    let listener = |key: &str| {
        format!(
            "[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:5061\"\ncertificate = \"certs/umproxy.pem\"\n\
             private_key = \"{key}\"\n\n[proxy]\ndomains = [\"example.test\"]\n"
        )
    };
    assert!(parse_in(dir.path(), &listener("certs/umproxy.key")).is_ok());
    assert_eq!(
        error_in(dir.path(), &listener("certs/other.key")),
        "umproxy.toml: listen[0].private_key: does not match the public key of listen[0].certificate"
    );
    let client =
        format!("{MINIMAL}\n[tls_client]\ncertificate = \"certs/umproxy.pem\"\nprivate_key = \"certs/other.key\"\n");
    assert_eq!(
        error_in(dir.path(), &client),
        "umproxy.toml: tls_client.private_key: does not match the public key of tls_client.certificate"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_the_file_the_key_and_the_line() {
    let e = error_of(&format!("{MINIMAL}max_forwards = \"seventy\"\n"));
    assert!(e.starts_with("umproxy.toml: proxy.max_forwards: invalid type: string \"seventy\""), "{e}");
    assert!(e.ends_with("(line 8, column 16)"), "{e}");
    let e = error_of(&format!("{MINIMAL}\n[limits]\nmax_connections = -1\n"));
    assert!(e.starts_with("umproxy.toml: limits.max_connections: "), "{e}");
    let e = error_of("[[listen]]\ntransport = \"udp\"\naddress = 5060\n\n[proxy]\ndomains = [\"example.test\"]\n");
    assert!(e.starts_with("umproxy.toml: listen[0].address: invalid type: integer `5060`, expected a string"), "{e}");
}

#[test]
fn the_admin_api_stays_off_public_addresses_unless_allowed() {
    let with = |admin: &str| format!("{MINIMAL}\n[admin]\n{admin}\n");
    assert!(Config::from_str_named(&with("address = \"127.0.0.1:9090\""), "umproxy.toml").is_ok());
    assert!(Config::from_str_named(&with("address = \"10.1.2.3:9090\""), "umproxy.toml").is_ok());
    let e = error_of(&with("address = \"0.0.0.0:9090\""));
    assert!(e.starts_with("umproxy.toml: admin.address: 0.0.0.0:9090 is not a loopback or private address"), "{e}");
    let e = error_of(&with("address = \"203.0.113.5:9090\""));
    assert!(e.contains("admin.allow_public = true"), "{e}");
    assert!(Config::from_str_named(&with("address = \"0.0.0.0:9090\"\nallow_public = true"), "umproxy.toml").is_ok());
}

#[test]
fn shutdown_settings_have_defaults_and_bounds() {
    let c = Config::from_str_named(MINIMAL, "umproxy.toml").unwrap();
    assert_eq!(c.shutdown, ShutdownConfig { grace_s: 30, retry_after_s: 30 });
    let e = error_of(&format!("{MINIMAL}\n[shutdown]\ngrace_s = 0\n"));
    assert!(e.starts_with("umproxy.toml: shutdown.grace_s: 0 is out of range"), "{e}");
}

#[test]
fn overload_caps_and_the_per_source_limit_are_keys_with_defaults() {
    let c = Config::from_str_named(MINIMAL, "umproxy.toml").unwrap();
    assert_eq!(c.limits.max_transactions, 200_000);
    assert_eq!(c.limits.queue_depth, 32_768);
    assert_eq!((c.limits.source_rate, c.limits.source_burst), (200, 400));
    let set =
        format!("{MINIMAL}\n[limits]\nmax_transactions = 5000\nqueue_depth = 64\nsource_rate = 0\nsource_burst = 0\n");
    let c = Config::from_str_named(&set, "umproxy.toml").unwrap();
    assert_eq!((c.limits.max_transactions, c.limits.queue_depth, c.limits.source_rate), (5000, 64, 0));
    for (bad, key) in [
        ("max_transactions = 0", "limits.max_transactions: must be at least 1"),
        ("queue_depth = 8", "limits.queue_depth: must be at least 16"),
        ("source_burst = 0", "limits.source_burst: must be at least 1 while source_rate limits sources"),
    ] {
        assert_eq!(error_of(&format!("{MINIMAL}\n[limits]\n{bad}\n")), format!("umproxy.toml: {key}"));
    }
}
