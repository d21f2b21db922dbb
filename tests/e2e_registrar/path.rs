//! Path (RFC 3327): a binding registered through an edge proxy keeps the
//! Path, and requests to the AOR are sent along it (Route: the Path
//! values, Request-URI: the contact), not to the contact's address.

use std::time::Duration;

use crate::client::Ua;
use crate::harness::{Responder, Setup, Umproxy, DOMAIN};

#[test]
fn requests_to_an_aor_registered_with_a_path_go_through_the_path() {
    // The edge proxy the REGISTER came through; the contact itself is
    // unreachable (TEST-NET-1), so only the Path can deliver.
    let edge = Responder::start();
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland"));
    let path = format!("<sip:{};lr>", edge.addr);
    let contact = "<sip:alice@192.0.2.10:5060>";
    let mut ua = Ua::new(proxy.sip_addr());
    let ok = ua.register("alice", "wonderland", crate::client::Alg::Sha256, &[("Path", &path), ("Contact", contact)]);
    assert_eq!(ok.status(), Some(200), "{ok}\nlog:\n{}", proxy.log());
    assert_eq!(ok.header("Path"), Some(path.as_str()), "RFC 3327 §5.3: the 200 echoes the Path:\n{ok}");

    let aor = format!("sip:alice@{DOMAIN}");
    let options = ua.request("OPTIONS", &aor, "sip:carol@caller.test", &aor);
    let answer = ua.transact(&options, Duration::from_secs(8)).expect("final response");
    assert_eq!(answer.status(), Some(200), "{answer}\nlog:\n{}", proxy.log());
    let seen = edge.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].request_uri(), Some("sip:alice@192.0.2.10:5060"), "{}", seen[0]);
    let routes = seen[0].header_values("Route");
    assert_eq!(routes.first().map(String::as_str), Some(path.as_str()), "the Path becomes the Route:\n{}", seen[0]);
}
