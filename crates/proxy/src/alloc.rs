//! Giving memory back to the operating system after a burst of load.
//!
//! Under load the proxy's heap grows with the transactions it holds
//! through their clean-up timers (32 s for an INVITE); when they end, glibc
//! keeps the freed pages for reuse, and trims only the top of the main
//! heap (see `tune_allocator` in `main.rs`). After a flood that could leave
//! gigabytes resident for good. So once the load has fallen well below the
//! peak it reached, the heaps are trimmed (`malloc_trim(0)`, which returns
//! the free pages of every arena): memory goes back when it is no longer
//! needed, and a steady load, whose pages are reused at once, is never
//! trimmed under its feet.

use std::sync::Arc;
use std::time::Duration;

/// How often the load is sampled.
pub const TICK: Duration = Duration::from_secs(10);
/// Below this many messages in a tick, the peak is too small to have grown
/// the heap worth a trim.
const MIN_PEAK: u64 = 5_000;
/// Trim once the load of a tick has fallen to this fraction of the peak.
const FALL: u64 = 10;
/// Ticks trimmed after a fall: the transactions of the burst are freed over
/// their clean-up timers (up to 64·T1 = 32 s) after the load has fallen, so
/// the heap is trimmed at each tick until they are surely gone.
const TRIMS_AFTER_FALL: u8 = 6;

/// When to trim: a plain state machine over per-tick message counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrimPolicy {
    /// The busiest tick since the load last fell.
    peak: u64,
    /// Trims left after the last fall.
    trims_left: u8,
}

impl TrimPolicy {
    /// Feed the messages of the last tick; true when the heap should be
    /// trimmed now.
    pub fn on_tick(&mut self, messages: u64) -> bool {
        if messages > self.peak {
            self.peak = messages;
            self.trims_left = 0;
            return false;
        }
        if self.peak >= MIN_PEAK && messages.saturating_mul(FALL) <= self.peak {
            // The load fell: trim now and for the next ticks; the next
            // series needs a new peak.
            self.peak = messages;
            self.trims_left = TRIMS_AFTER_FALL;
        }
        if self.trims_left > 0 {
            self.trims_left -= 1;
            return true;
        }
        false
    }
}

/// Sample `messages` (a running count of messages received) every [`TICK`]
/// and trim the heaps when [`TrimPolicy`] says so.
pub fn spawn_idle_trim(messages: Arc<dyn Fn() -> u64 + Send + Sync>) {
    tokio::spawn(async move {
        let mut policy = TrimPolicy::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = messages();
        loop {
            tick.tick().await;
            let now = messages();
            if policy.on_tick(now.saturating_sub(last)) {
                // malloc_trim walks the arenas: off the async workers.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
            last = now;
        }
    });
}

/// Return the free pages of every heap arena to the operating system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes an integer and works under glibc's own
    // arena locks; it touches no memory of ours and may be called at any
    // time, from any thread.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "heap trimmed after the load fell");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fall_from_a_real_peak_trims_once() {
        let mut p = TrimPolicy::default();
        // Load rises and holds: no trim under a steady load.
        for m in [1_000, 20_000, 40_000, 40_000, 39_000, 41_000] {
            assert!(!p.on_tick(m), "trimmed at {m}");
        }
        // Halved: still busy.
        assert!(!p.on_tick(20_000));
        // Down to a tenth of the peak: trimmed at each tick while the
        // burst's transactions end, then no more.
        for tick in 0..TRIMS_AFTER_FALL {
            assert!(p.on_tick(if tick == 0 { 4_000 } else { 100 }), "tick {tick}");
        }
        assert!(!p.on_tick(100));
        assert!(!p.on_tick(0));
        // A new burst and its end: trimmed again.
        assert!(!p.on_tick(30_000));
        assert!(p.on_tick(0));
        // Load back while trimming: no more trims.
        assert!(!p.on_tick(50_000));
    }

    #[test]
    fn a_light_load_is_never_trimmed() {
        let mut p = TrimPolicy::default();
        for m in [10, 4_000, 0, 4_999, 0, 0] {
            assert!(!p.on_tick(m), "trimmed at {m}");
        }
    }
}
