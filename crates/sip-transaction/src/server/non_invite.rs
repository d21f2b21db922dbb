//! Non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8; RFC 4320).
//!
//! ```text
//!   Trying --1xx from core--> Proceeding
//!   Trying/Proceeding --200-699 from core--> Completed --Timer J--> Terminated
//!   Proceeding/Completed --transport error--> Terminated
//! ```

use crate::client::Cx;
use crate::timers::{t1_x64, Effects, Notify, Timer};
use crate::Rejected;
use bytes::Bytes;

#[derive(Debug)]
pub(crate) enum State {
    /// Nothing sent yet: retransmissions are absorbed silently.
    Trying,
    /// A provisional was sent; retransmissions get it again.
    Proceeding {
        last_provisional: Bytes,
    },
    /// A final was sent; retransmissions get it again until Timer J.
    Completed {
        response: Bytes,
    },
    Terminated,
}

impl State {
    pub(crate) fn start() -> State {
        State::Trying
    }

    pub(crate) fn on_retransmission(self, fx: &mut Effects) -> State {
        match self {
            State::Proceeding { last_provisional } => {
                fx.send = Some(last_provisional.clone());
                State::Proceeding { last_provisional }
            }
            State::Completed { response } => {
                fx.send = Some(response.clone());
                State::Completed { response }
            }
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
        // RFC 4320 §4.1: no 100 Trying and no 408 to a non-INVITE request.
        if status == 100 || status == 408 {
            return (self, Err(Rejected::NotAllowed));
        }
        match self {
            State::Trying | State::Proceeding { .. } if (101..200).contains(&status) => {
                fx.send = Some(response.clone());
                (State::Proceeding { last_provisional: response }, Ok(()))
            }
            State::Trying | State::Proceeding { .. } if (200..700).contains(&status) => {
                // §17.2.2: Completed with Timer J (64·T1 unreliable, 0 reliable).
                fx.send = Some(response.clone());
                if cx.is_reliable {
                    return (State::Terminated, Ok(()));
                }
                fx.set(Timer::J, t1_x64(cx.config));
                (State::Completed { response }, Ok(()))
            }
            other => (other, Err(Rejected::NotAllowed)),
        }
    }

    pub(crate) fn on_timer(self, timer: Timer, fx: &mut Effects) -> State {
        match (self, timer) {
            (State::Completed { .. }, Timer::J) => {
                fx.clear_all();
                State::Terminated
            }
            (state, _) => state,
        }
    }

    /// §17.2.2: a transport error sending a response ends the transaction.
    pub(crate) fn on_transport_error(self, fx: &mut Effects) -> State {
        match self {
            State::Terminated => State::Terminated,
            _ => {
                fx.clear_all();
                fx.notify = Some(Notify::TransportError);
                State::Terminated
            }
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Trying => "Trying",
            State::Proceeding { .. } => "Proceeding",
            State::Completed { .. } => "Completed",
            State::Terminated => "Terminated",
        }
    }
}
