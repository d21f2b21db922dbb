//! Single-value headers: Call-ID, CSeq, Max-Forwards, Content-Length,
//! Expires, Content-Type, and option-tag lists.

use super::chars::{is, TOKEN, WORD};
use super::params::header_params;
use super::{fail, sep, sws, token, GResult};

/// `callid = word [ "@" word ]`
pub fn call_id(i: &[u8]) -> GResult<'_, &[u8]> {
    let n = i.iter().take_while(|&&c| is(c, WORD)).count();
    if n == 0 {
        return fail(i);
    }
    let mut len = n;
    if let Some([b'@', rest @ ..]) = i.get(n..) {
        let m = rest.iter().take_while(|&&c| is(c, WORD)).count();
        if m == 0 {
            return fail(rest);
        }
        len = n + 1 + m;
    }
    let (v, rest) = i.split_at(len);
    Ok((rest, v))
}

/// `1*DIGIT` as a number no larger than `max`.
pub fn bounded_number(i: &[u8], max: u64) -> GResult<'_, u64> {
    let n = i.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return fail(i);
    }
    let (digits, rest) = i.split_at(n);
    let mut v: u64 = 0;
    for &d in digits {
        v = match v.checked_mul(10).and_then(|v| v.checked_add(u64::from(d - b'0'))) {
            Some(v) if v <= max => v,
            _ => return fail(i),
        };
    }
    Ok((rest, v))
}

/// `CSeq = "CSeq" HCOLON 1*DIGIT LWS Method`; the number is below 2**31
/// (RFC 3261 §8.1.1.5).
pub fn cseq(i: &[u8]) -> GResult<'_, (u32, &[u8])> {
    let (r, n) = bounded_number(i, (1 << 31) - 1)?;
    let after = sws(r);
    if after.len() == r.len() {
        return fail(r);
    }
    let (r, m) = token(after)?;
    Ok((r, (n as u32, m)))
}

/// `media-type = m-type SLASH m-subtype *(SEMI m-parameter)`.
/// Returns `(type/subtype run, whole value)`.
pub fn media_type(i: &[u8]) -> GResult<'_, &[u8]> {
    let (r, _) = token(i)?;
    let Some(r) = sep(r, b'/') else { return fail(r) };
    let (r, _) = token(r)?;
    let (r, _) = header_params(r)?;
    let len = i.len() - r.len();
    Ok((r, i.get(..len).unwrap_or_default()))
}

/// `option-tag = token` (one element of Require, Supported …).
pub fn option_tag(i: &[u8]) -> GResult<'_, &[u8]> {
    let n = i.iter().take_while(|&&c| is(c, TOKEN)).count();
    if n == 0 {
        return fail(i);
    }
    let (v, rest) = i.split_at(n);
    Ok((rest, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids() {
        assert_eq!(call_id(b"a84b4c76e66710@pc33.atlanta.com").unwrap().1, b"a84b4c76e66710@pc33.atlanta.com");
        assert!(call_id(b"abc@").is_err());
        assert!(call_id(b"").is_err());
    }

    #[test]
    fn cseq_bounds() {
        let (_, (n, m)) = cseq(b"314159 INVITE").unwrap();
        assert_eq!((n, m), (314159, &b"INVITE"[..]));
        assert!(cseq(b"2147483648 INVITE").is_err());
        assert!(cseq(b"1INVITE").is_err());
        assert!(cseq(b"99999999999999999999999 INVITE").is_err());
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type(b"application/sdp ; charset=utf-8 x").unwrap().1, b"application/sdp ; charset=utf-8");
        assert!(media_type(b"application").is_err());
    }
}
