//! A UM Call Router that redirects (EXUM.md behaviour 8: follow 3xx from a
//! UM Call Router to the contact given): the proxy follows the 302 to the
//! mailbox server, keeping the diversion the call carries.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_support::sip::{read_message, SipMessage};
use e2e_support::tls_ua::server_config;
use e2e_support::{CertKey, WAIT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::fixture::{assert_call_succeeded, dead_addr, directory_toml, Call, Exum, Peers, Pki, ACCEPT};
use crate::have_sipp;

/// A mutual-TLS SIP server answering every INVITE `302` to `contact`, OPTIONS
/// with 200, and recording what it receives. Its tasks end on drop.
struct Redirector {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SipMessage>>>,
    _tasks: JoinSet<()>,
}

impl Redirector {
    async fn start(cert: &CertKey, pki: &Pki, contact: String) -> Redirector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let acceptor = TlsAcceptor::from(server_config(cert, Some(&pki.ca)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let seen2 = Arc::clone(&seen);
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen, contact) = (acceptor.clone(), Arc::clone(&seen2), contact.clone());
                conns.spawn(async move {
                    let Ok(Ok(mut tls)) = tokio::time::timeout(WAIT, acceptor.accept(tcp)).await else { return };
                    let mut buf = Vec::new();
                    while let Ok(Some(msg)) = read_message(&mut tls, &mut buf, Duration::from_secs(60)).await {
                        if let Ok(mut v) = seen.lock() {
                            v.push(msg.clone());
                        }
                        let reply = match msg.method() {
                            Some("INVITE") => Some(
                                msg.response(302, "Moved Temporarily", Some("router"))
                                    .with_header("Contact", &format!("<{contact}>")),
                            ),
                            Some("ACK") | None => None,
                            Some(_) => Some(msg.response(200, "OK", Some("router"))),
                        };
                        if let Some(r) = reply {
                            if tls.write_all(&r.to_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Redirector { addr, seen, _tasks: tasks }
    }

    fn invites(&self) -> Vec<SipMessage> {
        self.seen
            .lock()
            .map(|v| v.iter().filter(|m| m.method() == Some("INVITE")).cloned().collect())
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_from_a_um_call_router_is_followed_with_the_diversion_kept() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    // The mailbox server, reached by the address the router gives.
    let mailbox = pki.uas(&["um-mbx.contoso.test", "127.0.0.1"], ACCEPT).await;
    let contact = format!("sip:{};transport=tls", mailbox.addr);
    let router = Redirector::start(&pki.ca.server_cert(&["um1.contoso.test"]), &pki, contact.clone()).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), router.addr)], exap: dead_addr(), sfb: dead_addr() };
    let exum = Exum::start(&pki, &directory_toml(&peers, None));
    let log = || exum.proxy.log();
    let call = Call::new("sip:carl@example.net", "sip:alice@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    assert_call_succeeded(&caller, &log);
    let routed = router.invites();
    assert_eq!(routed.len(), 1, "router INVITEs: {routed:?}");
    let Some(invite) = mailbox.wait_for("INVITE", WAIT).await else {
        panic!("the redirect was not followed; proxy log:\n{}", log())
    };
    assert_eq!(invite.request_uri(), Some(contact.as_str()), "{invite}");
    assert_eq!(invite.header("Call-ID"), Some(call.call_id.as_str()), "{invite}");
    // The mailbox is still named: the redirected INVITE is the UM INVITE,
    // not the caller's.
    assert_eq!(
        invite.header_values("Diversion"),
        vec!["<sip:alice@contoso.test>;reason=unavailable;counter=1"],
        "redirected INVITE:\n{invite}\nrouter got:\n{}",
        routed[0]
    );
    let history = invite.header_values("History-Info");
    assert!(
        history.iter().any(|h| h.starts_with("<sip:alice@contoso.test>")),
        "History-Info lost the mailbox:\n{invite}"
    );
}
