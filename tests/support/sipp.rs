//! SIPp (Debian `sip-tester`) as a user agent client or server.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// Transport SIPp uses: `-t u1` or `-t t1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SippTransport {
    Udp,
    Tcp,
}

/// A SIPp run in the making.
#[derive(Clone, Debug)]
pub struct Sipp {
    scenario: Scenario,
    /// Local port (`-p`); chosen at creation.
    pub port: u16,
    remote: Option<SocketAddr>,
    service: Option<String>,
    calls: Option<u32>,
    rate: Option<u32>,
    transport: SippTransport,
    lost: Option<u32>,
    timeout: Duration,
    trace_msg: bool,
    extra: Vec<String>,
    /// The address SIPp binds (`-i`); loopback unless set.
    local_ip: IpAddr,
    /// Run inside this network namespace (`ip netns exec`).
    netns: Option<String>,
}

#[derive(Clone, Debug)]
enum Scenario {
    Builtin(String),
    File(PathBuf),
    Text(String),
}

impl Sipp {
    /// A built-in scenario (`-sn uac`, `-sn uas`).
    pub fn builtin(name: &str) -> Sipp {
        Sipp::new(Scenario::Builtin(name.into()))
    }

    /// A scenario file (`-sf FILE`).
    pub fn scenario_file(path: impl Into<PathBuf>) -> Sipp {
        Sipp::new(Scenario::File(path.into()))
    }

    /// A scenario given as XML text (written to the run's tempdir), e.g. a
    /// file of `scenarios/` with placeholders replaced: SIPp checks response
    /// codes when it loads a scenario, before `-key` values are known.
    pub fn scenario_text(xml: impl Into<String>) -> Sipp {
        Sipp::new(Scenario::Text(xml.into()))
    }

    fn new(scenario: Scenario) -> Sipp {
        Sipp {
            scenario,
            port: free_port(),
            remote: None,
            service: None,
            calls: None,
            rate: None,
            transport: SippTransport::Udp,
            lost: None,
            timeout: Duration::from_secs(30),
            trace_msg: false,
            extra: Vec::new(),
            local_ip: IpAddr::from([127, 0, 0, 1]),
            netns: None,
        }
    }

    /// The remote host (a UAC's destination).
    pub fn remote(mut self, addr: SocketAddr) -> Self {
        self.remote = Some(addr);
        self
    }

    /// `-s USER`: the Request-URI user.
    pub fn service(mut self, user: &str) -> Self {
        self.service = Some(user.into());
        self
    }

    /// `-m N`: stop after N calls.
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = Some(n);
        self
    }

    /// `-r N`: calls per second.
    pub fn rate(mut self, n: u32) -> Self {
        self.rate = Some(n);
        self
    }

    pub fn transport(mut self, t: SippTransport) -> Self {
        self.transport = t;
        self
    }

    /// `-lost PERCENT`: drop this share of received and sent packets.
    pub fn lost(mut self, percent: u32) -> Self {
        self.lost = Some(percent);
        self
    }

    /// `-timeout`: SIPp gives up (and fails) after this; the guard kills it
    /// a few seconds later if it has not exited.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// `-trace_msg`: keep every sent and received message for
    /// [`SippOutcome::messages`].
    pub fn trace_msg(mut self) -> Self {
        self.trace_msg = true;
        self
    }

    /// More raw arguments (`-key name value`, `-set var value`, …).
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra.push(a.into());
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(self.local_ip, self.port)
    }

    /// Run in network namespace `netns`, bound to `ip` there.
    pub fn in_netns(mut self, netns: &str, ip: IpAddr) -> Self {
        self.netns = Some(netns.into());
        self.local_ip = ip;
        self
    }

    /// Start SIPp in the background. A server side is typically spawned
    /// before the proxy routes to it; wait with [`SippProcess::wait`].
    pub fn spawn(self) -> SippProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new(crate::tool_path("ip"));
                c.args(["netns", "exec", ns, "sipp"]);
                c
            }
            None => Command::new("sipp"),
        };
        match &self.scenario {
            Scenario::Builtin(name) => cmd.args(["-sn", name]),
            Scenario::File(path) => cmd.arg("-sf").arg(path),
            Scenario::Text(xml) => {
                let path = dir.path().join("scenario.xml");
                std::fs::write(&path, xml).expect("write scenario");
                cmd.arg("-sf").arg(path)
            }
        };
        cmd.arg("-i").arg(self.local_ip.to_string()).args(["-p", &self.port.to_string()]);
        cmd.args(["-t", if self.transport == SippTransport::Tcp { "t1" } else { "u1" }]);
        if let Some(s) = &self.service {
            cmd.args(["-s", s]);
        }
        if let Some(m) = self.calls {
            cmd.args(["-m", &m.to_string()]);
        }
        if let Some(r) = self.rate {
            cmd.args(["-r", &r.to_string()]);
        }
        if let Some(l) = self.lost {
            cmd.args(["-lost", &l.to_string()]);
        }
        cmd.args(["-timeout", &format!("{}s", self.timeout.as_secs().max(1)), "-timeout_error"]);
        cmd.args(["-nostdin", "-trace_stat", "-fd", "1", "-trace_err", "-trace_screen"]);
        cmd.arg("-stf").arg(dir.path().join("stat.csv"));
        cmd.arg("-error_file").arg(dir.path().join("errors.log"));
        cmd.arg("-screen_file").arg(dir.path().join("screen.log"));
        if self.trace_msg {
            cmd.arg("-trace_msg").arg("-message_file").arg(dir.path().join("messages.log"));
        }
        cmd.args(&self.extra);
        if let Some(remote) = self.remote {
            cmd.arg(remote.to_string());
        }
        let out = File::create(dir.path().join("stdout.log")).expect("stdout file");
        let err = File::create(dir.path().join("stderr.log")).expect("stderr file");
        let child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sipp: {e}"));
        let deadline = Instant::now() + self.timeout + Duration::from_secs(5);
        SippProcess { child: Some(child), dir, deadline, port: self.port, local_ip: self.local_ip }
    }

    /// Run to completion and return the outcome.
    pub fn run(self) -> SippOutcome {
        self.spawn().wait()
    }
}

/// A running SIPp. Killed on drop.
pub struct SippProcess {
    child: Option<Child>,
    dir: TempDir,
    deadline: Instant,
    pub port: u16,
    local_ip: IpAddr,
}

impl SippProcess {
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(self.local_ip, self.port)
    }

    /// Wait for SIPp to exit (it is killed at its deadline: its `-timeout`
    /// plus five seconds) and read its statistics.
    pub fn wait(mut self) -> SippOutcome {
        let status = self.child.take().map(|mut child| loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= self.deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        SippOutcome::read(status.flatten(), self.dir.path())
    }

    /// Stop SIPp now and read what it recorded.
    pub fn stop(mut self) -> SippOutcome {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        SippOutcome::read(None, self.dir.path())
    }

    /// Messages traced so far (needs [`Sipp::trace_msg`]).
    pub fn messages_so_far(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default()
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a SIPp run did.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// `None` when it had to be killed.
    pub status: Option<ExitStatus>,
    pub successful: u64,
    pub failed: u64,
    /// Calls created (a UAC) or received (a UAS).
    pub created: u64,
    /// Retransmissions SIPp sent.
    pub retransmissions: u64,
    /// `-trace_msg` log (empty without it).
    pub messages: String,
    /// The final screen, errors and stderr, for failure messages.
    pub screen: String,
    pub errors: String,
}

impl SippOutcome {
    fn read(status: Option<ExitStatus>, dir: &Path) -> SippOutcome {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let stat = read("stat.csv");
        let lines: Vec<&str> = stat.lines().filter(|l| !l.trim().is_empty()).collect();
        let header: Vec<&str> = lines.first().copied().unwrap_or_default().split(';').collect();
        let last: Vec<&str> =
            if lines.len() > 1 { lines.last().copied().unwrap_or_default().split(';').collect() } else { Vec::new() };
        let field = |name: &str| -> u64 {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| last.get(i))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let created = field("TotalCallCreated").max(field("IncomingCall(C)"));
        SippOutcome {
            status,
            successful: field("SuccessfulCall(C)"),
            failed: field("FailedCall(C)"),
            created,
            retransmissions: field("Retransmissions(C)"),
            messages: read("messages.log"),
            screen: format!("{}\n{}", read("screen.log"), read("stderr.log")),
            errors: read("errors.log"),
        }
    }

    /// Exit status 0: every call succeeded.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// A one-paragraph summary for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "sipp status {:?}, successful {}, failed {}, created {}\n--- screen ---\n{}\n--- errors ---\n{:.3000}",
            self.status.and_then(|s| s.code()),
            self.successful,
            self.failed,
            self.created,
            self.screen,
            self.errors
        )
    }

    /// Assert exit status 0 and `calls` successful calls.
    pub fn assert_all_succeeded(&self, calls: u64) {
        assert!(self.succeeded(), "SIPp failed:\n{}", self.describe());
        assert_eq!(self.successful, calls, "successful calls:\n{}", self.describe());
        assert_eq!(self.failed, 0, "failed calls:\n{}", self.describe());
    }

    /// Messages SIPp received (from the `-trace_msg` log), as raw texts.
    pub fn received_messages(&self) -> Vec<String> {
        split_trace(&self.messages, "received")
    }

    /// Messages SIPp sent (from the `-trace_msg` log).
    pub fn sent_messages(&self) -> Vec<String> {
        split_trace(&self.messages, "sent")
    }
}

/// SIPp's message log: blocks starting `----…----\n<date> UDP message received [N] bytes :`
/// followed by the message.
fn split_trace(log: &str, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if line.starts_with("----------------------------------------------") {
            if let Some(m) = current.take() {
                out.push(m);
            }
            continue;
        }
        if line.contains(" message ") && line.contains(" bytes") && (line.contains("received") || line.contains("sent"))
        {
            if let Some(m) = current.take() {
                out.push(m);
            }
            if line.contains(&format!("message {what}")) {
                current = Some(String::new());
            }
            continue;
        }
        if let Some(m) = &mut current {
            m.push_str(line);
            m.push_str("\r\n");
        }
    }
    if let Some(m) = current {
        out.push(m);
    }
    out.into_iter().map(|m| m.trim_start().to_owned()).filter(|m| !m.is_empty()).collect()
}
