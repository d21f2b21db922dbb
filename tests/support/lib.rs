//! Support for the end-to-end tests: finding the umproxy binary, free ports,
//! certificates, and real peers (SIPp, a TLS user agent, DNS servers).
//!
//! Every spawned process sits in a guard that kills it on drop, and every
//! wait has a deadline, so a failing test never leaves a process behind and
//! never hangs.
//!
//! A typical test (the binary path comes from the test crate, which alone
//! sees `CARGO_BIN_EXE_umproxy`):
//!
//! ```ignore
//! let uas = Sipp::scenario_file(scenario("uas_rr.xml")).calls(1);   // port chosen now
//! let hop = format!("sip:127.0.0.1:{};transport=udp", uas.port);
//! let proxy = Proxy::start(bin, ProxyConfig::new().route("*", &[&hop]));
//! let uas = uas.spawn();
//! Sipp::builtin("uac").remote(proxy.udp_addr()).service("bob").calls(1).run().assert_all_succeeded(1);
//! ```
//!
//! TLS peers: `Ca::new` → `ca.server_cert(&["127.0.0.1"])` / `ca.client_cert(..)`
//! (PEM files for the proxy's config, DER for rustls), `TlsUas::start(&cert,
//! client_ca, Answer::Accept)`, `TlsClient::connect(addr, name, &ca, client_cert)`.

pub mod baresip;
pub mod certs;
pub mod dns;
pub mod netns;
pub mod ports;
pub mod proxy;
pub mod sip;
pub mod sipp;
pub mod tls_ua;

use std::time::Duration;

pub use baresip::Baresip;
pub use certs::{Ca, CertKey};
pub use dns::DnsServer;
pub use ports::free_port;
pub use proxy::{http_get, metric_value, run_cli, Proxy, ProxyConfig};
pub use sip::SipMessage;
pub use sipp::{Sipp, SippOutcome, SippTransport};
pub use tls_ua::{Answer, TlsClient, TlsUas};

/// Default deadline for anything that should happen "at once" on loopback.
pub const WAIT: Duration = Duration::from_secs(10);

/// True when running under CI (the `CI` environment variable is set), where
/// a missing external tool is a failure rather than a skip.
pub fn is_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Whether `tool` can be found on `PATH`. When it cannot: under CI this
/// panics (the test fails); otherwise it prints why the test is skipped and
/// returns false.
pub fn require_tool(tool: &str) -> bool {
    if find_on_path(tool) {
        return true;
    }
    if is_ci() {
        panic!("CI is set but `{tool}` is not on PATH");
    }
    eprintln!("`{tool}` is not on PATH; skipping this test");
    false
}

fn find_on_path(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

/// Like [`require_tool`], also looking in the `sbin` directories, where
/// daemons such as dnsmasq live and which a user's `PATH` may lack.
pub fn require_tool_sbin(tool: &str) -> bool {
    if find_on_path(tool) || SBIN.iter().any(|d| std::path::Path::new(d).join(tool).is_file()) {
        return true;
    }
    require_tool(tool)
}

const SBIN: [&str; 2] = ["/usr/sbin", "/usr/local/sbin"];

/// Whether `tool` is on `PATH` or in an `sbin` directory (no message).
pub fn has_tool(tool: &str) -> bool {
    find_on_path(tool) || SBIN.iter().any(|d| std::path::Path::new(d).join(tool).is_file())
}

/// The command to run for `tool`: its name when it is on `PATH`, else its
/// path in an `sbin` directory.
pub fn tool_path(tool: &str) -> std::path::PathBuf {
    if find_on_path(tool) {
        return tool.into();
    }
    SBIN.iter().map(|d| std::path::Path::new(d).join(tool)).find(|p| p.is_file()).unwrap_or_else(|| tool.into())
}

/// Poll `probe` every 20 ms until it returns `Some`, or give up after
/// `timeout`.
pub fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Remove ANSI colour escapes (tracing's text format) from captured logs.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
