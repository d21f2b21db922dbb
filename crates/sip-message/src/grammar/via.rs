//! `Via = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)` (RFC 3261 §20.42).

use super::params::{header_params_finding, Params};
use super::uri::{host, HostKind};
use super::{fail, sep, sws, token, GResult};
use crate::fast;

/// The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// One `via-parm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    protocol: &'a [u8],
    version: &'a [u8],
    transport: &'a [u8],
    host: &'a [u8],
    host_kind: HostKind,
    port: Option<u16>,
    params: &'a [u8],
    branch: Option<&'a [u8]>,
    raw: &'a [u8],
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

impl<'a> Via<'a> {
    /// `transport = "UDP" / "TCP" / "TLS" / "SCTP" / other-transport`, as written.
    pub fn transport(&self) -> &'a str {
        text(self.transport)
    }
    pub fn protocol(&self) -> &'a str {
        text(self.protocol)
    }
    pub fn version(&self) -> &'a str {
        text(self.version)
    }
    /// The sent-by host as written (brackets kept for IPv6).
    pub fn host(&self) -> &'a str {
        text(self.host)
    }
    /// [`Self::host`] as bytes, for a caller that only compares or hashes
    /// it (no UTF-8 check).
    pub fn host_bytes(&self) -> &'a [u8] {
        self.host
    }
    pub fn host_kind(&self) -> HostKind {
        self.host_kind
    }
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    pub fn params(&self) -> Params<'a> {
        Params::header(self.params)
    }
    fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params().get(name).map(|v| v.map(text))
    }
    /// `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.branch.map(text)
    }
    /// The branch as written (a slice of the parsed text).
    pub(crate) fn branch_bytes(&self) -> Option<&'a [u8]> {
        self.branch
    }
    /// Whether the branch carries the RFC 3261 magic cookie.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }
    /// `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&'a str> {
        self.param("received").flatten()
    }
    /// `rport` (RFC 3581): `None` absent, `Some(None)` requested, `Some(Some(p))` filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }
    pub fn maddr(&self) -> Option<&'a str> {
        self.param("maddr").flatten()
    }
    pub fn ttl(&self) -> Option<u8> {
        self.param("ttl").flatten().and_then(|t| t.parse().ok())
    }
    /// The whole via-parm as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    pub fn as_str(&self) -> &'a str {
        text(self.raw)
    }
    /// Whether the transport is connection-oriented and reliable (TCP, TLS,
    /// SCTP, WS, WSS), which changes the transaction timers (RFC 3261 §17).
    pub fn is_reliable(&self) -> bool {
        !self.transport.eq_ignore_ascii_case(b"UDP")
    }
}

/// `via-parm = sent-protocol LWS sent-by *( SEMI via-params )`
/// `sent-protocol = protocol-name SLASH protocol-version SLASH transport`
/// `sent-by = host [ COLON port ]`
pub fn via_parm(i: &[u8]) -> GResult<'_, Via<'_>> {
    let start = i;
    // Nearly every Via starts `SIP/2.0/` with no LWS inside: take it whole.
    let (r, protocol, version) = match i {
        [b'S' | b's', b'I' | b'i', b'P' | b'p', b'/', b'2', b'.', b'0', b'/', r @ ..] => {
            (sws(r), i.get(..3).unwrap_or_default(), i.get(4..7).unwrap_or_default())
        }
        _ => {
            let (r, protocol) = token(i)?;
            let Some(r) = sep(r, b'/') else { return fail(r) };
            let (r, version) = token(r)?;
            let Some(r) = sep(r, b'/') else { return fail(r) };
            (r, protocol, version)
        }
    };
    let (r, transport) = token(r)?;
    let after = sws(r);
    if after.len() == r.len() {
        // LWS between sent-protocol and sent-by is mandatory.
        return fail(r);
    }
    let (r, (h, host_kind)) = host(after)?;
    let (r, port) = match sep(r, b':') {
        Some(p) => {
            let n = p.iter().take_while(|c| c.is_ascii_digit()).count();
            let (digits, rest) = p.split_at(n);
            let v = (n > 0 && n <= 5)
                .then(|| digits.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0')))
                .and_then(|v| u16::try_from(v).ok());
            match v {
                Some(v) => (rest, Some(v)),
                None => return fail(p),
            }
        }
        None => (r, None),
    };
    let (r, (params, branch)) = header_params_finding(r, b"branch")?;
    let raw = start.get(..start.len() - r.len()).unwrap_or_default();
    Ok((r, Via { protocol, version, transport, host: h, host_kind, port, params, branch, raw }))
}

/// [`via_parm`], built from the pieces the parser's fast-path scanner finds
/// when the Via has its common shape (`SIP/2.0/UDP host:port;params`, no
/// white space inside): the same result for a fraction of the work. The
/// top Via is read this way by several layers per request.
pub(crate) fn via_parm_quick(i: &[u8]) -> GResult<'_, Via<'_>> {
    match via_quick(i) {
        Some(ok) => Ok(ok),
        None => via_parm(i),
    }
}

/// The fast shape of [`via_parm_quick`]; `None` for any other.
fn via_quick(i: &[u8]) -> Option<(&[u8], Via<'_>)> {
    let p = fast::via_parts(i, 0)?;
    // The scanner stops at white space, where the full rule may go on
    // (`host ;branch=…`); as in the parser's fast path, only the end or a
    // comma may follow.
    if !matches!(i.get(p.end), None | Some(b',')) {
        return None;
    }
    let raw = i.get(..p.end)?;
    let branch = match p.branch {
        Some((s, e)) => Some(i.get(s..e)?),
        None => None,
    };
    Some((i.get(p.end..)?, via_from_head(raw, &p.head, branch)?))
}

/// A Via the parser has already checked, `raw` being the whole via-parm
/// and `branch` the value it found: only the part before the parameters
/// is scanned again (they run to the end of `raw`), with the fast path's
/// scanner. `None` when that part is not in the common shape.
pub(crate) fn checked_via<'a>(raw: &'a [u8], branch: Option<&'a [u8]>) -> Option<Via<'a>> {
    let head = fast::via_head(raw, 0)?;
    // The scanner stops at white space, after which the full rule may still
    // read a port (`host :5060`): the parameters must start right away.
    if !matches!(raw.get(head.params), None | Some(b';')) {
        return None;
    }
    via_from_head(raw, &head, branch)
}

/// The Via whose sent-protocol and sent-by `head` found in `raw`.
fn via_from_head<'a>(raw: &'a [u8], head: &fast::ViaHead, branch: Option<&'a [u8]>) -> Option<Via<'a>> {
    let piece = |(s, e): (usize, usize)| raw.get(s..e);
    Some(Via {
        // The scanner took `SIP/2.0/` whole.
        protocol: raw.get(..3)?,
        version: raw.get(4..7)?,
        transport: piece(head.transport)?,
        host: piece(head.host)?,
        host_kind: head.host_kind,
        port: head.port,
        params: raw.get(head.params..)?,
        branch,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_everywhere() {
        let (r, v) =
            via_parm(b"SIP  /   2.0  /  UDP\r\n  192.0.2.2 : 5060 ; branch = z9hG4bKkdjuw ;rport;received=192.0.2.9")
                .unwrap();
        assert!(r.is_empty());
        assert_eq!(v.transport(), "UDP");
        assert_eq!(v.host(), "192.0.2.2");
        assert_eq!(v.port(), Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bKkdjuw"));
        assert!(v.is_rfc3261_branch());
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("192.0.2.9"));
        assert!(!v.is_reliable());
    }

    #[test]
    fn via_ipv6_sent_by_and_received() {
        let (_, v) = via_parm(b"SIP/2.0/TCP [2001:db8::9:1];branch=z9hG4bKas3;received=[2001:db8::9:255]").unwrap();
        assert_eq!(v.host(), "[2001:db8::9:1]");
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        let (_, v) = via_parm(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3").unwrap();
        assert_eq!(v.received(), Some("2001:db8::9:255"));
        assert!(!v.is_reliable());
    }

    #[test]
    fn via_fast_prefix_matches_the_general_rule() {
        for text in
            ["SIP/2.0/UDP h", "sip/2.0/ UDP h", "SIP/2.0/\r\n UDP h", "SIP / 2.0 / UDP h", "SIP/2.0/TLS h:5061;x"]
        {
            let (_, v) = via_parm(text.as_bytes()).unwrap();
            assert_eq!(
                (v.protocol().to_ascii_uppercase().as_str(), v.version(), v.host()),
                ("SIP", "2.0", "h"),
                "{text}"
            );
        }
        assert!(via_parm(b"SIP/2.0/ h").is_err());
        assert!(via_parm(b"SIP/2.0/").is_err());
    }

    #[test]
    fn common_vias_take_the_quick_path() {
        for text in ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport", "SIP/2.0/TLS h.example.com;x,SIP/2.0/UDP h"] {
            let quick = via_quick(text.as_bytes());
            assert!(quick.is_some(), "{text}");
            assert_eq!(quick, via_parm(text.as_bytes()).ok(), "{text}");
        }
    }

    #[test]
    fn checked_vias_rebuild_the_same_via() {
        for text in [
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP h;branch=x ; rport",
            "SIP/2.0/UDP h;BRANCH=a;branch=b",
            "SIP/2.0/TCP [2001:db8::1]:5061",
        ] {
            let (_, v) = via_parm(text.as_bytes()).unwrap();
            assert_eq!(checked_via(v.as_bytes(), v.branch_bytes()), Some(v), "{text}");
        }
    }

    #[test]
    fn malformed_vias_fail() {
        assert!(via_parm(b"SIP/2.0/UDP").is_err());
        assert!(via_parm(b"SIP/2.0/UDPhost").is_err());
        assert!(via_parm(b"SIP/2.0 UDP host").is_err());
        assert!(via_parm(b"SIP/2.0/UDP host:70000").is_err());
    }
}
