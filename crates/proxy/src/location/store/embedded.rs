//! The embedded location store: bindings in memory (a sharded `DashMap`, so
//! lookups and updates never wait for the disk), persisted by one writer
//! thread to a snapshot and an append-only journal ([`super::journal`]).
//!
//! A write (REGISTER, removal, expiry) is a compare-and-set on the AOR in
//! memory, which then joins the *dirty set*: each AOR at most once, so the
//! set is bounded by `max_aors`. The writer appends the dirty AORs' current
//! records to the journal in one write and makes them durable with one
//! `fdatasync`.
//!
//! Durability policy (`[registrar] flush_interval_ms`):
//! - **Write-behind (default, 100 ms):** the registrar answers 200 as soon as
//!   memory holds the binding; the writer wakes every interval and appends
//!   whatever changed. A crash or power loss loses at most the changes of the
//!   last interval (plus the append under way); a graceful stop (dropping the
//!   store) writes everything first. No REGISTER waits for, or wakes, the
//!   writer: this is what makes a REGISTER cost no more than answering it.
//! - **Write-through (`0`):** a write's future completes only when the
//!   append holding it is durable, so a 200 is never lost. The writer is woken
//!   by each write and appends every AOR that changed meanwhile at once
//!   (group commit): concurrent REGISTERs share one fsync.
//!
//! A failed append (disk full, I/O error) is logged, counted, and retried at
//! the next flush with the AORs kept dirty; under write-through the waiting
//! REGISTERs fail with `Unavailable` (503). `umproxy_location_unflushed_aors`
//! shows how many AORs memory holds ahead of the disk.
//!
//! Without a file ([`EmbeddedStore::memory_only`]) there is no writer: the
//! bindings live and die with the process.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use prometheus::IntGauge;
use tokio::sync::watch;

use super::journal::{self, Batch, Journal, SnapshotWriter};
use super::{LocationStore, StoreError, StoreFuture};
use crate::location::binding::{decode_record, encode_record_into, unix_secs, AorBindings, Binding};

const STORE: &str = "embedded";
/// The default write-behind window.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// AORs held at most (default 100 000). AORs are local users that
    /// authenticated, so the directory bounds them too; this is the backstop.
    pub max_aors: usize,
    /// Write-behind window; zero = write-through (see the module text).
    pub flush_interval: Duration,
    /// Set to the number of AORs changed in memory but not yet on disk.
    pub unflushed: Option<IntGauge>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { max_aors: 100_000, flush_interval: DEFAULT_FLUSH_INTERVAL, unflushed: None }
    }
}

impl EmbeddedConfig {
    /// Write-through: every write waits for its fsync.
    pub fn write_through() -> Self {
        EmbeddedConfig { flush_interval: Duration::ZERO, ..EmbeddedConfig::default() }
    }
}

/// Memory + journal location store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

/// Dropping the last clone stops the writer after a last append, so the files
/// are complete and closed when the store is gone (and can be reopened at once).
struct Shared {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.inner.lock_dirty().closing = true;
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What memory holds ahead of the disk.
#[derive(Default)]
struct Dirty {
    aors: HashSet<Aor, AorHasher>,
    /// The commit the AORs now in `aors` will be part of.
    generation: u64,
    /// Commit now rather than at the end of the interval.
    urgent: bool,
    closing: bool,
}

/// Commit results, for write-through waiters: the highest generation
/// committed and the highest that failed (both only grow).
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    done: u64,
    failed: u64,
}

/// AORs are chosen by peers (the To of a REGISTER): the default SipHash,
/// so crafted AORs cannot pile into one bucket (STYLE.md).
type AorHasher = std::collections::hash_map::RandomState;

/// An AOR as a key: shared by the memory map and the dirty set, so marking
/// an AOR dirty (and the writer dropping the set) allocates nothing.
type Aor = Arc<str>;

struct Inner {
    /// Whether a writer persists changes (false: memory only).
    persistent: bool,
    mem: DashMap<Aor, AorBindings, AorHasher>,
    bindings: AtomicUsize,
    /// AORs in `mem` (kept apart: `DashMap::len` would lock every shard).
    aors: AtomicUsize,
    cfg: EmbeddedConfig,
    dirty: Mutex<Dirty>,
    wake: Condvar,
    flushed: watch::Sender<Flushed>,
    /// The last commit failed (to log the recovery once).
    failing: std::sync::atomic::AtomicBool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable { store: STORE, reason: e.to_string() }
}

impl EmbeddedStore {
    /// Open (or create) the files at `path` and load every binding unexpired
    /// at `now`; lapsed ones are left out of the fresh snapshot written at
    /// start. Blocking: call at start-up.
    pub fn open(path: &Path, cfg: EmbeddedConfig, now: SystemTime) -> Result<EmbeddedStore, StoreError> {
        let recovered = journal::recover(path).map_err(unavailable)?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                bytes = recovered.torn_bytes,
                "registrations journal ended in a torn write (crash during an append); that tail was dropped"
            );
        }
        let mem = DashMap::with_hasher(AorHasher::default());
        let mut count = 0usize;
        for (aor, value) in recovered.records {
            let Some(mut rec) = decode_record(&value) else {
                tracing::warn!(aor = %aor.escape_debug(), "dropping undecodable stored registration");
                continue;
            };
            rec.bindings.retain(|b| !b.is_expired(now));
            if rec.bindings.is_empty() {
                continue;
            }
            count += rec.bindings.len();
            mem.insert(Aor::from(aor), rec);
        }
        let journal = Journal::start(path, recovered.next_journal, |w| snapshot(&mem, w)).map_err(unavailable)?;
        tracing::debug!(aors = mem.len(), bindings = count, "embedded location store loaded");
        let inner = Arc::new(Inner::new(mem, count, cfg, true));
        let writer_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("location-writer".into())
            .spawn(move || writer_inner.run_writer(journal))
            .map_err(unavailable)?;
        Ok(EmbeddedStore { shared: Arc::new(Shared { inner, thread: Some(thread) }) })
    }

    /// A store without a file: nothing survives the process.
    pub fn memory_only(cfg: EmbeddedConfig) -> EmbeddedStore {
        let inner = Arc::new(Inner::new(DashMap::with_hasher(AorHasher::default()), 0, cfg, false));
        EmbeddedStore { shared: Arc::new(Shared { inner, thread: None }) }
    }

    /// AORs held in memory.
    pub fn aor_count(&self) -> usize {
        self.shared.inner.aors.load(Ordering::Relaxed)
    }

    /// Commit every change made so far now, and wait until it is durable.
    pub async fn flush_now(&self) -> Result<(), StoreError> {
        let inner = &self.shared.inner;
        if !inner.persistent {
            return Ok(());
        }
        let generation = {
            let mut d = inner.lock_dirty();
            if d.aors.is_empty() {
                // Nothing new; a commit under way is waited for below.
                d.generation - 1
            } else {
                d.urgent = true;
                d.generation
            }
        };
        inner.wake.notify_one();
        inner.wait_durable(generation).await
    }

    /// The future of a write: ready at once under write-behind, after the
    /// commit under write-through.
    fn finish<T: Send + 'static>(&self, r: Result<(T, Option<u64>), StoreError>) -> StoreFuture<'_, T> {
        let inner = &self.shared.inner;
        match r {
            Ok((v, Some(generation))) if inner.cfg.flush_interval.is_zero() => Box::pin(async move {
                inner.wait_durable(generation).await?;
                Ok(v)
            }),
            Ok((v, _)) => Box::pin(std::future::ready(Ok(v))),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// Every AOR in memory, into a snapshot.
fn snapshot(mem: &DashMap<Aor, AorBindings, AorHasher>, w: &mut SnapshotWriter) {
    for e in mem.iter() {
        w.put(e.key(), |v| encode_record_into(e.value(), v));
    }
}

impl Inner {
    fn new(mem: DashMap<Aor, AorBindings, AorHasher>, bindings: usize, cfg: EmbeddedConfig, persistent: bool) -> Inner {
        if let Some(g) = &cfg.unflushed {
            g.set(0);
        }
        Inner {
            persistent,
            aors: AtomicUsize::new(mem.len()),
            mem,
            bindings: AtomicUsize::new(bindings),
            cfg,
            dirty: Mutex::new(Dirty { generation: 1, ..Dirty::default() }),
            wake: Condvar::new(),
            flushed: watch::Sender::new(Flushed::default()),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock_dirty(&self) -> MutexGuard<'_, Dirty> {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, aor: &str, now: SystemTime) -> AorBindings {
        match self.mem.get(aor) {
            Some(rec) => AorBindings {
                version: rec.version,
                bindings: rec.bindings.iter().filter(|b| !b.is_expired(now)).cloned().collect(),
            },
            None => AorBindings::default(),
        }
    }

    /// Note that `aor` changed; returns the generation that will hold it
    /// (`None` in memory-only mode: nothing will).
    fn mark_dirty(&self, aor: &Aor) -> Option<u64> {
        if !self.persistent {
            return None;
        }
        let mut d = self.lock_dirty();
        // One hash: insert tells whether it was new (the clone is a count).
        if d.aors.insert(Arc::clone(aor)) {
            if let Some(g) = &self.cfg.unflushed {
                g.set(i64::try_from(d.aors.len()).unwrap_or(i64::MAX));
            }
        }
        let generation = d.generation;
        drop(d);
        if self.cfg.flush_interval.is_zero() {
            self.wake.notify_one();
        }
        Some(generation)
    }

    /// Compare-and-set in memory. Returns the new version and, when
    /// something changed, the generation that will make it durable.
    fn replace(&self, aor: &str, expected: u64, bindings: Vec<Binding>) -> Result<(u64, Option<u64>), StoreError> {
        let new = bindings.len();
        if new > 0 {
            // The common case, a refresh of a known AOR: no key to allocate.
            if let Some(mut rec) = self.mem.get_mut(aor) {
                if rec.version != expected {
                    return Err(StoreError::Conflict);
                }
                let old = rec.bindings.len();
                let version = expected.wrapping_add(1).max(1);
                rec.version = version;
                rec.bindings = bindings;
                let key = Arc::clone(rec.key());
                drop(rec);
                self.adjust(old, new);
                return Ok((version, self.mark_dirty(&key)));
            }
        }
        let key = Aor::from(aor);
        let (version, old) = match self.mem.entry(Arc::clone(&key)) {
            Entry::Occupied(mut e) => {
                if e.get().version != expected {
                    return Err(StoreError::Conflict);
                }
                let old = e.get().bindings.len();
                if bindings.is_empty() {
                    // An emptied AOR is gone: its version restarts at 0.
                    e.remove();
                    self.aors.fetch_sub(1, Ordering::Relaxed);
                    (0, old)
                } else {
                    let version = expected.wrapping_add(1).max(1);
                    e.get_mut().version = version;
                    e.get_mut().bindings = bindings;
                    (version, old)
                }
            }
            Entry::Vacant(e) => {
                if expected != 0 {
                    return Err(StoreError::Conflict);
                }
                if bindings.is_empty() {
                    return Ok((0, None));
                }
                if self.aors.load(Ordering::Relaxed) >= self.cfg.max_aors {
                    return Err(StoreError::Full { limit: "max_aors" });
                }
                self.aors.fetch_add(1, Ordering::Relaxed);
                e.insert(AorBindings { version: 1, bindings });
                (1, 0)
            }
        };
        self.adjust(old, new);
        Ok((version, self.mark_dirty(&key)))
    }

    fn remove(&self, aor: &str) -> Option<u64> {
        let (key, rec) = self.mem.remove(aor)?;
        self.aors.fetch_sub(1, Ordering::Relaxed);
        self.adjust(rec.bindings.len(), 0);
        self.mark_dirty(&key)
    }

    /// Drop bindings lapsed at `now` from memory; they reach the disk with the
    /// next commit (no need to hurry: a lapsed binding is dropped on reload).
    fn expire(&self, now: SystemTime) -> usize {
        let t = unix_secs(now);
        let lapsed: Vec<Aor> = self
            .mem
            .iter()
            .filter(|e| e.value().bindings.iter().any(|b| b.expires_at <= t))
            .map(|e| Arc::clone(e.key()))
            .collect();
        let mut dropped = 0;
        for aor in lapsed {
            let emptied = match self.mem.get_mut(&*aor) {
                Some(mut rec) => {
                    let before = rec.bindings.len();
                    rec.bindings.retain(|b| b.expires_at > t);
                    let gone = before - rec.bindings.len();
                    dropped += gone;
                    self.adjust(before, before - gone);
                    rec.version = rec.version.wrapping_add(1).max(1);
                    rec.bindings.is_empty()
                }
                None => continue,
            };
            if emptied && self.mem.remove_if(&*aor, |_, r| r.bindings.is_empty()).is_some() {
                self.aors.fetch_sub(1, Ordering::Relaxed);
            }
            self.mark_dirty(&aor);
        }
        dropped
    }

    /// Wait until `generation` is committed (or failed: `Unavailable`).
    async fn wait_durable(&self, generation: u64) -> Result<(), StoreError> {
        let mut rx = self.flushed.subscribe();
        let state = *rx
            .wait_for(|f| f.done >= generation || f.failed >= generation)
            .await
            .map_err(|_| unavailable("writer stopped"))?;
        if state.done >= generation {
            Ok(())
        } else {
            Err(unavailable("commit failed"))
        }
    }

    fn run_writer(&self, mut journal: Journal) {
        let mut batch = Batch::default();
        loop {
            let (aors, generation, closing) = {
                let mut d = self.lock_dirty();
                let interval = self.cfg.flush_interval;
                if interval.is_zero() {
                    d = self.wake.wait_while(d, |d| d.aors.is_empty() && !d.closing).unwrap_or_else(|p| p.into_inner());
                } else {
                    d = self
                        .wake
                        .wait_timeout_while(d, interval, |d| !d.urgent && !d.closing)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                d.urgent = false;
                if d.aors.is_empty() {
                    if d.closing {
                        return;
                    }
                    continue;
                }
                let generation = d.generation;
                d.generation += 1;
                (std::mem::take(&mut d.aors), generation, d.closing)
            };
            match self.write(&mut journal, &mut batch, &aors) {
                Ok(()) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::warn!("embedded location store writes work again");
                    }
                    self.flushed.send_modify(|f| f.done = generation);
                    if let Some(g) = &self.cfg.unflushed {
                        g.set(i64::try_from(self.lock_dirty().aors.len()).unwrap_or(i64::MAX));
                    }
                }
                Err(e) => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %e, aors = aors.len(), "embedded location store write failed; retrying");
                    }
                    self.flushed.send_modify(|f| f.failed = generation);
                    if closing {
                        tracing::error!(aors = aors.len(), "registrations not saved at shutdown");
                        return;
                    }
                    // Keep them for the next write; don't spin on a broken disk.
                    self.lock_dirty().aors.extend(aors);
                    std::thread::sleep(self.cfg.flush_interval.max(Duration::from_millis(100)));
                }
            }
            if journal.wants_compaction() {
                // A failed compaction loses nothing (the journal goes on
                // growing and holds every change); it is tried again later.
                if let Err(e) = journal.compact(|w| snapshot(&self.mem, w)) {
                    tracing::error!(error = %e, "registrations snapshot failed; the journal keeps every change");
                }
            }
        }
    }

    /// Append each AOR's current record (or its removal) in one durable write.
    fn write(
        &self,
        journal: &mut Journal,
        batch: &mut Batch,
        aors: &HashSet<Aor, AorHasher>,
    ) -> Result<(), StoreError> {
        batch.clear();
        for aor in aors {
            match self.mem.get(&**aor) {
                Some(rec) => batch.put(aor, |v| encode_record_into(&rec, v)),
                None => batch.remove(aor),
            }
        }
        journal.append(batch).map_err(unavailable)
    }

    fn adjust(&self, old: usize, new: usize) {
        if new >= old {
            self.bindings.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.bindings.fetch_sub(old - new, Ordering::Relaxed);
        }
    }
}

impl LocationStore for EmbeddedStore {
    fn name(&self) -> &'static str {
        STORE
    }

    fn get<'a>(&'a self, aor: &'a str, now: SystemTime) -> StoreFuture<'a, AorBindings> {
        Box::pin(std::future::ready(Ok(self.shared.inner.get(aor, now))))
    }

    fn replace<'a>(
        &'a self,
        aor: &'a str,
        expected: u64,
        bindings: Vec<Binding>,
        _now: SystemTime,
    ) -> StoreFuture<'a, u64> {
        self.finish(self.shared.inner.replace(aor, expected, bindings))
    }

    fn remove<'a>(&'a self, aor: &'a str) -> StoreFuture<'a, ()> {
        self.finish(Ok(((), self.shared.inner.remove(aor))))
    }

    fn expire(&self, now: SystemTime) -> StoreFuture<'_, usize> {
        Box::pin(std::future::ready(Ok(self.shared.inner.expire(now))))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.flush_now())
    }

    fn list_aors(&self, limit: usize) -> StoreFuture<'_, Vec<String>> {
        let aors = self.shared.inner.mem.iter().take(limit).map(|e| e.key().to_string()).collect();
        Box::pin(std::future::ready(Ok(aors)))
    }

    fn binding_count(&self) -> Option<usize> {
        Some(self.shared.inner.bindings.load(Ordering::Relaxed))
    }
}
