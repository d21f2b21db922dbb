//! Headers parsed on demand that a proxy consults only now and then:
//! Privacy (RFC 3323), Reason (RFC 3326) and the RFC 1123 Date (RFC 3261
//! §20.17). Diversion, History-Info and Path reuse [`super::name_addr`].

use super::params::{header_params, Params};
use super::{fail, token, GResult};

/// `Privacy-hdr = "Privacy" HCOLON priv-value *(";" priv-value)`,
/// `priv-value = "header" / "session" / "user" / "none" / "critical" / "id"
/// / token`. Returns the values in order.
pub fn privacy_values(i: &[u8]) -> Result<Vec<&[u8]>, &[u8]> {
    let mut out = Vec::new();
    let mut rest = i;
    loop {
        let r = super::sws(rest);
        let (r, v) = token(r).map_err(|_| r)?;
        out.push(v);
        let r = super::sws(r);
        match r {
            [] => return Ok(out),
            [b';', t @ ..] => rest = t,
            _ => return Err(r),
        }
    }
}

/// One `reason-value = protocol *(SEMI reason-params)`,
/// `protocol = "SIP" / "Q.850" / token`,
/// `reason-params = protocol-cause / reason-text / reason-extension`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonValue<'a> {
    protocol: &'a [u8],
    params: &'a [u8],
}

impl<'a> ReasonValue<'a> {
    /// `SIP`, `Q.850` or an extension protocol, as written.
    pub fn protocol(&self) -> &'a str {
        std::str::from_utf8(self.protocol).unwrap_or_default()
    }
    pub fn params(&self) -> Params<'a> {
        Params::header(self.params)
    }
    /// `protocol-cause = "cause" EQUAL cause`, `cause = 1*DIGIT`.
    pub fn cause(&self) -> Option<u16> {
        self.params().get("cause").flatten().and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
    }
    /// `reason-text = "text" EQUAL quoted-string`, quotes removed.
    pub fn text(&self) -> Option<&'a str> {
        self.params().get("text").flatten().map(super::unquote).and_then(|t| std::str::from_utf8(t).ok())
    }
}

/// `reason-value` (one element of the Reason list).
pub fn reason_value(i: &[u8]) -> GResult<'_, ReasonValue<'_>> {
    let (r, protocol) = token(i)?;
    let (r, params) = header_params(r)?;
    Ok((r, ReasonValue { protocol, params }))
}

/// `rfc1123-date = wkday "," SP date1 SP time SP "GMT"`,
/// `date1 = 2DIGIT SP month SP 4DIGIT`, `time = 2DIGIT ":" 2DIGIT ":" 2DIGIT`
/// (RFC 3261 §25.1: SIP-date is always GMT).
pub fn rfc1123_date(i: &[u8]) -> GResult<'_, &[u8]> {
    const WKDAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let d = |c: &u8| c.is_ascii_digit();
    match i {
        [w0, w1, w2, b',', b' ', d0, d1, b' ', m0, m1, m2, b' ', y0, y1, y2, y3, b' ', h0, h1, b':', n0, n1, b':', s0, s1, b' ', b'G', b'M', b'T', rest @ ..]
            if WKDAYS.contains(&&[*w0, *w1, *w2][..])
                && MONTHS.contains(&&[*m0, *m1, *m2][..])
                && [d0, d1, y0, y1, y2, y3, h0, h1, n0, n1, s0, s1].into_iter().all(d) =>
        {
            let len = i.len() - rest.len();
            Ok((rest, i.get(..len).unwrap_or_default()))
        }
        _ => fail(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_is_semicolon_separated() {
        assert_eq!(privacy_values(b"id; header ;user").unwrap(), vec![&b"id"[..], b"header", b"user"]);
        assert!(privacy_values(b"id, header").is_err());
        assert!(privacy_values(b"").is_err());
    }

    #[test]
    fn reason_cause_and_text() {
        let (rest, r) = reason_value(b"Q.850 ;cause=16 ;text=\"Terminated\", SIP;cause=200").unwrap();
        assert_eq!(r.protocol(), "Q.850");
        assert_eq!(r.cause(), Some(16));
        assert_eq!(r.text(), Some("Terminated"));
        assert_eq!(rest, b", SIP;cause=200");
    }

    #[test]
    fn dates_must_be_gmt() {
        assert!(rfc1123_date(b"Sat, 13 Nov 2010 23:29:00 GMT").is_ok());
        assert!(rfc1123_date(b"Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(rfc1123_date(b"Fri, 1 Jan 2010 16:00:00 GMT").is_err());
    }
}
