//! umproxy: a SIP edge proxy with a built-in Exchange Unified Messaging
//! (ExUM) routing application.
//!
//! Layers, each depending only on the ones above it in this list:
//! - [`config`]: the TOML configuration, validated before anything starts.
//! - [`transport`]: UDP, TCP and TLS listeners and connections, framing,
//!   parsing, limits; hands messages to the core through [`transport::Dispatch`].
//! - [`dns`]: RFC 3263 next-hop resolution.
//! - [`core`]: the RFC 3261 §16 stateful proxy on the sans-IO transaction
//!   layer; asks a [`core::Router`] where requests go.
//! - [`nat`]: NAT traversal for UAs without SIP Outbound (RFC 3581 on
//!   every response, NAT'd bindings, Contact marking, keep-alive pings).
//! - [`metrics`] and [`admin`]: Prometheus metrics and the admin HTTP listener
//!   with the runtime control API; [`ctl`] is its command-line client.
//! - [`server`]: start, reload, drain and stop a whole umproxy.

pub mod admin;
pub mod alloc;
pub mod app;
pub mod caller;
pub mod config;
pub mod core;
pub mod ctl;
pub mod dns;
pub mod exum;
pub mod location;
pub mod metrics;
pub mod nat;
#[cfg(unix)]
pub mod notify;
pub mod server;
pub mod transport;

#[cfg(test)]
mod deploy_tests;
