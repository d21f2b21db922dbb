//! Relay protection (DESIGN §5 "not an open relay") and brute-force
//! lock-out, as plain decisions with `now` passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// What the core knows about a request when deciding whether to serve it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub source_ip: IpAddr,
    /// The source is in `[proxy] trusted_peers` (or a verified provider).
    pub is_trusted_peer: bool,
    /// The user digest authentication established for this request.
    pub authenticated_user: Option<&'a str>,
    /// The From URI's domain is one we serve (the sender claims to be ours).
    pub from_domain_is_local: bool,
    /// The Request-URI's domain is one we serve.
    pub target_domain_is_local: bool,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Ask for credentials (407 + Proxy-Authenticate).
    Challenge,
    /// 403.
    Forbidden(ForbiddenReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenReason {
    /// Foreign target from an unauthenticated, untrusted source.
    Relay,
    /// Too many failed authentications from this source or for this user.
    LockedOut,
}

/// Decide whether a request may be served:
/// - trusted peers and authenticated users may do anything;
/// - a request claiming one of our domains in From must prove it (407);
/// - a request from outside to one of our users needs no authentication;
/// - anything else is someone using us as a relay (403).
pub fn authorize_request(facts: &RequestFacts<'_>) -> Decision {
    if facts.is_trusted_peer || facts.authenticated_user.is_some() {
        Decision::Allow
    } else if facts.from_domain_is_local {
        Decision::Challenge
    } else if facts.target_domain_is_local {
        Decision::Allow
    } else {
        Decision::Forbidden(ForbiddenReason::Relay)
    }
}

/// `[auth]` lock-out settings.
#[derive(Debug, Clone)]
pub struct LockoutConfig {
    /// Failures within `window` that lock a source IP out (default 10).
    pub max_failures_per_ip: u32,
    /// Failures within `window` that lock a user out (default 20; higher than
    /// per IP because anyone can make a user's counter rise).
    pub max_failures_per_user: u32,
    /// Counting window (default 300 s).
    pub window: Duration,
    /// Lock-out length (default 15 min).
    pub lockout: Duration,
    /// Keys tracked at most per kind (default 65 536).
    pub max_tracked: usize,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures_per_ip: 10,
            max_failures_per_user: 20,
            window: Duration::from_secs(300),
            lockout: Duration::from_secs(900),
            max_tracked: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    window_start: SystemTime,
    failures: u32,
    locked_until: Option<SystemTime>,
    last: SystemTime,
}

/// Failure counters keyed by something the peer picks (IP, user name): a
/// SipHash `HashMap` (hash flooding) with a size bound.
struct Counters<K> {
    map: HashMap<K, Counter>,
}

impl<K: Hash + Eq + Clone> Counters<K> {
    fn is_locked(&self, k: &K, now: SystemTime) -> bool {
        self.map.get(k).and_then(|c| c.locked_until).is_some_and(|t| now < t)
    }

    fn fail(&mut self, k: &K, max: u32, cfg: &LockoutConfig, now: SystemTime) -> bool {
        if !self.map.contains_key(k) && self.map.len() >= cfg.max_tracked {
            self.make_room(cfg, now);
        }
        let c = self.map.entry(k.clone()).or_insert(Counter {
            window_start: now,
            failures: 0,
            locked_until: None,
            last: now,
        });
        if c.locked_until.is_some_and(|t| now >= t) {
            // Lock-out served: start afresh.
            *c = Counter { window_start: now, failures: 0, locked_until: None, last: now };
        }
        if now.duration_since(c.window_start).unwrap_or_default() >= cfg.window {
            c.window_start = now;
            c.failures = 0;
        }
        c.failures = c.failures.saturating_add(1);
        c.last = now;
        if c.failures >= max && c.locked_until.is_none() {
            c.locked_until = Some(now + cfg.lockout);
            return true;
        }
        false
    }

    /// Drop idle entries; if all are live, drop the least recently failed
    /// eighth (an attacker spreading over many keys can push counters out,
    /// but cannot make the map grow).
    fn make_room(&mut self, cfg: &LockoutConfig, now: SystemTime) {
        self.map.retain(|_, c| match c.locked_until {
            Some(t) => now < t,
            None => now.duration_since(c.window_start).unwrap_or_default() < cfg.window,
        });
        if self.map.len() >= cfg.max_tracked {
            let mut lasts: Vec<SystemTime> = self.map.values().map(|c| c.last).collect();
            lasts.sort_unstable();
            if let Some(&cut) = lasts.get(lasts.len() / 8) {
                self.map.retain(|_, c| c.last > cut);
            }
        }
    }
}

/// Failed-authentication counters per source IP and per user. After M
/// failures within the window the key is locked out for the lock-out time.
pub struct FailureTracker {
    cfg: LockoutConfig,
    by_ip: Mutex<Counters<IpAddr>>,
    by_user: Mutex<Counters<String>>,
}

impl FailureTracker {
    pub fn new(cfg: LockoutConfig) -> FailureTracker {
        FailureTracker {
            cfg,
            by_ip: Mutex::new(Counters { map: HashMap::new() }),
            by_user: Mutex::new(Counters { map: HashMap::new() }),
        }
    }

    /// Whether requests from `ip` (or for `user`) must be refused with 403.
    pub fn is_locked_out(&self, ip: IpAddr, user: Option<&str>, now: SystemTime) -> bool {
        let ip_locked = self.by_ip.lock().map(|m| m.is_locked(&ip, now)).unwrap_or(true);
        let user_locked = match user {
            Some(u) => self.by_user.lock().map(|m| m.is_locked(&u.to_owned(), now)).unwrap_or(true),
            None => false,
        };
        ip_locked || user_locked
    }

    /// Count a failed authentication; returns true when this failure started
    /// a lock-out (worth one `warn!` line).
    pub fn record_failure(&self, ip: IpAddr, user: Option<&str>, now: SystemTime) -> bool {
        let mut started =
            self.by_ip.lock().map(|mut m| m.fail(&ip, self.cfg.max_failures_per_ip, &self.cfg, now)).unwrap_or(false);
        if let Some(u) = user {
            if u.len() <= 256 {
                started |= self
                    .by_user
                    .lock()
                    .map(|mut m| m.fail(&u.to_owned(), self.cfg.max_failures_per_user, &self.cfg, now))
                    .unwrap_or(false);
            }
        }
        started
    }

    /// A successful authentication clears the source's counter (not the
    /// user's: that one may be under attack from elsewhere).
    pub fn record_success(&self, ip: IpAddr) {
        if let Ok(mut m) = self.by_ip.lock() {
            if m.map.get(&ip).is_some_and(|c| c.locked_until.is_none()) {
                m.map.remove(&ip);
            }
        }
    }

    /// Keys tracked (IPs, users).
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_ip.lock().map(|m| m.map.len()).unwrap_or(0), self.by_user.lock().map(|m| m.map.len()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }
    fn facts(trusted: bool, user: Option<&str>, from_local: bool, target_local: bool) -> RequestFacts<'_> {
        RequestFacts {
            source_ip: "198.51.100.7".parse().unwrap(),
            is_trusted_peer: trusted,
            authenticated_user: user,
            from_domain_is_local: from_local,
            target_domain_is_local: target_local,
        }
    }

    #[test]
    fn foreign_target_from_unauthenticated_untrusted_source_is_forbidden() {
        assert_eq!(authorize_request(&facts(false, None, false, false)), Decision::Forbidden(ForbiddenReason::Relay));
    }

    #[test]
    fn trusted_peer_or_authenticated_user_may_relay() {
        assert_eq!(authorize_request(&facts(true, None, false, false)), Decision::Allow);
        assert_eq!(authorize_request(&facts(false, Some("alice"), true, false)), Decision::Allow);
    }

    #[test]
    fn outside_caller_to_local_user_needs_no_auth() {
        assert_eq!(authorize_request(&facts(false, None, false, true)), Decision::Allow);
    }

    #[test]
    fn claiming_a_local_from_domain_needs_auth() {
        assert_eq!(authorize_request(&facts(false, None, true, true)), Decision::Challenge);
        assert_eq!(authorize_request(&facts(false, None, true, false)), Decision::Challenge);
    }

    fn cfg() -> LockoutConfig {
        LockoutConfig {
            max_failures_per_ip: 3,
            max_failures_per_user: 5,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(600),
            max_tracked: 100,
        }
    }

    #[test]
    fn ip_locked_after_m_failures_within_window_then_released() {
        let ft = FailureTracker::new(cfg());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!ft.record_failure(ip, None, t(0)));
        assert!(!ft.record_failure(ip, None, t(10)));
        assert!(!ft.is_locked_out(ip, None, t(11)));
        assert!(ft.record_failure(ip, None, t(20)));
        assert!(ft.is_locked_out(ip, None, t(21)));
        assert!(ft.is_locked_out(ip, None, t(20 + 599)));
        assert!(!ft.is_locked_out(ip, None, t(20 + 600)));
        // A fresh start after the lock-out.
        assert!(!ft.record_failure(ip, None, t(700)));
        assert!(!ft.is_locked_out(ip, None, t(701)));
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_lock() {
        let ft = FailureTracker::new(cfg());
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        for k in 0..10 {
            ft.record_failure(ip, None, t(k * 40));
        }
        assert!(!ft.is_locked_out(ip, None, t(400)));
    }

    #[test]
    fn user_locked_across_source_ips() {
        let ft = FailureTracker::new(cfg());
        for k in 0..5u8 {
            ft.record_failure(IpAddr::from([203, 0, 113, k]), Some("alice"), t(u64::from(k)));
        }
        assert!(ft.is_locked_out("203.0.113.200".parse().unwrap(), Some("alice"), t(6)));
        assert!(!ft.is_locked_out("203.0.113.200".parse().unwrap(), Some("bob"), t(6)));
    }

    #[test]
    fn success_clears_the_ip_counter() {
        let ft = FailureTracker::new(cfg());
        let ip: IpAddr = "192.0.2.3".parse().unwrap();
        ft.record_failure(ip, None, t(0));
        ft.record_failure(ip, None, t(1));
        ft.record_success(ip);
        assert!(!ft.record_failure(ip, None, t(2)));
        assert!(!ft.is_locked_out(ip, None, t(3)));
    }

    #[test]
    fn tracking_memory_is_bounded() {
        let ft = FailureTracker::new(cfg());
        for k in 0..10_000u32 {
            ft.record_failure(IpAddr::from(k.to_be_bytes()), Some(&format!("u{k}")), t(u64::from(k % 30)));
        }
        let (ips, users) = ft.tracked();
        assert!(ips <= 100 && users <= 100, "{ips} {users}");
    }
}
