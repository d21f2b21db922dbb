//! Non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6; RFC 4320).
//!
//! ```text
//!   Trying --1xx--> Proceeding
//!   Trying/Proceeding --200-699--> Completed --Timer K--> Terminated
//!   Trying/Proceeding --Timer F / transport error--> Terminated
//! ```

use super::Cx;
use crate::timers::{t1_x64, Effects, Notify, Timer};
use bytes::Bytes;
use std::time::Duration;

#[derive(Debug)]
pub(crate) enum State {
    /// Timer E (unreliable) retransmits at T1 doubling to T2; Timer F gives up.
    Trying {
        e_interval: Duration,
    },
    /// Timer E keeps retransmitting, now every T2 (§17.1.2.2).
    Proceeding,
    /// A final arrived; retransmissions of it are absorbed until Timer K.
    Completed,
    Terminated,
}

impl State {
    pub(crate) fn start(cx: &Cx<'_>, fx: &mut Effects) -> State {
        let e_interval = cx.config.t1;
        if !cx.is_reliable {
            fx.set(Timer::E, e_interval);
        }
        fx.set(Timer::F, t1_x64(cx.config));
        State::Trying { e_interval }
    }

    pub(crate) fn on_response(self, cx: &Cx<'_>, fx: &mut Effects, status: u16) -> State {
        match self {
            State::Trying { .. } | State::Proceeding if (100..200).contains(&status) => {
                fx.notify = Some(Notify::PassUp);
                State::Proceeding
            }
            State::Trying { .. } | State::Proceeding if status >= 200 => {
                fx.notify = Some(Notify::PassUp);
                fx.clear_all();
                if cx.is_reliable {
                    return State::Terminated;
                }
                fx.set(Timer::K, cx.config.t4);
                State::Completed
            }
            // Completed: retransmitted finals are absorbed.
            other => other,
        }
    }

    pub(crate) fn on_timer(self, cx: &Cx<'_>, fx: &mut Effects, timer: Timer, request: &Bytes) -> State {
        match (self, timer) {
            (State::Trying { e_interval }, Timer::E) => {
                // §17.1.2.2: E doubles, capped at T2.
                let e_interval = e_interval.saturating_mul(2).min(cx.config.t2);
                fx.send = Some(request.clone());
                fx.set(Timer::E, e_interval);
                State::Trying { e_interval }
            }
            (State::Proceeding, Timer::E) => {
                fx.send = Some(request.clone());
                fx.set(Timer::E, cx.config.t2);
                State::Proceeding
            }
            (State::Trying { .. } | State::Proceeding, Timer::F) => {
                // RFC 4320: the core is told of the timeout and must not
                // answer 408 upstream.
                fx.clear_all();
                fx.notify = Some(Notify::Timeout);
                State::Terminated
            }
            (State::Completed, Timer::K) => {
                fx.clear_all();
                State::Terminated
            }
            (state, _) => state,
        }
    }

    pub(crate) fn on_transport_error(self, fx: &mut Effects) -> State {
        match self {
            State::Trying { .. } | State::Proceeding => {
                fx.clear_all();
                fx.notify = Some(Notify::TransportError);
                State::Terminated
            }
            other => other,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Trying { .. } => "Trying",
            State::Proceeding => "Proceeding",
            State::Completed => "Completed",
            State::Terminated => "Terminated",
        }
    }
}
