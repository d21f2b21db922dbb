//! Bounds on what peers can make the transports hold: connections, buffers,
//! queues and time.

use std::time::Duration;

/// Transport limits. Every field bounds something a peer controls; the
/// defaults suit an edge proxy facing the Internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportLimits {
    /// Parser and framer limits (message size, header count …). On UDP the
    /// message size is further capped at the largest IPv4 datagram.
    pub sip: sip_message::Limits,
    /// TCP and TLS connections open at once, inbound and outbound (10 000):
    /// each costs a task, a read buffer and a socket.
    pub max_connections: usize,
    /// Inbound TCP and TLS connections from one IPv4 address or IPv6 /64
    /// (100), so one host cannot take all of `max_connections`.
    pub max_connections_per_ip: usize,
    /// A connection with no bytes read or written for this long is closed
    /// (120 s). Clients keep flows alive with RFC 5626 CRLF pings.
    pub idle_timeout: Duration,
    /// A message (header section and body) must arrive whole within this
    /// long of its first byte (10 s): the slow-loris defence.
    pub message_timeout: Duration,
    /// TLS handshake, inbound or outbound (10 s).
    pub tls_handshake_timeout: Duration,
    /// Outbound TCP connect (5 s). RFC 3261 §16.9: the core turns the
    /// failure into a 503 at once rather than waiting for Timer B/F.
    pub connect_timeout: Duration,
    /// Writing one batch to a connection (10 s): a peer that stops reading
    /// is cut off instead of holding its queue forever.
    pub write_timeout: Duration,
    /// Messages waiting to be written on one connection (4096: a trunk
    /// carrying thousands of calls per second sends bursts; the queue's
    /// slots are allocated only as they fill); beyond it a send fails with
    /// `Overloaded`.
    pub write_queue: usize,
    /// `SO_RCVBUF` of UDP sockets, in bytes (4 MiB, so a burst does not
    /// overflow the kernel's default ~200 KiB while a reader is busy; the
    /// kernel may cap it at `net.core.rmem_max`); `None` keeps the OS
    /// default.
    pub udp_recv_buffer: Option<usize>,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            sip: sip_message::Limits::default(),
            max_connections: 10_000,
            max_connections_per_ip: 100,
            idle_timeout: Duration::from_secs(120),
            message_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            write_queue: 4096,
            udp_recv_buffer: Some(4 << 20),
        }
    }
}

impl TransportLimits {
    /// The parser limits for datagrams: message size capped at 65 507.
    pub(crate) fn udp_sip(&self) -> sip_message::Limits {
        let mut l = self.sip.clone();
        l.max_message_size = l.max_message_size.min(sip_message::Limits::UDP_MAX_DATAGRAM);
        l
    }
}
