//! Bad input over UDP, TCP and TLS: malformed and oversized messages,
//! §16.3 validation failures, a routing loop, an endless stream and a slow
//! sender. Each gets a SIP error answer or a clean close, and a normal
//! SIPp call through the same proxy still succeeds afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use e2e_support::sip::{read_message, request, SipMessage};
use e2e_support::sipp::SippProcess;
use e2e_support::tls_ua::client_config;
use e2e_support::{Ca, Proxy, ProxyConfig, Sipp, WAIT};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{have_sipp, umproxy};

/// How long we wait for an answer that may legitimately never come (UDP).
const QUIET: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Udp,
    Tcp,
    Tls,
}

impl Wire {
    fn via(self) -> &'static str {
        match self {
            Wire::Udp => "UDP",
            Wire::Tcp => "TCP",
            Wire::Tls => "TLS",
        }
    }
}

/// What came back for some bytes.
#[derive(Debug)]
enum Reply {
    /// The final response.
    Response(SipMessage),
    /// The connection was closed with no final response.
    Closed,
    /// Nothing within the wait.
    Silence,
}

impl Reply {
    fn status(&self) -> Option<u16> {
        match self {
            Reply::Response(m) => m.status(),
            _ => None,
        }
    }
}

/// One proxy with small limits, a TLS listener, a route looping back to
/// itself for `loop.test`, and a SIPp callee for everything else.
struct Bench {
    proxy: Proxy,
    ca: Ca,
    uas: Option<SippProcess>,
}

impl Bench {
    fn start() -> Bench {
        let ca = Ca::new("e2e test CA");
        let cert = ca.server_cert(&["127.0.0.1"]);
        let uas = Sipp::builtin("uas").timeout(Duration::from_secs(170));
        let hop = format!("sip:127.0.0.1:{};transport=udp", uas.port);
        let config = ProxyConfig::new().with_tls(&cert.cert_path, &cert.key_path, None);
        let myself = format!("sip:127.0.0.1:{};transport=udp", config.sip_port);
        let config = config
            .route("loop.test", &[&myself])
            .route("*", &[&hop])
            .extra("[limits]\nmax_message_size = 4096\nmax_body = 2048\nmax_headers = 20\nmax_header_line = 512\n");
        let proxy = Proxy::start(umproxy(), config);
        Bench { proxy, ca, uas: Some(uas.spawn()) }
    }

    fn addr(&self, wire: Wire) -> SocketAddr {
        match wire {
            Wire::Udp => self.proxy.udp_addr(),
            Wire::Tcp => self.proxy.tcp_addr(),
            Wire::Tls => self.proxy.tls_addr(),
        }
    }

    /// Send `build(local address)` and wait for the final response, a
    /// close, or `wait` of silence.
    async fn send(&self, wire: Wire, build: impl FnOnce(SocketAddr) -> Vec<u8>, wait: Duration) -> Reply {
        match wire {
            Wire::Udp => {
                let responses = e2e_support::sip::udp_exchange(self.addr(wire), build, wait).await.expect("udp");
                match responses.into_iter().rfind(|m| m.status().is_some_and(|s| s >= 200)) {
                    Some(m) => Reply::Response(m),
                    None => Reply::Silence,
                }
            }
            Wire::Tcp => {
                let mut s = TcpStream::connect(self.addr(wire)).await.expect("tcp connect");
                let local = s.local_addr().expect("local");
                stream_exchange(&mut s, &build(local), wait).await
            }
            Wire::Tls => {
                let mut s = self.tls_connect().await;
                let local = s.get_ref().0.local_addr().expect("local");
                stream_exchange(&mut s, &build(local), wait).await
            }
        }
    }

    async fn tls_connect(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let connector = tokio_rustls::TlsConnector::from(client_config(&self.ca, None));
        let tcp = TcpStream::connect(self.proxy.tls_addr()).await.expect("tcp connect");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.expect("handshake in time").expect("handshake")
    }

    /// A normal SIPp call (over UDP) still completes.
    async fn assert_call_works(&self, after: &str) {
        let remote = self.proxy.udp_addr();
        let uac = tokio::task::spawn_blocking(move || {
            Sipp::builtin("uac").remote(remote).service("bob").calls(1).timeout(Duration::from_secs(15)).run()
        })
        .await
        .expect("sipp thread");
        assert!(
            uac.succeeded(),
            "after {after}, a normal call failed:\n{}\nproxy:\n{}",
            uac.describe(),
            self.proxy.log()
        );
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(uas) = self.uas.take() {
            drop(uas.stop());
        }
    }
}

/// Write `bytes`, then read until a final response, EOF/reset, or `wait`.
async fn stream_exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, bytes: &[u8], wait: Duration) -> Reply {
    if s.write_all(bytes).await.is_err() || s.flush().await.is_err() {
        return Reply::Closed;
    }
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match read_message(s, &mut buf, left).await {
            Ok(Some(m)) if m.status().is_some_and(|c| c >= 200) => return Reply::Response(m),
            Ok(Some(_)) => continue,
            Ok(None) => return Reply::Closed,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Reply::Silence,
            Err(_) => return Reply::Closed,
        }
    }
}

fn invite(wire: Wire, uri: &str, local: SocketAddr) -> SipMessage {
    request("INVITE", uri, wire.via(), local)
}

/// The limit cases: (name, message builder, acceptable statuses). A clean
/// close is acceptable on TCP and TLS for all of them.
#[allow(clippy::type_complexity)]
fn limit_cases(wire: Wire) -> Vec<(&'static str, Box<dyn Fn(SocketAddr) -> Vec<u8> + Send>, &'static [u16])> {
    vec![
        (
            "too many headers (max_headers 20)",
            Box::new(move |l| {
                let mut m = invite(wire, "sip:bob@far.test", l);
                for i in 0..30 {
                    m = m.with_header(&format!("X-Extra-{i}"), "1");
                }
                m.to_bytes()
            }),
            &[400, 413, 513],
        ),
        (
            "a header line over max_header_line 512",
            Box::new(move |l| invite(wire, "sip:bob@far.test", l).with_header("Subject", &"x".repeat(1000)).to_bytes()),
            &[400, 413, 513],
        ),
        (
            "a message over max_message_size 4096",
            Box::new(move |l| {
                let mut m = invite(wire, "sip:bob@far.test", l);
                m.body = vec![b'v'; 5000];
                for (n, v) in &mut m.headers {
                    if n == "Content-Length" {
                        *v = "5000".into();
                    }
                }
                m.with_header("Content-Type", "application/sdp").to_bytes()
            }),
            &[413, 513],
        ),
    ]
}

async fn bad_input_over(wire: Wire) {
    if !have_sipp() {
        return;
    }
    let bench = Bench::start();

    // A truncated message: headers cut short. UDP: answered 400 or dropped;
    // a stream: the proxy waits for the rest, and closes when we do.
    let truncated = |l: SocketAddr| {
        let full = invite(wire, "sip:bob@far.test", l).to_bytes();
        full[..full.len() / 2].to_vec()
    };
    match wire {
        Wire::Udp => {
            let r = bench.send(wire, truncated, QUIET).await;
            assert!(matches!(r, Reply::Silence) || r.status() == Some(400), "truncated datagram: {r:?}");
        }
        Wire::Tcp => {
            let mut s = TcpStream::connect(bench.addr(wire)).await.expect("connect");
            let local = s.local_addr().expect("local");
            s.write_all(&truncated(local)).await.expect("write");
            s.shutdown().await.expect("half close");
            let r = stream_exchange(&mut s, b"", WAIT).await;
            assert!(matches!(r, Reply::Closed), "truncated TCP message then FIN: {r:?}");
        }
        Wire::Tls => {
            let mut s = bench.tls_connect().await;
            let local = s.get_ref().0.local_addr().expect("local");
            s.write_all(&truncated(local)).await.expect("write");
            s.shutdown().await.expect("close_notify");
            let r = stream_exchange(&mut s, b"", WAIT).await;
            assert!(matches!(r, Reply::Closed), "truncated TLS message then close: {r:?}");
        }
    }
    bench.assert_call_works("a truncated message").await;

    for (name, build, statuses) in limit_cases(wire) {
        let r = bench.send(wire, build, WAIT).await;
        let ok = r.status().is_some_and(|s| statuses.contains(&s)) || (wire != Wire::Udp && matches!(r, Reply::Closed));
        assert!(
            ok,
            "{wire:?}, {name}: expected one of {statuses:?} or a close, got {r:?}\nproxy:\n{}",
            bench.proxy.log()
        );
        bench.assert_call_works(name).await;
    }

    // RFC 3261 §16.3 validation.
    let r =
        bench.send(wire, |l| invite(wire, "sip:bob@far.test", l).with_header("X-Dummy", "1").to_bytes(), WAIT).await;
    assert!(r.status().is_some(), "{wire:?}: a valid INVITE got no final answer: {r:?}");
    let mf0 = move |l| {
        let mut m = invite(wire, "sip:bob@far.test", l);
        for (n, v) in &mut m.headers {
            if n == "Max-Forwards" {
                *v = "0".into();
            }
        }
        m.to_bytes()
    };
    assert_eq!(bench.send(wire, mf0, WAIT).await.status(), Some(483), "{wire:?}: Max-Forwards 0");
    let scheme = move |l| {
        let mut m = invite(wire, "xyz:bob@far.test", l);
        m.start_line = "INVITE xyz:bob@far.test SIP/2.0".into();
        m.to_bytes()
    };
    assert_eq!(bench.send(wire, scheme, WAIT).await.status(), Some(416), "{wire:?}: unknown URI scheme");
    let r = bench
        .send(
            wire,
            move |l| invite(wire, "sip:bob@far.test", l).with_header("Proxy-Require", "x-unheard-of").to_bytes(),
            WAIT,
        )
        .await;
    assert_eq!(r.status(), Some(420), "{wire:?}: Proxy-Require: {r:?}");
    if let Reply::Response(m) = &r {
        assert_eq!(m.header("Unsupported"), Some("x-unheard-of"), "420 names the option: {m}");
    }
    bench.assert_call_works("validation failures").await;

    // A route back to the proxy itself: the loop is caught (RFC 5393 loop
    // detection, or Max-Forwards running out) instead of spinning.
    let r = bench.send(wire, move |l| invite(wire, "sip:bob@loop.test", l).to_bytes(), Duration::from_secs(15)).await;
    assert!(matches!(r.status(), Some(482 | 483)), "{wire:?}: looping request: {r:?}\nproxy:\n{}", bench.proxy.log());
    bench.assert_call_works("a loop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_udp_is_answered_and_proxy_keeps_serving() {
    bad_input_over(Wire::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_tcp_is_answered_or_closed_and_proxy_keeps_serving() {
    bad_input_over(Wire::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_tls_is_answered_or_closed_and_proxy_keeps_serving() {
    bad_input_over(Wire::Tls).await;
}

/// 10 MB with no end of headers: the proxy closes the connection once its
/// buffer limit is passed, long before the 10 MB are through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_tcp_header_stream_is_closed() {
    if !have_sipp() {
        return;
    }
    let bench = Bench::start();
    let mut s = TcpStream::connect(bench.addr(Wire::Tcp)).await.expect("connect");
    s.write_all(b"INVITE sip:bob@far.test SIP/2.0\r\nX-Junk: ").await.expect("write");
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while sent < 10 * 1024 * 1024 {
            if s.write_all(&chunk).await.is_err() {
                return true;
            }
            sent += chunk.len();
        }
        // Everything went into socket buffers: the close must show on read.
        let mut b = [0u8; 1024];
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "connection still open after {sent} bytes without CRLFCRLF");
    assert!(sent < 10 * 1024 * 1024, "the proxy swallowed all 10 MB before closing");
    bench.assert_call_works("an endless header stream").await;
}

/// A sender of one byte a second is closed by the transport's per-message
/// timeout (10 s, built in; `[limits]` does not expose it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tcp_sender_is_closed() {
    if !have_sipp() {
        return;
    }
    let bench = Bench::start();
    let mut s = TcpStream::connect(bench.addr(Wire::Tcp)).await.expect("connect");
    let local = s.local_addr().expect("local");
    let msg = invite(Wire::Tcp, "sip:bob@far.test", local).to_bytes();
    let started = tokio::time::Instant::now();
    let mut closed_after = None;
    let mut b = [0u8; 1024];
    for byte in msg.iter().take(40) {
        if s.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // Read for a second: EOF or reset means the proxy closed.
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            _ => {}
        }
    }
    let closed_after = closed_after.expect("a one-byte-a-second sender was never closed");
    assert!(closed_after < Duration::from_secs(20), "closed only after {closed_after:?}");
    bench.assert_call_works("a slow sender").await;
}
