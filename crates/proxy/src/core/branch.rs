//! Via branches minted by this proxy, and loop detection (RFC 3261 §16.3
//! step 4, §16.6 step 8; RFC 5393).
//!
//! A branch we mint reads `z9hG4bK-um-<loop hash>-<sequence>`. The loop hash
//! covers what identifies "the same request at the same point of routing":
//! the Request-URI as received, From and To tags, Call-ID, CSeq number, Route,
//! Proxy-Require and Proxy-Authorization. Via is left out on purpose: a
//! request that loops back arrives with other elements' Vias on top, so a
//! hash over the top Via would call every loop a spiral. A spiral (the same
//! request coming back after a Request-URI or Route change) gets another
//! hash and is forwarded; an unchanged request that comes back is a loop:
//! 482.

use std::cell::OnceCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use sip_message::{HeaderName, Message};

/// The marker after the magic cookie that says "minted by umproxy".
const PREFIX: &str = "z9hG4bK-um-";

/// Mints branches and recognises our own. One per process; the hash key is
/// random per process (SipHash keyed by `RandomState`), so a peer cannot
/// forge a branch that collides with ours.
#[derive(Debug)]
pub struct BranchMinter {
    keys: RandomState,
    seq: AtomicU64,
}

impl Default for BranchMinter {
    fn default() -> Self {
        BranchMinter { keys: RandomState::new(), seq: AtomicU64::new(1) }
    }
}

impl BranchMinter {
    /// The loop-detection hash of a request as received.
    pub fn loop_hash(&self, msg: &Message) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write(msg.request_uri_str().unwrap_or_default().as_bytes());
        h.write_u8(0);
        h.write(msg.from_tag().unwrap_or_default().as_bytes());
        h.write_u8(0);
        h.write(msg.to_tag().unwrap_or_default().as_bytes());
        h.write_u8(0);
        h.write(msg.call_id().as_bytes());
        h.write_u32(msg.cseq().0);
        for name in [HeaderName::Route, HeaderName::ProxyRequire, HeaderName::ProxyAuthorization] {
            for v in msg.header_values(name) {
                h.write(v);
                h.write_u8(0);
            }
        }
        h.finish()
    }

    /// A fresh branch for one forwarded copy of a request.
    pub fn mint(&self, loop_hash: u64) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{PREFIX}{loop_hash:016x}-{n:x}")
    }

    /// The branch for a request forwarded statelessly (ACK for 2xx): a pure
    /// function of the incoming branch, so that a retransmitted ACK leaves
    /// with the same branch (RFC 3261 §16.11).
    pub fn stateless(&self, incoming_branch: &str) -> String {
        let mut h = self.keys.build_hasher();
        h.write(incoming_branch.as_bytes());
        h.write_u8(1);
        format!("{PREFIX}s{:016x}", h.finish())
    }

    /// Whether a branch was minted by a proxy using our format, and its loop
    /// hash if so.
    pub fn hash_of(branch: &str) -> Option<u64> {
        let rest = branch.strip_prefix(PREFIX)?;
        let hex = rest.get(..16)?;
        if rest.as_bytes().get(16) != Some(&b'-') {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    }
}

/// The verdict of loop detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopCheck {
    /// We have not seen this request.
    Fresh,
    /// We forwarded it before, but something that routes it changed.
    Spiral,
    /// We forwarded exactly this request before: answer 482.
    Loop,
}

/// RFC 3261 §16.3 step 4: look for a Via that we put there, and compare its
/// loop hash with this request's. `is_me(host, port)` says whether a Via
/// sent-by names this proxy. `loop_hash` holds the request's hash, or is
/// filled here when a Via of ours needs it: most requests carry none, and
/// most are answered without being forwarded, so most never need it.
pub fn check_loop(
    minter: &BranchMinter,
    msg: &Message,
    loop_hash: &OnceCell<u64>,
    is_me: impl Fn(&str, Option<u16>) -> bool,
) -> LoopCheck {
    let mut verdict = LoopCheck::Fresh;
    for via in msg.vias() {
        // Only a branch in our format (magic cookie included) can be ours:
        // that test is cheaper than asking whether the sent-by is us.
        let Some(h) = via.branch().and_then(BranchMinter::hash_of) else { continue };
        if !is_me(via.host(), via.port()) {
            continue;
        }
        if h == *loop_hash.get_or_init(|| minter.loop_hash(msg)) {
            return LoopCheck::Loop;
        }
        verdict = LoopCheck::Spiral;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_message::MAGIC_COOKIE;

    fn invite(ruri: &str, vias: &str) -> Message {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\n{vias}From: <sip:a@example.test>;tag=1\r\nTo: <sip:b@example.test>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse_slice(text.as_bytes()).expect("test message parses")
    }

    fn me(host: &str, port: Option<u16>) -> bool {
        host == "10.0.0.1" && port.unwrap_or(5060) == 5060
    }

    #[test]
    fn minted_branch_carries_cookie_and_hash() {
        let m = BranchMinter::default();
        let b = m.mint(0xdead_beef);
        assert!(b.starts_with(MAGIC_COOKIE));
        assert_eq!(BranchMinter::hash_of(&b), Some(0xdead_beef));
        assert_ne!(m.mint(1), m.mint(1), "each copy gets its own branch");
        assert_eq!(BranchMinter::hash_of("z9hG4bKabc"), None);
    }

    #[test]
    fn same_request_back_through_us_is_a_loop() {
        let m = BranchMinter::default();
        let first = invite("sip:b@example.test", "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKa\r\n");
        let h = m.loop_hash(&first);
        assert_eq!(check_loop(&m, &first, &OnceCell::from(h), me), LoopCheck::Fresh);
        let ours = m.mint(h);
        let back = invite(
            "sip:b@example.test",
            &format!(
                "Via: SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKq\r\nVia: SIP/2.0/UDP 10.0.0.1;branch={ours}\r\n\
                 Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKa\r\n"
            ),
        );
        assert_eq!(check_loop(&m, &back, &OnceCell::new(), me), LoopCheck::Loop);
    }

    #[test]
    fn changed_request_uri_is_a_spiral() {
        let m = BranchMinter::default();
        let first = invite("sip:b@example.test", "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKa\r\n");
        let ours = m.mint(m.loop_hash(&first));
        let back = invite("sip:b@192.0.2.77", &format!("Via: SIP/2.0/UDP 10.0.0.1;branch={ours}\r\n"));
        assert_eq!(check_loop(&m, &back, &OnceCell::new(), me), LoopCheck::Spiral);
    }

    #[test]
    fn another_proxys_via_with_our_format_is_ignored() {
        let m = BranchMinter::default();
        let first = invite("sip:b@example.test", "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKa\r\n");
        let ours = m.mint(m.loop_hash(&first));
        let other = invite("sip:b@example.test", &format!("Via: SIP/2.0/UDP 10.9.9.9;branch={ours}\r\n"));
        assert_eq!(check_loop(&m, &other, &OnceCell::new(), me), LoopCheck::Fresh);
    }

    #[test]
    fn stateless_branch_is_stable() {
        let m = BranchMinter::default();
        assert_eq!(m.stateless("z9hG4bKack1"), m.stateless("z9hG4bKack1"));
        assert_ne!(m.stateless("z9hG4bKack1"), m.stateless("z9hG4bKack2"));
    }
}
