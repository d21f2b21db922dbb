//! Who sent a request: where it came from, and who the proxy established
//! it to be — a hosting provider by its mutual-TLS certificate, a user by
//! digest, a trusted peer by its address. The router decides with it (not
//! an open relay; a provider speaks only for its own users) and the
//! operator's log lines name it.

use std::fmt;
use std::net::SocketAddr;

use crate::transport::{Peer, Transport};

/// The identity a request was accepted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerIdentity {
    /// A configured, enabled hosting provider, by the certificate of its
    /// mutual-TLS connection; `is_verified` is what its verification level
    /// makes of the request.
    Provider { identity: String, is_verified: bool },
    /// A user of a served domain who answered the digest challenge.
    User(String),
    /// A source in `[proxy] trusted_peers`.
    TrustedPeer,
    /// Nobody in particular: may reach our users, never be relayed.
    Unauthenticated,
}

impl CallerIdentity {
    /// Whether it may reach foreign domains through this proxy (not an
    /// open relay): trusted peers and authenticated users only. A hosting
    /// provider reaches our users, not the world through us.
    pub fn may_relay(&self) -> bool {
        matches!(self, CallerIdentity::TrustedPeer | CallerIdentity::User(_))
    }

    /// The hosting provider's identity, when it is one.
    pub fn provider(&self) -> Option<&str> {
        match self {
            CallerIdentity::Provider { identity, .. } => Some(identity),
            _ => None,
        }
    }
}

impl fmt::Display for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerIdentity::Provider { identity, is_verified: true } => write!(f, "provider:{identity} (verified)"),
            CallerIdentity::Provider { identity, is_verified: false } => {
                write!(f, "provider:{identity} (unverified)")
            }
            // An authenticated name is one of our directory's, not peer text.
            CallerIdentity::User(aor) => write!(f, "user:{aor}"),
            CallerIdentity::TrustedPeer => f.write_str("trusted-peer"),
            CallerIdentity::Unauthenticated => f.write_str("unauthenticated"),
        }
    }
}

/// Where a request came from and who it was accepted as: the `source`,
/// `transport` and `caller` fields of the router's log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerSource {
    pub remote: SocketAddr,
    pub transport: Transport,
    pub identity: CallerIdentity,
}

impl CallerSource {
    /// An unauthenticated request from `peer`, until the router knows more.
    pub fn of(peer: &Peer) -> CallerSource {
        CallerSource { remote: peer.remote, transport: peer.transport, identity: CallerIdentity::Unauthenticated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_peers_and_users_may_relay() {
        let provider = CallerIdentity::Provider { identity: "sfb-online".into(), is_verified: true };
        assert!(!provider.may_relay());
        assert!(!CallerIdentity::Unauthenticated.may_relay());
        assert!(CallerIdentity::TrustedPeer.may_relay());
        assert!(CallerIdentity::User("alice@contoso.test".into()).may_relay());
        assert_eq!(provider.provider(), Some("sfb-online"));
        assert_eq!(provider.to_string(), "provider:sfb-online (verified)");
    }
}
