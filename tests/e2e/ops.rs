//! Operating umproxy (issue 19): drain on SIGTERM under load, sd_notify,
//! reload under load, every metric family from start, the admin API and
//! `umproxy ctl`, check-config's TLS checks, and the log formats.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_support::{free_port, poll_until, run_cli, Proxy, ProxyConfig, Sipp, WAIT};

use crate::{have_sipp, scenario, umproxy};

/// A `NOTIFY_SOCKET` the test owns: every datagram umproxy sends is kept.
struct NotifySocket {
    path: std::path::PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        // Ends with the test process; a receive error other than the
        // timeout ends it sooner.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => keep.lock().expect("lock").push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        });
        NotifySocket { path, seen, _dir: dir }
    }

    fn messages(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }

    /// Index of the first message at or after `from` that has line `line`.
    fn wait_for(&self, line: &str, from: usize) -> Option<usize> {
        poll_until(WAIT, || {
            self.messages().iter().enumerate().skip(from).find(|(_, m)| m.lines().any(|l| l == line)).map(|(i, _)| i)
        })
    }
}

/// A test finding 1 asks for: SIPp at 50 calls/s of 2 s each through the
/// proxy, SIGTERM while calls are up. Every call that reached the callee
/// completes (its BYE is answered), every other call gets 503 (the caller's
/// scenario takes it as the end of the call, so no call fails), `/readyz`
/// turns 503, the proxy exits because nothing is in flight (not at its
/// 60 s deadline, although finished UDP transactions sit on 32 s timers),
/// and systemd hears READY, RELOADING, STOPPING and the watchdog.
#[test]
fn sigterm_under_sipp_load_completes_calls_up_refuses_new_ones_and_tells_systemd() {
    if !have_sipp() {
        return;
    }
    let notify = NotifySocket::bind();
    let uas = Sipp::scenario_file(scenario("uas_rr.xml")).timeout(Duration::from_secs(60));
    let hop = format!("sip:127.0.0.1:{};transport=udp", uas.port);
    let socket = notify.path.display().to_string();
    let mut proxy = Proxy::start_with(
        umproxy(),
        ProxyConfig::new().route("*", &[&hop]),
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "1000000")],
        &["--grace-s", "60"],
    );
    let ready = notify.wait_for("READY=1", 0).expect("READY=1 after start");
    proxy.signal("HUP");
    let reloading = notify.wait_for("RELOADING=1", ready + 1).expect("RELOADING=1 on SIGHUP");
    notify.wait_for("READY=1", reloading + 1).expect("READY=1 after the reload");
    assert_eq!(proxy.admin_get("/readyz").expect("readyz").0, 200);

    let uas = uas.spawn();
    let calls = 100;
    let uac = Sipp::scenario_file(scenario("uac_drain.xml"))
        .remote(proxy.udp_addr())
        .service("bob")
        .calls(calls)
        .rate(50)
        .timeout(Duration::from_secs(60))
        .spawn();
    // Calls are up (answered, not yet hung up) when the signal comes.
    let up = poll_until(WAIT, || {
        let n = proxy.metric("umproxy_dialogs_active");
        (n >= 20.0).then_some(n)
    });
    assert!(up.is_some(), "no calls up; log:\n{}", proxy.log());
    let term_at = std::time::Instant::now();
    proxy.signal("TERM");
    let stopping = notify.wait_for("STOPPING=1", 0);
    assert!(stopping.is_some(), "no STOPPING=1: {:?}", notify.messages());
    let (status, body) = proxy.admin_get("/readyz").expect("readyz while draining");
    assert_eq!((status, body.trim()), (503, "not ready: draining"));

    let exit = proxy.wait_exit(Duration::from_secs(90));
    let drained_in = term_at.elapsed();
    assert!(exit.is_some_and(|s| s.success()), "umproxy did not exit cleanly: {exit:?}\n{}", proxy.log());
    let log = proxy.log();
    assert!(log.contains("drained: nothing in flight"), "it waited for its deadline instead:\n{log}");
    assert!(!log.contains("grace period over"), "{log}");

    let uac = uac.wait();
    assert!(uac.succeeded(), "a call failed across the drain:\n{}\nproxy log:\n{log}", uac.describe());
    assert_eq!(uac.successful, u64::from(calls), "{}", uac.describe());
    // The callee's statistics are written every second.
    std::thread::sleep(Duration::from_millis(1500));
    let uas = uas.stop();
    assert_eq!(uas.failed, 0, "a call up at SIGTERM failed:\n{}", uas.describe());
    assert_eq!(uas.successful, uas.created, "every call that reached the callee ended cleanly:\n{}", uas.describe());
    assert!(uas.created > 0, "{}", uas.describe());
    assert!(uas.created < u64::from(calls), "no call was refused with 503: {}", uas.describe());
    let messages = notify.messages();
    assert!(messages.iter().any(|m| m.lines().any(|l| l == "WATCHDOG=1")), "{messages:?}");
    eprintln!(
        "drain: {} calls reached the callee and all completed, {} new calls refused with 503, 0 failed; \
         exited {drained_in:?} after SIGTERM (grace 60 s)",
        uas.created,
        u64::from(calls) - uas.created
    );
}

/// Finding 4 and the reload test: SIGHUP and then `umproxy ctl reload`
/// while SIPp calls flow, each switching the route (to a second callee and
/// back) and the log level; no call fails, the new route takes the calls,
/// and a bad file is refused with the old configuration kept.
#[test]
fn sighup_and_ctl_reload_under_load_switch_the_route_and_level_without_failed_calls() {
    if !have_sipp() {
        return;
    }
    let first = Sipp::scenario_file(scenario("uas_rr.xml")).timeout(Duration::from_secs(60));
    let second = Sipp::scenario_file(scenario("uas_rr.xml")).timeout(Duration::from_secs(60));
    let hop = |port: u16| format!("sip:127.0.0.1:{port};transport=udp");
    let (hop1, hop2) = (hop(first.port), hop(second.port));
    let config = ProxyConfig::new().route("*", &[&hop1]);
    let proxy = Proxy::start(umproxy(), config.clone());
    let (first, second) = (first.spawn(), second.spawn());
    let uac = Sipp::scenario_file(scenario("uac_rr.xml"))
        .remote(proxy.udp_addr())
        .service("bob")
        .calls(120)
        .rate(20)
        .timeout(Duration::from_secs(60))
        .spawn();
    let reloads = |p: &Proxy| p.log().matches("configuration reloaded").count();
    let calls_in = |p: &Proxy| p.metric(r#"umproxy_requests_total{direction="in",method="INVITE"}"#);
    poll_until(WAIT, || (calls_in(&proxy) >= 20.0).then_some(())).expect("calls flow");

    // SIGHUP: route to the second callee, log at debug.
    let mut to_second = config.clone();
    to_second.routes.clear();
    to_second.log_level = "debug".into();
    let to_second = to_second.route("*", &[&hop2]);
    rewrite(&proxy, &to_second);
    proxy.signal("HUP");
    poll_until(WAIT, || (reloads(&proxy) >= 1).then_some(())).expect("SIGHUP reload logged");
    let level = ctl(&proxy, &["log-level"]);
    assert!(
        String::from_utf8_lossy(&level.stdout).contains("\"level\": \"debug\""),
        "the new log level is not in force: {level:?}"
    );
    let before = calls_in(&proxy);
    poll_until(WAIT, || (calls_in(&proxy) >= before + 20.0).then_some(())).expect("calls keep flowing");

    // `umproxy ctl reload`: back to the first callee and info.
    rewrite(&proxy, &config);
    let out = ctl(&proxy, &["reload"]);
    assert!(out.status.success(), "ctl reload: {}", String::from_utf8_lossy(&out.stderr));
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(answer.contains("\"result\": \"ok\""), "{answer}");
    // The file watcher (2 s poll) may have applied the change a moment
    // before the command: then the command found nothing new to apply.
    let by_watcher = proxy.log().contains("trigger=\"file change\" applied=route,log.level");
    assert!(by_watcher || (answer.contains("\"route\"") && answer.contains("\"log.level\"")), "{answer}");

    // A bad file: refused, answered as such, the running configuration kept.
    std::fs::write(proxy.config_path(), config.to_toml().replace("[proxy]", "[proxy]\nmax_forwards = \"lots\""))
        .expect("write");
    let out = ctl(&proxy, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "a bad file must be refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("proxy.max_forwards"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(proxy.metric(r#"umproxy_config_reloads_total{result="refused"}"#), 1.0);

    let uac = uac.wait();
    assert!(uac.succeeded(), "calls failed across the reloads:\n{}\nlog:\n{}", uac.describe(), proxy.log());
    std::thread::sleep(Duration::from_millis(1500));
    let (first, second) = (first.stop(), second.stop());
    assert!(second.successful > 0, "the route from SIGHUP took no call: {}", second.describe());
    assert!(first.successful > 0, "{}", first.describe());
    assert_eq!(first.successful + second.successful, 120, "{}\n{}", first.describe(), second.describe());
    assert_eq!(first.failed + second.failed, 0);
    // After the refusal the configuration in force is still the one the
    // command reloaded.
    let status = ctl(&proxy, &["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("\"log_level\": \"info\""),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}

/// Write `config` as the proxy's file (atomically, as deploy tools do).
fn rewrite(proxy: &Proxy, config: &ProxyConfig) {
    let path = proxy.config_path();
    let mut text = config.to_toml();
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    // Keep the registrar section the harness added.
    if let Some(at) = current.find("\n[registrar]") {
        text.push_str(&current[at..]);
    }
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, &path).expect("replace config");
}

fn ctl(proxy: &Proxy, args: &[&str]) -> std::process::Output {
    let config = proxy.config_path();
    let mut all: Vec<&OsStr> = vec![OsStr::new("ctl"), OsStr::new("--config"), config.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    run_cli(umproxy(), &all, WAIT)
}

/// Finding 6: a scrape before any traffic lists every family, and
/// promtool accepts it.
#[test]
fn every_metric_family_is_exported_before_any_traffic() {
    let proxy = Proxy::start(umproxy(), ProxyConfig::new());
    let text = proxy.metrics();
    for family in EXPORTED_FAMILIES {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# TYPE {family} "))),
            "{family} missing before any traffic:\n{text}"
        );
    }
    for series in [
        r#"umproxy_responses_total{class="5xx",direction="out",method="INVITE"} 0"#,
        r#"umproxy_request_latency_seconds_count{method="INVITE",response="first"} 0"#,
        r#"umproxy_request_latency_seconds_count{method="REGISTER",response="final"} 0"#,
        "umproxy_dialogs_active 0",
        "umproxy_draining 0",
    ] {
        assert!(text.lines().any(|l| l == series), "{series} missing:\n{text}");
    }
    if !e2e_support::require_tool("promtool") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, &text).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Every family umproxy exports; the Grafana dashboard and the alert rules
/// may only use these (deploy_tests.rs checks them against this list).
pub const EXPORTED_FAMILIES: &[&str] = &[
    "umproxy_requests_total",
    "umproxy_responses_total",
    "umproxy_transactions_active",
    "umproxy_transactions_finishing",
    "umproxy_dialogs_active",
    "umproxy_drops_total",
    "umproxy_dns_failures_total",
    "umproxy_request_latency_seconds",
    "umproxy_config_reloads_total",
    "umproxy_draining",
    "umproxy_build_info",
    "umproxy_next_hops_down",
    "umproxy_registrations_active",
    "umproxy_register_total",
    "umproxy_auth_failures_total",
    "umproxy_transport_connections_open",
    "umproxy_transport_messages_received_total",
    "umproxy_transport_messages_sent_total",
    "umproxy_transport_tls_handshake_failures_total",
    "umproxy_transport_tls_handshakes_total",
    "umproxy_exum_routes_total",
    "umproxy_exum_um_failures_total",
    "umproxy_exum_diversion_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
];

/// Item 8: each admin endpoint, a refusal without the token, and `umproxy
/// ctl` against the running proxy (a binding registered over UDP is
/// listed, shown and removed).
#[test]
fn the_admin_api_and_ctl_answer_and_refuse_without_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret-token-for-the-test\n").expect("token");
    let mut config = ProxyConfig::new().extra("[auth]\nenabled = false\n");
    config.admin_token_file = Some(token.clone());
    let proxy = Proxy::start(umproxy(), config);
    let admin = proxy.admin_addr();

    // Probes need no token; the API does.
    assert_eq!(proxy.admin_get("/healthz").expect("healthz").0, 200);
    assert_eq!(proxy.admin_get("/readyz").expect("readyz").0, 200);
    let (status, body) = e2e_support::http_get(admin, "/api/status").expect("status");
    assert_eq!(status, 401, "{body}");

    // A registration to look at.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let me = sock.local_addr().expect("addr");
    let register = format!(
        "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg1;rport\r\n\
         From: <sip:alice@example.test>;tag=r1\r\nTo: <sip:alice@example.test>\r\nCall-ID: reg-1@test\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:alice@{me}>\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(register.as_bytes(), proxy.udp_addr()).expect("send");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("answer to REGISTER");
    assert!(buf[..n].starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&buf[..n]));

    let ok = |args: &[&str]| {
        let out = ctl(&proxy, args);
        assert!(out.status.success(), "ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ok(&["status"]).contains("\"draining\": false"));
    assert!(ok(&["reg", "list"]).contains("sip:alice@example.test"));
    let shown = ok(&["reg", "show", "sip:alice@example.test"]);
    assert!(shown.contains(&format!("sip:alice@{me}")) && shown.contains("\"expires_in\""), "{shown}");
    let hops = ok(&["next-hops"]);
    assert!(hops.contains("\"down\": []") && hops.contains("\"last_errors\""), "{hops}");
    assert!(ok(&["um-servers"]).contains("\"um_servers\""));
    assert!(ok(&["tls"]).contains("\"connections_open\""));
    assert!(ok(&["log-level"]).contains("\"level\": \"info\""));
    assert!(ok(&["log-level", "umproxy=debug,info"]).contains("\"changed\": true"));
    assert!(ok(&["log-level"]).contains("umproxy=debug,info"));
    assert!(ok(&["reload"]).contains("\"result\": \"ok\""));
    ok(&["reg", "rm", "sip:alice@example.test", "--contact", &format!("sip:alice@{me}")]);
    let gone = ctl(&proxy, &["reg", "show", "sip:alice@example.test"]);
    assert_eq!(gone.status.code(), Some(1), "the binding is gone: {}", String::from_utf8_lossy(&gone.stdout));
    // A wrong token is refused by ctl too.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-right-token-at-all\n").expect("write");
    let addr = admin.to_string();
    let out = run_cli(
        umproxy(),
        &[
            OsStr::new("ctl"),
            OsStr::new("--admin"),
            OsStr::new(&addr),
            OsStr::new("--token-file"),
            wrong.as_os_str(),
            OsStr::new("status"),
        ],
        WAIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Finding 2: `check-config` verifies that a listener's key goes with its
/// certificate (as `run` does before serving).
#[test]
fn check_config_refuses_a_private_key_that_is_not_the_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = e2e_support::Ca::new("ops-test");
    let a = ca.server_cert(&["127.0.0.1"]);
    let b = ca.server_cert(&["127.0.0.1"]);
    let port = free_port();
    let text = format!(
        "[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:{port}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\n\
         [proxy]\ndomains = [\"example.test\"]\n",
        a.cert_path.display(),
        b.key_path.display()
    );
    let file = dir.path().join("umproxy.toml");
    std::fs::write(&file, text).expect("write");
    let out = run_cli(umproxy(), &[OsStr::new("check-config"), file.as_os_str()], WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "accepted a foreign key: {stderr}");
    assert!(
        stderr.contains("listen[0].private_key: does not match the public key of listen[0].certificate"),
        "{stderr}"
    );
}

/// `check-config` reads an LDAP directory as `run` does: a server that
/// does not answer fails the check, naming the key.
#[test]
fn check_config_reads_the_ldap_directory_like_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let file = dir.path().join("umproxy.toml");
    std::fs::write(
        &file,
        format!(
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{}\"\n[proxy]\ndomains = [\"example.test\"]\n\
             [directory]\nbackend = \"ldap\"\n[directory.ldap]\nurl = \"ldap://127.0.0.1:{port}\"\nbase_dn = \"dc=example,dc=test\"\n",
            free_port()
        ),
    )
    .expect("write");
    let out = run_cli(umproxy(), &[OsStr::new("check-config"), file.as_os_str()], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "an unreachable LDAP server passed: {stderr}");
    assert!(stderr.contains("directory.ldap: "), "{stderr}");
}

/// Finding 5: JSON lines carry each key once (the ExUM `target` field sits
/// under `fields`), text logs in a file carry no colour codes, a start-up
/// error under the JSON format is a JSON line, and `listening` is logged
/// once per listener.
#[test]
fn logs_are_clean_json_or_plain_text_and_say_each_thing_once() {
    // Text into a file: no ANSI escapes, one `listening` line per listener.
    let proxy = Proxy::start(umproxy(), ProxyConfig::new());
    let raw = proxy.raw_log();
    assert!(!raw.contains(&0x1b), "colour codes in a log file:\n{}", String::from_utf8_lossy(&raw));
    let log = proxy.log();
    assert_eq!(log.lines().filter(|l| l.contains(" listening ")).count(), 2, "{log}");
    drop(proxy);

    // JSON: every line is an object whose keys are unique.
    let mut json = ProxyConfig::new();
    json.log_json = true;
    let proxy = Proxy::start(umproxy(), json);
    let log = proxy.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let keys = top_level_keys(line).unwrap_or_else(|| panic!("not a JSON object: {line}"));
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "a key twice in {line}");
        assert!(keys.iter().any(|k| k == "fields"), "{line}");
    }
    drop(proxy);

    // A start-up error under the JSON format is JSON too.
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let file = dir.path().join("umproxy.toml");
    std::fs::write(
        &file,
        format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{port}\"\n[proxy]\ndomains = [\"example.test\"]\n[log]\nformat = \"json\"\n"),
    )
    .expect("write");
    let out = run_cli(umproxy(), &[OsStr::new("run"), file.as_os_str()], WAIT);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(v["level"], "ERROR", "{last}");
    assert!(v["fields"]["error"].as_str().is_some_and(|e| e.contains(&port.to_string())), "{last}");
    // And a configuration error, before logging is set up.
    std::fs::write(&file, "[log]\nformat = \"json\"\n[proxy]\nbogus = 1\n").expect("write");
    let out = run_cli(umproxy(), &[OsStr::new("run"), file.as_os_str()], WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(stderr.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert!(v["fields"]["error"].as_str().is_some_and(|e| e.contains("proxy.bogus")), "{stderr}");
}

/// The keys of a JSON object in order, duplicates kept.
fn top_level_keys(line: &str) -> Option<Vec<String>> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Vec<String>, M::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_str(line).deserialize_map(Keys).ok()
}

/// The TLS listener's certificate files replaced on disk: the file watcher
/// installs the new certificate for new handshakes, logs it once, and a
/// reload that changes only routes re-reads no certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_listener_certificate_is_picked_up_once_from_the_files() {
    let old_ca = e2e_support::Ca::new("old-ca");
    let new_ca = e2e_support::Ca::new("new-ca");
    let old = old_ca.server_cert(&["127.0.0.1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("umproxy.pem"), dir.path().join("umproxy.key"));
    std::fs::copy(&old.cert_path, &cert).expect("copy");
    std::fs::copy(&old.key_path, &key).expect("copy");
    let proxy = Proxy::start(umproxy(), ProxyConfig::new().with_tls(&cert, &key, None));
    let addr = proxy.tls_addr();
    assert!(e2e_support::TlsClient::connect(addr, "127.0.0.1", &old_ca, None).await.is_ok());
    let reloads = |p: &Proxy| p.log().matches("TLS certificate reloaded").count();

    // Renewed by another CA, written as a renewal hook would (new files moved in).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = new_ca.server_cert(&["127.0.0.1"]);
    for (from, to) in [(&new.cert_path, &cert), (&new.key_path, &key)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).expect("copy");
        std::fs::rename(&tmp, to).expect("rename");
    }
    let picked = poll_until(WAIT, || (reloads(&proxy) >= 1).then_some(()));
    assert!(picked.is_some(), "the new certificate was not installed:\n{}", proxy.log());
    assert!(e2e_support::TlsClient::connect(addr, "127.0.0.1", &new_ca, None).await.is_ok(), "new handshakes use it");
    assert!(e2e_support::TlsClient::connect(addr, "127.0.0.1", &old_ca, None).await.is_err());

    // A reload for something else (a route) leaves the certificate alone.
    let with_route = proxy.config.clone().route("*", &["sip:127.0.0.1:9;transport=udp"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    rewrite(&proxy, &with_route);
    poll_until(WAIT, || proxy.log().contains("applied=route").then_some(()))
        .unwrap_or_else(|| panic!("the route change was not reloaded:\n{}", proxy.log()));
    assert_eq!(reloads(&proxy), 1, "one certificate line per certificate change:\n{}", proxy.log());
}
