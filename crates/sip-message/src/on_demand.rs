//! Typed accessors for headers kept raw at parse time and parsed only when
//! asked for: credentials and challenges, Diversion, History-Info, Path,
//! Privacy, Reason, Date, and the Request-URI scheme check.
//!
//! Each returns a `Result` per value: a malformed header a proxy merely
//! forwards must not fail the whole message, but one it acts on must.

use crate::error::{ErrorKind, ParseError};
use crate::grammar::auth::{auth_value, AuthValue};
use crate::grammar::extension::{privacy_values, reason_value, rfc1123_date, ReasonValue};
use crate::grammar::name_addr::{name_addr, NameAddr};
use crate::grammar::uri::Scheme;
use crate::grammar::{offset, sws, GResult};
use crate::header::HeaderName;
use crate::message::Message;

impl Message {
    fn error_at(&self, kind: ErrorKind, at: &[u8]) -> ParseError {
        ParseError::new(kind, offset(self.as_bytes(), at).min(self.as_bytes().len()))
    }

    fn whole_values<'a, T: 'a>(
        &'a self,
        name: HeaderName,
        elem: impl Fn(&'a [u8]) -> GResult<'a, T> + 'a,
    ) -> impl Iterator<Item = Result<T, ParseError>> + 'a {
        self.header_values(name).map(move |v| match elem(v) {
            Ok((rest, t)) if sws(rest).is_empty() => Ok(t),
            Ok((rest, _)) => Err(self.error_at(ErrorKind::Header(name), rest)),
            Err(_) => Err(self.error_at(ErrorKind::Header(name), v)),
        })
    }

    fn list_values<'a, T: 'a>(
        &'a self,
        name: HeaderName,
        elem: fn(&'a [u8]) -> GResult<'a, T>,
    ) -> impl Iterator<Item = Result<T, ParseError>> + 'a {
        self.header_values(name).flat_map(move |v| ResultList { msg: self, name, rest: Some(v), elem })
    }

    /// Authorization credentials, one per header line (RFC 3261 §20.7).
    pub fn authorization(&self) -> impl Iterator<Item = Result<AuthValue<'_>, ParseError>> + '_ {
        self.whole_values(HeaderName::Authorization, auth_value)
    }
    /// Proxy-Authorization credentials, one per line (§20.28).
    pub fn proxy_authorization(&self) -> impl Iterator<Item = Result<AuthValue<'_>, ParseError>> + '_ {
        self.whole_values(HeaderName::ProxyAuthorization, auth_value)
    }
    /// WWW-Authenticate challenges, one per line (§20.44).
    pub fn www_authenticate(&self) -> impl Iterator<Item = Result<AuthValue<'_>, ParseError>> + '_ {
        self.whole_values(HeaderName::WwwAuthenticate, auth_value)
    }
    /// Proxy-Authenticate challenges, one per line (§20.27).
    pub fn proxy_authenticate(&self) -> impl Iterator<Item = Result<AuthValue<'_>, ParseError>> + '_ {
        self.whole_values(HeaderName::ProxyAuthenticate, auth_value)
    }
    /// Diversion entries, top first (RFC 5806:
    /// `diversion-params = name-addr *(SEMI (diversion-reason / … ))`).
    pub fn diversions(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.list_values(HeaderName::Diversion, bracketed)
    }
    /// History-Info entries in order (RFC 7044:
    /// `hi-entry = hi-targeted-to-uri *(SEMI hi-param)`, a name-addr).
    pub fn history_info(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.list_values(HeaderName::HistoryInfo, bracketed)
    }
    /// Path values, top first (RFC 3327: `path-value = name-addr *( SEMI rr-param )`).
    pub fn paths(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.list_values(HeaderName::Path, bracketed)
    }
    /// Reason values in order (RFC 3326).
    pub fn reasons(&self) -> impl Iterator<Item = Result<ReasonValue<'_>, ParseError>> + '_ {
        self.list_values(HeaderName::Reason, reason_value)
    }
    /// Privacy values of every Privacy line, in order (RFC 3323 §4.2).
    pub fn privacy(&self) -> Result<Vec<&str>, ParseError> {
        let mut out = Vec::new();
        for v in self.header_values(HeaderName::Privacy) {
            let vals = privacy_values(v).map_err(|at| self.error_at(ErrorKind::Header(HeaderName::Privacy), at))?;
            out.extend(vals.into_iter().map(|t| std::str::from_utf8(t).unwrap_or_default()));
        }
        Ok(out)
    }
    /// The Date header, checked against `rfc1123-date` (always GMT).
    /// `None` when absent. RFC 4475 §3.1.2.12 (baddate): a proxy forwards
    /// a bad Date untouched, so the parse itself never fails on it.
    pub fn date(&self) -> Option<Result<&str, ParseError>> {
        self.whole_values(HeaderName::Date, rfc1123_date)
            .next()
            .map(|r| r.map(|d| std::str::from_utf8(d).unwrap_or_default()))
    }

    /// Refuse a Request-URI scheme this element cannot route: only `sip`,
    /// `sips` and `tel` pass. The error maps to 416 Unsupported URI Scheme
    /// (RFC 3261 §8.2.2.1, §16.3; RFC 4475 §3.3.2 unkscm, §3.3.3 novelsc).
    /// A response passes (it has no Request-URI).
    pub fn check_request_uri_scheme(&self) -> Result<(), ParseError> {
        let Some(text) = self.request_uri_str() else { return Ok(()) };
        match self.request_uri().map(|u| u.scheme) {
            Some(Scheme::Sip | Scheme::Sips | Scheme::Tel) => Ok(()),
            _ => Err(self.error_at(ErrorKind::UnsupportedUriScheme, text.as_bytes())),
        }
    }
}

fn bracketed(i: &[u8]) -> GResult<'_, NameAddr<'_>> {
    name_addr(i, true)
}

/// Elements of one list header line; an element that fails to parse ends
/// the line with one error.
struct ResultList<'a, T> {
    msg: &'a Message,
    name: HeaderName,
    rest: Option<&'a [u8]>,
    elem: fn(&'a [u8]) -> GResult<'a, T>,
}

impl<'a, T> Iterator for ResultList<'a, T> {
    type Item = Result<T, ParseError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut r = sws(self.rest?);
        while let [b',', t @ ..] = r {
            r = sws(t);
        }
        if r.is_empty() {
            self.rest = None;
            return None;
        }
        match (self.elem)(r) {
            Ok((rest, t)) => {
                let rest = sws(rest);
                match rest {
                    [] | [b',', ..] => {
                        self.rest = Some(rest);
                        Some(Ok(t))
                    }
                    _ => {
                        self.rest = None;
                        Some(Err(self.msg.error_at(ErrorKind::Header(self.name), rest)))
                    }
                }
            }
            Err(_) => {
                self.rest = None;
                Some(Err(self.msg.error_at(ErrorKind::Header(self.name), r)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
Call-ID: abc\r\nCSeq: 1 INVITE\r\n";

    fn with(extra: &str) -> Message {
        Message::parse_slice(format!("{BASE}{extra}Content-Length: 0\r\n\r\n")).unwrap()
    }

    #[test]
    fn credentials_and_challenges_are_typed() {
        let m = with(
            "Proxy-Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"n1\", \
             uri=\"sip:bob@example.com\", response=\"0123456789abcdef0123456789abcdef\"\r\n\
             WWW-Authenticate: Digest realm=\"example.com\", qop=\"auth\", nonce=\"n2\", algorithm=MD5\r\n\
             Authorization: Bogus\r\n",
        );
        let pa: Vec<_> = m.proxy_authorization().collect();
        assert_eq!(pa.len(), 1);
        let pa = pa[0].unwrap();
        assert!(pa.is_digest());
        assert_eq!(pa.param_str("username"), Some("alice"));
        assert_eq!(pa.param_str("response"), Some("0123456789abcdef0123456789abcdef"));
        let ch = m.www_authenticate().next().unwrap().unwrap();
        assert_eq!(ch.param_str("algorithm"), Some("MD5"));
        assert_eq!(ch.param_str("qop"), Some("auth"));
        assert_eq!(m.proxy_authenticate().count(), 0);
        // A scheme with no parameters is allowed by neither rule.
        let bad = m.authorization().next().unwrap();
        assert_eq!(bad.unwrap_err().kind, ErrorKind::Header(HeaderName::Authorization));
    }

    #[test]
    fn diversion_history_info_path_reason_privacy() {
        let m = with(
            "Diversion: <sip:bob@example.com>;reason=user-busy;counter=1,\r\n <sip:carol@example.com>;reason=no-answer\r\n\
             History-Info: <sip:bob@example.com>;index=1, <sip:bob@192.0.2.4?Reason=SIP%3Bcause%3D302>;index=1.1;rc=1\r\n\
             Path: <sip:edge.example.com;lr>\r\nPath: <sip:core.example.com;lr>\r\n\
             Reason: Q.850;cause=16;text=\"Terminated\"\r\n\
             Privacy: id;header\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\n",
        );
        let d: Vec<_> = m.diversions().map(Result::unwrap).collect();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].param("reason"), Some(Some("user-busy")));
        assert_eq!(d[1].uri.user(), Some("carol"));
        let hi: Vec<_> = m.history_info().map(Result::unwrap).collect();
        assert_eq!(hi[1].param("index"), Some(Some("1.1")));
        assert_eq!(hi[1].uri.headers(), b"?Reason=SIP%3Bcause%3D302");
        let p: Vec<_> = m.paths().map(|p| p.unwrap().uri.host()).collect();
        assert_eq!(p, ["edge.example.com", "core.example.com"]);
        let r = m.reasons().next().unwrap().unwrap();
        assert_eq!((r.protocol(), r.cause(), r.text()), ("Q.850", Some(16), Some("Terminated")));
        assert_eq!(m.privacy().unwrap(), ["id", "header"]);
        assert_eq!(m.date().unwrap().unwrap(), "Sat, 13 Nov 2010 23:29:00 GMT");
    }

    #[test]
    fn malformed_on_demand_headers_fail_alone() {
        let m = with("Diversion: sip:bob@example.com\r\nPath: <sip:a.example.com;lr> junk\r\nPrivacy: id, user\r\n");
        assert_eq!(m.diversions().next().unwrap().unwrap_err().kind, ErrorKind::Header(HeaderName::Diversion));
        assert!(m.paths().next().unwrap().is_err());
        assert_eq!(m.privacy().unwrap_err().kind, ErrorKind::Header(HeaderName::Privacy));
        assert!(m.date().is_none());
    }
}
