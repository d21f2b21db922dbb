//! Transports: UDP sockets, TCP and TLS connections.
mod types;
pub use types::*;
