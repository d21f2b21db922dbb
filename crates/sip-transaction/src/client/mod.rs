//! Client transactions (RFC 3261 §17.1): the requests the core sends.

pub(crate) mod invite;
pub(crate) mod non_invite;

use crate::key::ClientKey;
use crate::timers::Slots;
use crate::{ClientId, Config};
use sip_message::Message;

/// What a transition needs to know besides its state.
pub(crate) struct Cx<'a> {
    pub config: &'a Config,
    pub is_reliable: bool,
}

/// The state machine of a client transaction: one of the two RFC machines.
#[derive(Debug)]
pub(crate) enum ClientState {
    Invite(invite::State),
    NonInvite(non_invite::State),
}

impl ClientState {
    pub(crate) fn is_terminated(&self) -> bool {
        matches!(
            self,
            ClientState::Invite(invite::State::Terminated) | ClientState::NonInvite(non_invite::State::Terminated)
        )
    }
    /// A final response arrived and only clean-up timers (D/K/M) keep the
    /// transaction.
    pub(crate) fn is_finishing(&self) -> bool {
        matches!(
            self,
            ClientState::Invite(invite::State::Completed { .. } | invite::State::Accepted)
                | ClientState::NonInvite(non_invite::State::Completed)
        )
    }
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ClientState::Invite(s) => s.name(),
            ClientState::NonInvite(s) => s.name(),
        }
    }
}

/// One client transaction.
#[derive(Debug)]
pub(crate) struct ClientTx<A> {
    pub key: ClientKey,
    /// Where the request (and its retransmissions, ACK and CANCEL) go.
    pub dest: A,
    pub is_reliable: bool,
    pub slots: Slots,
    pub state: ClientState,
    /// The request as sent: retransmitted from its bytes, and for INVITE
    /// the source of the ACK for a non-2xx and of the CANCEL.
    pub request: Message,
    /// Set on a CANCEL the layer sent for `cancel()`: its responses and end
    /// are not reported, since the core never saw this transaction.
    pub cancel_of: Option<ClientId>,
}

impl<A> ClientTx<A> {
    /// Heap bytes this transaction owns or keeps alive (the request buffer
    /// and its header index), for the memory report.
    pub(crate) fn heap_bytes(&self) -> usize {
        // The key lives twice: here and in the layer's index.
        2 * self.key.heap_bytes() + self.request.as_bytes().len() + std::mem::size_of_val(self.request.headers())
    }
}
