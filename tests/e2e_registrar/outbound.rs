//! RFC 5626 outbound: a UA registering over TCP with `+sip.instance` and
//! `reg-id` is reached over that very connection (the flow), even though
//! its Contact address is unreachable from the proxy.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use e2e_support::sip::unique;
use e2e_support::SipMessage;

use crate::client::{bindings, challenge_for, credentials, Alg, Ua};
use crate::harness::{Setup, Umproxy, DOMAIN};

/// One TCP connection to the proxy, read with a deadline.
struct Flow {
    stream: TcpStream,
    local: SocketAddr,
    buf: Vec<u8>,
}

impl Flow {
    fn connect(proxy: SocketAddr) -> Flow {
        let stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(5)).expect("connect");
        // Loopback delivers in milliseconds; a few seconds is plenty.
        stream.set_read_timeout(Some(Duration::from_secs(4))).expect("timeout");
        let local = stream.local_addr().expect("addr");
        Flow { stream, local, buf: Vec::new() }
    }

    fn send(&mut self, msg: &SipMessage) {
        self.stream.write_all(&msg.to_bytes()).expect("write");
    }

    /// The next message on the connection (CRLF keep-alives skipped), framed
    /// by Content-Length; panics after the read timeout.
    fn next(&mut self) -> SipMessage {
        self.try_next().expect("a message before the timeout")
    }

    /// Like [`next`](Self::next), with the read error (timeout) returned.
    fn try_next(&mut self) -> std::io::Result<SipMessage> {
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = SipMessage::parse(&self.buf[..end + 4]).expect("parsable header");
                let len: usize = head.header("Content-Length").and_then(|l| l.trim().parse().ok()).unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let raw: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return Ok(SipMessage::parse(&raw).expect("parsable message"));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            assert!(n > 0, "the proxy closed the flow");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send a request and return the first final response.
    fn transact(&mut self, req: &SipMessage) -> SipMessage {
        self.send(req);
        loop {
            let m = self.next();
            if m.status().is_some_and(|s| s >= 200) {
                return m;
            }
        }
    }
}

fn register(flow: &Flow, cseq: u32, call_id: &str, contact: &str) -> SipMessage {
    let aor = format!("sip:alice@{DOMAIN}");
    let headers = vec![
        ("Via".into(), format!("SIP/2.0/TCP {};branch={};rport", flow.local, unique("z9hG4bK-o"))),
        ("Max-Forwards".into(), "70".into()),
        ("From".into(), format!("<{aor}>;tag=ob1")),
        ("To".into(), format!("<{aor}>")),
        ("Call-ID".into(), call_id.into()),
        ("CSeq".into(), format!("{cseq} REGISTER")),
        ("Supported".into(), "outbound, path".into()),
        ("Contact".into(), contact.into()),
        ("Content-Length".into(), "0".into()),
    ];
    SipMessage { start_line: format!("REGISTER sip:{DOMAIN} SIP/2.0"), headers, body: Vec::new() }
}

/// Register `uri` as an outbound binding over a TCP flow, then check that
/// a request to the AOR arrives on that flow with `uri` as Request-URI.
fn reached_over_the_flow(uri: &str) {
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland"));
    let mut flow = Flow::connect(proxy.sip_addr());
    let contact = format!("<{uri}>;+sip.instance=\"<urn:uuid:00000000-0000-4000-8000-00000000a11c>\";reg-id=1");
    let contact = contact.as_str();
    let call_id = unique("ob-");
    let challenge = flow.transact(&register(&flow, 1, &call_id, contact));
    assert_eq!(challenge.status(), Some(401), "{challenge}");
    let ch = challenge_for(&challenge, "WWW-Authenticate", Alg::Sha256).expect("SHA-256 challenge");
    let auth = credentials(&ch, Alg::Sha256, "alice", "wonderland", "REGISTER", &format!("sip:{DOMAIN}"), 1, "o1");
    let ok = flow.transact(&register(&flow, 2, &call_id, contact).with_header("Authorization", &auth));
    assert_eq!(ok.status(), Some(200), "{ok}\nlog:\n{}", proxy.log());
    assert_eq!(bindings(&ok).len(), 1, "{ok}");
    assert_eq!(ok.header("Require"), Some("outbound"), "RFC 5626 §6: the registrar says it used outbound:\n{ok}");

    // A request to the AOR from elsewhere arrives on the flow.
    let aor = format!("sip:alice@{DOMAIN}");
    let mut caller = Ua::new(proxy.sip_addr());
    let options = caller.request("OPTIONS", &aor, "sip:carol@caller.test", &aor);
    let waiting = std::thread::spawn(move || caller.transact(&options, Duration::from_secs(4)));
    let request = match flow.try_next() {
        Ok(r) => r,
        Err(e) => {
            let answer = waiting.join().expect("caller thread");
            panic!("nothing on the flow ({e}); the caller got {answer:?}\nlog:\n{}", proxy.log());
        }
    };
    assert_eq!(request.method(), Some("OPTIONS"), "{request}");
    assert_eq!(request.request_uri(), Some(uri), "{request}");
    flow.send(&request.response(200, "OK", Some("ob")));
    let answer = waiting.join().expect("caller thread").expect("final response");
    assert_eq!(answer.status(), Some(200), "{answer}\nlog:\n{}", proxy.log());
}

#[test]
fn a_binding_registered_over_an_outbound_flow_is_reached_over_that_connection() {
    // TEST-NET-1: nothing listens there; only the flow can deliver.
    reached_over_the_flow("sip:alice@192.0.2.20:5060;transport=tcp");
}

/// RFC 5626 §5.3: the flow decides, not the Contact's transport parameter
/// (a UA may register `sip:alice@host;ob` over TCP). Fails today:
/// `fork_groups` (crates/proxy/src/app.rs) takes the transport from the
/// Contact URI, UDP by default, so the request goes by UDP to the flow's
/// TCP source address and is lost.
#[test]
fn an_outbound_binding_without_a_transport_parameter_is_still_reached_over_its_tcp_flow() {
    reached_over_the_flow("sip:alice@192.0.2.21:5060;ob");
}
