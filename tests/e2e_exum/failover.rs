//! On-premises UM failover over mutual TLS: the next server on an error
//! response, a timeout, a refused connection or a certificate that does not
//! name the server; 480 to the caller when every server failed (EXUM.md
//! behaviours 8 and 14).

use std::time::{Duration, Instant};

use e2e_support::{Answer, TlsUas, WAIT};

use crate::fixture::{
    assert_call_succeeded, assert_um_invite, dead_addr, directory_toml, um_invite, Backend, Call, Expected, Exum,
    Peers, Pki, ACCEPT, UM_ATTEMPT_MS,
};
use crate::have_sipp;

fn peers(um: Vec<(&str, std::net::SocketAddr)>) -> Peers {
    Peers { um: um.into_iter().map(|(f, a)| (f.to_owned(), a)).collect(), exap: dead_addr(), sfb: dead_addr() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn um_server_answering_503_fails_over_to_the_next_server() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let um1 = pki.uas(&["um1.contoso.test"], Answer::Reject(503)).await;
    let um2 = pki.uas(&["um2.contoso.test"], ACCEPT).await;
    let exum = Exum::start(
        &pki,
        &directory_toml(&peers(vec![("um1.contoso.test", um1.addr), ("um2.contoso.test", um2.addr)]), None),
    );
    let log = || exum.proxy.log();
    // alice is not registered: unavailable.
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    assert_call_succeeded(&caller, &log);
    let first = um_invite(&um1, WAIT, &log).await;
    assert_eq!(first.request_uri(), Some("sip:um1.contoso.test;transport=tls"), "{first}");
    let second = um_invite(&um2, WAIT, &log).await;
    assert_um_invite(
        &second,
        &call,
        &Expected {
            request_uri: "sip:um2.contoso.test;transport=tls",
            diversion: Some("<sip:alice@contoso.test>;reason=unavailable;counter=1"),
            history_info: &[
                "<sip:alice@contoso.test>;index=1",
                "<sip:um2.contoso.test;transport=tls;cause=404>;index=1.1;mp=1",
            ],
        },
        &log,
    );
    assert_eq!(exum.metric(r#"umproxy_exum_um_failures_total{mode="on_prem",reason="all_failed"}"#), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_um_servers_failing_gives_480_within_the_attempt_timers() {
    all_um_failing_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_all_um_servers_failing_gives_480_within_the_attempt_timers() {
    all_um_failing_scenario(Backend::Ldap).await;
}

/// Every UM server fails (silent, refused, 500): 480 within the attempt timers.
async fn all_um_failing_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    // One that never answers (attempt timer), one refusing connections,
    // one answering 500.
    let silent = pki.uas(&["um1.contoso.test"], Answer::RingForever).await;
    let failing = pki.uas(&["um3.contoso.test"], Answer::Reject(500)).await;
    let Some(exum) = Exum::start_on(
        backend,
        &pki,
        &directory_toml(
            &peers(vec![
                ("um1.contoso.test", silent.addr),
                ("um2.contoso.test", dead_addr()),
                ("um3.contoso.test", failing.addr),
            ]),
            None,
        ),
        "",
    ) else {
        return;
    };
    let log = || exum.proxy.log();
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let started = Instant::now();
    let caller = call.run(exum.proxy.udp_addr(), Some(480)).await;
    let took = started.elapsed();
    assert!(caller.succeeded(), "caller did not get 480:\n{}\nproxy log:\n{}", caller.describe(), log());
    // Three attempts, each bounded by the attempt timer, plus slack.
    let bound = Duration::from_millis(3 * UM_ATTEMPT_MS) + Duration::from_secs(3);
    assert!(took < bound, "480 after {took:?}, more than {bound:?}");
    assert!(silent.wait_for("INVITE", WAIT).await.is_some(), "first server never tried:\n{}", log());
    assert!(silent.wait_for("CANCEL", WAIT).await.is_some(), "timed-out attempt not cancelled:\n{}", log());
    assert!(failing.wait_for("INVITE", WAIT).await.is_some(), "last server never tried:\n{}", log());
    assert_eq!(exum.metric(r#"umproxy_exum_um_failures_total{mode="on_prem",reason="all_failed"}"#), 1.0);
    assert!(log().contains(&call.call_id), "no log line naming the call:\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn um_server_with_a_wrong_certificate_is_refused_and_the_next_one_used() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    // A certificate from the right CA that names another host, and one
    // naming the right host from a CA the proxy does not trust.
    let misnamed = pki.uas(&["other.contoso.test"], ACCEPT).await;
    let rogue_cert = pki.rogue.server_cert(&["um2.contoso.test"]);
    let rogue = TlsUas::start(&rogue_cert, Some(&pki.ca), ACCEPT).await.expect("rogue UAS");
    let good = pki.uas(&["um3.contoso.test"], ACCEPT).await;
    let exum = Exum::start(
        &pki,
        &directory_toml(
            &peers(vec![
                ("um1.contoso.test", misnamed.addr),
                ("um2.contoso.test", rogue.addr),
                ("um3.contoso.test", good.addr),
            ]),
            None,
        ),
    );
    let log = || exum.proxy.log();
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    assert!(caller.succeeded(), "caller:\n{}\nproxy log:\n{}", caller.describe(), log());
    let invite = um_invite(&good, WAIT, &log).await;
    assert_eq!(invite.request_uri(), Some("sip:um3.contoso.test;transport=tls"), "{invite}");
    assert!(misnamed.received().is_empty(), "a server with a misnamed certificate got requests");
    assert!(rogue.received().is_empty(), "a server with an untrusted certificate got requests");
    let refused = exum.metric_sum("umproxy_transport_tls_handshake_failures_total", r#"direction="outbound""#);
    assert!(refused >= 2.0, "outbound handshake failures {refused}:\n{}", exum.proxy.metrics());
}

/// The OPTIONS health check (DESIGN.md §6): a UM server answering its
/// ping is up (1), one refusing connections or presenting a certificate
/// that does not name it is down (0). The first round runs at start.
///
/// Fails intermittently against the current proxy: `CoreHandle::originate`
/// sends the ping from a round-robin shard while its response is delivered
/// to the shard the Call-ID hashes to, so the 200 is lost about half the
/// time and the healthy server is marked down after Timer F (32 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn um_target_health_follows_options_pings() {
    let pki = Pki::new();
    let healthy = pki.uas(&["um1.contoso.test"], ACCEPT).await;
    let misnamed = pki.uas(&["other.contoso.test"], ACCEPT).await;
    let exum = Exum::start(
        &pki,
        &directory_toml(
            &peers(vec![
                ("um1.contoso.test", healthy.addr),
                ("um2.contoso.test", dead_addr()),
                ("um3.contoso.test", misnamed.addr),
            ]),
            None,
        ),
    );
    let pinged = healthy.wait_for("OPTIONS", WAIT).await;
    assert!(pinged.is_some(), "no OPTIONS ping reached the healthy server; log:\n{}", exum.proxy.log());
    let health = |fqdn: &str| {
        e2e_support::metric_value(&exum.proxy.metrics(), &format!("umproxy_exum_um_target_health{{server=\"{fqdn}\"}}"))
    };
    let started = Instant::now();
    let seen = e2e_support::poll_until(Duration::from_secs(40), || {
        let all = [health("um1.contoso.test"), health("um2.contoso.test"), health("um3.contoso.test")];
        all.iter().all(Option::is_some).then_some(all)
    });
    assert_eq!(
        seen,
        Some([Some(1.0), Some(0.0), Some(0.0)]),
        "health after {:?}:\n{}\nproxy log:\n{}",
        started.elapsed(),
        exum.proxy.metrics(),
        exum.proxy.log()
    );
    assert!(started.elapsed() < WAIT, "health known only after {:?}", started.elapsed());
    // The runtime control API says the same, with why the others are down.
    let (status, body) = exum.proxy.admin_get("/api/um-servers").expect("admin API");
    assert_eq!(status, 200, "{body}");
    for (server, up, error) in [
        ("um1.contoso.test", "\"up\":true", "\"last_error\":null"),
        ("um2.contoso.test", "\"up\":false", "\"last_error\":\"no answer"),
        ("um3.contoso.test", "\"up\":false", "\"last_error\":\"no answer"),
    ] {
        let entry = body.split('{').find(|e| e.contains(server)).unwrap_or_else(|| panic!("{server} missing: {body}"));
        assert!(entry.contains(up) && entry.contains(error), "{server}: {entry}\nin {body}");
    }
}

/// EXUM.md behaviour 14 ("each diversion logs mode, reason, target and
/// outcome") and 8 ("log line with call-id/user/servers tried"): the
/// operator can tell from the log where a call went and which servers
/// failed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_log_names_the_um_target_and_the_servers_tried() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let failing = pki.uas(&["um1.contoso.test"], Answer::Reject(500)).await;
    let exum = Exum::start(
        &pki,
        &directory_toml(&peers(vec![("um1.contoso.test", failing.addr), ("um2.contoso.test", dead_addr())]), None),
    );
    let log = || exum.proxy.log();
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), Some(480)).await;
    assert_call_succeeded(&caller, &log);
    let lines: Vec<String> = log().lines().filter(|l| l.contains(&call.call_id)).map(str::to_owned).collect();
    let routed =
        lines.iter().find(|l| l.contains("to voice mail")).unwrap_or_else(|| panic!("no routing line:\n{}", log()));
    assert!(
        routed.contains("dp-redmond") || routed.contains("um1.contoso.test"),
        "the routing line does not name the UM target: {routed}"
    );
    let failed = lines
        .iter()
        .find(|l| l.contains("no UM server accepted"))
        .unwrap_or_else(|| panic!("no failure line:\n{}", log()));
    for server in ["um1.contoso.test", "um2.contoso.test"] {
        assert!(failed.contains(server), "the failure line does not name {server}: {failed}");
    }
}
