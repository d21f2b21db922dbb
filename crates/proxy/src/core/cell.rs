//! Where a shard runs: in whichever task brings it work.
//!
//! A [`ShardCell`] holds one [`Shard`] behind a mutex and a small inbox of
//! inputs. Whoever delivers an input (a transport's receive task, a routing
//! or DNS task posting its result) pushes it to the inbox and, if the shard
//! is free, takes it and drains the inbox itself: the message is handled in
//! the task that read it, with no hand-off to another task or thread. If the
//! shard is busy, the input stays in the inbox and the holder drains it
//! before letting go (it checks the inbox again after unlocking, so nothing
//! is left behind). Nobody ever waits for a busy shard except its timer task.
//!
//! Why: handing each message from the receive task to a shard task (and the
//! tokio worker waking a second worker to steal it) cost more CPU than the
//! SIP work itself at moderate rates (perf: most of the time in context
//! switches and futex wake-ups).
//!
//! Each cell has one timer task. It sleeps until the shard's next deadline
//! and fires due timers; a delivery that makes the next deadline earlier
//! than the one the timer task sleeps until wakes it (rare: new
//! transactions' timers mostly fall after the ones already armed).
//!
//! The inbox is bounded by the core's `queue_depth`; requests are refused
//! (503) once only a quarter of it is left, so that responses and ACKs of
//! calls in progress still find room. It only fills while a shard is busy
//! on another thread.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::shard::{clock_now, Shard, ShardInput};

/// Timers due within this much of each other fire in one wake-up of the
/// timer task (SIP timers are hundreds of milliseconds and up).
const TIMER_SLACK: Duration = Duration::from_millis(5);

/// A running shard and the deadline its timer task sleeps until.
struct Running {
    shard: Shard,
    armed: Option<Instant>,
    /// The inbox's storage swapped in while draining (no allocation per drain).
    spare: VecDeque<ShardInput>,
}

/// One shard, its inbox and its timer.
pub struct ShardCell {
    running: Mutex<Option<Running>>,
    inbox: Mutex<VecDeque<ShardInput>>,
    /// Inputs in `inbox`, readable without its lock.
    queued: AtomicUsize,
    /// Wakes the timer task: an earlier deadline, or stop.
    timer: Notify,
    stopped: AtomicBool,
}

/// A shard's way to post results of its async work back to itself.
pub type PostBack = Weak<ShardCell>;

/// Post `input` to the shard behind `back`, if it still exists.
pub fn post_back(back: &PostBack, input: ShardInput) {
    if let Some(cell) = back.upgrade() {
        cell.push(input);
        cell.drain();
    }
}

impl ShardCell {
    pub fn new() -> ShardCell {
        ShardCell {
            running: Mutex::new(None),
            inbox: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            timer: Notify::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Inputs waiting (for the overload check).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn lock_inbox(&self) -> MutexGuard<'_, VecDeque<ShardInput>> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add to the inbox (handled by the next drain).
    pub fn push(&self, input: ShardInput) {
        if self.stopped.load(Ordering::Relaxed) {
            // Nobody will handle it; dropping it now tells whoever waits
            // on a reply inside it.
            return;
        }
        let mut inbox = self.lock_inbox();
        inbox.push_back(input);
        self.queued.store(inbox.len(), Ordering::Relaxed);
    }

    /// Install the shard (inputs delivered before this wait in the inbox).
    pub fn start(&self, shard: Shard) {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Running { shard, armed: None, spare: VecDeque::new() });
    }

    /// Handle everything in the inbox, unless another task holds the shard
    /// (it will). Never waits.
    pub fn drain(&self) {
        // Pairs with the fence in `work`: either this sees the shard free,
        // or its holder sees what was just pushed.
        fence(Ordering::SeqCst);
        loop {
            let guard = match self.running.try_lock() {
                Ok(g) => g,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            if !self.work(guard, false).0 {
                return;
            }
        }
    }

    /// With the shard held: fire due timers (timer task only), handle the
    /// inbox, re-arm the timer; then unlock. Returns whether inputs arrived
    /// meanwhile that nobody will handle unless the caller loops, and the
    /// deadline armed.
    fn work(&self, mut guard: MutexGuard<'_, Option<Running>>, timers: bool) -> (bool, Option<Instant>) {
        let Some(run) = guard.as_mut() else { return (false, None) };
        // The shard's work is its own, whichever task happens to run it (a
        // connection's, which may then handle other connections' messages
        // queued meanwhile): a root span, so that no connection span of the
        // running task is put on the shard's lines.
        let span = tracing::debug_span!(parent: None, "shard");
        let _entered = span.enter();
        let now = clock_now();
        if timers {
            run.shard.handle_timeout(now);
        }
        loop {
            {
                let mut inbox = self.lock_inbox();
                if inbox.is_empty() {
                    break;
                }
                std::mem::swap(&mut *inbox, &mut run.spare);
                self.queued.store(0, Ordering::Relaxed);
            }
            while let Some(input) = run.spare.pop_front() {
                run.shard.handle_input(input, now);
            }
        }
        let next = run.shard.next_deadline();
        let earlier = match (next, run.armed) {
            (Some(n), Some(a)) => n < a,
            (Some(_), None) => !timers,
            (None, _) => false,
        };
        if timers {
            run.armed = next;
        } else if earlier {
            run.armed = next;
            self.timer.notify_one();
        }
        let armed = run.armed;
        drop(guard);
        fence(Ordering::SeqCst);
        (self.queued.load(Ordering::Relaxed) > 0, armed)
    }

    /// The timer task: fire timers at their deadlines until stopped.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            let guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let (more, armed) = self.work(guard, true);
            if more {
                self.drain();
            }
            // A deadline armed by a delivery since comes with a notify.
            match armed {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at + TIMER_SLACK);
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.timer.notified() => {}
                    }
                }
                None => self.timer.notified().await,
            }
        }
    }

    /// Stop the timer task and drop the shard (with its transactions and
    /// the transports it holds). Later deliveries are dropped.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.timer.notify_one();
        let shard = self.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(shard);
        self.lock_inbox().clear();
        self.queued.store(0, Ordering::Relaxed);
    }
}

impl Default for ShardCell {
    fn default() -> Self {
        ShardCell::new()
    }
}
