//! Parameters: URI parameters (`;name=value`, no white space, escapes) and
//! header parameters (`SEMI generic-param`, with LWS, quoted values).

use super::chars::{is, is_ws, GEN_VALUE, HEX, PARAM, TOKEN, WS};
use super::{eq_ci, fail, quoted_string, sep, take_class, GResult};

/// Take 1*(class / escaped). `escaped = "%" HEXDIG HEXDIG`.
pub(crate) fn take_escaped(i: &[u8], class: u16) -> GResult<'_, &[u8]> {
    let mut n = 0;
    loop {
        match i.get(n..) {
            Some([b'%', a, b, ..]) if is(*a, HEX) && is(*b, HEX) => n += 3,
            Some([b'%', ..]) => return fail(i.get(n..).unwrap_or_default()),
            Some([c, ..]) if is(*c, class) => n += 1,
            _ => break,
        }
    }
    if n == 0 {
        return fail(i);
    }
    let (t, rest) = i.split_at(n);
    Ok((rest, t))
}

/// `uri-parameters = *( ";" uri-parameter )`,
/// `uri-parameter = pname [ "=" pvalue ]`, `pname = 1*paramchar`,
/// `pvalue = 1*paramchar`. Returns the whole run, leading `;` included.
pub fn uri_params(i: &[u8]) -> GResult<'_, &[u8]> {
    let mut rest = i;
    while let [b';', r @ ..] = rest {
        let (r, _name) = take_escaped(r, PARAM)?;
        rest = match r {
            [b'=', v @ ..] => take_escaped(v, PARAM)?.0,
            _ => r,
        };
    }
    let len = i.len() - rest.len();
    Ok((rest, i.get(..len).unwrap_or_default()))
}

/// `*( SEMI generic-param )` with `generic-param = token [ EQUAL gen-value ]`,
/// `gen-value = token / host / quoted-string`. Returns the whole run.
///
/// A host value covers IPv6 references (`received=[::1]`), which contain `:`
/// and brackets that a token does not allow.
pub fn header_params(i: &[u8]) -> GResult<'_, &[u8]> {
    header_params_finding(i, b"").map(|(r, (raw, _))| (r, raw))
}

/// [`header_params`] that also returns the value of the parameter named
/// `want` (case-insensitive), if present with a value, from the same pass:
/// the hot `branch` and `tag` cost no second scan.
pub fn header_params_finding<'a>(i: &'a [u8], want: &[u8]) -> GResult<'a, (&'a [u8], Option<&'a [u8]>)> {
    // Offsets into `i`, one forward pass; `end` is where the last complete
    // parameter ends (trailing LWS is not part of the run).
    let run = |mut k: usize, class: u16| {
        while let Some(&c) = i.get(k) {
            if !is(c, class) {
                break;
            }
            k += 1;
        }
        k
    };
    // LWS is rare inside parameters: test one byte before looping.
    let ws = |k: usize| match i.get(k) {
        Some(&c) if is_ws(c) => run(k, WS),
        _ => k,
    };
    let mut end = 0;
    let mut found = None;
    loop {
        let semi = ws(end);
        if i.get(semi) != Some(&b';') {
            break;
        }
        let name_start = ws(semi + 1);
        let name_end = run(name_start, TOKEN);
        if name_end == name_start {
            return fail(i.get(name_start..).unwrap_or_default());
        }
        end = name_end;
        let eq = ws(name_end);
        if i.get(eq) == Some(&b'=') {
            let v_start = ws(eq + 1);
            let v_end = match i.get(v_start) {
                Some(b'"' | b'[') => {
                    let v = i.get(v_start..).unwrap_or_default();
                    let (r, _) = gen_value(v)?;
                    v_start + v.len() - r.len()
                }
                _ => {
                    let e = run(v_start, GEN_VALUE);
                    if e == v_start {
                        return fail(i.get(v_start..).unwrap_or_default());
                    }
                    e
                }
            };
            if found.is_none() && !want.is_empty() {
                let name = i.get(name_start..name_end).unwrap_or_default();
                if eq_ci(name, want) {
                    found = i.get(v_start..v_end);
                }
            }
            end = v_end;
        }
    }
    let (run, rest) = i.split_at(end.min(i.len()));
    Ok((rest, (run, found)))
}

fn take_nonempty(i: &[u8], class: u16) -> GResult<'_, &[u8]> {
    let (t, rest) = take_class(i, class);
    if t.is_empty() {
        return fail(i);
    }
    Ok((rest, t))
}

/// `gen-value = token / host / quoted-string`
pub fn gen_value(i: &[u8]) -> GResult<'_, &[u8]> {
    match i {
        [b'"', ..] => quoted_string(i),
        [b'[', ..] => {
            let Some(n) = i.iter().position(|&c| c == b']') else {
                return fail(i);
            };
            let (v, rest) = i.split_at(n + 1);
            let inner = v.get(1..n).unwrap_or_default();
            if inner.is_empty() || !inner.iter().all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.') {
                return fail(i);
            }
            Ok((rest, v))
        }
        // token / host; `:` admits the unbracketed IPv6 addresses that
        // `received` (RFC 3261 §20.42) and RFC 5118 §4.5 allow.
        _ => {
            let n = i.iter().take_while(|&&c| is(c, GEN_VALUE)).count();
            if n == 0 {
                return fail(i);
            }
            let (v, rest) = i.split_at(n);
            Ok((rest, v))
        }
    }
}

/// Iterate `;name[=value]` pairs of a validated parameter run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Params<'a> {
    raw: &'a [u8],
    is_header: bool,
}

impl<'a> Params<'a> {
    /// Parameters of a URI (as returned by [`uri_params`]).
    pub fn uri(raw: &'a [u8]) -> Self {
        Params { raw, is_header: false }
    }
    /// Parameters of a header value (as returned by [`header_params`]).
    pub fn header(raw: &'a [u8]) -> Self {
        Params { raw, is_header: true }
    }
    /// The raw text, leading `;` included (empty when there are none).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Look a parameter up by name (case-insensitive). `Some(None)` means the
    /// parameter is present without a value (`;lr`).
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter().find(|(n, _)| eq_ci(n, name.as_bytes())).map(|(_, v)| v)
    }
    /// Whether a parameter is present, with or without a value.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { rest: self.raw, is_header: self.is_header }
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

/// Iterator over `(name, value)` pairs.
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    rest: &'a [u8],
    is_header: bool,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.is_header {
            let r = sep(self.rest, b';')?;
            let (r, name) = match take_nonempty(r, TOKEN) {
                Ok(x) => x,
                Err(_) => {
                    self.rest = &[];
                    return None;
                }
            };
            if let Some(v) = sep(r, b'=') {
                if let Ok((r, val)) = gen_value(v) {
                    self.rest = r;
                    return Some((name, Some(val)));
                }
                self.rest = &[];
                return None;
            }
            self.rest = r;
            Some((name, None))
        } else {
            let r = match self.rest {
                [b';', r @ ..] => r,
                _ => return None,
            };
            let end = r.iter().position(|&c| c == b';').unwrap_or(r.len());
            let (item, rest) = r.split_at(end);
            self.rest = rest;
            Some(match item.iter().position(|&c| c == b'=') {
                Some(eq) => (item.get(..eq).unwrap_or_default(), item.get(eq + 1..)),
                None => (item, None),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_params_are_iterated_with_and_without_values() {
        let (rest, p) = uri_params(b";transport=tcp;lr;maddr=[::1]>x").unwrap();
        assert_eq!(rest, b">x");
        let p = Params::uri(p);
        assert_eq!(p.get("TRANSPORT"), Some(Some(&b"tcp"[..])));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("maddr"), Some(Some(&b"[::1]"[..])));
        assert_eq!(p.get("ttl"), None);
        assert!(uri_params(b";a=%zz").is_err());
    }

    #[test]
    fn header_params_allow_lws_and_quoted_values() {
        let (rest, p) = header_params(b" ; tag = abc ;q=0.5; x=\"a;b\" , next").unwrap();
        assert_eq!(rest, b" , next");
        let p = Params::header(p);
        assert_eq!(p.get("tag"), Some(Some(&b"abc"[..])));
        assert_eq!(p.get("q"), Some(Some(&b"0.5"[..])));
        assert_eq!(p.get("x"), Some(Some(&b"\"a;b\""[..])));
        assert_eq!(p.iter().count(), 3);
    }
}
