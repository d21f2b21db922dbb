//! The registrar's bound on AORs (`[registrar] max_aors`): a REGISTER that
//! would create one AOR too many gets 503 with Retry-After, refreshes of
//! existing AORs still work, and removing an AOR frees its place.

use crate::client::{bindings, Alg, Ua};
use crate::harness::{Setup, Umproxy};

#[test]
fn a_new_aor_beyond_max_aors_gets_503_and_a_removal_frees_its_place() {
    let proxy =
        Umproxy::start(Setup::new().user("alice", "wonderland").user("bob", "builder").registrar("max_aors = 1"));
    let mut alice = Ua::new(proxy.sip_addr());
    let mut bob = Ua::new(proxy.sip_addr());
    let alice_contact = format!("<sip:alice@{}>", alice.local);
    let bob_contact = format!("<sip:bob@{}>", bob.local);

    let ok = alice.register("alice", "wonderland", Alg::Md5, &[("Contact", &alice_contact)]);
    assert_eq!(ok.status(), Some(200), "{ok}\nlog:\n{}", proxy.log());
    let full = bob.register("bob", "builder", Alg::Md5, &[("Contact", &bob_contact)]);
    assert_eq!(full.status(), Some(503), "the second AOR passes max_aors = 1:\n{full}");
    assert!(full.header("Retry-After").is_some(), "503 says when to retry:\n{full}");

    // A refresh of the AOR already held takes no new place.
    let again = alice.register("alice", "wonderland", Alg::Md5, &[("Contact", &alice_contact)]);
    assert_eq!(again.status(), Some(200), "{again}");
    assert_eq!(bindings(&again).len(), 1, "{again}");

    // Removing every binding of alice frees the place for bob.
    let gone = alice.register("alice", "wonderland", Alg::Md5, &[("Contact", "*"), ("Expires", "0")]);
    assert_eq!(gone.status(), Some(200), "{gone}");
    assert!(bindings(&gone).is_empty(), "{gone}");
    let ok = bob.register("bob", "builder", Alg::Md5, &[("Contact", &bob_contact)]);
    assert_eq!(ok.status(), Some(200), "after alice left:\n{ok}\nlog:\n{}", proxy.log());
}
