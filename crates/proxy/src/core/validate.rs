//! Request validation, RFC 3261 §16.3, before the proxy spends anything on a
//! request. A plain function: message in, verdict out.

use sip_message::{Message, Method, Scheme, Uri};

/// Why a request is answered by the proxy itself instead of being forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: &'static str,
    /// Extra header lines for the response (name, value).
    pub headers: Vec<(&'static str, String)>,
}

impl Rejection {
    pub fn new(code: u16, reason: &'static str) -> Rejection {
        Rejection { code, reason, headers: Vec::new() }
    }
}

/// Option tags this proxy understands in Proxy-Require. None yet: every tag
/// is answered 420 (RFC 3261 §16.3 step 5).
const SUPPORTED_PROXY_OPTIONS: &[&str] = &[];

/// RFC 3261 §16.3 steps 2, 3 and 5 (step 1, syntax, happened at parse time;
/// step 4, loop detection, needs the proxy's identity: see
/// [`crate::core::branch::LoopDetector`]; step 6, Proxy-Authorization, is the
/// authenticator's).
pub fn validate_request(msg: &Message) -> Result<(), Rejection> {
    validate_request_with(msg, msg.request_uri().as_ref())
}

/// [`validate_request`] with the Request-URI already parsed (`ruri`, from
/// `msg.request_uri()`), for a caller that reads it again afterwards.
pub fn validate_request_with(msg: &Message, ruri: Option<&Uri<'_>>) -> Result<(), Rejection> {
    // Step 2: URI scheme. sip, sips and tel are understood; tel URIs are
    // routed by the static routes / ExUM numbers.
    match ruri {
        Some(uri) if matches!(uri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) => {}
        _ => return Err(Rejection::new(416, "Unsupported URI Scheme")),
    }
    // Step 1 (syntax) for what routing reads: the parser only locates Route
    // elements; their grammar is checked when read, and a malformed one
    // stops the iteration short of the count.
    if msg.routes().count() != msg.route_count() {
        return Err(Rejection::new(400, "Bad Request"));
    }
    // Step 3: Max-Forwards. Zero means the request may not go further; an
    // OPTIONS with zero is answered by the proxy itself (§16.3 step 3 lets a
    // proxy respond to OPTIONS in that case) by the caller of this function.
    if msg.max_forwards() == Some(0) && msg.method() != Some(Method::Options) {
        return Err(Rejection::new(483, "Too Many Hops"));
    }
    // Step 5: Proxy-Require.
    let mut unsupported: Vec<&str> = Vec::new();
    for tag in msg.proxy_require() {
        if !SUPPORTED_PROXY_OPTIONS.iter().any(|s| s.eq_ignore_ascii_case(tag)) && unsupported.len() < 16 {
            unsupported.push(tag);
        }
    }
    if !unsupported.is_empty() {
        let mut r = Rejection::new(420, "Bad Extension");
        r.headers.push(("Unsupported", unsupported.join(", ")));
        return Err(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ruri: &str, extra: &str) -> Message {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@example.test>;tag=1\r\n\
             To: <sip:b@example.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse_slice(text.as_bytes()).expect("test message parses")
    }

    #[test]
    fn sip_sips_and_tel_are_accepted() {
        for uri in ["sip:b@example.test", "sips:b@example.test", "tel:+15550100"] {
            assert_eq!(validate_request(&req(uri, "Max-Forwards: 70\r\n")), Ok(()), "{uri}");
        }
    }

    #[test]
    fn unknown_scheme_is_416() {
        let r = validate_request(&req("mailto:b@example.test", "")).unwrap_err();
        assert_eq!(r.code, 416);
    }

    #[test]
    fn max_forwards_zero_is_483_except_options() {
        assert_eq!(validate_request(&req("sip:b@example.test", "Max-Forwards: 0\r\n")).unwrap_err().code, 483);
        let options = Message::parse_slice(
            "OPTIONS sip:b@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n\
             From: <sip:a@example.test>;tag=1\r\nTo: <sip:b@example.test>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 0\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("parses");
        assert_eq!(validate_request(&options), Ok(()));
    }

    #[test]
    fn a_malformed_route_is_400() {
        let r = validate_request(&req("sip:b@example.test", "Route: <sip:10.0.0.1;lr>, <sip:[bad;lr>\r\n"));
        assert_eq!(r.map_err(|r| r.code), Err(400));
        assert_eq!(
            validate_request(&req("sip:b@example.test", "Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>\r\n")),
            Ok(())
        );
    }

    #[test]
    fn proxy_require_is_420_listing_the_tags() {
        let r = validate_request(&req("sip:b@example.test", "Proxy-Require: foo, bar\r\n")).unwrap_err();
        assert_eq!(r.code, 420);
        assert_eq!(r.headers, vec![("Unsupported", "foo, bar".to_string())]);
    }
}
