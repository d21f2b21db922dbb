//! Calls to a registered AOR ring its contacts by q-value (RFC 3261 §16.6,
//! RFC 3841): equal q in parallel, higher q first and the next only after
//! it fails. The contacts are SIPp callees registered by this suite's
//! client; the caller is SIPp from a foreign domain (no proxy auth needed).

use std::time::Duration;

use e2e_support::{poll_until, Sipp};

use crate::client::{bindings, Alg, Ua};
use crate::harness::{Responder, Setup, Umproxy, DOMAIN};
use crate::{have_sipp, scenario};

/// A callee scenario of this suite with its `DELAY_MS` filled in.
fn callee(name: &str, delay_ms: u32) -> Sipp {
    let xml = std::fs::read_to_string(scenario(name)).expect("scenario");
    Sipp::scenario_text(xml.replace("DELAY_MS", &delay_ms.to_string())).calls(1).trace_msg()
}

fn caller(proxy: &Umproxy) -> Sipp {
    Sipp::scenario_file(scenario("uac_call.xml")).remote(proxy.sip_addr()).service("alice").calls(1).trace_msg()
}

/// Register both contacts of alice in one REGISTER; returns the 200's bindings.
fn register_two(proxy: &Umproxy, contacts: &str) -> Vec<(String, Option<u32>)> {
    let ok = Ua::new(proxy.sip_addr()).register("alice", "wonderland", Alg::Sha256, &[("Contact", contacts)]);
    assert_eq!(ok.status(), Some(200), "{ok}\nlog:\n{}", proxy.log());
    bindings(&ok)
}

fn invites(trace: &str) -> usize {
    trace.matches("INVITE sip:alice@").count()
}

#[test]
fn equal_q_contacts_ring_in_parallel_and_the_unanswered_one_is_cancelled() {
    if !have_sipp() {
        return;
    }
    // Both ring; the answering one waits long enough that the other has
    // its INVITE whatever the order the proxy sent them in.
    let answering = callee("uas_answer.xml", 500);
    let ringing = Sipp::scenario_file(scenario("uas_ring_until_cancel.xml")).calls(1).trace_msg();
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland"));
    let contacts = format!("<sip:alice@{}>, <sip:alice@{}>", answering.local_addr(), ringing.local_addr());
    assert_eq!(register_two(&proxy, &contacts).len(), 2);

    let (answering, ringing) = (answering.spawn(), ringing.spawn());
    let call = caller(&proxy).run();
    let (answering, ringing) = (answering.wait(), ringing.wait());
    assert!(call.succeeded(), "caller:\n{}\nproxy:\n{}", call.describe(), proxy.log());
    assert!(answering.succeeded(), "answering callee:\n{}", answering.describe());
    // Its scenario requires the INVITE and then a CANCEL.
    assert!(ringing.succeeded(), "ringing callee:\n{}\nproxy:\n{}", ringing.describe(), proxy.log());
    assert_eq!(invites(&answering.messages), 1, "{}", answering.messages);
    assert_eq!(invites(&ringing.messages), 1, "{}", ringing.messages);
}

#[test]
fn higher_q_contact_rings_first_and_the_lower_one_only_after_it_fails() {
    if !have_sipp() {
        return;
    }
    let busy_after_ms = 1000;
    let first = callee("uas_busy.xml", busy_after_ms);
    let second = callee("uas_answer.xml", 100);
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland"));
    let contacts = format!("<sip:alice@{}>;q=0.5, <sip:alice@{}>;q=1.0", second.local_addr(), first.local_addr());
    assert_eq!(register_two(&proxy, &contacts).len(), 2);

    let (first, second) = (first.spawn(), second.spawn());
    let call = caller(&proxy).spawn();
    // While the q=1.0 contact rings, the q=0.5 one has nothing.
    let rang = poll_until(Duration::from_secs(10), || (invites(&first.messages_so_far()) > 0).then_some(()));
    assert!(rang.is_some(), "the q=1.0 contact got no INVITE:\n{}", proxy.log());
    assert_eq!(invites(&second.messages_so_far()), 0, "the q=0.5 contact rang in parallel");
    // When the q=0.5 contact gets its INVITE, the first has said 486.
    let reached = poll_until(Duration::from_secs(10), || (invites(&second.messages_so_far()) > 0).then_some(()));
    assert!(reached.is_some(), "the q=0.5 contact got no INVITE after the 486:\n{}", proxy.log());
    assert!(first.messages_so_far().contains("SIP/2.0 486"), "the second rang before the first failed");

    let call = call.wait();
    let (first, second) = (first.wait(), second.wait());
    assert!(call.succeeded(), "caller:\n{}\nproxy:\n{}", call.describe(), proxy.log());
    assert!(first.succeeded(), "busy callee:\n{}", first.describe());
    assert!(second.succeeded(), "answering callee:\n{}", second.describe());
    assert_eq!(invites(&first.messages), 1);
    assert_eq!(invites(&second.messages), 1);
}

#[test]
fn a_603_from_the_higher_q_contact_ends_the_call_without_ringing_the_next() {
    if !have_sipp() {
        return;
    }
    // RFC 3261 §16.7 step 5: a 6xx ends the search; no further branches.
    let xml = std::fs::read_to_string(scenario("uas_busy.xml")).expect("scenario");
    let declining =
        Sipp::scenario_text(xml.replace("DELAY_MS", "100").replace("486 Busy Here", "603 Decline")).calls(1);
    let next = Responder::start();
    let proxy = Umproxy::start(Setup::new().user("alice", "wonderland"));
    let contacts = format!("<sip:alice@{}>;q=1.0, <sip:alice@{}>;q=0.5", declining.local_addr(), next.addr);
    assert_eq!(register_two(&proxy, &contacts).len(), 2);

    let declining = declining.spawn();
    let mut caller = Ua::new(proxy.sip_addr());
    let aor = format!("sip:alice@{DOMAIN}");
    let invite = caller.request("INVITE", &aor, "sip:carol@caller.test", &aor);
    let answer = caller.transact(&invite, Duration::from_secs(10)).expect("final response");
    assert_eq!(answer.status(), Some(603), "{answer}\nlog:\n{}", proxy.log());
    let declining = declining.wait();
    assert!(declining.succeeded(), "declining callee (it needs the ACK):\n{}", declining.describe());
    assert!(next.seen().is_empty(), "the q=0.5 contact rang after a 603: {:?}", next.seen());
}
