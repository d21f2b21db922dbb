//! RFC 5118 (SIP torture tests for IPv6), one test per message. Fixtures
//! are in `rfc5118/*.sip` with CRLF line endings, typed from the RFC.

use sip_message::{ErrorKind, HostKind, Message};
use std::net::Ipv6Addr;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("rfc5118/", $name, ".sip")).as_slice()
    };
}

fn parse(b: &[u8]) -> Message {
    Message::parse_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

fn v6(s: &str) -> HostKind {
    HostKind::Ipv6(s.parse::<Ipv6Addr>().unwrap())
}

#[test]
fn ipv6_good() {
    let m = parse(fixture!("ipv6-good"));
    let u = m.request_uri().unwrap();
    assert_eq!(u.host(), "[2001:db8::10]");
    assert_eq!(u.host_kind(), v6("2001:db8::10"));
    assert_eq!(m.top_via().host_kind(), v6("2001:db8::9:1"));
    assert_eq!(m.contacts().next().unwrap().uri.host(), "[2001:db8::1]");
}

#[test]
fn ipv6_bad() {
    let e = Message::parse_slice(fixture!("ipv6-bad")).unwrap_err();
    assert_eq!((e.kind, e.status()), (ErrorKind::RequestUri, Some(400)));
}

#[test]
fn port_ambiguous() {
    // Inside the brackets, `:5070` is part of the address, not a port.
    let u = parse(fixture!("port-ambiguous")).request_uri().map(|u| (u.host_kind(), u.port()));
    assert_eq!(u, Some((v6("2001:db8::10:5070"), None)));
}

#[test]
fn port_unambiguous() {
    let u = parse(fixture!("port-unambiguous")).request_uri().map(|u| (u.host_kind(), u.port()));
    assert_eq!(u, Some((v6("2001:db8::10"), Some(5070))));
}

#[test]
fn via1_valid() {
    let m = parse(fixture!("via1-valid"));
    assert_eq!(m.top_via().host(), "[2001:db8::9:1]");
    assert_eq!(m.top_via().received(), Some("[2001:db8::9:255]"));
    assert_eq!(m.branch(), Some("z9hG4bKas3-111"));
}

#[test]
fn via_received_param_no_delim() {
    let m = parse(fixture!("via-received-param-no-delim"));
    assert_eq!(m.top_via().received(), Some("2001:db8::9:255"));
    assert_eq!(m.branch(), Some("z9hG4bKas3"));
}

#[test]
fn ipv6_in_sdp() {
    let m = parse(fixture!("ipv6-in-sdp"));
    assert_eq!(m.to().uri.host_kind(), v6("2001:db8::10"));
    assert!(m.body().windows(21).any(|w| w == b"c=IN IP6 2001:db8::20"));
    assert_eq!(m.body().len(), m.content_length().unwrap() as usize);
}

#[test]
fn mult_ip_in_header() {
    let m = parse(fixture!("mult-ip-in-header"));
    let v: Vec<_> = m.vias().map(|v| (v.host_kind(), v.port())).collect();
    assert_eq!(v[0], (v6("2001:db8::9:1"), Some(6050)));
    assert!(matches!(v[1].0, HostKind::Ipv4(_)));
    assert_eq!(m.vias().nth(2).unwrap().received(), Some("192.0.2.200"));
}

#[test]
fn mult_ip_in_sdp() {
    let m = parse(fixture!("mult-ip-in-sdp"));
    assert_eq!(m.body().len(), m.content_length().unwrap() as usize);
}

#[test]
fn ipv4_mapped_ipv6() {
    let m = parse(fixture!("ipv4-mapped-ipv6"));
    assert_eq!(m.top_via().host_kind(), v6("::ffff:192.0.2.10"));
    assert_eq!(m.top_via().port(), Some(19823));
    let c = m.contacts().next().unwrap();
    assert_eq!((c.uri.host(), c.uri.port()), ("[::ffff:192.0.2.10]", Some(19823)));
}

#[test]
fn ipv6_bug_abnf_3_colons() {
    // RFC 5118 §4.10: RFC 3261's ABNF wrongly admitted three colons.
    let e = Message::parse_slice(fixture!("ipv6-bug-abnf-3-colons")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::RequestUri);
}

#[test]
fn ipv6_correct_abnf_2_colons() {
    let m = parse(fixture!("ipv6-correct-abnf-2-colons"));
    assert_eq!(m.request_uri().unwrap().host_kind(), v6("2001:db8::192.0.2.1"));
    assert_eq!(m.to().uri.host_kind(), v6("2001:db8::192.0.2.1"));
}
