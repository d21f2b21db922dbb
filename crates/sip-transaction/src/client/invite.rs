//! INVITE client transaction (RFC 3261 §17.1.1, Figure 5 as updated by
//! RFC 6026 Figure 3).
//!
//! ```text
//!            Calling --1xx--> Proceeding
//!   Calling/Proceeding --2xx--> Accepted --Timer M--> Terminated
//!   Calling/Proceeding --300-699 (send ACK)--> Completed --Timer D--> Terminated
//!   Calling --Timer B / transport error--> Terminated
//! ```

use super::Cx;
use crate::timers::{t1_x64, Effects, Notify, Timer, TIMER_D_UNRELIABLE};
use bytes::Bytes;
use sip_message::Message;
use std::time::Duration;

#[derive(Debug)]
pub(crate) enum State {
    /// The INVITE is out; Timer A (unreliable) retransmits it, Timer B gives
    /// up. `cancel_requested`: the core asked to cancel before any 1xx, so
    /// the CANCEL waits for one (§9.1).
    Calling {
        a_interval: Duration,
        cancel_requested: bool,
    },
    /// A provisional arrived. No timer: the proxy core runs Timer C (§16.6
    /// step 11) — except after our CANCEL, when Timer `CancelWait` runs.
    Proceeding {
        cancel_sent: bool,
    },
    /// A non-2xx final arrived; its retransmissions are answered with `ack`.
    Completed {
        ack: Bytes,
    },
    /// A 2xx arrived; later 2xx are passed to the core (RFC 6026 §8.4).
    Accepted,
    Terminated,
}

impl State {
    /// §17.1.1.2: send the INVITE, start Timer A (unreliable) and Timer B.
    pub(crate) fn start(cx: &Cx<'_>, fx: &mut Effects) -> State {
        let a_interval = cx.config.t1;
        if !cx.is_reliable {
            fx.set(Timer::A, a_interval);
        }
        fx.set(Timer::B, t1_x64(cx.config));
        State::Calling { a_interval, cancel_requested: false }
    }

    pub(crate) fn on_response(self, cx: &Cx<'_>, fx: &mut Effects, invite: &Message, resp: &Message) -> State {
        let status = resp.status().unwrap_or(0);
        match self {
            State::Calling { cancel_requested, .. } if (100..200).contains(&status) => {
                fx.clear_all();
                fx.notify = Some(Notify::PassUp);
                if cancel_requested {
                    fx.send_cancel = true;
                    fx.set(Timer::CancelWait, t1_x64(cx.config));
                }
                State::Proceeding { cancel_sent: cancel_requested }
            }
            State::Proceeding { cancel_sent } if (100..200).contains(&status) => {
                fx.notify = Some(Notify::PassUp);
                State::Proceeding { cancel_sent }
            }
            State::Calling { .. } | State::Proceeding { .. } if (200..300).contains(&status) => {
                // RFC 6026 §8.4: Accepted, Timer M.
                fx.clear_all();
                fx.set(Timer::M, t1_x64(cx.config));
                fx.notify = Some(Notify::PassUp);
                State::Accepted
            }
            State::Calling { .. } | State::Proceeding { .. } if status >= 300 => {
                // §17.1.1.2: ACK, pass up, Completed with Timer D (0 reliable).
                fx.clear_all();
                let ack = sip_message::build::ack_for_non2xx(invite, resp);
                fx.send = Some(ack.clone());
                fx.notify = Some(Notify::PassUp);
                if cx.is_reliable {
                    return State::Terminated;
                }
                fx.set(Timer::D, TIMER_D_UNRELIABLE);
                State::Completed { ack }
            }
            State::Completed { ack } if status >= 300 => {
                // §17.1.1.2: a retransmitted final is absorbed, the ACK re-sent.
                fx.send = Some(ack.clone());
                State::Completed { ack }
            }
            State::Completed { ack } if (200..300).contains(&status) => {
                // A 2xx (another fork's, or a UAS bug) is not ours but must
                // reach the UAC: the core forwards it statelessly.
                fx.notify = Some(Notify::Stray);
                State::Completed { ack }
            }
            State::Accepted if (200..300).contains(&status) => {
                // RFC 6026 §8.4: every 2xx retransmission goes to the core.
                fx.notify = Some(Notify::PassUp);
                State::Accepted
            }
            // 1xx after Calling/Proceeding, non-2xx in Accepted, status < 100:
            // absorbed.
            other => other,
        }
    }

    pub(crate) fn on_timer(self, _cx: &Cx<'_>, fx: &mut Effects, timer: Timer, request: &Bytes) -> State {
        match (self, timer) {
            (State::Calling { a_interval, cancel_requested }, Timer::A) => {
                // §17.1.1.2: Timer A doubles each time (no T2 cap for INVITE).
                let a_interval = a_interval.saturating_mul(2);
                fx.send = Some(request.clone());
                fx.set(Timer::A, a_interval);
                State::Calling { a_interval, cancel_requested }
            }
            (State::Calling { .. }, Timer::B) => {
                fx.clear_all();
                fx.notify = Some(Notify::Timeout);
                State::Terminated
            }
            (State::Proceeding { cancel_sent: true }, Timer::CancelWait) => {
                // §9.1: no final response 64·T1 after our CANCEL.
                fx.clear_all();
                fx.notify = Some(Notify::Timeout);
                State::Terminated
            }
            (State::Completed { .. }, Timer::D) | (State::Accepted, Timer::M) => {
                fx.clear_all();
                State::Terminated
            }
            (state, _) => state,
        }
    }

    /// §17.1.1.2: a transport failure in Calling (or Proceeding, where only a
    /// CANCEL or nothing is pending) ends the transaction and the core is
    /// told. After a final response the core already has its answer.
    pub(crate) fn on_transport_error(self, fx: &mut Effects) -> State {
        match self {
            State::Calling { .. } | State::Proceeding { .. } => {
                fx.clear_all();
                fx.notify = Some(Notify::TransportError);
                State::Terminated
            }
            other => other,
        }
    }

    /// The core wants the INVITE cancelled (§9.1).
    pub(crate) fn on_cancel(self, cx: &Cx<'_>, fx: &mut Effects) -> State {
        match self {
            State::Calling { a_interval, .. } => State::Calling { a_interval, cancel_requested: true },
            State::Proceeding { cancel_sent: false } => {
                fx.send_cancel = true;
                fx.set(Timer::CancelWait, t1_x64(cx.config));
                State::Proceeding { cancel_sent: true }
            }
            other => other,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Calling { .. } => "Calling",
            State::Proceeding { .. } => "Proceeding",
            State::Completed { .. } => "Completed",
            State::Accepted => "Accepted",
            State::Terminated => "Terminated",
        }
    }
}
