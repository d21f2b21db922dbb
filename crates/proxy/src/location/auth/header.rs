//! A bounded parser for digest credentials (RFC 7616 §3.4, RFC 3261 §25.1):
//!
//! ```text
//! credentials     = "Digest" LWS digest-response
//! digest-response = dig-resp *(COMMA dig-resp)
//! dig-resp        = token EQUAL ( token / quoted-string )
//! quoted-string   = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE
//! ```
//!
//! The header value is peer input: its length, the number of parameters
//! and each value's length are capped, duplicates are refused, and nothing
//! here can panic.

use std::borrow::Cow;

/// Longest Authorization value we parse at all.
pub const MAX_HEADER_LEN: usize = 4096;
/// Most auth-params in one credentials value.
pub const MAX_PARAMS: usize = 24;
/// Longest single parameter value (unescaped).
pub const MAX_VALUE_LEN: usize = 1024;

/// Why credentials could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    TooLong,
    NotDigest,
    Syntax,
    TooManyParams,
    DuplicateParam,
    MissingParam(&'static str),
}

/// The parameters of one `Digest` credentials value, unescaped. Borrowed
/// from the header where no unescaping was needed (the usual case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestParams<'a> {
    /// (name as sent, value) in order; names compare case-insensitively.
    params: Vec<(&'a [u8], Cow<'a, str>)>,
}

impl<'a> DigestParams<'a> {
    /// The parameters, (name as sent, value), in order.
    pub fn into_params(self) -> impl Iterator<Item = (&'a [u8], Cow<'a, str>)> {
        self.params.into_iter()
    }

    /// The value of `name` (lower-case ASCII), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v.as_ref())
    }
}

/// RFC 3261 §25.1 `token` characters, by byte.
#[allow(clippy::indexing_slicing)] // c < 256, the table's length
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
        c += 1;
    }
    t
};

#[allow(clippy::indexing_slicing)] // a u8 indexes a 256-entry table
fn is_token_char(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

fn skip_lws(i: &[u8]) -> &[u8] {
    let n = i.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count();
    i.get(n..).unwrap_or_default()
}

fn token(i: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = i.iter().take_while(|&&b| is_token_char(b)).count();
    if n == 0 {
        return None;
    }
    Some((i.get(..n)?, i.get(n..)?))
}

/// `quoted-string` after its opening quote; returns the unescaped text,
/// borrowed when it holds no escape or fold.
fn quoted(i: &[u8]) -> Option<(Cow<'_, [u8]>, &[u8])> {
    let plain = i.iter().position(|&b| matches!(b, b'"' | b'\\' | b'\r' | b'\n'))?;
    if i.get(plain) == Some(&b'"') {
        return Some((Cow::Borrowed(i.get(..plain)?), i.get(plain + 1..)?));
    }
    quoted_escaped(i).map(|(v, rest)| (Cow::Owned(v), rest))
}

/// `quoted`, the slow way: unescape quoted-pairs and unfold lines.
fn quoted_escaped(i: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut k = 0;
    loop {
        let b = *i.get(k)?;
        match b {
            b'"' => return Some((out, i.get(k + 1..)?)),
            b'\\' => {
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                let e = *i.get(k + 1)?;
                if e == b'\n' || e == b'\r' || e > 0x7f {
                    return None;
                }
                out.push(e);
                k += 2;
            }
            b'\r' | b'\n' => {
                // Line folding: CRLF (or a bare LF) followed by WSP is one space.
                let n = if i.get(k..k + 2) == Some(b"\r\n") { 2 } else { 1 };
                match i.get(k + n) {
                    Some(b' ' | b'\t') => {
                        out.push(b' ');
                        k += n + 1;
                    }
                    _ => return None,
                }
            }
            _ => {
                out.push(b);
                k += 1;
            }
        }
        if out.len() > MAX_VALUE_LEN {
            return None;
        }
    }
}

/// `b`, a part of `value`, as text: a slice of `text` (`value` already
/// checked as UTF-8) when there is one, else checked on its own.
fn value_str<'a>(value: &'a [u8], text: Option<&'a str>, b: &'a [u8]) -> Result<&'a str, HeaderError> {
    let sliced = text.and_then(|t| {
        // `b` lies within `value`, so its offset is a plain subtraction.
        let at = (b.as_ptr() as usize).checked_sub(value.as_ptr() as usize)?;
        t.get(at..at.checked_add(b.len())?)
    });
    match sliced {
        Some(s) => Ok(s),
        None => std::str::from_utf8(b).map_err(|_| HeaderError::Syntax),
    }
}

/// Parse a `Digest ...` credentials value.
pub fn parse_digest(value: &[u8]) -> Result<DigestParams<'_>, HeaderError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(HeaderError::TooLong);
    }
    let i = skip_lws(value);
    let (scheme, mut i) = token(i).ok_or(HeaderError::NotDigest)?;
    if !scheme.eq_ignore_ascii_case(b"digest") {
        return Err(HeaderError::NotDigest);
    }
    if !matches!(i.first(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        return Err(HeaderError::Syntax);
    }
    // One UTF-8 check of the whole value, when it passes (as it does for
    // every well-formed header), lets each borrowed value be a slice of it
    // instead of being checked on its own: a dozen calls become one.
    let text = std::str::from_utf8(value).ok();
    let mut out = DigestParams { params: Vec::with_capacity(12) };
    loop {
        i = skip_lws(i);
        let (name, rest) = token(i).ok_or(HeaderError::Syntax)?;
        i = skip_lws(rest);
        i = match i {
            [b'=', rest @ ..] => skip_lws(rest),
            _ => return Err(HeaderError::Syntax),
        };
        let (val, rest) = match i {
            [b'"', rest @ ..] => quoted(rest).ok_or(HeaderError::Syntax)?,
            _ => {
                let (t, rest) = token(i).ok_or(HeaderError::Syntax)?;
                (Cow::Borrowed(t), rest)
            }
        };
        if val.len() > MAX_VALUE_LEN {
            return Err(HeaderError::Syntax);
        }
        let val = match val {
            Cow::Borrowed(b) => Cow::Borrowed(value_str(value, text, b)?),
            Cow::Owned(v) => Cow::Owned(String::from_utf8(v).map_err(|_| HeaderError::Syntax)?),
        };
        if out.params.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(HeaderError::DuplicateParam);
        }
        if out.params.len() >= MAX_PARAMS {
            return Err(HeaderError::TooManyParams);
        }
        out.params.push((name, val));
        i = skip_lws(rest);
        match i {
            [] => return Ok(out),
            [b',', rest @ ..] => i = rest,
            _ => return Err(HeaderError::Syntax),
        }
    }
}

/// Quote a value for a challenge (`quoted-string`, escaping `"` and `\`).
pub fn quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    if v.contains(['"', '\\']) {
        for c in v.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
    } else {
        // Nothing to escape (a domain name, as a realm is): copied whole.
        s.push_str(v);
    }
    s.push('"');
    s
}
