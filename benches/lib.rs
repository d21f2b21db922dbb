//! Shared inputs for umproxy's benches: a corpus of SIP messages as they
//! appear on the wire at an edge proxy.

/// One corpus entry: a short name for tables and the message bytes.
pub struct Sample {
    pub name: &'static str,
    pub bytes: &'static [u8],
}

/// An INVITE with an SDP offer, 764 bytes (the size DESIGN.md §8 quotes).
pub const INVITE_SDP: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY\r\n\
User-Agent: ExampleSoftphone/2.1.4\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 240\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// The 200 OK answering that INVITE through two record-routing proxies.
pub const OK_200_RR: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.101\r\n\
Record-Route: <sip:p2.biloxi.example.com;lr>\r\n\
Record-Route: <sip:p1.atlanta.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@192.0.2.4;transport=udp>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 129\r\n\
\r\n\
v=0\r\n\
o=bob 2808844564 2808844564 IN IP4 192.0.2.4\r\n\
s=-\r\n\
c=IN IP4 192.0.2.4\r\n\
t=0 0\r\n\
m=audio 3456 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A REGISTER carrying Digest credentials.
pub const REGISTER_AUTH: &[u8] = b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n\
Max-Forwards: 70\r\n\
From: Bob <sip:bob@biloxi.example.com>;tag=a73kszlfl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 1j9FpLxk3uxtm8tn@biloxi.example.com\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:bob@192.0.2.201;transport=tcp>;expires=3600\r\n\
Authorization: Digest username=\"bob\", realm=\"biloxi.example.com\", \
nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:registrar.biloxi.example.com\", \
response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\"\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\
\r\n";

/// A BYE inside the dialog, routed through the recorded proxies.
pub const BYE: &[u8] = b"BYE sip:alice@pc33.atlanta.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p2.biloxi.example.com;lr>, <sip:p1.atlanta.example.com;lr>\r\n\
From: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
To: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 231 BYE\r\n\
Content-Length: 0\r\n\
\r\n";

/// An INVITE that crossed ten proxies: 10 Vias and 8 Record-Routes.
pub const INVITE_DEEP: &[u8] = b"INVITE sip:bob@192.0.2.4 SIP/2.0\r\n\
Via: SIP/2.0/UDP p10.example.com;branch=z9hG4bK10a\r\n\
Via: SIP/2.0/UDP p9.example.com;branch=z9hG4bK9a\r\n\
Via: SIP/2.0/UDP p8.example.com;branch=z9hG4bK8a\r\n\
Via: SIP/2.0/TCP p7.example.com;branch=z9hG4bK7a\r\n\
Via: SIP/2.0/TCP p6.example.com;branch=z9hG4bK6a\r\n\
Via: SIP/2.0/TLS p5.example.com:5061;branch=z9hG4bK5a\r\n\
Via: SIP/2.0/UDP p4.example.com;branch=z9hG4bK4a\r\n\
Via: SIP/2.0/UDP p3.example.com;branch=z9hG4bK3a\r\n\
Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bK2a\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.101\r\n\
Record-Route: <sip:p10.example.com;lr>\r\n\
Record-Route: <sip:p9.example.com;lr>\r\n\
Record-Route: <sip:p8.example.com;lr>\r\n\
Record-Route: <sip:p7.example.com;transport=tcp;lr>\r\n\
Record-Route: <sip:p6.example.com;transport=tcp;lr>\r\n\
Record-Route: <sips:p5.example.com;lr>\r\n\
Record-Route: <sip:p4.example.com;lr>\r\n\
Record-Route: <sip:p3.example.com;lr>\r\n\
Max-Forwards: 60\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Length: 0\r\n\
\r\n";

/// The parser corpus, in the order the README table lists it.
pub const CORPUS: [Sample; 5] = [
    Sample { name: "invite_sdp_764", bytes: INVITE_SDP },
    Sample { name: "ok_200_record_route", bytes: OK_200_RR },
    Sample { name: "register_auth", bytes: REGISTER_AUTH },
    Sample { name: "bye", bytes: BYE },
    Sample { name: "invite_10via_8rr", bytes: INVITE_DEEP },
];

#[cfg(test)]
mod tests {
    use super::*;
    use sip_message::Message;

    #[test]
    fn corpus_messages_parse_and_have_their_stated_shape() {
        assert_eq!(INVITE_SDP.len(), 764);
        for s in &CORPUS {
            let m = Message::parse_slice(s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!(m.len(), s.bytes.len(), "{}: Content-Length must cover the body exactly", s.name);
            // The comparison is only fair if rsip parses the whole message too.
            assert!(rsip::SipMessage::try_from(s.bytes).is_ok(), "{}: rsip must parse it", s.name);
        }
        let deep = Message::parse_slice(INVITE_DEEP).unwrap();
        assert_eq!((deep.via_count(), deep.record_route_count()), (10, 8));
        let reg = Message::parse_slice(REGISTER_AUTH).unwrap();
        assert!(reg.authorization().next().unwrap().unwrap().is_digest());
    }
}
