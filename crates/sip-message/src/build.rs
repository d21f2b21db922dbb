//! Building the messages the stack itself originates: responses to a
//! request (RFC 3261 §8.2.6), the ACK for a non-2xx final response
//! (§17.1.1.3), CANCEL (§9.1), and best-effort error responses to messages
//! that failed to parse.

use crate::header::HeaderName;
use crate::message::Message;
use bytes::{BufMut, Bytes, BytesMut};

/// Append a decimal number without going through `fmt`.
pub(crate) fn put_u32(out: &mut BytesMut, mut n: u32) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        if let Some(slot) = tmp.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(tmp.get(i..).unwrap_or_default());
}

fn put_header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A response to `req` under construction. The status line and the headers
/// RFC 3261 §8.2.6.2 copies (Via, From, To, Call-ID, CSeq) are written at
/// creation; add more with [`Response::header`], then [`Response::finish`].
pub struct Response {
    out: BytesMut,
}

impl Response {
    /// Start a response. `to_tag` is added to the To header when the request
    /// had none (a 100 Trying never gets one: §8.2.6.2).
    pub fn new(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Response {
        Response::with_room(req, code, reason, to_tag, 0)
    }

    /// [`Response::new`] with room for `extra` more bytes of header lines
    /// the caller is about to add (a challenge, say), so that adding them
    /// does not reallocate and copy the response written so far.
    pub fn with_room(req: &Message, code: u16, reason: &str, to_tag: Option<&str>, extra: usize) -> Response {
        let mut out = BytesMut::with_capacity(req.headers_end() - req.headers_start() + 128 + extra);
        out.extend_from_slice(b"SIP/2.0 ");
        put_u32(&mut out, u32::from(code));
        out.put_u8(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in req.headers() {
            match h.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    out.extend_from_slice(req.bytes_at(h.line_span));
                    out.extend_from_slice(b"\r\n");
                }
                HeaderName::To => {
                    out.extend_from_slice(req.bytes_at(h.line_span));
                    if let (None, Some(tag), true) = (req.to_tag(), to_tag, code > 100) {
                        out.extend_from_slice(b";tag=");
                        out.extend_from_slice(tag.as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                }
                _ => {}
            }
        }
        Response { out }
    }

    /// Add a header line.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        put_header(&mut self.out, name, value.as_bytes());
        self
    }

    /// Finish with an empty body.
    pub fn finish(mut self) -> Bytes {
        self.out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        self.out.freeze()
    }

    /// Finish with a body of the given Content-Type.
    pub fn finish_with_body(mut self, content_type: &str, body: &[u8]) -> Bytes {
        put_header(&mut self.out, "Content-Type", content_type.as_bytes());
        self.out.extend_from_slice(b"Content-Length: ");
        put_u32(&mut self.out, u32::try_from(body.len()).unwrap_or(u32::MAX));
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
        self.out.freeze()
    }
}

/// A complete response with no extra headers (RFC 3261 §8.2.6).
pub fn response(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Bytes {
    Response::new(req, code, reason, to_tag).finish()
}

/// The default reason phrase of a status code (RFC 3261 §21 and extensions).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        429 => "Too Many Requests",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match code / 100 {
            1 => "Session Progress",
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// Write the request line and the headers shared by ACK and CANCEL: the
/// INVITE's top Via only, its Route set, From, Call-ID, and a CSeq with the
/// INVITE's number and the new method.
fn derived_request(invite: &Message, method: &str, to_line: Option<&[u8]>) -> BytesMut {
    let mut out = BytesMut::with_capacity(invite.headers_end() - invite.headers_start() + 64);
    out.extend_from_slice(method.as_bytes());
    out.put_u8(b' ');
    out.extend_from_slice(invite.request_uri_str().unwrap_or_default().as_bytes());
    out.extend_from_slice(b" SIP/2.0\r\n");
    put_header(&mut out, "Via", invite.top_via().as_bytes());
    for h in invite.headers() {
        match h.name {
            HeaderName::Route | HeaderName::From | HeaderName::CallId => {
                out.extend_from_slice(invite.bytes_at(h.line_span));
                out.extend_from_slice(b"\r\n");
            }
            HeaderName::To => match to_line {
                Some(line) => {
                    out.extend_from_slice(line);
                    out.extend_from_slice(b"\r\n");
                }
                None => {
                    out.extend_from_slice(invite.bytes_at(h.line_span));
                    out.extend_from_slice(b"\r\n");
                }
            },
            _ => {}
        }
    }
    out.extend_from_slice(b"CSeq: ");
    put_u32(&mut out, invite.cseq().0);
    out.put_u8(b' ');
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    out
}

/// The ACK a client INVITE transaction sends for a non-2xx final response
/// (RFC 3261 §17.1.1.3): the INVITE's Request-URI, Call-ID, From, CSeq
/// number and top Via (same branch), the response's To (with its tag), and
/// the INVITE's Route headers.
pub fn ack_for_non2xx(invite: &Message, response: &Message) -> Bytes {
    let to = response.headers().iter().find(|h| h.name == HeaderName::To).map(|h| response.bytes_at(h.line_span));
    derived_request(invite, "ACK", to).freeze()
}

/// CANCEL for a pending INVITE (RFC 3261 §9.1): same Request-URI, Call-ID,
/// From, To, CSeq number and top Via (same branch), and Route headers.
pub fn cancel(invite: &Message) -> Bytes {
    derived_request(invite, "CANCEL", None).freeze()
}

/// Recognise a header line of `raw` by name.
fn raw_header_name(line: &[u8]) -> Option<HeaderName> {
    let colon = line.iter().position(|&c| c == b':')?;
    let name = line.get(..colon)?;
    Some(HeaderName::from_bytes(name.trim_ascii_end()))
}

/// A best-effort error response to a request that failed to parse
/// (e.g. 400, 413, 505, 513): copies the Via, From, To, Call-ID and CSeq
/// lines found in the raw bytes. Returns `None` when no response can be
/// routed (no Via, or the message looks like a response).
pub fn error_response(raw: &[u8], code: u16, reason: &str) -> Option<Bytes> {
    if raw.starts_with(b"SIP/") {
        return None;
    }
    let head_end = memchr::memmem::find(raw, b"\r\n\r\n").unwrap_or(raw.len());
    let head = raw.get(..head_end)?;
    let mut out = BytesMut::with_capacity(head.len().min(4096) + 64);
    out.extend_from_slice(b"SIP/2.0 ");
    put_u32(&mut out, u32::from(code));
    out.put_u8(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_via = false;
    // Skip the start line; folded lines are not followed (best effort).
    for line in head.split(|&c| c == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 4096 {
            continue;
        }
        match raw_header_name(line) {
            Some(HeaderName::Via) => has_via = true,
            Some(HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq) => {}
            _ => continue,
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    if !has_via {
        return None;
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKnashds8\r\n\
Route: <sip:p2.example.com;lr>\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn response_copies_the_dialog_headers_and_adds_a_to_tag() {
        let req = Message::parse_slice(INVITE).unwrap();
        let r = Message::parse_slice(
            Response::new(&req, 486, "Busy Here", Some("xyz")).header("Retry-After", "30").finish(),
        )
        .unwrap();
        assert_eq!(r.status(), Some(486));
        assert_eq!(r.via_count(), 2);
        assert_eq!(r.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(r.to_tag(), Some("xyz"));
        assert_eq!(r.from_tag(), Some("1928301774"));
        assert_eq!(r.call_id(), req.call_id());
        assert_eq!(r.cseq(), req.cseq());
        assert_eq!(r.header(HeaderName::RetryAfter), Some(&b"30"[..]));
        assert_eq!(r.route_count(), 0);
        let trying = Message::parse_slice(response(&req, 100, "Trying", Some("xyz"))).unwrap();
        assert_eq!(trying.to_tag(), None);
    }

    #[test]
    fn ack_and_cancel_follow_rfc3261() {
        let req = Message::parse_slice(INVITE).unwrap();
        let resp = Message::parse_slice(response(&req, 486, "Busy Here", Some("xyz"))).unwrap();
        let ack = Message::parse_slice(ack_for_non2xx(&req, &resp)).unwrap();
        assert_eq!(ack.method(), Some(crate::Method::Ack));
        assert_eq!(ack.request_uri_str(), req.request_uri_str());
        assert_eq!(ack.via_count(), 1);
        assert_eq!(ack.branch(), req.branch());
        assert_eq!(ack.to_tag(), Some("xyz"));
        assert_eq!(ack.cseq(), (314159, crate::Method::Ack));
        assert_eq!(ack.route_count(), 1);
        let cancel = Message::parse_slice(cancel(&req)).unwrap();
        assert_eq!(cancel.method(), Some(crate::Method::Cancel));
        assert_eq!(cancel.branch(), req.branch());
        assert_eq!(cancel.to_tag(), None);
        assert_eq!(cancel.cseq(), (314159, crate::Method::Cancel));
    }

    #[test]
    fn error_response_from_raw_bytes() {
        let bad = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 OPTIONS");
        let r = error_response(bad.as_bytes(), 400, "Bad Request").unwrap();
        let r = Message::parse_slice(r).unwrap();
        assert_eq!(r.status(), Some(400));
        assert_eq!(r.branch(), Some("z9hG4bK776asdhds"));
        assert!(error_response(b"SIP/2.0 200 OK\r\n\r\n", 400, "x").is_none());
        assert!(error_response(b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n", 400, "x").is_none());
    }
}
