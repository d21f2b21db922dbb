//! URIs: `SIP-URI`, `SIPS-URI` (RFC 3261 §19.1, §25.1), `tel` (RFC 3966)
//! and any other `absoluteURI` (RFC 2396), kept opaque.

use super::chars::{is, run, ALNUM, PASSWORD, TEL, URIC, USER};
use super::params::{take_escaped, uri_params, Params};
use super::{fail, tag_ci, GResult};
use crate::fast;
use std::net::{Ipv4Addr, Ipv6Addr};

const EMPTY: &[u8] = &[];

/// The URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other absolute URI (`http:`, `urn:` …), kept opaque.
    Other,
}

/// What kind of host a SIP URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Domain,
    Ipv4(Ipv4Addr),
    /// The reference `[…]`; the address inside is parsed.
    Ipv6(Ipv6Addr),
}

/// A parsed URI: a view of slices of the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    raw: &'a [u8],
    user: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
    host: &'a [u8],
    host_kind: HostKind,
    port: Option<u16>,
    params: &'a [u8],
    headers: &'a [u8],
}

impl<'a> Uri<'a> {
    /// Parse a complete URI (nothing may follow it).
    pub fn parse(text: &'a [u8]) -> Option<Uri<'a>> {
        if let Some(u) = Uri::quick(text) {
            return Some(u);
        }
        match uri(text, UriContext::Full) {
            Ok(([], u)) => Some(u),
            _ => None,
        }
    }

    /// A whole `sip:` / `sips:` URI in the common shape the parser's fast
    /// path takes (no password, escapes or headers), from the pieces its
    /// scanner finds: the `Uri` the full rule gives, for a fraction of the
    /// work. A Request-URI is read this way several times per request.
    /// `None` for any other shape.
    fn quick(text: &'a [u8]) -> Option<Uri<'a>> {
        let (sips, hp, end) = fast::sip_uri_parts(text, 0)?;
        if end != text.len() {
            return None;
        }
        let piece = |(s, e): (usize, usize)| text.get(s..e);
        let host = piece(hp.host)?;
        let user = match hp.user {
            Some(u) => Some(piece(u)?),
            None => None,
        };
        Some(Uri {
            scheme: if sips { Scheme::Sips } else { Scheme::Sip },
            raw: text,
            user,
            password: None,
            host,
            host_kind: hp.host_kind,
            port: hp.port,
            params: text.get(hp.end..)?,
            headers: EMPTY,
        })
    }

    /// The whole URI as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    pub fn as_str(&self) -> &'a str {
        std::str::from_utf8(self.raw).unwrap_or_default()
    }
    /// The user part (escapes kept), or for `tel:` the telephone-subscriber
    /// number without its parameters.
    pub fn user(&self) -> Option<&'a str> {
        self.user.and_then(|u| std::str::from_utf8(u).ok())
    }
    pub fn password(&self) -> Option<&'a str> {
        self.password.and_then(|u| std::str::from_utf8(u).ok())
    }
    /// The host as written; an IPv6 reference keeps its brackets. Empty for
    /// `tel:` and opaque URIs.
    pub fn host(&self) -> &'a str {
        std::str::from_utf8(self.host).unwrap_or_default()
    }
    pub fn host_kind(&self) -> HostKind {
        self.host_kind
    }
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// URI parameters (for `tel:`, the telephone-subscriber parameters).
    pub fn params(&self) -> Params<'a> {
        Params::uri(self.params)
    }
    /// Shorthand for a parameter's value as text.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params().get(name).map(|v| v.and_then(|v| std::str::from_utf8(v).ok()))
    }
    /// The `?h1=v1&h2=v2` part, `?` included (empty if none).
    pub fn headers(&self) -> &'a [u8] {
        self.headers
    }
    /// `transport` parameter, lower-cased comparison left to the caller.
    pub fn transport(&self) -> Option<&'a str> {
        self.param("transport").flatten()
    }
    /// `lr` parameter present (RFC 3261 §19.1.1, loose routing).
    pub fn is_loose_route(&self) -> bool {
        self.params().has("lr")
    }
    /// `sip:` or `sips:`.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }
}

/// Where a URI stands decides what may follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriContext {
    /// Request-URI or inside `<…>`: parameters and headers belong to the URI.
    Full,
    /// `addr-spec` without angle brackets in a header (RFC 3261 §20.10): a
    /// `;` starts header parameters, and `?` or `,` cannot appear.
    AddrSpec,
}

/// `Request-URI = SIP-URI / SIPS-URI / absoluteURI` (and `tel`).
pub fn uri(i: &[u8], ctx: UriContext) -> GResult<'_, Uri<'_>> {
    if let Some(r) = tag_ci(i, b"sip:") {
        return sip_uri(i, r, Scheme::Sip, ctx);
    }
    if let Some(r) = tag_ci(i, b"sips:") {
        return sip_uri(i, r, Scheme::Sips, ctx);
    }
    if let Some(r) = tag_ci(i, b"tel:") {
        return tel_uri(i, r, ctx);
    }
    absolute_uri(i, ctx)
}

fn slice_to<'a>(start: &'a [u8], rest: &'a [u8]) -> &'a [u8] {
    start.get(..start.len() - rest.len()).unwrap_or_default()
}

/// `SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]`
fn sip_uri<'a>(whole: &'a [u8], after: &'a [u8], scheme: Scheme, ctx: UriContext) -> GResult<'a, Uri<'a>> {
    // userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
    // User characters include `;`, `?` and `/`, so whether there is a
    // userinfo is only known at the `@`.
    // USER holds every PASSWORD byte, so one scan over USER / ":" / "%"
    // finds the `@`, the first `:` and whether escapes need a check.
    let (mut rest, mut user, mut password) = (after, None, None);
    let mut colon = None;
    let mut escaped = false;
    let mut at = after.len();
    for (k, &c) in after.iter().enumerate() {
        if is(c, USER) {
            continue;
        }
        match c {
            b':' => {
                if colon.is_none() {
                    colon = Some(k);
                }
            }
            b'%' => escaped = true,
            _ => {
                at = k;
                break;
            }
        }
    }
    if after.get(at) == Some(&b'@') {
        let info = after.get(..at).unwrap_or_default();
        let (u, p) = match colon {
            Some(colon) => (info.get(..colon).unwrap_or_default(), info.get(colon + 1..)),
            None => (info, None),
        };
        // The user is USER bytes and `%`s by the scan; only escapes and
        // emptiness are left to check.
        if u.is_empty() || (escaped && !matches!(take_escaped(u, USER), Ok(([], _)))) {
            return fail(after);
        }
        if let Some(p) = p {
            if !p.is_empty() {
                match take_escaped(p, PASSWORD) {
                    Ok(([], _)) => {}
                    _ => return fail(after),
                }
            }
        }
        user = Some(u);
        password = p;
        rest = after.get(at + 1..).unwrap_or_default();
    }
    let (r, (host, host_kind)) = host(rest)?;
    let (r, port) = port(r)?;
    let (r, params, headers) = match ctx {
        UriContext::Full => {
            let (r, params) = uri_params(r)?;
            let (r, headers) = uri_headers(r)?;
            (r, params, headers)
        }
        UriContext::AddrSpec => (r, EMPTY, EMPTY),
    };
    let raw = slice_to(whole, r);
    Ok((r, Uri { scheme, raw, user, password, host, host_kind, port, params, headers }))
}

/// `host = hostname / IPv4address / IPv6reference`
pub fn host(i: &[u8]) -> GResult<'_, (&[u8], HostKind)> {
    if let [b'[', ..] = i {
        let Some(close) = i.iter().position(|&c| c == b']') else {
            return fail(i);
        };
        let inner = i.get(1..close).unwrap_or_default();
        let addr = std::str::from_utf8(inner).ok().and_then(|s| s.parse::<Ipv6Addr>().ok());
        let Some(addr) = addr else {
            return fail(i);
        };
        let (h, rest) = i.split_at(close + 1);
        return Ok((rest, (h, HostKind::Ipv6(addr))));
    }
    // hostname = *( domainlabel "." ) toplabel [ "." ],
    // domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum.
    // Runs of alphanumerics are scanned with one table test per byte; the
    // label rules are checked only at each `-` run and `.`.
    let alnum_run = |k: usize| run(i, k, ALNUM);
    let mut n = 0;
    'labels: loop {
        let end = alnum_run(n);
        if end == n {
            // Empty label: the host starts with `.` or `-`, or has `..` / `.-`.
            return fail(i);
        }
        n = end;
        loop {
            match i.get(n) {
                Some(b'-') => {
                    n += i.get(n..).unwrap_or_default().iter().take_while(|&&c| c == b'-').count();
                    let end = alnum_run(n);
                    if end == n {
                        // A label may not end with `-`.
                        return fail(i);
                    }
                    n = end;
                }
                Some(b'.') => {
                    n += 1;
                    match i.get(n) {
                        Some(&c) if is(c, ALNUM) => continue 'labels,
                        Some(b'.' | b'-') => return fail(i),
                        // A trailing dot ends the host.
                        _ => break 'labels,
                    }
                }
                _ => break 'labels,
            }
        }
    }
    // Only a host starting with a digit can be all digits and dots.
    let is_numeric = i.first().is_some_and(u8::is_ascii_digit)
        && i.get(..n).unwrap_or_default().iter().all(|&c| c.is_ascii_digit() || c == b'.');
    let (h, rest) = i.split_at(n);
    if is_numeric {
        return match ipv4(h) {
            Some(a) => Ok((rest, (h, HostKind::Ipv4(a)))),
            None => fail(i),
        };
    }
    Ok((rest, (h, HostKind::Domain)))
}

/// `IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT`, each
/// at most 255 and without leading zeros (as `std` parses it), over text
/// of digits and dots. One pass over the bytes: a host's kind is looked up
/// each time a URI or Via is read, and a split iterator cost several times
/// as much.
fn ipv4(h: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut k = 0;
    for (n, o) in octets.iter_mut().enumerate() {
        if n > 0 {
            if h.get(k) != Some(&b'.') {
                return None;
            }
            k += 1;
        }
        let start = k;
        let mut v = 0u16;
        while let Some(d) = h.get(k).and_then(|c| c.checked_sub(b'0')).filter(|d| *d <= 9) {
            if k - start == 3 {
                return None;
            }
            v = v * 10 + u16::from(d);
            k += 1;
        }
        if k == start || (k - start > 1 && h.get(start) == Some(&b'0')) {
            return None;
        }
        *o = u8::try_from(v).ok()?;
    }
    (k == h.len()).then(|| Ipv4Addr::from(octets))
}

/// `[ ":" port ]`, port = 1*DIGIT (≤ 65535).
pub fn port(i: &[u8]) -> GResult<'_, Option<u16>> {
    let [b':', r @ ..] = i else {
        return Ok((i, None));
    };
    let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 5 {
        return fail(r);
    }
    let (digits, rest) = r.split_at(n);
    let v = digits.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
    match u16::try_from(v) {
        Ok(p) => Ok((rest, Some(p))),
        Err(_) => fail(r),
    }
}

/// `headers = "?" header *( "&" header )`, `header = hname "=" hvalue`,
/// `hvalue = *( hnv-unreserved / unreserved / escaped )`.
pub fn uri_headers(i: &[u8]) -> GResult<'_, &[u8]> {
    let [b'?', r @ ..] = i else {
        return Ok((i, EMPTY));
    };
    let mut r: &[u8] = r;
    loop {
        let (rr, _) = take_escaped(r, super::chars::HNV)?;
        let [b'=', rr @ ..] = rr else {
            return fail(rr);
        };
        r = match take_escaped(rr, super::chars::HNV) {
            Ok((rr, _)) => rr,
            Err(_) => rr, // empty hvalue
        };
        match r {
            [b'&', rr @ ..] => r = rr,
            _ => break,
        }
    }
    Ok((r, slice_to(i, r)))
}

/// `tel:` URI (RFC 3966): `telephone-subscriber = global-number / local-number`.
/// The number is returned as the user part, its parameters as parameters.
fn tel_uri<'a>(whole: &'a [u8], after: &'a [u8], ctx: UriContext) -> GResult<'a, Uri<'a>> {
    let n = after.iter().take_while(|&&c| is(c, TEL) && c != b';').count();
    let (number, rest) = after.split_at(n);
    let digits_ok = match number {
        [b'+', d @ ..] => d.iter().any(|c| c.is_ascii_digit()),
        d => d.iter().any(|c| c.is_ascii_hexdigit() || *c == b'*' || *c == b'#'),
    };
    if !digits_ok {
        return fail(after);
    }
    let (params, r) = match ctx {
        UriContext::Full => {
            let m = rest.iter().take_while(|&&c| is(c, TEL) || c == b';').count();
            rest.split_at(m)
        }
        UriContext::AddrSpec => (EMPTY, rest),
    };
    let raw = slice_to(whole, r);
    Ok((
        r,
        Uri {
            scheme: Scheme::Tel,
            raw,
            user: Some(number),
            password: None,
            host: EMPTY,
            host_kind: HostKind::Domain,
            port: None,
            params,
            headers: EMPTY,
        },
    ))
}

/// `absoluteURI = scheme ":" ( hier-part / opaque-part )`, kept opaque.
fn absolute_uri(i: &[u8], ctx: UriContext) -> GResult<'_, Uri<'_>> {
    let n = i.iter().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')).count();
    if n == 0 || !i.first().is_some_and(|c| c.is_ascii_alphabetic()) {
        return fail(i);
    }
    let Some([b':', body @ ..]) = i.get(n..) else {
        return fail(i);
    };
    let stop = |c: u8| match ctx {
        UriContext::Full => !(is(c, URIC) || c == b'#'),
        UriContext::AddrSpec => !(is(c, URIC) || c == b'#') || c == b';' || c == b'?' || c == b',',
    };
    let m = body.iter().take_while(|&&c| !stop(c)).count();
    if m == 0 {
        return fail(body);
    }
    let r = body.get(m..).unwrap_or_default();
    let raw = slice_to(i, r);
    Ok((
        r,
        Uri {
            scheme: Scheme::Other,
            raw,
            user: None,
            password: None,
            host: EMPTY,
            host_kind: HostKind::Domain,
            port: None,
            params: EMPTY,
            headers: EMPTY,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> Uri<'_> {
        Uri::parse(s.as_bytes()).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn sip_uri_parts() {
        let u = full("sip:alice:secret@atlanta.example.com:5061;transport=tls;lr?subject=hi&x=");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password(), Some("secret"));
        assert_eq!(u.host(), "atlanta.example.com");
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.transport(), Some("tls"));
        assert!(u.is_loose_route());
        assert_eq!(u.headers(), b"?subject=hi&x=");
    }

    #[test]
    fn user_may_hold_semicolons_and_escapes() {
        let u = full("sip:+1-212-555-1212;npdi;rn=+1-212-555-2200@gw.example.com;user=phone");
        assert_eq!(u.user(), Some("+1-212-555-1212;npdi;rn=+1-212-555-2200"));
        assert_eq!(u.param("user"), Some(Some("phone")));
        let u = full("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user(), Some("sips%3Auser%40example.com"));
        assert!(Uri::parse(b"sip:a%zz@example.net").is_none());
    }

    #[test]
    fn ipv6_and_ipv4_hosts() {
        let u = full("sips:[2001:db8::10]:5070;maddr=[2001:db8::20]");
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.host(), "[2001:db8::10]");
        assert!(matches!(u.host_kind(), HostKind::Ipv6(_)));
        assert_eq!(u.port(), Some(5070));
        let u = full("sip:192.0.2.1");
        assert!(matches!(u.host_kind(), HostKind::Ipv4(_)));
        assert!(Uri::parse(b"sip:[2001:db8::10").is_none());
        assert!(Uri::parse(b"sip:192.0.2.300").is_none());
        assert!(Uri::parse(b"sip:host:99999").is_none());
        assert!(Uri::parse(b"sip:-bad.example.com").is_none());
    }

    #[test]
    fn common_uris_take_the_quick_path() {
        for text in ["sip:alice@192.0.2.1:5060;transport=udp", "sips:example.com", "sip:[2001:db8::1]"] {
            let quick = Uri::quick(text.as_bytes());
            assert!(quick.is_some(), "{text}");
            assert_eq!(quick, uri(text.as_bytes(), UriContext::Full).ok().map(|(_, u)| u), "{text}");
        }
    }

    /// Every word of 1 to `max_len` letters over `alphabet`.
    fn for_each_word(alphabet: &[u8], max_len: u32, mut f: impl FnMut(&[u8])) {
        let mut word = Vec::new();
        for len in 1..=max_len {
            for mut k in 0..alphabet.len().pow(len) {
                word.clear();
                for _ in 0..len {
                    word.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                f(&word);
            }
        }
    }

    #[test]
    fn ipv4_matches_std() {
        for_each_word(b"0129.", 9, |word| {
            let want = std::str::from_utf8(word).unwrap().parse::<Ipv4Addr>().ok();
            assert_eq!(ipv4(word), want, "{}", String::from_utf8_lossy(word));
        });
        for text in ["192.0.2.1", "255.255.255.255", "256.1.1.1", "1.2.3.4.5", "1.2.3", "01.2.3.4", "1.2.3.1000"] {
            assert_eq!(ipv4(text.as_bytes()), text.parse().ok(), "{text}");
        }
    }

    #[test]
    fn tel_and_opaque_uris() {
        let u = full("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user(), Some("+1-201-555-0123"));
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        let u = full("urn:service:sos");
        assert_eq!(u.scheme, Scheme::Other);
        assert_eq!(u.as_str(), "urn:service:sos");
        assert!(Uri::parse(b"tel:").is_none());
        assert!(Uri::parse(b"sip:user@host with space").is_none());
    }

    /// The label rules written plainly, one byte at a time.
    fn reference_host_len(i: &[u8]) -> Option<usize> {
        let n = i.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b'.').count();
        let h = &i[..n];
        if n == 0 || h[n - 1] == b'-' {
            return None;
        }
        let labels: Vec<&[u8]> = h.strip_suffix(b".").unwrap_or(h).split(|&c| c == b'.').collect();
        let ok = labels.iter().all(|l| !l.is_empty() && l[0] != b'-' && l[l.len() - 1] != b'-');
        ok.then_some(n)
    }

    #[test]
    fn host_label_rules_match_a_plain_reading() {
        for_each_word(b"a1.-:", 6, |word| {
            let got = host(word).ok().map(|(rest, _)| word.len() - rest.len());
            let want = reference_host_len(word);
            // All-digit hosts go on to the IPv4 check, which may refuse them.
            let numeric =
                word[0].is_ascii_digit() && word.iter().take(want.unwrap_or(0)).all(|c| *c != b'a' && *c != b'-');
            if !numeric {
                assert_eq!(got, want, "{}", String::from_utf8_lossy(word));
            }
        });
    }

    #[test]
    fn addr_spec_context_stops_at_parameters() {
        let (rest, u) = uri(b"sip:bob@biloxi.example.com;tag=1234", UriContext::AddrSpec).unwrap();
        assert_eq!(u.as_str(), "sip:bob@biloxi.example.com");
        assert_eq!(rest, b";tag=1234");
    }
}
