//! Why the layer refused an input or a command.

/// A refusal from the transaction layer. Each variant says what the caller
/// should do; none of them is caused by a bug in the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejected {
    /// The cap on live transactions ([`crate::Config::max_transactions`]) is
    /// reached. For a request from the network the core answers 503
    /// statelessly (RFC 3261 §21.5.4); for its own request it fails the
    /// branch.
    #[error("transaction limit reached")]
    Overloaded,
    /// The id names no live transaction (it terminated, or never existed).
    #[error("no such transaction")]
    UnknownTransaction,
    /// The command is not allowed in the transaction's state or by the RFCs:
    /// a response after a final one, 100 or 408 to a non-INVITE (RFC 4320
    /// §4.1), an out-of-range status, CANCEL of a non-INVITE, a request
    /// without an RFC 3261 branch, ACK or CANCEL through `send_request`, a
    /// branch already in use.
    #[error("not allowed in this transaction state")]
    NotAllowed,
}
