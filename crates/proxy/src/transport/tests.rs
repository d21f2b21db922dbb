//! Transport tests on real loopback sockets and real TLS handshakes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::Registry;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

// ---- harness ----

struct TestDispatch {
    inbound: mpsc::UnboundedSender<Inbound>,
    failed: mpsc::UnboundedSender<(SendToken, Destination, SendFailure)>,
    overloaded: AtomicBool,
}

impl Dispatch for TestDispatch {
    fn deliver(&self, inbound: Inbound) -> Result<(), Overloaded> {
        if self.overloaded.load(Ordering::Relaxed) {
            return Err(Overloaded);
        }
        let _ = self.inbound.send(inbound);
        Ok(())
    }

    fn send_failed(&self, token: SendToken, dest: &Destination, failure: SendFailure) {
        let _ = self.failed.send((token, dest.clone(), failure));
    }
}

struct Harness {
    hub: Arc<TransportHub>,
    dispatch: Arc<TestDispatch>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    failed: mpsc::UnboundedReceiver<(SendToken, Destination, SendFailure)>,
    registry: Registry,
}

impl Harness {
    async fn start(specs: Vec<ListenerSpec>, limits: TransportLimits, outbound: OutboundTls) -> Harness {
        let (itx, inbound) = mpsc::unbounded_channel();
        let (ftx, failed) = mpsc::unbounded_channel();
        let dispatch = Arc::new(TestDispatch { inbound: itx, failed: ftx, overloaded: AtomicBool::new(false) });
        let registry = Registry::new();
        let hub = TransportHub::start(specs, limits, outbound, dispatch.clone(), &registry).await.unwrap();
        Harness { hub, dispatch, inbound, failed, registry }
    }

    async fn plain(transport: Transport, limits: TransportLimits) -> Harness {
        Harness::start(vec![listen(transport, None)], limits, OutboundTls::default()).await
    }

    fn addr(&self, transport: Transport) -> SocketAddr {
        self.hub.listeners().iter().find(|l| l.transport == transport).unwrap().local
    }

    async fn next(&mut self) -> Inbound {
        timeout(WAIT, self.inbound.recv()).await.expect("no message delivered").unwrap()
    }

    async fn next_failure(&mut self) -> (SendToken, Destination, SendFailure) {
        timeout(WAIT, self.failed.recv()).await.expect("no send failure reported").unwrap()
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut total = 0.0;
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for m in family.get_metric() {
                let matches =
                    labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v));
                if matches {
                    total += m.get_counter().get_value() + m.get_gauge().get_value();
                }
            }
        }
        total as u64
    }
}

fn listen(transport: Transport, tls: Option<TlsServerSpec>) -> ListenerSpec {
    ListenerSpec { transport, bind: "127.0.0.1:0".parse().unwrap(), advertise: None, tls }
}

fn options(branch: &str, transport: &str) -> String {
    format!(
        "OPTIONS sip:bob@example.test SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1:5999;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nTo: <sip:bob@example.test>\r\nFrom: <sip:alice@example.test>;tag=1\r\n\
         Call-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Read until a whole header section (our test responses have no body).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = timeout(WAIT, s.read(&mut chunk)).await.expect("read timed out").unwrap();
        assert!(n > 0, "closed before a whole message: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(out).unwrap()
}

/// Wait until the peer closes the connection (EOF or reset).
async fn expect_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut chunk = [0u8; 65536];
    loop {
        match timeout(WAIT, s.read(&mut chunk)).await.expect("connection not closed") {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Send one datagram and wait for a reply: up to [`WAIT`] when one is
/// expected, briefly when none is (a late reply then fails later checks).
async fn udp_exchange(hub_addr: SocketAddr, msg: &[u8], expect_reply: bool) -> (UdpSocket, Option<String>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(msg, hub_addr).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let wait = if expect_reply { WAIT } else { Duration::from_millis(200) };
    let reply = match timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    };
    (sock, reply)
}

// ---- certificates ----

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap().der().clone();
        Ca { params, key, cert }
    }

    fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key)).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key.serialize_der().into()))
    }

    fn server_spec(&self, names: &[&str], client_ca: Option<&Ca>) -> TlsServerSpec {
        let (cert_chain, key) = self.leaf(names);
        TlsServerSpec { cert_chain, key, client_ca: client_ca.map(|ca| vec![ca.cert.clone()]) }
    }

    fn client_spec(&self, identity: Option<&Ca>, names: &[&str]) -> TlsClientSpec {
        TlsClientSpec { identity: identity.map(|ca| ca.leaf(names)), roots: vec![self.cert.clone()] }
    }
}

/// A TLS client as a phone would be: trusts `roots`, presents `identity`.
async fn tls_connect(
    addr: SocketAddr,
    roots: &[&Ca],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for ca in roots {
        store.add(ca.cert.clone()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("server.test").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

async fn send_and_expect_delivery<S: AsyncWrite + Unpin>(h: &mut Harness, s: &mut S, branch: &str) -> Inbound {
    s.write_all(options(branch, "TLS").as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    let got = h.next().await;
    assert_eq!(got.msg.branch(), Some(format!("z9hG4bK{branch}").as_str()));
    got
}

// ---- UDP ----

#[tokio::test]
async fn udp_request_is_delivered_with_its_peer() {
    let mut h = Harness::plain(Transport::Udp, TransportLimits::default()).await;
    let hub_addr = h.addr(Transport::Udp);
    let (sock, reply) = udp_exchange(hub_addr, options("u1", "UDP").as_bytes(), false).await;
    assert!(reply.is_none());
    let got = h.next().await;
    assert_eq!(got.peer.transport, Transport::Udp);
    assert_eq!(got.peer.remote, sock.local_addr().unwrap());
    assert_eq!(got.peer.local, hub_addr);
    assert_eq!(got.peer.flow, None);
    assert!(got.tls.is_none());
    assert_eq!(h.metric("umproxy_transport_messages_received_total", &[("transport", "udp")]), 1);

    // And the hub sends back to it.
    h.hub.send(Outbound { dest: Destination::reply_to(&got.peer), bytes: Bytes::from_static(b"hello"), token: None });
    let mut buf = [0u8; 64];
    let (n, from) = timeout(WAIT, sock.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..n], from), (&b"hello"[..], hub_addr));
}

#[tokio::test]
async fn udp_malformed_request_gets_400_and_garbage_is_counted() {
    let mut h = Harness::plain(Transport::Udp, TransportLimits::default()).await;
    let bad = options("u2", "UDP").replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS");
    let (_s, reply) = udp_exchange(h.addr(Transport::Udp), bad.as_bytes(), true).await;
    let reply = reply.expect("no 400");
    assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");
    assert!(reply.contains("branch=z9hG4bKu2"));

    let (s, reply) = udp_exchange(h.addr(Transport::Udp), b"\x16\x03\x01 not sip at all", false).await;
    assert!(reply.is_none());
    // One task reads the socket in order: once a later message is
    // delivered, the garbage has been handled.
    s.send_to(options("u2b", "UDP").as_bytes(), h.addr(Transport::Udp)).await.unwrap();
    assert_eq!(h.next().await.msg.branch(), Some("z9hG4bKu2b"));
    assert_eq!(h.metric("umproxy_transport_parse_errors_total", &[("transport", "udp")]), 2);
}

#[tokio::test]
async fn udp_too_many_headers_gets_513() {
    let limits =
        TransportLimits { sip: sip_message::Limits { max_headers: 12, ..Default::default() }, ..Default::default() };
    let h = Harness::plain(Transport::Udp, limits).await;
    let big = options("u3", "UDP").replace("Max-Forwards", &"X-Pad: 1\r\n".repeat(20).add_suffix("Max-Forwards"));
    let (_s, reply) = udp_exchange(h.addr(Transport::Udp), big.as_bytes(), true).await;
    let reply = reply.expect("no 513");
    assert!(reply.starts_with("SIP/2.0 513 "), "{reply}");
    assert_eq!(
        h.metric("umproxy_transport_parse_errors_total", &[("transport", "udp"), ("kind", "limit_header_count")]),
        1
    );
}

trait AddSuffix {
    fn add_suffix(self, s: &str) -> String;
}

impl AddSuffix for String {
    fn add_suffix(mut self, s: &str) -> String {
        self.push_str(s);
        self
    }
}

#[tokio::test]
async fn udp_overloaded_core_answers_503_with_retry_after_but_not_to_ack() {
    let mut h = Harness::plain(Transport::Udp, TransportLimits::default()).await;
    h.dispatch.overloaded.store(true, Ordering::Relaxed);
    let (_s, reply) = udp_exchange(h.addr(Transport::Udp), options("u4", "UDP").as_bytes(), true).await;
    let reply = reply.expect("no 503");
    assert!(reply.starts_with("SIP/2.0 503 "), "{reply}");
    assert!(reply.contains("\r\nRetry-After: 5\r\n"), "{reply}");

    let ack = options("u5", "UDP").replace("OPTIONS", "ACK");
    let (s, reply) = udp_exchange(h.addr(Transport::Udp), ack.as_bytes(), false).await;
    assert!(reply.is_none());
    h.dispatch.overloaded.store(false, Ordering::Relaxed);
    s.send_to(options("u5b", "UDP").as_bytes(), h.addr(Transport::Udp)).await.unwrap();
    assert_eq!(h.next().await.msg.branch(), Some("z9hG4bKu5b"));
    assert_eq!(h.metric("umproxy_transport_overload_total", &[("kind", "rejected_503")]), 1);
    assert_eq!(h.metric("umproxy_transport_overload_total", &[("kind", "dropped")]), 1);
}

// ---- TCP ----

#[tokio::test]
async fn tcp_frames_two_messages_in_one_write_and_one_split_over_many() {
    let mut h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    let two = options("t1", "TCP") + &options("t2", "TCP");
    c.write_all(two.as_bytes()).await.unwrap();
    let a = h.next().await;
    let b = h.next().await;
    assert_eq!((a.msg.branch(), b.msg.branch()), (Some("z9hG4bKt1"), Some("z9hG4bKt2")));
    assert_eq!(a.peer.flow, b.peer.flow);
    assert_eq!(a.peer.remote, c.local_addr().unwrap());

    let body_msg = options("t3", "TCP").replace("Content-Length: 0", "Content-Length: 5") + "hello";
    for piece in body_msg.as_bytes().chunks(7) {
        c.write_all(piece).await.unwrap();
        c.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let m = h.next().await;
    assert_eq!(m.msg.branch(), Some("z9hG4bKt3"));
    assert_eq!(m.msg.body(), b"hello");
}

#[tokio::test]
async fn tcp_crlf_ping_gets_crlf_pong() {
    let h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    c.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    timeout(WAIT, c.read_exact(&mut pong)).await.unwrap().unwrap();
    assert_eq!(&pong, b"\r\n");
}

#[tokio::test]
async fn tcp_stream_without_end_of_headers_is_cut_off_and_hub_keeps_serving() {
    let mut h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    let mut head = options("t4", "TCP");
    head.truncate(head.len() - 4); // no CRLFCRLF
    c.write_all(head.as_bytes()).await.unwrap();
    let junk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    let mut response = String::new();
    // Write up to 10 MB; the hub answers and closes long before.
    while sent < 10 * 1024 * 1024 {
        match c.write_all(&junk).await {
            Ok(()) => sent += junk.len(),
            Err(_) => break,
        }
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) = timeout(Duration::from_millis(1), c.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            response.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(sent < 10 * 1024 * 1024, "hub kept reading a 10 MB header section");
    let mut rest = Vec::new();
    let _ = timeout(WAIT, c.read_to_end(&mut rest)).await;
    response.push_str(&String::from_utf8_lossy(&rest));
    assert_eq!(h.metric("umproxy_transport_connections_closed_total", &[("reason", "framing_error")]), 1);
    assert_eq!(h.metric("umproxy_transport_parse_errors_total", &[("kind", "limit_message_size")]), 1);
    assert!(response.starts_with("SIP/2.0 413 "), "{response:?}");

    let mut c2 = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    c2.write_all(options("t5", "TCP").as_bytes()).await.unwrap();
    assert_eq!(h.next().await.msg.branch(), Some("z9hG4bKt5"));
}

#[tokio::test]
async fn tcp_slow_sender_is_closed_after_the_message_deadline() {
    let limits = TransportLimits { message_timeout: Duration::from_millis(300), ..Default::default() };
    let h = Harness::plain(Transport::Tcp, limits).await;
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    c.write_all(b"OPTIONS sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/TCP").await.unwrap();
    expect_closed(&mut c).await;
    assert_eq!(h.metric("umproxy_transport_connections_closed_total", &[("reason", "message_timeout")]), 1);
}

#[tokio::test]
async fn tcp_per_ip_connection_limit_is_enforced() {
    let limits = TransportLimits { max_connections_per_ip: 2, ..Default::default() };
    let mut h = Harness::plain(Transport::Tcp, limits).await;
    let addr = h.addr(Transport::Tcp);
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    // Make sure both are admitted before the third arrives.
    a.write_all(options("l1", "TCP").as_bytes()).await.unwrap();
    h.next().await;
    b.write_all(options("l2", "TCP").as_bytes()).await.unwrap();
    h.next().await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut c).await;
    assert_eq!(h.metric("umproxy_transport_connections_rejected_total", &[("reason", "max_per_ip")]), 1);
    // The admitted ones still work.
    a.write_all(options("l3", "TCP").as_bytes()).await.unwrap();
    assert_eq!(h.next().await.msg.branch(), Some("z9hG4bKl3"));
}

#[tokio::test]
async fn tcp_send_on_flow_reuses_the_connection_and_send_to_new_address_connects() {
    let mut h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    c.write_all(options("f1", "TCP").as_bytes()).await.unwrap();
    let got = h.next().await;
    let flow = got.peer.flow.expect("TCP has a flow");
    let reply = sip_message::build::response(&got.msg, 200, "OK", Some("x"));
    h.hub.send(Outbound { dest: Destination::reply_to(&got.peer), bytes: reply, token: None });
    assert!(read_head(&mut c).await.starts_with("SIP/2.0 200 OK"));
    assert_eq!(h.hub.connection_count(), 1);

    // By address alone, the same connection is found.
    let dest = Destination { transport: Transport::Tcp, addr: got.peer.remote, flow: None, server_name: None };
    h.hub.send(Outbound { dest, bytes: Bytes::from(options("f2", "TCP")), token: None });
    assert!(read_head(&mut c).await.contains("z9hG4bKf2"));

    // RFC 5923 alias: an address the peer listens on maps to its flow.
    let alias: SocketAddr = "127.0.0.1:5999".parse().unwrap();
    assert!(h.hub.alias(flow, alias));
    let dest = Destination { transport: Transport::Tcp, addr: alias, flow: None, server_name: None };
    h.hub.send(Outbound { dest, bytes: Bytes::from(options("f3", "TCP")), token: None });
    assert!(read_head(&mut c).await.contains("z9hG4bKf3"));

    // A new address: the hub connects, in order.
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest =
        Destination { transport: Transport::Tcp, addr: server.local_addr().unwrap(), flow: None, server_name: None };
    let first = options("n1", "TCP");
    let second = options("n2", "TCP");
    h.hub.send(Outbound { dest: dest.clone(), bytes: Bytes::from(first.clone()), token: None });
    h.hub.send(Outbound { dest, bytes: Bytes::from(second.clone()), token: None });
    let (mut s, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    let mut got = vec![0u8; first.len() + second.len()];
    timeout(WAIT, s.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, (first + &second).into_bytes());

    // Core workers may call send from threads outside the runtime.
    let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest =
        Destination { transport: Transport::Tcp, addr: elsewhere.local_addr().unwrap(), flow: None, server_name: None };
    let hub = h.hub.clone();
    let bytes = Bytes::from(options("n4", "TCP"));
    std::thread::spawn(move || hub.send(Outbound { dest, bytes, token: None })).join().unwrap();
    let (mut e, _) = timeout(WAIT, elsewhere.accept()).await.unwrap().unwrap();
    assert!(read_head(&mut e).await.contains("z9hG4bKn4"));

    // Messages the peer sends back on that connection come up.
    s.write_all(options("n3", "TCP").as_bytes()).await.unwrap();
    let back = h.next().await;
    assert_eq!(back.peer.remote, s.local_addr().unwrap());
    assert_ne!(back.peer.flow, Some(flow));
}

#[tokio::test]
async fn tcp_connect_refused_reports_send_failed_with_the_token() {
    let mut h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let dest = Destination { transport: Transport::Tcp, addr: closed, flow: None, server_name: None };
    let token = SendToken { shard: 3, id: 42 };
    h.hub.send(Outbound { dest: dest.clone(), bytes: Bytes::from(options("c1", "TCP")), token: Some(token) });
    assert_eq!(h.next_failure().await, (token, dest, SendFailure::Connect));
    assert_eq!(h.hub.connection_count(), 0);
}

// ---- TLS ----

#[tokio::test]
async fn tls_handshake_with_a_ca_signed_server_certificate() {
    let ca = Ca::new("test CA");
    let spec = ca.server_spec(&["server.test"], None);
    let mut h = Harness::start(vec![listen(Transport::Tls, Some(spec))], Default::default(), Default::default()).await;
    let mut c = tls_connect(h.addr(Transport::Tls), &[&ca], None).await.unwrap();
    let got = send_and_expect_delivery(&mut h, &mut c, "s1").await;
    assert_eq!(got.peer.transport, Transport::Tls);
    assert_eq!(got.tls.as_deref(), Some(&TlsIdentity::default()));
    // Responses go back over the same TLS session.
    let reply = sip_message::build::response(&got.msg, 200, "OK", Some("x"));
    h.hub.send(Outbound { dest: Destination::reply_to(&got.peer), bytes: reply, token: None });
    assert!(read_head(&mut c).await.starts_with("SIP/2.0 200 OK"));
}

#[tokio::test]
async fn mtls_listener_refuses_an_untrusted_client_and_names_a_trusted_one() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let rogue_ca = Ca::new("rogue CA");
    let spec = server_ca.server_spec(&["server.test"], Some(&client_ca));
    let mut h = Harness::start(vec![listen(Transport::Tls, Some(spec))], Default::default(), Default::default()).await;
    let addr = h.addr(Transport::Tls);

    // TLS 1.3 clients finish before the server checks them: the refusal
    // shows as an alert or a close on first use.
    if let Ok(mut c) = tls_connect(addr, &[&server_ca], Some(rogue_ca.leaf(&["rogue.test"]))).await {
        let _ = c.write_all(options("m1", "TLS").as_bytes()).await;
        let _ = c.flush().await;
        expect_closed(&mut c).await;
    }
    if let Ok(mut c) = tls_connect(addr, &[&server_ca], None).await {
        let _ = c.write_all(options("m2", "TLS").as_bytes()).await;
        let _ = c.flush().await;
        expect_closed(&mut c).await;
    }
    assert_eq!(h.metric("umproxy_transport_tls_handshake_failures_total", &[("direction", "inbound")]), 2);
    assert_eq!(
        h.metric("umproxy_transport_tls_handshake_failures_total", &[("reason", "unknown_ca")]),
        1,
        "rogue client's failure is classified"
    );

    let identity = client_ca.leaf(&["exap.um.example.net", "backup.example.net"]);
    let mut c = tls_connect(addr, &[&server_ca], Some(identity)).await.unwrap();
    let got = send_and_expect_delivery(&mut h, &mut c, "m3").await;
    let names = got.tls.expect("TLS identity").names.clone();
    assert_eq!(names, vec!["exap.um.example.net".to_owned(), "backup.example.net".to_owned()]);
    assert!(h.inbound.try_recv().is_err(), "nothing from the refused clients was delivered");
}

#[tokio::test]
async fn client_tls_checks_the_server_name_and_presents_its_certificate() {
    let ca = Ca::new("provider CA");
    let spec = ca.server_spec(&["server.test"], Some(&ca));
    let mut server =
        Harness::start(vec![listen(Transport::Tls, Some(spec))], Default::default(), Default::default()).await;
    let server_addr = server.addr(Transport::Tls);

    // The default trusts nothing useful; the per-server override for
    // server.test trusts the provider CA and presents our certificate.
    let other = Ca::new("other CA");
    let outbound = OutboundTls {
        default: Some(other.client_spec(None, &[])),
        per_server: vec![
            ("Server.Test".to_owned(), ca.client_spec(Some(&ca), &["proxy.example.test"])),
            ("wrong.test".to_owned(), ca.client_spec(Some(&ca), &["proxy.example.test"])),
        ],
    };
    let mut client = Harness::start(vec![listen(Transport::Udp, None)], Default::default(), outbound).await;

    let wrong = Destination {
        transport: Transport::Tls,
        addr: server_addr,
        flow: None,
        server_name: Some("wrong.test".into()),
    };
    let token = SendToken { shard: 0, id: 7 };
    client.hub.send(Outbound { dest: wrong.clone(), bytes: Bytes::from(options("x1", "TLS")), token: Some(token) });
    assert_eq!(client.next_failure().await, (token, wrong, SendFailure::Tls));
    assert_eq!(
        client.metric(
            "umproxy_transport_tls_handshake_failures_total",
            &[("direction", "outbound"), ("reason", "name_mismatch")]
        ),
        1
    );

    let right = Destination {
        transport: Transport::Tls,
        addr: server_addr,
        flow: None,
        server_name: Some("server.test".into()),
    };
    client.hub.send(Outbound { dest: right.clone(), bytes: Bytes::from(options("x2", "TLS")), token: Some(token) });
    let got = server.next().await;
    assert_eq!(got.msg.branch(), Some("z9hG4bKx2"));
    assert_eq!(got.tls.expect("identity").names, vec!["proxy.example.test".to_owned()]);

    // The next send to the same server reuses the connection.
    client.hub.send(Outbound { dest: right, bytes: Bytes::from(options("x3", "TLS")), token: Some(token) });
    let again = server.next().await;
    assert_eq!(again.peer.flow, got.peer.flow);
    assert_eq!(client.hub.connection_count(), 1);
}

#[tokio::test]
async fn reloaded_certificate_serves_new_handshakes_and_keeps_old_connections() {
    let ca = Ca::new("test CA");
    let spec = ca.server_spec(&["server.test"], None);
    let old_cert = spec.cert_chain[0].clone();
    let mut h = Harness::start(vec![listen(Transport::Tls, Some(spec))], Default::default(), Default::default()).await;
    let addr = h.addr(Transport::Tls);
    let mut old = tls_connect(addr, &[&ca], None).await.unwrap();
    assert_eq!(old.get_ref().1.peer_certificates().unwrap()[0], old_cert);
    send_and_expect_delivery(&mut h, &mut old, "r1").await;

    let new_spec = ca.server_spec(&["server.test", "new.server.test"], None);
    let new_cert = new_spec.cert_chain[0].clone();
    h.hub.reload_tls(addr, new_spec).unwrap();

    let mut new = tls_connect(addr, &[&ca], None).await.unwrap();
    assert_eq!(new.get_ref().1.peer_certificates().unwrap()[0], new_cert);
    send_and_expect_delivery(&mut h, &mut new, "r2").await;
    // The connection from before the reload still carries messages.
    send_and_expect_delivery(&mut h, &mut old, "r3").await;

    assert!(matches!(
        h.hub.reload_tls("127.0.0.1:1".parse().unwrap(), ca.server_spec(&["x"], None)),
        Err(TransportError::NoTlsListener(_))
    ));
}

// ---- hub getters ----

#[tokio::test]
async fn listener_lookup_and_local_checks() {
    let specs = vec![
        listen(Transport::Udp, None),
        ListenerSpec { advertise: Some("proxy.example.test:5070".into()), ..listen(Transport::Tcp, None) },
    ];
    let h = Harness::start(specs, Default::default(), Default::default()).await;
    let udp = h.addr(Transport::Udp);
    let remote: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    assert_eq!(h.hub.listener_for(Transport::Udp, &remote).unwrap().local, udp);
    assert!(h.hub.listener_for(Transport::Udp, &"[::1]:5060".parse().unwrap()).is_none());
    assert!(h.hub.listener_for(Transport::Tls, &remote).is_none());
    let tcp = h.hub.listener_for(Transport::Tcp, &remote).unwrap();
    assert_eq!((&*tcp.host, tcp.port), ("proxy.example.test", 5070));

    assert!(h.hub.is_local("127.0.0.1", Some(udp.port())));
    assert!(!h.hub.is_local("127.0.0.2", Some(udp.port())));
    assert!(h.hub.is_local("PROXY.example.test", Some(5070)));
    assert!(!h.hub.is_local("proxy.example.test", None));
    assert!(!h.hub.is_local("127.0.0.1", Some(1)));
    assert!(!h.hub.is_local("other.test", Some(5070)));
}

#[tokio::test]
async fn bind_errors_name_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let spec = ListenerSpec { transport: Transport::Tcp, bind: addr, advertise: None, tls: None };
    let (itx, _i) = mpsc::unbounded_channel();
    let (ftx, _f) = mpsc::unbounded_channel();
    let dispatch = Arc::new(TestDispatch { inbound: itx, failed: ftx, overloaded: AtomicBool::new(false) });
    let err = TransportHub::start(vec![spec], Default::default(), Default::default(), dispatch, &Registry::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test(start_paused = true)]
async fn tcp_idle_connection_is_closed_on_a_paused_clock() {
    let limits = TransportLimits { idle_timeout: Duration::from_secs(120), ..Default::default() };
    let h = Harness::plain(Transport::Tcp, limits).await;
    let started = tokio::time::Instant::now();
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    // No timeout here: with the clock paused, the runtime jumps straight to
    // the hub's idle deadline once everything waits.
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_secs(120));
    assert_eq!(h.metric("umproxy_transport_connections_closed_total", &[("reason", "idle")]), 1);
    assert_eq!(h.hub.connection_count(), 0);
}

#[tokio::test]
async fn udp_oversize_message_gets_413() {
    let limits = TransportLimits {
        sip: sip_message::Limits { max_message_size: 1024, ..Default::default() },
        ..Default::default()
    };
    let h = Harness::plain(Transport::Udp, limits).await;
    let body = "v=0\r\n".repeat(300);
    let big = options("u6", "UDP").replace("Content-Length: 0", &format!("Content-Length: {}", body.len())) + &body;
    let (_s, reply) = udp_exchange(h.addr(Transport::Udp), big.as_bytes(), true).await;
    let reply = reply.expect("no 413");
    assert!(reply.starts_with("SIP/2.0 413 "), "{reply}");
}

#[tokio::test]
async fn tcp_overloaded_core_answers_503_on_the_connection() {
    let h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    h.dispatch.overloaded.store(true, Ordering::Relaxed);
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    c.write_all(options("o1", "TCP").as_bytes()).await.unwrap();
    let reply = read_head(&mut c).await;
    assert!(reply.starts_with("SIP/2.0 503 ") && reply.contains("Retry-After: 5\r\n"), "{reply}");
}

#[tokio::test]
async fn tcp_missing_content_length_gets_400_and_close() {
    let h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    c.write_all(options("o2", "TCP").replace("Content-Length: 0\r\n", "").as_bytes()).await.unwrap();
    let reply = read_head(&mut c).await;
    assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");
    expect_closed(&mut c).await;
}

#[tokio::test]
async fn shutdown_stops_accepting_but_open_connections_keep_working() {
    let mut h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let addr = h.addr(Transport::Tcp);
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(options("d1", "TCP").as_bytes()).await.unwrap();
    h.next().await;
    h.hub.shutdown();
    // The listening socket closes once the accept loop sees the shutdown.
    let mut refused = false;
    for _ in 0..1000 {
        match TcpStream::connect(addr).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => tokio::task::yield_now().await,
        }
    }
    assert!(refused, "still accepting after shutdown");
    c.write_all(options("d2", "TCP").as_bytes()).await.unwrap();
    assert_eq!(h.next().await.msg.branch(), Some("z9hG4bKd2"));
}

#[tokio::test]
async fn outbound_connect_beyond_max_connections_fails_overloaded() {
    let limits = TransportLimits { max_connections: 1, ..Default::default() };
    let mut h = Harness::plain(Transport::Tcp, limits).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first =
        Destination { transport: Transport::Tcp, addr: server.local_addr().unwrap(), flow: None, server_name: None };
    h.hub.send(Outbound { dest: first, bytes: Bytes::from(options("k1", "TCP")), token: None });
    let (_s, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second =
        Destination { transport: Transport::Tcp, addr: other.local_addr().unwrap(), flow: None, server_name: None };
    let token = SendToken { shard: 1, id: 2 };
    h.hub.send(Outbound { dest: second.clone(), bytes: Bytes::from(options("k2", "TCP")), token: Some(token) });
    assert_eq!(h.next_failure().await, (token, second, SendFailure::Overloaded));
}

#[test]
fn per_ip_limit_counts_ipv6_by_64() {
    use super::conn_table::limit_key;
    let a = limit_key("2001:db8:1:2:aaaa::1".parse().unwrap());
    let b = limit_key("2001:db8:1:2:bbbb::9".parse().unwrap());
    let c = limit_key("2001:db8:1:3::1".parse().unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(limit_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<std::net::IpAddr>().unwrap());
}

#[tokio::test]
async fn client_tls_without_server_name_checks_the_ip_address() {
    let ca = Ca::new("test CA");
    let with_ip = ca.server_spec(&["server.test", "127.0.0.1"], None);
    let mut server =
        Harness::start(vec![listen(Transport::Tls, Some(with_ip))], Default::default(), Default::default()).await;
    let without_ip = ca.server_spec(&["server.test"], None);
    let named_only =
        Harness::start(vec![listen(Transport::Tls, Some(without_ip))], Default::default(), Default::default()).await;
    let outbound = OutboundTls { default: Some(ca.client_spec(None, &[])), per_server: Vec::new() };
    let mut client = Harness::start(vec![], Default::default(), outbound).await;

    let to_ip =
        Destination { transport: Transport::Tls, addr: server.addr(Transport::Tls), flow: None, server_name: None };
    client.hub.send(Outbound { dest: to_ip, bytes: Bytes::from(options("i1", "TLS")), token: None });
    assert_eq!(server.next().await.msg.branch(), Some("z9hG4bKi1"));

    let token = SendToken { shard: 0, id: 1 };
    let to_named =
        Destination { transport: Transport::Tls, addr: named_only.addr(Transport::Tls), flow: None, server_name: None };
    client.hub.send(Outbound { dest: to_named.clone(), bytes: Bytes::from(options("i2", "TLS")), token: Some(token) });
    assert_eq!(client.next_failure().await, (token, to_named, SendFailure::Tls));
}

#[test]
fn tls_specs_load_from_pem_files_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["server.test".to_owned()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path, empty) = (dir.path().join("c.pem"), dir.path().join("k.pem"), dir.path().join("e.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&empty, "nothing here\n").unwrap();
    let spec = TlsServerSpec::from_pem_files(&cert_path, &key_path, Some(&cert_path)).unwrap();
    assert_eq!(spec.cert_chain, vec![cert.der().clone()]);
    assert_eq!(spec.client_ca.map(|c| c.len()), Some(1));
    let err = TlsServerSpec::from_pem_files(&empty, &key_path, None).unwrap_err();
    assert!(err.to_string().contains("e.pem"), "{err}");
    let err = load_private_key(&cert_path).unwrap_err();
    assert!(err.to_string().contains("c.pem"), "{err}");
}

#[tokio::test]
async fn messages_to_one_connection_are_written_in_send_order() {
    let h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest =
        Destination { transport: Transport::Tcp, addr: server.local_addr().unwrap(), flow: None, server_name: None };
    let msgs: Vec<String> = (0..200).map(|i| options(&format!("q{i:03}"), "TCP")).collect();
    for m in &msgs {
        h.hub.send(Outbound { dest: dest.clone(), bytes: Bytes::from(m.clone()), token: None });
    }
    let (mut s, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    let want = msgs.concat().into_bytes();
    let mut got = vec![0u8; want.len()];
    timeout(WAIT, s.read_exact(&mut got)).await.unwrap().unwrap();
    assert!(got == want, "messages reordered or mangled");
    assert_eq!(h.hub.connection_count(), 1);
}

#[tokio::test]
async fn outbound_connections_leave_from_the_listener_address() {
    // 127.0.0.2 is loopback on Linux too, and differs from the default
    // source address the OS would pick toward 127.0.0.1.
    let spec = ListenerSpec { bind: "127.0.0.2:0".parse().unwrap(), ..listen(Transport::Tcp, None) };
    let h = Harness::start(vec![spec], Default::default(), Default::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest =
        Destination { transport: Transport::Tcp, addr: server.local_addr().unwrap(), flow: None, server_name: None };
    h.hub.send(Outbound { dest, bytes: Bytes::from(options("a1", "TCP")), token: None });
    let (_s, from) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    assert_eq!(from.ip(), "127.0.0.2".parse::<std::net::IpAddr>().unwrap());
}

/// RFC 3581 §4 on the 503 the transport sends itself when the core is full.
#[tokio::test]
async fn udp_overload_503_carries_received_and_rport() {
    let h = Harness::plain(Transport::Udp, TransportLimits::default()).await;
    h.dispatch.overloaded.store(true, Ordering::Relaxed);
    let req = options("u6", "UDP").replace(";branch=z9hG4bKu6", ";branch=z9hG4bKu6;rport");
    let (s, reply) = udp_exchange(h.addr(Transport::Udp), req.as_bytes(), true).await;
    let reply = reply.expect("no 503");
    let port = s.local_addr().unwrap().port();
    assert!(reply.contains(&format!(";rport={port};received=127.0.0.1\r\n")), "{reply}");
}

/// A flow id that now names a connection to another peer (a registration
/// stored before a restart, or by another instance) is not used: the
/// message goes to the address it is for.
#[tokio::test]
async fn tcp_a_flow_id_naming_another_peer_is_not_used() {
    let mut h = Harness::plain(Transport::Tcp, TransportLimits::default()).await;
    let mut c = TcpStream::connect(h.addr(Transport::Tcp)).await.unwrap();
    c.write_all(options("s1", "TCP").as_bytes()).await.unwrap();
    let flow = h.next().await.peer.flow.expect("TCP has a flow");
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest = Destination {
        transport: Transport::Tcp,
        addr: server.local_addr().unwrap(),
        flow: Some(flow),
        server_name: None,
    };
    h.hub.send(Outbound { dest, bytes: Bytes::from(options("s2", "TCP")), token: None });
    let (mut s, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    assert!(read_head(&mut s).await.contains("z9hG4bKs2"));
    // Nothing went to the connection the flow id names: the first message
    // it carries is one sent to it afterwards.
    c.write_all(options("s3", "TCP").as_bytes()).await.unwrap();
    let got = h.next().await;
    let reply = sip_message::build::response(&got.msg, 200, "OK", Some("x"));
    h.hub.send(Outbound { dest: Destination::reply_to(&got.peer), bytes: reply, token: None });
    let first = read_head(&mut c).await;
    assert!(first.starts_with("SIP/2.0 200 OK") && first.contains("z9hG4bKs3"), "{first}");
}
