use super::embedded::{EmbeddedConfig, EmbeddedStore};
use super::redis::{RedisConfig, RedisStore};
use super::*;
use crate::location::binding::{Binding, FlowToken, QValue};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn binding(aor: &str, n: u32, expires_at: SystemTime) -> Binding {
    Binding {
        aor: aor.to_owned(),
        contact_uri: format!("sip:u{n}@192.0.2.{}:5060", n % 250),
        q: QValue::DEFAULT,
        expires_at: crate::location::binding::unix_secs(expires_at),
        call_id: format!("cid-{n}"),
        cseq: 1,
        path: Vec::new(),
        instance: None,
        reg_id: None,
        flow: Some(FlowToken(u64::from(n))),
        received: Some("192.0.2.1:5060".parse().unwrap()),
        updated_at: 0,
    }
}

const CRASH_ENV: &str = "UMPROXY_LOCATION_CRASH_DB";
const CRASH_MODE_ENV: &str = "UMPROXY_LOCATION_CRASH_MODE";
const AORS: u32 = 1000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Half the AORs lapse at t(100), half live until t(10_000).
fn write_aors(store: &EmbeddedStore) {
    rt().block_on(async {
        for n in 0..AORS {
            let aor = format!("sip:user{n}@contoso.test");
            let exp = if n % 2 == 0 { t(100) } else { t(10_000) };
            store.replace(&aor, 0, vec![binding(&aor, n, exp)], t(0)).await.unwrap();
        }
    });
}

fn check_reopened(store: &EmbeddedStore) {
    assert_eq!(store.aor_count(), AORS as usize / 2, "lapsed AORs dropped on reload");
    assert_eq!(store.binding_count(), Some(AORS as usize / 2));
    rt().block_on(async {
        for n in 0..AORS {
            let aor = format!("sip:user{n}@contoso.test");
            let got = store.get(&aor, t(500)).await.unwrap();
            if n % 2 == 0 {
                assert!(got.bindings.is_empty(), "{aor} should have lapsed");
            } else {
                assert_eq!(got.bindings, vec![binding(&aor, n, t(10_000))], "{aor}");
            }
        }
    });
}

/// Child half of the crash tests: writes, then dies without running any
/// destructor (no graceful close of the journal, no last sync). Under both
/// policies every acknowledged write must survive a crash of the process:
/// write-behind appends before it acknowledges, and only an OS crash can
/// lose what it has not synced. A no-op in normal runs.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_ENV) else { return };
    let write_behind = std::env::var(CRASH_MODE_ENV).is_ok_and(|m| m == "write-behind");
    let cfg = if write_behind {
        // An interval far beyond the test: the writer never syncs.
        EmbeddedConfig { flush_interval: Duration::from_secs(3600), ..EmbeddedConfig::default() }
    } else {
        EmbeddedConfig::write_through()
    };
    let store = EmbeddedStore::open(std::path::Path::new(&path), cfg, t(0)).unwrap();
    write_aors(&store);
    std::process::abort();
}

fn crash_and_reopen(mode: &str) -> EmbeddedStore {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.db");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["location::store::tests::crash_child", "--exact", "--test-threads=1", "--nocapture"])
        .env(CRASH_ENV, &path)
        .env(CRASH_MODE_ENV, mode)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have aborted");
    let store = EmbeddedStore::open(&path, EmbeddedConfig::default(), t(500)).unwrap();
    drop(dir);
    store
}

#[test]
fn write_through_keeps_every_acknowledged_binding_across_a_crash() {
    check_reopened(&crash_and_reopen("write-through"));
}

#[test]
fn write_behind_keeps_every_acknowledged_binding_across_a_process_crash() {
    check_reopened(&crash_and_reopen("write-behind"));
}

/// Under write-behind a write completes without waiting for the disk; the
/// gauge shows what memory holds ahead of it, and a graceful close (drop)
/// commits it all.
#[test]
fn write_behind_answers_at_once_and_commits_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.db");
    let gauge = prometheus::IntGauge::new("unflushed", "test").unwrap();
    let cfg = EmbeddedConfig {
        flush_interval: Duration::from_secs(3600),
        unflushed: Some(gauge.clone()),
        ..EmbeddedConfig::default()
    };
    let store = EmbeddedStore::open(&path, cfg, t(0)).unwrap();
    for n in 0..AORS {
        let aor = format!("sip:user{n}@contoso.test");
        let exp = if n % 2 == 0 { t(100) } else { t(10_000) };
        let write = store.replace(&aor, 0, vec![binding(&aor, n, exp)], t(0));
        // Ready on the first poll: nothing waits for the writer.
        let v = futures_util::FutureExt::now_or_never(write).expect("write-behind must not wait").unwrap();
        assert_eq!(v, 1);
    }
    assert_eq!(gauge.get(), i64::from(AORS), "every AOR is ahead of the disk");
    drop(store);
    let store = EmbeddedStore::open(&path, EmbeddedConfig::default(), t(500)).unwrap();
    check_reopened(&store);
}

/// The periodic flush commits without anyone asking.
#[test]
fn write_behind_commits_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let gauge = prometheus::IntGauge::new("unflushed", "test").unwrap();
    let cfg = EmbeddedConfig {
        flush_interval: Duration::from_millis(20),
        unflushed: Some(gauge.clone()),
        ..EmbeddedConfig::default()
    };
    let store = EmbeddedStore::open(&dir.path().join("r.db"), cfg, t(0)).unwrap();
    let a = "sip:a@contoso.test";
    rt().block_on(store.replace(a, 0, vec![binding(a, 1, t(500))], t(0))).unwrap();
    // Bounded wait for a background thread (not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge.get() != 0 {
        assert!(Instant::now() < deadline, "the writer never committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    rt().block_on(store.flush()).unwrap();
    assert_eq!(gauge.get(), 0);
}

#[test]
fn embedded_store_reloads_after_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.db");
    let store = EmbeddedStore::open(&path, EmbeddedConfig::default(), t(0)).unwrap();
    write_aors(&store);
    drop(store);
    let store = EmbeddedStore::open(&path, EmbeddedConfig::default(), t(500)).unwrap();
    check_reopened(&store);
}

/// Refreshes beyond the journal's compaction threshold: the writer folds
/// the journal into a new snapshot by itself, one journal file remains, and
/// a reopen sees every AOR's newest record (and a removal stays removed).
#[test]
fn embedded_writer_compacts_the_journal_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.db");
    let store = EmbeddedStore::open(&path, EmbeddedConfig::default(), t(0)).unwrap();
    let rt = rt();
    let journal_bytes = || -> u64 {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().contains(".journal."))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    // About 200 bytes per record: 80 rounds of 1000 AORs is ~12 MB of journal.
    rt.block_on(async {
        for round in 0..80u32 {
            for n in 0..AORS {
                let aor = format!("sip:user{n}@contoso.test");
                let cur = store.get(&aor, t(0)).await.unwrap();
                store.replace(&aor, cur.version, vec![binding(&aor, n + round, t(10_000))], t(0)).await.unwrap();
            }
            store.flush().await.unwrap();
        }
        store.remove("sip:user7@contoso.test").await.unwrap();
        store.flush().await.unwrap();
    });
    let journals: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".journal."))
        .collect();
    assert_eq!(journals.len(), 1, "older journals deleted after the snapshot: {journals:?}");
    assert!(journal_bytes() < 8 << 20, "the journal was folded into a snapshot ({} bytes)", journal_bytes());
    drop(store);
    let store = EmbeddedStore::open(&path, EmbeddedConfig::default(), t(500)).unwrap();
    assert_eq!(store.aor_count(), AORS as usize - 1);
    rt.block_on(async {
        for n in 0..AORS {
            let aor = format!("sip:user{n}@contoso.test");
            let got = store.get(&aor, t(500)).await.unwrap().bindings;
            if n == 7 {
                assert!(got.is_empty());
            } else {
                assert_eq!(got, vec![binding(&aor, n + 79, t(10_000))], "{aor}");
            }
        }
    });
}

/// Without a file (no `[registrar] path`): the same compare-and-set
/// semantics and counts, with no writer behind them.
#[tokio::test]
async fn memory_only_store_keeps_bindings_without_a_writer() {
    let store = EmbeddedStore::memory_only(EmbeddedConfig::default());
    let a = "sip:a@contoso.test";
    let v1 = store.replace(a, 0, vec![binding(a, 1, t(500))], t(0)).await.unwrap();
    assert_eq!(store.replace(a, 0, vec![], t(0)).await, Err(StoreError::Conflict));
    assert_eq!(store.get(a, t(10)).await.unwrap().version, v1);
    store.flush().await.unwrap();
    assert_eq!(store.binding_count(), Some(1));
    store.remove(a).await.unwrap();
    assert_eq!(store.aor_count(), 0);
}

#[tokio::test]
async fn embedded_compare_and_set_expire_and_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        &dir.path().join("r.db"),
        EmbeddedConfig { max_aors: 2, ..EmbeddedConfig::default() },
        t(0),
    )
    .unwrap();
    let a = "sip:a@contoso.test";
    let v1 = store.replace(a, 0, vec![binding(a, 1, t(50)), binding(a, 2, t(500))], t(0)).await.unwrap();
    assert_eq!(store.replace(a, 0, vec![], t(0)).await, Err(StoreError::Conflict));
    assert_eq!(store.get(a, t(10)).await.unwrap().version, v1);
    assert_eq!(store.get(a, t(60)).await.unwrap().bindings.len(), 1, "lapsed binding hidden");
    assert_eq!(store.expire(t(60)).await.unwrap(), 1);
    assert_eq!(store.binding_count(), Some(1));
    store.replace("sip:b@contoso.test", 0, vec![binding("sip:b@contoso.test", 3, t(500))], t(0)).await.unwrap();
    let full = store.replace("sip:c@contoso.test", 0, vec![binding("sip:c@contoso.test", 4, t(500))], t(0)).await;
    assert_eq!(full, Err(StoreError::Full { limit: "max_aors" }));
    store.remove(a).await.unwrap();
    assert_eq!(store.get(a, t(0)).await.unwrap(), crate::location::binding::AorBindings::default());
    assert_eq!(store.binding_count(), Some(1));
}

/// Fsynced REGISTER writes per second, one writer and 64 concurrent ones
/// (prints figures for the durability policy; asserts nothing). Run with
/// `cargo test --release -- --ignored embedded_write_rate --nocapture`.
#[test]
#[ignore = "measurement, not a test"]
fn embedded_write_rate() {
    let dir = tempfile::tempdir_in(std::env::var_os("UMPROXY_BENCH_DIR").unwrap_or_else(|| ".".into())).unwrap();
    let store = EmbeddedStore::open(&dir.path().join("r.db"), EmbeddedConfig::write_through(), t(0)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for writers in [1u32, 64] {
        let per_writer = 4000 / writers;
        let start = Instant::now();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..writers {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    for k in 0..per_writer {
                        let aor = format!("sip:user{w}-{}@contoso.test", k % 50);
                        let cur = store.get(&aor, t(0)).await.unwrap();
                        store.replace(&aor, cur.version, vec![binding(&aor, k, t(3600))], t(0)).await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let n = per_writer * writers;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "embedded store, {writers} writer(s): {n} fsynced replace() in {secs:.2} s = {:.0} writes/s",
            f64::from(n) / secs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_writers_to_one_aor_never_lose_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("r.db"), EmbeddedConfig::default(), t(0)).unwrap();
    let aor = "sip:shared@contoso.test";
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..10u32 {
                loop {
                    let mut cur = store.get(aor, t(0)).await.unwrap();
                    cur.bindings.push(binding(aor, w * 100 + k, t(3600)));
                    match store.replace(aor, cur.version, cur.bindings, t(0)).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.get(aor, t(0)).await.unwrap().bindings.len(), 80);
    assert_eq!(store.binding_count(), Some(80));
}

// ---- Redis ------------------------------------------------------------------

/// A real redis-server on a free loopback port, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// `None` (with a message) when redis-server is not installed, unless CI is set.
    fn start() -> Option<RedisServer> {
        if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
            assert!(std::env::var_os("CI").is_none(), "redis-server is required in CI");
            eprintln!("skipping: redis-server not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = RedisServer { child: None, port, dir: tempfile::tempdir().unwrap() };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::new(RedisConfig { url: server.url(), ..RedisConfig::default() }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_instances_share_bindings_with_compare_and_set_and_ttl() {
    let Some(server) = RedisServer::start() else { return };
    let one: Arc<dyn LocationStore> = Arc::new(redis_store(&server));
    let two: Arc<dyn LocationStore> = Arc::new(redis_store(&server));
    let a = "sip:alice@contoso.test";
    let now = SystemTime::now();
    let v1 = one.replace(a, 0, vec![binding(a, 1, now + Duration::from_secs(60))], now).await.unwrap();
    let seen = two.get(a, now).await.unwrap();
    assert_eq!((seen.version, seen.bindings.len()), (v1, 1));
    assert_eq!(seen.bindings[0].flow, Some(FlowToken(1)));
    // Both read v1; the first writer wins, the second gets Conflict.
    let v2 = two.replace(a, v1, vec![binding(a, 2, now + Duration::from_secs(120))], now).await.unwrap();
    assert_eq!(one.replace(a, v1, vec![], now).await, Err(StoreError::Conflict));
    assert_eq!(one.get(a, now).await.unwrap().version, v2);
    // The key's TTL follows the latest binding expiry.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let pttl: i64 = ::redis::cmd("PTTL").arg(format!("umproxy:loc:{a}")).query_async(&mut c).await.unwrap();
    assert!((110_000..=120_000).contains(&pttl), "{pttl}");
    // Lapsed bindings are hidden from a reader with a later clock.
    assert!(one.get(a, now + Duration::from_secs(121)).await.unwrap().bindings.is_empty());
    two.remove(a).await.unwrap();
    assert_eq!(one.get(a, now).await.unwrap().version, 0);
}

/// The AOR cap holds across instances; removals and lapsed AORs free room,
/// refreshes take none, and the index never outgrows the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_caps_aors_across_instances() {
    let Some(server) = RedisServer::start() else { return };
    let capped = |prefix: &str| {
        RedisStore::new(RedisConfig {
            url: server.url(),
            key_prefix: prefix.into(),
            max_aors: 2,
            ..RedisConfig::default()
        })
        .unwrap()
    };
    let (one, two) = (capped("cap:"), capped("cap:"));
    let now = SystemTime::now();
    let lives = |aor: &str, n: u32, secs: u64| vec![binding(aor, n, now + Duration::from_secs(secs))];
    let (a, b, c) = ("sip:a@contoso.test", "sip:b@contoso.test", "sip:c@contoso.test");
    let va = one.replace(a, 0, lives(a, 1, 60), now).await.unwrap();
    two.replace(b, 0, lives(b, 2, 600), now).await.unwrap();
    // Full for a new AOR, from either instance; a refresh still works.
    assert_eq!(two.replace(c, 0, lives(c, 3, 600), now).await, Err(StoreError::Full { limit: "max_aors" }));
    assert_eq!(one.replace(c, 0, lives(c, 3, 600), now).await, Err(StoreError::Full { limit: "max_aors" }));
    let va = one.replace(a, va, lives(a, 1, 60), now).await.unwrap();
    // A removal frees its place at once.
    two.remove(b).await.unwrap();
    let vc = one.replace(c, 0, lives(c, 3, 600), now).await.unwrap();
    assert_eq!(one.replace(b, 0, lives(b, 2, 600), now).await, Err(StoreError::Full { limit: "max_aors" }));
    // Once a's bindings have lapsed (a later clock), its place is free too.
    let later = now + Duration::from_secs(61);
    two.replace(b, 0, vec![binding(b, 2, later + Duration::from_secs(600))], later).await.unwrap();
    // Removing every binding of an AOR (an empty write) frees its place.
    one.replace(c, vc, Vec::new(), later).await.unwrap();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let members: Vec<String> =
        ::redis::cmd("ZRANGE").arg("cap:#aors").arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(members, vec![format!("cap:{b}")], "a lapsed, c emptied (a was at version {va})");
    // A cap far above use changes nothing for other prefixes.
    let other = redis_store(&server);
    other.replace(a, 0, lives(a, 1, 60), now).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_quickly_and_recovers_after_restart() {
    let Some(mut server) = RedisServer::start() else { return };
    let store = redis_store(&server);
    let a = "sip:bob@contoso.test";
    let now = SystemTime::now();
    store.replace(a, 0, vec![binding(a, 1, now + Duration::from_secs(60))], now).await.unwrap();
    server.kill();
    for _ in 0..3 {
        let start = Instant::now();
        let r = store.get(a, now).await;
        // Bounds the configured timeouts (2 attempts x (500 ms + 500 ms) + pause), not a race.
        assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
        assert!(matches!(r, Err(StoreError::Unavailable { store: "redis", .. })), "{r:?}");
        let start = Instant::now();
        let w = store.replace(a, 1, vec![], now).await;
        assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
        assert!(matches!(w, Err(StoreError::Unavailable { .. })), "{w:?}");
    }
    server.spawn();
    // The data died with the server (no persistence); the store works again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.get(a, now).await {
            Ok(rec) => {
                assert_eq!(rec.version, 0);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "store did not recover: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.replace(a, 0, vec![binding(a, 2, now + Duration::from_secs(60))], now).await.unwrap();
    assert_eq!(store.get(a, now).await.unwrap().bindings.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrar_on_two_instances_shares_registrations_through_redis() {
    use crate::location::registrar::{RegisterContext, RegisterResult, Registrar, RegistrarConfig};
    let Some(server) = RedisServer::start() else { return };
    let cfg = RegistrarConfig { domains: vec!["contoso.test".into()], ..RegistrarConfig::default() };
    let east = Registrar::new(Arc::new(redis_store(&server)), cfg.clone(), None);
    let west = Registrar::new(Arc::new(redis_store(&server)), cfg, None);
    let req = |call_id: &str, cseq: u32, contact: &str| {
        let m = format!(
            "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK{cseq}\r\n\
             To: <sip:carol@contoso.test>\r\nFrom: <sip:carol@contoso.test>;tag=9\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
        );
        sip_message::Message::parse_slice(m.as_bytes()).unwrap()
    };
    let now = SystemTime::now();
    let ctx = RegisterContext::default();
    let o = east.handle_register(&req("a", 1, "<sip:carol@192.0.2.10>;q=0.5"), &ctx, now).await;
    assert_eq!((o.status, o.result), (200, RegisterResult::Updated));
    // The contacts the 200 lists.
    let listed = |o: &crate::location::registrar::RegisterOutcome| {
        sip_message::Message::parse(o.response.clone(), &sip_message::Limits::default()).unwrap().contacts().count()
    };
    let o = west.handle_register(&req("b", 1, "<sip:carol@192.0.2.11>"), &ctx, now).await;
    assert_eq!(listed(&o), 2, "west sees east's binding and adds its own");
    let found = east.lookup("sip:carol@contoso.test", now).await.unwrap();
    let uris: Vec<&str> = found.iter().map(|b| b.contact_uri.as_str()).collect();
    assert_eq!(uris, vec!["sip:carol@192.0.2.11", "sip:carol@192.0.2.10"], "q order");
    let o = west.handle_register(&req("a", 2, "<sip:carol@192.0.2.10>;expires=0"), &ctx, now).await;
    assert_eq!(listed(&o), 1);
    assert_eq!(east.lookup("sip:carol@contoso.test", now).await.unwrap().len(), 1);
}
