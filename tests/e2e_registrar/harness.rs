//! What these tests start: umproxy on a configuration written here (so that
//! `trusted_peers`, the registrar store and `[auth]` are ours to choose, and
//! the same configuration can be started again after a SIGKILL), a directory
//! file with digest HA1s, and a real `redis-server`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_support::{free_port, poll_until, strip_ansi, SipMessage, WAIT};
use md5::Digest as _;
use tempfile::TempDir;

/// The served domain (and digest realm) of every test here.
pub const DOMAIN: &str = "example.test";

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn md5_hex(data: &str) -> String {
    hex(&md5::Md5::digest(data.as_bytes()))
}

pub fn sha256_hex(data: &str) -> String {
    hex(&sha2::Sha256::digest(data.as_bytes()))
}

/// A directory file's text: `(user, password)` pairs of [`DOMAIN`], each with
/// its MD5 and SHA-256 HA1 = H(user:realm:password), never the password.
pub fn directory_toml(users: &[(String, String)]) -> String {
    let mut t = String::new();
    for (user, password) in users {
        let a1 = format!("{user}:{DOMAIN}:{password}");
        let _ = writeln!(
            t,
            "[[user]]\nsip_address = \"sip:{user}@{DOMAIN}\"\nha1 = {{ md5 = \"{}\", sha256 = \"{}\" }}\n",
            md5_hex(&a1),
            sha256_hex(&a1)
        );
    }
    t
}

/// Where registrations live.
#[derive(Clone, Debug)]
pub enum Store {
    /// Embedded, persisted to a file in the proxy's directory.
    Embedded,
    /// Redis at this URL.
    Redis(String),
    /// The embedded store with this `flush_interval_ms` (0 = write-through).
    EmbeddedFlushMs(u64),
}

/// The knobs of a test configuration. Ports are chosen at creation.
#[derive(Clone, Debug)]
pub struct Setup {
    pub sip_port: u16,
    pub admin_port: u16,
    /// `[proxy] trusted_peers`; loopback is *not* trusted unless listed.
    pub trusted_peers: Vec<String>,
    pub store: Store,
    pub users: Vec<(String, String)>,
    /// `[auth] lockout_max_failures_per_ip`, when not the default.
    pub lockout_per_ip: Option<u32>,
    /// `[auth] algorithms`, when not SHA-256 then MD5 (this suite's choice).
    pub algorithms: Option<Vec<String>>,
    /// More `key = value` lines for `[auth]`.
    pub auth_lines: Vec<String>,
    /// More `key = value` lines for `[registrar]`.
    pub registrar_lines: Vec<String>,
    /// Raw `[[route]]` tables and the like, appended.
    pub extra: String,
    /// `[limits] source_rate` (0: no per-source limit).
    pub source_rate: u32,
}

impl Setup {
    /// UDP and TCP on one fresh port, embedded store, nobody trusted, no users.
    pub fn new() -> Setup {
        Setup {
            sip_port: free_port(),
            admin_port: free_port(),
            trusted_peers: Vec::new(),
            store: Store::Embedded,
            users: Vec::new(),
            lockout_per_ip: None,
            algorithms: None,
            auth_lines: Vec::new(),
            registrar_lines: Vec::new(),
            extra: String::new(),
            source_rate: 0,
        }
    }

    pub fn user(mut self, user: &str, password: &str) -> Setup {
        self.users.push((user.into(), password.into()));
        self
    }

    pub fn trusted(mut self, cidr: &str) -> Setup {
        self.trusted_peers.push(cidr.into());
        self
    }

    pub fn store(mut self, store: Store) -> Setup {
        self.store = store;
        self
    }

    pub fn lockout_per_ip(mut self, n: u32) -> Setup {
        self.lockout_per_ip = Some(n);
        self
    }

    /// Offer these digest algorithms, in this order.
    pub fn algorithms(mut self, algs: &[&str]) -> Setup {
        self.algorithms = Some(algs.iter().map(|a| a.to_string()).collect());
        self
    }

    /// One more `key = value` line in `[auth]`.
    pub fn auth(mut self, line: &str) -> Setup {
        self.auth_lines.push(line.into());
        self
    }

    /// One more `key = value` line in `[registrar]`.
    pub fn registrar(mut self, line: &str) -> Setup {
        self.registrar_lines.push(line.into());
        self
    }

    /// Append raw TOML (after every table this file writes).
    pub fn extra(mut self, toml: &str) -> Setup {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.sip_port))
    }

    /// The configuration file's text, for a proxy living in `dir`.
    fn to_toml(&self, dir: &Path) -> String {
        let addr = self.sip_addr();
        let mut t = String::new();
        let _ = writeln!(t, "[[listen]]\ntransport = \"udp\"\naddress = \"{addr}\"\n");
        let _ = writeln!(t, "[[listen]]\ntransport = \"tcp\"\naddress = \"{addr}\"\n");
        let peers: Vec<String> = self.trusted_peers.iter().map(|p| format!("\"{p}\"")).collect();
        let _ = writeln!(t, "[proxy]\ndomains = [\"{DOMAIN}\"]\ntrusted_peers = [{}]\n", peers.join(", "));
        let _ = writeln!(t, "[admin]\naddress = \"127.0.0.1:{}\"\n", self.admin_port);
        match &self.store {
            Store::Embedded => {
                let db = dir.join("registrations.db");
                let _ = writeln!(t, "[registrar]\nstore = \"embedded\"\npath = {}\n", toml_path(&db));
            }
            Store::EmbeddedFlushMs(ms) => {
                let db = dir.join("registrations.db");
                let _ = writeln!(
                    t,
                    "[registrar]\nstore = \"embedded\"\npath = {}\nflush_interval_ms = {ms}\n",
                    toml_path(&db)
                );
            }
            Store::Redis(url) => {
                let _ = writeln!(t, "[registrar]\nstore = \"redis\"\nredis_url = \"{url}\"\n");
            }
        }
        for line in &self.registrar_lines {
            let _ = writeln!(t, "{line}");
        }
        let _ = writeln!(t, "\n[directory]\nfile = {}\n", toml_path(&dir.join("directory.toml")));
        t.push_str("[auth]\n");
        if let Some(n) = self.lockout_per_ip {
            let _ = writeln!(t, "lockout_max_failures_per_ip = {n}");
        }
        // These tests exercise RFC 8760 SHA-256 first unless told
        // otherwise (umproxy's own default is MD5 only, for deployed phones).
        let algs: Vec<String> = match &self.algorithms {
            Some(algs) => algs.iter().map(|a| format!("\"{a}\"")).collect(),
            None => vec!["\"SHA-256\"".into(), "\"MD5\"".into()],
        };
        let _ = writeln!(t, "algorithms = [{}]", algs.join(", "));
        for line in &self.auth_lines {
            let _ = writeln!(t, "{line}");
        }
        t.push('\n');
        let _ = writeln!(t, "[log]\nlevel = \"info\"\n");
        // Every UA of these tests sends from 127.0.0.1, hundreds of
        // REGISTERs a second: no per-source limit (tested on its own).
        let _ = writeln!(t, "[limits]\nsource_rate = {}\n", self.source_rate);
        t.push_str(&self.extra);
        t
    }
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A umproxy process on a [`Setup`], in its own tempdir (configuration,
/// directory, registration file, logs). Killed on drop; [`Umproxy::kill`]
/// and [`Umproxy::restart`] reuse the same directory and configuration.
pub struct Umproxy {
    child: Option<Child>,
    dir: TempDir,
    config: PathBuf,
    /// Starts so far; each run logs to its own file.
    runs: u32,
    pub setup: Setup,
}

impl Umproxy {
    /// Write the files and start the proxy; panics (with the log) if it does
    /// not log that it started within [`WAIT`].
    pub fn start(setup: Setup) -> Umproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("umproxy.toml");
        std::fs::write(&config, setup.to_toml(dir.path())).expect("write config");
        std::fs::write(dir.path().join("directory.toml"), directory_toml(&setup.users)).expect("write directory");
        let mut proxy = Umproxy { child: None, dir, config, runs: 0, setup };
        proxy.spawn();
        proxy
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("stderr-{run}.log"))
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let stderr = File::create(self.log_path(self.runs)).expect("log file");
        let child = Command::new(crate::umproxy())
            .arg("run")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn umproxy");
        self.child = Some(child);
        let started = poll_until(WAIT, || {
            if self.current_log().contains("umproxy started") {
                return Some(Ok(()));
            }
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(Err(format!("exited with {status}"))),
                _ => None,
            }
        });
        match started {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("umproxy {e}; log:\n{}", self.log()),
            None => panic!("umproxy did not start within {WAIT:?}; log:\n{}", self.log()),
        }
    }

    /// SIGKILL: no shutdown, no flush beyond what the proxy already did.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same files (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.setup.sip_addr()
    }

    /// The value of one series of a fresh `/metrics` scrape (0 when absent),
    /// e.g. `umproxy_auth_failures_total{reason="replay"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let admin = SocketAddr::from(([127, 0, 0, 1], self.setup.admin_port));
        match e2e_support::http_get(admin, "/metrics") {
            Ok((200, body)) => e2e_support::metric_value(&body, series).unwrap_or(0.0),
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    fn current_log(&self) -> String {
        read_log(&self.log_path(self.runs))
    }

    /// Every run's standard error so far, colours removed.
    pub fn log(&self) -> String {
        (1..=self.runs).map(|r| format!("--- run {r} ---\n{}", read_log(&self.log_path(r)))).collect()
    }
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    strip_ansi(&s)
}

impl Drop for Umproxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real `redis-server` on a free loopback port, no persistence, its files
/// in a tempdir. Killed on drop; [`stop`](Self::stop) and
/// [`start`](Self::start) take it down and up on the same port.
pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
}

impl RedisServer {
    pub fn start_new() -> RedisServer {
        let mut r = RedisServer { child: None, dir: tempfile::tempdir().expect("tempdir"), port: free_port() };
        r.start();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Start (again) on the same port and wait until it answers PING.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let log = File::create(self.dir.path().join("redis.log")).expect("redis log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let port = self.port;
        let up = poll_until(WAIT, || ping(port).then_some(()));
        assert!(up.is_some(), "redis-server on port {port} did not answer PING within {WAIT:?}");
    }

    /// Kill it (SIGKILL) and reap it; its port is closed when this returns.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a Redis server on `port` answers `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// A UDP user agent server answering 200 to every request but ACK, and
/// keeping what it got. Stops (and is joined) on drop.
pub struct Responder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SipMessage>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    pub fn start() -> Responder {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let Some(req) = SipMessage::parse(&buf[..n]) else { continue };
                if req.method().is_none_or(|m| m == "ACK") {
                    continue;
                }
                let response = req.response(200, "OK", Some("uas")).to_bytes();
                // Recorded before answering: whoever gets the 200 finds the request here.
                seen2.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                let _ = sock.send_to(&response, from);
            }
        });
        Responder { addr, seen, stop, thread: Some(thread) }
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<SipMessage> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
