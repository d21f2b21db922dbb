//! Byte classes of RFC 3261 §25.1, as 256-entry tables (httparse style).

pub(crate) const TOKEN: u16 = 1 << 0;
pub(crate) const WORD: u16 = 1 << 1;
pub(crate) const UNRESERVED: u16 = 1 << 2;
/// user = 1*( unreserved / escaped / user-unreserved )
pub(crate) const USER: u16 = 1 << 3;
/// password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
pub(crate) const PASSWORD: u16 = 1 << 4;
/// paramchar = param-unreserved / unreserved / escaped
pub(crate) const PARAM: u16 = 1 << 5;
/// hnv-unreserved / unreserved (URI headers)
pub(crate) const HNV: u16 = 1 << 6;
/// alphanum / "-" / "." (hostname)
pub(crate) const DOMAIN: u16 = 1 << 7;
pub(crate) const HEX: u16 = 1 << 8;
/// uric (RFC 2396) plus "%", for opaque absolute URIs
pub(crate) const URIC: u16 = 1 << 9;
/// tel URI: characters allowed in a telephone-subscriber and its params
pub(crate) const TEL: u16 = 1 << 10;
/// token / ":" (a header parameter's token-or-host value)
pub(crate) const GEN_VALUE: u16 = 1 << 11;
/// SP / HTAB / CR / LF: LWS inside a header value (see [`is_ws`])
pub(crate) const WS: u16 = 1 << 12;
/// ALPHA / DIGIT
pub(crate) const ALNUM: u16 = 1 << 13;
/// Visible ASCII but `>`: what the fast path lets stand inside `<…>`
/// while it looks for the closing bracket.
pub(crate) const IN_BRACKETS: u16 = 1 << 14;

// `i` runs over 0..256, the array's length: no index can fail.
#[allow(clippy::indexing_slicing)]
const fn build() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let alnum = c.is_ascii_alphanumeric();
        let mark = matches!(c, b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')');
        let unreserved = alnum || mark;
        let mut f = 0u16;
        if alnum || matches!(c, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~') {
            f |= TOKEN;
        }
        if alnum
            || matches!(
                c,
                b'-' | b'.'
                    | b'!'
                    | b'%'
                    | b'*'
                    | b'_'
                    | b'+'
                    | b'`'
                    | b'\''
                    | b'~'
                    | b'('
                    | b')'
                    | b'<'
                    | b'>'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'{'
                    | b'}'
            )
        {
            f |= WORD;
        }
        if unreserved {
            f |= UNRESERVED;
        }
        if unreserved || matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            f |= USER;
        }
        if unreserved || matches!(c, b'&' | b'=' | b'+' | b'$' | b',') {
            f |= PASSWORD;
        }
        if unreserved || matches!(c, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            f |= PARAM;
        }
        if unreserved || matches!(c, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            f |= HNV;
        }
        if alnum || c == b'-' || c == b'.' {
            f |= DOMAIN;
        }
        if c.is_ascii_hexdigit() {
            f |= HEX;
        }
        if unreserved || matches!(c, b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b',' | b'%') {
            f |= URIC;
        }
        if unreserved
            || matches!(
                c,
                b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#' | b'%' | b'[' | b']' | b'/' | b':' | b'&' | b'$' | b'='
            )
        {
            f |= TEL;
        }
        if f & TOKEN != 0 || c == b':' {
            f |= GEN_VALUE;
        }
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            f |= WS;
        }
        if alnum {
            f |= ALNUM;
        }
        if c > b' ' && c < 0x7f && c != b'>' {
            f |= IN_BRACKETS;
        }
        t[i] = f;
        i += 1;
    }
    t
}

pub(crate) static TABLE: [u16; 256] = build();

#[inline(always)]
// A `u8` indexes a 256-entry table: always in bounds, and the check compiles away.
#[allow(clippy::indexing_slicing)]
pub(crate) fn is(c: u8, class: u16) -> bool {
    TABLE[c as usize] & class != 0
}

#[inline(always)]
pub(crate) fn is_ws(c: u8) -> bool {
    // Inside a header value the splitter guarantees that CR and LF only occur
    // as part of a fold (CRLF followed by SP/HT), so all four are LWS here.
    is(c, WS)
}

/// The end of the run of `class` bytes in `b` starting at `k` (`k` itself
/// when `b[k]` is not in the class, or past the end).
///
/// Eight bytes per step while eight remain: one bounds check per step and
/// one table test per byte, which is what a header value costs to check.
#[inline(always)]
pub(crate) fn run(b: &[u8], mut k: usize, class: u16) -> usize {
    while let Some(chunk) = b.get(k..k.wrapping_add(8)).and_then(|r| r.first_chunk::<8>()) {
        for (i, &c) in chunk.iter().enumerate() {
            if !is(c, class) {
                return k + i;
            }
        }
        k += 8;
    }
    while let Some(&c) = b.get(k) {
        if !is(c, class) {
            break;
        }
        k += 1;
    }
    k
}
