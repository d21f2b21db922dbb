use super::header::{parse_digest, HeaderError};
use super::*;
use std::time::{Duration, UNIX_EPOCH};

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

#[test]
fn rfc2617_section_3_5_md5_example() {
    let ha1 = hash_password("Mufasa", "testrealm@host.com", "Circle Of Life");
    let r = compute_response(
        Algorithm::Md5,
        ha1.md5.as_deref().unwrap(),
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "00000001",
        "0a4f113b",
        "GET",
        "/dir/index.html",
    );
    assert_eq!(r, "6629fae49393a05397450978507c4ef1");
}

#[test]
fn rfc7616_section_3_9_1_sha256_and_md5_examples() {
    let ha1 = hash_password("Mufasa", "http-auth@example.org", "Circle of Life");
    let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    let sha = compute_response(
        Algorithm::Sha256,
        ha1.sha256.as_deref().unwrap(),
        nonce,
        "00000001",
        cnonce,
        "GET",
        "/dir/index.html",
    );
    assert_eq!(sha, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    let md5 = compute_response(
        Algorithm::Md5,
        ha1.md5.as_deref().unwrap(),
        nonce,
        "00000001",
        cnonce,
        "GET",
        "/dir/index.html",
    );
    assert_eq!(md5, "8ca523f5e9506fed4657c9700eebdbec");
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const REALM: &str = "contoso.test";
const URI: &str = "sip:contoso.test";

fn auth() -> DigestAuth {
    DigestAuth::new(SECRET, AuthConfig::default()).unwrap()
}

/// The Authorization value a UA would send for a challenge.
fn answer(alg: Algorithm, password: &str, nonce: &str, nc: u32, uri: &str) -> String {
    let ha1 = hash_password("alice", REALM, password);
    let nc = format!("{nc:08x}");
    let resp = compute_response(alg, ha1.get(alg).unwrap(), nonce, &nc, "c0ffee", "REGISTER", uri);
    format!(
        "Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", \
         algorithm={}, qop=auth, nc={nc}, cnonce=\"c0ffee\"",
        alg.name()
    )
}

fn nonce_of(challenge: &str) -> String {
    let p = parse_digest(challenge.as_bytes()).unwrap();
    p.get("nonce").unwrap().to_owned()
}

fn check(a: &DigestAuth, value: &str, password_of_record: &str, now: SystemTime) -> Result<(), AuthFailure> {
    let creds = parse_credentials(value.as_bytes())?;
    let ha1 = hash_password("alice", REALM, password_of_record);
    a.verify(&creds, REALM, "REGISTER", URI, Some(&ha1), now)
}

#[test]
fn challenges_offer_sha256_then_md5_with_qop_and_opaque() {
    let a = auth();
    let ch = a.challenges(REALM, false, t(0));
    assert_eq!(ch.len(), 2);
    assert!(ch[0].contains("algorithm=SHA-256"), "{}", ch[0]);
    assert!(ch[1].contains("algorithm=MD5"), "{}", ch[1]);
    for c in &ch {
        let p = parse_digest(c.as_bytes()).unwrap();
        assert_eq!(p.get("qop"), Some("auth"));
        assert_eq!(p.get("realm"), Some(REALM));
        assert!(p.get("opaque").is_some());
        assert!(p.get("stale").is_none());
    }
    assert!(a.challenges(REALM, true, t(0))[0].contains("stale=true"));
}

#[test]
fn right_password_accepted_for_every_algorithm() {
    let a = auth();
    for alg in [Algorithm::Sha256, Algorithm::Md5, Algorithm::Sha512_256] {
        let nonce = a.make_nonce(REALM, t(0));
        assert_eq!(check(&a, &answer(alg, "secret", &nonce, 1, URI), "secret", t(5)), Ok(()), "{alg:?}");
    }
}

#[test]
fn wrong_password_rejected() {
    let a = auth();
    let nonce = a.make_nonce(REALM, t(0));
    assert_eq!(
        check(&a, &answer(Algorithm::Sha256, "guess", &nonce, 1, URI), "secret", t(1)),
        Err(AuthFailure::WrongResponse)
    );
}

#[test]
fn replayed_nonce_count_rejected() {
    let a = auth();
    let nonce = a.make_nonce(REALM, t(0));
    assert_eq!(check(&a, &answer(Algorithm::Md5, "secret", &nonce, 1, URI), "secret", t(1)), Ok(()));
    assert_eq!(check(&a, &answer(Algorithm::Md5, "secret", &nonce, 1, URI), "secret", t(2)), Err(AuthFailure::Replay));
    assert_eq!(check(&a, &answer(Algorithm::Md5, "secret", &nonce, 2, URI), "secret", t(3)), Ok(()));
    assert_eq!(check(&a, &answer(Algorithm::Md5, "secret", &nonce, 2, URI), "secret", t(4)), Err(AuthFailure::Replay));
}

#[test]
fn expired_nonce_with_right_password_is_stale() {
    let a = auth();
    let nonce = a.make_nonce(REALM, t(0));
    let r = check(&a, &answer(Algorithm::Sha256, "secret", &nonce, 1, URI), "secret", t(300));
    assert_eq!(r, Err(AuthFailure::StaleNonce));
    assert!(r.unwrap_err().is_stale());
    assert_eq!(check(&a, &answer(Algorithm::Sha256, "secret", &nonce, 1, URI), "secret", t(299)), Ok(()));
}

#[test]
fn tampered_nonce_rejected_without_stale() {
    let a = auth();
    let nonce = a.make_nonce(REALM, t(0));
    let mut bytes = nonce.into_bytes();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let r = check(&a, &answer(Algorithm::Sha256, "secret", &tampered, 1, URI), "secret", t(1));
    assert_eq!(r, Err(AuthFailure::BadNonce));
    assert!(!r.unwrap_err().is_stale());
    // A nonce from another secret, or for another realm, is not ours either.
    let other = DigestAuth::new(b"another secret of 32 bytes......", AuthConfig::default()).unwrap();
    let foreign = other.make_nonce(REALM, t(0));
    assert_eq!(
        check(&a, &answer(Algorithm::Md5, "secret", &foreign, 1, URI), "secret", t(1)),
        Err(AuthFailure::BadNonce)
    );
    let other_realm = a.make_nonce("fabrikam.test", t(0));
    assert_eq!(
        check(&a, &answer(Algorithm::Md5, "secret", &other_realm, 1, URI), "secret", t(1)),
        Err(AuthFailure::BadNonce)
    );
}

#[test]
fn uri_must_match_request_uri() {
    let a = auth();
    let nonce = a.make_nonce(REALM, t(0));
    let v = answer(Algorithm::Sha256, "secret", &nonce, 1, "sip:other.test");
    assert_eq!(check(&a, &v, "secret", t(1)), Err(AuthFailure::UriMismatch));
}

#[test]
fn nonce_from_challenge_round_trips_through_a_message() {
    let a = auth();
    let nonce = nonce_of(&a.challenges(REALM, false, t(0))[0]);
    let value = answer(Algorithm::Sha256, "secret", &nonce, 1, URI);
    let msg = format!(
        "REGISTER {URI} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\nTo: <sip:alice@{REALM}>\r\n\
         From: <sip:alice@{REALM}>;tag=1\r\nCall-ID: c1\r\nCSeq: 2 REGISTER\r\n\
         Authorization: Digest realm=\"elsewhere\", username=\"x\", nonce=\"n\", uri=\"u\", response=\"r\", qop=auth, nc=00000001, cnonce=\"c\"\r\n\
         Authorization: {value}\r\nContent-Length: 0\r\n\r\n"
    );
    let req = Message::parse_slice(msg.as_bytes()).unwrap();
    let creds = DigestAuth::credentials(&req, ChallengeKind::Www, REALM).unwrap();
    assert_eq!(creds.username, "alice");
    let ha1 = hash_password("alice", REALM, "secret");
    assert_eq!(a.verify(&creds, REALM, "REGISTER", req.request_uri_str().unwrap(), Some(&ha1), t(1)), Ok(()));
    assert_eq!(DigestAuth::credentials(&req, ChallengeKind::Proxy, REALM), Err(AuthFailure::Missing));
    let resp = a.challenge_response(&req, ChallengeKind::Proxy, REALM, true, t(2));
    let resp = Message::parse(resp, &sip_message::Limits::default()).unwrap();
    assert_eq!(resp.status(), Some(407));
    assert_eq!(resp.header_values(HeaderName::ProxyAuthenticate).count(), 2);
}

#[test]
fn unknown_user_and_missing_algorithm_hash_rejected() {
    let a = auth();
    let nonce = a.make_nonce(REALM, t(0));
    let sent = answer(Algorithm::Sha256, "secret", &nonce, 1, URI);
    let creds = parse_credentials(sent.as_bytes()).unwrap();
    assert_eq!(a.verify(&creds, REALM, "REGISTER", URI, None, t(1)), Err(AuthFailure::UnknownUser));
    let md5_only = Ha1Set { md5: hash_password("alice", REALM, "secret").md5, ..Ha1Set::default() };
    assert_eq!(a.verify(&creds, REALM, "REGISTER", URI, Some(&md5_only), t(1)), Err(AuthFailure::UnknownUser));
}

#[test]
fn qop_less_and_sess_credentials_are_unsupported() {
    let v = "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"00\"";
    assert_eq!(parse_credentials(v.as_bytes()), Err(AuthFailure::Unsupported));
    let v = "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"00\", algorithm=MD5-sess, qop=auth, nc=00000001, cnonce=\"c\"";
    assert_eq!(parse_credentials(v.as_bytes()), Err(AuthFailure::Unsupported));
}

#[test]
fn nonce_count_memory_is_bounded_and_evicted_nonces_go_stale() {
    let cfg = AuthConfig { max_tracked_nonces: 64, ..AuthConfig::default() };
    let a = DigestAuth::new(SECRET, cfg).unwrap();
    let first = a.make_nonce(REALM, t(0));
    assert_eq!(check(&a, &answer(Algorithm::Md5, "secret", &first, 1, URI), "secret", t(0)), Ok(()));
    for k in 1..500 {
        let n = a.make_nonce(REALM, t(k / 10));
        assert_eq!(check(&a, &answer(Algorithm::Md5, "secret", &n, 1, URI), "secret", t(k / 10)), Ok(()), "{k}");
        assert!(a.tracked_nonces() <= 64);
    }
    // The first nonce's count was evicted: replaying it must not pass.
    assert_eq!(
        check(&a, &answer(Algorithm::Md5, "secret", &first, 1, URI), "secret", t(50)),
        Err(AuthFailure::StaleNonce)
    );
}

#[test]
fn header_parser_handles_tricky_quoting() {
    let p = parse_digest(
        br#"digest  username="al\"ice\\", realm = "a,b=c" ,nonce="x y",uri="sip:a@b;x=\"1\"",response=ab12, qop=auth"#,
    )
    .unwrap();
    assert_eq!(p.get("username"), Some("al\"ice\\"));
    assert_eq!(p.get("realm"), Some("a,b=c"));
    assert_eq!(p.get("nonce"), Some("x y"));
    assert_eq!(p.get("uri"), Some("sip:a@b;x=\"1\""));
    assert_eq!(p.get("response"), Some("ab12"));
    let folded = parse_digest(b"Digest username=\"a\r\n b\",\r\n realm=\"r\"").unwrap();
    assert_eq!(folded.get("username"), Some("a b"));
    assert_eq!(folded.get("realm"), Some("r"));
    assert_eq!(parse_digest(b"Basic dXNlcjpwYXNz"), Err(HeaderError::NotDigest));
    assert_eq!(parse_digest(b"Digest a=\"1\", A=\"2\""), Err(HeaderError::DuplicateParam));
    for bad in [
        &b"Digest"[..],
        b"Digest a",
        b"Digest a=",
        b"Digest a=\"open",
        b"Digest a=\"x\\",
        b"Digest a=1 b=2",
        b"Digest ,",
    ] {
        assert!(parse_digest(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    let many: String = (0..40).map(|k| format!("p{k}=1")).collect::<Vec<_>>().join(",");
    assert_eq!(parse_digest(format!("Digest {many}").as_bytes()), Err(HeaderError::TooManyParams));
    assert_eq!(parse_digest(&vec![b'a'; 5000]), Err(HeaderError::TooLong));
    // Values come out as text whether or not the whole value is UTF-8 (a
    // bad byte in one value refuses the header, as before).
    let utf8 = parse_digest("Digest username=\"Zoë\", realm=\"r\"".as_bytes()).unwrap();
    assert_eq!(utf8.get("username"), Some("Zoë"));
    assert_eq!(parse_digest(b"Digest username=\"\xff\", realm=\"r\""), Err(HeaderError::Syntax));
    assert_eq!(parse_digest(b"Digest a=\"1\", A=\"\xff\""), Err(HeaderError::Syntax));
    assert_eq!(parse_digest(b"Digest a=\"1\", A=\"2\", b=\"\xff\""), Err(HeaderError::DuplicateParam));
}

#[test]
fn constant_time_eq_compares_lengths_and_bytes() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_authorization_values_never_panic(v in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_credentials(&v);
        }

        #[test]
        fn digest_shaped_values_never_panic(
            params in proptest::collection::vec(("[a-zA-Z-]{0,8}", "[ -~\\r\\n\\t\\\\\"]{0,20}", any::<bool>()), 0..30)
        ) {
            let body: Vec<String> = params
                .iter()
                .map(|(n, v, q)| if *q { format!("{n}=\"{v}\"") } else { format!("{n}={v}") })
                .collect();
            let value = format!("Digest {}", body.join(", "));
            let a = DigestAuth::new(SECRET, AuthConfig::default()).unwrap();
            if let Ok(c) = parse_credentials(value.as_bytes()) {
                let _ = a.verify(&c, REALM, "REGISTER", URI, Some(&hash_password("a", REALM, "p")), t(0));
            }
        }
    }
}

#[test]
fn parameter_names_and_response_hex_are_case_insensitive() {
    let a = auth();
    let nonce = nonce_of(&a.challenges(REALM, false, t(0))[0]);
    let sent = answer(Algorithm::Md5, "secret", &nonce, 1, URI);
    // Upper-case parameter names and hex digits, as some UAs send them.
    let resp = parse_digest(sent.as_bytes()).unwrap().get("response").unwrap().to_owned();
    let shouted = sent
        .replace("username=", "USERNAME=")
        .replace("Nonce=", "nonce=")
        .replace("qop=", "QOP=")
        .replace(&resp, &resp.to_ascii_uppercase());
    assert_ne!(shouted, sent);
    let creds = parse_credentials(shouted.as_bytes()).unwrap();
    assert_eq!((creds.username.as_ref(), creds.nc), ("alice", 1));
    assert_eq!(check(&a, &shouted, "secret", t(1)), Ok(()));
    // A different digest of the same length is still wrong.
    let mut wrong = resp.into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = sent.replace(&resp_of(&sent), std::str::from_utf8(&wrong).unwrap());
    assert_eq!(check(&a, &wrong, "secret", t(1)), Err(AuthFailure::WrongResponse));
}

fn resp_of(sent: &str) -> String {
    parse_digest(sent.as_bytes()).unwrap().get("response").unwrap().to_owned()
}

#[test]
fn challenge_values_read_as_the_format_they_replace() {
    for (realm, stale) in [("bench.test", false), ("a\"b\\c", true), ("Zoë.example", false)] {
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let mut want = format!(
                "Digest realm={}, qop=\"auth\", algorithm={}, nonce=\"{}\", opaque=\"{}\"",
                super::header::quote(realm),
                alg.name(),
                "n0nce",
                "0paque"
            );
            if stale {
                want.push_str(", stale=true");
            }
            let got = super::challenge_value(&super::header::quote(realm), alg, "n0nce", "0paque", stale);
            assert_eq!(got, want);
        }
    }
    assert_eq!(super::header::quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(super::header::quote("bench.test"), "\"bench.test\"");
}

#[test]
fn hex_of_big_endian_bytes_is_the_016x_format() {
    for n in [0u64, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
        assert_eq!(hex(&n.to_be_bytes()), format!("{n:016x}"));
    }
    let every: Vec<u8> = (0..=255).collect();
    assert_eq!(hex(&every), every.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let tag = random_tag();
    assert_eq!(tag.len(), 16);
    assert!(tag.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}
