//! A small SIP user agent over TLS (tokio-rustls): a client that sends
//! requests and reads responses, and a server that answers INVITEs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::certs::{Ca, CertKey};
use crate::sip::{read_message, request, unique, SipMessage};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client configuration trusting `ca`, presenting `client_cert` if given.
pub fn client_config(ca: &Ca, client_cert: Option<&CertKey>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).expect("CA into root store");
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match client_cert {
        Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key()).expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Server configuration with `cert`; with `client_ca`, clients must
/// present a certificate it signed.
pub fn server_config(cert: &CertKey, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert.clone()).expect("CA into root store");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(cert.chain.clone(), cert.key()).expect("server cert"))
}

/// A TLS connection to a SIP server, used as a user agent client.
pub struct TlsClient {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    buf: Vec<u8>,
    pub local: SocketAddr,
}

impl TlsClient {
    /// Connect and complete the handshake, verifying the server as
    /// `server_name` (a DNS name or an IP address).
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        ca: &Ca,
        client_cert: Option<&CertKey>,
    ) -> std::io::Result<TlsClient> {
        let connector = TlsConnector::from(client_config(ca, client_cert));
        let name = ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
        let tcp = tokio::time::timeout(crate::WAIT, TcpStream::connect(addr)).await??;
        let local = tcp.local_addr()?;
        let stream = tokio::time::timeout(crate::WAIT, connector.connect(name, tcp)).await??;
        Ok(TlsClient { stream, buf: Vec::new(), local })
    }

    /// A request from this connection's address (Via `TLS`).
    pub fn request(&self, method: &str, uri: &str) -> SipMessage {
        request(method, uri, "TLS", self.local)
    }

    pub async fn send(&mut self, msg: &SipMessage) -> std::io::Result<()> {
        self.send_raw(&msg.to_bytes()).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next message; `Ok(None)` when the server closed the connection.
    pub async fn recv(&mut self, timeout: Duration) -> std::io::Result<Option<SipMessage>> {
        read_message(&mut self.stream, &mut self.buf, timeout).await
    }

    /// Responses until a final one (requests from the server are ignored).
    pub async fn recv_until_final(&mut self, timeout: Duration) -> std::io::Result<Vec<SipMessage>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = self.recv(left).await? else {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a final response"));
            };
            if let Some(s) = m.status() {
                out.push(m);
                if s >= 200 {
                    return Ok(out);
                }
            }
        }
    }

    /// Send `req` and return its responses up to the final one.
    pub async fn transact(&mut self, req: &SipMessage, timeout: Duration) -> std::io::Result<Vec<SipMessage>> {
        self.send(req).await?;
        self.recv_until_final(timeout).await
    }

    /// A whole call: INVITE `uri`, and if it is answered with 2xx, ACK and
    /// BYE along the route set (Record-Route reversed, RFC 3261 §12.1.2).
    pub async fn call(&mut self, uri: &str, timeout: Duration) -> std::io::Result<CallOutcome> {
        let invite = self.request("INVITE", uri);
        self.call_with(invite, timeout).await
    }

    /// [`TlsClient::call`] with an INVITE of the caller's making (its own
    /// From, extra headers); the in-dialog requests follow its dialog.
    pub async fn call_with(&mut self, invite: SipMessage, timeout: Duration) -> std::io::Result<CallOutcome> {
        let uri = invite.request_uri().unwrap_or_default().to_owned();
        let uri = uri.as_str();
        let responses = self.transact(&invite, timeout).await?;
        let Some(last) = responses.last().cloned() else { return Err(std::io::Error::other("no response")) };
        if !last.status().is_some_and(|s| (200..300).contains(&s)) {
            return Ok(CallOutcome { invite, responses, bye_responses: Vec::new() });
        }
        let local = self.local;
        let in_dialog = |method: &str, cseq: u32| -> SipMessage {
            let target = last.header("Contact").map(|c| strip_angle(c).to_owned()).unwrap_or_else(|| uri.to_owned());
            let mut m = request(method, &target, "TLS", local);
            for (name, value) in &mut m.headers {
                match name.as_str() {
                    "From" => *value = invite.header("From").unwrap_or_default().to_owned(),
                    "To" => *value = last.header("To").unwrap_or_default().to_owned(),
                    "Call-ID" => *value = invite.header("Call-ID").unwrap_or_default().to_owned(),
                    "CSeq" => *value = format!("{cseq} {method}"),
                    _ => {}
                }
            }
            let mut routes = last.header_values("Record-Route");
            routes.reverse();
            for r in routes {
                m = m.with_header("Route", &r);
            }
            m
        };
        let ack = in_dialog("ACK", 1);
        self.send(&ack).await?;
        let bye = in_dialog("BYE", 2);
        let bye_responses = self.transact(&bye, timeout).await?;
        Ok(CallOutcome { invite, responses, bye_responses })
    }
}

/// What [`TlsClient::call`] saw.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub invite: SipMessage,
    /// Responses to the INVITE, the final one last.
    pub responses: Vec<SipMessage>,
    /// Responses to the BYE (empty when the call was not answered).
    pub bye_responses: Vec<SipMessage>,
}

impl CallOutcome {
    pub fn final_status(&self) -> Option<u16> {
        self.responses.last().and_then(SipMessage::status)
    }
    pub fn bye_status(&self) -> Option<u16> {
        self.bye_responses.last().and_then(SipMessage::status)
    }
}

fn strip_angle(v: &str) -> &str {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v),
    }
}

/// How [`TlsUas`] answers an INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 180 Ringing, then 200 OK.
    Accept,
    /// 180 Ringing, then this final status.
    Reject(u16),
    /// 180 Ringing only; a CANCEL gets 200 and the INVITE 487.
    RingForever,
}

/// A SIP server over TLS that answers INVITE per [`Answer`], BYE and
/// OPTIONS with 200, and records every request it receives. Its tasks end
/// when it is dropped.
pub struct TlsUas {
    pub addr: SocketAddr,
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<SipMessage>>,
    seen: Arc<Mutex<Vec<SipMessage>>>,
    tasks: JoinSet<()>,
}

impl TlsUas {
    /// Listen on a free loopback port with `cert`; with `client_ca`, demand
    /// client certificates signed by it.
    pub async fn start(cert: &CertKey, client_ca: Option<&Ca>, answer: Answer) -> std::io::Result<TlsUas> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(server_config(cert, client_ca));
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let seen2 = Arc::clone(&seen);
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let seen = Arc::clone(&seen2);
                conns.spawn(async move {
                    if let Ok(Ok(tls)) = tokio::time::timeout(crate::WAIT, acceptor.accept(tcp)).await {
                        serve(tls, addr, answer, tx, seen).await;
                    }
                });
            }
        });
        Ok(TlsUas { addr, requests: tokio::sync::Mutex::new(rx), seen, tasks })
    }

    /// The next request received (in arrival order), waiting up to
    /// `timeout`.
    pub async fn next_request(&self, timeout: Duration) -> Option<SipMessage> {
        let mut rx = self.requests.lock().await;
        tokio::time::timeout(timeout, rx.recv()).await.ok().flatten()
    }

    /// The next request with `method`, skipping others.
    pub async fn next_request_of(&self, method: &str, timeout: Duration) -> Option<SipMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.next_request(left).await?;
            if m.method() == Some(method) {
                return Some(m);
            }
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<SipMessage> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Wait until a request with `method` has been received.
    pub async fn wait_for(&self, method: &str, timeout: Duration) -> Option<SipMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.received().into_iter().find(|m| m.method() == Some(method)) {
                return Some(m);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn abort(&mut self) {
        self.tasks.abort_all();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    local: SocketAddr,
    answer: Answer,
    tx: mpsc::UnboundedSender<SipMessage>,
    seen: Arc<Mutex<Vec<SipMessage>>>,
) {
    let mut buf = Vec::new();
    // Pending INVITEs of this connection waiting for a CANCEL.
    let mut ringing: Vec<(SipMessage, String)> = Vec::new();
    loop {
        let msg = match read_message(&mut stream, &mut buf, Duration::from_secs(120)).await {
            Ok(Some(m)) => m,
            _ => return,
        };
        let Some(method) = msg.method().map(str::to_owned) else { continue };
        if let Ok(mut v) = seen.lock() {
            v.push(msg.clone());
        }
        let _ = tx.send(msg.clone());
        let mut out: Vec<SipMessage> = Vec::new();
        match method.as_str() {
            "INVITE" => {
                let tag = unique("uas");
                let rr = msg.header_values("Record-Route");
                let with_rr = |mut m: SipMessage| {
                    for r in &rr {
                        m = m.with_header("Record-Route", r);
                    }
                    m.with_header("Contact", &format!("<sip:uas@{local};transport=tls>"))
                };
                out.push(with_rr(msg.response(180, "Ringing", Some(&tag))));
                match answer {
                    Answer::Accept => out.push(with_rr(msg.response(200, "OK", Some(&tag)))),
                    Answer::Reject(code) => out.push(msg.response(code, "Rejected", Some(&tag))),
                    Answer::RingForever => ringing.push((msg.clone(), tag)),
                }
            }
            "CANCEL" => {
                out.push(msg.response(200, "OK", None));
                let branch = top_branch(&msg);
                if let Some(i) = ringing.iter().position(|(inv, _)| top_branch(inv) == branch) {
                    let (inv, tag) = ringing.remove(i);
                    out.push(inv.response(487, "Request Terminated", Some(&tag)));
                }
            }
            "ACK" => {}
            _ => out.push(msg.response(200, "OK", Some(&unique("uas")))),
        }
        for m in out {
            if stream.write_all(&m.to_bytes()).await.is_err() {
                return;
            }
        }
        let _ = stream.flush().await;
    }
}

fn top_branch(m: &SipMessage) -> Option<String> {
    let via = m.header_values("Via").into_iter().next()?;
    via.split(';').find_map(|p| p.trim().strip_prefix("branch=").map(str::to_owned))
}
