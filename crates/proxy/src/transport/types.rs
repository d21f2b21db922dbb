//! The contract between the transports and the proxy core.
//!
//! Transports own sockets, connections, framing and parsing; the core owns
//! SIP logic. Messages go up as [`Inbound`] through a [`Dispatch`], and come
//! down as [`Outbound`] through [`crate::transport::TransportHub::send`].
//! Sending never blocks the core: a send that later fails (connect refused,
//! TLS handshake failed, connection closed) is reported back through
//! [`Dispatch::send_failed`] with the token the core gave.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use sip_message::Message;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Reliable transports change the transaction timers (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The name in a Via sent-protocol (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The value of a URI `transport` parameter, lower case.
    pub fn param_name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// From a Via transport or URI `transport` parameter (case-insensitive).
    pub fn from_name(name: &str) -> Option<Transport> {
        if name.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if name.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if name.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }

    /// The default port (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.param_name())
    }
}

/// One TCP or TLS connection, for as long as it lives. Minted by the
/// transports, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

/// Where a message came from, or where a response goes back to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    /// The remote address (the packet's source, or the connection's peer).
    pub remote: SocketAddr,
    /// The local address of the listener or connection that carried it.
    pub local: SocketAddr,
    /// The connection, for TCP and TLS; `None` for UDP.
    pub flow: Option<FlowId>,
}

/// What a TLS peer proved about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsIdentity {
    /// DNS names (subjectAltName dNSName, then the subject CN when there are
    /// none) of the client certificate, verified against the listener's
    /// `client_ca`. Empty when no client certificate was presented.
    pub names: Vec<String>,
}

/// A message received and parsed by a transport.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub msg: Message,
    pub peer: Peer,
    /// Set for TLS connections; carries the verified client certificate
    /// names (mutual TLS).
    pub tls: Option<Arc<TlsIdentity>>,
}

/// An opaque value the core attaches to a send, echoed back on failure.
/// `shard` says which core worker owns the transaction that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendToken {
    pub shard: u16,
    pub id: u64,
}

/// Where to send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// Send on this connection if it is still open (responses, RFC 5626
    /// flows, RFC 5923 aliases); otherwise any open connection to `addr`,
    /// otherwise a new one. Ignored for UDP.
    pub flow: Option<FlowId>,
    /// For TLS: the name to send as SNI and to check the server certificate
    /// against. `None` checks the certificate against the IP address.
    pub server_name: Option<Arc<str>>,
}

impl Destination {
    /// Back to where a message came from, on the same connection.
    pub fn reply_to(peer: &Peer) -> Destination {
        Destination { transport: peer.transport, addr: peer.remote, flow: peer.flow, server_name: None }
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub dest: Destination,
    pub bytes: Bytes,
    /// Reported back through [`Dispatch::send_failed`] if the send fails;
    /// `None` for fire-and-forget (responses, stateless forwards).
    pub token: Option<SendToken>,
}

/// Why a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// Connect refused, unreachable, or timed out.
    Connect,
    /// The TLS handshake failed (bad or unexpected certificate …).
    Tls,
    /// The connection closed or errored before the message was written.
    Closed,
    /// A bounded queue on the way out was full.
    Overloaded,
    /// No listener can send on this transport / address family.
    NoRoute,
}

impl SendFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            SendFailure::Connect => "connect",
            SendFailure::Tls => "tls",
            SendFailure::Closed => "closed",
            SendFailure::Overloaded => "overloaded",
            SendFailure::NoRoute => "no_route",
        }
    }
}

/// The core's side of the contract, implemented by the proxy core and
/// called by the transports from their own tasks.
pub trait Dispatch: Send + Sync + 'static {
    /// Hand over one parsed message. Must not block. `Err` means the core is
    /// overloaded; for a request other than ACK the transport answers 503
    /// with Retry-After, otherwise it drops the message (and counts it).
    fn deliver(&self, inbound: Inbound) -> Result<(), Overloaded>;

    /// A send that carried a token failed.
    fn send_failed(&self, token: SendToken, dest: &Destination, failure: SendFailure);
}

/// The core's queues are full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// An address this proxy listens on, as it appears in Via, Record-Route and
/// loop checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    pub transport: Transport,
    /// The bound socket address.
    pub local: SocketAddr,
    /// The host to put in Via sent-by and Record-Route (configured
    /// `advertise` name, else the bound IP).
    pub host: Arc<str>,
    pub port: u16,
}
