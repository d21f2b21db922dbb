//! Transaction timers (RFC 3261 §17 and Table 4, RFC 6026 §8.11) and the
//! deadline queue behind `poll_timeout`.

use crate::{Config, TxId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The RFC's timers. Each transaction runs at most two at once: one in the
/// retransmit slot (A, E, G) and one in the lifetime slot (all others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit (unreliable only), T1 doubling (§17.1.1.2).
    A,
    /// INVITE transaction timeout, 64·T1 (§17.1.1.2).
    B,
    /// Wait for response retransmits after a non-2xx final, > 32 s unreliable,
    /// 0 reliable (§17.1.1.2).
    D,
    /// Non-INVITE request retransmit (unreliable only), T1 doubling to T2
    /// (§17.1.2.2).
    E,
    /// Non-INVITE transaction timeout, 64·T1 (§17.1.2.2).
    F,
    /// INVITE final response retransmit (unreliable only), T1 doubling to T2
    /// (§17.2.1).
    G,
    /// Wait for ACK, 64·T1 (§17.2.1).
    H,
    /// Wait for ACK retransmits, T4 unreliable, 0 reliable (§17.2.1).
    I,
    /// Wait for non-INVITE request retransmits, 64·T1 unreliable, 0 reliable
    /// (§17.2.2).
    J,
    /// Wait for non-INVITE response retransmits, T4 unreliable, 0 reliable
    /// (§17.1.2.2).
    K,
    /// Server Accepted: wait for INVITE retransmits, 64·T1 (RFC 6026 §8.7).
    L,
    /// Client Accepted: wait for 2xx retransmits, 64·T1 (RFC 6026 §8.4).
    M,
    /// After our CANCEL, how long a Proceeding INVITE client transaction
    /// waits for its final response before it is destroyed, 64·T1 (RFC 3261
    /// §9.1: "If no final response for the original request is received
    /// in 64*T1 seconds … the client SHOULD then consider the original
    /// transaction cancelled and SHOULD destroy the client transaction").
    CancelWait,
}

impl Timer {
    pub(crate) fn is_retransmit(self) -> bool {
        matches!(self, Timer::A | Timer::E | Timer::G)
    }

    /// Timers whose firing only frees the transaction's state (it absorbed
    /// retransmissions until then): nothing is sent or reported.
    fn is_cleanup(self) -> bool {
        matches!(self, Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M)
    }
}

/// Clean-up timers fall due on this grid: the many a busy second arms share
/// one wake-up of whoever drives the layer, instead of one every few
/// milliseconds (a transaction lives at most this much longer).
pub const CLEANUP_GRID: Duration = Duration::from_millis(100);

/// Timer D's value on an unreliable transport (§17.1.1.2: "at least 32
/// seconds"). The RFC fixes it instead of deriving it from T1.
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// 64·T1: Timers B, F, H, J (unreliable), L, M.
pub(crate) fn t1_x64(config: &Config) -> Duration {
    config.t1.saturating_mul(64)
}

/// What a transition does to one timer slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TimerCmd {
    #[default]
    Keep,
    Clear,
    Set(Timer, Duration),
}

/// A queued deadline: (when, sequence number to keep equal instants apart).
pub(crate) type TimerKey = (Instant, u64);

/// The two timer slots of a transaction, holding keys into [`TimerQueue`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Slots {
    pub retransmit: Option<TimerKey>,
    pub lifetime: Option<TimerKey>,
}

/// Every armed deadline, earliest first. Entries are removed when a slot is
/// re-armed or cleared and when a transaction is freed, so the queue holds
/// exactly the live timers and its first key is `poll_timeout`.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    map: BTreeMap<TimerKey, (TxId, Timer)>,
    seq: u64,
    /// Origin of [`CLEANUP_GRID`]: the time a timer was first armed.
    grid_origin: Option<Instant>,
}

impl TimerQueue {
    pub(crate) fn first(&self) -> Option<Instant> {
        self.map.first_key_value().map(|(k, _)| k.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Remove and return the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TxId, Timer)> {
        let entry = self.map.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    /// Apply one slot command for `tx`.
    pub(crate) fn apply(&mut self, slot: &mut Option<TimerKey>, cmd: TimerCmd, now: Instant, tx: TxId) {
        match cmd {
            TimerCmd::Keep => {}
            TimerCmd::Clear => {
                if let Some(key) = slot.take() {
                    self.map.remove(&key);
                }
            }
            TimerCmd::Set(timer, after) => {
                if let Some(key) = slot.take() {
                    self.map.remove(&key);
                }
                // A deadline beyond what `Instant` can represent never fires.
                let at = now.checked_add(after).and_then(|at| {
                    if timer.is_cleanup() && !after.is_zero() {
                        self.on_grid(now, at)
                    } else {
                        Some(at)
                    }
                });
                if let Some(at) = at {
                    self.seq = self.seq.wrapping_add(1);
                    let key = (at, self.seq);
                    self.map.insert(key, (tx, timer));
                    *slot = Some(key);
                }
            }
        }
    }

    /// `at` rounded up to the next point of [`CLEANUP_GRID`] (at most one
    /// step later), on or before the grid's origin as after it.
    fn on_grid(&mut self, now: Instant, at: Instant) -> Option<Instant> {
        let origin = *self.grid_origin.get_or_insert(now);
        let grid = CLEANUP_GRID.as_nanos();
        if at >= origin {
            let steps = (at - origin).as_nanos().div_ceil(grid);
            origin.checked_add(Duration::from_nanos(u64::try_from(steps.checked_mul(grid)?).ok()?))
        } else {
            let steps = (origin - at).as_nanos() / grid;
            origin.checked_sub(Duration::from_nanos(u64::try_from(steps.checked_mul(grid)?).ok()?))
        }
    }

    /// Forget both timers of a freed transaction.
    pub(crate) fn clear(&mut self, slots: &mut Slots) {
        for key in [slots.retransmit.take(), slots.lifetime.take()].into_iter().flatten() {
            self.map.remove(&key);
        }
    }
}

/// Effects of one state transition, applied by the layer.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Bytes to send to the transaction's peer.
    pub send: Option<bytes::Bytes>,
    /// What to tell the core.
    pub notify: Option<Notify>,
    pub retransmit: TimerCmd,
    pub lifetime: TimerCmd,
    /// Client INVITE: send the CANCEL the core asked for (§9.1).
    pub send_cancel: bool,
}

impl Effects {
    /// Set a timer in the slot it belongs to.
    pub(crate) fn set(&mut self, timer: Timer, after: Duration) {
        if timer.is_retransmit() {
            self.retransmit = TimerCmd::Set(timer, after);
        } else {
            self.lifetime = TimerCmd::Set(timer, after);
        }
    }
    pub(crate) fn clear_all(&mut self) {
        self.retransmit = TimerCmd::Clear;
        self.lifetime = TimerCmd::Clear;
    }
}

/// A notification to the core, built into an [`crate::Event`] by the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notify {
    /// Pass the response (client) up as `Event::Response`.
    PassUp,
    /// Pass the response up as `Event::StrayResponse` (a 2xx that reached a
    /// client INVITE in Completed: it is for the core, not the transaction).
    Stray,
    /// Pass the ACK up as `Event::Ack` (RFC 6026: an ACK matching a server
    /// INVITE in Accepted goes to the core).
    Ack,
    Timeout,
    TransportError,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_grid(q: &mut TimerQueue, now: Instant, at: Instant) -> Instant {
        q.on_grid(now, at).unwrap()
    }

    /// Every clean-up deadline moves to a grid point at or after it and
    /// less than one step later, whatever was armed first: a short timer
    /// armed after a long one keeps its own time.
    #[test]
    fn clean_up_deadlines_move_less_than_one_step() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = TimerQueue::default();
        assert_eq!(on_grid(&mut q, t0, t0 + ms(32_000)), t0 + ms(32_000));
        assert_eq!(on_grid(&mut q, t0, t0 + ms(32_010)), t0 + ms(32_100));
        // Timer K (T4) armed a second later: 6.03 s, not after the J above.
        assert_eq!(on_grid(&mut q, t0 + ms(1_000), t0 + ms(6_030)), t0 + ms(6_100));
        // A caller's clock behind the origin still rounds up by less than a step.
        let early = t0.checked_sub(ms(250)).unwrap();
        assert_eq!(on_grid(&mut q, early, early), t0.checked_sub(ms(200)).unwrap());
        for k in 0..1000u64 {
            let at = t0 + Duration::from_micros(k * 7_919);
            let g = on_grid(&mut q, t0, at);
            assert!(g >= at && g < at + CLEANUP_GRID, "{k}");
        }
    }
}
