//! Transaction matching keys (RFC 3261 §17.1.3, §17.2.3, §9.2) and the
//! hasher for the ids we mint.

use sip_message::{Message, Method};
use std::hash::{BuildHasherDefault, Hasher};

/// The method part of a key. ACK is folded into INVITE when matching server
/// transactions (§17.2.3: "except for ACK, where the method of the request
/// that created the transaction is INVITE"); CANCEL stays separate, so a
/// CANCEL is its own transaction with the INVITE's branch (§9.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum KeyMethod {
    Known(Method),
    /// An extension method, by its text (methods are case-sensitive, §7.1).
    Other(Box<str>),
}

impl KeyMethod {
    fn of_request(msg: &Message) -> KeyMethod {
        match msg.method() {
            Some(Method::Ack) => KeyMethod::Known(Method::Invite),
            Some(Method::Other) | None => KeyMethod::Other(msg.method_str().unwrap_or_default().into()),
            Some(m) => KeyMethod::Known(m),
        }
    }
    /// The method of a response's CSeq, which names the client transaction's
    /// method (§17.1.3).
    fn of_cseq(msg: &Message) -> KeyMethod {
        match msg.cseq().1 {
            Method::Other => KeyMethod::Other(msg.cseq_method_str().into()),
            m => KeyMethod::Known(m),
        }
    }
}

/// How a server transaction is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerKey {
    /// §17.2.3 for branches with the magic cookie: branch, sent-by and method.
    /// `branch_sent_by` is `"<branch> <host lowercased>:<port>"` in one
    /// allocation; neither a token nor a host contains a space. Kept as the
    /// bytes of the message: it is only compared and hashed, never shown,
    /// so its pieces need no UTF-8 check.
    Branch { branch_sent_by: Box<[u8]>, method: KeyMethod },
    /// The RFC 2543 fallback (§17.2.3, last paragraphs; §9.2 for CANCEL):
    /// Request-URI, To tag, From tag, Call-ID, CSeq number and top Via. The
    /// To tag of an ACK is the response's, so ACK lookups try the INVITE's
    /// To tag (none, or the dialog's) and are then checked against the tag
    /// of the response sent (see `ServerTx::response_to_tag`).
    /// Boxed: rare, and it would triple the size of every key.
    Rfc2543(Box<Rfc2543Key>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Rfc2543Key {
    request_uri: Box<str>,
    to_tag: Option<Box<str>>,
    from_tag: Option<Box<str>>,
    call_id: Box<str>,
    cseq: u32,
    top_via: Box<str>,
    method: KeyMethod,
}

/// One hasher write for the common key: the branch and sent-by string
/// alone (a subset of what `Eq` compares, so equal keys hash equally; an
/// INVITE and its CANCEL share a bucket). SipHash's cost is mostly per write.
impl std::hash::Hash for ServerKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            ServerKey::Branch { branch_sent_by, .. } => state.write(branch_sent_by),
            ServerKey::Rfc2543(k) => k.hash(state),
        }
    }
}

impl ServerKey {
    /// The key of a request as received. For ACK, `ack_to_tag` chooses which
    /// To tag an RFC 2543 lookup uses (see [`ServerKey::Rfc2543`]).
    pub(crate) fn of_request(msg: &Message, ack_to_tag: Option<&str>) -> ServerKey {
        Self::with_method(msg, KeyMethod::of_request(msg), ack_to_tag)
    }

    /// The key of the INVITE a CANCEL cancels (§9.2): the CANCEL's own key
    /// with the method INVITE.
    pub(crate) fn cancelled_invite(cancel: &Message) -> ServerKey {
        Self::with_method(cancel, KeyMethod::Known(Method::Invite), cancel.to_tag())
    }

    fn with_method(msg: &Message, method: KeyMethod, to_tag: Option<&str>) -> ServerKey {
        let via = msg.top_via();
        // The eagerly parsed branch: no second scan of the Via parameters.
        match msg.branch_bytes() {
            Some(branch) if branch.starts_with(sip_message::MAGIC_COOKIE.as_bytes()) => {
                let host = via.host_bytes();
                let mut s = Vec::with_capacity(branch.len() + host.len() + 8);
                s.extend_from_slice(branch);
                s.push(b' ');
                let host_at = s.len();
                s.extend_from_slice(host);
                // Host names compare case-insensitively (RFC 3261 §19.1.4).
                if let Some(h) = s.get_mut(host_at..) {
                    h.make_ascii_lowercase();
                }
                s.push(b':');
                // RFC 3261 §18.1.1 default port; sent-by "a.com" and "a.com:5060"
                // name the same element. (The transport is read only when
                // there is no port.)
                let port =
                    via.port().unwrap_or_else(|| if via.transport().eq_ignore_ascii_case("TLS") { 5061 } else { 5060 });
                s.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
                ServerKey::Branch { branch_sent_by: s.into_boxed_slice(), method }
            }
            _ => ServerKey::Rfc2543(Box::new(Rfc2543Key {
                request_uri: msg.request_uri_str().unwrap_or_default().into(),
                to_tag: to_tag.map(Into::into),
                from_tag: msg.from_tag().map(Into::into),
                call_id: msg.call_id().into(),
                cseq: msg.cseq().0,
                top_via: via.as_str().into(),
                method,
            })),
        }
    }

    pub(crate) fn is_rfc2543(&self) -> bool {
        matches!(self, ServerKey::Rfc2543(_))
    }

    /// Heap bytes owned by the key (for the memory report).
    pub(crate) fn heap_bytes(&self) -> usize {
        let m = |m: &KeyMethod| match m {
            KeyMethod::Other(s) => s.len(),
            KeyMethod::Known(_) => 0,
        };
        match self {
            ServerKey::Branch { branch_sent_by, method } => branch_sent_by.len() + m(method),
            ServerKey::Rfc2543(k) => {
                let Rfc2543Key { request_uri, to_tag, from_tag, call_id, top_via, method, .. } = &**k;
                std::mem::size_of::<Rfc2543Key>()
                    + request_uri.len()
                    + to_tag.as_ref().map_or(0, |t| t.len())
                    + from_tag.as_ref().map_or(0, |t| t.len())
                    + call_id.len()
                    + top_via.len()
                    + m(method)
            }
        }
    }
}

/// How a client transaction is found (§17.1.3): the top Via branch, which
/// we minted, and the CSeq method, so that the CANCEL sharing an INVITE's
/// branch is a separate transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    branch: Box<str>,
    method: KeyMethod,
}

impl ClientKey {
    /// The key of a request we send; `None` when its branch lacks the magic
    /// cookie (§8.1.1.7: a branch we mint always has it).
    pub(crate) fn of_request(msg: &Message) -> Option<ClientKey> {
        let branch = msg.branch().filter(|b| b.starts_with(sip_message::MAGIC_COOKIE))?;
        Some(ClientKey { branch: branch.into(), method: KeyMethod::of_request(msg) })
    }
    /// The key a response carries in its top Via and CSeq.
    pub(crate) fn of_response(msg: &Message) -> Option<ClientKey> {
        Some(ClientKey { branch: msg.branch()?.into(), method: KeyMethod::of_cseq(msg) })
    }
    pub(crate) fn heap_bytes(&self) -> usize {
        self.branch.len()
            + match &self.method {
                KeyMethod::Other(s) => s.len(),
                KeyMethod::Known(_) => 0,
            }
    }
}

/// Hasher for transaction ids. The ids are sequential numbers we mint, never
/// chosen by a peer, so hash flooding is impossible and SipHash would only
/// cost time; a multiplicative (Fibonacci) hash spreads them over buckets.
/// Keys a peer chooses (branch, Call-ID) use the default SipHash instead.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type IdBuildHasher = BuildHasherDefault<IdHasher>;
