//! Bounds on everything a peer controls.
//!
//! Every loop over peer input checks one of these. The defaults suit an edge
//! proxy: generous for real traffic, small enough that one message can never
//! cost much memory or time.

/// Configurable bounds applied while parsing and framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Whole message (start line, headers and body), in bytes. 64 KiB by
    /// default: larger than any datagram we accept and far above real SIP
    /// traffic, whose INVITEs rarely pass 4 KiB. A UDP listener caps this at
    /// 65 507 (the largest IPv4 UDP payload).
    pub max_message_size: usize,
    /// Number of header lines. 256: a real message has 10–40; a long chain of
    /// proxies adds a Via and a Record-Route each.
    pub max_headers: usize,
    /// One header field, folded lines included, in bytes. 8 KiB: a Via or
    /// Authorization is well under 1 KiB; SDP never lives in headers.
    pub max_header_line: usize,
    /// One URI (Request-URI or a URI inside a header), in bytes. 2 KiB; a
    /// longer Request-URI is answered 414 (RFC 3261 §21.4.12).
    pub max_uri_len: usize,
    /// Via values in the whole message. 70: a request may legitimately
    /// cross as many proxies as the usual initial Max-Forwards (RFC 3261
    /// §8.1.1.6), each adding a Via; RFC 4475 §3.1.1.7 (longreq) carries 34.
    pub max_vias: usize,
    /// Route values, and separately Record-Route values. 70, for the same
    /// reason as `max_vias`: each proxy on the path may record-route.
    pub max_routes: usize,
    /// Message body, in bytes. 32 KiB: SDP with many codecs is ~2 KiB,
    /// multipart bodies for emergency calls stay well below this.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 * 1024,
            max_headers: 256,
            max_header_line: 8 * 1024,
            max_uri_len: 2 * 1024,
            max_vias: 70,
            max_routes: 70,
            max_body: 32 * 1024,
        }
    }
}

impl Limits {
    /// The largest UDP payload over IPv4 (65 535 − 8 − 20).
    pub const UDP_MAX_DATAGRAM: usize = 65_507;
}

/// Which limit a message exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    MessageSize,
    HeaderCount,
    HeaderLine,
    UriLength,
    ViaCount,
    RouteCount,
    BodySize,
}

impl Limit {
    /// A short, stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MessageSize => "message_size",
            Limit::HeaderCount => "header_count",
            Limit::HeaderLine => "header_line",
            Limit::UriLength => "uri_length",
            Limit::ViaCount => "via_count",
            Limit::RouteCount => "route_count",
            Limit::BodySize => "body_size",
        }
    }
}
