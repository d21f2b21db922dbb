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
    fn route_requires_brackets() {
        assert!(name_addr(b"sip:p1.example.com;lr", true).is_err());
        let (_, na) = name_addr(b"<sip:p1.example.com;lr>", true).unwrap();
        assert!(na.uri.is_loose_route());
        assert!(name_addr(b"<sip:p1.example.com;lr", true).is_err());
    }
}
