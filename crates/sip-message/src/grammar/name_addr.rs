//! `name-addr` / `addr-spec` with header parameters: the value shape of
//! From, To, Contact, Route, Record-Route, Path, Diversion, History-Info…

use super::chars::{is, TOKEN};
use super::params::{header_params_finding, Params};
use super::uri::{uri, Uri, UriContext};
use super::{fail, quoted_string, sws, GResult};

/// `(name-addr / addr-spec) *(SEMI generic-param)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    display: Option<&'a [u8]>,
    pub uri: Uri<'a>,
    params: &'a [u8],
    tag: Option<&'a [u8]>,
    /// Whether the URI was in angle brackets.
    pub is_bracketed: bool,
    raw: &'a [u8],
}

impl<'a> NameAddr<'a> {
    /// The display name as written (quotes kept for a quoted-string).
    pub fn display_name(&self) -> Option<&'a str> {
        self.display.and_then(|d| std::str::from_utf8(d).ok())
    }
    /// Header parameters (after the URI).
    pub fn params(&self) -> Params<'a> {
        Params::header(self.params)
    }
    /// A header parameter's value as text.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params().get(name).map(|v| v.and_then(|v| std::str::from_utf8(v).ok()))
    }
    /// `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&'a str> {
        self.tag.and_then(|t| std::str::from_utf8(t).ok())
    }
    /// Contact `q` parameter (RFC 3261 §20.10: `qvalue = ( "0" [ "." 0*3DIGIT ] )
    /// / ( "1" [ "." 0*3("0") ] )`) in thousandths, 0–1000. `None` when
    /// absent or malformed.
    pub fn q(&self) -> Option<u16> {
        let v = self.params().get("q").flatten()?;
        let (int, frac) = match v.iter().position(|&c| c == b'.') {
            Some(dot) => (v.get(..dot)?, v.get(dot + 1..)?),
            None => (v, &b""[..]),
        };
        if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut thousandths = 0u16;
        for i in 0..3 {
            thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
        }
        match int {
            b"0" => Some(thousandths),
            b"1" if thousandths == 0 => Some(1000),
            _ => None,
        }
    }
    /// Contact `expires` parameter in seconds (RFC 3261 §20.10), clamped to
    /// 2³²−1 like the Expires header.
    pub fn expires(&self) -> Option<u32> {
        let v = self.params().get("expires").flatten()?;
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(v.iter().try_fold(0u32, |a, &d| a.checked_mul(10)?.checked_add(u32::from(d - b'0'))).unwrap_or(u32::MAX))
    }
    /// The tag as written (a slice of the parsed text).
    pub(crate) fn tag_bytes(&self) -> Option<&'a [u8]> {
        self.tag
    }
    /// The whole element as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    pub fn as_str(&self) -> &'a str {
        std::str::from_utf8(self.raw).unwrap_or_default()
    }
}

/// `display-name = *(token LWS) / quoted-string`, then `LAQUOT`.
/// Returns the display name (trimmed) and the input after `<`.
fn display_then_laquot(i: &[u8]) -> GResult<'_, Option<&[u8]>> {
    if let [b'"', ..] = i {
        let (r, q) = quoted_string(i)?;
        return match sws(r) {
            [b'<', r @ ..] => Ok((r, Some(q))),
            _ => fail(r),
        };
    }
    if let [b'<', r @ ..] = i {
        return Ok((r, None));
    }
    // *(token LWS) "<": tokens separated by white space.
    let mut r = i;
    let mut end = 0;
    loop {
        let n = r.iter().take_while(|&&c| is(c, TOKEN)).count();
        if n == 0 {
            break;
        }
        end = i.len() - r.len() + n;
        r = sws(r.get(n..).unwrap_or_default());
    }
    match r {
        [b'<', rest @ ..] if end > 0 => Ok((rest, i.get(..end))),
        _ => fail(i),
    }
}

/// `name-addr = [ display-name ] LAQUOT addr-spec RAQUOT` or a bare
/// `addr-spec`, followed by header parameters. `require_brackets` is set for
/// Route / Record-Route / Path (`rec-route = name-addr *( SEMI rr-param )`).
pub fn name_addr(i: &[u8], require_brackets: bool) -> GResult<'_, NameAddr<'_>> {
    let start = i;
    let (r, display, u, is_bracketed) = match display_then_laquot(i) {
        Ok((r, display)) => {
            let (r, u) = uri(r, UriContext::Full)?;
            let [b'>', r @ ..] = r else {
                return fail(r);
            };
            (r, display, u, true)
        }
        Err(_) if !require_brackets => {
            let (r, u) = uri(i, UriContext::AddrSpec)?;
            (r, None, u, false)
        }
        Err(e) => return Err(e),
    };
    let (r, (params, tag)) = header_params_finding(r, b"tag")?;
    let raw = start.get(..start.len() - r.len()).unwrap_or_default();
    Ok((r, NameAddr { display, uri: u, params, tag, is_bracketed, raw }))
}

/// Locate and count the elements of a `name-addr` list (Route,
/// Record-Route, Contact) without running the URI grammar: one pass that
/// checks quotes are closed, every `<` has its `>`, each URI starts with a
/// scheme (`ALPHA *(alphanum / "+" / "-" / ".") ":"`) and, with
/// `require_brackets`, that every element is bracketed. The full grammar
/// (userinfo, host, parameters) runs on access ([`name_addr`]).
///
/// Returns the element count, or the offset in `v` where the check failed.
pub(crate) fn locate_name_addrs(v: &[u8], require_brackets: bool) -> Result<usize, usize> {
    each_name_addr(v, require_brackets, |_, _| {})
}

/// [`locate_name_addrs`] that also hands each element's `(start, end)` in
/// `v` to `each` (white space around it excluded), in order.
pub(crate) fn each_name_addr(
    v: &[u8],
    require_brackets: bool,
    mut each: impl FnMut(usize, usize),
) -> Result<usize, usize> {
    let mut i = 0;
    let mut count = 0;
    loop {
        // Separators: LWS and commas (empty elements are tolerated, as in
        // `for_each_element`).
        while let Some(&c) = v.get(i) {
            if !(c == b',' || super::chars::is_ws(c)) {
                break;
            }
            i += 1;
        }
        let start = i;
        if start >= v.len() {
            return Ok(count);
        }
        // Display name, then `<URI>`; or a bare addr-spec up to a comma.
        let mut bracketed = false;
        let mut quoted = false;
        while let Some(&c) = v.get(i) {
            match c {
                b'"' => {
                    i = skip_quoted(v, i)?;
                    quoted = true;
                }
                b'<' => {
                    i = scheme_end(v, i + 1)?;
                    let close = v.get(i..).and_then(|r| memchr::memchr(b'>', r)).ok_or(i)?;
                    i += close + 1;
                    bracketed = true;
                    break;
                }
                b',' => break,
                b'>' => return Err(i),
                _ => i += 1,
            }
        }
        if !bracketed {
            if require_brackets || quoted {
                return Err(start);
            }
            scheme_end(v, start)?;
        }
        // Header parameters up to the next comma outside quotes.
        while let Some(&c) = v.get(i) {
            match c {
                b'"' => i = skip_quoted(v, i)?,
                b',' => break,
                b'<' | b'>' => return Err(i),
                _ => i += 1,
            }
        }
        let trailing =
            v.get(start..i).unwrap_or_default().iter().rev().take_while(|&&c| super::chars::is_ws(c)).count();
        each(start, i - trailing);
        count += 1;
    }
}

/// `i` is at a `"`: the index just past the closing quote (escapes skipped).
fn skip_quoted(v: &[u8], i: usize) -> Result<usize, usize> {
    let mut j = i + 1;
    loop {
        match v.get(j) {
            Some(b'"') => return Ok(j + 1),
            Some(b'\\') => j += 2,
            Some(_) => j += 1,
            None => return Err(i),
        }
    }
}

/// `scheme ":"` starting at `i`: the index just past the colon.
fn scheme_end(v: &[u8], i: usize) -> Result<usize, usize> {
    if !v.get(i).is_some_and(u8::is_ascii_alphabetic) {
        return Err(i);
    }
    let mut j = i + 1;
    while let Some(&c) = v.get(j) {
        if !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) {
            break;
        }
        j += 1;
    }
    match v.get(j) {
        Some(b':') => Ok(j + 1),
        _ => Err(i),
    }
}

/// Contact value element or the wildcard: `Contact = ("*" / (contact-param *(COMMA contact-param)))`.
pub fn is_star(value: &[u8]) -> bool {
    value == b"*"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_name_addr() {
        let (r, na) = name_addr(b"\"Bob \\\"B\\\"\" <sip:bob@biloxi.com>;tag=a6c85cf", false).unwrap();
        assert!(r.is_empty());
        assert_eq!(na.display_name(), Some("\"Bob \\\"B\\\"\""));
        assert_eq!(na.uri.host(), "biloxi.com");
        assert_eq!(na.tag(), Some("a6c85cf"));

        let (_, na) = name_addr(b"Bob  Smith <sip:bob@biloxi.com;transport=tcp>;expires=60", false).unwrap();
        assert_eq!(na.display_name(), Some("Bob  Smith"));
        assert_eq!(na.uri.transport(), Some("tcp"));
        assert_eq!(na.param("expires"), Some(Some("60")));

        let (r, na) = name_addr(b"sip:carol@chicago.com;tag=xyz, next", false).unwrap();
        assert_eq!(na.uri.as_str(), "sip:carol@chicago.com");
        assert_eq!(na.tag(), Some("xyz"));
        assert!(!na.is_bracketed);
        assert_eq!(r, b", next");
    }

    #[test]
    fn contact_q_and_expires() {
        let q = |s: &str| name_addr(s.as_bytes(), false).unwrap().1.q();
        assert_eq!(q("<sip:a@b>;q=0.7"), Some(700));
        assert_eq!(q("<sip:a@b>;q=1"), Some(1000));
        assert_eq!(q("<sip:a@b>;q=0.125"), Some(125));
        assert_eq!(q("<sip:a@b>;q=0"), Some(0));
        assert_eq!(q("<sip:a@b>;q=1.5"), None);
        assert_eq!(q("<sip:a@b>;q=0.1234"), None);
        assert_eq!(q("<sip:a@b>"), None);
        let e = |s: &str| name_addr(s.as_bytes(), false).unwrap().1.expires();
        assert_eq!(e("<sip:a@b>;expires=3600"), Some(3600));
        assert_eq!(e("<sip:a@b>;expires=280297596632815"), Some(u32::MAX));
        assert_eq!(e("<sip:a@b>;expires=soon"), None);
    }

    #[test]
    fn locating_name_addrs_counts_and_checks_structure() {
        let n = |s: &str, b| locate_name_addrs(s.as_bytes(), b);
        assert_eq!(n("<sip:a@b;lr>, <sip:c;lr>", true), Ok(2));
        assert_eq!(n("\"A, B\" <sip:a@b>;x=\"1,2\", sip:c@d;tag=1 ,, ", false), Ok(2));
        assert_eq!(n("Bob Smith <sips:b@c>;expires=60", false), Ok(1));
        assert_eq!(n("", true), Ok(0));
        assert!(n("sip:p1;lr", true).is_err());
        assert!(n("<sip:p1;lr", true).is_err());
        assert!(n("<:p1>", true).is_err());
        assert!(n("\"unterminated <sip:a@b>", false).is_err());
        assert!(n("\"A\" sip:a@b", false).is_err());
        assert!(n("<sip:a@b>>", false).is_err());
        assert!(n("a b c", false).is_err());
        let mut spans = Vec::new();
        let v = "<sip:a;lr> , \"B, b\" <sip:b>;x=\",\"\t,sip:c@d";
        each_name_addr(v.as_bytes(), false, |s, e| spans.push(&v[s..e])).unwrap();
        assert_eq!(spans, ["<sip:a;lr>", "\"B, b\" <sip:b>;x=\",\"", "sip:c@d"]);
    }

    #[test]
    fn route_requires_brackets() {
        assert!(name_addr(b"sip:p1.example.com;lr", true).is_err());
        let (_, na) = name_addr(b"<sip:p1.example.com;lr>", true).unwrap();
        assert!(na.uri.is_loose_route());
        assert!(name_addr(b"<sip:p1.example.com;lr", true).is_err());
    }
}
