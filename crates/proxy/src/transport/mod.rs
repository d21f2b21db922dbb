//! Transports: UDP sockets, TCP and TLS connections.
//!
//! [`TransportHub`] binds the listeners and runs one task per UDP socket
//! and per connection; messages go up to the core through a [`Dispatch`]
//! and come down through [`TransportHub::send`].

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
