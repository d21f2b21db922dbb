//! Response context bookkeeping: choosing the best final response among a
//! request's branches (RFC 3261 §16.7 step 6) and collecting challenges
//! (step 7).

use sip_message::{HeaderName, Message};

/// A final response a branch ended with: real (from downstream) or
/// synthesised by the proxy (timeout 408, transport failure 503, §16.9).
// Unboxed on purpose: one per response context, and boxing would cost an
// allocation per final response.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Final {
    Received(Message),
    Synthetic(u16),
}

impl Final {
    pub fn code(&self) -> u16 {
        match self {
            Final::Received(m) => m.status().unwrap_or(500),
            Final::Synthetic(c) => *c,
        }
    }
}

/// Keeps the best non-2xx final response seen so far, and the challenges of
/// every 401/407 (they are all forwarded together, §16.7 step 7).
#[derive(Debug, Default)]
pub struct BestResponse {
    best: Option<Final>,
    challenges: Vec<(HeaderName, Vec<u8>)>,
}

/// Preference among final non-2xx responses: lower is better.
/// §16.7 step 6: any 6xx wins; otherwise the lowest class. Within a class
/// the RFC leaves the choice open; within 4xx we prefer, in order: what the
/// caller can fix itself (401, 407, 415, 420, 484, as §16.7 suggests), then
/// what says the user exists but cannot take the call (486 Busy Here, 480
/// Temporarily Unavailable, 408 Request Timeout), then the rest by code. So
/// a fork where one contact is busy and another stale (404) tells the caller
/// "busy". A synthetic 408/503 ranks after a real response of the same
/// class, so that a real answer is forwarded rather than our guess.
fn rank(f: &Final) -> (u8, u8, u8, u16) {
    let code = f.code();
    let class = match code / 100 {
        6 => 0,
        c @ 3..=5 => c as u8,
        _ => 9,
    };
    let preference = match code {
        401 | 407 | 415 | 420 | 484 => 0,
        486 => 1,
        480 => 2,
        408 => 3,
        _ => 4,
    };
    let synthetic = matches!(f, Final::Synthetic(_));
    (class, u8::from(synthetic), preference, code)
}

impl BestResponse {
    /// Record one branch's final response (non-2xx).
    pub fn offer(&mut self, f: Final) {
        if let Final::Received(m) = &f {
            if matches!(m.status(), Some(401 | 407)) && self.challenges.len() < 16 {
                for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
                    for v in m.header_values(name) {
                        self.challenges.push((name, v.to_vec()));
                    }
                }
            }
        }
        let better = match &self.best {
            None => true,
            Some(cur) => rank(&f) < rank(cur),
        };
        if better {
            self.best = Some(f);
        }
    }

    /// The status code of the best response so far.
    pub fn code(&self) -> Option<u16> {
        self.best.as_ref().map(Final::code)
    }

    /// Whether a 6xx was received (the other branches are then cancelled,
    /// §16.7 step 5).
    pub fn has_global_failure(&self) -> bool {
        self.code().is_some_and(|c| c >= 600)
    }

    /// The best response, and the challenges to add when it is a 401/407
    /// with challenges from other branches.
    pub fn take(self) -> (Option<Final>, Vec<(HeaderName, Vec<u8>)>) {
        (self.best, self.challenges)
    }
}

/// The status forwarded upstream for a chosen code: a 503 from downstream
/// becomes 500 (§16.7 step 6: the caller must not think *this* proxy is
/// overloaded and retry elsewhere with a Retry-After of ours).
pub fn upstream_code(code: u16) -> u16 {
    if code == 503 {
        500
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(code: u16, extra: &str) -> Final {
        let text = format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@example.test>;tag=1\r\n\
             To: <sip:b@example.test>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Final::Received(Message::parse_slice(text.as_bytes()).expect("parses"))
    }

    #[test]
    fn six_hundred_beats_everything() {
        let mut b = BestResponse::default();
        b.offer(resp(486, ""));
        b.offer(resp(302, ""));
        b.offer(resp(603, ""));
        b.offer(resp(404, ""));
        assert_eq!(b.code(), Some(603));
        assert!(b.has_global_failure());
    }

    #[test]
    fn lowest_class_wins_and_preferred_4xx_within_class() {
        let mut b = BestResponse::default();
        b.offer(resp(500, ""));
        b.offer(resp(404, ""));
        assert_eq!(b.code(), Some(404));
        b.offer(resp(407, "Proxy-Authenticate: Digest realm=\"x\"\r\n"));
        assert_eq!(b.code(), Some(407));
        b.offer(resp(302, ""));
        assert_eq!(b.code(), Some(302));
    }

    #[test]
    fn busy_beats_not_found_within_4xx() {
        let mut b = BestResponse::default();
        b.offer(resp(404, ""));
        b.offer(resp(486, ""));
        assert_eq!(b.code(), Some(486));
        let mut b = BestResponse::default();
        b.offer(resp(486, ""));
        b.offer(resp(404, ""));
        b.offer(resp(480, ""));
        assert_eq!(b.code(), Some(486), "order of arrival does not matter");
    }

    #[test]
    fn real_response_beats_our_synthetic_one() {
        let mut b = BestResponse::default();
        b.offer(Final::Synthetic(408));
        b.offer(resp(480, ""));
        assert_eq!(b.code(), Some(480));
        let mut b = BestResponse::default();
        b.offer(Final::Synthetic(503));
        b.offer(resp(503, ""));
        assert!(matches!(b.take().0, Some(Final::Received(_))));
    }

    #[test]
    fn challenges_of_all_branches_are_collected() {
        let mut b = BestResponse::default();
        b.offer(resp(401, "WWW-Authenticate: Digest realm=\"a\"\r\n"));
        b.offer(resp(407, "Proxy-Authenticate: Digest realm=\"b\"\r\n"));
        let (_, ch) = b.take();
        assert_eq!(ch.len(), 2);
    }

    #[test]
    fn downstream_503_goes_up_as_500() {
        assert_eq!(upstream_code(503), 500);
        assert_eq!(upstream_code(486), 486);
    }
}
