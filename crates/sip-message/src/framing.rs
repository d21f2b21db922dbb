//! Stream framing for TCP/TLS (RFC 3261 §18.3, RFC 5626 §4.4.1).
//!
//! A [`Framer`] cuts complete messages off the front of a connection's read
//! buffer. It keeps where it stopped scanning, so a slow sender costs linear
//! time overall, and it refuses a header section or body larger than the
//! limits before buffering it.

use crate::grammar::scalar::bounded_number;
use crate::grammar::sws;
use crate::header::HeaderName;
use crate::limits::{Limit, Limits};
use bytes::{Buf, Bytes, BytesMut};

/// What the framer cut off the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message (header section and exactly Content-Length bytes
    /// of body), ready for [`crate::Message::parse`].
    Message(Bytes),
    /// A double-CRLF keep-alive ping (RFC 5626 §4.4.1): answer with a
    /// single CRLF.
    Ping,
    /// A single-CRLF keep-alive pong (reported once the byte after it has
    /// arrived, see [`Framer::next_frame`]).
    Pong,
}

/// Why a stream cannot be framed any further. The connection should be
/// answered (when [`FramingError::status`] says so) and closed: there is no
/// way to find the next message boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    #[error("message on a stream lacks Content-Length")]
    MissingContentLength,
    #[error("malformed Content-Length")]
    BadContentLength,
    #[error("limit exceeded: {}", .0.as_str())]
    LimitExceeded(Limit),
}

impl FramingError {
    /// The status code to answer with before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            FramingError::MissingContentLength | FramingError::BadContentLength => 400,
            FramingError::LimitExceeded(Limit::BodySize | Limit::MessageSize) => 413,
            FramingError::LimitExceeded(_) => 513,
        }
    }
}

/// Splits one connection's byte stream into frames.
#[derive(Debug, Clone)]
pub struct Framer {
    max_head: usize,
    max_body: usize,
    max_message: usize,
    /// How far the search for the end of the header section got.
    scanned: usize,
    /// Once found: header section length (blank line included) and body length.
    pending: Option<(usize, usize)>,
}

impl Framer {
    pub fn new(limits: &Limits) -> Framer {
        Framer {
            max_head: limits.max_message_size,
            max_body: limits.max_body,
            max_message: limits.max_message_size,
            scanned: 0,
            pending: None,
        }
    }

    /// Cut the next frame off `buf`. `Ok(None)` means more bytes are needed.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        if self.pending.is_none() && self.scanned == 0 {
            // RFC 3261 §7.5: CRLFs before a start line are ignored on
            // streams; RFC 5626 gives them a meaning as keep-alives.
            match &buf[..] {
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    buf.advance(4);
                    return Ok(Some(Frame::Ping));
                }
                // Could still become a ping. A lone CRLF at the end of the
                // buffer is held too: reporting it as a pong would split a
                // ping that arrived in two reads into two pongs. The next
                // byte decides.
                [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                [b'\r', b'\n', ..] => {
                    buf.advance(2);
                    return Ok(Some(Frame::Pong));
                }
                _ => {}
            }
        }
        let (head, body) = match self.pending {
            Some(p) => p,
            None => {
                let from = self.scanned.saturating_sub(3);
                let window = buf.get(from..).unwrap_or_default();
                let Some(pos) = memchr::memmem::find(window, b"\r\n\r\n") else {
                    self.scanned = buf.len();
                    if buf.len() > self.max_head {
                        return Err(FramingError::LimitExceeded(Limit::MessageSize));
                    }
                    return Ok(None);
                };
                let head = from + pos + 4;
                if head > self.max_head {
                    return Err(FramingError::LimitExceeded(Limit::MessageSize));
                }
                let body = content_length(buf.get(..head).unwrap_or_default())?;
                if body > self.max_body {
                    return Err(FramingError::LimitExceeded(Limit::BodySize));
                }
                if head + body > self.max_message {
                    return Err(FramingError::LimitExceeded(Limit::MessageSize));
                }
                self.pending = Some((head, body));
                (head, body)
            }
        };
        if buf.len() < head + body {
            return Ok(None);
        }
        self.pending = None;
        self.scanned = 0;
        Ok(Some(Frame::Message(buf.split_to(head + body).freeze())))
    }
}

/// Find Content-Length (or `l`) in a header section. Folded values are
/// followed. Two different values are an error (RFC 4475 §3.1.2.x shows why).
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<u64> = None;
    let mut lines = head.split(|&c| c == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&c| c == b':') else { continue };
        let name = line.get(..colon).unwrap_or_default();
        // `field-name *(SP / HTAB) ":"` (RFC 3261 §7.3.1; RFC 4475 wsinv).
        let name = name.trim_ascii_end();
        if HeaderName::from_bytes(name) != HeaderName::ContentLength {
            continue;
        }
        let mut value = sws(line.get(colon + 1..).unwrap_or_default());
        if value.is_empty() {
            // The value may be on a folded continuation line.
            if let Some(next) = lines.peek() {
                value = sws(next.strip_suffix(b"\r").unwrap_or(next));
            }
        }
        let n = match bounded_number(value, u64::from(u32::MAX)) {
            Ok((rest, n)) if sws(rest).is_empty() => n,
            _ => return Err(FramingError::BadContentLength),
        };
        if found.is_some_and(|f| f != n) {
            return Err(FramingError::BadContentLength);
        }
        found = Some(n);
    }
    match found {
        Some(n) => usize::try_from(n).map_err(|_| FramingError::BadContentLength),
        None => Err(FramingError::MissingContentLength),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    fn framer() -> Framer {
        Framer::new(&Limits::default())
    }

    #[test]
    fn splits_back_to_back_messages_and_keepalives() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(MSG);
        buf.extend_from_slice(MSG);
        buf.extend_from_slice(b"\r\n");
        let mut f = framer();
        assert_eq!(f.next_frame(&mut buf), Ok(Some(Frame::Ping)));
        assert_eq!(f.next_frame(&mut buf), Ok(Some(Frame::Message(Bytes::from_static(MSG)))));
        assert_eq!(f.next_frame(&mut buf), Ok(Some(Frame::Message(Bytes::from_static(MSG)))));
        // A lone CRLF waits for the next byte: it may be half a ping.
        assert_eq!(f.next_frame(&mut buf), Ok(None));
        buf.extend_from_slice(MSG);
        assert_eq!(f.next_frame(&mut buf), Ok(Some(Frame::Pong)));
        assert_eq!(f.next_frame(&mut buf), Ok(Some(Frame::Message(Bytes::from_static(MSG)))));
        assert_eq!(f.next_frame(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_ping_split_across_reads_is_one_ping() {
        let mut f = framer();
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(f.next_frame(&mut buf), Ok(None));
        buf.extend_from_slice(b"\r\n");
        assert_eq!(f.next_frame(&mut buf), Ok(Some(Frame::Ping)));
        assert!(buf.is_empty());
    }

    #[test]
    fn byte_at_a_time_reassembles() {
        let mut f = framer();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for &b in MSG {
            buf.extend_from_slice(&[b]);
            if let Some(fr) = f.next_frame(&mut buf).unwrap() {
                frames.push(fr);
            }
        }
        assert_eq!(frames, vec![Frame::Message(Bytes::from_static(MSG))]);
    }

    #[test]
    fn refuses_missing_or_conflicting_content_length_and_oversize() {
        let mut f = framer();
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"[..]);
        assert_eq!(f.next_frame(&mut buf), Err(FramingError::MissingContentLength));
        let mut f = framer();
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab"[..]);
        assert_eq!(f.next_frame(&mut buf), Err(FramingError::BadContentLength));
        let mut f = framer();
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999\r\n\r\n"[..]);
        assert_eq!(f.next_frame(&mut buf), Err(FramingError::LimitExceeded(Limit::BodySize)));
        let limits = Limits { max_message_size: 100, ..Limits::default() };
        let mut f = Framer::new(&limits);
        let mut buf = BytesMut::from(&[b'a'; 101][..]);
        assert_eq!(f.next_frame(&mut buf), Err(FramingError::LimitExceeded(Limit::MessageSize)));
    }
}
