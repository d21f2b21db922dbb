//! Errors of starting and reconfiguring the transports. Peers never cause
//! these: what they do wrong is counted and logged, not returned.

use std::io;
use std::net::SocketAddr;

use super::types::Transport;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A listener could not bind its address.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind { transport: Transport, addr: SocketAddr, source: io::Error },
    /// A TLS listener was configured without certificates, or a non-TLS
    /// listener with them.
    #[error("listener {transport} {addr}: {problem}")]
    Listener { transport: Transport, addr: SocketAddr, problem: &'static str },
    /// Certificates or keys rustls refused (bad key, key not matching the
    /// certificate, empty CA list …). `what` says which configuration.
    #[error("TLS configuration for {what}: {source}")]
    Tls { what: String, source: rustls::Error },
    /// A client CA list rustls could not use.
    #[error("TLS client CA for {what}: {problem}")]
    ClientCa { what: String, problem: String },
    /// A PEM file could not be read or held nothing usable.
    #[error("{file}: {problem}")]
    Pem { file: String, problem: String },
    /// `reload_tls` named an address no TLS listener is bound to.
    #[error("no TLS listener on {0}")]
    NoTlsListener(SocketAddr),
    /// Registering the transport metrics failed (registered twice).
    #[error("transport metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
