//! One call that turns credentials, the stored HA1 and the lock-out state
//! into the answer, counting failures. The core's sequence is:
//!
//! 1. `let creds = DigestAuth::credentials(req, kind, realm);`
//! 2. look up `creds.username` in the directory (possibly async) → `Option<Ha1Set>`;
//! 3. `auth.authenticate(req, kind, realm, creds, ha1.as_ref(), &ctx, now)`.

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use sip_message::build::Response;
use sip_message::Message;

use super::{AuthFailure, ChallengeKind, Credentials, DigestAuth, Ha1Set};
use crate::location::metrics::LocationMetrics;
use crate::location::policy::FailureTracker;

/// The request's surroundings for [`DigestAuth::authenticate`].
pub struct AuthContext<'a> {
    pub source_ip: IpAddr,
    pub tracker: &'a FailureTracker,
    pub metrics: Option<&'a LocationMetrics>,
}

/// What to do with the request.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    /// Go on; the request is from this user.
    Authenticated { user: String },
    /// Send this 401/407 (a fresh challenge; `stale=true` when `failure` is a stale nonce).
    Challenge { response: Bytes, failure: Option<AuthFailure> },
    /// Send this 403: the source or the user is locked out.
    LockedOut { response: Bytes },
}

impl DigestAuth {
    /// Decide on a request's credentials (see the module doc for the sequence).
    #[allow(clippy::too_many_arguments)]
    pub fn authenticate(
        &self,
        req: &Message,
        kind: ChallengeKind,
        realm: &str,
        creds: Result<Credentials<'_>, AuthFailure>,
        ha1: Option<&Ha1Set>,
        ctx: &AuthContext<'_>,
        now: SystemTime,
    ) -> AuthOutcome {
        let user_owned = creds.as_ref().ok().map(|c| c.username.clone().into_owned());
        let user = user_owned.as_deref();
        if ctx.tracker.is_locked_out(ctx.source_ip, user, now) {
            if let Some(m) = ctx.metrics {
                m.auth_failures_total.with_label_values(&["locked_out"]).inc();
            }
            let tag = super::random_tag();
            return AuthOutcome::LockedOut { response: Response::new(req, 403, "Forbidden", Some(&tag)).finish() };
        }
        let result = creds.and_then(|c| {
            let method = req.method_str().unwrap_or_default();
            let uri = req.request_uri_str().unwrap_or_default();
            self.verify(&c, realm, method, uri, ha1, now)
        });
        match result {
            Ok(()) => {
                ctx.tracker.record_success(ctx.source_ip);
                // Verified credentials always name a user.
                AuthOutcome::Authenticated { user: user_owned.unwrap_or_default() }
            }
            Err(failure) => {
                if failure != AuthFailure::Missing {
                    if let Some(m) = ctx.metrics {
                        m.auth_failures_total.with_label_values(&[failure.label()]).inc();
                    }
                }
                if failure.is_guess() && ctx.tracker.record_failure(ctx.source_ip, user, now) {
                    tracing::warn!(source = %ctx.source_ip, user = ?user.map(str::escape_debug), "authentication lock-out started");
                }
                AuthOutcome::Challenge {
                    response: self.challenge_response(req, kind, realm, failure.is_stale(), now),
                    failure: (failure != AuthFailure::Missing).then_some(failure),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{compute_response, hash_password, parse_credentials, Algorithm, AuthConfig};
    use super::*;
    use crate::location::policy::LockoutConfig;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn register(auth_value: Option<&str>) -> Message {
        let auth = auth_value.map(|v| format!("Authorization: {v}\r\n")).unwrap_or_default();
        let msg = format!(
            "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\nTo: <sip:alice@contoso.test>\r\n\
             From: <sip:alice@contoso.test>;tag=1\r\nCall-ID: c1\r\nCSeq: 2 REGISTER\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        Message::parse_slice(msg.as_bytes()).unwrap()
    }

    fn answer(auth: &DigestAuth, password: &str, nc: u32, now: SystemTime) -> String {
        let nonce = auth.make_nonce("contoso.test", now);
        let ha1 = hash_password("alice", "contoso.test", password);
        let nc = format!("{nc:08x}");
        let r = compute_response(
            Algorithm::Sha256,
            ha1.sha256.as_deref().unwrap(),
            &nonce,
            &nc,
            "cn",
            "REGISTER",
            "sip:contoso.test",
        );
        format!(
            "Digest username=\"alice\", realm=\"contoso.test\", nonce=\"{nonce}\", uri=\"sip:contoso.test\", \
             response=\"{r}\", algorithm=SHA-256, qop=auth, nc={nc}, cnonce=\"cn\""
        )
    }

    #[test]
    fn challenge_then_success_then_lockout_after_repeated_wrong_passwords() {
        let auth = DigestAuth::new(b"0123456789abcdef0123456789abcdef", AuthConfig::default()).unwrap();
        let tracker = FailureTracker::new(LockoutConfig { max_failures_per_ip: 3, ..LockoutConfig::default() });
        let reg = prometheus::Registry::new();
        let metrics = LocationMetrics::register(&reg).unwrap();
        let ctx = AuthContext { source_ip: "192.0.2.9".parse().unwrap(), tracker: &tracker, metrics: Some(&metrics) };
        let ha1 = hash_password("alice", "contoso.test", "secret");
        let kind = ChallengeKind::Www;

        let req = register(None);
        let creds = DigestAuth::credentials(&req, kind, "contoso.test");
        match auth.authenticate(&req, kind, "contoso.test", creds, Some(&ha1), &ctx, t(0)) {
            AuthOutcome::Challenge { response, failure: None } => {
                let resp = Message::parse(response, &sip_message::Limits::default()).unwrap();
                assert_eq!(resp.status(), Some(401));
            }
            other => panic!("{other:?}"),
        }

        let req = register(Some(&answer(&auth, "secret", 1, t(0))));
        let creds = DigestAuth::credentials(&req, kind, "contoso.test");
        assert_eq!(creds.as_ref().map(|c| c.username.as_ref()), Ok("alice"));
        match auth.authenticate(&req, kind, "contoso.test", creds, Some(&ha1), &ctx, t(1)) {
            AuthOutcome::Authenticated { user } => assert_eq!(user, "alice"),
            other => panic!("{other:?}"),
        }

        for k in 0..3 {
            let req = register(Some(&answer(&auth, "guess", 1, t(k))));
            let creds = parse_credentials(req.header(sip_message::HeaderName::Authorization).unwrap());
            let out = auth.authenticate(&req, kind, "contoso.test", creds, Some(&ha1), &ctx, t(2 + k));
            assert!(matches!(out, AuthOutcome::Challenge { failure: Some(AuthFailure::WrongResponse), .. }), "{out:?}");
        }
        // Now even the right password is refused until the lock-out ends.
        let req = register(Some(&answer(&auth, "secret", 1, t(10))));
        let out = auth.authenticate(
            &req,
            kind,
            "contoso.test",
            DigestAuth::credentials(&req, kind, "contoso.test"),
            Some(&ha1),
            &ctx,
            t(10),
        );
        assert!(matches!(out, AuthOutcome::LockedOut { .. }), "{out:?}");
        let later = t(10 + 15 * 60);
        let req = register(Some(&answer(&auth, "secret", 1, later)));
        let out = auth.authenticate(
            &req,
            kind,
            "contoso.test",
            DigestAuth::credentials(&req, kind, "contoso.test"),
            Some(&ha1),
            &ctx,
            later,
        );
        assert!(matches!(out, AuthOutcome::Authenticated { .. }), "{out:?}");
        assert_eq!(metrics.auth_failures_total.with_label_values(&["wrong_response"]).get(), 3);
        assert_eq!(metrics.auth_failures_total.with_label_values(&["locked_out"]).get(), 1);
    }
}
