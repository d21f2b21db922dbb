//! Per-source admission, the counterpart of Kamailio's `pike`: one token
//! bucket per source IP address for the requests that start something new
//! (out of dialog: INVITE, REGISTER, OPTIONS, MESSAGE, SUBSCRIBE…). A
//! source that sends more than its rate (after a burst) has the excess
//! dropped before any parsing beyond the framing, routing or
//! authentication work, and counted; requests within dialogs, ACK, CANCEL
//! and responses are never limited here, so calls in progress finish.
//! Trusted peers and mutual-TLS peers (a verified client certificate: a
//! hosting provider, an SBC) are exempt.
//!
//! Plain code on an explicit clock (`now`), tested without a runtime.

use std::collections::hash_map::RandomState;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ipnet::IpNet;

/// `[limits] source_rate`, `source_burst` and what is exempt.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLimits {
    /// Requests per second one source may start, sustained.
    pub rate: u32,
    /// Requests one source may start at once, above the rate.
    pub burst: u32,
    /// Sources tracked at most (memory bound); beyond it a new source is
    /// admitted untracked until idle ones are forgotten.
    pub max_sources: usize,
    /// Sources never limited (`[proxy] trusted_peers`).
    pub exempt: Vec<IpNet>,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits { rate: DEFAULT_RATE, burst: DEFAULT_BURST, max_sources: 65_536, exempt: Vec::new() }
    }
}

/// `[limits] source_rate` default: far above what a phone, or an office of
/// phones behind one NAT, sends; far below what one worker handles.
pub const DEFAULT_RATE: u32 = 200;
/// `[limits] source_burst` default.
pub const DEFAULT_BURST: u32 = 400;

/// Lines logged per second at most about throttled sources (a spoofed
/// flood from many addresses must not flood the log instead).
const LOG_LINES_PER_S: u64 = 10;

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Over the source's rate: drop it. `log` says whether this is the
    /// first drop of an episode and the log budget allows a line.
    Drop {
        log: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Dropped a request since the bucket was last full: one episode of
    /// throttling, logged once, ends when the source has been quiet long
    /// enough to refill its burst.
    is_throttled: bool,
}

impl Bucket {
    /// Tokens now (refilled at `rate`, at most `burst`).
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }
}

/// The token buckets. Source addresses are chosen by peers (spoofable over
/// UDP): SipHash with a random key, and a bound on how many are held.
pub struct SourceLimiter {
    cfg: SourceLimits,
    buckets: DashMap<IpAddr, Bucket, RandomState>,
    /// When idle sources were last forgotten, in ms since `epoch`.
    last_sweep_ms: AtomicU64,
    /// Log budget: the second of the last line, and lines in it.
    log_window: AtomicU64,
    epoch: Instant,
}

impl SourceLimiter {
    /// `None` when `rate` is 0 (no per-source limit).
    pub fn new(cfg: SourceLimits, now: Instant) -> Option<SourceLimiter> {
        (cfg.rate > 0).then(|| SourceLimiter {
            cfg,
            buckets: DashMap::with_hasher(RandomState::new()),
            last_sweep_ms: AtomicU64::new(0),
            log_window: AtomicU64::new(0),
            epoch: now,
        })
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Admit or drop one request that starts something new from `ip`.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Admission {
        if self.cfg.exempt.iter().any(|n| n.contains(&ip)) {
            return Admission::Admit;
        }
        let (rate, burst) = (f64::from(self.cfg.rate), f64::from(self.cfg.burst.max(1)));
        if let Some(mut b) = self.buckets.get_mut(&ip) {
            b.refill(now, rate, burst);
            if b.tokens >= burst {
                b.is_throttled = false;
            }
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return Admission::Admit;
            }
            let first = !b.is_throttled;
            b.is_throttled = true;
            drop(b);
            return Admission::Drop { log: first && self.may_log(now) };
        }
        if self.buckets.len() >= self.cfg.max_sources {
            self.sweep(now);
            if self.buckets.len() >= self.cfg.max_sources {
                // Full of active sources: this one goes untracked (the
                // overload limits still hold).
                return Admission::Admit;
            }
        }
        self.buckets.insert(ip, Bucket { tokens: burst - 1.0, last: now, is_throttled: false });
        Admission::Admit
    }

    /// Forget sources whose bucket is full again (idle for burst/rate),
    /// at most once a second.
    fn sweep(&self, now: Instant) {
        let ms = self.ms(now);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if ms < last.saturating_add(1000)
            || self.last_sweep_ms.compare_exchange(last, ms, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let (rate, burst) = (f64::from(self.cfg.rate), f64::from(self.cfg.burst.max(1)));
        self.buckets.retain(|_, b| {
            b.refill(now, rate, burst);
            b.tokens < burst
        });
    }

    /// Whether the log budget of this second allows one more line.
    fn may_log(&self, now: Instant) -> bool {
        let second = self.ms(now) / 1000;
        // High 40 bits: the second; low 24 bits: lines in it.
        let packed = self.log_window.load(Ordering::Relaxed);
        let (at, lines) = (packed >> 24, packed & 0xff_ffff);
        let next = if at == second { lines + 1 } else { 1 };
        if next > LOG_LINES_PER_S {
            return false;
        }
        self.log_window.compare_exchange(packed, (second << 24) | next, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The rate, for log lines.
    pub fn rate(&self) -> u32 {
        self.cfg.rate
    }
}

/// How long a source must stay quiet to be forgotten.
pub fn idle_after(cfg: &SourceLimits) -> Duration {
    Duration::from_secs_f64(f64::from(cfg.burst.max(1)) / f64::from(cfg.rate.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn limiter(rate: u32, burst: u32, max_sources: usize) -> (SourceLimiter, Instant) {
        let t0 = Instant::now();
        let cfg = SourceLimits {
            rate,
            burst,
            max_sources,
            exempt: vec!["192.0.2.0/24".parse().unwrap_or_else(|e| panic!("{e}"))],
        };
        (SourceLimiter::new(cfg, t0).unwrap_or_else(|| panic!("rate > 0")), t0)
    }

    fn admitted(l: &SourceLimiter, from: &str, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| l.admit(ip(from), now) == Admission::Admit).count()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let (l, t0) = limiter(100, 200, 1000);
        assert_eq!(admitted(&l, "198.51.100.1", 1000, t0), 200, "the burst at once");
        // Another source is not affected by the first one's flood.
        assert_eq!(admitted(&l, "198.51.100.2", 150, t0), 150);
        // One second later: the rate's worth again.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(admitted(&l, "198.51.100.1", 1000, t1), 100);
        // Quiet long enough: the whole burst back, no more.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(admitted(&l, "198.51.100.1", 1000, t2), 200);
    }

    #[test]
    fn exempt_sources_are_never_limited() {
        let (l, t0) = limiter(1, 1, 1000);
        assert_eq!(admitted(&l, "192.0.2.7", 10_000, t0), 10_000);
        assert_eq!(l.tracked(), 0, "an exempt source takes no bucket");
    }

    #[test]
    fn the_first_drop_of_an_episode_is_logged_within_a_budget() {
        let (l, t0) = limiter(2, 4, 1000);
        let a = ip("198.51.100.1");
        assert_eq!(admitted(&l, "198.51.100.1", 4, t0), 4);
        assert_eq!(l.admit(a, t0), Admission::Drop { log: true });
        assert_eq!(l.admit(a, t0), Admission::Drop { log: false }, "one line per episode");
        // A source steadily over its rate: still the same episode.
        let half = t0 + Duration::from_millis(500);
        assert_eq!(l.admit(a, half), Admission::Admit);
        assert_eq!(l.admit(a, half), Admission::Drop { log: false });
        // Quiet until its burst is back: a new episode logs again.
        let t1 = half + Duration::from_secs(3);
        assert_eq!(admitted(&l, "198.51.100.1", 4, t1), 4);
        assert_eq!(l.admit(a, t1), Admission::Drop { log: true });
        // Many sources throttled in one second: at most the budget's lines.
        let lines = (0..100u8)
            .map(|n| ip(&format!("203.0.113.{n}")))
            .filter(|&b| {
                for _ in 0..4 {
                    let _ = l.admit(b, t1);
                }
                l.admit(b, t1) == Admission::Drop { log: true }
            })
            .count();
        assert_eq!(lines as u64, LOG_LINES_PER_S - 1, "one line of this second went to the first source");
    }

    #[test]
    fn memory_is_bounded_and_idle_sources_are_forgotten() {
        let (l, t0) = limiter(10, 10, 100);
        for n in 0..100u8 {
            l.admit(ip(&format!("198.51.100.{n}")), t0);
        }
        assert_eq!(l.tracked(), 100);
        // Full: a new source is admitted but not tracked.
        assert_eq!(l.admit(ip("203.0.113.1"), t0), Admission::Admit);
        assert_eq!(l.tracked(), 100);
        // Once the others are idle long enough, they are forgotten to make room.
        let later = t0 + idle_after(&l.cfg) + Duration::from_secs(2);
        assert_eq!(l.admit(ip("203.0.113.1"), later), Admission::Admit);
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn a_zero_rate_means_no_limiter() {
        let cfg = SourceLimits { rate: 0, ..SourceLimits::default() };
        assert!(SourceLimiter::new(cfg, Instant::now()).is_none());
    }
}
