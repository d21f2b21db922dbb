//! Server transactions (RFC 3261 §17.2): the requests peers send us.

pub(crate) mod invite;
pub(crate) mod non_invite;

use crate::key::ServerKey;
use crate::timers::Slots;

#[derive(Debug)]
pub(crate) enum ServerState {
    Invite(invite::State),
    NonInvite(non_invite::State),
}

impl ServerState {
    pub(crate) fn is_terminated(&self) -> bool {
        matches!(
            self,
            ServerState::Invite(invite::State::Terminated) | ServerState::NonInvite(non_invite::State::Terminated)
        )
    }
    /// A final response was sent and only clean-up timers (G/H/I/J/L)
    /// keep the transaction: nothing is owed to anyone any more.
    pub(crate) fn is_finishing(&self) -> bool {
        matches!(
            self,
            ServerState::Invite(invite::State::Completed { .. } | invite::State::Confirmed | invite::State::Accepted)
                | ServerState::NonInvite(non_invite::State::Completed { .. })
        )
    }
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ServerState::Invite(s) => s.name(),
            ServerState::NonInvite(s) => s.name(),
        }
    }
}

/// One server transaction. The request itself goes to the core in
/// `Event::Request`; the transaction keeps only what matching and
/// retransmission need.
#[derive(Debug)]
pub(crate) struct ServerTx<A> {
    pub key: ServerKey,
    /// Where responses go: the request's source.
    pub peer: A,
    pub is_reliable: bool,
    pub slots: Slots,
    pub state: ServerState,
    /// RFC 2543 fallback only: the To tag of the final response sent, which
    /// an ACK for it must carry (§17.2.3).
    pub response_to_tag: Option<Box<str>>,
}

impl<A> ServerTx<A> {
    /// Heap bytes owned: the key (twice), and the response kept for retransmission
    /// (shared with what was handed to the transport).
    pub(crate) fn heap_bytes(&self) -> usize {
        let kept = match &self.state {
            ServerState::Invite(invite::State::Proceeding { last_provisional: Some(b) })
            | ServerState::Invite(invite::State::Completed { response: b, .. })
            | ServerState::NonInvite(non_invite::State::Proceeding { last_provisional: b })
            | ServerState::NonInvite(non_invite::State::Completed { response: b }) => b.len(),
            _ => 0,
        };
        // The key lives twice: here and in the layer's index.
        2 * self.key.heap_bytes() + kept + self.response_to_tag.as_ref().map_or(0, |t| t.len())
    }
}
