//! INVITE server transaction (RFC 3261 §17.2.1, Figure 7 as updated by
//! RFC 6026 Figure 5).
//!
//! ```text
//!   Proceeding --1xx from core--> Proceeding
//!   Proceeding --2xx from core--> Accepted --Timer L--> Terminated
//!   Proceeding --300-699 from core--> Completed --ACK--> Confirmed --Timer I--> Terminated
//!   Completed --Timer H / transport error--> Terminated
//! ```
//! The layer never sends 100 Trying itself: the core does (it knows when it
//! will be slower than 200 ms, §17.2.1).

use crate::client::Cx;
use crate::timers::{t1_x64, Effects, Notify, Timer};
use crate::Rejected;
use bytes::Bytes;
use std::time::Duration;

#[derive(Debug)]
pub(crate) enum State {
    /// Waiting for the core's final response; a retransmitted INVITE gets
    /// the last provisional again (§17.2.1).
    Proceeding {
        last_provisional: Option<Bytes>,
    },
    /// A non-2xx final was sent; Timer G (unreliable) retransmits it until
    /// the ACK, Timer H gives up.
    Completed {
        response: Bytes,
        g_interval: Duration,
    },
    /// The ACK arrived; later ACKs are absorbed until Timer I.
    Confirmed,
    /// A 2xx was sent (RFC 6026 §8.7): INVITE retransmissions are absorbed,
    /// the core's 2xx retransmissions are sent, a matching ACK goes to the
    /// core, until Timer L.
    Accepted,
    Terminated,
}

impl State {
    pub(crate) fn start() -> State {
        State::Proceeding { last_provisional: None }
    }

    pub(crate) fn on_retransmission(self, fx: &mut Effects) -> State {
        match self {
            State::Proceeding { last_provisional } => {
                fx.send = last_provisional.clone();
                State::Proceeding { last_provisional }
            }
            State::Completed { response, g_interval } => {
                fx.send = Some(response.clone());
                State::Completed { response, g_interval }
            }
            // Confirmed and Accepted absorb it (RFC 6026 §8.7 for Accepted).
            other => other,
        }
    }

    pub(crate) fn on_ack(self, cx: &Cx<'_>, fx: &mut Effects) -> State {
        match self {
            State::Completed { .. } => {
                // §17.2.1: Confirmed, stop G and H, Timer I (0 reliable).
                fx.clear_all();
                if cx.is_reliable {
                    return State::Terminated;
                }
                fx.set(Timer::I, cx.config.t4);
                State::Confirmed
            }
            State::Accepted => {
                // RFC 6026 §8.7: an ACK in Accepted is passed to the core.
                fx.notify = Some(Notify::Ack);
                State::Accepted
            }
            State::Proceeding { last_provisional } => {
                // Before any final response an ACK acknowledges nothing of
                // ours: the core gets it as a stray ACK.
                fx.notify = Some(Notify::Ack);
                State::Proceeding { last_provisional }
            }
            // Confirmed absorbs ACK retransmissions.
            other => other,
        }
    }

    pub(crate) fn on_response(
        self,
        cx: &Cx<'_>,
        fx: &mut Effects,
        status: u16,
        response: Bytes,
    ) -> (State, Result<(), Rejected>) {
        match self {
            State::Proceeding { .. } if (100..200).contains(&status) => {
                fx.send = Some(response.clone());
                (State::Proceeding { last_provisional: Some(response) }, Ok(()))
            }
            State::Proceeding { .. } | State::Accepted if (200..300).contains(&status) => {
                // RFC 6026 §8.7: Accepted with Timer L; in Accepted, the
                // core's 2xx retransmissions are sent and L keeps running.
                fx.send = Some(response);
                if !matches!(self, State::Accepted) {
                    fx.clear_all();
                    fx.set(Timer::L, t1_x64(cx.config));
                }
                (State::Accepted, Ok(()))
            }
            State::Proceeding { .. } if (300..700).contains(&status) => {
                // §17.2.1: Completed, Timer G (unreliable) and Timer H.
                fx.send = Some(response.clone());
                let g_interval = cx.config.t1;
                if !cx.is_reliable {
                    fx.set(Timer::G, g_interval);
                }
                fx.set(Timer::H, t1_x64(cx.config));
                (State::Completed { response, g_interval }, Ok(()))
            }
            other => (other, Err(Rejected::NotAllowed)),
        }
    }

    pub(crate) fn on_timer(self, cx: &Cx<'_>, fx: &mut Effects, timer: Timer) -> State {
        match (self, timer) {
            (State::Completed { response, g_interval }, Timer::G) => {
                // §17.2.1: G doubles, capped at T2.
                let g_interval = g_interval.saturating_mul(2).min(cx.config.t2);
                fx.send = Some(response.clone());
                fx.set(Timer::G, g_interval);
                State::Completed { response, g_interval }
            }
            (State::Completed { .. }, Timer::H) | (State::Confirmed, Timer::I) | (State::Accepted, Timer::L) => {
                fx.clear_all();
                State::Terminated
            }
            (state, _) => state,
        }
    }

    /// §17.2.4: a response that cannot be sent ends the transaction. In
    /// Accepted the transaction stays, so that INVITE retransmissions are
    /// still absorbed (RFC 6026's reason for Accepted); the core is told.
    pub(crate) fn on_transport_error(self, fx: &mut Effects) -> State {
        match self {
            State::Proceeding { .. } | State::Completed { .. } => {
                fx.clear_all();
                fx.notify = Some(Notify::TransportError);
                State::Terminated
            }
            State::Accepted => {
                fx.notify = Some(Notify::TransportError);
                State::Accepted
            }
            other => other,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Proceeding { .. } => "Proceeding",
            State::Completed { .. } => "Completed",
            State::Confirmed => "Confirmed",
            State::Accepted => "Accepted",
            State::Terminated => "Terminated",
        }
    }
}
