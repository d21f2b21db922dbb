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
        // Dispatch on length first so each name costs at most a couple of
        // case-insensitive compares.
        let candidates: &[(&[u8], HeaderName)] = match name.len() {
            2 => &[(b"To", To)],
            3 => &[(b"Via", Via)],
            4 => &[(b"From", From), (b"CSeq", CSeq), (b"Path", Path), (b"Date", Date)],
            5 => &[(b"Route", Route), (b"Allow", Allow), (b"Event", Event)],
            6 => &[(b"Reason", Reason), (b"Server", Server)],
            7 => &[
                (b"Call-ID", CallId),
                (b"Contact", Contact),
                (b"Require", Require),
                (b"Expires", Expires),
                (b"Privacy", Privacy),
                (b"Subject", Subject),
            ],
            8 => &[(b"Refer-To", ReferTo)],
            9 => &[(b"Supported", Supported), (b"Diversion", Diversion), (b"Timestamp", Timestamp)],
            10 => &[(b"User-Agent", UserAgent)],
            11 => &[(b"Unsupported", Unsupported), (b"Min-Expires", MinExpires), (b"Retry-After", RetryAfter)],
            12 => &[
                (b"Max-Forwards", MaxForwards),
                (b"Record-Route", RecordRoute),
                (b"Content-Type", ContentType),
                (b"History-Info", HistoryInfo),
            ],
            13 => &[(b"Proxy-Require", ProxyRequire), (b"Authorization", Authorization)],
            14 => &[(b"Content-Length", ContentLength)],
            16 => &[(b"WWW-Authenticate", WwwAuthenticate), (b"Content-Encoding", ContentEncoding)],
            18 => &[(b"Proxy-Authenticate", ProxyAuthenticate)],
            19 => &[(b"Proxy-Authorization", ProxyAuthorization), (b"Authentication-Info", AuthenticationInfo)],
            _ => &[],
        };
        for (text, h) in candidates {
            if name.eq_ignore_ascii_case(text) {
                return *h;
            }
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
        for h in [HeaderName::Via, HeaderName::ProxyAuthorization, HeaderName::HistoryInfo] {
            assert_eq!(HeaderName::from_bytes(h.as_str().as_bytes()), h);
        }
    }
}
