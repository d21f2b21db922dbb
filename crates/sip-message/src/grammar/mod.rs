//! The RFC 3261 §25 grammar, one function per rule, as nom parsers over
//! byte slices. Parsed values are sub-slices of the input, never copies.
//!
//! Header values reach these functions with their folds intact: the header
//! splitter guarantees that CR and LF appear only as `CRLF 1*WSP`, so every
//! whitespace skip below treats SP, HT, CR and LF alike as LWS.

pub mod auth;
pub(crate) mod chars;
pub mod extension;
pub mod name_addr;
pub mod params;
pub mod scalar;
pub mod uri;
pub mod via;

use chars::{is_ws, TOKEN};
use nom::{IResult, Parser};

/// The error type of every grammar function: where it failed. The caller
/// turns it into a typed [`crate::ParseError`] naming the header.
pub type GResult<'a, O> = IResult<&'a [u8], O, nom::error::Error<&'a [u8]>>;

#[inline]
pub(crate) fn fail<'a, O>(i: &'a [u8]) -> GResult<'a, O> {
    Err(nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Verify)))
}

/// `SWS = [LWS]`: optional linear white space (folds included).
#[inline]
pub fn sws(i: &[u8]) -> &[u8] {
    // Most separators have no white space around them: one test first.
    match i.first() {
        Some(&c) if is_ws(c) => {
            let n = i.iter().take_while(|&&c| is_ws(c)).count();
            i.get(n..).unwrap_or_default()
        }
        _ => i,
    }
}

/// Skip `SWS <c> SWS` (SEMI, COLON, EQUAL, SLASH, COMMA of §25.1).
#[inline]
pub fn sep(i: &[u8], c: u8) -> Option<&[u8]> {
    match sws(i) {
        [x, rest @ ..] if *x == c => Some(sws(rest)),
        _ => None,
    }
}

/// Take the longest prefix whose bytes are all in `class`.
#[inline]
pub(crate) fn take_class(i: &[u8], class: u16) -> (&[u8], &[u8]) {
    i.split_at(chars::run(i, 0, class))
}

/// `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )`
#[inline]
pub fn token(i: &[u8]) -> GResult<'_, &[u8]> {
    let (t, rest) = take_class(i, TOKEN);
    if t.is_empty() {
        return fail(i);
    }
    Ok((rest, t))
}

/// `quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE`
///
/// Returns the whole quoted string, quotes included. `qdtext` admits any
/// UTF-8 octet and LWS; `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`.
pub fn quoted_string(i: &[u8]) -> GResult<'_, &[u8]> {
    let start = i;
    let mut rest = match i {
        [b'"', r @ ..] => r,
        _ => return fail(i),
    };
    loop {
        match rest {
            [b'"', r @ ..] => {
                let len = start.len() - r.len();
                return Ok((r, start.get(..len).unwrap_or_default()));
            }
            [b'\\', c, r @ ..] if *c != b'\r' && *c != b'\n' && *c < 0x80 => rest = r,
            [b'\\', ..] => return fail(rest),
            // qdtext excludes the remaining controls except LWS.
            [c, r @ ..] if *c >= 0x20 || is_ws(*c) => rest = r,
            _ => return fail(rest),
        }
    }
}

/// Strip the quotes of a quoted string (escapes are left as they are).
pub fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

/// A comma-separated list element parser applied until the input ends:
/// `elem *(COMMA elem)`. Empty elements (`a,,b`) are tolerated as RFC 3261
/// §7.3.1 leaves them undefined and real stacks emit them.
pub(crate) fn for_each_element<'a, O>(
    mut i: &'a [u8],
    mut elem: impl FnMut(&'a [u8]) -> GResult<'a, O>,
    mut each: impl FnMut(O) -> Result<(), ()>,
) -> Result<usize, &'a [u8]> {
    let mut count = 0;
    loop {
        i = sws(i);
        if let [b',', r @ ..] = i {
            i = r;
            continue;
        }
        if i.is_empty() {
            return Ok(count);
        }
        let (rest, o) = elem(i).map_err(|_| i)?;
        each(o).map_err(|_| i)?;
        count += 1;
        i = sws(rest);
        match i {
            [] => return Ok(count),
            [b',', r @ ..] => i = r,
            _ => return Err(i),
        }
    }
}

/// `a.eq_ignore_ascii_case(b)` as a plain byte loop: the std version sets
/// up a chunked compare that costs more than the handful of bytes compared
/// here (parameter names, URI schemes) — about 150 instructions a call.
#[inline]
// The manual form is the point: see above.
#[allow(clippy::manual_ignore_case_cmp)]
pub(crate) fn eq_ci(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_ascii_lowercase() == y.to_ascii_lowercase())
}

/// Case-insensitive prefix match of an ASCII literal.
#[inline]
pub(crate) fn tag_ci<'a>(i: &'a [u8], lit: &[u8]) -> Option<&'a [u8]> {
    let head = i.get(..lit.len())?;
    if eq_ci(head, lit) {
        i.get(lit.len()..)
    } else {
        None
    }
}

/// `Method = INVITEm / ACKm / … / extension-method` (a token).
pub fn method(i: &[u8]) -> GResult<'_, &[u8]> {
    token.parse(i)
}

/// Position of `sub` within `base`; `sub` must be a sub-slice of `base`.
#[inline]
pub(crate) fn offset(base: &[u8], sub: &[u8]) -> usize {
    (sub.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_string_handles_escapes_and_rejects_unterminated() {
        let (rest, q) = quoted_string(br#""a \"b\" c" rest"#).unwrap();
        assert_eq!(q, br#""a \"b\" c""#);
        assert_eq!(rest, b" rest");
        assert!(quoted_string(b"\"abc").is_err());
        assert!(quoted_string(b"abc").is_err());
    }

    #[test]
    fn list_elements_split_on_commas_outside_quotes() {
        let mut seen = Vec::new();
        let n = for_each_element(b"a , b,,c", token, |t| {
            seen.push(t.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(for_each_element(b"a b", token, |_| Ok(())).is_err());
    }
}
