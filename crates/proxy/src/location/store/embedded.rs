//! The embedded location store: bindings in memory (a sharded `DashMap`, so
//! lookups and updates never wait for the disk), persisted by one writer
//! thread to a snapshot and an append-only journal ([`super::journal`]).
//!
//! A write (REGISTER, removal, expiry) is a compare-and-set on the AOR in
//! memory and, while the AOR is still locked, the append of its new record
//! to the journal: a `write(2)` into the page cache, so that the journal
//! holds each AOR's changes in the order memory made them. The writer
//! thread makes the appends durable with `fdatasync`, and compacts.
//!
//! Durability policy (`[registrar] flush_interval_ms`), the model of a
//! database's asynchronous commit:
//! - **Write-behind (default, 100 ms):** the registrar answers 200 once the
//!   record is appended; the writer syncs every interval. A crash of the
//!   process (panic, OOM kill, SIGKILL) loses nothing that was answered;
//!   only a crash of the operating system or a power loss can lose the
//!   appends of the last interval. No REGISTER waits for the writer.
//! - **Write-through (`0`):** a write's future completes only when the sync
//!   covering its append is done, so not even a power loss loses a 200. The
//!   writer is woken by each append and syncs everything appended meanwhile
//!   at once (group commit): concurrent REGISTERs share one fsync.
//!
//! A failed append (disk full, I/O error) fails the write (`Unavailable`,
//! 503: nothing unrecorded is acknowledged), is logged and counted, and the
//! AOR's current record is appended again at the next flush.
//! `umproxy_location_unflushed_aors` shows the records memory holds ahead
//! of the disk: appended but not yet synced, or waiting for a retry.
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

use super::journal::{self, Batch, Journal, JournalFile, SnapshotWriter};
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

/// The writer's orders.
#[derive(Default)]
struct Dirty {
    /// AORs whose append failed: their current record is appended again.
    aors: HashSet<Aor, AorHasher>,
    /// Sync now rather than at the end of the interval.
    urgent: bool,
    closing: bool,
}

/// Sync results, for write-through waiters: the last append synced, and
/// the last append a failed sync should have covered (both only grow).
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    done: u64,
    failed: u64,
}

thread_local! {
    /// The record being appended, reused: appends happen on the threads that
    /// handle REGISTERs, one at a time on each.
    static SCRATCH: std::cell::RefCell<Batch> = std::cell::RefCell::new(Batch::default());
}

/// AORs are chosen by peers (the To of a REGISTER): the default SipHash,
/// so crafted AORs cannot pile into one bucket (STYLE.md).
type AorHasher = std::collections::hash_map::RandomState;

/// An AOR as a key: shared by the memory map and the dirty set, so marking
/// an AOR dirty (and the writer dropping the set) allocates nothing.
type Aor = Arc<str>;

struct Inner {
    /// The journal every change is appended to (None: memory only).
    journal: Option<Arc<JournalFile>>,
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
        let inner = Arc::new(Inner::new(mem, count, cfg, Some(Arc::clone(journal.file()))));
        let writer_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("location-writer".into())
            .spawn(move || writer_inner.run_writer(journal))
            .map_err(unavailable)?;
        Ok(EmbeddedStore { shared: Arc::new(Shared { inner, thread: Some(thread) }) })
    }

    /// A store without a file: nothing survives the process.
    pub fn memory_only(cfg: EmbeddedConfig) -> EmbeddedStore {
        let inner = Arc::new(Inner::new(DashMap::with_hasher(AorHasher::default()), 0, cfg, None));
        EmbeddedStore { shared: Arc::new(Shared { inner, thread: None }) }
    }

    /// AORs held in memory.
    pub fn aor_count(&self) -> usize {
        self.shared.inner.aors.load(Ordering::Relaxed)
    }

    /// Sync every change made so far now, and wait until it is durable.
    pub async fn flush_now(&self) -> Result<(), StoreError> {
        let inner = &self.shared.inner;
        let Some(journal) = &inner.journal else { return Ok(()) };
        let appended = journal.appends();
        inner.lock_dirty().urgent = true;
        inner.wake.notify_one();
        inner.wait_durable(appended).await
    }

    /// The future of a write: ready at once under write-behind (the record
    /// is appended), after its sync under write-through.
    fn finish<T: Send + 'static>(&self, r: Result<(T, Option<u64>), StoreError>) -> StoreFuture<'_, T> {
        let inner = &self.shared.inner;
        match r {
            Ok((v, Some(append))) if inner.cfg.flush_interval.is_zero() => Box::pin(async move {
                inner.wait_durable(append).await?;
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
    fn new(
        mem: DashMap<Aor, AorBindings, AorHasher>,
        bindings: usize,
        cfg: EmbeddedConfig,
        journal: Option<Arc<JournalFile>>,
    ) -> Inner {
        if let Some(g) = &cfg.unflushed {
            g.set(0);
        }
        Inner {
            journal,
            aors: AtomicUsize::new(mem.len()),
            mem,
            bindings: AtomicUsize::new(bindings),
            cfg,
            dirty: Mutex::new(Dirty::default()),
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

    /// Append `aor`'s new state (`None`: removed) to the journal. Called
    /// with the AOR locked in memory, so that its records reach the journal
    /// in the order its changes were made. Returns the append's number (to
    /// wait for its sync), `None` in memory-only mode. A failed append is
    /// retried by the writer and fails the write.
    fn persist(&self, aor: &Aor, rec: Option<&AorBindings>) -> Result<Option<u64>, StoreError> {
        let Some(journal) = &self.journal else { return Ok(None) };
        let appended = SCRATCH.with(|scratch| {
            let mut batch = scratch.borrow_mut();
            batch.clear();
            match rec {
                Some(r) => batch.put(aor, |v| encode_record_into(r, v)),
                None => batch.remove(aor),
            }
            journal.append(batch.bytes())
        });
        match appended {
            Ok(n) => {
                if let Some(g) = &self.cfg.unflushed {
                    g.inc();
                }
                if self.cfg.flush_interval.is_zero() {
                    // Under the lock the writer checks its orders with, so
                    // that it cannot miss this wake-up.
                    let _orders = self.lock_dirty();
                    self.wake.notify_one();
                }
                Ok(Some(n))
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "registrations journal append failed; REGISTERs get 503 until it works");
                }
                let mut d = self.lock_dirty();
                // One hash: insert tells whether it was new (the clone is a count).
                if d.aors.insert(Arc::clone(aor)) {
                    if let Some(g) = &self.cfg.unflushed {
                        g.inc();
                    }
                }
                Err(unavailable(e))
            }
        }
    }

    /// Append `aor`'s current state again (after a failed append), with the
    /// AOR locked, present or not.
    fn persist_current(&self, aor: &Aor) -> Result<Option<u64>, StoreError> {
        match self.mem.entry(Arc::clone(aor)) {
            Entry::Occupied(e) => self.persist(aor, Some(e.get())),
            Entry::Vacant(_) => self.persist(aor, None),
        }
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
                let persisted = self.persist(&key, Some(&rec));
                drop(rec);
                self.adjust(old, new);
                return Ok((version, persisted?));
            }
        }
        let key = Aor::from(aor);
        let (version, old, persisted) = match self.mem.entry(Arc::clone(&key)) {
            Entry::Occupied(mut e) => {
                if e.get().version != expected {
                    return Err(StoreError::Conflict);
                }
                let old = e.get().bindings.len();
                if bindings.is_empty() {
                    // An emptied AOR is gone: its version restarts at 0.
                    // Recorded before the entry (and its lock) goes.
                    let persisted = self.persist(&key, None);
                    e.remove();
                    self.aors.fetch_sub(1, Ordering::Relaxed);
                    (0, old, persisted)
                } else {
                    let version = expected.wrapping_add(1).max(1);
                    e.get_mut().version = version;
                    e.get_mut().bindings = bindings;
                    (version, old, self.persist(&key, Some(e.get())))
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
                let e = e.insert_entry(AorBindings { version: 1, bindings });
                (1, 0, self.persist(&key, Some(e.get())))
            }
        };
        self.adjust(old, new);
        Ok((version, persisted?))
    }

    fn remove(&self, aor: &str) -> Result<Option<u64>, StoreError> {
        let key = Aor::from(aor);
        let Entry::Occupied(e) = self.mem.entry(Arc::clone(&key)) else { return Ok(None) };
        let persisted = self.persist(&key, None);
        let rec = e.remove();
        self.aors.fetch_sub(1, Ordering::Relaxed);
        self.adjust(rec.bindings.len(), 0);
        persisted
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
            let Entry::Occupied(mut e) = self.mem.entry(Arc::clone(&aor)) else { continue };
            let rec = e.get_mut();
            let before = rec.bindings.len();
            rec.bindings.retain(|b| b.expires_at > t);
            let gone = before - rec.bindings.len();
            dropped += gone;
            self.adjust(before, before - gone);
            rec.version = rec.version.wrapping_add(1).max(1);
            // A failed append is retried by the writer; a lapsed binding is
            // dropped at load anyway.
            if rec.bindings.is_empty() {
                let _ = self.persist(&aor, None);
                e.remove();
                self.aors.fetch_sub(1, Ordering::Relaxed);
            } else {
                let _ = self.persist(&aor, Some(e.get()));
            }
        }
        dropped
    }

    /// Wait until append number `append` is synced (or its sync failed:
    /// `Unavailable`).
    async fn wait_durable(&self, append: u64) -> Result<(), StoreError> {
        let mut rx = self.flushed.subscribe();
        let state = *rx
            .wait_for(|f| f.done >= append || f.failed >= append)
            .await
            .map_err(|_| unavailable("writer stopped"))?;
        if state.done >= append {
            Ok(())
        } else {
            Err(unavailable("sync failed"))
        }
    }

    /// The writer thread: sync on the interval (write-behind) or as soon as
    /// anything was appended (write-through); retry failed appends; compact.
    fn run_writer(&self, mut journal: Journal) {
        let mut synced = 0;
        loop {
            let (retry, closing) = {
                let mut d = self.lock_dirty();
                let interval = self.cfg.flush_interval;
                if interval.is_zero() {
                    let file = journal.file();
                    d = self
                        .wake
                        .wait_while(d, |d| d.aors.is_empty() && !d.closing && !d.urgent && file.appends() == synced)
                        .unwrap_or_else(|p| p.into_inner());
                } else {
                    d = self
                        .wake
                        .wait_timeout_while(d, interval, |d| !d.urgent && !d.closing)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                d.urgent = false;
                (std::mem::take(&mut d.aors), d.closing)
            };
            let mut left = 0;
            for aor in &retry {
                if self.persist_current(aor).is_err() {
                    left += 1;
                }
            }
            if journal.file().appends() != synced {
                match journal.sync() {
                    Ok(n) => {
                        synced = n;
                        if left == 0 && self.failing.swap(false, Ordering::Relaxed) {
                            tracing::warn!("registrations journal writes work again");
                        }
                        self.flushed.send_modify(|f| f.done = n);
                        if let Some(g) = &self.cfg.unflushed {
                            g.set(i64::try_from(self.lock_dirty().aors.len()).unwrap_or(i64::MAX));
                        }
                    }
                    Err(e) => {
                        let appended = journal.file().appends();
                        if !self.failing.swap(true, Ordering::Relaxed) {
                            tracing::error!(error = %e, "registrations journal sync failed; retrying");
                        }
                        self.flushed.send_modify(|f| f.failed = appended);
                        if closing {
                            tracing::error!("registrations journal not synced at shutdown");
                            return;
                        }
                        // Don't spin on a broken disk.
                        std::thread::sleep(self.cfg.flush_interval.max(Duration::from_millis(100)));
                        continue;
                    }
                }
            }
            if closing {
                if left > 0 {
                    tracing::error!(aors = left, "registrations not saved at shutdown");
                }
                return;
            }
            if left > 0 {
                std::thread::sleep(self.cfg.flush_interval.max(Duration::from_millis(100)));
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
        self.finish(self.shared.inner.remove(aor).map(|n| ((), n)))
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

    fn for_each_binding(&self, now: SystemTime, f: &mut dyn FnMut(&Binding)) -> bool {
        for rec in self.shared.inner.mem.iter() {
            rec.bindings.iter().filter(|b| !b.is_expired(now)).for_each(&mut *f);
        }
        true
    }
}
