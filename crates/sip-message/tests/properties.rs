//! Property tests: generated messages survive parse → write → parse
//! unchanged, editing then parsing shows the edits, and arbitrary bytes
//! never panic the parser or the framer.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sip_message::{Frame, Framer, HeaderName, Limits, Message};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,11}"
}
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,8}(\\.[a-z][a-z0-9]{0,8}){0,3}",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254).prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}
fn port() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), (1u16..).prop_map(|p| format!(":{p}"))]
}
fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("sip"), Just("sips")],
        proptest::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,10}|%[0-9A-F]{2}"),
        host(),
        port(),
        proptest::collection::vec((token(), proptest::option::of("[a-z0-9]{1,6}")), 0..3),
    )
        .prop_map(|(scheme, user, host, port, params)| {
            let mut s = format!("{scheme}:");
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            s.push_str(&port);
            for (n, v) in params {
                s.push(';');
                s.push_str(&n.replace(['%', '`', '\''], "x"));
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(&v);
                }
            }
            s
        })
}
fn name_addr() -> impl Strategy<Value = (String, String)> {
    (proptest::option::of("\"[a-zA-Z ]{0,10}\"|[A-Za-z]{1,8}"), sip_uri()).prop_map(|(d, u)| {
        let text = match d {
            Some(d) => format!("{d} <{u}>"),
            None => format!("<{u}>"),
        };
        (text, u)
    })
}

/// What a generated message must parse back to.
#[derive(Debug, Clone)]
struct Spec {
    method: String,
    status: Option<u16>,
    ruri: String,
    vias: Vec<(String, String, String)>, // transport, host, branch
    from: (String, String),
    from_tag: String,
    to: (String, String),
    to_tag: Option<String>,
    call_id: String,
    cseq: u32,
    max_forwards: Option<u8>,
    routes: Vec<(String, String)>,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
    compact: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            prop_oneof![Just("INVITE".to_string()), Just("BYE".to_string()), Just("REGISTER".to_string()), token()],
            proptest::option::of(100u16..700),
            sip_uri(),
            proptest::collection::vec(
                (prop_oneof![Just("UDP"), Just("TCP"), Just("TLS")], host(), "z9hG4bK[a-zA-Z0-9]{1,12}")
                    .prop_map(|(t, h, b)| (t.to_string(), h, b)),
                1..5,
            ),
        ),
        (name_addr(), token(), name_addr(), proptest::option::of(token()), "[a-zA-Z0-9]{1,16}(@[a-z0-9.]{1,10})?"),
        (
            0u32..(1 << 31),
            proptest::option::of(any::<u8>()),
            proptest::collection::vec(name_addr(), 0..4),
            proptest::collection::vec(("X-[A-Za-z]{1,8}", "[ -~]{0,30}"), 0..4),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (method, status, ruri, vias),
                (from, from_tag, to, to_tag, call_id),
                (cseq, max_forwards, routes, extra, body, compact),
            )| {
                let extra = extra.into_iter().map(|(n, v)| (n, v.trim().to_string())).collect();
                Spec {
                    method,
                    status,
                    ruri,
                    vias,
                    from,
                    from_tag,
                    to,
                    to_tag,
                    call_id,
                    cseq,
                    max_forwards,
                    routes,
                    extra,
                    body,
                    compact,
                }
            },
        )
}

impl Spec {
    fn write(&self) -> Vec<u8> {
        let mut s = match self.status {
            Some(code) => format!("SIP/2.0 {code} Some Reason\r\n"),
            None => format!("{} {} SIP/2.0\r\n", self.method, self.ruri),
        };
        let (v, f, t, i, l) =
            if self.compact { ("v", "f", "t", "i", "l") } else { ("Via", "From", "To", "Call-ID", "Content-Length") };
        // Vias alternate between one per line and two on a line.
        for pair in self.vias.chunks(2) {
            let vals: Vec<_> = pair.iter().map(|(t, h, b)| format!("SIP/2.0/{t} {h};branch={b}")).collect();
            s.push_str(&format!("{v}: {}\r\n", vals.join(", ")));
        }
        s.push_str(&format!("{f}: {};tag={}\r\n", self.from.0, self.from_tag));
        match &self.to_tag {
            Some(tag) => s.push_str(&format!("{t}: {};tag={tag}\r\n", self.to.0)),
            None => s.push_str(&format!("{t}: {}\r\n", self.to.0)),
        }
        s.push_str(&format!("{i}: {}\r\nCSeq: {} {}\r\n", self.call_id, self.cseq, self.method));
        if let Some(mf) = self.max_forwards {
            s.push_str(&format!("Max-Forwards: {mf}\r\n"));
        }
        for (text, _) in &self.routes {
            s.push_str(&format!("Route: {text}\r\n"));
        }
        for (n, val) in &self.extra {
            s.push_str(&format!("{n}: {val}\r\n"));
        }
        s.push_str(&format!("{l}: {}\r\n\r\n", self.body.len()));
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    fn check(&self, m: &Message) {
        assert_eq!(m.status(), self.status);
        if self.status.is_none() {
            assert_eq!(m.method_str(), Some(self.method.as_str()));
            assert_eq!(m.request_uri_str(), Some(self.ruri.as_str()));
        }
        let vias: Vec<_> = m
            .vias()
            .map(|v| (v.transport().to_string(), v.host().to_string(), v.branch().unwrap().to_string()))
            .collect();
        assert_eq!(vias, self.vias);
        assert_eq!(m.from().uri.as_str(), self.from.1);
        assert_eq!(m.from_tag(), Some(self.from_tag.as_str()));
        assert_eq!(m.to().uri.as_str(), self.to.1);
        assert_eq!(m.to_tag(), self.to_tag.as_deref());
        assert_eq!(m.call_id(), self.call_id);
        assert_eq!(m.cseq().0, self.cseq);
        assert_eq!(m.max_forwards(), self.max_forwards.map(u32::from));
        let routes: Vec<_> = m.routes().map(|r| r.uri.as_str().to_string()).collect();
        assert_eq!(routes, self.routes.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
        for (n, v) in &self.extra {
            assert!(m.header_values_named(n).any(|x| x == v.as_bytes()), "{n}");
        }
        assert_eq!(m.body(), &self.body[..]);
    }
}

/// Everything observable about a parsed message, for identity checks.
fn observe(m: &Message) -> Vec<Vec<u8>> {
    let mut o = vec![
        format!("{:?} {:?} {:?} {:?}", m.status(), m.method_str(), m.request_uri_str(), m.reason()).into_bytes(),
        format!("{:?} {:?} {:?} {:?}", m.cseq(), m.max_forwards(), m.content_length(), m.content_type()).into_bytes(),
        format!("{:?} {:?} {:?} {}", m.branch(), m.from_tag(), m.to_tag(), m.call_id()).into_bytes(),
        m.body().to_vec(),
    ];
    for h in m.headers() {
        o.push([m.header_name_str(h).as_bytes(), b": ", m.header_value(h)].concat());
    }
    o.extend(m.vias().map(|v| v.as_bytes().to_vec()));
    o.extend(m.routes().map(|v| v.as_bytes().to_vec()));
    o.extend(m.contacts().map(|v| v.as_bytes().to_vec()));
    o
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parse_write_parse_is_identity(s in spec()) {
        let wire = s.write();
        let m = Message::parse_slice(&wire).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&wire)));
        s.check(&m);
        let written = m.edit().finish();
        prop_assert_eq!(&written[..], &wire[..]);
        let again = Message::parse(written, &Limits::default()).unwrap();
        prop_assert_eq!(observe(&again), observe(&m));
    }

    #[test]
    fn edits_show_after_reparse(
        s in spec(),
        new_branch in "z9hG4bK[a-zA-Z0-9]{4,12}",
        rr in sip_uri(),
        ruri in sip_uri(),
        body in proptest::collection::vec(any::<u8>(), 0..40),
        pops in 0usize..3,
    ) {
        prop_assume!(s.status.is_none());
        let m = Message::parse_slice(s.write()).unwrap();
        let mut e = m.edit()
            .push_via(&format!("SIP/2.0/TCP proxy.example.com;branch={new_branch}"))
            .decrement_max_forwards()
            .push_record_route(&format!("<{rr};lr>"))
            .set_request_uri(&ruri)
            .add_header("X-Added", "yes")
            .remove_header(HeaderName::CallId)
            .add_header("Call-ID", "replaced@example.com")
            .set_body(Some("text/plain"), Bytes::from(body.clone()));
        for _ in 0..pops {
            e = e.pop_route();
        }
        let out = Message::parse(e.finish(), &Limits::default()).unwrap();
        prop_assert_eq!(out.branch(), Some(new_branch.as_str()));
        prop_assert_eq!(out.via_count(), s.vias.len() + 1);
        prop_assert_eq!(out.max_forwards(), Some(s.max_forwards.map(|n| u32::from(n).saturating_sub(1)).unwrap_or(70)));
        let first_rr = out.record_routes().next().map(|r| r.uri.as_str().to_string());
        prop_assert_eq!(first_rr, Some(format!("{rr};lr")));
        prop_assert_eq!(out.request_uri_str(), Some(ruri.as_str()));
        prop_assert_eq!(out.call_id(), "replaced@example.com");
        prop_assert_eq!(out.header_values_named("x-added").next(), Some(&b"yes"[..]));
        prop_assert_eq!(out.body(), &body[..]);
        prop_assert_eq!(out.content_type(), Some("text/plain"));
        let routes: Vec<_> = out.routes().map(|r| r.uri.as_str().to_string()).collect();
        let expected: Vec<_> = s.routes.iter().skip(pops).map(|r| r.1.clone()).collect();
        prop_assert_eq!(routes, expected);
        prop_assert_eq!(out.from_tag(), Some(s.from_tag.as_str()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(m) = Message::parse_slice(&data) {
            let _ = observe(&m);
        }
    }

    #[test]
    fn mutated_messages_never_panic(s in spec(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut wire = s.write();
        for (at, byte) in flips {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        if let Ok(m) = Message::parse_slice(&wire) {
            let _ = observe(&m);
            let _ = m.edit().push_via("SIP/2.0/UDP p.example.com;branch=z9hG4bKx").pop_route().remove_top_via().finish();
            let _ = m.authorization().count() + m.diversions().count() + m.reasons().count();
        }
    }

    #[test]
    fn framer_reassembles_any_chunking(s in spec(), cuts in proptest::collection::vec(1usize..64, 1..40), pings in 0usize..3) {
        let one = s.write();
        let mut stream = b"\r\n\r\n".repeat(pings);
        stream.extend_from_slice(&one);
        stream.extend_from_slice(&one);
        let mut f = Framer::new(&Limits::default());
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut rest = &stream[..];
        let mut cuts = cuts.into_iter().cycle();
        while !rest.is_empty() {
            let n = cuts.next().unwrap().min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(fr) = f.next_frame(&mut buf).unwrap() {
                frames.push(fr);
            }
        }
        let mut expect = vec![Frame::Ping; pings];
        expect.push(Frame::Message(Bytes::from(one.clone())));
        expect.push(Frame::Message(Bytes::from(one)));
        prop_assert_eq!(frames, expect);
    }

    #[test]
    fn framer_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024), cut in 1usize..256) {
        let mut f = Framer::new(&Limits::default());
        let mut buf = BytesMut::new();
        for chunk in data.chunks(cut) {
            buf.extend_from_slice(chunk);
            loop {
                match f.next_frame(&mut buf) {
                    Ok(Some(Frame::Message(m))) => { let _ = Message::parse(m, &Limits::default()); }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
