//! The real umproxy binary, started on a generated configuration.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, poll_until, strip_ansi, WAIT};

/// A TLS listener of the proxy.
#[derive(Clone, Debug)]
pub struct TlsListener {
    pub port: u16,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Mutual TLS: clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// A configuration file in the making. Ports are chosen when the value is
/// created, so a test can name them (in routes, in peers) before the proxy
/// starts.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// UDP and TCP listeners share this port on 127.0.0.1.
    pub sip_port: u16,
    pub tls: Option<TlsListener>,
    pub admin_port: u16,
    pub domains: Vec<String>,
    /// `proxy.record_route`.
    pub record_route: bool,
    /// `(match, next hops, fork)`.
    pub routes: Vec<(String, Vec<String>, Option<String>)>,
    /// Raw TOML appended to the file (`[limits]`, `[dns]`, `[tls_client]`, `[timers]` …).
    pub extra: String,
    pub log_level: String,
    /// `[log] format = "json"` instead of text.
    pub log_json: bool,
    /// `[admin] token_file`: the control API needs this bearer token.
    pub admin_token_file: Option<PathBuf>,
    /// The SIP listeners' address (loopback unless set).
    pub listen_ip: IpAddr,
    /// Run inside this network namespace (`ip netns exec`); the admin
    /// listener stays on that namespace's loopback.
    pub netns: Option<String>,
    /// `[proxy] trusted_peers`; loopback by default.
    pub trusted_peers: Vec<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyConfig {
    /// UDP and TCP on one free port, an admin listener, domain
    /// `example.test`, loopback trusted, no routes.
    pub fn new() -> Self {
        ProxyConfig {
            sip_port: free_port(),
            tls: None,
            admin_port: free_port(),
            domains: vec!["example.test".into()],
            record_route: true,
            routes: Vec::new(),
            extra: String::new(),
            log_level: "info".into(),
            log_json: false,
            admin_token_file: None,
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            netns: None,
            trusted_peers: vec!["127.0.0.1/32".into()],
        }
    }

    /// Add a TLS listener on a fresh port.
    pub fn with_tls(mut self, certificate: &Path, private_key: &Path, client_ca: Option<&Path>) -> Self {
        self.tls = Some(TlsListener {
            port: free_port(),
            certificate: certificate.to_owned(),
            private_key: private_key.to_owned(),
            client_ca: client_ca.map(Path::to_owned),
        });
        self
    }

    /// Route requests matching `pattern` to `next_hops` (forked in parallel
    /// when there are several).
    pub fn route(mut self, pattern: &str, next_hops: &[&str]) -> Self {
        self.routes.push((pattern.into(), next_hops.iter().map(|s| s.to_string()).collect(), None));
        self
    }

    /// Like [`route`](Self::route) with an explicit `fork` mode.
    pub fn route_fork(mut self, pattern: &str, next_hops: &[&str], fork: &str) -> Self {
        self.routes.push((pattern.into(), next_hops.iter().map(|s| s.to_string()).collect(), Some(fork.into())));
        self
    }

    /// Append raw TOML.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen_ip, self.sip_port)
    }

    /// Listen on `ip` inside network namespace `netns`.
    pub fn in_netns(mut self, netns: &str, ip: IpAddr) -> Self {
        self.netns = Some(netns.into());
        self.listen_ip = ip;
        self
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.udp_addr()
    }

    /// Panics without a TLS listener.
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls.as_ref().expect("no TLS listener configured").port))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        let addr = self.udp_addr();
        let _ = writeln!(t, "[[listen]]\ntransport = \"udp\"\naddress = \"{addr}\"\n");
        let _ = writeln!(t, "[[listen]]\ntransport = \"tcp\"\naddress = \"{addr}\"\n");
        if let Some(tls) = &self.tls {
            let _ = writeln!(
                t,
                "[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\ncertificate = {}\nprivate_key = {}",
                tls.port,
                toml_str(&tls.certificate.display().to_string()),
                toml_str(&tls.private_key.display().to_string()),
            );
            if let Some(ca) = &tls.client_ca {
                let _ = writeln!(t, "client_ca = {}", toml_str(&ca.display().to_string()));
            }
            t.push('\n');
        }
        let domains: Vec<String> = self.domains.iter().map(|d| toml_str(d)).collect();
        let _ = writeln!(
            t,
            "[proxy]\ndomains = [{}]\ntrusted_peers = [{}]\nrecord_route = {}\n",
            domains.join(", "),
            self.trusted_peers.iter().map(|p| toml_str(p)).collect::<Vec<_>>().join(", "),
            self.record_route
        );
        let _ = writeln!(t, "[admin]\naddress = \"{}\"", self.admin_addr());
        if let Some(token) = &self.admin_token_file {
            let _ = writeln!(t, "token_file = {}", toml_str(&token.display().to_string()));
        }
        t.push('\n');
        for (pattern, hops, fork) in &self.routes {
            let hops: Vec<String> = hops.iter().map(|h| toml_str(h)).collect();
            let _ = writeln!(t, "[[route]]\nmatch = {}\nnext_hop = [{}]", toml_str(pattern), hops.join(", "));
            if let Some(fork) = fork {
                let _ = writeln!(t, "fork = {}", toml_str(fork));
            }
            t.push('\n');
        }
        let _ = writeln!(t, "[log]\nlevel = {}", toml_str(&self.log_level));
        if self.log_json {
            t.push_str("format = \"json\"\n");
        }
        t.push('\n');
        t.push_str(&self.extra);
        t
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running umproxy. Killed on drop; its standard error goes to a file in
/// its tempdir and is shown by [`Proxy::log`] for failure messages.
pub struct Proxy {
    child: Child,
    dir: TempDir,
    pub config: ProxyConfig,
}

impl Proxy {
    /// Write `config` to a tempdir, run `BIN run FILE`, and wait until it
    /// logs that it started. Panics (with the log) if it exits or does not
    /// start within [`WAIT`].
    pub fn start(bin: &Path, config: ProxyConfig) -> Proxy {
        Proxy::start_in(bin, config, tempfile::tempdir().expect("tempdir"))
    }

    /// [`start`](Self::start) with the configuration and log in `dir`
    /// (a restart keeps the directory, and with it the registrations).
    pub fn start_in(bin: &Path, config: ProxyConfig, dir: TempDir) -> Proxy {
        Proxy::start_with_in(bin, config, dir, &[], &[])
    }

    /// Like [`start`](Self::start) with environment variables (e.g.
    /// `NOTIFY_SOCKET`) and extra arguments after the file (`--grace-s 60`).
    pub fn start_with(bin: &Path, config: ProxyConfig, env: &[(&str, &str)], args: &[&str]) -> Proxy {
        Proxy::start_with_in(bin, config, tempfile::tempdir().expect("tempdir"), env, args)
    }

    fn start_with_in(bin: &Path, config: ProxyConfig, dir: TempDir, env: &[(&str, &str)], args: &[&str]) -> Proxy {
        let file = dir.path().join("umproxy.toml");
        let mut text = config.to_toml();
        if !text.contains("[registrar]") {
            // Keep registrations inside the tempdir, not in a shared place.
            let db = dir.path().join("registrations.db");
            text.push_str(&format!("\n[registrar]\npath = {}\n", toml_str(&db.display().to_string())));
        }
        std::fs::write(&file, text).expect("write config");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut cmd = match &config.netns {
            Some(ns) => {
                let mut c = Command::new(crate::tool_path("ip"));
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("run")
            .arg(&file)
            .args(args)
            .envs(env.iter().copied())
            // RUST_LOG would override [log] level and might hide the start line.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn umproxy");
        let mut proxy = Proxy { child, dir, config };
        let started = poll_until(WAIT, || {
            if proxy.log().contains("umproxy started") {
                return Some(Ok(()));
            }
            match proxy.child.try_wait() {
                Ok(Some(status)) => Some(Err(format!("exited with {status}"))),
                _ => None,
            }
        });
        match started {
            Some(Ok(())) => proxy,
            Some(Err(e)) => panic!("umproxy {e}; config:\n{}\nlog:\n{}", proxy.config.to_toml(), proxy.log()),
            None => panic!("umproxy did not start within {WAIT:?}; log:\n{}", proxy.log()),
        }
    }

    /// Everything the proxy wrote to standard error so far (colours removed).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.dir.path().join("stderr.log")) {
            let _ = f.read_to_string(&mut s);
        }
        strip_ansi(&s)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.config.udp_addr()
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.config.tcp_addr()
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.config.tls_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.config.admin_addr()
    }

    /// Stop the process and hand back its directory (configuration,
    /// registrations, log) for a restart with [`start_in`](Self::start_in).
    pub fn stop(mut self) -> (ProxyConfig, TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (self.config.clone(), dir)
    }

    /// The admin listener's `/metrics` text.
    pub fn metrics(&self) -> String {
        if let Some(ns) = &self.config.netns {
            return match crate::netns::http_get(ns, self.admin_addr(), "/metrics") {
                Ok((200, body)) => body,
                other => panic!("GET /metrics in {ns}: {other:?}"),
            };
        }
        match self.admin_get("/metrics") {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    /// The value of one series in a fresh scrape, e.g.
    /// `umproxy_requests_total{direction="in",method="INVITE"}` (labels
    /// in the order the exposition writes them); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series).unwrap_or(0.0)
    }

    /// `GET path` on the admin listener: `(status, body)`.
    pub fn admin_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.admin_addr(), path)
    }
}

impl Proxy {
    /// The configuration file the proxy runs on (rewrite it, then reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("umproxy.toml")
    }

    /// Standard error exactly as written (colour codes kept).
    pub fn raw_log(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`TERM`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Wait up to `timeout` for the process to exit; its status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        poll_until(timeout, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` (name and labels exactly as exposed) in a
/// Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A minimal HTTP/1.0 GET with a timeout: `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.200}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Run `BIN args…` to completion (killed after `timeout`), capturing its
/// output.
pub fn run_cli(bin: &Path, args: &[&std::ffi::OsStr], timeout: Duration) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = File::create(dir.path().join("out")).expect("out file");
    let err = File::create(dir.path().join("err")).expect("err file");
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn umproxy");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("umproxy {args:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap_or_default();
    Output { status, stdout: read("out"), stderr: strip_ansi(&String::from_utf8_lossy(&read("err"))).into_bytes() }
}
