//! Every limit in `Limits` is enforced with a typed error that names it and
//! maps to the status the proxy answers with.

use bytes::{Bytes, BytesMut};
use sip_message::{ErrorKind, Framer, FramingError, Limit, Limits, Message};

const HEAD: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
Call-ID: abc\r\nCSeq: 1 INVITE\r\n";

fn msg(extra: &str, body: &str) -> Bytes {
    Bytes::from(format!("{HEAD}{extra}Content-Length: {}\r\n\r\n{body}", body.len()))
}

fn error(b: Bytes, limits: &Limits) -> (ErrorKind, Option<u16>) {
    let e = Message::parse(b, limits).unwrap_err();
    (e.kind, e.status())
}

#[test]
fn defaults_accept_an_ordinary_message() {
    assert!(Message::parse(msg("", "v=0\r\n"), &Limits::default()).is_ok());
}

#[test]
fn message_size_is_413() {
    let l = Limits { max_message_size: 200, ..Limits::default() };
    assert_eq!(error(msg("", &"x".repeat(100)), &l), (ErrorKind::LimitExceeded(Limit::MessageSize), Some(413)));
}

#[test]
fn body_size_is_413() {
    let l = Limits { max_body: 10, ..Limits::default() };
    assert_eq!(error(msg("", &"x".repeat(11)), &l), (ErrorKind::LimitExceeded(Limit::BodySize), Some(413)));
}

#[test]
fn header_count_is_513() {
    let l = Limits { max_headers: 8, ..Limits::default() };
    let extra = "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n";
    assert_eq!(error(msg(extra, ""), &l), (ErrorKind::LimitExceeded(Limit::HeaderCount), Some(513)));
}

#[test]
fn header_line_is_513_folds_included() {
    let l = Limits { max_header_line: 40, ..Limits::default() };
    let long = format!("X-Long: {}\r\n", "y".repeat(40));
    assert_eq!(error(msg(&long, ""), &l), (ErrorKind::LimitExceeded(Limit::HeaderLine), Some(513)));
    let folded = format!("X-Folded: {}\r\n {}\r\n", "y".repeat(20), "z".repeat(20));
    assert_eq!(error(msg(&folded, ""), &l), (ErrorKind::LimitExceeded(Limit::HeaderLine), Some(513)));
}

#[test]
fn request_uri_length_is_414() {
    let l = Limits { max_uri_len: 30, ..Limits::default() };
    let b = msg("", "");
    let long = String::from_utf8_lossy(&b)
        .replace("sip:bob@example.com SIP", &format!("sip:{}@example.com SIP", "b".repeat(40)));
    assert_eq!(error(Bytes::from(long), &l), (ErrorKind::LimitExceeded(Limit::UriLength), Some(414)));
}

#[test]
fn via_count_is_513() {
    let l = Limits { max_vias: 2, ..Limits::default() };
    let extra = "Via: SIP/2.0/UDP b.example.com;branch=z9hG4bK2, SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n";
    assert_eq!(error(msg(extra, ""), &l), (ErrorKind::LimitExceeded(Limit::ViaCount), Some(513)));
}

#[test]
fn route_count_is_513_for_route_and_record_route() {
    let l = Limits { max_routes: 2, ..Limits::default() };
    let routes = "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nRoute: <sip:p3.example.com;lr>\r\n";
    assert_eq!(error(msg(routes, ""), &l), (ErrorKind::LimitExceeded(Limit::RouteCount), Some(513)));
    let rr = routes.replace("Route:", "Record-Route:");
    assert_eq!(error(msg(&rr, ""), &l), (ErrorKind::LimitExceeded(Limit::RouteCount), Some(513)));
    // Each is counted on its own: two Routes and two Record-Routes pass.
    let both = "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
                Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n";
    assert!(Message::parse(msg(both, ""), &l).is_ok());
}

#[test]
fn bad_version_is_505_and_garbage_is_dropped() {
    let b = String::from_utf8_lossy(&msg("", "")).replace("SIP/2.0\r\n", "SIP/3.0\r\n");
    assert_eq!(error(Bytes::from(b), &Limits::default()), (ErrorKind::Version, Some(505)));
    assert_eq!(error(Bytes::from_static(b"\x00\x01 garbage\r\n\r\n"), &Limits::default()).1, None);
}

#[test]
fn framer_enforces_size_limits_before_buffering() {
    let l = Limits { max_body: 10, max_message_size: 400, ..Limits::default() };
    let mut f = Framer::new(&l);
    let mut buf = BytesMut::from(&msg("", &"x".repeat(11))[..]);
    let e = f.next_frame(&mut buf).unwrap_err();
    assert_eq!((e, e.status()), (FramingError::LimitExceeded(Limit::BodySize), 413));
    let mut f = Framer::new(&l);
    let mut buf = BytesMut::from(&b"INVITE sip:a@b SIP/2.0\r\n"[..]);
    buf.extend_from_slice(&b"X: y\r\n".repeat(80));
    let e = f.next_frame(&mut buf).unwrap_err();
    assert_eq!((e, e.status()), (FramingError::LimitExceeded(Limit::MessageSize), 413));
    let mut f = Framer::new(&Limits::default());
    let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n"[..]);
    assert_eq!(f.next_frame(&mut buf), Err(FramingError::MissingContentLength));
}

#[test]
fn route_elements_are_counted_at_parse_time_and_parsed_on_access() {
    // Structure (brackets, quotes, scheme) is checked by the parser…
    for bad in ["sip:p1.example.com;lr", "<sip:p1.example.com;lr", "< sip:p1.example.com>", "\"x <sip:p1>"] {
        let e = Message::parse(msg(&format!("Route: {bad}\r\n"), ""), &Limits::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Header(sip_message::HeaderName::Route), "{bad}");
    }
    // …the URI grammar when the elements are read.
    let m = Message::parse(
        msg("Route: <sip:p1.example.com;lr>, <sip:-bad-.example.com;lr>, <sip:p3.example.com>\r\n", ""),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(m.route_count(), 3);
    let hosts: Vec<_> = m.routes().map(|r| r.uri.host().to_string()).collect();
    assert_eq!(hosts, ["p1.example.com"]);
    let e = m.check_name_addrs().unwrap_err();
    assert_eq!((e.kind, e.status()), (ErrorKind::Header(sip_message::HeaderName::Route), Some(400)));
    let good =
        Message::parse(msg("Record-Route: <sip:p1.example.com;lr>\r\nContact: <sip:a@b>\r\n", ""), &Limits::default());
    assert!(good.unwrap().check_name_addrs().is_ok());
}
