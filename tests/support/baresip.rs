//! baresip (Debian `baresip`), headless: no audio device (the `aubridge`
//! module stands in for sound card and speaker), one account registered
//! through the proxy's TLS listener with digest credentials, driven through
//! its `ctrl_tcp` command interface (netstring-framed JSON commands and
//! events).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, poll_until, strip_ansi, WAIT};

/// One running baresip with one account. Killed on drop.
pub struct Baresip {
    child: Child,
    dir: TempDir,
    pub aor: String,
    ctrl_port: u16,
    ctrl: Option<TcpStream>,
    buf: Vec<u8>,
    /// Every event and response received so far (JSON texts).
    pub seen: Vec<String>,
}

impl Baresip {
    /// Start baresip for `user@domain` with `password`, registering through
    /// `proxy` (a TLS listener whose certificate chains to `ca`).
    pub fn start(user: &str, domain: &str, password: &str, proxy: SocketAddr, ca: &Path) -> Baresip {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sip_port, ctrl_port) = (free_port(), free_port());
        // `uuid` gives the +sip.instance RFC 5626 outbound needs; calls to
        // this account then come back over its registration's connection.
        let config = format!(
            "poll_method\tepoll\nsip_listen\t127.0.0.1:{sip_port}\nsip_cafile\t{ca}\n\
             audio_player\taubridge,{user}\naudio_source\taubridge,{user}\naudio_alert\taubridge,{user}\n\
             module_path\t/usr/lib/baresip/modules\nmodule\tg711.so\nmodule\taubridge.so\nmodule\tuuid.so\n\
             module_app\taccount.so\nmodule_app\tmenu.so\nmodule_app\tctrl_tcp.so\n\
             ctrl_tcp_listen\t127.0.0.1:{ctrl_port}\n",
            ca = ca.display()
        );
        std::fs::write(dir.path().join("config"), config).expect("write baresip config");
        let aor = format!("sip:{user}@{domain}");
        let account = format!(
            "<{aor};transport=tls>;auth_pass={password};outbound=\"sip:{proxy};transport=tls\";regint=600;sipnat=outbound\n"
        );
        std::fs::write(dir.path().join("accounts"), account).expect("write accounts");
        let out = File::create(dir.path().join("baresip.log")).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run baresip: {e}"));
        Baresip { child, dir, aor, ctrl_port, ctrl: None, buf: Vec::new(), seen: Vec::new() }
    }

    /// What baresip printed (colours removed).
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default())
    }

    /// Wait until baresip has printed `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) -> bool {
        poll_until(timeout, || self.log().contains(text).then_some(())).is_some()
    }

    fn connect(&mut self) -> &mut TcpStream {
        if self.ctrl.is_none() {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.ctrl_port));
            let stream = poll_until(WAIT, || TcpStream::connect(addr).ok())
                .unwrap_or_else(|| panic!("baresip's ctrl_tcp does not answer; log:\n{}", self.log()));
            stream.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            self.ctrl = Some(stream);
        }
        self.ctrl.as_mut().expect("connected")
    }

    /// Open the command connection now (events are only sent to
    /// connections that exist when they happen).
    pub fn attach(&mut self) {
        self.connect();
    }

    /// Send a command (`dial`, `accept`, `hangup` …) with its parameters.
    pub fn command(&mut self, command: &str, params: &str) {
        let json = format!(
            "{{\"command\":\"{}\",\"params\":\"{}\",\"token\":\"t\"}}",
            command.replace(['"', '\\'], ""),
            params.replace(['"', '\\'], "")
        );
        let frame = format!("{}:{json},", json.len());
        self.connect().write_all(frame.as_bytes()).expect("send command to baresip");
    }

    /// Wait for an event of `kind` (`CALL_INCOMING`, `CALL_ESTABLISHED`,
    /// `CALL_CLOSED` …); returns its JSON text.
    pub fn wait_event(&mut self, kind: &str, timeout: Duration) -> Option<String> {
        let wanted = format!("\"type\":\"{kind}\"");
        if let Some(e) = self.seen.iter().find(|e| e.replace(' ', "").contains(&wanted)) {
            return Some(e.clone());
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut chunk = [0u8; 4096];
            match self.connect().read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
            while let Some(payload) = take_netstring(&mut self.buf) {
                let matched = payload.replace(' ', "").contains(&wanted);
                self.seen.push(payload.clone());
                if matched {
                    return Some(payload);
                }
            }
        }
        None
    }
}

/// One `len:payload,` frame off the front of `buf`, when complete.
fn take_netstring(buf: &mut Vec<u8>) -> Option<String> {
    let colon = buf.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(buf.get(..colon)?).ok()?.trim().parse().ok()?;
    let end = colon + 1 + len;
    if buf.len() < end + 1 {
        return None;
    }
    let payload = String::from_utf8_lossy(buf.get(colon + 1..end)?).into_owned();
    buf.drain(..=end);
    Some(payload)
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
