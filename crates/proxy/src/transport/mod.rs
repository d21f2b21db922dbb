//! Transports: UDP sockets, TCP and TLS connections.
//!
//! [`TransportHub`] binds the listeners and runs one task per UDP socket
//! and per connection; messages go up to the core through a [`Dispatch`]
//! and come down through [`TransportHub::send`].
//!
//! Metrics (all labels bounded; `transport` is udp/tcp/tls):
//! - `umproxy_transport_messages_received_total{transport}`,
//!   `umproxy_transport_messages_sent_total{transport}`
//! - `umproxy_transport_parse_errors_total{transport,kind}`: parse and
//!   framing errors by kind (`header`, `limit_message_size`, …)
//! - `umproxy_transport_overload_total{transport,kind}`: the core's queue was
//!   full; `rejected_503` or `dropped` (responses, ACK)
//! - `umproxy_transport_send_failures_total{transport,reason}`
//! - `umproxy_transport_connections_open{transport}` (gauge),
//!   `umproxy_transport_connections_total{transport,direction}`,
//!   `umproxy_transport_connections_rejected_total{transport,reason}`,
//!   `umproxy_transport_connections_closed_total{transport,reason}`
//! - `umproxy_transport_tls_handshake_failures_total{direction,reason}`
//! - `umproxy_transport_keepalives_total{transport}`: CRLF pings answered

mod conn_table;
mod error;
mod hub;
mod limits;
mod metrics;
mod tcp;
mod tls;
mod types;
mod udp;

pub use error::TransportError;
pub use hub::{ListenerSpec, TransportHub};
pub use limits::TransportLimits;
pub use tls::{load_certificates, load_private_key, OutboundTls, TlsClientSpec, TlsServerSpec};
pub use types::*;

#[cfg(test)]
mod tests;
