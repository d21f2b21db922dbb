//! The embedded location store: bindings in memory (a sharded `DashMap`, so
//! lookups never wait for the disk), written through to a local redb file.
//!
//! Durability policy: every REGISTER that changes an AOR commits one redb
//! write transaction with `Durability::Immediate` (fsync) before the
//! registrar answers 200, so a crash or power loss after the 200 loses no
//! binding the UA was told about. Writes are serialized (redb has a single
//! writer anyway) and run on tokio's blocking pool. Expiry sweeps are not
//! worth an fsync: they commit with `Durability::None` and become durable
//! with the next immediate commit; a binding resurrected by a crash is
//! already lapsed and is dropped again on reload.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use dashmap::DashMap;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{LocationStore, StoreError, StoreFuture};
use crate::location::binding::{decode_record, encode_record, unix_secs, AorBindings, Binding};

const STORE: &str = "embedded";
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("aor_bindings");

/// Limits of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedLimits {
    /// AORs held at most (default 100 000). AORs are local users that
    /// authenticated, so the directory bounds them too; this is the backstop.
    pub max_aors: usize,
}

impl Default for EmbeddedLimits {
    fn default() -> Self {
        EmbeddedLimits { max_aors: 100_000 }
    }
}

/// Memory + redb location store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    mem: DashMap<String, AorBindings>,
    /// Serializes writers so the file and memory change in the same order.
    write_lock: Mutex<()>,
    bindings: AtomicUsize,
    limits: EmbeddedLimits,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable { store: STORE, reason: e.to_string() }
}

impl EmbeddedStore {
    /// Open (or create) the file and load every binding unexpired at `now`;
    /// lapsed ones are deleted from the file. Blocking: call at start-up.
    pub fn open(path: &Path, limits: EmbeddedLimits, now: SystemTime) -> Result<EmbeddedStore, StoreError> {
        let db = Database::create(path).map_err(unavailable)?;
        let mem = DashMap::new();
        let mut stale: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let mut count = 0usize;
        {
            let txn = db.begin_read().map_err(unavailable)?;
            match txn.open_table(TABLE) {
                Ok(table) => {
                    for row in table.iter().map_err(unavailable)? {
                        let (k, v) = row.map_err(unavailable)?;
                        let aor = k.value().to_owned();
                        let Some(mut rec) = decode_record(v.value()) else {
                            tracing::warn!(aor = %aor.escape_debug(), "dropping undecodable stored registration");
                            stale.push((aor, None));
                            continue;
                        };
                        let before = rec.bindings.len();
                        rec.bindings.retain(|b| !b.is_expired(now));
                        if rec.bindings.is_empty() {
                            stale.push((aor, None));
                            continue;
                        }
                        if rec.bindings.len() != before {
                            stale.push((aor.clone(), Some(encode_record(&rec))));
                        }
                        count += rec.bindings.len();
                        mem.insert(aor, rec);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        let mut txn = db.begin_write().map_err(unavailable)?;
        txn.set_durability(Durability::Immediate).map_err(unavailable)?;
        {
            let mut table = txn.open_table(TABLE).map_err(unavailable)?;
            for (aor, rec) in &stale {
                match rec {
                    Some(bytes) => table.insert(aor.as_str(), bytes.as_slice()).map(drop),
                    None => table.remove(aor.as_str()).map(drop),
                }
                .map_err(unavailable)?;
            }
        }
        txn.commit().map_err(unavailable)?;
        tracing::debug!(aors = mem.len(), bindings = count, "embedded location store loaded");
        Ok(EmbeddedStore {
            inner: Arc::new(Inner { db, mem, write_lock: Mutex::new(()), bindings: AtomicUsize::new(count), limits }),
        })
    }

    /// AORs held in memory.
    pub fn aor_count(&self) -> usize {
        self.inner.mem.len()
    }
}

impl Inner {
    fn get(&self, aor: &str, now: SystemTime) -> AorBindings {
        match self.mem.get(aor) {
            Some(rec) => AorBindings {
                version: rec.version,
                bindings: rec.bindings.iter().filter(|b| !b.is_expired(now)).cloned().collect(),
            },
            None => AorBindings::default(),
        }
    }

    fn replace(&self, aor: &str, expected: u64, bindings: Vec<Binding>) -> Result<u64, StoreError> {
        let _guard = self.write_lock.lock().map_err(|_| unavailable("writer poisoned"))?;
        let (current, old_len) = match self.mem.get(aor) {
            Some(r) => (r.version, r.bindings.len()),
            None => (0, 0),
        };
        if current != expected {
            return Err(StoreError::Conflict);
        }
        if current == 0 && !bindings.is_empty() && self.mem.len() >= self.limits.max_aors {
            return Err(StoreError::Full { limit: "max_aors" });
        }
        let rec = AorBindings { version: current.wrapping_add(1).max(1), bindings };
        let mut txn = self.db.begin_write().map_err(unavailable)?;
        txn.set_durability(Durability::Immediate).map_err(unavailable)?;
        {
            let mut table = txn.open_table(TABLE).map_err(unavailable)?;
            if rec.bindings.is_empty() {
                table.remove(aor).map_err(unavailable)?;
            } else {
                table.insert(aor, encode_record(&rec).as_slice()).map_err(unavailable)?;
            }
        }
        txn.commit().map_err(unavailable)?;
        let version = rec.version;
        let new_len = rec.bindings.len();
        if rec.bindings.is_empty() {
            self.mem.remove(aor);
        } else {
            self.mem.insert(aor.to_owned(), rec);
        }
        self.adjust(old_len, new_len);
        Ok(version)
    }

    fn remove(&self, aor: &str) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().map_err(|_| unavailable("writer poisoned"))?;
        let mut txn = self.db.begin_write().map_err(unavailable)?;
        txn.set_durability(Durability::Immediate).map_err(unavailable)?;
        {
            let mut table = txn.open_table(TABLE).map_err(unavailable)?;
            table.remove(aor).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        if let Some((_, rec)) = self.mem.remove(aor) {
            self.adjust(rec.bindings.len(), 0);
        }
        Ok(())
    }

    fn expire(&self, now: SystemTime) -> Result<usize, StoreError> {
        let _guard = self.write_lock.lock().map_err(|_| unavailable("writer poisoned"))?;
        let t = unix_secs(now);
        let lapsed: Vec<String> = self
            .mem
            .iter()
            .filter(|e| e.value().bindings.iter().any(|b| b.expires_at <= t))
            .map(|e| e.key().clone())
            .collect();
        if lapsed.is_empty() {
            return Ok(0);
        }
        let mut updates = Vec::with_capacity(lapsed.len());
        let mut dropped = 0;
        for aor in lapsed {
            if let Some(rec) = self.mem.get(&aor) {
                let kept: Vec<Binding> = rec.bindings.iter().filter(|b| b.expires_at > t).cloned().collect();
                dropped += rec.bindings.len() - kept.len();
                updates
                    .push((aor.clone(), AorBindings { version: rec.version.wrapping_add(1).max(1), bindings: kept }));
            }
        }
        let mut txn = self.db.begin_write().map_err(unavailable)?;
        txn.set_durability(Durability::None).map_err(unavailable)?;
        {
            let mut table = txn.open_table(TABLE).map_err(unavailable)?;
            for (aor, rec) in &updates {
                if rec.bindings.is_empty() {
                    table.remove(aor.as_str()).map_err(unavailable)?;
                } else {
                    table.insert(aor.as_str(), encode_record(rec).as_slice()).map_err(unavailable)?;
                }
            }
        }
        txn.commit().map_err(unavailable)?;
        for (aor, rec) in updates {
            if rec.bindings.is_empty() {
                self.mem.remove(&aor);
            } else {
                self.mem.insert(aor, rec);
            }
        }
        self.bindings.fetch_sub(dropped.min(self.bindings.load(Ordering::Relaxed)), Ordering::Relaxed);
        Ok(dropped)
    }

    fn adjust(&self, old: usize, new: usize) {
        if new >= old {
            self.bindings.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.bindings.fetch_sub(old - new, Ordering::Relaxed);
        }
    }
}

/// Run a blocking store operation off the async workers.
async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let inner = Arc::clone(inner);
    tokio::task::spawn_blocking(move || f(&inner)).await.map_err(unavailable)?
}

impl LocationStore for EmbeddedStore {
    fn name(&self) -> &'static str {
        STORE
    }

    fn get<'a>(&'a self, aor: &'a str, now: SystemTime) -> StoreFuture<'a, AorBindings> {
        Box::pin(async move { Ok(self.inner.get(aor, now)) })
    }

    fn replace<'a>(
        &'a self,
        aor: &'a str,
        expected: u64,
        bindings: Vec<Binding>,
        _now: SystemTime,
    ) -> StoreFuture<'a, u64> {
        let aor = aor.to_owned();
        Box::pin(async move { blocking(&self.inner, move |i| i.replace(&aor, expected, bindings)).await })
    }

    fn remove<'a>(&'a self, aor: &'a str) -> StoreFuture<'a, ()> {
        let aor = aor.to_owned();
        Box::pin(async move { blocking(&self.inner, move |i| i.remove(&aor)).await })
    }

    fn expire(&self, now: SystemTime) -> StoreFuture<'_, usize> {
        Box::pin(async move { blocking(&self.inner, move |i| i.expire(now)).await })
    }

    fn binding_count(&self) -> Option<usize> {
        Some(self.inner.bindings.load(Ordering::Relaxed))
    }
}
