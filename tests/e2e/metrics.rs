//! The admin listener: `/metrics` counts calls, `/healthz` answers.

use std::process::Command;

use e2e_support::{require_tool, Proxy, ProxyConfig, Sipp};

use crate::{have_sipp, umproxy};

#[test]
fn metrics_count_a_call_and_pass_promtool() {
    if !have_sipp() {
        return;
    }
    let uas = Sipp::builtin("uas").calls(2);
    let hop = format!("sip:127.0.0.1:{};transport=udp", uas.port);
    let proxy = Proxy::start(umproxy(), ProxyConfig::new().route("*", &[&hop]));
    let before = proxy.metrics();
    let uas = uas.spawn();
    let uac = Sipp::builtin("uac").remote(proxy.udp_addr()).service("bob").calls(2).rate(10).run();
    uac.assert_all_succeeded(2);
    drop(uas);

    let (status, _) = proxy.admin_get("/healthz").expect("GET /healthz");
    assert_eq!(status, 200, "/healthz");

    let text = proxy.metrics();
    let value = |t: &str, s: &str| e2e_support::metric_value(t, s).unwrap_or(0.0);
    let invites_in = r#"umproxy_requests_total{direction="in",method="INVITE"}"#;
    let ok_out = r#"umproxy_responses_total{class="2xx",direction="out",method="INVITE"}"#;
    assert!(value(&text, invites_in) - value(&before, invites_in) >= 2.0, "INVITEs in not counted:\n{text}");
    assert!(value(&text, ok_out) - value(&before, ok_out) >= 2.0, "2xx out not counted:\n{text}");
    assert!(value(&text, r#"umproxy_requests_total{direction="out",method="BYE"}"#) >= 2.0, "{text}");

    // The exposition is valid for Prometheus.
    if !require_tool("promtool") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).expect("write scrape");
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open scrape"))
        .output()
        .expect("run promtool");
    // promtool exits non-zero on a parse error or a lint problem.
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
