//! Per-source limits (Kamailio's `pike`): one source address flooding new
//! requests is throttled and counted, while a trusted peer's calls and
//! another, well-behaved source are served in full.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_support::sip::request;
use e2e_support::{Proxy, ProxyConfig, SipMessage, Sipp};

use crate::{have_sipp, scenario, umproxy};

const RATE: u64 = 50;
const BURST: u64 = 100;
/// How long the flood lasts, and its bound in packets.
const FLOOD_FOR: Duration = Duration::from_secs(3);
const FLOOD_MAX: u64 = 15_000;

/// An OPTIONS for the proxy itself (answered 200 by it) from `local`.
fn options(local: SocketAddr, proxy: SocketAddr) -> Vec<u8> {
    request("OPTIONS", &format!("sip:{proxy}"), "UDP", local).to_bytes()
}

/// Flood `proxy` with OPTIONS from 127.0.0.3 for [`FLOOD_FOR`]: returns
/// (sent, answered, seconds it lasted).
async fn flood(proxy: SocketAddr) -> (u64, u64, f64) {
    let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.3:0").await.expect("bind 127.0.0.3"));
    let local = sock.local_addr().expect("local address");
    let answered = Arc::new(AtomicU64::new(0));
    let reader = {
        let (sock, answered) = (sock.clone(), answered.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
                if SipMessage::parse(&buf[..n]).and_then(|m| m.status()) == Some(200) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let start = Instant::now();
    let mut sent = 0;
    // About 5000 a second, a hundred times the source's rate: what the
    // proxy reads, so that what is measured is the limiter, not the kernel
    // dropping from a full socket buffer (which hits every source alike).
    while start.elapsed() < FLOOD_FOR && sent < FLOOD_MAX {
        for _ in 0..50 {
            if sock.send_to(&options(local, proxy), proxy).await.is_ok() {
                sent += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lasted = start.elapsed().as_secs_f64();
    let _ = reader.await;
    (sent, answered.load(Ordering::Relaxed), lasted)
}

/// A polite source at 127.0.0.4: `n` OPTIONS, one at a time, 10 a second,
/// each retransmitted as RFC 3261 Timer E says (a flood overflows the
/// proxy's socket buffer for everyone: the kernel drops before any limiter
/// sees the packet); how many were answered 200.
async fn polite(proxy: SocketAddr, n: u32) -> u32 {
    let sock = tokio::net::UdpSocket::bind("127.0.0.4:0").await.expect("bind 127.0.0.4");
    let local = sock.local_addr().expect("local address");
    let mut ok = 0;
    let mut buf = vec![0u8; 65536];
    for _ in 0..n {
        let req = options(local, proxy);
        let mut wait = Duration::from_millis(500);
        for _ in 0..5 {
            let _ = sock.send_to(&req, proxy).await;
            if let Ok(Ok((len, _))) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
                if SipMessage::parse(&buf[..len]).and_then(|m| m.status()) == Some(200) {
                    ok += 1;
                }
                break;
            }
            wait *= 2;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_source_is_throttled_while_other_sources_are_served() {
    if !have_sipp() {
        return;
    }
    let uas = Sipp::scenario_file(scenario("uas_rr.xml")).calls(100);
    let hop = format!("sip:127.0.0.1:{}", uas.port);
    let mut config = ProxyConfig::new()
        .route("*", &[&hop])
        .extra(&format!("[limits]\nsource_rate = {RATE}\nsource_burst = {BURST}\n"));
    // The SIPp caller is a trusted peer (an SBC): exempt.
    config.trusted_peers = vec!["127.0.0.2/32".into()];
    let proxy = Proxy::start(umproxy(), config);
    let addr = proxy.udp_addr();
    let uas = uas.spawn();
    let uac = Sipp::scenario_file(scenario("uac_rr.xml"))
        .remote(addr)
        .service("bob")
        .arg("-i")
        .arg("127.0.0.2")
        .calls(100)
        .rate(40)
        .timeout(Duration::from_secs(60));
    let uac = tokio::task::spawn_blocking(move || uac.run());
    let (flooded, polite) = tokio::join!(flood(addr), polite(addr, 30));
    let uac = uac.await.expect("sipp task");
    let uas = uas.wait();
    let (sent, answered, lasted) = flooded;

    uac.assert_all_succeeded(100);
    uas.assert_all_succeeded(100);
    assert_eq!(polite, 30, "the polite source was throttled too; log:\n{}", proxy.log());
    let allowed = BURST + (RATE as f64 * lasted).ceil() as u64 + 10;
    assert!(answered <= allowed, "the flooder got {answered} answers of {sent} in {lasted:.1} s (at most {allowed})");
    let dropped = proxy.metric(r#"umproxy_drops_total{reason="rate_limited"}"#);
    assert!(
        dropped >= (sent / 2) as f64 && sent > 2 * allowed,
        "sent {sent}, answered {answered}, counted {dropped} as rate-limited"
    );
    let log = proxy.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("source over its request rate")).collect();
    assert!(!lines.is_empty(), "no log line for the throttled source:\n{log}");
    assert!(lines.iter().all(|l| l.contains("source=127.0.0.3")), "{lines:#?}");
    assert!(lines.len() < 20, "the log is not rate limited: {} lines", lines.len());
}
