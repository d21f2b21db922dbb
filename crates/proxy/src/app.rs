//! The application router: where umproxy sends a request, composed from the
//! ExUM directory, the location service and the static routes. The core
//! knows it only as a [`Router`]; the ExUM behaviour reaches the core as
//! fork plans (ring time, per-attempt timer, redirects) and a [`Fallback`]
//! that diverts to voice mail.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use sip_message::Message;
use tracing::{info, warn};

use crate::caller::{CallerIdentity, CallerSource};
use crate::core::validate::Rejection;
use crate::core::{
    Fallback, FallbackAction, ForkOutcome, ForkPlan, HeaderRewrite, NextHop, RouteDecision, RouteRequest, Router,
    Routing, StaticRouter, Target,
};
use crate::exum::{
    accept_from_provider, build_um_invite, classify_request, divert_reason, provider_caller, reason_label,
    verification_marker, CallOutcome, Classification, DirectoryHandle, DiversionReason, HealthTable,
    ProviderAcceptance, ProviderCaller, RingPlan, Security, UmInviteContext, UmRoute, UmServer, UmTarget, UmTemplates,
};
use crate::location::auth::gate::{AuthContext, AuthOutcome};
use crate::location::auth::{ChallengeKind, DigestAuth};
use crate::location::binding::FlowToken;
use crate::location::metrics::LocationMetrics;
use crate::location::policy::FailureTracker;
use crate::location::registrar::{RegisterContext, RegisterNat, Registrar};
use crate::transport::{Destination, FlowId, Transport};

/// A registered contact, as the location service hands it to routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub uri: String,
    /// q-value in thousandths (RFC 3261 §20.10).
    pub q: u16,
    /// Path values to route through, top first (RFC 3327).
    pub path: Vec<String>,
    /// The connection it registered over (RFC 5626): its transport, id and
    /// source address.
    pub flow: Option<(Transport, FlowId, SocketAddr)>,
}

/// A registrar flow token carries the connection's id and, in its top two
/// bits, its transport: a binding made over TCP or TLS is reached over the
/// same connection, whatever its Contact URI says (RFC 5626 §5.3).
/// Connection ids are sequential and never come near 2^62.
fn flow_token(flow: FlowId, transport: Transport) -> FlowToken {
    let t: u64 = match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    };
    FlowToken((flow.0 & (u64::MAX >> 2)) | (t << 62))
}

fn flow_of(token: FlowToken) -> (Transport, FlowId) {
    let transport = match token.0 >> 62 {
        1 => Transport::Tcp,
        2 => Transport::Tls,
        _ => Transport::Udp,
    };
    (transport, FlowId(token.0 & (u64::MAX >> 2)))
}

/// NAT handling of a REGISTER ([`crate::nat`]): only for one straight from
/// the UA (one Via, no Path: behind another proxy, NAT is that proxy's
/// business). A NAT'd UDP binding's flow token names no connection: the
/// binding's source address is its flow.
fn register_nat(mode: crate::nat::NatMode, req: &RouteRequest<'_>) -> Option<RegisterNat> {
    let msg = req.msg;
    if mode == crate::nat::NatMode::Off
        || msg.vias().nth(1).is_some()
        || msg.header_values(sip_message::HeaderName::Path).next().is_some()
    {
        return None;
    }
    let transport = req.source.transport;
    let is_natted = mode == crate::nat::NatMode::Always || crate::nat::via_hides_source(&msg.top_via(), req.source);
    let flow = match req.source.flow {
        Some(f) => flow_token(f, transport),
        None => FlowToken::UDP_SOURCE,
    };
    Some(RegisterNat { is_natted, transport, flow })
}

/// A future of a location lookup.
pub type Lookup = Pin<Box<dyn Future<Output = Result<Vec<Contact>, String>> + Send>>;

/// The location service, as routing sees it.
pub trait Locations: Send + Sync + 'static {
    /// The live contacts of `aor` (`sip:user@host`).
    fn lookup(&self, aor: String) -> Lookup;
}

/// The registrar as the location service of routing.
pub struct RegistrarLocations(pub Arc<Registrar>);

impl Locations for RegistrarLocations {
    fn lookup(&self, aor: String) -> Lookup {
        let registrar = self.0.clone();
        Box::pin(async move {
            let bindings = registrar.lookup(&aor, SystemTime::now()).await.map_err(|e| e.to_string())?;
            Ok(bindings
                .into_iter()
                .map(|b| Contact {
                    uri: b.contact_uri,
                    q: b.q.thousandths(),
                    path: b.path,
                    flow: b.flow.zip(b.received).map(|(f, addr)| {
                        let (transport, flow) = flow_of(f);
                        (transport, flow, addr)
                    }),
                })
                .collect())
        })
    }
}

/// Digest authentication of requests (RFC 3261 §22, RFC 8760) against the
/// directory's HA1 hashes, with the brute-force lock-out.
pub struct Authenticator {
    digest: DigestAuth,
    tracker: FailureTracker,
    metrics: Option<Arc<LocationMetrics>>,
}

impl Authenticator {
    pub fn new(digest: DigestAuth, tracker: FailureTracker, metrics: Option<Arc<LocationMetrics>>) -> Authenticator {
        Authenticator { digest, tracker, metrics }
    }

    /// Check the credentials of `msg` for `realm` (a served domain).
    pub fn check(
        &self,
        msg: &Message,
        kind: ChallengeKind,
        realm: &str,
        dir: Option<&crate::exum::Directory>,
        source_ip: std::net::IpAddr,
        now: SystemTime,
    ) -> AuthOutcome {
        let creds = DigestAuth::credentials(msg, kind, realm);
        let ha1 = creds.as_ref().ok().and_then(|c| dir.and_then(|d| d.user(&c.username, realm))).map(|u| &u.ha1);
        let ctx = AuthContext { source_ip, tracker: &self.tracker, metrics: self.metrics.as_deref() };
        self.digest.authenticate(msg, kind, realm, creds, ha1, &ctx, now)
    }
}

/// UM server health from OPTIONS pings (DESIGN.md §9: servers marked down
/// are skipped unless all are down), and the `umproxy_exum_um_target_health`
/// gauge.
#[derive(Debug)]
pub struct UmHealth {
    table: std::sync::Mutex<HealthTable>,
    gauge: IntGaugeVec,
    /// Each server's last failed ping: why, and when (for `/api/um-servers`).
    /// Keys are dial-plan FQDNs from our own configuration.
    last_errors: std::sync::Mutex<std::collections::HashMap<String, (UmPingFailure, std::time::Instant)>>,
}

/// Why an OPTIONS ping of a UM server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UmPingFailure {
    /// Its FQDN did not resolve (RFC 3263).
    Unresolved,
    /// No answer: a timeout, a refused connection or a failed TLS handshake.
    NoAnswer,
}

impl UmPingFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            UmPingFailure::Unresolved => "unresolved",
            UmPingFailure::NoAnswer => "no answer (timeout, transport or TLS error)",
        }
    }
}

/// One UM server as the health checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmServerState {
    pub server: String,
    pub is_up: bool,
    /// The last failed ping and how long ago it was.
    pub last_error: Option<(UmPingFailure, Duration)>,
}

impl UmHealth {
    pub fn register(reg: &Registry) -> Result<UmHealth, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new("umproxy_exum_um_target_health", "UM server answers OPTIONS pings (1) or not (0)"),
            &["server"],
        )?;
        reg.register(Box::new(gauge.clone()))?;
        Ok(UmHealth { table: std::sync::Mutex::new(HealthTable::new()), gauge, last_errors: Default::default() })
    }

    pub fn mark(&self, server: &str, up: bool) {
        if let Ok(mut t) = self.table.lock() {
            t.mark(server, up, std::time::Instant::now());
        }
        self.gauge.with_label_values(&[server]).set(i64::from(up));
    }

    /// Record a ping's outcome: `Ok(())` answered, `Err` why not.
    pub fn ping_result(&self, server: &str, result: Result<(), UmPingFailure>) {
        if let Err(why) = result {
            if let Ok(mut e) = self.last_errors.lock() {
                e.insert(server.to_ascii_lowercase(), (why, std::time::Instant::now()));
            }
        }
        self.mark(server, result.is_ok());
    }

    /// Every server pinged so far, by name, with its last error.
    pub fn states(&self) -> Vec<UmServerState> {
        let now = std::time::Instant::now();
        let errors = self.last_errors.lock().map(|e| e.clone()).unwrap_or_default();
        let Ok(t) = self.table.lock() else { return Vec::new() };
        let mut out: Vec<UmServerState> = t
            .iter()
            .map(|(server, is_up)| UmServerState {
                server: server.to_owned(),
                is_up,
                last_error: errors.get(server).map(|(why, at)| (*why, now.saturating_duration_since(*at))),
            })
            .collect();
        out.sort_by(|a, b| a.server.cmp(&b.server));
        out
    }

    /// The attempt order: servers that are up, in configured order, then
    /// the ones that are down (tried last, so that a wrong health verdict
    /// never makes a call fail while a server might still answer).
    pub fn order<'a>(&self, servers: &'a [UmServer]) -> Vec<&'a UmServer> {
        let Ok(t) = self.table.lock() else { return servers.iter().collect() };
        let (up, down): (Vec<&UmServer>, Vec<&UmServer>) = servers.iter().partition(|s| t.is_up(&s.fqdn));
        up.into_iter().chain(down).collect()
    }
}

/// The OPTIONS ping of one UM server, and its Call-ID.
fn options_ping(fqdn: &str, n: u64) -> (String, bytes::Bytes) {
    let call_id = format!("umproxy-hc-{n:x}");
    let bytes = bytes::Bytes::from(format!(
        "OPTIONS sip:{fqdn} SIP/2.0\r\nFrom: <sip:umproxy@{fqdn}>;tag=hc{n:x}\r\nTo: <sip:{fqdn}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ));
    (call_id, bytes)
}

/// Ping every dial plan's UM servers every `every`, through the core.
pub fn spawn_health_checks(
    core: Arc<crate::core::CoreHandle>,
    directory: Arc<DirectoryHandle>,
    resolver: Arc<dyn crate::core::Resolve>,
    health: Arc<UmHealth>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut n: u64 = rand::random();
        loop {
            tick.tick().await;
            let dir = directory.snapshot();
            for plan in dir.dial_plans() {
                let transport = if plan.security == Security::Unsecured { Transport::Tcp } else { Transport::Tls };
                for server in &plan.servers {
                    n = n.wrapping_add(1);
                    let dest = match um_server_hop(server, transport) {
                        NextHop::Destination(d) => Some(d),
                        NextHop::Uri(u) => resolver.resolve(u).await.ok().and_then(|d| d.into_iter().next()),
                        NextHop::Service { name, transport, .. } => {
                            resolver.resolve_service(name, transport).await.ok().and_then(|d| d.into_iter().next())
                        }
                    };
                    let result = match dest {
                        Some(d) => {
                            let (call_id, ping) = options_ping(&server.fqdn, n);
                            match core.originate(&call_id, ping, d).await {
                                Some(_) => Ok(()),
                                None => Err(UmPingFailure::NoAnswer),
                            }
                        }
                        None => Err(UmPingFailure::Unresolved),
                    };
                    health.ping_result(&server.fqdn, result);
                }
            }
        }
    })
}

/// ExUM settings from `[exum]`.
#[derive(Debug)]
pub struct ExumSettings {
    pub ring_time: Duration,
    pub attempt_timeout: Duration,
    pub templates: UmTemplates,
    /// `[exum] verification_header`.
    pub verification_header: String,
    /// UM server health, when health checks run.
    pub health: Option<Arc<UmHealth>>,
}

/// `umproxy_exum_*` metrics.
#[derive(Debug, Clone)]
pub struct ExumMetrics {
    routes: IntCounterVec,
    failures: IntCounterVec,
    diversion: HistogramVec,
    provider_requests: IntCounterVec,
}

/// The `result` label of `umproxy_exum_provider_requests_total`: accepted
/// as verified or unverified, or refused for a missing verification marker,
/// a caller homed on premises, or a provider that shares no address space.
const PROVIDER_RESULTS: [&str; 5] =
    ["verified", "unverified", "refused_no_marker", "refused_impersonation", "refused_not_shared"];

impl ExumMetrics {
    pub fn register(reg: &Registry) -> Result<ExumMetrics, prometheus::Error> {
        let routes = IntCounterVec::new(
            Opts::new("umproxy_exum_routes_total", "Calls sent to a UM service, by mode and diversion reason"),
            &["mode", "reason"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new("umproxy_exum_um_failures_total", "Calls no UM server of their target accepted"),
            &["mode", "reason"],
        )?;
        let diversion = HistogramVec::new(
            HistogramOpts::new(
                "umproxy_exum_diversion_seconds",
                "Time from a call's INVITE to its diversion to voice mail (ring time included)",
            )
            .buckets(vec![0.01, 0.1, 1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0]),
            &["mode", "reason"],
        )?;
        let provider_requests = IntCounterVec::new(
            Opts::new(
                "umproxy_exum_provider_requests_total",
                "Requests from hosting providers (mutual TLS), accepted by trust level or refused by reason",
            ),
            &["result"],
        )?;
        // Every series from the start: an alert on refusals needs its zero.
        for result in PROVIDER_RESULTS {
            provider_requests.with_label_values(&[result]);
        }
        reg.register(Box::new(routes.clone()))?;
        reg.register(Box::new(failures.clone()))?;
        reg.register(Box::new(diversion.clone()))?;
        reg.register(Box::new(provider_requests.clone()))?;
        // Zero series so that the families are in the first scrape.
        for mode in ["on_prem", "hosted"] {
            routes.with_label_values(&[mode, crate::exum::reason_label(None)]);
            diversion.with_label_values(&[mode, crate::exum::reason_label(None)]);
            for f in ["all_failed", "request"] {
                failures.with_label_values(&[mode, f]);
            }
        }
        Ok(ExumMetrics { routes, failures, diversion, provider_requests })
    }
}

/// Groups of contacts for forking: descending q, equal q together.
/// `escape` is the voice-mail escape window of the user's branches.
pub fn fork_groups(mut contacts: Vec<Contact>, escape: Option<Duration>) -> Vec<Vec<Target>> {
    contacts.sort_by_key(|c| std::cmp::Reverse(c.q));
    let mut groups: Vec<(u16, Vec<Target>)> = Vec::new();
    for c in contacts {
        // A binding over a connection is reached over it (RFC 5626 §5.3);
        // the hub opens a new one to the same address if it has closed.
        let next_hop = c.flow.map(|(transport, flow, addr)| {
            NextHop::Destination(Destination { transport, addr, flow: Some(flow), server_name: None })
        });
        let t = Target { request_uri: Some(c.uri), next_hop, route: c.path, request: None, escape };
        match groups.last_mut() {
            Some((q, g)) if *q == c.q => g.push(t),
            _ => groups.push((c.q, vec![t])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// The UM attempts for a voice-mail target: one serial group per UM server
/// (on premises) or the hosting provider (hosted), each with its own INVITE.
pub fn um_plan(
    original: &Message,
    target: &UmTarget,
    reason: Option<DiversionReason>,
    settings: &ExumSettings,
    dir: &crate::exum::Directory,
) -> Result<ForkPlan, String> {
    let mut groups = Vec::new();
    match &target.route {
        UmRoute::OnPrem { servers, security, .. } => {
            let transport = if *security == Security::Unsecured { Transport::Tcp } else { Transport::Tls };
            let ordered: Vec<&UmServer> = match &settings.health {
                Some(h) => h.order(servers),
                None => servers.iter().collect(),
            };
            for server in ordered {
                let ctx = UmInviteContext { templates: &settings.templates, reason, server: Some(server) };
                let request = build_um_invite(original, target, &ctx).map_err(|e| e.to_string())?;
                groups.push(vec![Target {
                    next_hop: Some(um_server_hop(server, transport)),
                    request: Some(request),
                    ..Target::default()
                }]);
            }
        }
        UmRoute::Hosted { provider, .. } => {
            let p = dir.provider(provider).ok_or_else(|| format!("no hosting provider {provider:?}"))?;
            let ctx = UmInviteContext { templates: &settings.templates, reason, server: None };
            let request = build_um_invite(original, target, &ctx).map_err(|e| e.to_string())?;
            // Mutual TLS to the provider's edge; its certificate must name
            // its proxy FQDN.
            let hop = provider_hop(p);
            groups.push(vec![Target { next_hop: Some(hop), request: Some(request), ..Target::default() }]);
        }
    }
    Ok(ForkPlan { groups, attempt_timeout: Some(settings.attempt_timeout), follow_redirects: 3, ..ForkPlan::default() })
}

/// A hosting provider's edge: its static address, else the
/// `_sipfederationtls._tcp` SRV of its proxy FQDN (Lync's federation
/// lookup); either way over TLS with a certificate naming the proxy FQDN.
fn provider_hop(p: &crate::exum::model::Provider) -> NextHop {
    match p.address {
        Some(addr) => NextHop::Destination(Destination {
            transport: Transport::Tls,
            addr,
            flow: None,
            server_name: Some(p.proxy_fqdn.as_str().into()),
        }),
        None => NextHop::Service {
            name: format!("_sipfederationtls._tcp.{}", p.proxy_fqdn),
            transport: Transport::Tls,
            server_name: p.proxy_fqdn.clone(),
        },
    }
}

fn um_server_hop(server: &UmServer, transport: Transport) -> NextHop {
    match server.address {
        Some(addr) => NextHop::Destination(Destination {
            transport,
            addr,
            flow: None,
            server_name: Some(server.fqdn.as_str().into()),
        }),
        None => {
            let port = server.port.map(|p| format!(":{p}")).unwrap_or_default();
            NextHop::Uri(format!("sip:{}{port};transport={}", server.fqdn, transport.param_name()))
        }
    }
}

/// What an operator needs to know about a UM target in a log line: the
/// dial plan and its servers in order, or the hosting provider.
fn describe_target(target: &UmTarget) -> String {
    match &target.route {
        UmRoute::OnPrem { dial_plan, servers, .. } => {
            let names: Vec<&str> = servers.iter().map(|s| s.fqdn.as_str()).collect();
            format!("dial plan {dial_plan} [{}]", names.join(", "))
        }
        UmRoute::Hosted { provider, destination, .. } => format!("provider {provider} ({destination})"),
    }
}

/// Voice mail for a local user when the ring fails, and 480 when the UM
/// servers fail too (DESIGN.md §9 "When a call diverts", "On-premises UM").
struct VoiceMail {
    target: UmTarget,
    directory: Arc<crate::exum::Directory>,
    settings: Arc<ExumSettings>,
    metrics: ExumMetrics,
    source: Arc<CallerSource>,
}

impl Fallback for VoiceMail {
    fn on_failure(&self, original: &Message, outcome: &ForkOutcome) -> FallbackAction {
        let call_id = original.call_id();
        if outcome.stage > 0 {
            return um_failed(call_id, &self.target, outcome, &self.metrics, &self.source);
        }
        let call = if outcome.no_answer {
            CallOutcome::NoAnswerTimeout
        } else if outcome.codes.is_empty() {
            CallOutcome::NoContacts
        } else {
            CallOutcome::BranchesFailed(&outcome.codes)
        };
        let Some(reason) = divert_reason(call) else { return FallbackAction::Respond };
        self.metrics
            .diversion
            .with_label_values(&[self.target.mode(), reason_label(Some(reason))])
            .observe(outcome.elapsed.as_secs_f64());
        divert(original, &self.target, Some(reason), &self.settings, &self.directory, &self.metrics, &self.source)
    }
}

/// After an immediate diversion (contacts, subscriber access, forward to
/// voice mail): the only failure left is the UM one.
struct UmFailure {
    target: UmTarget,
    metrics: ExumMetrics,
    source: Arc<CallerSource>,
}

impl Fallback for UmFailure {
    fn on_failure(&self, original: &Message, outcome: &ForkOutcome) -> FallbackAction {
        um_failed(original.call_id(), &self.target, outcome, &self.metrics, &self.source)
    }
}

/// Every UM attempt failed: a clean 480, a log line naming the call, the
/// mailbox and the servers tried with their answers, and a metric.
fn um_failed(
    call_id: &str,
    target: &UmTarget,
    outcome: &ForkOutcome,
    metrics: &ExumMetrics,
    source: &CallerSource,
) -> FallbackAction {
    warn!(
        call_id = %call_id.escape_default(),
        source = %source.remote,
        transport = %source.transport,
        caller = %source.identity,
        mailbox = %target.mailbox.aor,
        mode = target.mode(),
        tried = %describe_target(target),
        answers = ?outcome.codes,
        "ExUM: no UM server accepted the call; answering 480"
    );
    metrics.failures.with_label_values(&[target.mode(), "all_failed"]).inc();
    FallbackAction::Reject(Rejection::new(480, "Temporarily Unavailable"))
}

fn divert(
    original: &Message,
    target: &UmTarget,
    reason: Option<DiversionReason>,
    settings: &ExumSettings,
    dir: &crate::exum::Directory,
    metrics: &ExumMetrics,
    source: &Arc<CallerSource>,
) -> FallbackAction {
    match um_plan(original, target, reason, settings, dir) {
        Ok(mut plan) => {
            info!(
                call_id = %original.call_id().escape_default(),
                source = %source.remote,
                transport = %source.transport,
                caller = %source.identity,
                mailbox = %target.mailbox.aor,
                mode = target.mode(),
                reason = reason_label(reason),
                target = %describe_target(target),
                "ExUM: to voice mail"
            );
            metrics.routes.with_label_values(&[target.mode(), reason_label(reason)]).inc();
            plan.fallback =
                Some(Arc::new(UmFailure { target: target.clone(), metrics: metrics.clone(), source: source.clone() }));
            FallbackAction::Divert { plan, request: None }
        }
        Err(e) => {
            warn!(call_id = %original.call_id().escape_default(), source = %source.remote, transport = %source.transport, caller = %source.identity, mailbox = %target.mailbox.aor, error = %e, "ExUM: cannot build the INVITE to UM");
            metrics.failures.with_label_values(&[target.mode(), "request"]).inc();
            FallbackAction::Reject(Rejection::new(480, "Temporarily Unavailable"))
        }
    }
}

/// Routing for the whole proxy.
pub struct AppRouter {
    statics: StaticRouter,
    directory: Option<Arc<DirectoryHandle>>,
    locations: Option<Arc<dyn Locations>>,
    registrar: Option<Arc<Registrar>>,
    auth: Option<Arc<Authenticator>>,
    settings: Arc<ExumSettings>,
    metrics: ExumMetrics,
    nat: crate::nat::NatMode,
}

impl AppRouter {
    pub fn new(
        statics: StaticRouter,
        directory: Option<Arc<DirectoryHandle>>,
        locations: Option<Arc<dyn Locations>>,
        settings: ExumSettings,
        metrics: ExumMetrics,
    ) -> AppRouter {
        AppRouter {
            statics,
            directory,
            locations,
            registrar: None,
            auth: None,
            settings: Arc::new(settings),
            metrics,
            nat: crate::nat::NatMode::default(),
        }
    }

    /// `[nat] mode` for registrations (default `auto`).
    pub fn with_nat(mut self, mode: crate::nat::NatMode) -> AppRouter {
        self.nat = mode;
        self
    }

    /// REGISTERs for the served domains go to `registrar`.
    pub fn with_registrar(mut self, registrar: Arc<Registrar>) -> AppRouter {
        self.registrar = Some(registrar);
        self
    }

    /// Requests must authenticate (REGISTER always; others from users of
    /// the served domains, unless from a trusted peer).
    pub fn with_auth(mut self, auth: Arc<Authenticator>) -> AppRouter {
        self.auth = Some(auth);
        self
    }

    /// Authenticate, or answer with the challenge / lock-out. `Ok(None)`:
    /// no authentication is needed.
    fn authenticate(
        &self,
        req: &RouteRequest<'_>,
        kind: ChallengeKind,
        realm: &str,
    ) -> Result<Option<String>, RouteDecision> {
        let Some(auth) = &self.auth else { return Ok(None) };
        let dir = self.directory.as_ref().map(|d| d.snapshot());
        match auth.check(req.msg, kind, realm, dir.as_deref(), req.source.remote.ip(), SystemTime::now()) {
            AuthOutcome::Authenticated { user } => Ok(Some(user)),
            AuthOutcome::Challenge { response, .. } => {
                Err(RouteDecision::Respond { status: kind.status(), bytes: response })
            }
            AuthOutcome::LockedOut { response } => Err(RouteDecision::Respond { status: 403, bytes: response }),
        }
    }

    fn is_local_domain(&self, host: &str) -> bool {
        self.statics.is_local_domain(host)
            || self.directory.as_ref().is_some_and(|d| d.snapshot().is_local_domain(host))
    }

    /// A user of a served domain the directory does not know: reachable if
    /// registered (no voice mail), else 404.
    fn registered_only(&self, msg: &Message) -> Routing {
        let (Some(locations), Some(uri)) = (self.locations.clone(), msg.request_uri()) else {
            return Routing::Ready(RouteDecision::Reject(Rejection::new(404, "Not Found")));
        };
        let Some(user) = uri.user() else {
            return Routing::Ready(RouteDecision::Reject(Rejection::new(404, "Not Found")));
        };
        let aor = format!("sip:{user}@{}", uri.host().to_ascii_lowercase());
        Routing::Pending(Box::pin(async move {
            match locations.lookup(aor).await {
                Ok(c) if c.is_empty() => RouteDecision::Reject(Rejection::new(404, "Not Found")),
                Ok(c) => RouteDecision::Forward(ForkPlan { groups: fork_groups(c, None), ..ForkPlan::default() }),
                Err(_) => RouteDecision::Reject(Rejection::new(503, "Service Unavailable")),
            }
        }))
    }

    /// RFC 3261 §10.3: REGISTER for a served domain.
    /// `realm`: the Request-URI's host, lower-cased (a served domain).
    fn register(&self, req: &RouteRequest<'_>, registrar: Arc<Registrar>, realm: &str) -> Routing {
        let authenticated_user = match self.authenticate(req, ChallengeKind::Www, realm) {
            Ok(u) => u,
            Err(answer) => return Routing::Ready(answer),
        };
        let msg = req.msg.clone();
        let ctx = RegisterContext {
            received: Some(req.source.remote),
            // RFC 5626: a binding over a connection remembers the connection.
            flow: req.source.flow.map(|f| flow_token(f, req.source.transport)),
            authenticated_user,
            nat: register_nat(self.nat, req),
        };
        Routing::Pending(Box::pin(async move {
            let outcome = registrar.handle_register(&msg, &ctx, SystemTime::now()).await;
            if let Some(e) = &outcome.store_error {
                warn!(call_id = %msg.call_id().escape_default(), error = %e, "registration store failed");
            }
            RouteDecision::Respond { status: outcome.status, bytes: outcome.response }
        }))
    }

    /// A diversion straight to UM (no ringing).
    fn immediate(
        &self,
        msg: &Message,
        target: &UmTarget,
        reason: Option<DiversionReason>,
        dir: &crate::exum::Directory,
        source: &Arc<CallerSource>,
    ) -> RouteDecision {
        match divert(msg, target, reason, &self.settings, dir, &self.metrics, source) {
            FallbackAction::Divert { plan, .. } => RouteDecision::Forward(plan),
            FallbackAction::Reject(r) => RouteDecision::Reject(r),
            FallbackAction::Respond => RouteDecision::Reject(Rejection::new(480, "Temporarily Unavailable")),
        }
    }

    /// Ring the user's contacts for the ring time; voice mail when that
    /// fails, when there is one.
    fn ring(
        &self,
        msg: &Message,
        aor: &str,
        ring: RingPlan,
        voicemail: Option<UmTarget>,
        dir: Arc<crate::exum::Directory>,
        source: Arc<CallerSource>,
    ) -> Routing {
        let fallback: Option<Arc<dyn Fallback>> = voicemail.map(|target| {
            Arc::new(VoiceMail {
                target,
                directory: dir,
                settings: self.settings.clone(),
                metrics: self.metrics.clone(),
                source,
            }) as Arc<dyn Fallback>
        });
        let ring_timeout = fallback.as_ref().map(|_| ring.ring_time.unwrap_or(self.settings.ring_time));
        let Some(locations) = self.locations.clone() else {
            // No location service: the user cannot be reached, only voice mail.
            return Routing::Ready(RouteDecision::Forward(ForkPlan { fallback, ..ForkPlan::default() }));
        };
        let aor = if aor.starts_with("sip:") { aor.to_string() } else { format!("sip:{aor}") };
        let call_id = msg.call_id().to_string();
        Routing::Pending(Box::pin(async move {
            match locations.lookup(aor).await {
                Ok(contacts) => RouteDecision::Forward(ForkPlan {
                    groups: fork_groups(contacts, ring.escape),
                    ring_timeout,
                    fallback,
                    ..ForkPlan::default()
                }),
                Err(e) => {
                    warn!(call_id = %call_id.escape_default(), error = %e, "location lookup failed");
                    RouteDecision::Reject(Rejection::new(503, "Service Unavailable"))
                }
            }
        }))
    }
}

impl Router for AppRouter {
    fn route(&self, req: &RouteRequest<'_>) -> Routing {
        if req.msg.method() == Some(sip_message::Method::Register) {
            let domain =
                req.msg.request_uri().map(|u| u.host().to_ascii_lowercase()).filter(|h| self.is_local_domain(h));
            match (&self.registrar, domain) {
                (Some(r), Some(realm)) => return self.register(req, r.clone(), &realm),
                (None, Some(_)) => {
                    return Routing::Ready(RouteDecision::Reject(Rejection::new(501, "Not Implemented")));
                }
                _ => return self.statics.route(req),
            }
        }
        let dir = self.directory.as_ref().map(|h| h.snapshot());
        let source = match self.identify(req, dir.as_deref()) {
            Ok(source) => Arc::new(source),
            Err(refusal) => return Routing::Ready(refusal),
        };
        // The verification marker is ours to write: set from the provider's
        // trust on what a provider sends, removed from everything else.
        let marker = match &source.identity {
            CallerIdentity::Provider { is_verified, .. } => Some(verification_marker(*is_verified).to_owned()),
            _ => None,
        };
        let rewrite = Arc::new(HeaderRewrite { name: self.settings.verification_header.clone(), value: marker });
        with_rewrite(self.route_from(req, dir, source), rewrite)
    }
}

impl AppRouter {
    /// Who sent `req` (see [`CallerSource`]), in this order:
    /// 1. a hosting provider, by the certificate of its mutual-TLS
    ///    connection, before any digest check: its users are not ours to
    ///    challenge. It is refused (403, counted) without the verification
    ///    marker its level requires, or when its From is a user it may not
    ///    speak for ([`provider_caller`]);
    /// 2. a trusted peer (an SBC that authenticated its users);
    /// 3. a user of a served domain, who must answer the digest challenge.
    fn identify(
        &self,
        req: &RouteRequest<'_>,
        dir: Option<&crate::exum::Directory>,
    ) -> Result<CallerSource, RouteDecision> {
        let mut source = CallerSource::of(req.source);
        let msg = req.msg;
        let call_id = msg.call_id();
        if let (Some(dir), Some(tls)) = (dir, req.tls) {
            let names: Vec<&str> = tls.names.iter().map(String::as_str).collect();
            let forbidden = || RouteDecision::Reject(Rejection::new(403, "Forbidden"));
            match accept_from_provider(dir, &names, msg, &self.settings.verification_header) {
                ProviderAcceptance::NotAProvider => {}
                ProviderAcceptance::Reject { provider } => {
                    warn!(call_id = %call_id.escape_default(), source = %source.remote, transport = %source.transport, provider = %provider, "ExUM: request from a hosting provider without its verification marker refused");
                    self.metrics.provider_requests.with_label_values(&["refused_no_marker"]).inc();
                    return Err(forbidden());
                }
                ProviderAcceptance::Accept { provider, is_verified } => {
                    let verdict = dir.provider(&provider).map(|p| provider_caller(dir, p, &msg.from().uri));
                    let refusal = verdict.map_or(Some("refused_impersonation"), ProviderCaller::refusal_label);
                    if let Some(label) = refusal {
                        warn!(call_id = %call_id.escape_default(), source = %source.remote, transport = %source.transport, provider = %provider, from = %msg.from().uri.as_str().escape_default(), verdict = label, "ExUM: a hosting provider may not speak for this caller; refused");
                        self.metrics.provider_requests.with_label_values(&[label]).inc();
                        return Err(forbidden());
                    }
                    let label = if is_verified { "verified" } else { "unverified" };
                    self.metrics.provider_requests.with_label_values(&[label]).inc();
                    source.identity = CallerIdentity::Provider { identity: provider, is_verified };
                    return Ok(source);
                }
            }
        }
        if self.statics.is_trusted(req.source.remote.ip()) {
            source.identity = CallerIdentity::TrustedPeer;
            return Ok(source);
        }
        // Requests from users of a served domain prove who they are.
        let from_host = msg.from().uri.host().to_ascii_lowercase();
        if self.auth.is_some() && self.is_local_domain(&from_host) {
            if let Some(user) = self.authenticate(req, ChallengeKind::Proxy, &from_host)? {
                source.identity = CallerIdentity::User(format!("{user}@{from_host}"));
            }
        }
        Ok(source)
    }

    /// Route a request whose caller is known.
    fn route_from(
        &self,
        req: &RouteRequest<'_>,
        dir: Option<Arc<crate::exum::Directory>>,
        source: Arc<CallerSource>,
    ) -> Routing {
        // Not an open relay: only trusted peers and authenticated local
        // users may reach foreign domains (and routes to them).
        let may_relay = source.identity.may_relay();
        let Some(dir) = dir else { return Routing::Ready(self.statics.decide_for(req, may_relay)) };
        let msg = req.msg;
        let from = msg.from();
        let caller_aor = match (from.uri.user(), from.uri.host()) {
            (Some(u), h) if !h.is_empty() => Some(format!("{u}@{h}")),
            _ => None,
        };
        let class = classify_request(&dir, msg, caller_aor.as_deref(), source.identity.provider());
        match class {
            Classification::NotOurs => Routing::Ready(self.statics.decide_for(req, may_relay)),
            Classification::NotFound => self.registered_only(msg),
            Classification::NoVoicemail { .. } => {
                Routing::Ready(RouteDecision::Reject(Rejection::new(404, "Not Found")))
            }
            Classification::LocalUser { aor, ring, voicemail } => {
                self.ring(msg, &aor, ring, voicemail, dir.clone(), source)
            }
            Classification::ToProvider { provider } => {
                let Some(p) = dir.provider(&provider) else {
                    return Routing::Ready(RouteDecision::Reject(Rejection::new(404, "Not Found")));
                };
                let hop = provider_hop(p);
                Routing::Ready(RouteDecision::Forward(ForkPlan::single(Target {
                    next_hop: Some(hop),
                    ..Target::default()
                })))
            }
            other => match other.immediate_target() {
                Some(target) => {
                    let reason = other.immediate_reason();
                    Routing::Ready(self.immediate(msg, target, reason, &dir, &source))
                }
                None => Routing::Ready(RouteDecision::Reject(Rejection::new(404, "Not Found"))),
            },
        }
    }
}

/// `routing` with `rewrite` on its fork plan, now or when it is decided.
fn with_rewrite(routing: Routing, rewrite: Arc<HeaderRewrite>) -> Routing {
    fn mark(decision: RouteDecision, rewrite: Arc<HeaderRewrite>) -> RouteDecision {
        match decision {
            RouteDecision::Forward(plan) => RouteDecision::Forward(ForkPlan { rewrite: Some(rewrite), ..plan }),
            other => other,
        }
    }
    match routing {
        Routing::Ready(d) => Routing::Ready(mark(d, rewrite)),
        Routing::Pending(fut) => Routing::Pending(Box::pin(async move { mark(fut.await, rewrite) })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn um_health_keeps_each_servers_last_ping_failure() {
        let reg = Registry::new();
        let health = UmHealth::register(&reg).expect("metrics");
        health.ping_result("UM1.contoso.test", Ok(()));
        health.ping_result("um2.contoso.test", Err(UmPingFailure::NoAnswer));
        health.ping_result("um3.contoso.test", Err(UmPingFailure::Unresolved));
        let states = health.states();
        let view: Vec<_> =
            states.iter().map(|s| (s.server.as_str(), s.is_up, s.last_error.map(|(why, _)| why))).collect();
        assert_eq!(
            view,
            vec![
                ("um1.contoso.test", true, None),
                ("um2.contoso.test", false, Some(UmPingFailure::NoAnswer)),
                ("um3.contoso.test", false, Some(UmPingFailure::Unresolved)),
            ]
        );
        // Back up: up again, the last failure still on record.
        health.ping_result("um2.contoso.test", Ok(()));
        let um2 = health.states().into_iter().find(|s| s.server == "um2.contoso.test").expect("um2");
        assert!(um2.is_up);
        assert_eq!(um2.last_error.map(|(why, _)| why.as_str()), Some("no answer (timeout, transport or TLS error)"));
    }
    use crate::config::{Fork, Route, RouteMatch};
    use crate::exum::{Directory, LoadOptions};
    use crate::transport::Peer;
    use std::sync::Mutex;

    /// Locations answering from a fixed table.
    struct Table(Mutex<Vec<(String, Contact)>>);
    impl Locations for Table {
        fn lookup(&self, aor: String) -> Lookup {
            let found: Vec<Contact> =
                self.0.lock().expect("lock").iter().filter(|(a, _)| *a == aor).map(|(_, c)| c.clone()).collect();
            Box::pin(async move { Ok(found) })
        }
    }

    fn contact(uri: &str, q: u16) -> Contact {
        Contact { uri: uri.into(), q, path: vec![], flow: None }
    }

    fn router() -> (AppRouter, Registry) {
        let opts = LoadOptions { has_tls_listener: true, domains: vec!["contoso.test".into()] };
        let text = include_str!("../tests/fixtures/exum/valid.toml");
        let dir = Directory::from_toml(text, "directory.toml", &opts).expect("fixture loads");
        let handle = Arc::new(DirectoryHandle::from_directory(dir, opts));
        let locations = Arc::new(Table(Mutex::new(vec![
            ("sip:alice@contoso.test".into(), contact("sip:alice@192.0.2.5", 1000)),
            ("sip:alice@contoso.test".into(), contact("sip:alice@192.0.2.6", 500)),
            ("sip:alice@contoso.test".into(), contact("sip:alice@192.0.2.7", 1000)),
        ])));
        let statics = StaticRouter::new(
            vec!["contoso.test".into()],
            // The tests' source is a trusted peer (relays need one).
            vec!["192.0.2.1/32".parse().expect("net")],
            vec![Route {
                matches: RouteMatch::Domain("fabrikam.test".into()),
                next_hop: vec!["sip:192.0.2.99".into()],
                fork: Fork::Parallel,
            }],
        );
        let reg = Registry::new();
        let settings = ExumSettings {
            ring_time: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(4),
            templates: UmTemplates::new(None, None).expect("default templates"),
            verification_header: crate::exum::DEFAULT_VERIFICATION_HEADER.to_string(),
            health: None,
        };
        let metrics = ExumMetrics::register(&reg).expect("metrics");
        (AppRouter::new(statics, Some(handle), Some(locations), settings, metrics), reg)
    }

    fn invite(ruri: &str, from: &str) -> Message {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKapp\r\nFrom: <{from}>;tag=f\r\n\
             To: <{ruri}>\r\nCall-ID: app-1\r\nCSeq: 1 INVITE\r\nDiversion: <sip:old@x.test>;reason=deflection\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse_slice(text.as_bytes()).expect("test message parses")
    }

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            remote: "192.0.2.1:5060".parse().expect("addr"),
            local: "127.0.0.1:5060".parse().expect("addr"),
            flow: None,
        }
    }

    fn decide(r: &AppRouter, msg: &Message) -> RouteDecision {
        let p = peer();
        match r.route(&RouteRequest { msg, source: &p, tls: None }) {
            Routing::Ready(d) => d,
            Routing::Pending(f) => tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f),
        }
    }

    fn plan(d: RouteDecision) -> ForkPlan {
        match d {
            RouteDecision::Forward(p) => p,
            other => panic!("expected a fork plan, got {other:?}"),
        }
    }

    fn header(raw: &bytes::Bytes, name: &str) -> Vec<String> {
        let m = Message::parse(raw.clone(), &Default::default()).expect("UM INVITE parses");
        m.header_values_named(name).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    }

    #[test]
    fn a_binding_over_tcp_is_reached_over_its_connection_whatever_the_contact_says() {
        let token = flow_token(FlowId(42), Transport::Tcp);
        assert_eq!(flow_of(token), (Transport::Tcp, FlowId(42)));
        assert_eq!(flow_of(flow_token(FlowId(7), Transport::Tls)), (Transport::Tls, FlowId(7)));
        let c = Contact {
            uri: "sip:alice@192.0.2.5:40000;ob".into(),
            q: 1000,
            path: vec![],
            flow: Some((Transport::Tcp, FlowId(42), "192.0.2.5:40000".parse().expect("addr"))),
        };
        let groups = fork_groups(vec![c], None);
        match &groups[0][0].next_hop {
            Some(NextHop::Destination(d)) => {
                assert_eq!((d.transport, d.flow), (Transport::Tcp, Some(FlowId(42))));
            }
            other => panic!("the flow expected, got {other:?}"),
        }
    }

    #[test]
    fn local_user_rings_contacts_by_q_for_their_ring_time_with_voice_mail_behind() {
        let (r, _) = router();
        let p = plan(decide(&r, &invite("sip:alice@contoso.test", "sip:zed@fabrikam.test")));
        let uris: Vec<Vec<String>> =
            p.groups.iter().map(|g| g.iter().filter_map(|t| t.request_uri.clone()).collect()).collect();
        assert_eq!(
            uris,
            vec![
                vec!["sip:alice@192.0.2.5".to_string(), "sip:alice@192.0.2.7".to_string()],
                vec!["sip:alice@192.0.2.6".to_string()]
            ]
        );
        assert_eq!(p.ring_timeout, Some(Duration::from_secs(20)), "alice's own ring time");
        assert!(p.groups.iter().flatten().all(|t| t.escape == Some(Duration::from_millis(1500))), "her escape window");
        assert!(p.fallback.is_some());
    }

    #[test]
    fn busy_on_prem_user_diverts_to_each_um_server_with_one_diversion() {
        let (r, reg) = router();
        let orig = invite("sip:alice@contoso.test", "sip:zed@fabrikam.test");
        let p = plan(decide(&r, &orig));
        let fb = p.fallback.expect("voice mail");
        let outcome = ForkOutcome {
            elapsed: Duration::from_secs(3),
            stage: 0,
            best: Some(486),
            no_answer: false,
            codes: vec![486, 486],
        };
        let FallbackAction::Divert { plan: um, .. } = fb.on_failure(&orig, &outcome) else { panic!("should divert") };
        assert_eq!(um.groups.len(), 2, "the dial plan's two servers, in turn");
        assert_eq!(um.attempt_timeout, Some(Duration::from_secs(4)));
        let first = &um.groups[0][0];
        match &first.next_hop {
            Some(NextHop::Destination(d)) => {
                assert_eq!(d.transport, Transport::Tls, "sip_secured dial plan: TLS");
                assert_eq!(d.addr.to_string(), "127.0.0.1:5071");
                assert_eq!(d.server_name.as_deref(), Some("um1.contoso.test"));
            }
            other => panic!("static UM address expected, got {other:?}"),
        }
        assert_eq!(um.groups[1][0].next_hop, Some(NextHop::Uri("sip:um2.contoso.test;transport=tls".into())));
        let req = first.request.as_ref().expect("a request of its own");
        let div = header(req, "Diversion");
        assert_eq!(div.len(), 1, "the incoming Diversion is replaced by exactly one: {div:?}");
        assert!(div[0].starts_with("<sip:alice@contoso.test>") && div[0].contains("reason=user-busy"), "{div:?}");
        let encoded = prometheus::TextEncoder::new().encode_to_string(&reg.gather()).expect("encode");
        assert!(encoded.contains("umproxy_exum_routes_total{mode=\"on_prem\",reason=\"user-busy\"} 1"), "{encoded}");
        assert!(
            encoded.contains("umproxy_exum_diversion_seconds_bucket{mode=\"on_prem\",reason=\"user-busy\",le=\"5\"} 1"),
            "{encoded}"
        );
        // All UM servers failed: 480 and a failure metric.
        let FallbackAction::Reject(rej) = um.fallback.expect("UM failure hook").on_failure(
            &orig,
            &ForkOutcome {
                elapsed: Duration::from_secs(9),
                stage: 1,
                best: Some(503),
                no_answer: false,
                codes: vec![503, 408],
            },
        ) else {
            panic!("should reject")
        };
        assert_eq!(rej.code, 480);
        let encoded = prometheus::TextEncoder::new().encode_to_string(&reg.gather()).expect("encode");
        assert!(encoded.contains("umproxy_exum_um_failures_total{mode=\"on_prem\",reason=\"all_failed\"} 1"));
    }

    #[test]
    fn answered_or_declined_outcomes_follow_the_decision_table() {
        let (r, _) = router();
        let orig = invite("sip:alice@contoso.test", "sip:zed@fabrikam.test");
        let fb = plan(decide(&r, &orig)).fallback.expect("voice mail");
        let no_answer = ForkOutcome {
            elapsed: Duration::from_secs(20),
            stage: 0,
            best: Some(487),
            no_answer: true,
            codes: vec![487],
        };
        assert!(matches!(fb.on_failure(&orig, &no_answer), FallbackAction::Divert { .. }));
        let unregistered =
            ForkOutcome { elapsed: Duration::ZERO, stage: 0, best: None, no_answer: false, codes: vec![] };
        assert!(matches!(fb.on_failure(&orig, &unregistered), FallbackAction::Divert { .. }));
    }

    #[test]
    fn a_um_server_marked_down_is_tried_last() {
        let (mut r, reg) = router();
        let health = Arc::new(UmHealth::register(&reg).expect("gauge"));
        health.mark("um1.contoso.test", false);
        health.mark("um2.contoso.test", true);
        Arc::get_mut(&mut r.settings).expect("unshared").health = Some(health);
        let orig = invite("sip:alice@contoso.test;opaque=app:voicemail", "sip:zed@fabrikam.test");
        let p = plan(decide(&r, &orig));
        assert_eq!(p.groups.len(), 2, "the down server is still tried, last");
        assert_eq!(p.groups[0][0].next_hop, Some(NextHop::Uri("sip:um2.contoso.test;transport=tls".into())));
        let encoded = prometheus::TextEncoder::new().encode_to_string(&reg.gather()).expect("encode");
        assert!(encoded.contains("umproxy_exum_um_target_health{server=\"um1.contoso.test\"} 0"), "{encoded}");
    }

    #[test]
    fn own_voice_mail_goes_straight_to_um_without_diversion() {
        let (r, _) = router();
        let orig = invite("sip:alice@contoso.test;opaque=app:voicemail", "sip:alice@contoso.test");
        let p = plan(decide(&r, &orig));
        assert!(p.ring_timeout.is_none(), "no ringing");
        let req = p.groups[0][0].request.as_ref().expect("UM INVITE");
        assert!(header(req, "Diversion").is_empty(), "subscriber access carries no Diversion");
    }

    #[test]
    fn hosted_user_goes_to_the_provider_with_the_policy_in_the_request_uri() {
        let (r, _) = router();
        let orig = invite("sip:bob@contoso.test;opaque=app:voicemail", "sip:zed@fabrikam.test");
        let p = plan(decide(&r, &orig));
        let t = &p.groups[0][0];
        assert_eq!(
            t.next_hop,
            Some(NextHop::Service {
                name: "_sipfederationtls._tcp.exap.um.example.net".into(),
                transport: Transport::Tls,
                server_name: "exap.um.example.net".into(),
            }),
            "found by the federation SRV, certificate checked against the proxy FQDN"
        );
        let m = Message::parse(t.request.clone().expect("request"), &Default::default()).expect("parses");
        let ruri = m.request_uri_str().unwrap_or_default().to_string();
        assert!(ruri.starts_with("sip:exap.um.example.net;opaque=app:voicemail"), "{ruri}");
    }

    fn decide_tls(r: &AppRouter, msg: &Message, names: &[&str]) -> RouteDecision {
        let p = Peer { transport: Transport::Tls, ..peer() };
        let tls = crate::transport::TlsIdentity { names: names.iter().map(|s| s.to_string()).collect() };
        match r.route(&RouteRequest { msg, source: &p, tls: Some(&tls) }) {
            Routing::Ready(d) => d,
            Routing::Pending(f) => tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f),
        }
    }

    #[test]
    fn provider_requests_are_judged_by_their_certificate_and_verification_level() {
        let (r, _) = router();
        // exchange-online uses source verification: no marker, 403.
        let m = invite("sip:alice@contoso.test", "sip:someone@contoso.test");
        assert!(matches!(decide_tls(&r, &m, &["exap.um.example.net"]), RouteDecision::Reject(x) if x.code == 403));
        // With the marker it is accepted and routed to alice.
        let text = String::from_utf8_lossy(m.as_bytes()).replacen(
            "Max-Forwards: 70",
            "ms-edge-proxy-message-trust: ms-source-verified-user=verified\r\nMax-Forwards: 70",
            1,
        );
        let marked = Message::parse_slice(text.as_bytes()).expect("parses");
        assert!(matches!(decide_tls(&r, &marked, &["exap.um.example.net"]), RouteDecision::Forward(_)));
        // A certificate naming no provider is not a provider.
        assert!(matches!(decide_tls(&r, &m, &["evil.example.org"]), RouteDecision::Forward(_)));
    }

    #[test]
    fn an_unknown_shared_domain_user_from_the_hosting_provider_is_not_sent_back() {
        let (r, _) = router();
        // sfb-online hosts users and shares the address space: an unknown
        // user goes there, but not when the request came from it.
        let m = invite("sip:nobody@contoso.test", "sip:x@contoso.test");
        match decide(&r, &m) {
            RouteDecision::Forward(p) => match &p.groups[0][0].next_hop {
                Some(NextHop::Destination(d)) => assert_eq!(d.addr.to_string(), "127.0.0.1:5081"),
                other => panic!("to the provider expected, got {other:?}"),
            },
            other => panic!("expected forward, got {other:?}"),
        }
        assert!(
            matches!(decide_tls(&r, &m, &["sipfed.online.example.net"]), RouteDecision::Reject(x) if x.code == 404)
        );
    }

    #[test]
    fn registered_users_missing_from_the_directory_are_still_reached() {
        let (r, _) = router();
        // zoe is not in the directory; nobody registered as her either.
        // (Unknown users of the shared domain go to the users-hosting provider,
        // unless the request came from it: that is when the location service
        // is asked.)
        let sfb = ["sipfed.online.example.net"];
        assert!(
            matches!(decide_tls(&r, &invite("sip:zoe@contoso.test", "sip:x@fabrikam.test"), &sfb), RouteDecision::Reject(x) if x.code == 404)
        );
        let (mut r, _) = router();
        r.locations = Some(Arc::new(Table(Mutex::new(vec![(
            "sip:zoe@contoso.test".into(),
            contact("sip:zoe@192.0.2.8", 1000),
        )]))));
        let p = plan(decide_tls(&r, &invite("sip:zoe@contoso.test", "sip:x@fabrikam.test"), &sfb));
        assert_eq!(p.groups[0][0].request_uri.as_deref(), Some("sip:zoe@192.0.2.8"));
        assert!(p.fallback.is_none(), "no voice mail without a directory entry");
    }

    #[test]
    fn register_without_a_registrar_is_not_implemented_and_foreign_register_is_relayed_by_the_static_rules() {
        let (r, _) = router();
        let reg = Message::parse_slice(
            "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr\r\n\
             From: <sip:alice@contoso.test>;tag=f\r\nTo: <sip:alice@contoso.test>\r\nCall-ID: r1\r\n\
             CSeq: 1 REGISTER\r\nContact: <sip:alice@192.0.2.5>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                .as_bytes(),
        )
        .expect("parses");
        assert!(matches!(decide(&r, &reg), RouteDecision::Reject(x) if x.code == 501));
    }

    #[test]
    fn foreign_domains_fall_through_to_the_static_routes() {
        let (r, _) = router();
        let p = plan(decide(&r, &invite("sip:someone@fabrikam.test", "sip:alice@contoso.test")));
        assert_eq!(p.groups[0][0].next_hop, Some(NextHop::Uri("sip:192.0.2.99".into())));
    }

    mod auth {
        use super::*;
        use crate::location::auth::{compute_response, Algorithm, AuthConfig};
        use crate::location::policy::LockoutConfig;
        use crate::location::registrar::RegistrarConfig;
        use crate::location::store::embedded::{EmbeddedConfig, EmbeddedStore};

        /// The built-in example directory (alice's password is
        /// alice-secret, realm example.test), a real embedded registrar and
        /// digest auth.
        fn router(dir: &tempfile::TempDir) -> AppRouter {
            let opts = LoadOptions { has_tls_listener: false, domains: vec!["example.test".into()] };
            let handle = Arc::new(DirectoryHandle::from_directory(Directory::example(&opts).expect("example"), opts));
            let store = EmbeddedStore::open(&dir.path().join("reg.db"), EmbeddedConfig::default(), SystemTime::now())
                .expect("store");
            let reg_cfg = RegistrarConfig { domains: vec!["example.test".into()], ..RegistrarConfig::default() };
            let registrar = Arc::new(Registrar::new(Arc::new(store), reg_cfg, None));
            let settings = ExumSettings {
                ring_time: Duration::from_secs(30),
                attempt_timeout: Duration::from_secs(4),
                templates: UmTemplates::new(None, None).expect("templates"),
                verification_header: crate::exum::DEFAULT_VERIFICATION_HEADER.into(),
                health: None,
            };
            let digest = DigestAuth::new(b"a test secret of 32 bytes length", AuthConfig::default()).expect("auth");
            let tracker = FailureTracker::new(LockoutConfig { max_failures_per_ip: 3, ..LockoutConfig::default() });
            let statics =
                StaticRouter::new(vec!["example.test".into()], vec!["10.1.0.0/16".parse().expect("net")], vec![]);
            AppRouter::new(
                statics,
                Some(handle),
                Some(Arc::new(RegistrarLocations(registrar.clone()))),
                settings,
                ExumMetrics::register(&Registry::new()).expect("metrics"),
            )
            .with_registrar(registrar)
            .with_auth(Arc::new(Authenticator::new(digest, tracker, None)))
        }

        fn register(extra: &str) -> Message {
            Message::parse_slice(
                format!(
                    "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr{}\r\n\
                     From: <sip:alice@example.test>;tag=f\r\nTo: <sip:alice@example.test>\r\nCall-ID: reg-a\r\n\
                     CSeq: {} REGISTER\r\nContact: <sip:alice@192.0.2.5>\r\n{extra}Max-Forwards: 70\r\n\
                     Content-Length: 0\r\n\r\n",
                    extra.len(),
                    1 + extra.len()
                )
                .as_bytes(),
            )
            .expect("parses")
        }

        fn respond(d: RouteDecision) -> Message {
            match d {
                RouteDecision::Respond { bytes, .. } => Message::parse(bytes, &Default::default()).expect("parses"),
                other => panic!("expected a response, got {other:?}"),
            }
        }

        fn challenge_param(resp: &Message, header: &str, alg: &str, param: &str) -> String {
            let ch = resp
                .header_values_named(header)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .find(|v| v.contains(&format!("algorithm={alg}")))
                .expect("challenge for the algorithm");
            let at = ch.find(&format!("{param}=\"")).expect("param") + param.len() + 2;
            ch[at..].split('"').next().unwrap_or_default().to_string()
        }

        fn credentials(header: &str, nonce: &str, method: &str, uri: &str, password_ok: bool) -> String {
            let ha1 = if password_ok {
                "a275e97631aa73189074983a32a84a19".to_string()
            } else {
                Algorithm::Md5.hex_digest(b"alice:example.test:wrong")
            };
            let response = compute_response(Algorithm::Md5, &ha1, nonce, "00000001", "c0ffee", method, uri);
            format!(
                "{header}: Digest username=\"alice\", realm=\"example.test\", nonce=\"{nonce}\", uri=\"{uri}\", \
                 response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
            )
        }

        #[test]
        fn register_is_challenged_with_sha256_and_md5_then_accepted_with_the_right_password() {
            let dir = tempfile::tempdir().expect("tempdir");
            let r = router(&dir);
            let first = respond(decide(&r, &register("")));
            assert_eq!(first.status(), Some(401));
            let algs: Vec<String> = first
                .header_values_named("WWW-Authenticate")
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            assert_eq!(algs.len(), 2, "one challenge per algorithm: {algs:?}");
            assert!(algs[0].contains("algorithm=SHA-256") && algs[1].contains("algorithm=MD5"), "{algs:?}");
            let nonce = challenge_param(&first, "WWW-Authenticate", "MD5", "nonce");
            let ok = respond(decide(
                &r,
                &register(&credentials("Authorization", &nonce, "REGISTER", "sip:example.test", true)),
            ));
            assert_eq!(ok.status(), Some(200));
            assert_eq!(ok.contact_count(), 1);
        }

        #[test]
        fn wrong_passwords_are_challenged_again_then_locked_out() {
            let dir = tempfile::tempdir().expect("tempdir");
            let r = router(&dir);
            let nonce = challenge_param(&respond(decide(&r, &register(""))), "WWW-Authenticate", "MD5", "nonce");
            let bad = register(&credentials("Authorization", &nonce, "REGISTER", "sip:example.test", false));
            for _ in 0..3 {
                assert_eq!(respond(decide(&r, &bad)).status(), Some(401));
            }
            assert_eq!(respond(decide(&r, &bad)).status(), Some(403), "the source is locked out");
        }

        #[test]
        fn calls_from_local_users_need_proxy_authentication_unless_from_a_trusted_peer() {
            let dir = tempfile::tempdir().expect("tempdir");
            let r = router(&dir);
            let inv = invite("sip:bob@example.test", "sip:alice@example.test");
            let challenge = respond(decide(&r, &inv));
            assert_eq!(challenge.status(), Some(407));
            assert_eq!(challenge.header_values_named("Proxy-Authenticate").count(), 2);
            // From a trusted peer (an SBC that authenticated the user): no challenge.
            let trusted = Peer { remote: "10.1.2.3:5060".parse().expect("addr"), ..peer() };
            let routed = r.route(&RouteRequest { msg: &inv, source: &trusted, tls: None });
            assert!(!matches!(routed, Routing::Ready(RouteDecision::Respond { .. })), "trusted peer challenged");
            // Calls to local users from outside the served domains need none.
            let from_outside = invite("sip:bob@example.test", "sip:someone@fabrikam.test");
            assert!(!matches!(decide(&r, &from_outside), RouteDecision::Respond { status: 407, .. }));
        }
    }
}
