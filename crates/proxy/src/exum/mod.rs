//! The ExUM routing application (DESIGN.md §6, §9; EXUM.md): which Unified
//! Messaging service a call goes to, and the INVITE that goes there.
//!
//! This module is the socket-free core. It owns no sockets, timers or tasks:
//! - [`directory`]: the shared SIP address space (users, contacts, hosted
//!   voice-mail policies, UM dial plans, hosting providers), loaded from
//!   `directory.toml` into an immutable [`Directory`] snapshot that a
//!   [`DirectoryHandle`] swaps atomically on reload;
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
//! [`plan::UmAttemptPlan`] hands out.

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
    accept_from_provider, classify_request, divert_reason, voicemail_target, CallOutcome, Classification,
    DiversionReason, ProviderAcceptance, RingPlan, DEFAULT_VERIFICATION_HEADER,
};
pub use directory::{Directory, DirectoryHandle, LoadOptions};
pub use error::{DirectoryError, Problem, UmRequestError};
pub use ldap::LdapSettings;
pub use model::{Mailbox, UmRoute, UmServer, UmTarget};
pub use plan::{EscapeGuard, HealthTable, UmAttempt, UmAttemptPlan, UmFailure};
pub use um_request::{build_um_invite, UmInviteContext, UmTemplates};
