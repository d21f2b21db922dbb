//! Forwarding edits by span copy (DESIGN.md §3).
//!
//! An [`Editor`] records edits against the original message's byte offsets;
//! [`Editor::finish`] writes the result in one allocation by copying the
//! unchanged spans of the original around the inserted text. Nothing is
//! re-serialised, so a header the proxy never touched leaves exactly as it
//! came in.

use crate::build::put_u32;
use crate::grammar::{offset, sws};
use crate::header::HeaderName;
use crate::message::{Header, Message, Span};
use bytes::{Bytes, BytesMut};

/// One edit: replace `start..end` of the original with `text` (a range of
/// the editor's scratch buffer). An insertion has `start == end`.
#[derive(Debug, Clone, Copy)]
struct Edit {
    start: u32,
    end: u32,
    text: Span,
    seq: u16,
}

/// Records edits to a message and writes the edited message.
#[derive(Debug)]
pub struct Editor<'m> {
    msg: &'m Message,
    edits: Vec<Edit>,
    scratch: BytesMut,
    body: Option<Bytes>,
    removed_vias: usize,
    removed_routes: usize,
}

impl Message {
    /// Start editing a copy of this message.
    pub fn edit(&self) -> Editor<'_> {
        Editor {
            msg: self,
            edits: Vec::with_capacity(8),
            scratch: BytesMut::with_capacity(256),
            body: None,
            removed_vias: 0,
            removed_routes: 0,
        }
    }
}

impl<'m> Editor<'m> {
    fn push(&mut self, start: usize, end: usize, parts: &[&[u8]]) {
        let from = self.scratch.len();
        for p in parts {
            self.scratch.extend_from_slice(p);
        }
        let seq = self.edits.len() as u16;
        self.edits.push(Edit {
            start: start as u32,
            end: end as u32,
            text: Span { start: from as u32, end: self.scratch.len() as u32 },
            seq,
        });
    }

    /// The span of a whole header line including its CRLF.
    fn line_with_crlf(h: &Header) -> (usize, usize) {
        (h.line_span.start as usize, h.line_span.end as usize + 2)
    }

    /// Insert `Name: value` as the first header line.
    fn insert_first(&mut self, name: &str, value: &str) {
        let at = self.msg.headers_start();
        self.push(at, at, &[name.as_bytes(), b": ", value.as_bytes(), b"\r\n"]);
    }

    /// Add a Via on top (RFC 3261 §16.6 step 8). `value` is a via-parm such
    /// as `SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK…;rport`.
    pub fn push_via(mut self, value: &str) -> Self {
        self.insert_first("Via", value);
        self
    }

    /// Remove the n-th topmost element of a list header, counting elements
    /// already removed by this editor.
    fn remove_nth_element(&mut self, name: HeaderName, n: usize) -> bool {
        let msg = self.msg;
        let mut seen = 0;
        for h in msg.headers().iter().filter(|h| h.name == name) {
            let value = msg.header_value(h);
            let elems = element_spans(value, name);
            let count = elems.len();
            if seen + count <= n {
                seen += count;
                continue;
            }
            let idx = n - seen;
            if count == 1 {
                let (s, e) = Self::line_with_crlf(h);
                self.push(s, e, &[]);
            } else if let Some(&(es, ee)) = elems.get(idx) {
                let base = h.value_span.start as usize;
                // Remove the element with the separator that follows it
                // (or, for the last one, the separator before it).
                let (s, e) = match elems.get(idx + 1) {
                    Some(&(next, _)) => (base + es, base + next),
                    None => {
                        let prev_end = elems.get(idx.wrapping_sub(1)).map(|p| p.1).unwrap_or(es);
                        (base + prev_end, base + ee)
                    }
                };
                self.push(s, e, &[]);
            }
            return true;
        }
        false
    }

    /// Remove the topmost Via value (a response going upstream, §16.7 step 3).
    pub fn remove_top_via(mut self) -> Self {
        let n = self.removed_vias;
        if self.remove_nth_element(HeaderName::Via, n) {
            self.removed_vias += 1;
        }
        self
    }

    /// Remove the topmost Route value (loose routing, §16.4 / §16.6 step 4).
    pub fn pop_route(mut self) -> Self {
        let n = self.removed_routes;
        if self.remove_nth_element(HeaderName::Route, n) {
            self.removed_routes += 1;
        }
        self
    }

    /// Add a Record-Route value above the existing ones (§16.6 step 4).
    pub fn push_record_route(mut self, value: &str) -> Self {
        let at = self
            .msg
            .headers()
            .iter()
            .find(|h| h.name == HeaderName::RecordRoute)
            .map(|h| h.line_span.start as usize)
            .unwrap_or(self.msg.headers_start());
        self.push(at, at, &[b"Record-Route: ", value.as_bytes(), b"\r\n"]);
        self
    }

    /// Add a Route value above the existing ones (e.g. a pre-loaded route
    /// to an outbound proxy, §16.6 step 7).
    pub fn push_route(mut self, value: &str) -> Self {
        let at = self
            .msg
            .headers()
            .iter()
            .find(|h| h.name == HeaderName::Route)
            .map(|h| h.line_span.start as usize)
            .unwrap_or(self.msg.headers_start());
        self.push(at, at, &[b"Route: ", value.as_bytes(), b"\r\n"]);
        self
    }

    /// Set Max-Forwards, adding the header if it is missing (§16.6 step 3).
    pub fn set_max_forwards(mut self, n: u32) -> Self {
        let mut num = BytesMut::with_capacity(10);
        put_u32(&mut num, n);
        match self.msg.headers().iter().find(|h| h.name == HeaderName::MaxForwards) {
            Some(h) => {
                let (s, e) = (h.value_span.start as usize, h.value_span.end as usize);
                self.push(s, e, &[&num]);
            }
            None => {
                let at = self.msg.headers_end();
                self.push(at, at, &[b"Max-Forwards: ", &num, b"\r\n"]);
            }
        }
        self
    }

    /// Decrement Max-Forwards, or set it to 70 when absent (§16.6 step 3).
    pub fn decrement_max_forwards(self) -> Self {
        let n = self.msg.max_forwards().map(|n| n.saturating_sub(1)).unwrap_or(70);
        self.set_max_forwards(n)
    }

    /// Replace the Request-URI (§16.6 step 2, §16.4 strict routing).
    pub fn set_request_uri(mut self, uri: &str) -> Self {
        if let Some(s) = self.msg.request_uri_span() {
            self.push(s.start as usize, s.end as usize, &[uri.as_bytes()]);
        }
        self
    }

    /// Append a header line at the end of the header section.
    pub fn add_header(mut self, name: &str, value: &str) -> Self {
        let at = self.msg.headers_end();
        self.push(at, at, &[name.as_bytes(), b": ", value.as_bytes(), b"\r\n"]);
        self
    }

    /// Insert a header line at the top of the header section.
    pub fn add_header_first(mut self, name: &str, value: &str) -> Self {
        self.insert_first(name, value);
        self
    }

    /// Remove every line of a known header.
    pub fn remove_header(mut self, name: HeaderName) -> Self {
        let msg = self.msg;
        for h in msg.headers().iter().filter(|h| h.name == name) {
            let (s, e) = Self::line_with_crlf(h);
            self.push(s, e, &[]);
        }
        self
    }

    /// Remove every line of a header by name (case-insensitive), for headers
    /// not in [`HeaderName`].
    pub fn remove_header_named(mut self, name: &str) -> Self {
        let msg = self.msg;
        let known = HeaderName::from_bytes(name.as_bytes());
        for h in msg.headers().iter().filter(|h| {
            h.name == known && (known != HeaderName::Other || msg.header_name_str(h).eq_ignore_ascii_case(name))
        }) {
            let (s, e) = Self::line_with_crlf(h);
            self.push(s, e, &[]);
        }
        self
    }

    /// Replace the body; Content-Length follows, Content-Type is replaced
    /// (or removed when `content_type` is `None` and the body is empty).
    pub fn set_body(mut self, content_type: Option<&str>, body: Bytes) -> Self {
        let msg = self.msg;
        for h in msg.headers().iter().filter(|h| h.name == HeaderName::ContentType) {
            let (s, e) = Self::line_with_crlf(h);
            self.push(s, e, &[]);
        }
        if let Some(ct) = content_type {
            let at = msg.headers_end();
            self.push(at, at, &[b"Content-Type: ", ct.as_bytes(), b"\r\n"]);
        }
        self.body = Some(body);
        self
    }

    /// Write the edited message. Content-Length is always present and true
    /// (required on streams, RFC 3261 §18.3), and bytes a datagram carried
    /// beyond the body are dropped.
    pub fn finish(mut self) -> Bytes {
        let msg = self.msg;
        let body_span = msg.body_span();
        let body_len = self.body.as_ref().map(|b| b.len()).unwrap_or(body_span.len());
        let cl_matches = msg.content_length() == Some(body_len as u32);
        if !cl_matches {
            let mut num = BytesMut::with_capacity(10);
            put_u32(&mut num, body_len as u32);
            match msg.headers().iter().find(|h| h.name == HeaderName::ContentLength) {
                Some(h) => {
                    let (s, e) = (h.value_span.start as usize, h.value_span.end as usize);
                    self.push(s, e, &[&num]);
                }
                None => {
                    let at = msg.headers_end();
                    self.push(at, at, &[b"Content-Length: ", &num, b"\r\n"]);
                }
            }
        }
        // Stable by position, then by the order the edits were made.
        self.edits.sort_unstable_by_key(|e| (e.start, e.seq));
        let src = msg.as_bytes();
        let head_end = body_span.start as usize;
        let inserted: usize = self.edits.iter().map(|e| e.text.len()).sum();
        let mut out = BytesMut::with_capacity(head_end + inserted + body_len);
        let mut cursor = 0usize;
        for e in &self.edits {
            let (s, end) = (e.start as usize, e.end as usize);
            if s > cursor {
                out.extend_from_slice(src.get(cursor..s).unwrap_or_default());
                cursor = s;
            }
            out.extend_from_slice(self.scratch.get(e.text.range()).unwrap_or_default());
            cursor = cursor.max(end);
        }
        if cursor < head_end {
            out.extend_from_slice(src.get(cursor..head_end).unwrap_or_default());
        }
        match &self.body {
            Some(b) => out.extend_from_slice(b),
            None => out.extend_from_slice(src.get(body_span.range()).unwrap_or_default()),
        }
        out.freeze()
    }
}

/// Offsets (relative to the value) of each element of a list header value:
/// `(element start, element end)`.
fn element_spans(value: &[u8], name: HeaderName) -> Vec<(usize, usize)> {
    use crate::grammar::name_addr::each_name_addr;
    use crate::grammar::via::via_parm;
    let mut out = Vec::new();
    if name != HeaderName::Via {
        // The same boundaries the parser counted (Route / Record-Route
        // elements are located at parse time, their URIs checked on access),
        // so popping the top one never takes a malformed neighbour with it.
        let _ = each_name_addr(value, true, |s, e| out.push((s, e)));
        return out;
    }
    let mut rest = value;
    loop {
        let r = sws(rest);
        let r = match r {
            [b',', tail @ ..] => {
                rest = tail;
                continue;
            }
            [] => break,
            r => r,
        };
        let start = offset(value, r);
        let Ok((after, _)) = via_parm(r) else { break };
        out.push((start, offset(value, after)));
        rest = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n\
Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@example.com>\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
Call-ID: abc\r\n\
CSeq: 1 INVITE\r\n\
X-Custom: keep me\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    fn reparse(b: Bytes) -> Message {
        Message::parse(b.clone(), &Default::default())
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&b)))
    }

    #[test]
    fn pop_route_keeps_a_malformed_neighbour() {
        // Route URIs are grammar-checked on access, so a message may carry a
        // malformed one; popping the top Route removes only that element.
        let m = Message::parse_slice(
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
             Route: <sip:p1.example.com;lr>, <sip:-bad-.example.com;lr>\r\n\
             To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
             Call-ID: abc\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.route_count(), 2);
        let out = Message::parse(m.edit().pop_route().finish(), &crate::Limits::default()).unwrap();
        assert_eq!(out.route_count(), 1);
        assert_eq!(out.header(HeaderName::Route), Some(&b"<sip:-bad-.example.com;lr>"[..]));
    }

    #[test]
    fn proxy_forwarding_edits() {
        let m = Message::parse_slice(REQ).unwrap();
        let out = reparse(
            m.edit()
                .push_via("SIP/2.0/TCP proxy.example.com;branch=z9hG4bKnew")
                .pop_route()
                .decrement_max_forwards()
                .push_record_route("<sip:proxy.example.com;lr>")
                .set_request_uri("sip:bob@192.0.2.4:5062")
                .finish(),
        );
        assert_eq!(out.branch(), Some("z9hG4bKnew"));
        assert_eq!(out.via_count(), 4);
        assert_eq!(out.route_count(), 1);
        assert_eq!(out.routes().next().unwrap().uri.host(), "p2.example.com");
        assert_eq!(out.max_forwards(), Some(69));
        assert_eq!(out.record_routes().next().unwrap().uri.host(), "proxy.example.com");
        assert_eq!(out.request_uri_str(), Some("sip:bob@192.0.2.4:5062"));
        assert_eq!(out.body(), b"v=0\n");
        assert_eq!(out.header_values_named("x-custom").next(), Some(&b"keep me"[..]));
    }

    #[test]
    fn removing_vias_one_by_one_handles_multi_value_lines() {
        let m = Message::parse_slice(REQ).unwrap();
        let one = reparse(m.edit().remove_top_via().finish());
        assert_eq!(one.via_count(), 2);
        assert_eq!(one.branch(), Some("z9hG4bK2"));
        let two = reparse(m.edit().remove_top_via().remove_top_via().finish());
        assert_eq!(two.via_count(), 1);
        assert_eq!(two.branch(), Some("z9hG4bK3"));
        let routes = reparse(m.edit().pop_route().pop_route().finish());
        assert_eq!(routes.route_count(), 0);
    }

    #[test]
    fn body_and_header_edits_keep_content_length_true() {
        let m = Message::parse_slice(REQ).unwrap();
        let out = reparse(
            m.edit()
                .remove_header_named("X-Custom")
                .add_header("Diversion", "<sip:bob@example.com>;reason=user-busy;counter=1")
                .set_body(Some("text/plain"), Bytes::from_static(b"hello world"))
                .finish(),
        );
        assert_eq!(out.content_length(), Some(11));
        assert_eq!(out.body(), b"hello world");
        assert_eq!(out.content_type(), Some("text/plain"));
        assert!(out.header_values_named("X-Custom").next().is_none());
        assert!(out.header(HeaderName::Diversion).is_some());
        let no_mf = Message::parse_slice(REQ.replace("Max-Forwards: 70\r\n", "")).unwrap();
        let out = reparse(no_mf.edit().decrement_max_forwards().finish());
        assert_eq!(out.max_forwards(), Some(70));
    }

    #[test]
    fn untouched_message_is_copied_verbatim() {
        let m = Message::parse_slice(REQ).unwrap();
        assert_eq!(&m.edit().finish()[..], REQ.as_bytes());
    }
}
