//! Digest authentication of REGISTER with SHA-256 (RFC 8760), replay
//! protection by nonce-count, and the lock-out after repeated wrong
//! passwords, driven by this suite's own digest client.

use std::time::Duration;

use e2e_support::poll_until;

use crate::client::{bindings, challenge_for, challenges, credentials, Alg, Ua};
use crate::harness::{Setup, Umproxy, DOMAIN};

const WAIT: Duration = Duration::from_secs(8);

#[test]
fn register_is_challenged_with_sha256_and_md5_and_sha256_credentials_register() {
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland"));
    let mut ua = Ua::new(proxy.sip_addr());
    let contact = format!("<sip:alice@{}>", ua.local);
    let first = ua.register_request("alice", &[("Contact", &contact)]);
    let challenge = ua.transact(&first, WAIT).expect("challenge");
    assert_eq!(challenge.status(), Some(401), "{challenge}\nlog:\n{}", proxy.log());
    let offered = challenges(&challenge, "WWW-Authenticate");
    let algs: Vec<&str> = offered.iter().map(|c| c.algorithm.as_str()).collect();
    assert_eq!(algs, ["SHA-256", "MD5"], "one challenge per algorithm, preferred first (RFC 7616 §3.7)");
    assert!(offered.iter().all(|c| c.realm == DOMAIN && c.qop.split(',').any(|q| q.trim() == "auth")), "{offered:?}");

    let ch = challenge_for(&challenge, "WWW-Authenticate", Alg::Sha256).expect("SHA-256 challenge");
    let second = ua.register_request("alice", &[("Contact", &contact)]);
    let auth = credentials(&ch, Alg::Sha256, "alice", "wonderland", "REGISTER", &format!("sip:{DOMAIN}"), 1, "c1");
    let ok = ua.transact(&second.with_header("Authorization", &auth), WAIT).expect("200");
    assert_eq!(ok.status(), Some(200), "{ok}\nlog:\n{}", proxy.log());
    let bound = bindings(&ok);
    assert_eq!(bound.len(), 1, "{ok}");
    assert_eq!(bound[0].0, format!("sip:alice@{}", ua.local));

    // MD5, the other challenge offered, is accepted too.
    let ok = ua.register("alice", "wonderland", Alg::Md5, &[("Contact", &contact)]);
    assert_eq!(ok.status(), Some(200), "MD5 credentials:\n{ok}");
}

#[test]
fn replayed_authorization_with_the_same_nonce_count_is_rejected() {
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland"));
    let mut ua = Ua::new(proxy.sip_addr());
    let contact = format!("<sip:alice@{}>", ua.local);
    let first = ua.register_request("alice", &[("Contact", &contact)]);
    let challenge = ua.transact(&first, WAIT).expect("401");
    let ch = challenge_for(&challenge, "WWW-Authenticate", Alg::Sha256).expect("SHA-256 challenge");
    let auth = credentials(&ch, Alg::Sha256, "alice", "wonderland", "REGISTER", &format!("sip:{DOMAIN}"), 1, "c1");
    let second = ua.register_request("alice", &[("Contact", &contact)]).with_header("Authorization", &auth);
    let ok = ua.transact(&second, WAIT);
    assert_eq!(ok.expect("200").status(), Some(200), "log:\n{}", proxy.log());

    // The same credentials (nonce and nc=00000001) on a new request: a replay.
    let replay = ua.register_request("alice", &[("Contact", &contact)]).with_header("Authorization", &auth);
    let answer = ua.transact(&replay, WAIT).expect("answer to the replay");
    assert_eq!(answer.status(), Some(401), "a replayed nonce-count must not authenticate:\n{answer}");
    assert!(!challenges(&answer, "WWW-Authenticate").is_empty(), "a fresh challenge comes with it:\n{answer}");
    assert_eq!(proxy.metric("umproxy_auth_failures_total{reason=\"replay\"}"), 1.0, "counted as a replay");

    // The next nonce-count of the same nonce is fine.
    let next = credentials(&ch, Alg::Sha256, "alice", "wonderland", "REGISTER", &format!("sip:{DOMAIN}"), 2, "c2");
    let fourth = ua.register_request("alice", &[("Contact", &contact)]).with_header("Authorization", &next);
    let ok = ua.transact(&fourth, WAIT);
    assert_eq!(ok.expect("200").status(), Some(200), "nc=00000002 is not a replay; log:\n{}", proxy.log());
}

#[test]
fn wrong_passwords_get_401_until_the_lockout_threshold_then_403() {
    let threshold = 3;
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland").lockout_per_ip(threshold));
    let mut ua = Ua::new(proxy.sip_addr());
    let contact = format!("<sip:alice@{}>", ua.local);
    for attempt in 1..=threshold {
        let answer = ua.register("alice", "guess", Alg::Sha256, &[("Contact", &contact)]);
        assert_eq!(answer.status(), Some(401), "wrong password, attempt {attempt}:\n{answer}");
    }
    let answer = ua.register("alice", "guess", Alg::Sha256, &[("Contact", &contact)]);
    assert_eq!(answer.status(), Some(403), "after {threshold} failures the source is locked out:\n{answer}");
    // Locked out means the right password does not help either.
    let answer = ua.register("alice", "wonderland", Alg::Sha256, &[("Contact", &contact)]);
    assert_eq!(answer.status(), Some(403), "the lock-out holds for the right password too:\n{answer}");
    assert!(proxy.log().contains("lock-out"), "the lock-out is logged:\n{}", proxy.log());
    // Per source address: alice from another address is not locked out.
    let elsewhere = Ua::bound(proxy.sip_addr(), [127, 0, 0, 2]).register("alice", "wonderland", Alg::Sha256, &[]);
    assert_eq!(elsewhere.status(), Some(200), "another source IP is not locked out:\n{elsewhere}");
    assert_eq!(proxy.metric("umproxy_auth_failures_total{reason=\"wrong_response\"}"), f64::from(threshold));
    assert_eq!(proxy.metric("umproxy_auth_failures_total{reason=\"locked_out\"}"), 2.0);
}

#[test]
fn one_users_credentials_do_not_register_another_users_aor() {
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland").user("bob", "builder"));
    let mut ua = Ua::new(proxy.sip_addr());
    let contact = format!("<sip:alice@{}>", ua.local);
    let first = ua.register_request("bob", &[("Contact", &contact)]);
    let challenge = ua.transact(&first, WAIT).expect("401");
    let ch = challenge_for(&challenge, "WWW-Authenticate", Alg::Sha256).expect("SHA-256 challenge");
    // Right credentials, but alice's: RFC 3261 §10.3 step 3.
    let auth = credentials(&ch, Alg::Sha256, "alice", "wonderland", "REGISTER", &format!("sip:{DOMAIN}"), 1, "c1");
    let second = ua.register_request("bob", &[("Contact", &contact)]).with_header("Authorization", &auth);
    let answer = ua.transact(&second, WAIT).expect("answer");
    assert_eq!(answer.status(), Some(403), "alice may not bind bob's AOR:\n{answer}");
    let fetched = Ua::new(proxy.sip_addr()).register("bob", "builder", Alg::Sha256, &[]);
    assert_eq!(fetched.status(), Some(200), "{fetched}");
    assert!(bindings(&fetched).is_empty(), "bob has no binding:\n{fetched}");
}

#[test]
fn an_expired_nonce_gets_a_stale_challenge_and_the_fresh_nonce_works() {
    // The shortest nonce lifetime the configuration allows.
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland").auth("nonce_ttl_s = 10"));
    let mut ua = Ua::new(proxy.sip_addr());
    let contact = format!("<sip:alice@{}>", ua.local);
    let first = ua.register_request("alice", &[("Contact", &contact)]);
    let ch = challenge_for(&ua.transact(&first, WAIT).expect("401"), "WWW-Authenticate", Alg::Sha256).expect("SHA-256");
    let uri = format!("sip:{DOMAIN}");
    // Use the nonce (next nonce-count each time) until the proxy calls it
    // stale: the right password throughout, so the 401 is about the nonce.
    let mut nc = 0;
    let stale = poll_until(Duration::from_secs(20), || {
        nc += 1;
        let auth = credentials(&ch, Alg::Sha256, "alice", "wonderland", "REGISTER", &uri, nc, "st");
        let req = ua.register_request("alice", &[("Contact", &contact)]).with_header("Authorization", &auth);
        let answer = ua.transact(&req, WAIT).expect("answer");
        match answer.status() {
            Some(200) => {
                // Pace the probes: about twenty over the nonce's life.
                std::thread::sleep(Duration::from_millis(480));
                None
            }
            _ => Some(answer),
        }
    })
    .expect("the nonce never went stale");
    assert_eq!(stale.status(), Some(401), "{stale}");
    assert!(nc > 1, "the nonce was good at first");
    let fresh = challenge_for(&stale, "WWW-Authenticate", Alg::Sha256).expect("a fresh challenge");
    let header =
        stale.headers.iter().find(|(n, v)| n.eq_ignore_ascii_case("WWW-Authenticate") && v.contains("SHA-256"));
    assert!(header.is_some_and(|(_, v)| v.contains("stale=true")), "RFC 7616 §3.3: stale=true:\n{stale}");
    assert_ne!(fresh.nonce, ch.nonce);
    let auth = credentials(&fresh, Alg::Sha256, "alice", "wonderland", "REGISTER", &uri, 1, "st2");
    let req = ua.register_request("alice", &[("Contact", &contact)]).with_header("Authorization", &auth);
    assert_eq!(ua.transact(&req, WAIT).expect("answer").status(), Some(200));
    assert_eq!(proxy.metric("umproxy_auth_failures_total{reason=\"wrong_response\"}"), 0.0, "not counted as a guess");
}

#[test]
fn instances_sharing_the_nonce_secret_accept_each_others_nonces_and_others_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("nonce.key");
    std::fs::write(&secret, "a nonce key shared by both instances, 32+ bytes").expect("write secret");
    let shared = format!("secret_file = {:?}", secret.display().to_string());
    let a = Umproxy::start(Setup::new().user("alice", "wonderland").auth(&shared));
    let b = Umproxy::start(Setup::new().user("alice", "wonderland").auth(&shared));
    let stranger = Umproxy::start(Setup::new().user("alice", "wonderland"));
    let uri = format!("sip:{DOMAIN}");

    // Challenged by A, answered to B (as after a DNS SRV failover).
    let mut ua = Ua::new(a.sip_addr());
    let first = ua.register_request("alice", &[]);
    let ch = challenge_for(&ua.transact(&first, WAIT).expect("401"), "WWW-Authenticate", Alg::Sha256).expect("SHA-256");
    let auth = credentials(&ch, Alg::Sha256, "alice", "wonderland", "REGISTER", &uri, 1, "x1");
    let mut to_b = Ua::new(b.sip_addr());
    let req = to_b.register_request("alice", &[]).with_header("Authorization", &auth);
    let answer = to_b.transact(&req, WAIT);
    assert_eq!(answer.expect("answer").status(), Some(200), "B accepts A's nonce; log B:\n{}", b.log());

    // An instance with its own key refuses it.
    let auth = credentials(&ch, Alg::Sha256, "alice", "wonderland", "REGISTER", &uri, 2, "x2");
    let mut to_s = Ua::new(stranger.sip_addr());
    let req = to_s.register_request("alice", &[]).with_header("Authorization", &auth);
    let answer = to_s.transact(&req, WAIT);
    assert_eq!(answer.expect("answer").status(), Some(401), "a nonce signed with another key is refused");
}
