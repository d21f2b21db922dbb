//! Keeping NAT pinholes open: the NAT'd UDP bindings are pinged with
//! OPTIONS (any response proves the pinhole open), each every interval with
//! ±20 % jitter so that bindings made at once do not ping at once, and all
//! together no faster than a rate (a token bucket), so that a mass
//! re-registration does not turn into a burst. A binding whose pings fail
//! `failures` times in a row is dropped: its NAT mapping is gone and calls
//! to it would only time out.
//!
//! [`Keepalive`] is the schedule, sans-IO: bindings, results and `now` in,
//! pings out ([`Keepalive::poll_ping`]), the next deadline from
//! [`Keepalive::poll_timeout`]. [`spawn`] drives it from tokio through the
//! core (the pings are ordinary client transactions).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounter, IntGauge, Registry};
use tracing::{debug, info};

use crate::location::binding::{unix_secs, Binding, FlowToken};
use crate::location::store::{LocationStore, StoreError};
use crate::transport::{Destination, Transport};

/// Settings of the schedule (`[nat]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Time between two pings of one binding, before jitter.
    pub interval: Duration,
    /// Consecutive failed pings that drop a binding.
    pub failures: u32,
    /// Pings per second at most, over all bindings.
    pub rate_per_s: u32,
    /// Bindings held at most; more are not pinged (and counted).
    pub capacity: usize,
}

/// A NAT'd UDP binding to keep alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingTarget {
    /// The Contact URI (the Request-URI of the ping).
    pub contact: String,
    /// Where the REGISTER came from: the pinhole.
    pub addr: SocketAddr,
    /// Unix seconds at which the binding lapses.
    pub expires_at: u64,
}

impl PingTarget {
    /// The binding's ping target when it is a NAT'd UDP binding (its flow
    /// is its source address, [`FlowToken::UDP_SOURCE`]).
    pub fn of(b: &Binding) -> Option<PingTarget> {
        match (b.flow, b.received) {
            (Some(FlowToken::UDP_SOURCE), Some(addr)) if !b.is_outbound() => {
                Some(PingTarget { contact: b.contact_uri.clone(), addr, expires_at: b.expires_at })
            }
            _ => None,
        }
    }
}

/// One ping to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub aor: String,
    pub contact: String,
    pub addr: SocketAddr,
}

/// What a ping's result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Alive,
    /// Failed, this many times in a row; the binding stays.
    Failed(u32),
    /// Failed too often: drop the binding.
    Drop,
    /// The binding changed or went since the ping left: nothing to do.
    Stale,
}

#[derive(Debug)]
struct Entry {
    addr: SocketAddr,
    expires_at: u64,
    failures: u32,
    due: (Instant, u64),
}

/// The schedule of pings. Keys are (AOR, Contact URI), chosen by peers:
/// SipHash, not a fast hasher.
#[derive(Debug)]
pub struct Keepalive {
    cfg: KeepaliveConfig,
    entries: HashMap<(String, String), Entry>,
    /// The contacts held per AOR, so that a REGISTER touches its own AOR's
    /// entries only (a handful), not the whole table.
    by_aor: HashMap<String, Vec<String>>,
    queue: BTreeMap<(Instant, u64), (String, String)>,
    seq: u64,
    rng: u64,
    /// Token bucket in thousandths of a ping.
    tokens: u64,
    refilled: Option<Instant>,
    /// Bindings refused because the table was full.
    pub refused: u64,
}

impl Keepalive {
    /// `seed` makes the jitter reproducible (tests); use a random one.
    pub fn new(cfg: KeepaliveConfig, seed: u64) -> Keepalive {
        let tokens = u64::from(cfg.rate_per_s) * 1000;
        Keepalive {
            cfg,
            entries: HashMap::new(),
            by_aor: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: seed | 1,
            tokens,
            refilled: None,
            refused: 0,
        }
    }

    /// Bindings held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The interval with ±20 % jitter (xorshift: the schedule needs no
    /// unpredictability, only spread).
    fn jittered(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let base = self.cfg.interval.as_millis() as u64;
        let spread = base / 5;
        let offset = if spread == 0 { 0 } else { self.rng % (2 * spread + 1) };
        Duration::from_millis(base - spread + offset)
    }

    fn schedule(&mut self, key: (String, String), now: Instant) -> (Instant, u64) {
        self.seq += 1;
        let due = (now + self.jittered(), self.seq);
        self.queue.insert(due, key);
        due
    }

    /// The NAT'd UDP bindings of `aor` are now `targets` (after a
    /// REGISTER): new ones are scheduled one interval from `now`, gone ones
    /// forgotten, a binding that moved to another address starts afresh.
    pub fn update_aor(&mut self, aor: &str, targets: &[PingTarget], now: Instant) {
        let stale: Vec<(String, String)> = self
            .by_aor
            .get(aor)
            .into_iter()
            .flatten()
            .filter(|c| !targets.iter().any(|t| &t.contact == *c))
            .map(|c| (aor.to_string(), c.clone()))
            .collect();
        for k in stale {
            self.forget(&k);
        }
        for t in targets {
            let key = (aor.to_string(), t.contact.clone());
            let is_full = self.entries.len() >= self.cfg.capacity;
            match self.entries.get_mut(&key) {
                Some(e) => {
                    e.expires_at = t.expires_at;
                    if e.addr != t.addr {
                        e.addr = t.addr;
                        e.failures = 0;
                    }
                }
                None if is_full => self.refused += 1,
                None => {
                    let due = self.schedule(key.clone(), now);
                    self.by_aor.entry(key.0.clone()).or_default().push(key.1.clone());
                    self.entries.insert(key, Entry { addr: t.addr, expires_at: t.expires_at, failures: 0, due });
                }
            }
        }
    }

    fn forget(&mut self, key: &(String, String)) {
        if let Some(e) = self.remove_entry(key) {
            self.queue.remove(&e.due);
        }
    }

    /// Remove an entry and its place in the AOR index (not its queue slot).
    fn remove_entry(&mut self, key: &(String, String)) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        if let Some(contacts) = self.by_aor.get_mut(&key.0) {
            contacts.retain(|c| c != &key.1);
            if contacts.is_empty() {
                self.by_aor.remove(&key.0);
            }
        }
        Some(e)
    }

    fn refill(&mut self, now: Instant) {
        let cap = u64::from(self.cfg.rate_per_s) * 1000;
        if let Some(last) = self.refilled {
            let ms = now.saturating_duration_since(last).as_millis().min(u128::from(u32::MAX)) as u64;
            self.tokens = self.tokens.saturating_add(ms.saturating_mul(u64::from(self.cfg.rate_per_s))).min(cap);
        }
        self.refilled = Some(now);
    }

    /// The next ping due at `now` (`unix_now` for expiry), if the rate
    /// allows one; it is rescheduled one interval on at once.
    #[must_use]
    pub fn poll_ping(&mut self, now: Instant, unix_now: u64) -> Option<Ping> {
        self.refill(now);
        loop {
            let (&due, _) = self.queue.first_key_value()?;
            if due.0 > now {
                return None;
            }
            let key = self.queue.remove(&due)?;
            let Some(e) = self.entries.get(&key) else { continue };
            if e.expires_at <= unix_now {
                self.remove_entry(&key);
                continue;
            }
            if self.tokens < 1000 {
                // Out of budget: it stays due.
                self.queue.insert(due, key);
                return None;
            }
            self.tokens -= 1000;
            let addr = e.addr;
            let next = self.schedule(key.clone(), now);
            if let Some(e) = self.entries.get_mut(&key) {
                e.due = next;
            }
            return Some(Ping { aor: key.0, contact: key.1, addr });
        }
    }

    /// When [`poll_ping`](Self::poll_ping) may next have something: the
    /// earliest due ping, or when the bucket holds a ping again.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (&(due, _), _) = self.queue.first_key_value()?;
        if self.tokens >= 1000 {
            return Some(due);
        }
        let wait = Duration::from_millis((1000 - self.tokens).div_ceil(u64::from(self.cfg.rate_per_s).max(1)));
        let refill_at = self.refilled.map(|r| r + wait).unwrap_or(due);
        Some(due.max(refill_at))
    }

    /// The outcome of a ping to `addr` for (`aor`, `contact`).
    pub fn handle_result(&mut self, aor: &str, contact: &str, addr: SocketAddr, is_answered: bool) -> Verdict {
        let key = (aor.to_string(), contact.to_string());
        let Some(e) = self.entries.get_mut(&key) else { return Verdict::Stale };
        if e.addr != addr {
            return Verdict::Stale;
        }
        if is_answered {
            e.failures = 0;
            return Verdict::Alive;
        }
        e.failures += 1;
        if e.failures >= self.cfg.failures {
            self.forget(&key);
            return Verdict::Drop;
        }
        Verdict::Failed(e.failures)
    }
}

/// `umproxy_nat_*` metrics, registered at start (exported as zero before
/// any NAT'd binding exists).
#[derive(Debug, Clone)]
pub struct NatMetrics {
    /// `umproxy_nat_keepalive_bindings`: NAT'd UDP bindings being pinged.
    pub bindings: IntGauge,
    /// `umproxy_nat_pings_total{result="answered"}`.
    pub pings_answered: IntCounter,
    /// `umproxy_nat_pings_total{result="failed"}`.
    pub pings_failed: IntCounter,
    /// `umproxy_nat_bindings_dropped_total`: bindings dropped after failed pings.
    pub dropped: IntCounter,
    /// `umproxy_nat_contacts_registered_total{transport}`: contacts
    /// registered (or refreshed) from behind NAT, by transport (udp, tcp, tls).
    contacts: [IntCounter; 3],
}

impl NatMetrics {
    pub fn register(reg: &Registry) -> Result<NatMetrics, prometheus::Error> {
        let bindings = IntGauge::new("umproxy_nat_keepalive_bindings", "NAT'd UDP bindings kept alive with pings")?;
        let pings = prometheus::IntCounterVec::new(
            prometheus::Opts::new("umproxy_nat_pings_total", "Keep-alive pings of NAT'd bindings, by result"),
            &["result"],
        )?;
        let dropped = IntCounter::new(
            "umproxy_nat_bindings_dropped_total",
            "NAT'd bindings dropped because their keep-alive pings failed",
        )?;
        reg.register(Box::new(bindings.clone()))?;
        reg.register(Box::new(pings.clone()))?;
        let contacts = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "umproxy_nat_contacts_registered_total",
                "Contacts registered or refreshed from behind NAT (reached where the REGISTER came from), by transport",
            ),
            &["transport"],
        )?;
        reg.register(Box::new(dropped.clone()))?;
        reg.register(Box::new(contacts.clone()))?;
        let by = |t: Transport| contacts.with_label_values(&[t.param_name()]);
        Ok(NatMetrics {
            bindings,
            pings_answered: pings.with_label_values(&["answered"]),
            pings_failed: pings.with_label_values(&["failed"]),
            dropped,
            contacts: [by(Transport::Udp), by(Transport::Tcp), by(Transport::Tls)],
        })
    }

    /// The NAT'd contacts counter of `t`.
    pub fn contacts(&self, t: Transport) -> &IntCounter {
        match t {
            Transport::Udp => &self.contacts[0],
            Transport::Tcp => &self.contacts[1],
            Transport::Tls => &self.contacts[2],
        }
    }
}

/// The schedule shared by the registrar (which feeds it) and the driver.
#[derive(Debug)]
pub struct KeepaliveHandle {
    table: Mutex<Keepalive>,
    metrics: NatMetrics,
}

impl KeepaliveHandle {
    pub fn new(table: Keepalive, metrics: NatMetrics) -> Arc<KeepaliveHandle> {
        Arc::new(KeepaliveHandle { table: Mutex::new(table), metrics })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keepalive> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a REGISTER changed `aor`: its NAT'd UDP bindings now.
    pub fn update_aor(&self, aor: &str, targets: &[PingTarget]) {
        let mut t = self.lock();
        if targets.is_empty() && t.is_empty() {
            return;
        }
        t.update_aor(aor, targets, crate::core::shard::clock_now());
        self.metrics.bindings.set(t.len() as i64);
    }
}

/// Register the `umproxy_nat_*` metrics and, unless NAT handling or pings
/// are off, hand the registrar a keep-alive schedule (returned for
/// [`spawn`]).
pub fn attach(
    registrar: crate::location::registrar::Registrar,
    cfg: &crate::config::NatConfig,
    reg: &Registry,
) -> Result<(crate::location::registrar::Registrar, Option<Arc<KeepaliveHandle>>), prometheus::Error> {
    let metrics = NatMetrics::register(reg)?;
    let registrar = registrar.with_nat_metrics(metrics.clone());
    if cfg.mode == crate::nat::NatMode::Off || cfg.ping_interval.is_zero() {
        return Ok((registrar, None));
    }
    let table = Keepalive::new(
        KeepaliveConfig {
            interval: cfg.ping_interval,
            failures: cfg.ping_failures,
            rate_per_s: cfg.max_pings_per_s,
            capacity: cfg.max_pinged_bindings,
        },
        rand::random(),
    );
    let handle = KeepaliveHandle::new(table, metrics);
    handle.resume(registrar.store().as_ref());
    Ok((registrar.with_keepalive(handle.clone()), Some(handle)))
}

impl KeepaliveHandle {
    /// Schedule the NAT'd UDP bindings a store already holds (persisted
    /// before a restart), when it can list them.
    pub fn resume(&self, store: &dyn LocationStore) {
        let mut per_aor: HashMap<String, Vec<PingTarget>> = HashMap::new();
        store.for_each_binding(SystemTime::now(), &mut |b| {
            if let Some(t) = PingTarget::of(b) {
                per_aor.entry(b.aor.clone()).or_default().push(t);
            }
        });
        for (aor, targets) in per_aor {
            self.update_aor(&aor, &targets);
        }
    }
}

/// The OPTIONS ping of a contact (no Via: the core adds its own).
fn options_ping(contact: &str, n: u64) -> (String, bytes::Bytes) {
    let call_id = format!("umproxy-ka-{n:x}");
    let bytes = bytes::Bytes::from(format!(
        "OPTIONS {contact} SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <sip:keepalive@invalid>;tag=ka{n:x}\r\n\
         To: <{contact}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ));
    (call_id, bytes)
}

/// Drop one binding (`contact` registered from `addr`) of `aor`, unless it
/// was refreshed from elsewhere meanwhile.
async fn drop_binding(
    store: &dyn LocationStore,
    aor: &str,
    contact: &str,
    addr: SocketAddr,
) -> Result<bool, StoreError> {
    for _ in 0..4 {
        let now = SystemTime::now();
        let current = store.get(aor, now).await?;
        let keep: Vec<Binding> = current
            .bindings
            .iter()
            .filter(|b| !(b.contact_uri == contact && b.received == Some(addr)))
            .cloned()
            .collect();
        if keep.len() == current.bindings.len() {
            return Ok(false);
        }
        match store.replace(aor, current.version, keep, now).await {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// Drive the pings: every due ping goes out through the core as an OPTIONS
/// to the binding's source address; any response within `timeout` counts
/// as the pinhole being open. Stops once the core's handle is dropped.
pub fn spawn(
    handle: Arc<KeepaliveHandle>,
    core: std::sync::Weak<crate::core::CoreHandle>,
    store: Arc<dyn LocationStore>,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n: u64 = rand::random();
        loop {
            let Some(core) = core.upgrade() else { return };
            let now = crate::core::shard::clock_now();
            let unix_now = unix_secs(SystemTime::now());
            let (pings, next) = {
                let mut t = handle.lock();
                let mut pings = Vec::new();
                while let Some(p) = t.poll_ping(now, unix_now) {
                    pings.push(p);
                }
                handle.metrics.bindings.set(t.len() as i64);
                (pings, t.poll_timeout())
            };
            for p in pings {
                n = n.wrapping_add(1);
                let (call_id, bytes) = options_ping(&p.contact, n);
                let dest = Destination { transport: Transport::Udp, addr: p.addr, flow: None, server_name: None };
                let (handle, core, store) = (handle.clone(), core.clone(), store.clone());
                tokio::spawn(async move {
                    let answered = matches!(
                        tokio::time::timeout(timeout, core.originate(&call_id, bytes, dest)).await,
                        Ok(Some(_))
                    );
                    if answered {
                        handle.metrics.pings_answered.inc();
                    } else {
                        handle.metrics.pings_failed.inc();
                    }
                    let verdict = {
                        let mut t = handle.lock();
                        let v = t.handle_result(&p.aor, &p.contact, p.addr, answered);
                        handle.metrics.bindings.set(t.len() as i64);
                        v
                    };
                    match verdict {
                        Verdict::Drop => {
                            info!(aor = %p.aor.escape_default(), addr = %p.addr, "NAT keep-alive pings failed: dropping the binding");
                            match drop_binding(store.as_ref(), &p.aor, &p.contact, p.addr).await {
                                Ok(true) => handle.metrics.dropped.inc(),
                                Ok(false) => {}
                                Err(e) => debug!(error = %e, "dropping a NAT'd binding failed"),
                            }
                        }
                        Verdict::Failed(k) => {
                            debug!(aor = %p.aor.escape_default(), addr = %p.addr, failures = k, "NAT keep-alive ping failed")
                        }
                        Verdict::Alive | Verdict::Stale => {}
                    }
                });
            }
            // Woken at the next due ping, and at least every second (new
            // bindings are due an interval after they register).
            drop(core);
            let cap = tokio::time::Instant::now() + Duration::from_secs(1);
            let wake = next.map(tokio::time::Instant::from_std).map_or(cap, |w| w.min(cap));
            tokio::time::sleep_until(wake).await;
        }
    })
}
