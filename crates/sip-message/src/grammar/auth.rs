//! Credentials and challenges: Authorization, Proxy-Authorization,
//! WWW-Authenticate, Proxy-Authenticate (RFC 3261 §20.7, §20.27, §20.28,
//! §20.44, §25.1; RFC 7616 for the Digest parameters).

use super::chars::{is, TOKEN};
use super::{fail, quoted_string, sep, sws, token, unquote, GResult};

/// One credentials or challenge value: a scheme and its `name=value`
/// parameters, both slices of the header value.
///
/// `credentials = ("Digest" LWS digest-response) / other-response`,
/// `challenge = ("Digest" LWS digest-cln *(COMMA digest-cln)) / other-challenge`;
/// both shapes reduce to `auth-scheme LWS auth-param *(COMMA auth-param)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthValue<'a> {
    scheme: &'a [u8],
    params: &'a [u8],
}

impl<'a> AuthValue<'a> {
    /// The scheme as written (`Digest`; compare case-insensitively).
    pub fn scheme(&self) -> &'a str {
        std::str::from_utf8(self.scheme).unwrap_or_default()
    }
    /// Whether the scheme is Digest (case-insensitive, RFC 3261 §25.1).
    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"Digest")
    }
    /// The `name=value` pairs in order; quoted values keep their quotes.
    pub fn params(&self) -> AuthParamIter<'a> {
        AuthParamIter { rest: self.params }
    }
    /// A parameter's value (case-insensitive name), quotes removed.
    /// Backslash escapes inside a quoted value are left as written.
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        self.params().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| unquote(v))
    }
    /// A parameter's value as text, quotes removed.
    pub fn param_str(&self, name: &str) -> Option<&'a str> {
        self.param(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Iterator over the `(name, value)` pairs of a validated [`AuthValue`].
#[derive(Debug, Clone)]
pub struct AuthParamIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for AuthParamIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let mut r = sws(self.rest);
        while let [b',', t @ ..] = r {
            r = sws(t);
        }
        match auth_param(r) {
            Ok((rest, pair)) => {
                self.rest = rest;
                Some(pair)
            }
            Err(_) => {
                self.rest = &[];
                None
            }
        }
    }
}

/// `auth-param = auth-param-name EQUAL ( token / quoted-string )`.
///
/// Digest's own parameters add `LHEX` and `nc-value` values, which are
/// tokens too, and `uri = DQUOTE Request-URI DQUOTE` (quoted).
pub fn auth_param(i: &[u8]) -> GResult<'_, (&[u8], &[u8])> {
    let (r, name) = token(i)?;
    let Some(r) = sep(r, b'=') else { return fail(r) };
    let (r, value) = match r {
        [b'"', ..] => quoted_string(r)?,
        _ => {
            // token, plus `/` and `=` seen in real base64 `opaque`/`nonce`
            // values sent unquoted by some stacks.
            let n = r.iter().take_while(|&&c| is(c, TOKEN) || c == b'/' || c == b'=').count();
            if n == 0 {
                return fail(r);
            }
            let (v, rest) = r.split_at(n);
            (rest, v)
        }
    };
    Ok((r, (name, value)))
}

/// `auth-scheme LWS auth-param *(COMMA auth-param)`: one whole header value.
pub fn auth_value(i: &[u8]) -> GResult<'_, AuthValue<'_>> {
    let (r, scheme) = token(i)?;
    let params = sws(r);
    if params.len() == r.len() || params.is_empty() {
        // LWS and at least one auth-param must follow the scheme.
        return fail(r);
    }
    // Validate the whole list now so the iterator never meets garbage.
    let mut rest = params;
    let mut first = true;
    loop {
        rest = sws(rest);
        if rest.is_empty() {
            break;
        }
        if !first {
            let [b',', t @ ..] = rest else { return fail(rest) };
            rest = sws(t);
        }
        let (r, _) = auth_param(rest)?;
        rest = r;
        first = false;
    }
    Ok((rest, AuthValue { scheme, params }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_credentials_expose_their_parameters() {
        let (rest, a) = auth_value(
            b"Digest username=\"bob\", realm=\"biloxi.com\",\r\n nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
              uri=\"sip:bob@biloxi.com\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
              response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert!(rest.is_empty());
        assert!(a.is_digest());
        assert_eq!(a.param_str("USERNAME"), Some("bob"));
        assert_eq!(a.param_str("uri"), Some("sip:bob@biloxi.com"));
        assert_eq!(a.param_str("nc"), Some("00000001"));
        assert_eq!(a.param_str("qop"), Some("auth"));
        assert_eq!(a.params().count(), 9);
        assert_eq!(a.param("stale"), None);
    }

    #[test]
    fn malformed_credentials_fail() {
        assert!(auth_value(b"Digest username=").is_err());
        assert!(auth_value(b"Digest username=\"bob").is_err());
        assert!(auth_value(b"Digest a=b c=d").is_err());
        assert!(auth_value(b"Digestusername=\"x\"").is_err());
    }
}
