//! End-to-end tests: the real umproxy binary on loopback with real peers.
//!
//! Each module starts its own proxy on fresh ports, so tests run in
//! parallel. Tests that need SIPp or dnsmasq skip without them, unless `CI`
//! is set, where a missing tool fails the test.

mod bad_input;
mod baresip;
mod basic_call;
mod cancel;
mod config;
mod deploy;
mod dns_failover;
mod forking;
mod loss;
mod metrics;
mod mtls;
mod ops;
mod source_limit;
mod tls;

use std::path::{Path, PathBuf};

/// The umproxy binary cargo built for this test.
pub fn umproxy() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_umproxy"))
}

/// A SIPp scenario file of `tests/e2e/scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/scenarios").join(name)
}

/// Whether SIPp tests can run (panics under CI when `sipp` is missing).
pub fn have_sipp() -> bool {
    e2e_support::require_tool("sipp")
}
