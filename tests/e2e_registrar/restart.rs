//! The embedded store persists every acknowledged registration (DESIGN.md
//! §5, §7): after a burst of 2000 REGISTERs with digest, a SIGKILL right
//! after the last 200 and a restart on the same configuration, every AOR
//! still has its binding, calls to them still route, and
//! `umproxy_registrations_active` counts them before any new REGISTER. Under
//! the default write-behind policy too: the record is appended to the
//! journal before the 200, and only an OS crash could lose the unsynced
//! tail; under write-through (`flush_interval_ms = 0`) not even that.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::client::{bindings, Alg, Ua};
use crate::harness::{Responder, Setup, Store, Umproxy, DOMAIN};

const AORS: usize = 2000;
/// Client threads registering at once (the machine has two cores).
const WORKERS: usize = 8;

fn user(i: usize) -> String {
    format!("user{i:04}")
}

fn password(i: usize) -> String {
    format!("pw-{i}-secret")
}

/// Run `each(ua, i)` for every AOR index on `WORKERS` threads, each with its
/// own UA; returns the indexes whose check failed, with why.
fn for_all_aors(proxy: SocketAddr, each: impl Fn(&mut Ua, usize) -> Result<(), String> + Sync) -> Vec<String> {
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let (each, failures) = (&each, &failures);
            s.spawn(move || {
                let mut ua = Ua::new(proxy);
                for i in (w..AORS).step_by(WORKERS) {
                    if let Err(e) = each(&mut ua, i) {
                        failures.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{}: {e}", user(i)));
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn every_acknowledged_registration_survives_sigkill_right_after_the_200() {
    survive_sigkill(Store::Embedded);
}

#[test]
fn write_through_registrations_survive_sigkill_right_after_the_200() {
    survive_sigkill(Store::EmbeddedFlushMs(0));
}

fn survive_sigkill(store: Store) {
    let uas = Responder::start();
    let mut setup = Setup::new().store(store);
    setup.users = (0..AORS).map(|i| (user(i), password(i))).collect();
    let mut proxy = Umproxy::start(setup);
    let contact = |i: usize| format!("sip:{}@{}", user(i), uas.addr);

    let failed = for_all_aors(proxy.sip_addr(), |ua, i| {
        let c = format!("<{}>", contact(i));
        let ok = ua.register(&user(i), &password(i), Alg::Sha256, &[("Contact", &c), ("Expires", "3600")]);
        (ok.status() == Some(200)).then_some(()).ok_or_else(|| ok.start_line.clone())
    });
    assert!(
        failed.is_empty(),
        "{} REGISTERs failed, e.g. {:?}\nlog:\n{:.3000}",
        failed.len(),
        &failed[..failed.len().min(5)],
        proxy.log()
    );

    // At once: no waiting for the writer's sync.
    proxy.kill();
    proxy.restart();
    // What was restored is counted before any REGISTER.
    assert_eq!(proxy.metric("umproxy_registrations_active"), AORS as f64, "log:\n{:.3000}", proxy.log());

    // Every AOR: a query (REGISTER without Contact) lists its binding.
    let failed = for_all_aors(proxy.sip_addr(), |ua, i| {
        let ok = ua.register(&user(i), &password(i), Alg::Sha256, &[]);
        match bindings(&ok).as_slice() {
            [(uri, Some(_))] if ok.status() == Some(200) && *uri == contact(i) => Ok(()),
            other => Err(format!("{}: {other:?}", ok.start_line)),
        }
    });
    assert!(
        failed.is_empty(),
        "{} AORs lost their binding, e.g. {:?}\nlog:\n{:.3000}",
        failed.len(),
        &failed[..failed.len().min(5)],
        proxy.log()
    );

    // A sample of them is still reached: an OPTIONS to the AOR arrives at the
    // registered contact, whose 200 comes back.
    let mut caller = Ua::new(proxy.sip_addr());
    let sample: Vec<usize> = (0..AORS).step_by(AORS / 20).collect();
    for &i in &sample {
        let aor = format!("sip:{}@{DOMAIN}", user(i));
        let options = caller.request("OPTIONS", &aor, "sip:probe@probe.test", &aor);
        let answer = caller.transact(&options, Duration::from_secs(8)).expect("OPTIONS answered");
        assert_eq!(answer.status(), Some(200), "OPTIONS to {aor}: {answer}\nlog:\n{:.3000}", proxy.log());
    }
    let seen: Vec<String> = uas.seen().iter().filter_map(|m| m.request_uri().map(str::to_owned)).collect();
    for &i in &sample {
        assert!(seen.contains(&contact(i)), "no request reached {}; seen {seen:?}", contact(i));
    }
}
