//! Header names: the ones a proxy knows, with their compact forms.

/// A header name. Known names are recognised case-insensitively, compact
/// forms included (RFC 3261 §7.3.3, RFC 3841 `j`/`d`/`r`/`b`, RFC 4028 `x`,
/// RFC 3515 `r`, RFC 3892 `b`, RFC 3265 `o`/`u`, RFC 4474 `y`/`n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Route,
    RecordRoute,
    Contact,
    ContentLength,
    ContentType,
    ContentEncoding,
    Require,
    ProxyRequire,
    Supported,
    Unsupported,
    Expires,
    MinExpires,
    Allow,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    AuthenticationInfo,
    Diversion,
    HistoryInfo,
    Privacy,
    Path,
    Reason,
    RetryAfter,
    Event,
    ReferTo,
    Subject,
    UserAgent,
    Server,
    Date,
    Timestamp,
    /// Any other header; its name is in the message bytes.
    Other,
}

/// `name == text` ignoring ASCII case, where `text` holds only letters and
/// `-`. Each text byte with its 0x40 bit set (a letter) lends the 0x20 bit
/// as a case mask, so letters compare case-insensitively and `-` exactly.
/// Eight bytes at a time (header names are hot: one per line of every
/// message).
#[inline]
fn eq_fold(name: &[u8], text: &[u8]) -> bool {
    if name.len() != text.len() {
        return false;
    }
    // Overlapping first and last words cover every byte of 4..=16-byte
    // names in two compares; longer names loop over words first.
    let (mut a, mut b) = (name, text);
    while a.len() > 16 {
        let (Some((wa, ra)), Some((wb, rb))) = (a.split_first_chunk::<8>(), b.split_first_chunk::<8>()) else {
            return false;
        };
        if !fold8(*wa, *wb) {
            return false;
        }
        (a, b) = (ra, rb);
    }
    if let (Some(fa), Some(la), Some(fb), Some(lb)) =
        (a.first_chunk::<8>(), a.last_chunk::<8>(), b.first_chunk::<8>(), b.last_chunk::<8>())
    {
        return fold8(*fa, *fb) && fold8(*la, *lb);
    }
    if let (Some(fa), Some(la), Some(fb), Some(lb)) =
        (a.first_chunk::<4>(), a.last_chunk::<4>(), b.first_chunk::<4>(), b.last_chunk::<4>())
    {
        return fold4(*fa, *fb) && fold4(*la, *lb);
    }
    a.iter().zip(b).all(|(&x, &y)| {
        let m = (y & 0x40) >> 1;
        x | m == y | m
    })
}

#[inline(always)]
fn fold8(x: [u8; 8], y: [u8; 8]) -> bool {
    let (x, y) = (u64::from_le_bytes(x), u64::from_le_bytes(y));
    let m = (y & 0x4040_4040_4040_4040) >> 1;
    x | m == y | m
}

#[inline(always)]
fn fold4(x: [u8; 4], y: [u8; 4]) -> bool {
    let (x, y) = (u32::from_le_bytes(x), u32::from_le_bytes(y));
    let m = (y & 0x4040_4040) >> 1;
    x | m == y | m
}

impl HeaderName {
    /// Recognise a header name (case-insensitive, compact forms included).
    #[inline]
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if let [c] = name {
            return match c.to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'e' => ContentEncoding,
                b'k' => Supported,
                b's' => Subject,
                b'o' => Event,
                b'r' => ReferTo,
                _ => Other,
            };
        }
        // Dispatch on length and first letter so that each name costs one
        // case-insensitive compare at most (header names are hot: one per
        // line of every message).
        let first = name.first().map_or(0, |c| c.to_ascii_lowercase());
        let (text, h): (&[u8], HeaderName) = match (name.len(), first) {
            (2, b't') => (b"To", To),
            (3, b'v') => (b"Via", Via),
            (4, b'f') => (b"From", From),
            (4, b'c') => (b"CSeq", CSeq),
            (4, b'p') => (b"Path", Path),
            (4, b'd') => (b"Date", Date),
            (5, b'r') => (b"Route", Route),
            (5, b'a') => (b"Allow", Allow),
            (5, b'e') => (b"Event", Event),
            (6, b'r') => (b"Reason", Reason),
            (6, b's') => (b"Server", Server),
            (7, b'c') => match name.get(2).map(u8::to_ascii_lowercase) {
                Some(b'l') => (b"Call-ID", CallId),
                _ => (b"Contact", Contact),
            },
            (7, b'r') => (b"Require", Require),
            (7, b'e') => (b"Expires", Expires),
            (7, b'p') => (b"Privacy", Privacy),
            (7, b's') => (b"Subject", Subject),
            (8, b'r') => (b"Refer-To", ReferTo),
            (9, b's') => (b"Supported", Supported),
            (9, b'd') => (b"Diversion", Diversion),
            (9, b't') => (b"Timestamp", Timestamp),
            (10, b'u') => (b"User-Agent", UserAgent),
            (11, b'u') => (b"Unsupported", Unsupported),
            (11, b'm') => (b"Min-Expires", MinExpires),
            (11, b'r') => (b"Retry-After", RetryAfter),
            (12, b'm') => (b"Max-Forwards", MaxForwards),
            (12, b'r') => (b"Record-Route", RecordRoute),
            (12, b'c') => (b"Content-Type", ContentType),
            (12, b'h') => (b"History-Info", HistoryInfo),
            (13, b'p') => (b"Proxy-Require", ProxyRequire),
            (13, b'a') => (b"Authorization", Authorization),
            (14, b'c') => (b"Content-Length", ContentLength),
            (16, b'w') => (b"WWW-Authenticate", WwwAuthenticate),
            (16, b'c') => (b"Content-Encoding", ContentEncoding),
            (18, b'p') => (b"Proxy-Authenticate", ProxyAuthenticate),
            (19, b'p') => (b"Proxy-Authorization", ProxyAuthorization),
            (19, b'a') => (b"Authentication-Info", AuthenticationInfo),
            _ => return Other,
        };
        if eq_fold(name, text) {
            return h;
        }
        Other
    }

    /// The canonical (long) form, for writing.
    pub fn as_str(self) -> &'static str {
        use HeaderName::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            MaxForwards => "Max-Forwards",
            Route => "Route",
            RecordRoute => "Record-Route",
            Contact => "Contact",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            ContentEncoding => "Content-Encoding",
            Require => "Require",
            ProxyRequire => "Proxy-Require",
            Supported => "Supported",
            Unsupported => "Unsupported",
            Expires => "Expires",
            MinExpires => "Min-Expires",
            Allow => "Allow",
            Authorization => "Authorization",
            ProxyAuthorization => "Proxy-Authorization",
            WwwAuthenticate => "WWW-Authenticate",
            ProxyAuthenticate => "Proxy-Authenticate",
            AuthenticationInfo => "Authentication-Info",
            Diversion => "Diversion",
            HistoryInfo => "History-Info",
            Privacy => "Privacy",
            Path => "Path",
            Reason => "Reason",
            RetryAfter => "Retry-After",
            Event => "Event",
            ReferTo => "Refer-To",
            Subject => "Subject",
            UserAgent => "User-Agent",
            Server => "Server",
            Date => "Date",
            Timestamp => "Timestamp",
            Other => "",
        }
    }

    /// Headers whose value is a comma-separated list that may be split over
    /// several header lines (RFC 3261 §7.3.1) and that the parser splits.
    pub fn is_list(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Via | Route
                | RecordRoute
                | Contact
                | Require
                | ProxyRequire
                | Supported
                | Unsupported
                | Allow
                | Path
                | Diversion
                | HistoryInfo
                | Privacy
                | Reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_compact_forms_map() {
        assert_eq!(HeaderName::from_bytes(b"vIa"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"X-Foo"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"k"), HeaderName::Supported);
        use HeaderName::*;
        let all = [
            Via,
            From,
            To,
            CallId,
            CSeq,
            MaxForwards,
            Route,
            RecordRoute,
            Contact,
            ContentLength,
            ContentType,
            ContentEncoding,
            Require,
            ProxyRequire,
            Supported,
            Unsupported,
            Expires,
            MinExpires,
            Allow,
            Authorization,
            ProxyAuthorization,
            WwwAuthenticate,
            ProxyAuthenticate,
            AuthenticationInfo,
            Diversion,
            HistoryInfo,
            Privacy,
            Path,
            Reason,
            RetryAfter,
            Event,
            ReferTo,
            Subject,
            UserAgent,
            Server,
            Date,
            Timestamp,
        ];
        for h in all {
            assert_eq!(HeaderName::from_bytes(h.as_str().as_bytes()), h);
            assert_eq!(HeaderName::from_bytes(h.as_str().to_ascii_uppercase().as_bytes()), h);
        }
        assert_eq!(HeaderName::from_bytes(b"Call-IX"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Contacs"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
        // `-` matches only itself; bytes that fold onto a letter do not match.
        assert_eq!(HeaderName::from_bytes(b"Max\rForwards"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Record\rRoute"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"C@ll-ID"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"1ia"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"cALL-iD"), HeaderName::CallId);
    }
}
