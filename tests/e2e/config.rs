//! Configuration errors stop umproxy before it serves anything, and say
//! which file, which key and what is wrong.

use std::ffi::OsStr;
use std::net::{TcpListener, UdpSocket};
use std::process::Output;

use e2e_support::{free_port, run_cli, WAIT};

use crate::umproxy;

const VALID_REST: &str = "[proxy]\ndomains = [\"example.test\"]\n";

/// Write `text` as `umproxy.toml` in a tempdir and run `umproxy CMD FILE`.
fn run_with(cmd: &str, text: &str) -> (Output, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("umproxy.toml");
    std::fs::write(&file, text).expect("write config");
    let out = run_cli(umproxy(), &[OsStr::new(cmd), file.as_os_str()], WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

#[test]
fn check_config_on_bad_values_exits_nonzero_naming_file_key_and_problem() {
    let port = free_port();
    let cases = [
        (
            format!("[[listen]]\ntransport = \"sctp\"\naddress = \"127.0.0.1:{port}\"\n{VALID_REST}"),
            "umproxy.toml: listen[0].transport: ",
            "sctp",
        ),
        (
            format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{port}\"\n{VALID_REST}[limits]\nmax_headers = 0\n"),
            "umproxy.toml: limits.max_headers: ",
            "at least 1",
        ),
        (
            format!("[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:{port}\"\ncertificate = \"missing.pem\"\nprivate_key = \"missing.key\"\n{VALID_REST}"),
            "umproxy.toml: listen[0].certificate: ",
            "missing.pem",
        ),
    ];
    for (text, prefix, problem) in cases {
        let (out, stderr) = run_with("check-config", &text);
        assert!(!out.status.success(), "check-config accepted:\n{text}");
        let line = stderr.lines().find(|l| l.contains(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in:\n{stderr}"));
        assert!(line.contains(problem), "the problem is named ({problem}): {line}");
    }
    // A good file passes.
    let (out, stderr) = run_with(
        "check-config",
        &format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{port}\"\n{VALID_REST}"),
    );
    assert!(out.status.success(), "valid file refused: {stderr}");
}

/// README, Configuration: "Unknown keys are errors. An error names the file, the key
/// path and the problem".
#[test]
fn check_config_on_unknown_key_names_its_key_path() {
    let port = free_port();
    let text = format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{port}\"\n{VALID_REST}bogus = 1\n");
    let (out, stderr) = run_with("check-config", &text);
    assert!(!out.status.success(), "unknown key accepted");
    assert!(stderr.contains("umproxy.toml: proxy.bogus: "), "expected `umproxy.toml: proxy.bogus: …`, got:\n{stderr}");
}

#[test]
fn run_with_a_taken_listener_port_exits_nonzero_naming_the_address() {
    // TCP taken, UDP free: the UDP listener must not be left running.
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let admin = free_port();
    let text = format!(
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{port}\"\n\
         [[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n{VALID_REST}\
         [admin]\naddress = \"127.0.0.1:{admin}\"\n"
    );
    let (out, stderr) = run_with("run", &text);
    assert!(!out.status.success(), "run started on a taken port:\n{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "the address is named:\n{stderr}");
    assert!(!stderr.contains("umproxy started"), "it claimed to start:\n{stderr}");

    // UDP taken too.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = udp.local_addr().expect("addr").port();
    let text = format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{port}\"\n{VALID_REST}");
    let (out, stderr) = run_with("run", &text);
    assert!(!out.status.success(), "run started on a taken UDP port:\n{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "the address is named:\n{stderr}");
    drop((tcp, udp));
}
