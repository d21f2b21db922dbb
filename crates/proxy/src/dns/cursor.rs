//! Failover over resolved targets: a cursor hands out the next target to
//! try, skipping targets marked down, and a shared blacklist remembers
//! targets that failed (timeout, transport error, or 503 with Retry-After,
//! RFC 3263 §4.3) until their time is up. Time comes in as `now`, so tests
//! need no sleeping.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Target;
use crate::transport::Transport;

/// Entries kept at most; beyond it, expired entries are purged and, if
/// still full, new marks are ignored (a target then just gets retried).
const MAX_ENTRIES: usize = 4096;
/// The longest a target stays down, whatever a Retry-After says, so one
/// response cannot take a next hop out of service for long.
pub const MAX_DOWN: Duration = Duration::from_secs(3600);

/// Targets currently considered down, shared by every request.
#[derive(Debug, Clone, Default)]
pub struct Blacklist {
    // Default hasher: addresses come from DNS answers, which others control.
    inner: Arc<Mutex<HashMap<(Transport, SocketAddr), Instant>>>,
}

impl Blacklist {
    pub fn new() -> Blacklist {
        Blacklist::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(Transport, SocketAddr), Instant>> {
        // Poisoning only means another thread panicked mid-insert; the map
        // is still a valid map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mark `target` down from `now` for `duration` (capped at [`MAX_DOWN`]).
    pub fn mark_down(&self, target: &Target, now: Instant, duration: Duration) {
        let until = now + duration.min(MAX_DOWN);
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, t| *t > now);
        }
        if map.len() >= MAX_ENTRIES && !map.contains_key(&(target.transport, target.addr)) {
            tracing::warn!(target = %target.addr, "next-hop blacklist full; not marking down");
            return;
        }
        let entry = map.entry((target.transport, target.addr)).or_insert(until);
        *entry = (*entry).max(until);
        tracing::info!(transport = %target.transport, addr = %target.addr, down_for = ?duration.min(MAX_DOWN), "next hop marked down");
    }

    /// Whether `target` is down at `now`. Expired entries are removed.
    pub fn is_down(&self, target: &Target, now: Instant) -> bool {
        let key = (target.transport, target.addr);
        let mut map = self.lock();
        match map.get(&key) {
            Some(until) if *until > now => true,
            Some(_) => {
                map.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Entries held, expired or not.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Hands out the targets of one request in order, skipping those down.
#[derive(Debug, Clone)]
pub struct TargetCursor {
    targets: Vec<Target>,
    next: usize,
    blacklist: Blacklist,
}

impl TargetCursor {
    /// `targets` in the order [`super::Resolver::resolve`] returned them.
    pub fn new(targets: Vec<Target>, blacklist: Blacklist) -> TargetCursor {
        TargetCursor { targets, next: 0, blacklist }
    }

    /// The next target that is not down at `now`, or `None` when all have
    /// been handed out or are down (the caller answers 503 upstream).
    pub fn next_target(&mut self, now: Instant) -> Option<Target> {
        while let Some(t) = self.targets.get(self.next) {
            self.next += 1;
            if self.blacklist.is_down(t, now) {
                tracing::debug!(addr = %t.addr, transport = %t.transport, "skipping next hop marked down");
                continue;
            }
            return Some(t.clone());
        }
        None
    }

    /// A target failed: keep every request away from it for `duration`
    /// (Retry-After of a 503, or the caller's default after a timeout or
    /// transport error).
    pub fn mark_down(&self, target: &Target, now: Instant, duration: Duration) {
        self.blacklist.mark_down(target, now, duration);
    }

    /// Targets not yet handed out (some may be down).
    pub fn remaining(&self) -> usize {
        self.targets.len().saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u16) -> Target {
        Target {
            transport: Transport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            server_name: "example.test".to_owned(),
        }
    }

    #[test]
    fn cursor_hands_out_targets_in_order() {
        let now = Instant::now();
        let mut c = TargetCursor::new(vec![target(1), target(2)], Blacklist::new());
        assert_eq!(c.remaining(), 2);
        assert_eq!(c.next_target(now), Some(target(1)));
        assert_eq!(c.next_target(now), Some(target(2)));
        assert_eq!(c.next_target(now), None);
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn marked_down_target_is_skipped_until_it_expires() {
        let t0 = Instant::now();
        let bl = Blacklist::new();
        let mut first = TargetCursor::new(vec![target(1), target(2)], bl.clone());
        let a = first.next_target(t0).unwrap();
        // 503 with Retry-After: 30.
        first.mark_down(&a, t0, Duration::from_secs(30));
        assert_eq!(first.next_target(t0), Some(target(2)));

        // Another request, ten seconds later: skips the target that is down.
        let mut second = TargetCursor::new(vec![target(1), target(2)], bl.clone());
        assert_eq!(second.next_target(t0 + Duration::from_secs(10)), Some(target(2)));

        // After Retry-After has passed, it is back.
        let mut third = TargetCursor::new(vec![target(1), target(2)], bl.clone());
        assert_eq!(third.next_target(t0 + Duration::from_secs(31)), Some(target(1)));
        assert!(bl.is_empty(), "expired entry is purged");
    }

    #[test]
    fn all_down_gives_none() {
        let t0 = Instant::now();
        let bl = Blacklist::new();
        bl.mark_down(&target(1), t0, Duration::from_secs(5));
        bl.mark_down(&target(2), t0, Duration::from_secs(5));
        let mut c = TargetCursor::new(vec![target(1), target(2)], bl);
        assert_eq!(c.next_target(t0), None);
    }

    #[test]
    fn down_time_is_capped_and_never_shortened() {
        let t0 = Instant::now();
        let bl = Blacklist::new();
        bl.mark_down(&target(1), t0, Duration::from_secs(1_000_000));
        assert!(bl.is_down(&target(1), t0 + MAX_DOWN - Duration::from_secs(1)));
        assert!(!bl.is_down(&target(1), t0 + MAX_DOWN));
        bl.mark_down(&target(2), t0, Duration::from_secs(60));
        bl.mark_down(&target(2), t0, Duration::from_secs(5));
        assert!(bl.is_down(&target(2), t0 + Duration::from_secs(30)));
    }

    #[test]
    fn transport_is_part_of_the_key() {
        let t0 = Instant::now();
        let bl = Blacklist::new();
        bl.mark_down(&target(1), t0, Duration::from_secs(5));
        let tcp = Target { transport: Transport::Tcp, ..target(1) };
        assert!(!bl.is_down(&tcp, t0));
    }
}
