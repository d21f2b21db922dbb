//! A small SIP user agent over UDP with digest authentication (RFC 3261 §22,
//! RFC 7616 with qop=auth, SHA-256 and MD5), written for these tests: it
//! registers, answers challenges, and can replay or spoil its credentials
//! on purpose. Blocking sockets with read timeouts; every wait is bounded.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use e2e_support::sip::unique;
use e2e_support::SipMessage;

use crate::harness::{md5_hex, sha256_hex, DOMAIN};

/// Digest algorithms this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Md5,
    Sha256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Md5 => "MD5",
            Alg::Sha256 => "SHA-256",
        }
    }

    fn h(self, data: &str) -> String {
        match self {
            Alg::Md5 => md5_hex(data),
            Alg::Sha256 => sha256_hex(data),
        }
    }
}

/// One `Digest` challenge's parameters.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: String,
    pub qop: String,
    pub opaque: Option<String>,
}

/// Split `a=b, c="d,e"` at commas outside quotes into `(name, value)` with
/// the quotes removed.
fn auth_params(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut cur, mut in_quote) = (String::new(), false);
    for c in v.chars().chain(std::iter::once(',')) {
        match c {
            '"' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            ',' if !in_quote => {
                if let Some((n, v)) = cur.split_once('=') {
                    out.push((n.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_owned()));
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    out
}

/// Every `Digest` challenge in the `header` fields of `resp`
/// (`WWW-Authenticate` or `Proxy-Authenticate`), in order.
pub fn challenges(resp: &SipMessage, header: &str) -> Vec<Challenge> {
    resp.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(header))
        .filter_map(|(_, v)| {
            let rest = v.trim().strip_prefix("Digest")?;
            let params = auth_params(rest);
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            Some(Challenge {
                realm: get("realm")?,
                nonce: get("nonce")?,
                // RFC 7616 §3.3: no algorithm means MD5.
                algorithm: get("algorithm").unwrap_or_else(|| "MD5".into()),
                qop: get("qop").unwrap_or_default(),
                opaque: get("opaque"),
            })
        })
        .collect()
}

/// The challenge offered for `alg`, if any.
pub fn challenge_for(resp: &SipMessage, header: &str, alg: Alg) -> Option<Challenge> {
    challenges(resp, header).into_iter().find(|c| c.algorithm.eq_ignore_ascii_case(alg.name()))
}

/// The credentials answering `ch` (RFC 7616 §3.4): `Digest username=…`,
/// with `nc` as given, so a test can replay one on purpose.
#[allow(clippy::too_many_arguments)]
pub fn credentials(
    ch: &Challenge,
    alg: Alg,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = alg.h(&format!("{user}:{}:{password}", ch.realm));
    let ha2 = alg.h(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = alg.h(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce));
    let mut v = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", \
         algorithm={}, qop=auth, nc={nc}, cnonce=\"{cnonce}\"",
        ch.realm,
        ch.nonce,
        alg.name()
    );
    if let Some(o) = &ch.opaque {
        v.push_str(&format!(", opaque=\"{o}\""));
    }
    v
}

/// A UDP user agent bound to a fresh loopback port, talking to one proxy.
pub struct Ua {
    sock: UdpSocket,
    pub local: SocketAddr,
    proxy: SocketAddr,
    call_id: String,
    from_tag: String,
    cseq: u32,
}

impl Ua {
    pub fn new(proxy: SocketAddr) -> Ua {
        Ua::bound(proxy, [127, 0, 0, 1])
    }

    /// A UA on another loopback address (all of 127/8 is local on Linux),
    /// to be a different source IP.
    pub fn bound(proxy: SocketAddr, ip: [u8; 4]) -> Ua {
        let sock = UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind UDP");
        let local = sock.local_addr().expect("local addr");
        Ua { sock, local, proxy, call_id: unique("reg-"), from_tag: unique("ft"), cseq: 0 }
    }

    /// A request of this UA's registration dialog-less sequence: same
    /// Call-ID and From tag, next CSeq (RFC 3261 §10.2.4), fresh branch.
    pub fn request(&mut self, method: &str, uri: &str, from: &str, to: &str) -> SipMessage {
        self.cseq += 1;
        let headers = vec![
            ("Via".into(), format!("SIP/2.0/UDP {};branch={};rport", self.local, unique("z9hG4bK-r"))),
            ("Max-Forwards".into(), "70".into()),
            ("From".into(), format!("<{from}>;tag={}", self.from_tag)),
            ("To".into(), format!("<{to}>")),
            ("Call-ID".into(), self.call_id.clone()),
            ("CSeq".into(), format!("{} {method}", self.cseq)),
            ("Content-Length".into(), "0".into()),
        ];
        SipMessage { start_line: format!("{method} {uri} SIP/2.0"), headers, body: Vec::new() }
    }

    /// A REGISTER for `user`'s AOR with `extra` headers (Contact, Expires …).
    pub fn register_request(&mut self, user: &str, extra: &[(&str, &str)]) -> SipMessage {
        let aor = format!("sip:{user}@{DOMAIN}");
        let mut req = self.request("REGISTER", &format!("sip:{DOMAIN}"), &aor, &aor);
        for (n, v) in extra {
            req = req.with_header(n, v);
        }
        req
    }

    /// Send `req` and wait for its final response, retransmitting like
    /// Timer E (500 ms doubling to 4 s) for up to `timeout`. Responses to
    /// other requests (earlier retransmissions) are skipped by CSeq.
    pub fn transact(&self, req: &SipMessage, timeout: Duration) -> io::Result<SipMessage> {
        let bytes = req.to_bytes();
        let cseq = req.header("CSeq").unwrap_or_default().to_owned();
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(500);
        let mut next_send = Instant::now();
        let mut buf = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no final response to {cseq}")));
            }
            if now >= next_send {
                self.sock.send_to(&bytes, self.proxy)?;
                next_send = now + interval;
                interval = (interval * 2).min(Duration::from_secs(4));
            }
            let wait = next_send.min(deadline).saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            self.sock.set_read_timeout(Some(wait))?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let Some(m) = SipMessage::parse(&buf[..n]) else { continue };
                    if m.header("CSeq") == Some(cseq.as_str()) && m.status().is_some_and(|s| s >= 200) {
                        if m.cseq_method() == Some("INVITE") {
                            // RFC 3261 §17.1.1.3: a non-2xx final is ACKed by the client transaction.
                            self.ack(req, &m)?;
                        }
                        return Ok(m);
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn ack(&self, invite: &SipMessage, resp: &SipMessage) -> io::Result<()> {
        let uri = invite.request_uri().unwrap_or_default();
        let mut headers: Vec<(String, String)> = Vec::new();
        for name in ["Via", "Max-Forwards", "From"] {
            if let Some(v) = invite.header(name) {
                headers.push((name.into(), v.into()));
            }
        }
        headers.push(("To".into(), resp.header("To").unwrap_or_default().into()));
        headers.push(("Call-ID".into(), invite.header("Call-ID").unwrap_or_default().into()));
        let n = invite.header("CSeq").and_then(|c| c.split_whitespace().next()).unwrap_or("1");
        headers.push(("CSeq".into(), format!("{n} ACK")));
        headers.push(("Content-Length".into(), "0".into()));
        let ack = SipMessage { start_line: format!("ACK {uri} SIP/2.0"), headers, body: Vec::new() };
        self.sock.send_to(&ack.to_bytes(), self.proxy).map(|_| ())
    }

    /// REGISTER `user` with `extra` headers, answering the 401 with `alg`
    /// credentials for `password`: the final response to the second request.
    pub fn register(&mut self, user: &str, password: &str, alg: Alg, extra: &[(&str, &str)]) -> SipMessage {
        let first = self.register_request(user, extra);
        let challenge = self.transact(&first, Duration::from_secs(8)).expect("REGISTER answered");
        if challenge.status() != Some(401) {
            return challenge;
        }
        let ch = challenge_for(&challenge, "WWW-Authenticate", alg)
            .unwrap_or_else(|| panic!("no {} challenge in:\n{challenge}", alg.name()));
        let second = self.register_request(user, extra);
        let uri = second.request_uri().unwrap_or_default().to_owned();
        let auth = credentials(&ch, alg, user, password, "REGISTER", &uri, 1, &unique("cn"));
        let second = second.with_header("Authorization", &auth);
        self.transact(&second, Duration::from_secs(8)).expect("authenticated REGISTER answered")
    }
}

/// The Contact URIs of a REGISTER's 200 (RFC 3261 §10.3 step 8), without
/// their parameters, and each one's `expires`.
pub fn bindings(resp: &SipMessage) -> Vec<(String, Option<u32>)> {
    resp.header_values("Contact")
        .iter()
        .filter_map(|c| {
            let start = c.find('<')? + 1;
            let end = c.find('>')?;
            let uri = c.get(start..end)?.to_owned();
            let expires = c
                .get(end..)?
                .split(';')
                .find_map(|p| p.trim().strip_prefix("expires="))
                .and_then(|v| v.trim().parse().ok());
            Some((uri, expires))
        })
        .collect()
}
