//! Location stores: where bindings live. One async trait, two backends:
//! [`embedded::EmbeddedStore`] (memory + a local snapshot and journal) and
//! [`redis::RedisStore`] (shared by several instances).
//!
//! Every write is a compare-and-set on the AOR's version, so a registrar
//! running on several instances (or several tasks) never loses an update: it
//! reads, computes the new set, and retries when another writer won.

pub mod embedded;
mod journal;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use super::binding::{AorBindings, Binding};

/// A boxed store future, so the core can hold an `Arc<dyn LocationStore>`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed. None of these is the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time (Redis down,
    /// file unwritable). The registrar answers 503 with Retry-After.
    #[error("{store} store unavailable: {reason}")]
    Unavailable { store: &'static str, reason: String },
    /// Another writer replaced the AOR since it was read (compare-and-set lost).
    #[error("concurrent update of the AOR")]
    Conflict,
    /// A configured capacity is reached (e.g. AORs per embedded store).
    #[error("store full: {limit}")]
    Full { limit: &'static str },
    /// A stored value could not be decoded (written by another version or damaged).
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The SIP status the core answers with (RFC 3261 §21.5).
    pub fn status(&self) -> u16 {
        match self {
            StoreError::Unavailable { .. } | StoreError::Full { .. } => 503,
            StoreError::Conflict | StoreError::Corrupt(_) => 500,
        }
    }
}

/// The location service's storage.
///
/// Methods take `now` so expiry is decided by the caller's clock (tests use
/// a virtual one). Returned bindings never include ones lapsed at `now`.
pub trait LocationStore: Send + Sync {
    /// A short name for logs and the `store` metric label.
    fn name(&self) -> &'static str;

    /// The unexpired bindings of `aor` and the record's version (0 = none).
    fn get<'a>(&'a self, aor: &'a str, now: SystemTime) -> StoreFuture<'a, AorBindings>;

    /// Atomically replace all bindings of `aor`, provided its version is
    /// still `expected`; an empty `bindings` removes the AOR. Returns the new
    /// version, or [`StoreError::Conflict`] when another writer got there first.
    fn replace<'a>(
        &'a self,
        aor: &'a str,
        expected: u64,
        bindings: Vec<Binding>,
        now: SystemTime,
    ) -> StoreFuture<'a, u64>;

    /// Remove every binding of `aor` unconditionally (administrative removal).
    fn remove<'a>(&'a self, aor: &'a str) -> StoreFuture<'a, ()>;

    /// Drop bindings lapsed at `now`; returns how many were dropped. The core
    /// calls it periodically (Redis also expires whole AORs by TTL).
    fn expire(&self, now: SystemTime) -> StoreFuture<'_, usize>;

    /// Make every write completed so far durable (the embedded store's
    /// write-behind); stores that are always durable return at once.
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Up to `limit` AORs that have bindings, for the admin API's listing
    /// (`ul.dump`); in no particular order.
    fn list_aors(&self, limit: usize) -> StoreFuture<'_, Vec<String>>;

    /// Active bindings held, when the store can tell cheaply (the embedded
    /// store can; a shared Redis store cannot and returns `None`).
    fn binding_count(&self) -> Option<usize>;

    /// Call `f` with every binding unexpired at `now`, when the store holds
    /// them itself (the embedded store: read once at start, to resume the
    /// NAT keep-alive pings of persisted bindings). Returns whether it did;
    /// a shared store does not scan (`false`).
    fn for_each_binding(&self, now: SystemTime, f: &mut dyn FnMut(&Binding)) -> bool {
        let _ = (now, f);
        false
    }
}

#[cfg(test)]
mod tests;
