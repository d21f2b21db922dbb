//! Registrar, location service and digest authentication (RFC 3261 §10,
//! §22; RFC 3327 Path; RFC 5626 outbound; RFC 7616 / RFC 8760 digest).
//!
//! Socket-free: the core hands in parsed messages, the flow and source
//! address they came from, and `now`; it gets back responses and decisions.
//! Concepts owned by the core appear here as minimal stand-ins
//! ([`binding::FlowToken`] for a connection/flow id).
//!
//! Peer input reaches no panic path: the lints below hold outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod auth;
pub mod binding;
pub mod metrics;
pub mod policy;
pub mod registrar;
pub mod store;
