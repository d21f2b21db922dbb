//! UDP: one receive task per socket. Datagrams are read into one reused
//! buffer and split off as `Bytes`, so a message is never copied.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sip_message::Limits;
use tokio::net::UdpSocket;
use tracing::{debug, trace, warn};

use super::hub::Shared;
use super::types::{Peer, SendFailure, Transport};

/// Spare room kept in the receive buffer: any datagram fits.
const DATAGRAM_ROOM: usize = 65_536;
/// Receive buffer allocation: many small datagrams share one block.
const BLOCK: usize = 4 * DATAGRAM_ROOM;

pub(crate) fn bind(addr: SocketAddr, recv_buffer: Option<usize>) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    if let Some(size) = recv_buffer {
        // Best effort: the OS may cap it (net.core.rmem_max).
        if let Err(e) = socket2::SockRef::from(&std).set_recv_buffer_size(size) {
            warn!(%addr, error = %e, "cannot set UDP receive buffer size");
        }
    }
    UdpSocket::from_std(std)
}

/// The receive loop of one socket; ends when the hub closes.
pub(crate) async fn run(shared: Arc<Shared>, socket: Arc<UdpSocket>, local: SocketAddr) {
    let limits: Limits = shared.limits.udp_sip();
    let mut buf = BytesMut::with_capacity(BLOCK);
    loop {
        if buf.capacity() < DATAGRAM_ROOM {
            buf.reserve(BLOCK);
        }
        let received = tokio::select! {
            _ = shared.closed.cancelled() => return,
            r = socket.recv_buf_from(&mut buf) => r,
        };
        let (len, remote) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable surfaces here on some systems
                // (ECONNREFUSED); it says nothing about this socket.
                debug!(%local, error = %e, "UDP receive error");
                buf.clear();
                continue;
            }
        };
        let data = buf.split_to(len).freeze();
        trace!(%remote, %local, len, "UDP datagram in");
        if data.iter().all(|&b| b == b'\r' || b == b'\n' || b == b' ' || b == 0) {
            // Keep-alives (RFC 5626 §3.5.1 uses STUN here, but many phones
            // send CRLF or NUL datagrams): nothing to do.
            continue;
        }
        let peer = Peer { transport: Transport::Udp, remote, local, flow: None };
        if let Some(reply) = shared.receive(data, &peer, None, &limits) {
            let _ = send_to(&shared, &socket, reply, remote);
        }
    }
}

/// Send a datagram without waiting: a full socket buffer drops it (UDP
/// loses packets anyway; the transaction layer retransmits).
pub(crate) fn send_to(shared: &Shared, socket: &UdpSocket, bytes: Bytes, to: SocketAddr) -> Result<(), SendFailure> {
    match socket.try_send_to(&bytes, to) {
        Ok(_) => {
            trace!(%to, len = bytes.len(), "UDP datagram out");
            shared.metrics.sent(Transport::Udp).inc();
            Ok(())
        }
        Err(e) => {
            debug!(%to, error = %e, "UDP send failed");
            Err(if e.kind() == std::io::ErrorKind::WouldBlock { SendFailure::Overloaded } else { SendFailure::Connect })
        }
    }
}
