//! The parsed message: one `Bytes` buffer plus spans into it.
//!
//! Parsing walks the header section once and records each header as
//! `(name, value)` offsets (hyper's `record_header_indices`). Each line first
//! tries the fast path (module `fast`): its name is matched with word
//! compares, and a value in the common shape is checked by a tight scanner
//! that also finds the line end. The first line it declines, and every line
//! after it, take the general path: the name is scanned with the token
//! table, the line end is found with `memchr`, and the value gets the full
//! grammar below. Both paths accept the same messages with the same spans
//! and errors (differential tests in `fast`). Then:
//!
//! - **Parsed eagerly** (full RFC 3261 grammar, errors at parse time): the
//!   start line and Request-URI, every Via (top branch kept), From and To
//!   (tags kept), Call-ID, CSeq, Max-Forwards, Content-Length, Expires,
//!   Content-Type, Require / Proxy-Require / Supported.
//! - **Located and counted eagerly, grammar-checked on access**: Route,
//!   Record-Route and Contact. Parsing checks that quotes are closed, `<` and
//!   `>` pair up, each URI has a scheme and Route / Record-Route elements are
//!   bracketed, and it counts the elements against the limits. The URI
//!   grammar (userinfo, host, parameters) runs in `routes()`,
//!   `record_routes()` and `contacts()`, which stop at a malformed element;
//!   [`Message::check_name_addrs`] reports it as the parse error it used to
//!   be. A REGISTER's Contacts stay fully eager: a registrar stores them.
//! - Everything else is parsed on demand from its span.

use crate::error::{ErrorKind, ParseError};
use crate::fast;
use crate::grammar::chars::{is, TOKEN};
use crate::grammar::name_addr::{locate_name_addrs, name_addr, NameAddr};
use crate::grammar::scalar::{bounded_number, call_id, cseq, media_type, option_tag};
use crate::grammar::uri::{uri, Uri, UriContext};
use crate::grammar::via::{checked_via, via_parm, via_parm_quick, Via};
use crate::grammar::{for_each_element, offset, sws, tag_ci, token};
use crate::header::HeaderName;
use crate::limits::{Limit, Limits};
use crate::method::Method;
use bytes::Bytes;

/// A byte range of the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline]
    fn of(base: &[u8], sub: &[u8]) -> Span {
        let start = offset(base, sub) as u32;
        Span { start, end: start + sub.len() as u32 }
    }
    #[inline]
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }
    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
}

/// One header line: its recognised name and the spans of name and value
/// (value trimmed of surrounding white space, folds kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub name_span: Span,
    pub value_span: Span,
    /// The whole line from the name to the end of the value (folds
    /// included, CRLF excluded), for span-copy editing.
    pub line_span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartLine {
    Request { method: Method, method_span: Span, uri: Span },
    Response { code: u16, reason: Span },
}

/// A parsed SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Bytes,
    start: StartLine,
    /// Where the first header line begins (just after the start line CRLF).
    headers_start: u32,
    /// Where the empty line ending the header section begins.
    headers_end: u32,
    headers: Vec<Header>,
    body: Span,
    top_via: Span,
    branch: Option<Span>,
    via_count: u16,
    from: Span,
    from_tag: Option<Span>,
    to: Span,
    to_tag: Option<Span>,
    call_id: Span,
    cseq: u32,
    cseq_method: Method,
    cseq_method_span: Span,
    max_forwards: Option<u32>,
    content_length: Option<u32>,
    expires: Option<u32>,
    content_type: Option<Span>,
    route_count: u16,
    record_route_count: u16,
    contact_count: u16,
    is_contact_star: bool,
}

fn err(kind: ErrorKind, base: &[u8], at: &[u8]) -> ParseError {
    ParseError::new(kind, offset(base, at).min(base.len()))
}

/// The line at the start of `rest` (which begins at `pos`), CR excluded,
/// and the offset of its LF.
#[inline]
fn line_of(rest: &[u8], pos: usize) -> Result<(&[u8], usize), ParseError> {
    let Some(nl) = memchr::memchr(b'\n', rest) else {
        return Err(ParseError::new(ErrorKind::Truncated, pos + rest.len()));
    };
    match rest.get(..nl) {
        Some([l @ .., b'\r']) => Ok((l, nl)),
        _ => Err(ParseError::new(ErrorKind::HeaderLine, pos + nl)),
    }
}

/// How many SP / HTAB end `v`.
#[inline]
fn trailing_ws(v: &[u8]) -> usize {
    v.iter().rev().take_while(|c| matches!(c, b' ' | b'\t')).count()
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`. Returns Ok(true) for 2.0,
/// Ok(false) for another well-formed version.
fn sip_version(v: &[u8]) -> Result<bool, ()> {
    if v == b"SIP/2.0" {
        return Ok(true);
    }
    let rest = tag_ci(v, b"SIP/").ok_or(())?;
    let dot = rest.iter().position(|&c| c == b'.').ok_or(())?;
    let (major, minor) = (rest.get(..dot).unwrap_or_default(), rest.get(dot + 1..).unwrap_or_default());
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    if !digits(major) || !digits(minor) {
        return Err(());
    }
    Ok(major == b"2" && minor == b"0")
}

impl Message {
    /// Parse one whole message received as a datagram (or framed from a
    /// stream). Per RFC 3261 §18.3, bytes beyond Content-Length are ignored
    /// and a body shorter than Content-Length is an error.
    pub fn parse(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        Parser {
            limits,
            fast: true,
            #[cfg(test)]
            taken: Default::default(),
        }
        .parse(buf)
    }

    /// Parse a message from a `&str` or `&[u8]` (copies it once). For tests
    /// and messages we build ourselves.
    pub fn parse_slice(data: impl AsRef<[u8]>) -> Result<Message, ParseError> {
        Message::parse(Bytes::copy_from_slice(data.as_ref()), &Limits::default())
    }

    // ---- getters: the buffer ----

    /// The whole message as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }
    /// The message length up to the end of the body (trailing bytes of a
    /// datagram beyond Content-Length excluded).
    pub fn len(&self) -> usize {
        self.body.end as usize
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn bytes_at(&self, s: Span) -> &[u8] {
        self.buf.get(s.range()).unwrap_or_default()
    }
    pub(crate) fn str_at(&self, s: Span) -> &str {
        std::str::from_utf8(self.bytes_at(s)).unwrap_or_default()
    }
    pub(crate) fn headers_start(&self) -> usize {
        self.headers_start as usize
    }
    pub(crate) fn headers_end(&self) -> usize {
        self.headers_end as usize
    }
    pub(crate) fn body_span(&self) -> Span {
        self.body
    }
    pub(crate) fn request_uri_span(&self) -> Option<Span> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    // ---- getters: start line ----

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    pub fn is_response(&self) -> bool {
        !self.is_request()
    }
    /// The request method (`None` for a response).
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    /// The request method's text, also for extension methods.
    pub fn method_str(&self) -> Option<&str> {
        match self.start {
            StartLine::Request { method_span, .. } => Some(self.str_at(method_span)),
            StartLine::Response { .. } => None,
        }
    }
    /// The Request-URI (`None` for a response).
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        self.request_uri_span().and_then(|s| Uri::parse(self.bytes_at(s)))
    }
    pub fn request_uri_str(&self) -> Option<&str> {
        self.request_uri_span().map(|s| self.str_at(s))
    }
    /// The status code (`None` for a request).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }
    pub fn reason(&self) -> Option<&str> {
        match self.start {
            StartLine::Response { reason, .. } => Some(self.str_at(reason)),
            StartLine::Request { .. } => None,
        }
    }

    // ---- getters: eagerly parsed headers ----

    /// The topmost Via value.
    pub fn top_via(&self) -> Via<'_> {
        // Checked at parse time, with its branch found: in the common shape
        // only the sent-by is looked at again. Several layers read the top
        // Via of each request.
        let raw = self.bytes_at(self.top_via);
        if let Some(via) = checked_via(raw, self.branch.map(|s| self.bytes_at(s))) {
            return via;
        }
        // Cannot fail after the parse; the fallback keeps the accessor total
        // without a panic path.
        via_parm(raw).map(|(_, v)| v).unwrap_or_else(|_| EMPTY_VIA.with(|v| *v))
    }
    /// The topmost Via's branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.branch.map(|s| self.str_at(s))
    }
    /// [`Self::branch`] as the bytes of the message, for a caller that only
    /// compares or hashes it (no UTF-8 check).
    pub fn branch_bytes(&self) -> Option<&[u8]> {
        self.branch.map(|s| self.bytes_at(s))
    }
    /// All Via values, top first.
    pub fn vias(&self) -> impl Iterator<Item = Via<'_>> + '_ {
        self.list(HeaderName::Via, via_parm_quick)
    }
    pub fn via_count(&self) -> usize {
        self.via_count.into()
    }
    pub fn from(&self) -> NameAddr<'_> {
        self.name_addr_at(self.from)
    }
    pub fn from_tag(&self) -> Option<&str> {
        self.from_tag.map(|s| self.str_at(s))
    }
    pub fn to(&self) -> NameAddr<'_> {
        self.name_addr_at(self.to)
    }
    pub fn to_tag(&self) -> Option<&str> {
        self.to_tag.map(|s| self.str_at(s))
    }
    fn name_addr_at(&self, s: Span) -> NameAddr<'_> {
        match name_addr(self.bytes_at(s), false) {
            Ok((_, na)) => na,
            // Unreachable: validated at parse time.
            Err(_) => EMPTY_NAME_ADDR.with(|n| *n),
        }
    }
    pub fn call_id(&self) -> &str {
        self.str_at(self.call_id)
    }
    /// CSeq number and method.
    pub fn cseq(&self) -> (u32, Method) {
        (self.cseq, self.cseq_method)
    }
    pub fn cseq_method_str(&self) -> &str {
        self.str_at(self.cseq_method_span)
    }
    pub fn max_forwards(&self) -> Option<u32> {
        self.max_forwards
    }
    pub fn content_length(&self) -> Option<u32> {
        self.content_length
    }
    /// The Expires header (delta-seconds; values over 2³²−1 are clamped).
    pub fn expires(&self) -> Option<u32> {
        self.expires
    }
    /// The Content-Type value as written (`type/subtype;params`).
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.map(|s| self.str_at(s))
    }
    /// Route values, top first.
    pub fn routes(&self) -> impl Iterator<Item = NameAddr<'_>> + '_ {
        self.list(HeaderName::Route, |i| name_addr(i, true))
    }
    pub fn route_count(&self) -> usize {
        self.route_count.into()
    }
    /// Record-Route values, top first.
    pub fn record_routes(&self) -> impl Iterator<Item = NameAddr<'_>> + '_ {
        self.list(HeaderName::RecordRoute, |i| name_addr(i, true))
    }
    pub fn record_route_count(&self) -> usize {
        self.record_route_count.into()
    }
    /// Contact values (empty for `Contact: *`, see [`Self::is_contact_star`]).
    pub fn contacts(&self) -> impl Iterator<Item = NameAddr<'_>> + '_ {
        let star = self.is_contact_star;
        self.list(HeaderName::Contact, |i| name_addr(i, false)).filter(move |_| !star)
    }
    pub fn contact_count(&self) -> usize {
        self.contact_count.into()
    }
    /// `Contact: *` (RFC 3261 §10.2.2, remove all bindings).
    pub fn is_contact_star(&self) -> bool {
        self.is_contact_star
    }
    /// Run the full grammar over every Route, Record-Route and Contact
    /// element. Parsing only locates and counts them (quotes, brackets and
    /// scheme checked); [`Self::routes`], [`Self::record_routes`] and
    /// [`Self::contacts`] parse each element when read and stop at the first
    /// malformed one. Call this to refuse such a message with the error the
    /// parser would have given (`Header(name)`, a 400).
    pub fn check_name_addrs(&self) -> Result<(), ParseError> {
        let b: &[u8] = &self.buf;
        for h in &self.headers {
            let require_brackets = match h.name {
                HeaderName::Route | HeaderName::RecordRoute => true,
                HeaderName::Contact if !self.is_contact_star => false,
                _ => continue,
            };
            let v = self.bytes_at(h.value_span);
            for_each_element(v, |i| name_addr(i, require_brackets), |_| Ok(()))
                .map_err(|at| err(ErrorKind::Header(h.name), b, at))?;
        }
        Ok(())
    }
    /// Option tags of every Require header.
    pub fn require(&self) -> impl Iterator<Item = &str> + '_ {
        self.option_tags(HeaderName::Require)
    }
    /// Option tags of every Proxy-Require header.
    pub fn proxy_require(&self) -> impl Iterator<Item = &str> + '_ {
        self.option_tags(HeaderName::ProxyRequire)
    }
    /// Option tags of every Supported header.
    pub fn supported(&self) -> impl Iterator<Item = &str> + '_ {
        self.option_tags(HeaderName::Supported)
    }
    fn option_tags(&self, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.list(name, option_tag).map(|t| std::str::from_utf8(t).unwrap_or_default())
    }

    /// The elements of every header named `name`, in order.
    fn list<'a, T: 'a>(
        &'a self,
        name: HeaderName,
        elem: impl Fn(&'a [u8]) -> crate::grammar::GResult<'a, T> + Copy + 'a,
    ) -> impl Iterator<Item = T> + 'a {
        self.header_values(name).flat_map(move |v| ListIter { rest: v, elem })
    }

    // ---- getters: all headers ----

    /// Every header line, in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }
    /// A header's name as written.
    pub fn header_name_str(&self, h: &Header) -> &str {
        self.str_at(h.name_span)
    }
    /// A header's value as written (trimmed; folds kept).
    pub fn header_value(&self, h: &Header) -> &[u8] {
        self.bytes_at(h.value_span)
    }
    /// The values of every line of a known header, in order.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.headers.iter().filter(move |h| h.name == name).map(|h| self.bytes_at(h.value_span))
    }
    /// The first value of a known header.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.header_values(name).next()
    }
    /// The values of every line of a header by name (case-insensitive; for
    /// headers not in [`HeaderName`], e.g. `X-Foo`).
    pub fn header_values_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let known = HeaderName::from_bytes(name.as_bytes());
        self.headers
            .iter()
            .filter(move |h| {
                h.name == known
                    && (known != HeaderName::Other || self.bytes_at(h.name_span).eq_ignore_ascii_case(name.as_bytes()))
            })
            .map(|h| self.bytes_at(h.value_span))
    }

    /// The body (exactly Content-Length bytes when present).
    pub fn body(&self) -> &[u8] {
        self.bytes_at(self.body)
    }
    /// The body as a shared slice of the buffer (no copy).
    pub fn body_bytes(&self) -> Bytes {
        self.buf.slice(self.body.range())
    }
}

struct ListIter<'a, F> {
    rest: &'a [u8],
    elem: F,
}

impl<'a, T, F: Fn(&'a [u8]) -> crate::grammar::GResult<'a, T>> Iterator for ListIter<'a, F> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        loop {
            let r = sws(self.rest);
            match r {
                [] => return None,
                [b',', rest @ ..] => self.rest = rest,
                _ => {
                    // An element must end at a comma or the value's end,
                    // as `for_each_element` requires at parse time; anything
                    // else (a Contact `sip:a@b?x`, checked only on access)
                    // ends the list without yielding the misparsed element.
                    return match (self.elem)(r) {
                        Ok((rest, v)) if matches!(sws(rest), [] | [b',', ..]) => {
                            self.rest = rest;
                            Some(v)
                        }
                        _ => {
                            self.rest = &[];
                            None
                        }
                    };
                }
            }
        }
    }
}

thread_local! {
    static EMPTY_VIA: Via<'static> = match via_parm(b"SIP/2.0/UDP invalid") {
        Ok((_, v)) => v,
        Err(_) => unreachable_via(),
    };
    static EMPTY_NAME_ADDR: NameAddr<'static> = match name_addr(b"<sip:invalid>", false) {
        Ok((_, v)) => v,
        Err(_) => unreachable_name_addr(),
    };
}

#[allow(clippy::panic)]
fn unreachable_via() -> Via<'static> {
    panic!("constant Via literal must parse")
}
#[allow(clippy::panic)]
fn unreachable_name_addr() -> NameAddr<'static> {
    panic!("constant name-addr literal must parse")
}

/// `Message::parse` and the general path alone on the same bytes, as
/// `Debug` text (every span and value), for the fast path's tests; and
/// how many header lines the fast path took.
#[cfg(test)]
pub(crate) fn parse_both(data: &[u8], limits: &Limits) -> (String, String, usize) {
    let buf = Bytes::copy_from_slice(data);
    let p = Parser { limits, fast: true, taken: Default::default() };
    let fast = p.parse(buf.clone());
    let general = Parser { limits, fast: false, taken: Default::default() }.parse(buf);
    (format!("{fast:?}"), format!("{general:?}"), p.taken.get())
}

/// The state of one parse.
struct Parser<'l> {
    limits: &'l Limits,
    /// Try the fast path on header lines (off only to test it against the
    /// general path).
    fast: bool,
    /// Header lines the fast path took, for its tests.
    #[cfg(test)]
    taken: std::cell::Cell<usize>,
}

/// Eager results collected while walking the headers.
#[derive(Default)]
struct Eager {
    top_via: Option<Span>,
    branch: Option<Span>,
    via_count: usize,
    from: Option<(Span, Option<Span>)>,
    to: Option<(Span, Option<Span>)>,
    call_id: Option<Span>,
    cseq: Option<(u32, Method, Span)>,
    max_forwards: Option<u32>,
    content_length: Option<u32>,
    expires: Option<u32>,
    content_type: Option<Span>,
    route_count: usize,
    record_route_count: usize,
    contact_count: usize,
    is_contact_star: bool,
    /// The message is a REGISTER request: its Contacts are grammar-checked eagerly.
    register: bool,
}

/// The value at `vs` of the header line at `pos`, when no rule checks it:
/// its end (trailing white space excluded) and the CR of the line's CRLF,
/// which must not be followed by a fold. `None` for anything unusual (no
/// CRLF, an empty value, a fold, a line over `max_line`).
#[inline(always)]
fn value_to_line_end(b: &[u8], pos: usize, vs: usize, max_line: usize) -> Option<(usize, usize)> {
    let nl = fast::find_lf(b, vs)?;
    let cr = nl.checked_sub(1)?;
    let ve = match b.get(vs..=cr)? {
        [.., last, b'\r'] if !matches!(last, b' ' | b'\t') => cr,
        [v @ .., b'\r'] => cr - trailing_ws(v),
        _ => return None,
    };
    if ve == vs || matches!(fast::at(b, nl + 1), b' ' | b'\t') || cr - pos > max_line {
        return None;
    }
    Some((ve, cr))
}

impl Parser<'_> {
    fn parse(&self, buf: Bytes) -> Result<Message, ParseError> {
        let b: &[u8] = &buf;
        if b.len() > self.limits.max_message_size || b.len() > u32::MAX as usize / 2 {
            return Err(ParseError::new(ErrorKind::LimitExceeded(Limit::MessageSize), self.limits.max_message_size));
        }
        // ---- start line ----
        let Some(eol) = memchr::memchr(b'\n', b) else {
            return Err(ParseError::new(ErrorKind::Truncated, b.len()));
        };
        let line = match b.get(..eol) {
            Some([l @ .., b'\r']) => l,
            _ => return Err(ParseError::new(ErrorKind::StartLine, eol)),
        };
        let start = self.start_line(b, line)?;
        if let StartLine::Request { uri, .. } = start {
            if uri.len() > self.limits.max_uri_len {
                return Err(ParseError::new(ErrorKind::LimitExceeded(Limit::UriLength), uri.start as usize));
            }
        }

        // ---- header lines ----
        // General path: the name is scanned with the token table, then
        // `memchr` finds the line end from the value's start; the value is
        // trimmed on the way, so folds (rare) are the only lines looked at
        // twice.
        let headers_start = eol + 1;
        // 32 covers a message that crossed ten proxies (26 lines in the bench
        // corpus) without a reallocation. (An inline index would save the
        // allocation but make every stored Message, and so every
        // transaction, some 400 bytes bigger.)
        let mut headers: Vec<Header> = Vec::with_capacity(32);
        let mut pos = headers_start;
        // Each line first tries the fast path (`fast_line`), which takes
        // the common shapes whole: split, grammar-checked and recorded in
        // `e`. The first line it declines, and every line after it, go the
        // general way: split here, eager rules after the loop. So errors
        // come out exactly as the general path alone gives them (splitting
        // errors before value errors, values in order).
        let mut e = Eager {
            register: matches!(start, StartLine::Request { method: Method::Register, .. }),
            ..Eager::default()
        };
        if self.fast {
            pos = self.fast_lines(b, pos, &mut headers, &mut e);
        }
        // The lines the fast path took are done; the rest get the full rules.
        let slow_from = headers.len();
        let headers_end;
        loop {
            let rest = b.get(pos..).unwrap_or_default();
            match rest {
                [b'\r', b'\n', ..] => {
                    headers_end = pos;
                    pos += 2;
                    break;
                }
                [b' ' | b'\t', ..] => {
                    // A fold: the line continues the previous header's value.
                    let (line, nl) = line_of(rest, pos)?;
                    let Some(last) = headers.last_mut() else {
                        return Err(ParseError::new(ErrorKind::HeaderLine, pos));
                    };
                    let end = (pos + line.len()) as u32;
                    let lead = line.iter().take_while(|c| matches!(c, b' ' | b'\t')).count();
                    if lead < line.len() {
                        if last.value_span.is_empty() {
                            // The value starts on this continuation line.
                            last.value_span.start = (pos + lead) as u32;
                        }
                        last.value_span.end = end - trailing_ws(line) as u32;
                    }
                    last.line_span.end = end;
                    if last.line_span.len() > self.limits.max_header_line {
                        return Err(ParseError::new(ErrorKind::LimitExceeded(Limit::HeaderLine), pos));
                    }
                    pos += nl + 1;
                }
                _ => {
                    if headers.len() >= self.limits.max_headers {
                        return Err(ParseError::new(ErrorKind::LimitExceeded(Limit::HeaderCount), pos));
                    }
                    let (h, next) = self.header_line(b, pos)?;
                    headers.push(h);
                    pos = next;
                }
            }
        }

        // ---- eager header values ----
        #[cfg(test)]
        self.taken.set(slow_from);
        for h in headers.get(slow_from..).unwrap_or_default() {
            self.eager(b, h, &mut e)?;
        }
        let hs = headers_end;
        let missing = |n| ParseError::new(ErrorKind::MissingHeader(n), hs);
        let top_via = e.top_via.ok_or_else(|| missing(HeaderName::Via))?;
        let (from, from_tag) = e.from.ok_or_else(|| missing(HeaderName::From))?;
        let (to, to_tag) = e.to.ok_or_else(|| missing(HeaderName::To))?;
        let call_id = e.call_id.ok_or_else(|| missing(HeaderName::CallId))?;
        let (cseq_n, cseq_method, cseq_method_span) = e.cseq.ok_or_else(|| missing(HeaderName::CSeq))?;
        if let StartLine::Request { method_span, .. } = start {
            if b.get(method_span.range()) != b.get(cseq_method_span.range()) {
                return Err(ParseError::new(ErrorKind::CSeqMethodMismatch, cseq_method_span.start as usize));
            }
        }

        // ---- body ----
        let available = b.len() - pos;
        let body_len = match e.content_length {
            Some(cl) => {
                let cl = cl as usize;
                if cl > self.limits.max_body {
                    return Err(ParseError::new(ErrorKind::LimitExceeded(Limit::BodySize), pos));
                }
                if cl > available {
                    return Err(ParseError::new(ErrorKind::BodyTruncated, b.len()));
                }
                cl
            }
            None => {
                if available > self.limits.max_body {
                    return Err(ParseError::new(ErrorKind::LimitExceeded(Limit::BodySize), pos));
                }
                available
            }
        };
        let body = Span { start: pos as u32, end: (pos + body_len) as u32 };

        Ok(Message {
            start,
            headers_start: headers_start as u32,
            headers_end: headers_end as u32,
            headers,
            body,
            top_via,
            branch: e.branch,
            via_count: e.via_count as u16,
            from,
            from_tag,
            to,
            to_tag,
            call_id,
            cseq: cseq_n,
            cseq_method,
            cseq_method_span,
            max_forwards: e.max_forwards,
            content_length: e.content_length,
            expires: e.expires,
            content_type: e.content_type,
            route_count: e.route_count as u16,
            record_route_count: e.record_route_count as u16,
            contact_count: e.contact_count as u16,
            is_contact_star: e.is_contact_star,
            buf,
        })
    }

    /// `Request-Line = Method SP Request-URI SP SIP-Version CRLF`
    /// `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF`
    fn start_line(&self, b: &[u8], line: &[u8]) -> Result<StartLine, ParseError> {
        let response = match line.strip_prefix(b"SIP/2.0 ") {
            // Nearly every response: the version as written in RFC 3261.
            Some(rest) => Some(rest),
            None if tag_ci(line, b"SIP/").is_some() => {
                // A response. Its version must be followed by SP.
                let sp = line.iter().position(|&c| c == b' ').ok_or_else(|| err(ErrorKind::StartLine, b, line))?;
                let (version, rest) = line.split_at(sp);
                match sip_version(version) {
                    Ok(true) => {}
                    Ok(false) => return Err(err(ErrorKind::Version, b, version)),
                    Err(()) => return Err(err(ErrorKind::StartLine, b, version)),
                }
                Some(rest.get(1..).unwrap_or_default())
            }
            None => None,
        };
        if let Some(rest) = response {
            // Status-Code = 3DIGIT, 100–699 (RFC 3261 §7.2, §21).
            let code = match rest {
                [a, b1, c, tail @ ..]
                    if a.is_ascii_digit()
                        && b1.is_ascii_digit()
                        && c.is_ascii_digit()
                        && matches!(tail.first(), None | Some(b' ')) =>
                {
                    u16::from(a - b'0') * 100 + u16::from(b1 - b'0') * 10 + u16::from(c - b'0')
                }
                _ => return Err(err(ErrorKind::StatusCode, b, rest)),
            };
            if !(100..=699).contains(&code) {
                return Err(err(ErrorKind::StatusCode, b, rest));
            }
            let reason = rest.get(4..).unwrap_or_default();
            let reason = if reason.is_empty() { rest.get(3..3).unwrap_or_default() } else { reason };
            return Ok(StartLine::Response { code, reason: Span::of(b, reason) });
        }
        let (r, m) = token(line).map_err(|_| err(ErrorKind::StartLine, b, line))?;
        let [b' ', r @ ..] = r else {
            return Err(err(ErrorKind::StartLine, b, r));
        };
        // The common shape is taken whole by the fast scanner (same accept
        // set, see `fast`), which also finds the SP after it: a URI it
        // takes holds no SP, so that is the first one. Anything else gets
        // the full rule, after a search for the SP.
        let uri_start = offset(b, r);
        let scanned = match self.fast.then(|| fast::request_uri(b, uri_start)).flatten() {
            Some(e) if fast::at(b, e) == b' ' && e - uri_start < r.len() => Some(e - uri_start),
            _ => None,
        };
        let uri_end = match scanned {
            Some(n) => n,
            None => r.iter().position(|&c| c == b' ').ok_or_else(|| err(ErrorKind::StartLine, b, r))?,
        };
        let (uri_text, version) = r.split_at(uri_end);
        if uri_text.len() > self.limits.max_uri_len {
            return Err(err(ErrorKind::LimitExceeded(Limit::UriLength), b, uri_text));
        }
        let common = scanned.is_some();
        if !common {
            match uri(uri_text, UriContext::Full) {
                // RFC 3261 §19.1.1 (table): headers are not allowed in a
                // Request-URI; RFC 4475 §3.1.2.11 (escruri) lets us refuse them.
                Ok(([], u)) if u.headers().is_empty() => {}
                _ => return Err(err(ErrorKind::RequestUri, b, uri_text)),
            }
        }
        let version = version.get(1..).unwrap_or_default();
        match sip_version(version) {
            Ok(true) => {}
            Ok(false) => return Err(err(ErrorKind::Version, b, version)),
            // Anything else after the URI: an extra space (a URI with LWS in
            // it) or trailing white space after the version.
            Err(()) => return Err(err(ErrorKind::RequestUri, b, version)),
        }
        Ok(StartLine::Request {
            method: Method::from_bytes(m),
            method_span: Span::of(b, m),
            uri: Span::of(b, uri_text),
        })
    }

    /// The fast path over the header lines from `pos`: every line
    /// [`Self::fast_line`] takes is pushed; returns where the first line it
    /// declines (or the empty line) starts.
    #[inline(never)]
    fn fast_lines(&self, b: &[u8], mut pos: usize, headers: &mut Vec<Header>, e: &mut Eager) -> usize {
        while headers.len() < self.limits.max_headers {
            match self.fast_line(b, pos, e) {
                Some((h, next)) => {
                    headers.push(h);
                    pos = next;
                }
                None => break,
            }
        }
        pos
    }

    /// The fast path for the header line at `pos`: the common shape of
    /// each eagerly parsed header (see [`crate::fast`]), recorded in `e`,
    /// or any other header whose line needs no rule. Returns the header and
    /// where the next line starts; `None`, with `e` untouched, when the line
    /// is not one it takes whole: a fold, white space before the colon, an
    /// unusual value, or anything that is (or may be) an error, which
    /// [`Self::header_line`] and [`Self::eager`] then handle.
    #[inline]
    fn fast_line(&self, b: &[u8], pos: usize, e: &mut Eager) -> Option<(Header, usize)> {
        use fast::{at, skip_wsp};
        let (name, ne, vs) = fast::header_name(b, pos)?;
        let max_line = self.limits.max_header_line;
        // After a value scanned to `ve`: optional white space, then CRLF not
        // followed by a fold. Returns where the CR is.
        #[inline(always)]
        fn line_end(b: &[u8], pos: usize, ve: usize, max_line: usize) -> Option<usize> {
            // CR LF and the next line's first byte, in one load (a message
            // ends in an empty line, so it is there; else the general path
            // decides).
            // (Narrowed as in `fast::word`: one compare against the length.)
            let ends = |cr: usize| match b
                .get(cr as u32 as usize..cr as u32 as usize + 3)
                .and_then(|r| r.first_chunk::<3>())
            {
                Some([b'\r', b'\n', next]) => !matches!(next, b' ' | b'\t'),
                _ => false,
            };
            let cr = if ends(ve) {
                ve
            } else {
                // Trailing white space, then the line end.
                let cr = skip_wsp(b, ve);
                if cr == ve || !ends(cr) {
                    return None;
                }
                cr
            };
            (cr - pos <= max_line).then_some(cr)
        }
        let line_end = |ve: usize| line_end(b, pos, ve, max_line);
        let sp = |s: usize, e: usize| Span { start: s as u32, end: e as u32 };
        let (ve, cr) = match name {
            HeaderName::Via => {
                let mut count = e.via_count;
                let mut top = None;
                let mut k = vs;
                let end = loop {
                    let (end, branch) = fast::via(b, k)?;
                    count += 1;
                    if count > self.limits.max_vias {
                        return None;
                    }
                    if top.is_none() && e.top_via.is_none() {
                        top = Some((sp(k, end), branch.map(|(s, e)| sp(s, e))));
                    }
                    if at(b, end) != b',' {
                        break end;
                    }
                    k = skip_wsp(b, end + 1);
                };
                let cr = line_end(end)?;
                e.via_count = count;
                if let Some((v, branch)) = top {
                    e.top_via = Some(v);
                    e.branch = branch;
                }
                (end, cr)
            }
            HeaderName::From | HeaderName::To => {
                let slot = if name == HeaderName::From { &mut e.from } else { &mut e.to };
                if slot.is_some() {
                    return None;
                }
                let (end, tag) = fast::name_addr(b, vs)?;
                let cr = line_end(end)?;
                *slot = Some((sp(vs, end), tag.map(|(s, e)| sp(s, e))));
                (end, cr)
            }
            HeaderName::CallId if e.call_id.is_none() => {
                let end = fast::call_id(b, vs)?;
                let cr = line_end(end)?;
                e.call_id = Some(sp(vs, end));
                (end, cr)
            }
            HeaderName::CSeq if e.cseq.is_none() => {
                let (end, n, ms, me) = fast::cseq(b, vs)?;
                let cr = line_end(end)?;
                e.cseq = Some((n, Method::from_bytes(b.get(ms..me).unwrap_or_default()), sp(ms, me)));
                (end, cr)
            }
            HeaderName::MaxForwards | HeaderName::ContentLength | HeaderName::Expires => {
                let slot = match name {
                    HeaderName::MaxForwards => &mut e.max_forwards,
                    HeaderName::ContentLength => &mut e.content_length,
                    _ => &mut e.expires,
                };
                if slot.is_some() {
                    return None;
                }
                let (end, n) = fast::digits(b, vs)?;
                let n = match name {
                    HeaderName::MaxForwards => u32::try_from(n).ok().filter(|n| *n <= 255)?,
                    HeaderName::ContentLength => u32::try_from(n).ok()?,
                    _ => u32::try_from(n).unwrap_or(u32::MAX),
                };
                let cr = line_end(end)?;
                *slot = Some(n);
                (end, cr)
            }
            HeaderName::ContentType if e.content_type.is_none() => {
                let end = fast::media_type(b, vs)?;
                let cr = line_end(end)?;
                e.content_type = Some(sp(vs, end));
                (end, cr)
            }
            HeaderName::CallId | HeaderName::CSeq | HeaderName::ContentType => return None,
            HeaderName::Route | HeaderName::RecordRoute | HeaderName::Contact
                if !(name == HeaderName::Contact && e.is_contact_star) =>
            {
                let scanned = if name == HeaderName::Contact && e.register {
                    fast::name_addr_list(b, vs)
                } else {
                    fast::bracketed_list(b, vs)
                };
                let (end, n) = scanned?;
                let cr = line_end(end)?;
                let (count, max) = match name {
                    HeaderName::Route => (&mut e.route_count, self.limits.max_routes),
                    HeaderName::RecordRoute => (&mut e.record_route_count, self.limits.max_routes),
                    _ => (&mut e.contact_count, self.limits.max_headers),
                };
                if *count + n > max {
                    return None;
                }
                *count += n;
                (end, cr)
            }
            HeaderName::Require | HeaderName::ProxyRequire | HeaderName::Supported => {
                let (ve, cr) = value_to_line_end(b, pos, vs, max_line)?;
                for_each_element(b.get(vs..ve).unwrap_or_default(), option_tag, |_| Ok(())).ok()?;
                (ve, cr)
            }
            // A `Contact` after `Contact: *`: the general path refuses it.
            HeaderName::Contact => return None,
            // A value no fast rule covers and none is needed for: the line
            // end is all there is to find.
            _ => value_to_line_end(b, pos, vs, max_line)?,
        };
        Some((Header { name, name_span: sp(pos, ne), value_span: sp(vs, ve), line_span: sp(pos, cr) }, cr + 2))
    }

    /// `message-header = field-name *(SP / HTAB) ":" SWS field-value`,
    /// for the line starting at `pos`. Returns the header and where the
    /// next line starts.
    #[inline]
    fn header_line(&self, b: &[u8], pos: usize) -> Result<(Header, usize), ParseError> {
        let rest = b.get(pos..).unwrap_or_default();
        let name_len = rest.iter().take_while(|&&c| is(c, TOKEN)).count();
        let mut i = name_len;
        while let Some(b' ' | b'\t') = rest.get(i) {
            i += 1;
        }
        if name_len == 0 || rest.get(i) != Some(&b':') {
            // The line's own shape first: an unterminated line is a
            // truncated message rather than a bad header.
            let (_, nl) = line_of(rest, pos)?;
            let at = if name_len == 0 { pos } else { pos + i };
            return Err(ParseError::new(ErrorKind::HeaderLine, at.min(pos + nl)));
        }
        i += 1;
        while let Some(b' ' | b'\t') = rest.get(i) {
            i += 1;
        }
        let value = rest.get(i..).unwrap_or_default();
        let Some(nl) = memchr::memchr(b'\n', value) else {
            return Err(ParseError::new(ErrorKind::Truncated, b.len()));
        };
        // The line must end in CRLF; a bare LF right after the colon's
        // white space (nl == 0) has no CR before it.
        let Some(v) = nl.checked_sub(1).and_then(|k| match value.get(..=k) {
            Some([v @ .., b'\r']) => Some(v),
            _ => None,
        }) else {
            return Err(ParseError::new(ErrorKind::HeaderLine, pos + i + nl));
        };
        let line_end = pos + i + v.len();
        if line_end - pos > self.limits.max_header_line {
            return Err(ParseError::new(ErrorKind::LimitExceeded(Limit::HeaderLine), pos));
        }
        let name = rest.get(..name_len).unwrap_or_default();
        let value_end = line_end - trailing_ws(v);
        Ok((
            Header {
                name: HeaderName::from_bytes(name),
                name_span: Span { start: pos as u32, end: (pos + name_len) as u32 },
                value_span: Span { start: (pos + i) as u32, end: value_end as u32 },
                line_span: Span { start: pos as u32, end: line_end as u32 },
            },
            line_end + 2,
        ))
    }

    fn eager(&self, b: &[u8], h: &Header, e: &mut Eager) -> Result<(), ParseError> {
        let v = b.get(h.value_span.range()).unwrap_or_default();
        let bad = |at: &[u8]| err(ErrorKind::Header(h.name), b, at);
        let dup = || ParseError::new(ErrorKind::DuplicateHeader(h.name), h.name_span.start as usize);
        // A whole value must be consumed by its rule.
        let whole = |rest: &[u8]| sws(rest).is_empty();
        match h.name {
            HeaderName::Via => {
                let max = self.limits.max_vias;
                let count = &mut e.via_count;
                let top = &mut e.top_via;
                let branch = &mut e.branch;
                for_each_element(v, via_parm, |via| {
                    *count += 1;
                    if *count > max {
                        return Err(());
                    }
                    if top.is_none() {
                        *top = Some(Span::of(b, via.as_bytes()));
                        *branch = via.branch_bytes().map(|br| Span::of(b, br));
                    }
                    Ok(())
                })
                .map_err(|at| {
                    if *count > max {
                        err(ErrorKind::LimitExceeded(Limit::ViaCount), b, at)
                    } else {
                        bad(at)
                    }
                })?;
            }
            HeaderName::From | HeaderName::To => {
                let slot = if h.name == HeaderName::From { &mut e.from } else { &mut e.to };
                if slot.is_some() {
                    return Err(dup());
                }
                let (rest, na) = name_addr(v, false).map_err(|_| bad(v))?;
                if !whole(rest) {
                    return Err(bad(rest));
                }
                let tag = na.tag_bytes().map(|t| Span::of(b, t));
                *slot = Some((Span::of(b, na.as_bytes()), tag));
            }
            HeaderName::CallId => {
                if e.call_id.is_some() {
                    return Err(dup());
                }
                let (rest, id) = call_id(v).map_err(|_| bad(v))?;
                if !whole(rest) {
                    return Err(bad(rest));
                }
                e.call_id = Some(Span::of(b, id));
            }
            HeaderName::CSeq => {
                if e.cseq.is_some() {
                    return Err(dup());
                }
                let (rest, (n, m)) = cseq(v).map_err(|_| bad(v))?;
                if !whole(rest) {
                    return Err(bad(rest));
                }
                e.cseq = Some((n, Method::from_bytes(m), Span::of(b, m)));
            }
            HeaderName::MaxForwards => {
                if e.max_forwards.is_some() {
                    return Err(dup());
                }
                // Max-Forwards = 1*DIGIT, "an integer in the range 0-255"
                // (RFC 3261 §20.22).
                let (rest, n) = bounded_number(v, 255).map_err(|_| bad(v))?;
                if !whole(rest) {
                    return Err(bad(rest));
                }
                e.max_forwards = Some(n as u32);
            }
            HeaderName::ContentLength => {
                if e.content_length.is_some() {
                    return Err(dup());
                }
                let (rest, n) = bounded_number(v, u64::from(u32::MAX)).map_err(|_| bad(v))?;
                if !whole(rest) {
                    return Err(bad(rest));
                }
                e.content_length = Some(n as u32);
            }
            HeaderName::Expires => {
                if e.expires.is_some() {
                    return Err(dup());
                }
                // delta-seconds; RFC 3261 §10.2.1 caps the useful range at
                // 2³²−1, so larger values are clamped rather than refused.
                let digits = v.iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 || !whole(v.get(digits..).unwrap_or_default()) {
                    return Err(bad(v));
                }
                let n = bounded_number(v, u64::from(u32::MAX)).map(|(_, n)| n as u32).unwrap_or(u32::MAX);
                e.expires = Some(n);
            }
            HeaderName::ContentType => {
                if e.content_type.is_some() {
                    return Err(dup());
                }
                let (rest, mt) = media_type(v).map_err(|_| bad(v))?;
                if !whole(rest) {
                    return Err(bad(rest));
                }
                e.content_type = Some(Span::of(b, mt));
            }
            HeaderName::Route | HeaderName::RecordRoute => {
                // Located and counted here; the URI grammar runs on access
                // (`routes()`, `record_routes()`).
                let n = locate_name_addrs(v, true).map_err(|at| bad(v.get(at..).unwrap_or_default()))?;
                let count = if h.name == HeaderName::Route { &mut e.route_count } else { &mut e.record_route_count };
                *count += n;
                if *count > self.limits.max_routes {
                    return Err(err(ErrorKind::LimitExceeded(Limit::RouteCount), b, v));
                }
            }
            HeaderName::Contact => {
                if v == b"*" {
                    if e.contact_count > 0 || e.is_contact_star {
                        return Err(bad(v));
                    }
                    e.is_contact_star = true;
                    return Ok(());
                }
                if e.is_contact_star {
                    return Err(bad(v));
                }
                // A registrar stores what it reads, so a REGISTER's Contacts
                // get the full grammar now (RFC 4475 §3.3.7 `regbadct`);
                // elsewhere they are located and counted, and parsed on
                // access (`contacts()`).
                let n = if e.register {
                    for_each_element(v, |i| name_addr(i, false), |_| Ok(())).map_err(bad)?
                } else {
                    locate_name_addrs(v, false).map_err(|at| bad(v.get(at..).unwrap_or_default()))?
                };
                e.contact_count += n;
                if e.contact_count > self.limits.max_headers {
                    return Err(err(ErrorKind::LimitExceeded(Limit::HeaderCount), b, v));
                }
            }
            HeaderName::Require | HeaderName::ProxyRequire | HeaderName::Supported => {
                for_each_element(v, option_tag, |_| Ok(())).map_err(bad)?;
            }
            _ => {}
        }
        Ok(())
    }
}
