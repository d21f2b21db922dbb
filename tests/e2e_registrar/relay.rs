//! Not an open relay (DESIGN.md §5): a request to a foreign domain from a
//! source that is neither trusted nor authenticated gets 403, even with a
//! catch-all route that would carry it; a local user's call from outside
//! must prove who it is (407).

use std::net::UdpSocket;
use std::time::Duration;

use e2e_support::SipMessage;

use crate::client::{challenge_for, challenges, credentials, Alg, Ua};
use crate::harness::{Responder, Setup, Umproxy, DOMAIN};

const WAIT: Duration = Duration::from_secs(8);

/// A UDP socket standing for the foreign next hop: nothing may reach it.
fn foreign_hop() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind")
}

/// Loopback, where every test peer lives, is not trusted here.
fn untrusted_setup() -> Setup {
    Setup::new().user("alice", "wonderland").trusted("10.99.0.0/16")
}

/// With a catch-all `[[route]]` to `hop` (as the built-in example has).
fn relay_setup(hop: &UdpSocket) -> Setup {
    let port = hop.local_addr().expect("addr").port();
    untrusted_setup().extra(&format!("[[route]]\nmatch = \"*\"\nnext_hop = \"sip:127.0.0.1:{port};transport=udp\"\n"))
}

fn invite_to_foreign(ua: &mut Ua) -> SipMessage {
    ua.request("INVITE", "sip:x@foreign.test", "sip:mallory@elsewhere.test", "sip:x@foreign.test")
}

#[test]
fn invite_to_a_foreign_domain_from_an_untrusted_unauthenticated_source_gets_403() {
    let proxy = Umproxy::start(untrusted_setup());
    let mut ua = Ua::new(proxy.sip_addr());
    let invite = invite_to_foreign(&mut ua);
    let answer = ua.transact(&invite, WAIT).expect("final response");
    assert_eq!(answer.status(), Some(403), "not an open relay:\n{answer}\nlog:\n{}", proxy.log());
}

/// Fails today: `StaticRouter::decide` (crates/proxy/src/core/router.rs)
/// applies `[[route]]`s before it asks whether the source is trusted, so a
/// catch-all route (the built-in example has one) relays any stranger's
/// request to a foreign domain.
#[test]
fn a_catch_all_route_does_not_open_the_relay_to_untrusted_sources() {
    let hop = foreign_hop();
    let proxy = Umproxy::start(relay_setup(&hop));
    let mut ua = Ua::new(proxy.sip_addr());
    let invite = invite_to_foreign(&mut ua);
    // A 403 comes at once; a relayed INVITE gets no final answer from the
    // silent hop, so there is no point waiting long.
    let answer = ua.transact(&invite, Duration::from_secs(3)).unwrap_or_else(|e| {
        panic!("{e}; the foreign hop got: {:?}\nlog:\n{}", received(&hop), proxy.log());
    });
    assert_eq!(answer.status(), Some(403), "not an open relay:\n{answer}\nlog:\n{}", proxy.log());
    assert_eq!(received(&hop), None, "the foreign next hop received a request");
}

/// What the hop has received so far (the first datagram), without waiting.
fn received(hop: &UdpSocket) -> Option<String> {
    hop.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    hop.recv_from(&mut buf).ok().map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn call_from_a_local_user_outside_the_trusted_peers_is_challenged_with_407() {
    let proxy = Umproxy::start(untrusted_setup());
    let mut ua = Ua::new(proxy.sip_addr());
    let from = format!("sip:alice@{DOMAIN}");
    let invite = ua.request("INVITE", "sip:x@foreign.test", &from, "sip:x@foreign.test");
    let answer = ua.transact(&invite, WAIT).expect("final response");
    assert_eq!(answer.status(), Some(407), "{answer}\nlog:\n{}", proxy.log());
    let offered = challenges(&answer, "Proxy-Authenticate");
    assert!(!offered.is_empty() && offered.iter().all(|c| c.realm == DOMAIN), "{answer}");
}

#[test]
fn local_user_outside_the_trusted_peers_who_answers_the_407_reaches_a_registered_user() {
    let bob_phone = Responder::start();
    let proxy = Umproxy::start(untrusted_setup().user("bob", "builder"));
    let contact = format!("<sip:bob@{}>", bob_phone.addr);
    let ok = Ua::new(proxy.sip_addr()).register("bob", "builder", Alg::Sha256, &[("Contact", &contact)]);
    assert_eq!(ok.status(), Some(200), "{ok}");

    let mut ua = Ua::new(proxy.sip_addr());
    let (from, to) = (format!("sip:alice@{DOMAIN}"), format!("sip:bob@{DOMAIN}"));
    let options = ua.request("OPTIONS", &to, &from, &to);
    let challenge = ua.transact(&options, WAIT).expect("407");
    assert_eq!(challenge.status(), Some(407), "{challenge}");
    assert!(bob_phone.seen().is_empty(), "the unauthenticated request reached bob");
    let ch = challenge_for(&challenge, "Proxy-Authenticate", Alg::Sha256).expect("SHA-256 challenge");
    let auth = credentials(&ch, Alg::Sha256, "alice", "wonderland", "OPTIONS", &to, 1, "c1");
    let options = ua.request("OPTIONS", &to, &from, &to).with_header("Proxy-Authorization", &auth);
    let answer = ua.transact(&options, WAIT).expect("final response");
    assert_eq!(answer.status(), Some(200), "authenticated alice reaches bob:\n{answer}\nlog:\n{}", proxy.log());
    let seen = bob_phone.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].request_uri(), Some(format!("sip:bob@{}", bob_phone.addr).as_str()));
}
