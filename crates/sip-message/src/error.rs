//! Parse errors: who is at fault (always the peer here) and what to answer.

use crate::header::HeaderName;
use crate::limits::Limit;

/// What went wrong while parsing a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("malformed Request-URI")]
    RequestUri,
    #[error("Request-URI scheme not supported")]
    UnsupportedUriScheme,
    #[error("malformed status code")]
    StatusCode,
    #[error("malformed header line")]
    HeaderLine,
    #[error("malformed {0:?} header")]
    Header(HeaderName),
    #[error("missing mandatory {0:?} header")]
    MissingHeader(HeaderName),
    #[error("{0:?} header appears more than once")]
    DuplicateHeader(HeaderName),
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    #[error("body is shorter than Content-Length")]
    BodyTruncated,
    #[error("stream message lacks Content-Length")]
    MissingContentLength,
    #[error("message ends before the end of the header section")]
    Truncated,
    #[error("limit exceeded: {}", .0.as_str())]
    LimitExceeded(Limit),
}

/// A parse error with the byte offset where it was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {at}")]
pub struct ParseError {
    pub kind: ErrorKind,
    pub at: usize,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind, at: usize) -> Self {
        ParseError { kind, at }
    }

    /// The status code a server answers a request with this error, or `None`
    /// when nothing can be answered (the message is dropped and counted).
    ///
    /// This is the one place where parse errors map to the wire. A response
    /// that fails to parse is never answered: callers drop it whatever this
    /// returns.
    pub fn status(&self) -> Option<u16> {
        Some(match self.kind {
            // RFC 3261 §21.5.6: 505 Version Not Supported.
            ErrorKind::Version => 505,
            ErrorKind::LimitExceeded(Limit::UriLength) => 414,
            // RFC 3261 §21.4.16: 416 Unsupported URI Scheme.
            ErrorKind::UnsupportedUriScheme => 416,
            ErrorKind::LimitExceeded(Limit::MessageSize | Limit::BodySize) => 413,
            // RFC 3261 §21.5.14: 513 Message Too Large covers headers too.
            ErrorKind::LimitExceeded(Limit::HeaderCount | Limit::HeaderLine | Limit::ViaCount | Limit::RouteCount) => {
                513
            }
            // Without a parseable start line we cannot even tell a request
            // from a response: drop.
            ErrorKind::StartLine | ErrorKind::StatusCode | ErrorKind::Truncated => return None,
            ErrorKind::RequestUri
            | ErrorKind::HeaderLine
            | ErrorKind::Header(_)
            | ErrorKind::MissingHeader(_)
            | ErrorKind::DuplicateHeader(_)
            | ErrorKind::CSeqMethodMismatch
            | ErrorKind::BodyTruncated
            | ErrorKind::MissingContentLength => 400,
        })
    }
}
