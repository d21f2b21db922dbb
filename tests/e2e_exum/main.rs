//! End-to-end tests of the ExUM routing application (issue 6).
//!
//! The real umproxy binary on loopback with a mixed-mode directory: SIPp
//! callers and registered callees over UDP, UM servers and hosting providers
//! as mutual-TLS peers ([`e2e_support::TlsUas`]) that record what they
//! receive. Each test starts its own proxy and peers on fresh ports. Tests
//! that need SIPp skip without it, unless `CI` is set, where they fail.
//! The main scenarios also run on the LDAP backend (`ldap_…` tests): the
//! same directory as LDAP entries in a real `slapd` plus the topology file
//! ([`ldap`]); they skip without slapd, and fail under `CI`.

mod config;
mod failover;
mod fixture;
mod hosted;
mod ldap;
mod on_prem;
mod provider;
mod redirect;
mod reload;
mod split_domain;
mod triggers;

use std::path::{Path, PathBuf};

/// The umproxy binary cargo built for this test.
pub fn umproxy() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_umproxy"))
}

/// A SIPp scenario of `tests/e2e_exum/scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e_exum/scenarios").join(name)
}

/// Whether SIPp tests can run (panics under CI when `sipp` is missing).
pub fn have_sipp() -> bool {
    e2e_support::require_tool("sipp")
}
