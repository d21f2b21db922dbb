//! The world the ExUM tests run in: a PKI, a mixed-mode directory written
//! to a file, the proxy started on it, registered callees (SIPp UAS) and
//! callers (SIPp UAC), and checks of the INVITE a UM peer received.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use e2e_support::sip::{request, udp_exchange, unique};
use e2e_support::{Answer, Ca, CertKey, Proxy, ProxyConfig, SipMessage, Sipp, SippOutcome, TlsUas, WAIT};
use tempfile::TempDir;

use crate::ldap::Slapd;
use crate::{scenario, umproxy};

/// The shared SIP domain served by the proxy.
pub const DOMAIN: &str = "contoso.test";
/// Hosted UM: Exchange Online's edge (`hosts_ocs_users = false`).
pub const EXAP_FQDN: &str = "exap.um.example.net";
/// The provider that hosts users of the shared domain (`hosts_ocs_users = true`).
pub const SFB_FQDN: &str = "sipfed.online.example.net";
/// Per-attempt timer toward UM servers.
pub const UM_ATTEMPT_MS: u64 = 1000;
/// Alice's ring time in the directory.
pub const RING_TIME_S: u64 = 2;
/// Alice's password (her MD5 HA1 is in the directory), for the tests that
/// run with digest authentication on.
pub const ALICE_PASSWORD: &str = "alice-secret";

/// Certificates: the CA everyone trusts, a rogue CA nobody trusts, and the
/// proxy's server and client certificates.
pub struct Pki {
    pub ca: Ca,
    pub rogue: Ca,
    pub proxy_server: CertKey,
    pub proxy_client: CertKey,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = Ca::new("exum e2e CA");
        let rogue = Ca::new("exum e2e rogue CA");
        let proxy_server = ca.server_cert(&["127.0.0.1", "proxy.contoso.test"]);
        let proxy_client = ca.client_cert(&["proxy.contoso.test"]);
        Pki { ca, rogue, proxy_server, proxy_client }
    }

    /// A UM server (or provider edge) demanding the proxy's client
    /// certificate, with a server certificate naming `names`.
    pub async fn uas(&self, names: &[&str], answer: Answer) -> TlsUas {
        TlsUas::start(&self.ca.server_cert(names), Some(&self.ca), answer).await.expect("start TLS UAS")
    }
}

/// Where the directory's peers are.
pub struct Peers {
    /// The `dp-redmond` dial plan's UM servers, in order: `(fqdn, address)`.
    pub um: Vec<(String, SocketAddr)>,
    /// Exchange Online's edge (hosted UM).
    pub exap: SocketAddr,
    /// The provider hosting users of the shared domain.
    pub sfb: SocketAddr,
}

/// A loopback address nothing listens on (connection refused).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], e2e_support::free_port()))
}

/// The mixed-mode directory: alice on-premises (ring time 2 s), bob hosted
/// by his user policy, carol by her site's, dave by the global one, erin with
/// both a hosted flag and an on-premises binding, frank without voice mail,
/// grace forwarding every call to voice mail, heidi homed at the users-hosting provider, a Subscriber Access contact
/// on the dial plan and an Auto Attendant hosted by the tenant-a policy. `extra_user` adds a user (for reloads).
pub fn directory_toml(peers: &Peers, extra_user: Option<&str>) -> String {
    let servers: Vec<String> =
        peers.um.iter().map(|(fqdn, addr)| format!("{{ fqdn = \"{fqdn}\", address = \"{addr}\" }}")).collect();
    let alice_ha1 = umproxy::location::auth::hash_password("alice", DOMAIN, ALICE_PASSWORD).md5.unwrap_or_default();
    let mut t = format!(
        r#"[[user]]
sip_address = "sip:alice@contoso.test"
ha1 = {{ md5 = "{alice_ha1}" }}
line_uri = "tel:+15550100;ext=2001"
site = "redmond"
um_dial_plan = "dp-redmond"
um_extension = "2001"
ring_time_s = {RING_TIME_S}

[[user]]
sip_address = "sip:bob@contoso.test"
line_uri = "tel:+15550101"
site = "redmond"
voicemail_settings = ["CsHostedVoiceMail=1"]
hosted_voicemail_policy = "tag:tenant-a"
ring_time_s = {RING_TIME_S}

[[user]]
sip_address = "sip:carol@contoso.test"
line_uri = "tel:+15550102"
site = "paris"
voicemail_settings = ["ExchangeHostedVoiceMail=1"]

[[user]]
sip_address = "sip:dave@contoso.test"
line_uri = "tel:+15550103"
site = "redmond"
voicemail_settings = ["CsHostedVoiceMail=1"]

[[user]]
sip_address = "sip:erin@contoso.test"
line_uri = "tel:+15550104"
site = "redmond"
voicemail_settings = ["CsHostedVoiceMail=1"]
um_dial_plan = "dp-redmond"
um_extension = "2004"

[[user]]
sip_address = "sip:frank@contoso.test"
line_uri = "tel:+15550105"

[[user]]
sip_address = "sip:grace@contoso.test"
line_uri = "tel:+15550106"
um_dial_plan = "dp-redmond"
um_extension = "2006"
forward_to_voicemail = true

[[user]]
sip_address = "sip:heidi@contoso.test"
home = "sfb-online"

[[hosted_voicemail_policy]]
identity = "global"
destination = "{EXAP_FQDN}"
organization = ["corp.contoso.test"]

[[hosted_voicemail_policy]]
identity = "site:paris"
destination = "{EXAP_FQDN}"
organization = ["paris.contoso.test"]

[[hosted_voicemail_policy]]
identity = "tag:tenant-a"
destination = "{EXAP_FQDN}"
organization = ["tenant-a.example.net", "tenant-a2.example.net"]

[[um_dial_plan]]
name = "dp-redmond"
security = "sip_secured"
servers = [ {servers} ]

[[hosting_provider]]
identity = "exchange-online"
proxy_fqdn = "{EXAP_FQDN}"
enabled = true
enabled_shared_address_space = true
hosts_ocs_users = false
verification_level = "use_source_verification"
address = "{exap}"

[[hosting_provider]]
identity = "sfb-online"
proxy_fqdn = "{SFB_FQDN}"
enabled = true
enabled_shared_address_space = true
hosts_ocs_users = true
verification_level = "always_verifiable"
address = "{sfb}"

[[exum_contact]]
kind = "subscriber_access"
sip_address = "sip:sa-redmond@contoso.test"
line_uri = "tel:+15550199"
um_dial_plan = "dp-redmond"

[[exum_contact]]
kind = "auto_attendant"
sip_address = "sip:aa-main@contoso.test"
line_uri = "tel:+15550198"
hosted_voicemail_policy = "tag:tenant-a"
"#,
        servers = servers.join(", "),
        exap = peers.exap,
        sfb = peers.sfb,
    );
    if let Some(user) = extra_user {
        t.push_str(user);
    }
    t
}

/// Where the proxy takes its directory from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `directory.toml` as a file.
    File,
    /// Users and contacts from a real slapd; policies, dial plans and
    /// providers from the topology file ([`crate::ldap::split_directory`]).
    Ldap,
}

/// A proxy on a directory file the test owns (and may rewrite); with the
/// LDAP backend, on the slapd it started and the topology file.
pub struct Exum {
    pub proxy: Proxy,
    pub directory: PathBuf,
    _slapd: Option<Slapd>,
    _dir: TempDir,
}

impl Exum {
    /// Write the directory and start the proxy: UDP/TCP, a mutual-TLS
    /// listener trusting the PKI's CA, authentication off (callees register
    /// without digest), the proxy's client certificate for UM and providers.
    pub fn start(pki: &Pki, directory: &str) -> Exum {
        Exum::start_with(pki, directory, "")
    }

    /// Like [`Exum::start`] with more TOML for `umproxy.toml` (`[dns]` …).
    pub fn start_with(pki: &Pki, directory: &str, extra: &str) -> Exum {
        Exum::start_on(Backend::File, pki, directory, extra).expect("file backend")
    }

    /// Like [`Exum::start_with`] on `backend`; `None` (skip) when the LDAP
    /// backend's slapd is not installed (a panic under `CI`).
    pub fn start_on(backend: Backend, pki: &Pki, directory: &str, extra: &str) -> Option<Exum> {
        Exum::start_full(backend, pki, directory, extra, false, "info")
    }

    /// Like [`Exum::start_on`], with digest authentication on or off
    /// (`authenticate`): on, users of the domain must answer a challenge
    /// unless a hosting provider or a trusted peer sent them.
    /// `log_level` is the proxy's `[log] level`.
    pub fn start_full(
        backend: Backend,
        pki: &Pki,
        directory: &str,
        extra: &str,
        authenticate: bool,
        log_level: &str,
    ) -> Option<Exum> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("directory.toml");
        let (slapd, directory_section) = match backend {
            Backend::File => {
                std::fs::write(&path, directory).expect("write directory");
                (None, format!("[directory]\nfile = {:?}\n", path.display().to_string()))
            }
            Backend::Ldap => {
                let (entries, topology) = crate::ldap::split_directory(directory);
                let slapd = Slapd::start(&entries)?;
                std::fs::write(&path, topology).expect("write topology");
                let section = crate::ldap::directory_config(&slapd, &path);
                (Some(slapd), section)
            }
        };
        let mut config = ProxyConfig::new().with_tls(
            &pki.proxy_server.cert_path,
            &pki.proxy_server.key_path,
            Some(&pki.ca.pem_path),
        );
        config.domains = vec![DOMAIN.into()];
        config.log_level = log_level.into();
        if authenticate {
            // No trusted peer among the test's own sources: every caller
            // is a provider, an authenticated user, or nobody.
            config.trusted_peers = vec!["127.0.0.250/32".into()];
        }
        let config = config.extra(&format!(
            "[auth]\nenabled = {authenticate}\nalgorithms = [\"MD5\"]\n\n{directory_section}\n[exum]\nring_time_s = 5\num_attempt_timeout_ms = {UM_ATTEMPT_MS}\n\n[tls_client]\ncertificate = {cert:?}\nprivate_key = {key:?}\nca = {ca:?}\n",
            cert = pki.proxy_client.cert_path.display().to_string(),
            key = pki.proxy_client.key_path.display().to_string(),
            ca = pki.ca.pem_path.display().to_string(),
        ));
        let proxy = Proxy::start(umproxy(), config.extra(extra));
        Some(Exum { proxy, directory: path, _slapd: slapd, _dir: dir })
    }

    /// Register `user`'s contact at `contact` (a SIPp UAS) for five
    /// minutes; panics unless the registrar answers 200.
    pub async fn register(&self, user: &str, contact: SocketAddr) {
        let aor = format!("sip:{user}@{DOMAIN}");
        let build = |local: SocketAddr| {
            let mut m = request("REGISTER", &format!("sip:{DOMAIN}"), "UDP", local);
            for (name, value) in &mut m.headers {
                match name.as_str() {
                    "From" => *value = format!("<{aor}>;tag={}", unique("reg")),
                    "To" => *value = format!("<{aor}>"),
                    "Contact" => *value = format!("<sip:{user}@{contact}>"),
                    _ => {}
                }
            }
            m.with_header("Expires", "300").to_bytes()
        };
        let responses = udp_exchange(self.proxy.udp_addr(), build, WAIT).await.expect("REGISTER");
        let status = responses.last().and_then(SipMessage::status);
        assert_eq!(status, Some(200), "REGISTER {aor}: {responses:?}\nproxy log:\n{}", self.proxy.log());
    }

    /// Register `user`'s contact at `contact` with digest authentication
    /// (MD5, qop=auth); panics unless the registrar answers 200.
    pub async fn register_with_digest(&self, user: &str, password: &str, contact: SocketAddr) {
        use umproxy::location::auth::{compute_response, hash_password, Algorithm};
        let aor = format!("sip:{user}@{DOMAIN}");
        let uri = format!("sip:{DOMAIN}");
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = sock.local_addr().expect("local address");
        let call_id = unique("reg-call-");
        let tag = unique("reg");
        let build = |cseq: u32, authorization: Option<String>| {
            let mut m = request("REGISTER", &uri, "UDP", local);
            for (name, value) in &mut m.headers {
                match name.as_str() {
                    "From" => *value = format!("<{aor}>;tag={tag}"),
                    "To" => *value = format!("<{aor}>"),
                    "Contact" => *value = format!("<sip:{user}@{contact}>"),
                    "Call-ID" => *value = call_id.clone(),
                    "CSeq" => *value = format!("{cseq} REGISTER"),
                    _ => {}
                }
            }
            let m = m.with_header("Expires", "300");
            match authorization {
                Some(a) => m.with_header("Authorization", &a).to_bytes(),
                None => m.to_bytes(),
            }
        };
        let exchange = |bytes: Vec<u8>| {
            let sock = &sock;
            let to = self.proxy.udp_addr();
            async move {
                sock.send_to(&bytes, to).await.expect("send REGISTER");
                let mut buf = vec![0u8; 65536];
                loop {
                    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
                        .await
                        .expect("an answer to REGISTER")
                        .expect("recv");
                    match SipMessage::parse(&buf[..n]) {
                        Some(m) if m.status().is_some_and(|s| s >= 200) => return m,
                        _ => continue,
                    }
                }
            }
        };
        let challenge = exchange(build(1, None)).await;
        assert_eq!(challenge.status(), Some(401), "REGISTER {aor}: {challenge}");
        // Whole header lines: a challenge's parameters are comma-separated.
        let md5 = challenge
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("WWW-Authenticate"))
            .map(|(_, value)| value.clone())
            .find(|v| v.contains("algorithm=MD5"))
            .unwrap_or_else(|| panic!("no MD5 challenge: {challenge}"));
        let param = |name: &str| -> String {
            let start = md5.find(&format!("{name}=\"")).map(|i| i + name.len() + 2).unwrap_or(0);
            md5[start..].split('"').next().unwrap_or_default().to_owned()
        };
        let (nonce, opaque) = (param("nonce"), param("opaque"));
        let ha1 = hash_password(user, DOMAIN, password).md5.unwrap_or_default();
        let response = compute_response(Algorithm::Md5, &ha1, &nonce, "00000001", "e2e-cnonce", "REGISTER", &uri);
        let authorization = format!(
            "Digest username=\"{user}\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"e2e-cnonce\", opaque=\"{opaque}\""
        );
        let answer = exchange(build(2, Some(authorization))).await;
        let failures: Vec<String> = self
            .proxy
            .metrics()
            .lines()
            .filter(|l| l.starts_with("umproxy_auth_failures_total"))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            answer.status(),
            Some(200),
            "REGISTER {aor} with credentials: {answer}\nauth failures: {failures:?}"
        );
    }

    /// A metric series' value (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        self.proxy.metric(series)
    }

    /// The sum of every series of `name` whose labels contain `label`.
    pub fn metric_sum(&self, name: &str, label: &str) -> f64 {
        self.proxy
            .metrics()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A call from a SIPp caller, identified by the Call-ID and From tag the
/// UM peer must see again.
pub struct Call {
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub from_tag: String,
    pub extra_headers: Vec<String>,
    /// Time between ACK and BYE of an answered call.
    pub hold_ms: u64,
    /// Calls SIPp places (at `rate` per second); with more than one, each
    /// gets its own Call-ID and tag (`call_id` and `from_tag` are prefixes).
    pub calls: u32,
    pub rate: u32,
    /// SIPp's overall timeout.
    pub timeout: Duration,
}

impl Call {
    pub fn new(from: &str, to: &str) -> Call {
        Call {
            from: from.into(),
            to: to.into(),
            call_id: unique("exum-call-"),
            from_tag: unique("exum-tag-"),
            extra_headers: Vec::new(),
            hold_ms: 200,
            calls: 1,
            rate: 1,
            timeout: Duration::from_secs(30),
        }
    }

    /// An extra header line of the caller's INVITE, e.g. an incoming
    /// Diversion the proxy must remove.
    pub fn header(mut self, line: &str) -> Call {
        self.extra_headers.push(line.into());
        self
    }

    /// Place `calls` calls at `rate` per second, each answered call held
    /// `hold_ms`.
    pub fn many(mut self, calls: u32, rate: u32, hold_ms: u64) -> Call {
        (self.calls, self.rate, self.hold_ms) = (calls, rate, hold_ms);
        self
    }

    /// The SIPp caller: answered (`None`) or rejected with `status`.
    fn sipp(&self, proxy: SocketAddr, status: Option<u16>) -> Sipp {
        let file = if status.is_some() { "uac_rejected.xml" } else { "uac_answered.xml" };
        self.sipp_with(file, proxy, status)
    }

    fn sipp_with(&self, file: &str, proxy: SocketAddr, status: Option<u16>) -> Sipp {
        let xml = std::fs::read_to_string(scenario(file)).expect("read scenario");
        let extra: String = self.extra_headers.iter().map(|h| format!("      {h}\n")).collect();
        let per_call = if self.calls > 1 { "-[call_number]" } else { "" };
        let xml = xml
            .replace("TO_URI", &self.to)
            .replace("FROM_URI", &self.from)
            .replace("FROM_TAG", &format!("{}{per_call}", self.from_tag))
            .replace("EXTRA_HEADERS", &extra)
            .replace("HOLD_MS", &self.hold_ms.to_string())
            .replace("BRANCH", &unique("exum-branch-"))
            .replace("STATUS", &status.map(|s| s.to_string()).unwrap_or_default());
        Sipp::scenario_text(xml)
            .remote(proxy)
            // SIPp maps messages to calls by the Call-ID it generates.
            .arg("-cid_str")
            .arg(if self.calls > 1 { format!("{}-%u", self.call_id) } else { self.call_id.clone() })
            .calls(self.calls)
            .rate(self.rate)
            .timeout(self.timeout)
            .trace_msg()
    }

    /// A caller that hangs up while the callee rings (run to completion).
    pub async fn run_cancelled(&self, proxy: SocketAddr) -> SippOutcome {
        let sipp = self.sipp_with("uac_cancel.xml", proxy, None);
        tokio::task::spawn_blocking(move || sipp.run()).await.expect("sipp task")
    }

    /// Run the caller to completion (off the async workers).
    pub async fn run(&self, proxy: SocketAddr, status: Option<u16>) -> SippOutcome {
        let sipp = self.sipp(proxy, status);
        tokio::task::spawn_blocking(move || sipp.run()).await.expect("sipp task")
    }
}

/// Assert that SIPp's one call succeeded, with the proxy's log and SIPp's
/// messages on failure.
pub fn assert_call_succeeded(outcome: &SippOutcome, log: &dyn Fn() -> String) {
    assert!(
        outcome.succeeded() && outcome.successful == 1,
        "caller failed:\n{}\n--- caller messages ---\n{}\n--- proxy log ---\n{}",
        outcome.describe(),
        outcome.messages,
        log()
    );
}

/// A registered callee: SIPp answering with `status` after a ring, or
/// (`None`) ringing until cancelled.
pub fn callee(status: Option<u16>) -> e2e_support::sipp::SippProcess {
    let sipp = match status {
        Some(s) => {
            let xml = std::fs::read_to_string(scenario("uas_reject.xml")).expect("read scenario");
            Sipp::scenario_text(xml.replace("STATUS", &s.to_string()))
        }
        None => Sipp::scenario_file(scenario("uas_ring_cancel.xml")),
    };
    sipp.calls(1).timeout(Duration::from_secs(20)).trace_msg().spawn()
}

/// A registered callee that answers (SIPp's built-in `uas`: 180, 200,
/// then ACK and BYE).
pub fn answering_callee() -> e2e_support::sipp::SippProcess {
    Sipp::builtin("uas").calls(1).timeout(Duration::from_secs(20)).trace_msg().spawn()
}

/// What a UM peer must have received.
pub struct Expected<'a> {
    pub request_uri: &'a str,
    /// The single Diversion value, or none at all.
    pub diversion: Option<&'a str>,
    pub history_info: &'a [&'a str],
}

/// Check the INVITE a UM peer received against the caller's dialog and
/// the expected Request-URI, Diversion and History-Info.
pub fn assert_um_invite(invite: &SipMessage, call: &Call, want: &Expected<'_>, log: &dyn Fn() -> String) {
    let ctx = || format!("UM INVITE:\n{invite}\nproxy log:\n{}", log());
    assert_eq!(invite.request_uri(), Some(want.request_uri), "Request-URI; {}", ctx());
    assert_eq!(invite.header("Call-ID"), Some(call.call_id.as_str()), "Call-ID; {}", ctx());
    let from = invite.header("From").unwrap_or_default();
    assert!(from.contains(&format!("tag={}", call.from_tag)), "From tag; {}", ctx());
    assert!(from.contains(&call.from), "From URI; {}", ctx());
    let diversion = invite.header_values("Diversion");
    let want_diversion: Vec<String> = want.diversion.iter().map(|d| d.to_string()).collect();
    assert_eq!(diversion, want_diversion, "Diversion; {}", ctx());
    let history: Vec<String> = invite.header_values("History-Info");
    let want_history: Vec<String> = want.history_info.iter().map(|h| h.to_string()).collect();
    assert_eq!(history, want_history, "History-Info; {}", ctx());
}

/// The first INVITE `uas` received, waiting up to `timeout`.
pub async fn um_invite(uas: &TlsUas, timeout: Duration, log: &dyn Fn() -> String) -> SipMessage {
    match uas.wait_for("INVITE", timeout).await {
        Some(m) => m,
        None => panic!("the UM peer at {} received no INVITE; proxy log:\n{}", uas.addr, log()),
    }
}

/// Accept answer for UM peers.
pub const ACCEPT: Answer = Answer::Accept;
