//! Two umproxy instances sharing registrations through one real
//! redis-server (DESIGN.md §5): registered on one, reached through the
//! other; with Redis down, REGISTER and calls to registered users fail fast
//! with 5xx and a log line saying why; with Redis back, both work again.

use std::time::Duration;

use e2e_support::{poll_until, Sipp};

use crate::client::{bindings, Alg, Ua};
use crate::harness::{RedisServer, Setup, Store, Umproxy, DOMAIN};
use crate::{have_redis, have_sipp, scenario};

fn callee() -> Sipp {
    let xml = std::fs::read_to_string(scenario("uas_answer.xml")).expect("scenario");
    Sipp::scenario_text(xml.replace("DELAY_MS", "100")).calls(1)
}

fn call_through(proxy: &Umproxy) -> e2e_support::SippOutcome {
    Sipp::scenario_file(scenario("uac_call.xml"))
        .remote(proxy.sip_addr())
        .service("alice")
        .calls(1)
        .timeout(Duration::from_secs(15))
        .run()
}

fn register(proxy: &Umproxy, contact: &str) -> Option<u16> {
    let c = format!("<{contact}>");
    Ua::new(proxy.sip_addr()).register("alice", "wonderland", Alg::Sha256, &[("Contact", &c)]).status()
}

#[test]
fn instances_share_registrations_through_redis_and_survive_its_outage() {
    if !have_redis() || !have_sipp() {
        return;
    }
    let mut redis = RedisServer::start_new();
    let setup = || Setup::new().user("alice", "wonderland").store(Store::Redis(redis.url()));
    let (a, b) = (Umproxy::start(setup()), Umproxy::start(setup()));

    // Registered on A, called through B.
    let uas = callee();
    assert_eq!(register(&a, &format!("sip:alice@{}", uas.local_addr())), Some(200), "log A:\n{}", a.log());
    // B sees the binding A wrote: a query on B lists it.
    let fetched = Ua::new(b.sip_addr()).register("alice", "wonderland", Alg::Sha256, &[]);
    let listed: Vec<String> = bindings(&fetched).into_iter().map(|(u, _)| u).collect();
    assert_eq!(listed, [format!("sip:alice@{}", uas.local_addr())], "{fetched}");
    let uas = uas.spawn();
    let call = call_through(&b);
    let uas = uas.wait();
    assert!(call.succeeded(), "call via B:\n{}\nlog B:\n{}", call.describe(), b.log());
    assert!(uas.succeeded(), "callee:\n{}", uas.describe());

    // Redis down: REGISTER gets 500/503 and the log says why; a call gets 503.
    redis.stop();
    let status = register(&a, "sip:alice@127.0.0.1:9");
    assert!(matches!(status, Some(500 | 503)), "REGISTER with Redis down: {status:?}\nlog A:\n{}", a.log());
    let log = a.log();
    assert!(log.contains("store failed") && log.contains("redis"), "the log names the store failure:\n{log}");
    let mut ua = Ua::new(b.sip_addr());
    let aor = format!("sip:alice@{DOMAIN}");
    let invite = ua.request("INVITE", &aor, "sip:carol@caller.test", &aor);
    let answer = ua.transact(&invite, Duration::from_secs(10)).expect("final response to the INVITE");
    assert_eq!(answer.status(), Some(503), "call with Redis down:\n{answer}\nlog B:\n{}", b.log());
    assert!(b.log().contains("location lookup failed"), "B logs why the call failed:\n{}", b.log());

    // Redis back on the same port (empty: it keeps nothing on disk): a new
    // registration on A works again, and B routes to it.
    redis.start();
    let uas = callee();
    let contact = format!("sip:alice@{}", uas.local_addr());
    let back = poll_until(Duration::from_secs(10), || (register(&a, &contact) == Some(200)).then_some(()));
    assert!(back.is_some(), "REGISTER did not recover after Redis came back:\n{}", a.log());
    let uas = uas.spawn();
    let call = call_through(&b);
    let uas = uas.wait();
    assert!(call.succeeded(), "call via B after the outage:\n{}\nlog B:\n{}", call.describe(), b.log());
    assert!(uas.succeeded(), "callee:\n{}", uas.describe());
}
