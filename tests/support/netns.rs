//! A real NAT made of Linux network namespaces, for the NAT traversal
//! tests (issue 18):
//!
//! ```text
//!  phone ns                 router ns                      server ns
//!  192.168.77.2 ---- 192.168.77.1 | 10.77.0.1 ------------ 10.77.0.2 (umproxy, outside callers)
//!                    source NAT (masquerade, ports 40000-40999) out of its outside link
//! ```
//!
//! The namespaces and their links are created by the test and removed on
//! drop; nothing is added to the namespace the test runs in, and no address
//! outside these namespaces is used. The server namespace has no route to
//! the phone's private network: what reaches the phone goes through the NAT.
//!
//! Needs root, `ip` and `nft` (or `iptables`): without them the test skips
//! with a message, or fails when `CI` is set.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{is_ci, tool_path, WAIT};

pub const PHONE_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 77, 2));
pub const ROUTER_INSIDE_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 77, 1));
/// The NAT's public address, as the server namespace sees the phone.
pub const ROUTER_OUTSIDE_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 1));
pub const SERVER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 2));

/// The three namespaces of one test.
pub struct NatLab {
    pub phone: String,
    pub router: String,
    pub server: String,
}

fn skip_or_fail(why: &str) -> Option<NatLab> {
    if is_ci() {
        panic!("CI is set but the NAT test cannot run: {why}");
    }
    eprintln!("{why}; skipping this NAT test");
    None
}

fn have(tool: &str) -> bool {
    crate::has_tool(tool)
}

fn run(args: &[&str]) -> Output {
    let Some((tool, rest)) = args.split_first() else { panic!("empty command") };
    Command::new(tool_path(tool))
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl NatLab {
    /// Build the namespaces, links, routes and the NAT; `None` when the
    /// machine cannot (not root, tools missing) and `CI` is not set.
    pub fn create() -> Option<NatLab> {
        let uid = run(&["id", "-u"]);
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return skip_or_fail("network namespaces need root");
        }
        if !have("ip") {
            return skip_or_fail("`ip` (iproute2) is missing");
        }
        let use_nft = have("nft");
        if !use_nft && !have("iptables") {
            return skip_or_fail("neither `nft` (nftables) nor `iptables` is installed");
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!("um{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let lab = NatLab { phone: format!("{id}ph"), router: format!("{id}rt"), server: format!("{id}sv") };
        for ns in [&lab.phone, &lab.router, &lab.server] {
            let out = run(&["ip", "netns", "add", ns]);
            if !out.status.success() {
                // Root without the right to make namespaces (a restricted
                // container): the same as lacking root.
                return skip_or_fail(&format!(
                    "`ip netns add` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // Links made inside the namespaces: no interface ever appears in
        // the namespace the test runs in.
        must(&[
            "ip",
            "-n",
            &lab.phone,
            "link",
            "add",
            "p0",
            "type",
            "veth",
            "peer",
            "name",
            "r0",
            "netns",
            &lab.router,
        ]);
        must(&[
            "ip",
            "-n",
            &lab.router,
            "link",
            "add",
            "r1",
            "type",
            "veth",
            "peer",
            "name",
            "s0",
            "netns",
            &lab.server,
        ]);
        let addr = |ns: &str, dev: &str, cidr: &str| {
            must(&["ip", "-n", ns, "addr", "add", cidr, "dev", dev]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        };
        addr(&lab.phone, "p0", "192.168.77.2/24");
        addr(&lab.router, "r0", "192.168.77.1/24");
        addr(&lab.router, "r1", "10.77.0.1/24");
        addr(&lab.server, "s0", "10.77.0.2/24");
        must(&["ip", "-n", &lab.phone, "route", "add", "default", "via", "192.168.77.1"]);
        // /proc/sys/net is the namespace's own (no procps needed).
        must(&["ip", "netns", "exec", &lab.router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
        if use_nft {
            let rules = "table ip nat {\n chain postrouting {\n  type nat hook postrouting priority 100;\n  \
                         oifname \"r1\" meta l4proto { tcp, udp } masquerade to :40000-40999\n }\n}\n";
            let mut child = Command::new(tool_path("ip"))
                .args(["netns", "exec", &lab.router, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run nft");
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write as _;
                stdin.write_all(rules.as_bytes()).expect("write nft rules");
            }
            let out = child.wait_with_output().expect("nft");
            assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
        } else {
            for proto in ["udp", "tcp"] {
                must(&[
                    "ip",
                    "netns",
                    "exec",
                    &lab.router,
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "r1",
                    "-p",
                    proto,
                    "-j",
                    "MASQUERADE",
                    "--to-ports",
                    "40000-40999",
                ]);
            }
        }
        Some(lab)
    }

    /// Forget every NAT mapping of the router (an expired pinhole):
    /// `conntrack -F`. `false` when `conntrack` is missing and `CI` is not
    /// set (the caller skips); under CI a missing tool fails.
    pub fn flush_nat(&self) -> bool {
        if !have("conntrack") {
            if is_ci() {
                panic!("CI is set but `conntrack` is missing");
            }
            eprintln!("`conntrack` is missing; skipping the pinhole part of this test");
            return false;
        }
        must(&["ip", "netns", "exec", &self.router, "conntrack", "-F"]);
        true
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in [&self.phone, &self.router, &self.server] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// `GET path` from inside `netns` (where the test process cannot connect):
/// bash's `/dev/tcp`, bounded by `timeout`. `(status, body)`.
pub fn http_get(netns: &str, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && printf 'GET {path} HTTP/1.0\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3",
        addr.ip(),
        addr.port()
    );
    let secs = WAIT.max(Duration::from_secs(1)).as_secs().to_string();
    let out = Command::new(tool_path("ip"))
        .args(["netns", "exec", netns, "timeout", &secs, "bash", "-c", &script])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.200}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
