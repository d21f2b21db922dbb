//! Resolver tests against a real DNS server (dnsmasq) on loopback.
//!
//! Without dnsmasq on PATH the tests are skipped, unless `CI` is set, where
//! a missing server is a failure.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A dnsmasq serving only the given records under `.test`; everything else
/// under `.test` is NXDOMAIN. Killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(records: &[String]) -> Option<Dnsmasq> {
        // A free port: bind, read, release. dnsmasq binds it right after.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let spawned = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--local=/test/",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("dnsmasq not runnable ({e}); skipping");
                return None;
            }
            Err(e) => panic!("CI is set but dnsmasq is not runnable: {e}"),
        };
        let server = Dnsmasq { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn resolver(&self) -> Resolver {
        Resolver::with_nameservers(&[self.addr], Duration::from_secs(2), 2).unwrap()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The zone all tests share.
fn zone() -> Vec<String> {
    [
        // NAPTR → SRV → A, three transports.
        "--naptr-record=naptr.test,20,50,s,SIP+D2U,,_sip._udp.naptr.test",
        "--naptr-record=naptr.test,10,50,s,SIP+D2T,,_sip._tcp.naptr.test",
        "--naptr-record=naptr.test,30,50,s,SIPS+D2T,,_sips._tcp.naptr.test",
        // Not a SIP service: ignored.
        "--naptr-record=naptr.test,5,50,s,E2U+email,,_mail._tcp.naptr.test",
        "--srv-host=_sip._tcp.naptr.test,tcp1.naptr.test,5070,0,0",
        "--srv-host=_sip._udp.naptr.test,udp1.naptr.test,5071,0,0",
        "--srv-host=_sips._tcp.naptr.test,tls1.naptr.test,5072,0,0",
        "--host-record=tcp1.naptr.test,127.0.0.2",
        "--host-record=udp1.naptr.test,127.0.0.3",
        "--host-record=tls1.naptr.test,127.0.0.4",
        "--host-record=naptr.test,127.0.0.9",
        // SRV only, two priorities.
        "--srv-host=_sip._udp.prio.test,b.prio.test,5062,20,0",
        "--srv-host=_sip._udp.prio.test,a.prio.test,5061,10,0",
        "--host-record=a.prio.test,127.0.1.1",
        "--host-record=b.prio.test,127.0.1.2",
        // Address records only.
        "--host-record=aonly.test,127.0.2.1",
        // Both address families.
        "--host-record=dual.test,127.0.4.1,::1",
        // ExUM federation SRV.
        "--srv-host=_sipfederationtls._tcp.fed.test,sipfed.fed.test,5061,0,0",
        "--host-record=sipfed.fed.test,127.0.3.1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn t(transport: Transport, addr: &str, server_name: &str) -> Target {
    Target { transport, addr: addr.parse().unwrap(), server_name: server_name.to_owned() }
}

#[tokio::test]
async fn naptr_srv_a_chain_in_naptr_order() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    let got = r.resolve("naptr.test", None, None, false).await.unwrap();
    assert_eq!(
        got,
        vec![
            t(Transport::Tcp, "127.0.0.2:5070", "naptr.test"),
            t(Transport::Udp, "127.0.0.3:5071", "naptr.test"),
            t(Transport::Tls, "127.0.0.4:5072", "naptr.test"),
        ]
    );
}

#[tokio::test]
async fn sips_yields_tls_targets_only() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    assert_eq!(
        r.resolve("naptr.test", None, None, true).await.unwrap(),
        vec![t(Transport::Tls, "127.0.0.4:5072", "naptr.test")]
    );
    // No NAPTR or SRV: addresses, TLS, port 5061.
    assert_eq!(
        r.resolve("aonly.test", None, None, true).await.unwrap(),
        vec![t(Transport::Tls, "127.0.2.1:5061", "aonly.test")]
    );
    let uri = Uri::parse(b"sips:naptr.test").unwrap();
    assert_eq!(r.resolve_uri(&uri).await.unwrap(), vec![t(Transport::Tls, "127.0.0.4:5072", "naptr.test")]);
    assert!(matches!(
        r.resolve("naptr.test", None, Some(Transport::Udp), true).await,
        Err(DnsError::InvalidTarget { .. })
    ));
}

#[tokio::test]
async fn srv_priorities_are_tried_lowest_first() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    // No NAPTR: SRV for _sip._udp, _sip._tcp, _sips._tcp; only the first
    // exists.
    for _ in 0..5 {
        assert_eq!(
            r.resolve("prio.test", None, None, false).await.unwrap(),
            vec![t(Transport::Udp, "127.0.1.1:5061", "prio.test"), t(Transport::Udp, "127.0.1.2:5062", "prio.test")]
        );
    }
}

#[tokio::test]
async fn a_only_falls_back_to_udp_and_default_port() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    assert_eq!(
        r.resolve("aonly.test", None, None, false).await.unwrap(),
        vec![t(Transport::Udp, "127.0.2.1:5060", "aonly.test")]
    );
    // Explicit transport without SRV: addresses with that transport's port.
    assert_eq!(
        r.resolve("aonly.test", None, Some(Transport::Tls), false).await.unwrap(),
        vec![t(Transport::Tls, "127.0.2.1:5061", "aonly.test")]
    );
}

#[tokio::test]
async fn both_address_families_ipv4_first() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    assert_eq!(
        r.resolve("dual.test", Some(5060), Some(Transport::Tcp), false).await.unwrap(),
        vec![t(Transport::Tcp, "127.0.4.1:5060", "dual.test"), t(Transport::Tcp, "[::1]:5060", "dual.test")]
    );
}

#[tokio::test]
async fn explicit_port_or_transport_skips_naptr() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    // Port: A/AAAA only, default transport UDP.
    assert_eq!(
        r.resolve("naptr.test", Some(5080), None, false).await.unwrap(),
        vec![t(Transport::Udp, "127.0.0.9:5080", "naptr.test")]
    );
    // Transport: that transport's SRV.
    assert_eq!(
        r.resolve("naptr.test", None, Some(Transport::Udp), false).await.unwrap(),
        vec![t(Transport::Udp, "127.0.0.3:5071", "naptr.test")]
    );
    let uri = Uri::parse(b"sip:bob@naptr.test;transport=tcp").unwrap();
    assert_eq!(r.resolve_uri(&uri).await.unwrap(), vec![t(Transport::Tcp, "127.0.0.2:5070", "naptr.test")]);
    // maddr wins over the host.
    let uri = Uri::parse(b"sip:bob@nowhere.test:5090;maddr=aonly.test").unwrap();
    assert_eq!(r.resolve_uri(&uri).await.unwrap(), vec![t(Transport::Udp, "127.0.2.1:5090", "aonly.test")]);
}

#[tokio::test]
async fn nxdomain_is_an_error() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    let e = r.resolve("nowhere.test", None, None, false).await.unwrap_err();
    assert!(matches!(&e, DnsError::NxDomain { name } if name == "nowhere.test"), "{e:?}");
    assert_eq!(e.to_string(), "nowhere.test: no such domain");
    let e = r.resolve("nowhere.test", Some(5060), Some(Transport::Tcp), false).await.unwrap_err();
    assert!(matches!(e, DnsError::NxDomain { .. }), "{e:?}");
}

#[tokio::test]
async fn numeric_hosts_need_no_dns() {
    // A resolver pointing at nothing: numeric hosts must not query it.
    let r = Resolver::with_nameservers(&["127.0.0.1:9".parse().unwrap()], Duration::from_millis(200), 1).unwrap();
    assert_eq!(
        r.resolve("192.0.2.7", None, None, false).await.unwrap(),
        vec![t(Transport::Udp, "192.0.2.7:5060", "192.0.2.7")]
    );
    assert_eq!(
        r.resolve("[::1]", Some(5070), Some(Transport::Tcp), false).await.unwrap(),
        vec![t(Transport::Tcp, "[::1]:5070", "::1")]
    );
    assert_eq!(
        r.resolve("192.0.2.7", None, None, true).await.unwrap(),
        vec![t(Transport::Tls, "192.0.2.7:5061", "192.0.2.7")]
    );
    assert!(matches!(r.resolve("bad host", None, None, false).await, Err(DnsError::InvalidTarget { .. })));
}

#[tokio::test]
async fn unreachable_server_is_a_lookup_error() {
    let r = Resolver::with_nameservers(&["127.0.0.1:9".parse().unwrap()], Duration::from_millis(200), 1).unwrap();
    let e = r.resolve("aonly.test", None, None, false).await.unwrap_err();
    assert!(matches!(e, DnsError::Lookup { .. }), "{e:?}");
}

#[tokio::test]
async fn federation_srv_for_exum() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    let srv = r.resolve_srv("_sipfederationtls._tcp.fed.test").await.unwrap();
    assert_eq!(srv, vec![SrvRecord { priority: 0, weight: 0, port: 5061, target: "sipfed.fed.test".into() }]);
    assert_eq!(
        r.resolve_service("_sipfederationtls._tcp.fed.test", Transport::Tls).await.unwrap(),
        vec![t(Transport::Tls, "127.0.3.1:5061", "sipfed.fed.test")]
    );
    assert!(r.resolve_srv("_sipfederationtls._tcp.aonly.test").await.unwrap().is_empty());
    assert!(matches!(
        r.resolve_service("_sipfederationtls._tcp.aonly.test", Transport::Tls).await,
        Err(DnsError::NoRecords { .. })
    ));
}

#[tokio::test]
async fn blacklist_skips_a_resolved_target() {
    let Some(dns) = Dnsmasq::start(&zone()) else { return };
    let r = dns.resolver();
    let blacklist = Blacklist::new();
    let now = Instant::now();
    let mut cursor = TargetCursor::new(r.resolve("prio.test", None, None, false).await.unwrap(), blacklist.clone());
    let first = cursor.next_target(now).unwrap();
    assert_eq!(first.addr, "127.0.1.1:5061".parse().unwrap());
    // 503 Retry-After: 60 from the first.
    cursor.mark_down(&first, now, Duration::from_secs(60));

    let mut next_request =
        TargetCursor::new(r.resolve("prio.test", None, None, false).await.unwrap(), blacklist.clone());
    assert_eq!(next_request.next_target(now + Duration::from_secs(1)).unwrap().addr, "127.0.1.2:5062".parse().unwrap());
    assert_eq!(next_request.next_target(now + Duration::from_secs(1)), None);
}

#[test]
fn resolv_conf_nameservers_are_read() {
    let text = "# comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver ::1\nnameserver fe80::1%eth0\noptions ndots:2\n";
    assert_eq!(
        resolv_conf_nameservers(text),
        vec!["192.0.2.1:53".parse::<SocketAddr>().unwrap(), "[::1]:53".parse().unwrap()]
    );
}

#[test]
fn srv_names_follow_rfc_3263() {
    assert_eq!(srv_name(Transport::Udp, false, "a.test"), "_sip._udp.a.test");
    assert_eq!(srv_name(Transport::Tcp, false, "a.test"), "_sip._tcp.a.test");
    assert_eq!(srv_name(Transport::Tls, false, "a.test"), "_sips._tcp.a.test");
    assert_eq!(srv_name(Transport::Tcp, true, "a.test"), "_sips._tcp.a.test");
    assert_eq!(naptr_transport(b"sip+d2u", false), Some(Transport::Udp));
    assert_eq!(naptr_transport(b"SIP+D2U", true), None);
    assert_eq!(naptr_transport(b"SIP+D2S", false), None);
}
