//! The embedded store's files: a snapshot and an append-only journal.
//!
//! - `<path>`: the **snapshot**, every AOR's record at one moment. Written to
//!   `<path>.tmp`, synced, then renamed over `<path>`, so it is always whole.
//!   Its header names the first journal to replay after it.
//! - `<path>.journal.<n>`: **journals**, numbered. Each write batch appends one
//!   block of records (an AOR's whole record, or its removal) and is synced
//!   with one `fdatasync`; the newest record of an AOR wins.
//!
//! Every record is framed as `len (u32) | crc32 (u32) | payload`, so a batch
//! torn by a crash is recognised: loading stops at the first frame that is
//! short or fails its checksum, and that tail is cut off. A damaged snapshot
//! is an error (it is never written in place, so damage means a bad disk).
//!
//! Compaction starts a new journal, writes a snapshot of memory naming it,
//! and then deletes the older journals. Every record appended after the
//! snapshot is at least as new as what the snapshot holds, and a crash at
//! any step leaves either the old snapshot with all its journals or the new
//! snapshot with its own.
//!
//! Why not a B-tree file: the first version committed each batch to a redb
//! table. Copy-on-write of the leaves the batch touched (a random spread of
//! AORs) cost about 3 µs of writer CPU per REGISTER at 8 000 REGISTER/s, an
//! eighth of the whole REGISTER; appending costs one encode per change.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const SNAPSHOT_MAGIC: &[u8; 8] = b"umpxsnp1";
const JOURNAL_MAGIC: &[u8; 8] = b"umpxjnl1";
const HEADER_LEN: usize = 16;
const FRAME_LEN: usize = 8;
/// Larger frames are never written (an AOR's bindings are capped well below).
const MAX_PAYLOAD: usize = 1 << 20;

const KIND_PUT: u8 = 1;
const KIND_REMOVE: u8 = 2;
/// Ends a snapshot; carries the number of records before it.
const KIND_END: u8 = 3;

/// Journals smaller than this are never compacted.
const COMPACT_MIN_BYTES: u64 = 8 << 20;

/// What the files held at start: each AOR's newest record.
pub(super) struct Recovered {
    pub records: HashMap<String, Vec<u8>>,
    /// The number the next journal takes.
    pub next_journal: u64,
    /// Bytes cut off torn journal tails (logged by the caller).
    pub torn_bytes: u64,
}

/// The current journal file, shared: any thread appends to it (a write
/// into the page cache, no sync), the writer thread syncs and replaces it.
pub(super) struct JournalFile {
    current: Mutex<Current>,
}

struct Current {
    number: u64,
    /// Shared with the writer's sync, which runs without the lock.
    file: Arc<File>,
    /// Bytes of the journal known to be whole (a failed append is cut back to it).
    len: u64,
    /// Journal bytes written since the last snapshot (over every journal).
    since_snapshot: u64,
    /// Appends so far (over every journal): what a sync makes durable.
    appends: u64,
}

impl JournalFile {
    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append `bytes` (whole frames) to the journal, in the page cache: once
    /// this returns, a crash of the process loses nothing of it; only a crash
    /// of the operating system can, until the next [`Journal::sync`]. Returns
    /// the append's number, for waiting on its sync. On failure the journal
    /// is cut back to its last whole record, so a retry appends after good
    /// data.
    pub fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let mut c = self.lock();
        match (&*c.file).write_all(bytes) {
            Ok(()) => {
                c.len += bytes.len() as u64;
                c.since_snapshot += bytes.len() as u64;
                c.appends += 1;
                Ok(c.appends)
            }
            Err(e) => {
                let len = c.len;
                if let Err(cut) = c.file.set_len(len).and_then(|()| {
                    use std::io::Seek;
                    (&*c.file).seek(io::SeekFrom::Start(len)).map(drop)
                }) {
                    tracing::error!(error = %cut, "cannot cut a failed registrations journal append back");
                }
                Err(e)
            }
        }
    }

    /// Appends so far.
    pub fn appends(&self) -> u64 {
        self.lock().appends
    }
}

/// The writer's side of the files: syncs the journal, compacts it into a
/// new snapshot.
pub(super) struct Journal {
    snapshot: PathBuf,
    file: Arc<JournalFile>,
    /// Size of the last snapshot: the journals are compacted once they outgrow it.
    snapshot_len: u64,
    /// After a failed compaction, the next try waits for this much journal.
    retry_at: u64,
}

/// Builds a block of framed records in memory.
#[derive(Default)]
pub(super) struct Batch {
    buf: Vec<u8>,
    records: u64,
}

impl Batch {
    /// Append a record for `aor`; `encode` writes its value (the encoded bindings).
    pub fn put(&mut self, aor: &str, encode: impl FnOnce(&mut Vec<u8>)) {
        self.frame(KIND_PUT, aor, encode);
    }

    /// Append the removal of `aor`.
    pub fn remove(&mut self, aor: &str) {
        self.frame(KIND_REMOVE, aor, |_| {});
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
    }

    fn frame(&mut self, kind: u8, aor: &str, encode: impl FnOnce(&mut Vec<u8>)) {
        let Ok(aor_len) = u16::try_from(aor.len()) else {
            // AORs are bounded by the URI length limit, far below 64 KiB.
            tracing::error!(len = aor.len(), "AOR too long to store; not persisted");
            return;
        };
        self.framed(kind, |buf| {
            buf.extend_from_slice(&aor_len.to_le_bytes());
            buf.extend_from_slice(aor.as_bytes());
            encode(buf);
        });
    }

    /// The framed records, as appended.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The end mark of a snapshot: the number of records before it.
    fn end(&mut self, count: u64) {
        self.framed(KIND_END, |buf| buf.extend_from_slice(&count.to_le_bytes()));
    }

    /// Append one frame: `kind`, then what `payload` writes.
    fn framed(&mut self, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; FRAME_LEN]);
        self.buf.push(kind);
        payload(&mut self.buf);
        let body = self.buf.get(start + FRAME_LEN..).unwrap_or_default();
        let (len, crc) = (body.len(), crc32fast::hash(body));
        match u32::try_from(len).ok().filter(|&l| l as usize <= MAX_PAYLOAD) {
            Some(len) => {
                if let Some(head) = self.buf.get_mut(start..start + FRAME_LEN) {
                    let ([l0, l1, l2, l3], [c0, c1, c2, c3]) = (len.to_le_bytes(), crc.to_le_bytes());
                    head.copy_from_slice(&[l0, l1, l2, l3, c0, c1, c2, c3]);
                }
                self.records += 1;
            }
            None => {
                tracing::error!(len, "registration record too large to store; not persisted");
                self.buf.truncate(start);
            }
        }
    }
}

/// Writes a snapshot: records go through a buffered file; the first I/O
/// error is kept and returned by [`finish`](Self::finish).
pub(super) struct SnapshotWriter {
    out: BufWriter<File>,
    one: Batch,
    written: u64,
    count: u64,
    error: Option<io::Error>,
}

impl SnapshotWriter {
    /// Add `aor`'s record; `encode` writes its value.
    pub fn put(&mut self, aor: &str, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.error.is_some() {
            return;
        }
        self.one.clear();
        self.one.put(aor, encode);
        self.write_one();
    }

    fn write_one(&mut self) {
        match self.out.write_all(&self.one.buf) {
            Ok(()) => {
                self.written += self.one.buf.len() as u64;
                self.count += self.one.records;
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// Write a snapshot naming journal `first_journal`; `fill` adds the records.
/// Returns its size.
fn write_snapshot(path: &Path, first_journal: u64, fill: impl FnOnce(&mut SnapshotWriter)) -> io::Result<u64> {
    let tmp = tmp_path(path);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    out.write_all(&header(SNAPSHOT_MAGIC, first_journal))?;
    let mut w = SnapshotWriter { out, one: Batch::default(), written: HEADER_LEN as u64, count: 0, error: None };
    fill(&mut w);
    w.one.clear();
    w.one.end(w.count);
    w.write_one();
    if let Some(e) = w.error {
        return Err(e);
    }
    let file = w.out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(w.written)
}

fn header(magic: &[u8; 8], number: u64) -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    let (m, n) = h.split_at_mut(8);
    m.copy_from_slice(magic);
    n.copy_from_slice(&number.to_le_bytes());
    h
}

fn journal_path(snapshot: &Path, number: u64) -> PathBuf {
    let mut name = snapshot.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".journal.{number}"));
    snapshot.with_file_name(name)
}

fn tmp_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    snapshot.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Make a directory's entries (a new or renamed file) durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent(path))?.sync_all()
}

/// The journals beside `snapshot`, by number.
fn journals(snapshot: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut prefix = snapshot.file_name().unwrap_or_default().to_os_string();
    prefix.push(".journal.");
    let prefix = prefix.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(parent(snapshot))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix(prefix.as_str())).and_then(|n| n.parse().ok()) else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort_unstable_by_key(|(n, _)| *n);
    Ok(found)
}

/// One record read back.
enum Record<'a> {
    Put(&'a str, &'a [u8]),
    Remove(&'a str),
    End(u64),
}

/// Read framed records from `bytes`; returns how many bytes were whole.
fn read_records<'a>(bytes: &'a [u8], mut each: impl FnMut(Record<'a>)) -> usize {
    let mut at = 0;
    loop {
        let Some(frame) = bytes.get(at..at + FRAME_LEN).and_then(|f| <[u8; FRAME_LEN]>::try_from(f).ok()) else {
            return at;
        };
        let [l0, l1, l2, l3, c0, c1, c2, c3] = frame;
        let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if len > MAX_PAYLOAD {
            return at;
        }
        let Some(payload) = bytes.get(at + FRAME_LEN..at + FRAME_LEN + len) else { return at };
        if crc32fast::hash(payload) != crc {
            return at;
        }
        let Some(record) = parse_payload(payload) else { return at };
        each(record);
        at += FRAME_LEN + len;
    }
}

fn parse_payload(p: &[u8]) -> Option<Record<'_>> {
    let (&kind, rest) = p.split_first()?;
    if kind == KIND_END {
        return Some(Record::End(u64::from_le_bytes(rest.try_into().ok()?)));
    }
    let aor_len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
    let aor = std::str::from_utf8(rest.get(2..2 + aor_len)?).ok()?;
    let value = rest.get(2 + aor_len..)?;
    match kind {
        KIND_PUT => Some(Record::Put(aor, value)),
        KIND_REMOVE if value.is_empty() => Some(Record::Remove(aor)),
        _ => None,
    }
}

fn corrupt(path: &Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

/// Read the snapshot at `path` (if any) and the journals it names, newest
/// record per AOR. Torn journal tails are cut off the files.
pub(super) fn recover(path: &Path) -> io::Result<Recovered> {
    let mut records = HashMap::new();
    let mut first_journal = 0;
    match std::fs::read(path) {
        Ok(bytes) => {
            if bytes.get(..8) != Some(SNAPSHOT_MAGIC.as_slice()) {
                return Err(corrupt(path, "not an umproxy registrations snapshot (unknown format)"));
            }
            first_journal =
                bytes.get(8..HEADER_LEN).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
            let body = bytes.get(HEADER_LEN..).unwrap_or_default();
            let (mut count, mut end) = (0u64, None);
            let whole = read_records(body, |r| match r {
                Record::Put(aor, value) => {
                    count += 1;
                    records.insert(aor.to_owned(), value.to_vec());
                }
                Record::Remove(_) => count += 1,
                Record::End(n) => end = Some(n),
            });
            if end != Some(count) || whole != body.len() {
                return Err(corrupt(path, "registrations snapshot is damaged (incomplete or bad checksum)"));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut next_journal = first_journal;
    let mut torn_bytes = 0;
    for (n, jpath) in journals(path)? {
        if n < first_journal {
            continue; // folded into the snapshot; deleted when the next one is written
        }
        next_journal = n + 1;
        let bytes = std::fs::read(&jpath)?;
        if bytes.get(..HEADER_LEN) != Some(header(JOURNAL_MAGIC, n).as_slice()) {
            if bytes.len() < HEADER_LEN && header(JOURNAL_MAGIC, n).starts_with(&bytes) {
                continue; // created, header torn: holds nothing
            }
            return Err(corrupt(&jpath, "not an umproxy registrations journal (unknown format)"));
        }
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();
        let whole = read_records(body, |r| match r {
            Record::Put(aor, value) => {
                records.insert(aor.to_owned(), value.to_vec());
            }
            Record::Remove(aor) => {
                records.remove(aor);
            }
            Record::End(_) => {}
        });
        if whole != body.len() {
            torn_bytes += (body.len() - whole) as u64;
            OpenOptions::new().write(true).open(&jpath)?.set_len((HEADER_LEN + whole) as u64)?;
        }
    }
    Ok(Recovered { records, next_journal, torn_bytes })
}

impl Journal {
    /// Start after [`recover`]: write a snapshot of the live records (`fill`),
    /// open a new journal after it and delete the older journals.
    pub fn start(path: &Path, next_journal: u64, fill: impl FnOnce(&mut SnapshotWriter)) -> io::Result<Journal> {
        let snapshot_len = write_snapshot(path, next_journal, fill)?;
        let file = Self::create(path, next_journal)?;
        let current = Current {
            number: next_journal,
            file: Arc::new(file),
            len: HEADER_LEN as u64,
            since_snapshot: 0,
            appends: 0,
        };
        let journal = Journal {
            snapshot: path.to_owned(),
            file: Arc::new(JournalFile { current: Mutex::new(current) }),
            snapshot_len,
            retry_at: 0,
        };
        journal.delete_older(next_journal);
        Ok(journal)
    }

    /// The file appenders write to.
    pub fn file(&self) -> &Arc<JournalFile> {
        &self.file
    }

    fn create(path: &Path, number: u64) -> io::Result<File> {
        let jpath = journal_path(path, number);
        let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(&jpath)?;
        file.write_all(&header(JOURNAL_MAGIC, number))?;
        file.sync_data()?;
        sync_dir(&jpath)?;
        Ok(file)
    }

    /// Delete journals older than `number`, which the current snapshot has
    /// folded in (best effort: a leftover is skipped at load and deleted
    /// next time).
    fn delete_older(&self, number: u64) {
        match journals(&self.snapshot) {
            Ok(found) => {
                for (n, p) in found {
                    if n < number {
                        if let Err(e) = std::fs::remove_file(&p) {
                            tracing::warn!(file = %p.display(), error = %e, "cannot delete old registrations journal");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list registrations journals"),
        }
    }

    /// Make every append so far durable (`fdatasync`, without holding up
    /// appenders); returns the number of the last append it covers.
    pub fn sync(&self) -> io::Result<u64> {
        let (file, appends) = {
            let c = self.file.lock();
            (Arc::clone(&c.file), c.appends)
        };
        file.sync_data()?;
        Ok(appends)
    }

    /// Append `batch` and sync it.
    #[cfg(test)]
    pub fn append(&mut self, batch: &Batch) -> io::Result<()> {
        self.file.append(batch.bytes())?;
        self.sync().map(drop)
    }

    /// Whether the journals have outgrown their snapshot (time to compact):
    /// each compaction costs about what was appended since the last, so
    /// every change is written about twice in all.
    pub fn wants_compaction(&self) -> bool {
        self.file.lock().since_snapshot > COMPACT_MIN_BYTES.max(self.snapshot_len).max(self.retry_at)
    }

    /// Start journal n+1, snapshot memory (`fill`) naming it, delete journal n.
    /// Appenders go on meanwhile: they wait only while the new journal takes
    /// the place of the old.
    pub fn compact(&mut self, fill: impl FnOnce(&mut SnapshotWriter)) -> io::Result<()> {
        let next = self.file.lock().number + 1;
        let file = Self::create(&self.snapshot, next).inspect_err(|_| {
            self.retry_at = self.file.lock().since_snapshot + COMPACT_MIN_BYTES;
        })?;
        // From here on records go to the new journal, even if the snapshot
        // fails (the old snapshot still names the old journal, and load
        // replays both in order).
        let old = {
            let mut c = self.file.lock();
            c.number = next;
            c.len = HEADER_LEN as u64;
            std::mem::replace(&mut c.file, Arc::new(file))
        };
        // What the old journal holds is durable before the snapshot that
        // supersedes it, so that an OS crash never leaves a gap between them.
        old.sync_data()?;
        match write_snapshot(&self.snapshot, next, fill) {
            Ok(len) => {
                self.snapshot_len = len;
                self.file.lock().since_snapshot = 0;
                self.retry_at = 0;
                self.delete_older(next);
                Ok(())
            }
            Err(e) => {
                // Not again before another stretch of journal: a full disk
                // must not turn into a new journal file per flush.
                self.retry_at = self.file.lock().since_snapshot + COMPACT_MIN_BYTES;
                Err(e)
            }
        }
    }

    #[cfg(test)]
    fn number(&self) -> u64 {
        self.file.lock().number
    }

    #[cfg(test)]
    fn len(&self) -> u64 {
        self.file.lock().len
    }

    /// Put `file` in place of the current journal's file (tests: a full
    /// disk, or a journal started by hand); returns the one it replaces.
    #[cfg(test)]
    fn swap_file(&self, file: File, number: u64) -> Arc<File> {
        let mut c = self.file.lock();
        if number != c.number {
            c.number = number;
            c.len = HEADER_LEN as u64;
        }
        std::mem::replace(&mut c.file, Arc::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(batch: &mut Batch, aor: &str, value: &str) {
        batch.put(aor, |v| v.extend_from_slice(value.as_bytes()));
    }

    fn state(path: &Path) -> Vec<(String, String)> {
        let mut v: Vec<_> =
            recover(path).unwrap().records.into_iter().map(|(k, v)| (k, String::from_utf8(v).unwrap())).collect();
        v.sort();
        v
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn start(path: &Path, live: &[(&str, &str)]) -> Journal {
        let next = recover(path).unwrap().next_journal;
        Journal::start(path, next, |w| {
            for (aor, value) in live {
                w.put(aor, |v| v.extend_from_slice(value.as_bytes()));
            }
        })
        .unwrap()
    }

    /// A new journal (empty snapshot) holding one appended record, a = a1.
    fn journal_with_a1() -> (tempfile::TempDir, PathBuf, Journal, Batch) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        let mut j = start(&path, &[]);
        let mut batch = Batch::default();
        put(&mut batch, "a", "a1");
        j.append(&batch).unwrap();
        (dir, path, j, batch)
    }

    #[test]
    fn newest_record_wins_and_removals_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        let mut j = start(&path, &[("a", "a0"), ("b", "b0")]);
        let mut batch = Batch::default();
        put(&mut batch, "a", "a1");
        put(&mut batch, "c", "c1");
        j.append(&batch).unwrap();
        batch.clear();
        batch.remove("b");
        put(&mut batch, "c", "c2");
        j.append(&batch).unwrap();
        drop(j);
        assert_eq!(state(&path), pairs(&[("a", "a1"), ("c", "c2")]));
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_go_on_after_it() {
        let (_dir, path, j, mut batch) = journal_with_a1();
        let jpath = journal_path(&path, j.number());
        let whole = std::fs::metadata(&jpath).unwrap().len();
        // A second batch torn half way, as by a crash during the write.
        batch.clear();
        put(&mut batch, "b", "b1");
        put(&mut batch, "a", "a2");
        let torn = batch.buf.get(..batch.buf.len() - 3).unwrap().to_vec();
        drop(j);
        OpenOptions::new().append(true).open(&jpath).unwrap().write_all(&torn).unwrap();

        let r = recover(&path).unwrap();
        // The batch's whole first record counts (each record is an AOR's
        // whole state); the torn second one is dropped.
        let first_record = FRAME_LEN + 1 + 2 + 1 + 2;
        assert_eq!(r.torn_bytes, (torn.len() - first_record) as u64);
        assert_eq!(
            std::fs::metadata(&jpath).unwrap().len(),
            whole + first_record as u64,
            "the torn tail is cut off the file"
        );
        let mut v: Vec<_> = r.records.into_iter().collect();
        v.sort();
        assert_eq!(v, [("a".to_string(), b"a1".to_vec()), ("b".to_string(), b"b1".to_vec())]);
        // Restarted on it: a new snapshot and journal, nothing lost.
        let mut j = start(&path, &[("a", "a1"), ("b", "b1")]);
        batch.clear();
        put(&mut batch, "b", "b2");
        j.append(&batch).unwrap();
        drop(j);
        assert_eq!(state(&path), pairs(&[("a", "a1"), ("b", "b2")]));
    }

    /// A full disk (`/dev/full` answers every write with ENOSPC): the append
    /// fails and counts nothing; once writes work again the retry lands
    /// after the good records.
    #[test]
    fn a_failed_append_counts_nothing_and_a_retry_lands() {
        let (_dir, path, mut j, mut batch) = journal_with_a1();
        let len = j.len();
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let number = j.number();
        let real = j.swap_file(full, number);
        batch.clear();
        put(&mut batch, "b", "b1");
        assert!(j.append(&batch).is_err());
        assert_eq!(j.len(), len, "a failed append is not counted");
        j.swap_file(Arc::try_unwrap(real).unwrap(), number);
        j.append(&batch).unwrap();
        drop(j);
        assert_eq!(state(&path), pairs(&[("a", "a1"), ("b", "b1")]));
    }

    #[test]
    fn a_flipped_bit_ends_the_journal_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        let mut j = start(&path, &[]);
        for (aor, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
            let mut batch = Batch::default();
            put(&mut batch, aor, value);
            j.append(&batch).unwrap();
        }
        let jpath = journal_path(&path, j.number());
        drop(j);
        let mut bytes = std::fs::read(&jpath).unwrap();
        // Damage the second record's value.
        let second = HEADER_LEN + (FRAME_LEN + 1 + 2 + 1 + 1);
        bytes[second + FRAME_LEN + 4] ^= 0x20;
        std::fs::write(&jpath, &bytes).unwrap();
        assert_eq!(state(&path), pairs(&[("a", "1")]));
    }

    #[test]
    fn compaction_keeps_every_record_and_deletes_the_old_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        let mut j = start(&path, &[("a", "a0")]);
        let mut batch = Batch::default();
        put(&mut batch, "b", "b1");
        j.append(&batch).unwrap();
        let old = journal_path(&path, j.number());
        // Memory now holds a, b and a newer c.
        j.compact(|w| {
            for (aor, value) in [("a", "a0"), ("b", "b1"), ("c", "c1")] {
                w.put(aor, |v| v.extend_from_slice(value.as_bytes()));
            }
        })
        .unwrap();
        assert!(!old.exists(), "the folded journal is deleted");
        batch.clear();
        put(&mut batch, "c", "c2");
        j.append(&batch).unwrap();
        drop(j);
        assert_eq!(state(&path), pairs(&[("a", "a0"), ("b", "b1"), ("c", "c2")]));
        let files = journals(&path).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
    }

    /// A crash after the new journal was started but before the snapshot
    /// naming it was in place: the old snapshot and both journals, in order.
    #[test]
    fn a_crash_during_compaction_replays_both_journals_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        let mut j = start(&path, &[("a", "a0")]);
        let first = j.number();
        let mut batch = Batch::default();
        put(&mut batch, "a", "a1");
        j.append(&batch).unwrap();
        // What compact() does before the snapshot: a new journal takes the appends.
        j.swap_file(Journal::create(&path, first + 1).unwrap(), first + 1);
        batch.clear();
        put(&mut batch, "a", "a2");
        j.append(&batch).unwrap();
        // A half-written snapshot left behind is ignored.
        std::fs::write(tmp_path(&path), b"umpxsnp1 torn").unwrap();
        drop(j);
        assert_eq!(state(&path), pairs(&[("a", "a2")]));
        assert_eq!(recover(&path).unwrap().next_journal, first + 2);
    }

    #[test]
    fn an_old_journal_left_beside_a_newer_snapshot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        let mut j = start(&path, &[]);
        let mut batch = Batch::default();
        put(&mut batch, "a", "old");
        j.append(&batch).unwrap();
        let old = journal_path(&path, j.number());
        let kept = std::fs::read(&old).unwrap();
        j.compact(|w| w.put("a", |v| v.extend_from_slice(b"new"))).unwrap();
        drop(j);
        // As if the deletion after the snapshot had not happened.
        std::fs::write(&old, kept).unwrap();
        assert_eq!(state(&path), pairs(&[("a", "new")]));
    }

    #[test]
    fn a_damaged_or_foreign_snapshot_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        drop(start(&path, &[("a", "a0"), ("b", "b0")]));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes.truncate(n - 4);
        std::fs::write(&path, &bytes).unwrap();
        let e = recover(&path).err().unwrap().to_string();
        assert!(e.contains("reg") && e.contains("damaged"), "{e}");

        std::fs::write(&path, b"redb\x1a\x0a\xa9\x0d\x0a some other format").unwrap();
        let e = recover(&path).err().unwrap().to_string();
        assert!(e.contains("reg") && e.contains("unknown format"), "{e}");
    }

    #[test]
    fn compaction_waits_for_its_threshold_and_backs_off_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        let mut j = start(&path, &[]);
        assert!(!j.wants_compaction());
        j.file.lock().since_snapshot = COMPACT_MIN_BYTES + 1;
        assert!(j.wants_compaction());
        // The directory vanishes: the compaction fails, and is not tried
        // again until another stretch of journal was written.
        let gone = dir.path().join("gone/reg");
        let real = std::mem::replace(&mut j.snapshot, gone);
        assert!(j.compact(|_| {}).is_err());
        assert!(!j.wants_compaction());
        j.file.lock().since_snapshot += COMPACT_MIN_BYTES + 1;
        assert!(j.wants_compaction());
        j.snapshot = real;
    }
}
