//! The ExUM routing application (DESIGN.md §6, §9; EXUM.md): which Unified
//! Messaging service a call goes to, and the INVITE that goes there.
//!
//! This module is the ExUM core. Apart from the LDAP loader it does no I/O
//! and owns no sockets, timers or tasks:
//! - [`directory`]: the shared SIP address space (users, contacts, hosted
//!   voice-mail policies, UM dial plans, hosting providers), loaded from
//!   `directory.toml` into an immutable [`Directory`] snapshot that a
//!   [`DirectoryHandle`] swaps atomically on reload (or
//!   [`Directory::example`], built in);
//! - [`ldap`]: the same model from an Active-Directory-like LDAP tree
//!   (async, `ldap3`; the one part that does I/O);
//! - [`decision`]: plain functions that classify a request and map a call
//!   outcome to a diversion reason;
//! - [`um_request`]: the INVITE toward UM (Request-URI templates, Diversion,
//!   History-Info);
//! - [`plan`]: voice-mail escape, UM server failover and health, as state
//!   machines that take `now` as an argument.
//!
//! The proxy core drives it: it asks [`decision::classify_request`] what to do
//! with a request, forks to the user's contacts itself, feeds the outcome to
//! [`decision::divert_reason`], and sends what [`um_request::build_um_invite`]
//! returns (after adding its own Via, Max-Forwards and Route) to the servers a
//! [`plan::UmAttemptPlan`] hands out. [`decision::accept_from_provider`]
//! decides on requests from hosting providers after the TLS handshake.

pub mod decision;
pub mod directory;
pub mod error;
pub mod ldap;
pub mod model;
pub mod plan;
pub mod um_request;

#[cfg(test)]
mod tests;

pub use decision::{
    accept_from_provider, classify_request, divert_reason, from_aor, provider_caller, reason_label,
    verification_marker, voicemail_target, CallOutcome, Classification, DiversionReason, ProviderAcceptance,
    ProviderCaller, RingPlan, DEFAULT_VERIFICATION_HEADER,
};
pub use directory::{Directory, DirectoryHandle, LoadOptions};
pub use error::{DirectoryError, Problem, UmRequestError};
pub use ldap::LdapSettings;
pub use model::{ContactKind, Home, Mailbox, Security, UmRoute, UmServer, UmTarget, User, VerificationLevel};
pub use plan::{EscapeGuard, HealthTable, UmAttempt, UmAttemptPlan, UmFailure};
pub use um_request::{build_um_invite, UmInviteContext, UmTemplates};
