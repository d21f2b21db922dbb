//! The RFC 3261 §16 stateful proxy core.
//!
//! Decision code lives in plain functions (validation, loop detection, route
//! processing, best-response selection) tested without a runtime; the
//! worker shards drive the sans-IO transaction layer from tokio.

pub mod branch;
pub mod response;
pub mod router;
pub mod route;
pub mod validate;
