//! dnsmasq on loopback as the DNS server of RFC 3263 tests.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

use crate::{free_port, poll_until, WAIT};

/// A dnsmasq answering only the records given (names under `.test`; other
/// `.test` names are NXDOMAIN, nothing is forwarded). Killed on drop.
pub struct DnsServer {
    child: Child,
    pub addr: SocketAddr,
}

impl DnsServer {
    /// Start dnsmasq with `records` (`--srv-host=…`, `--host-record=…`,
    /// `--naptr-record=…`). `None` when dnsmasq is missing and `CI` is not
    /// set (the caller skips); panics when it is missing under CI.
    pub fn start(records: &[String]) -> Option<DnsServer> {
        if !crate::require_tool_sbin("dnsmasq") {
            return None;
        }
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(crate::tool_path("dnsmasq"))
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--local=/test/",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dnsmasq: {e}"));
        let mut server = DnsServer { child, addr };
        // dnsmasq serves TCP too: once it accepts, it is up.
        let up = poll_until(WAIT, || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("dnsmasq exited at start: {status}");
            }
            TcpStream::connect(addr).ok()
        });
        assert!(up.is_some(), "dnsmasq did not start on {addr}");
        Some(server)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
