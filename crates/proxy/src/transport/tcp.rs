//! TCP and TLS: accept loops under the connection limits, outbound connects,
//! and one task per connection that reads, frames, delivers and writes.
//!
//! One task owns each connection's socket: it reads into a bounded buffer,
//! cuts frames with the `Framer`, and writes the connection's queue in
//! arrival order, so messages on one flow never overtake each other (an
//! ACK never passes its INVITE's 200).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use sip_message::build::{error_response, reason_phrase};
use sip_message::{Frame, Framer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Duration, Instant};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, trace, warn, Instrument};

use super::conn_table::{ConnHandle, Slot};
use super::hub::{listener_for, Shared, TlsListener};
use super::metrics::framing_error_kind;
use super::tls::{handshake_failure_reason, identity, Direction};
use super::types::{Outbound, Peer, SendFailure, TlsIdentity, Transport};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Queued messages written before one flush.
const WRITE_BATCH: usize = 64;
/// Longest wait for a graceful close.
const LINGER: Duration = Duration::from_secs(1);
/// Input read and discarded after an error response, before closing.
const LINGER_BYTES: usize = 256 * 1024;
/// Pause after a failed accept (EMFILE …) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    transport: Transport,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<Arc<TlsListener>>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop_accepting.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(%local, error = %e, "accept failed");
                tokio::select! {
                    _ = shared.stop_accepting.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let t = transport.param_name();
        let admitted =
            shared.conns.admit(transport, remote, true, shared.limits.write_queue, Arc::new(TlsIdentity::default()));
        let (slot, rx) = match admitted {
            Ok(a) => a,
            Err(refused) => {
                shared.metrics.connections_rejected.with_label_values(&[t, refused.as_str()]).inc();
                debug!(%remote, %local, reason = refused.as_str(), "connection refused by limit");
                continue;
            }
        };
        shared.metrics.connections.with_label_values(&[t, "inbound"]).inc();
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%remote, error = %e, "cannot set TCP_NODELAY");
        }
        let listener_label = local.to_string();
        let local = stream.local_addr().unwrap_or(local);
        let peer = Peer { transport, remote, local, flow: Some(slot.handle.flow) };
        let span = tracing::debug_span!("conn", flow = slot.handle.flow.0, peer = %remote, %transport);
        let tls_config = tls.as_ref().map(|l| l.current());
        let runtime = shared.runtime.clone();
        let shared = shared.clone();
        runtime.spawn(
            async move {
                let Some(config) = tls_config else {
                    return drive(shared, stream, slot, rx, peer, None).await;
                };
                let handshake = timeout(shared.limits.tls_handshake_timeout, TlsAcceptor::from(config).accept(stream));
                let done = handshake.await;
                let result = if matches!(done, Ok(Ok(_))) { "ok" } else { "failed" };
                shared.metrics.tls_handshakes.with_label_values(&[&listener_label, result]).inc();
                match done {
                    Ok(Ok(stream)) => {
                        let id = identity(stream.get_ref().1.peer_certificates());
                        *slot.handle.names.lock().unwrap_or_else(|p| p.into_inner()) = id.clone();
                        drive(shared, stream, slot, rx, peer, Some(id)).await;
                    }
                    Ok(Err(e)) => {
                        let failure = HandshakeFailure::of(&e);
                        handshake_failed(&shared, Direction::Inbound, remote, None, &failure);
                        fail_queue(&shared, slot, rx, SendFailure::Closed);
                    }
                    Err(_) => {
                        handshake_failed(&shared, Direction::Inbound, remote, None, &HandshakeFailure::timeout());
                        fail_queue(&shared, slot, rx, SendFailure::Closed);
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// Why a TLS handshake failed: a bounded reason for the metric and
/// rustls's (or the socket's) error text for the operator.
struct HandshakeFailure {
    reason: &'static str,
    error: String,
}

impl HandshakeFailure {
    fn of(e: &io::Error) -> HandshakeFailure {
        HandshakeFailure { reason: handshake_failure_reason(e), error: e.to_string() }
    }
    fn timeout() -> HandshakeFailure {
        HandshakeFailure { reason: "timeout", error: "timed out".to_owned() }
    }
}

/// Count and log a failed handshake with the peer's address and, outbound,
/// the name its certificate had to carry.
fn handshake_failed(
    shared: &Shared,
    dir: Direction,
    peer: SocketAddr,
    server_name: Option<&ServerName<'_>>,
    failure: &HandshakeFailure,
) {
    shared.metrics.tls_handshake_failures.with_label_values(&[dir.as_str(), failure.reason]).inc();
    // A peer fault: warn, bounded reason first. The error text is rustls's,
    // which may quote the peer's certificate names: escaped.
    let name = server_name.map(|n| n.to_str().into_owned());
    warn!(direction = dir.as_str(), %peer, server_name = name.as_deref(), reason = failure.reason, error = %failure.error.escape_default(), "TLS handshake failed");
}

/// Remove the connection, then fail whatever was still queued on it.
fn fail_queue(shared: &Shared, slot: Slot, mut rx: mpsc::Receiver<Outbound>, failure: SendFailure) {
    drop(slot);
    rx.close();
    while let Ok(out) = rx.try_recv() {
        shared.fail(&out, failure);
    }
}

/// Send on a stream transport: the flow named, else an open connection to
/// the address, else a new connection.
pub(crate) fn send(shared: &Arc<Shared>, out: Outbound) {
    let dest = &out.dest;
    // A flow is used only while it still leads to the address it was
    // stored with: a flow id kept in a registration outlives the process
    // that minted it (persisted, or shared through Redis), and a new
    // connection may carry the same id.
    let reuse = dest
        .flow
        .and_then(|f| shared.conns.get(f))
        .filter(|h| h.transport == dest.transport && h.remote == dest.addr)
        .or_else(|| {
            shared.conns.by_addr(dest.transport, dest.addr).filter(|h| match (&dest.server_name, dest.transport) {
                // RFC 5923 §5: reuse a TLS connection only toward a server
                // whose certificate proved the name.
                (Some(name), Transport::Tls) => h.proves(name),
                _ => true,
            })
        });
    match reuse {
        Some(h) => enqueue(shared, &h, out),
        None => connect(shared, out),
    }
}

fn enqueue(shared: &Arc<Shared>, handle: &ConnHandle, out: Outbound) {
    match handle.tx.try_send(out) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(out)) => shared.fail(&out, SendFailure::Overloaded),
        // The connection closed since we looked it up.
        Err(mpsc::error::TrySendError::Closed(out)) => connect(shared, out),
    }
}

fn connect(shared: &Arc<Shared>, out: Outbound) {
    let dest = out.dest.clone();
    let (transport, addr) = (dest.transport, dest.addr);
    let tls = if transport == Transport::Tls {
        let config =
            shared.client_tls.read().unwrap_or_else(|p| p.into_inner()).for_server(dest.server_name.as_deref());
        let name = match &dest.server_name {
            Some(n) => ServerName::try_from(n.to_string()).ok(),
            None => Some(ServerName::IpAddress(addr.ip().into())),
        };
        match (config, name) {
            (Some(c), Some(n)) => Some((c, n)),
            _ => {
                shared.fail(&out, SendFailure::Tls);
                return;
            }
        }
    } else {
        None
    };
    let names = Arc::new(TlsIdentity { names: dest.server_name.iter().map(|n| n.to_ascii_lowercase()).collect() });
    let (slot, rx) = match shared.conns.admit(transport, addr, false, shared.limits.write_queue, names) {
        Ok(a) => a,
        Err(refused) => {
            debug!(%addr, reason = refused.as_str(), "no room for an outbound connection");
            shared.fail(&out, SendFailure::Overloaded);
            return;
        }
    };
    shared.metrics.connections.with_label_values(&[transport.param_name(), "outbound"]).inc();
    if let Err(e) = slot.handle.tx.try_send(out) {
        // A fresh queue has room for one; only a zero-sized one could fail.
        let out = match e {
            mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
        };
        shared.fail(&out, SendFailure::Overloaded);
    }
    let span = tracing::debug_span!("conn", flow = slot.handle.flow.0, peer = %addr, %transport);
    let runtime = shared.runtime.clone();
    let shared = shared.clone();
    let requested = dest.server_name;
    runtime.spawn(
        async move {
            let connecting =
                timeout(shared.limits.connect_timeout, connect_from(source_ip(&shared, transport, addr), addr));
            let stream = tokio::select! {
                _ = shared.closed.cancelled() => Err(io::Error::other("transports closed")),
                r = connecting => r.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            };
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    debug!(%addr, error = %e, "connect failed");
                    return fail_queue(&shared, slot, rx, SendFailure::Connect);
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                debug!(%addr, error = %e, "cannot set TCP_NODELAY");
            }
            let local = match stream.local_addr() {
                Ok(l) => l,
                Err(_) => return fail_queue(&shared, slot, rx, SendFailure::Connect),
            };
            let peer = Peer { transport, remote: addr, local, flow: Some(slot.handle.flow) };
            let Some((config, name)) = tls else {
                return drive(shared, stream, slot, rx, peer, None).await;
            };
            match handshake_out(&shared, config, name.clone(), stream).await {
                Ok(stream) => {
                    let mut id = identity(stream.get_ref().1.peer_certificates());
                    // The name we asked for was verified (it may have matched
                    // a wildcard): keep it so later sends to it reuse this flow.
                    if let Some(n) = &requested {
                        if !id.names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
                            Arc::make_mut(&mut id).names.push(n.to_ascii_lowercase());
                        }
                    }
                    *slot.handle.names.lock().unwrap_or_else(|p| p.into_inner()) = id.clone();
                    drive(shared, stream, slot, rx, peer, Some(id)).await;
                }
                Err(failure) => {
                    handshake_failed(&shared, Direction::Outbound, addr, Some(&name), &failure);
                    fail_queue(&shared, slot, rx, SendFailure::Tls);
                }
            }
        }
        .instrument(span),
    );
}

/// The address to connect from: the IP of the listener that Via and
/// Record-Route will name (RFC 3261 §18.1.1: peers that allow-list the
/// proxy see the address it advertises), when it is a specific address
/// that can reach `remote`. Otherwise the OS picks.
fn source_ip(shared: &Shared, transport: Transport, remote: SocketAddr) -> Option<IpAddr> {
    let ip = listener_for(&shared.listeners, transport, &remote)?.local.ip();
    (!ip.is_unspecified() && ip.is_loopback() == remote.ip().is_loopback()).then_some(ip)
}

async fn connect_from(source: Option<IpAddr>, remote: SocketAddr) -> io::Result<TcpStream> {
    let Some(ip) = source else { return TcpStream::connect(remote).await };
    let socket = if remote.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(remote).await
}

async fn handshake_out(
    shared: &Shared,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HandshakeFailure> {
    let result =
        match timeout(shared.limits.tls_handshake_timeout, TlsConnector::from(config).connect(name, stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(HandshakeFailure::of(&e)),
            Err(_) => Err(HandshakeFailure::timeout()),
        };
    let label = if result.is_ok() { "ok" } else { "failed" };
    shared.metrics.tls_handshakes.with_label_values(&["outbound", label]).inc();
    result
}

/// Write one message (or a reply) and flush, bounded by the write timeout.
async fn write_now<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8], limit: Duration) -> io::Result<()> {
    match timeout(limit, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Why a connection ended, as a bounded metric label.
type CloseReason = &'static str;

/// Run one connection until it closes.
async fn drive<S>(
    shared: Arc<Shared>,
    mut stream: S,
    slot: Slot,
    mut rx: mpsc::Receiver<Outbound>,
    peer: Peer,
    tls: Option<Arc<TlsIdentity>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let t = peer.transport.param_name();
    shared.metrics.connections_open.with_label_values(&[t]).inc();
    debug!(local = %peer.local, "connection up");
    let limits = &shared.limits;
    let mut framer = Framer::new(&limits.sip);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut last_activity = Instant::now();
    // When the first byte of the message now being received arrived.
    let mut message_start: Option<Instant> = None;
    // One timer for the connection's life, moved rather than re-created.
    let timer = sleep_until(last_activity + limits.idle_timeout);
    tokio::pin!(timer);
    let reason: CloseReason = 'conn: loop {
        let idle_at = last_activity + limits.idle_timeout;
        let deadline = message_start.map_or(idle_at, |s| idle_at.min(s + limits.message_timeout));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            _ = shared.closed.cancelled() => break 'conn "shutdown",
            _ = &mut timer => {
                break 'conn if deadline < idle_at { "message_timeout" } else { "idle" };
            }
            read = stream.read_buf(&mut buf) => {
                match read {
                    Ok(0) => break 'conn "peer_closed",
                    Ok(n) => trace!(n, "bytes in"),
                    Err(e) => {
                        debug!(error = %e, "read failed");
                        break 'conn "io_error";
                    }
                }
                let now = Instant::now();
                last_activity = now;
                message_start.get_or_insert(now);
                let mut framed_any = false;
                loop {
                    let reply: Bytes = match framer.next_frame(&mut buf) {
                        Ok(None) => break,
                        Ok(Some(Frame::Message(raw))) => {
                            framed_any = true;
                            match shared.receive(raw, &peer, tls.as_ref(), &limits.sip) {
                                Some(reply) => reply,
                                None => continue,
                            }
                        }
                        // RFC 5626 §4.4.1: answer a double-CRLF ping with one CRLF.
                        Ok(Some(Frame::Ping)) => {
                            framed_any = true;
                            shared.metrics.keepalives.with_label_values(&[t]).inc();
                            Bytes::from_static(b"\r\n")
                        }
                        Ok(Some(Frame::Pong)) => {
                            framed_any = true;
                            continue;
                        }
                        Err(e) => {
                            // No way to find the next message: answer if we
                            // can, then close (RFC 3261 §18.3).
                            shared.metrics.count_parse_error(peer.transport, framing_error_kind(&e));
                            debug!(error = %e, "framing failed");
                            let code = e.status();
                            if let Some(reply) = error_response(&buf, code, reason_phrase(code)) {
                                let _ = write_now(&mut stream, &reply, limits.write_timeout).await;
                            }
                            break 'conn "framing_error";
                        }
                    };
                    if write_now(&mut stream, &reply, limits.write_timeout).await.is_err() {
                        break 'conn "write_error";
                    }
                    shared.metrics.sent(peer.transport).inc();
                }
                if buf.is_empty() {
                    message_start = None;
                } else if framed_any {
                    message_start = Some(now);
                }
            }
            next = rx.recv() => {
                // The slot holds a sender, so the queue cannot end first;
                // if it ever did, stop rather than spin.
                if next.is_none() {
                    break 'conn "closed";
                }
                let mut next = next;
                let mut written = 0;
                while let Some(out) = next {
                    let write = timeout(limits.write_timeout, stream.write_all(&out.bytes)).await;
                    if !matches!(write, Ok(Ok(()))) {
                        shared.fail(&out, SendFailure::Closed);
                        break 'conn "write_error";
                    }
                    trace!(len = out.bytes.len(), "message out");
                    shared.metrics.sent(peer.transport).inc();
                    written += 1;
                    next = if written < WRITE_BATCH { rx.try_recv().ok() } else { None };
                }
                if !matches!(timeout(limits.write_timeout, stream.flush()).await, Ok(Ok(()))) {
                    break 'conn "write_error";
                }
                last_activity = Instant::now();
            }
        }
    };
    debug!(reason, "connection closed");
    shared.metrics.connections_open.with_label_values(&[t]).dec();
    shared.metrics.connections_closed.with_label_values(&[t, reason]).inc();
    fail_queue(&shared, slot, rx, SendFailure::Closed);
    // Best effort: a TLS close_notify, a FIN; never wait long for it.
    let _ = timeout(LINGER, stream.shutdown()).await;
    if reason == "framing_error" {
        // Closing with unread input makes the kernel send a reset, which can
        // destroy the error response before the peer reads it. Read and
        // discard a bounded amount for a bounded time first.
        let _ = timeout(LINGER, async {
            let mut sink = [0u8; 4096];
            let mut left = LINGER_BYTES;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}
