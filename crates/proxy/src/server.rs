//! Starting and stopping a whole umproxy from a validated [`Config`]:
//! metrics, the core's shards, the transports, the admin listener; and the
//! reload of TLS certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sip_message::Uri;
use tracing::{info, warn};

use crate::admin::{self, AdminHandle};
use crate::app::{
    spawn_health_checks, AppRouter, Authenticator, ExumMetrics, ExumSettings, RegistrarLocations, UmHealth,
};
use crate::config::{Config, DirectoryBackend, Listen, ListenTls};
use crate::core::{Core, CoreConfig, CoreHandle, Resolve, Resolving, Router, StaticRouter, Wire};
use crate::dns::Resolver;
use crate::exum::{Directory, DirectoryHandle, LdapSettings, LoadOptions, UmTemplates};
use crate::location::registrar::Registrar;
use crate::metrics::Metrics;
use crate::transport::{
    load_certificates, load_private_key, Destination, ListenerInfo, ListenerSpec, Outbound, OutboundTls, TlsClientSpec,
    TlsServerSpec, Transport, TransportHub, TransportLimits,
};

fn reload_tls_listeners(hub: &TransportHub, listen: &[Listen]) -> usize {
    let mut reloaded = 0;
    for l in listen {
        let Some(tls) = &l.tls else { continue };
        match server_tls(tls).and_then(|spec| hub.reload_tls(l.address, spec).map_err(StartError::from)) {
            Ok(()) => {
                reloaded += 1;
                info!(address = %l.address, "TLS certificate reloaded");
            }
            Err(e) => warn!(address = %l.address, error = %e, "TLS certificate not reloaded; keeping the old one"),
        }
    }
    reloaded
}

fn reload_directory_handle(directory: &DirectoryHandle) -> bool {
    match directory.reload() {
        Ok(_) => {
            info!("directory reloaded");
            true
        }
        Err(e) => {
            warn!(error = %e, "directory not reloaded; keeping the one in use");
            false
        }
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reload on file change as on SIGHUP: the directory file when it
/// changes, the TLS listeners when any of their files does. Polling every
/// `every` keeps it portable; a failed reload keeps what is in use and is
/// retried on the next change.
fn spawn_file_watch(
    hub: Option<Arc<TransportHub>>,
    listen: Vec<Listen>,
    directory: Arc<DirectoryHandle>,
    directory_file: Option<PathBuf>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let tls_files: Vec<PathBuf> = listen
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| [Some(t.certificate.clone()), Some(t.private_key.clone()), t.client_ca.clone()])
        .flatten()
        .collect();
    tokio::spawn(async move {
        let stamp = |files: &[PathBuf]| files.iter().map(|f| modified(f)).collect::<Vec<_>>();
        let mut dir_seen = directory_file.as_deref().and_then(modified);
        let mut tls_seen = stamp(&tls_files);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let dir_now = directory_file.as_deref().and_then(modified);
            if dir_now != dir_seen {
                dir_seen = dir_now;
                reload_directory_handle(&directory);
            }
            let tls_now = stamp(&tls_files);
            if tls_now != tls_seen {
                tls_seen = tls_now;
                if let Some(hub) = &hub {
                    reload_tls_listeners(hub, &listen);
                }
            }
        }
    })
}

/// How often every UM server is pinged with OPTIONS.
const UM_HEALTH_CHECK_S: u64 = 30;

/// Why umproxy could not start. Each variant names what was being set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("admin listener {addr}: {source}")]
    Admin { addr: SocketAddr, source: std::io::Error },
    #[error("dns: {0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error(transparent)]
    Directory(#[from] crate::exum::DirectoryError),
    #[error("{what}: {problem}")]
    Setup { what: &'static str, problem: String },
}

/// The registrar and its store, from `[registrar]`.
pub async fn build_registrar(
    config: &Config,
    registry: &prometheus::Registry,
) -> Result<(Registrar, Arc<crate::location::metrics::LocationMetrics>), StartError> {
    use crate::config::StoreKind;
    use crate::location::store::{embedded, redis, LocationStore};
    let r = &config.registrar;
    let metrics = crate::location::metrics::LocationMetrics::register(registry)
        .map_err(|e| StartError::Setup { what: "metrics", problem: e.to_string() })?;
    let store: Arc<dyn LocationStore> = match r.store {
        StoreKind::Embedded => {
            let cfg = embedded::EmbeddedConfig {
                flush_interval: r.flush_interval,
                max_aors: r.max_aors,
                unflushed: Some(metrics.unflushed_aors.clone()),
            };
            match r.path.clone() {
                None => {
                    warn!("[registrar] path not set: registrations live in memory only and do not survive a restart");
                    Arc::new(embedded::EmbeddedStore::memory_only(cfg))
                }
                Some(path) => {
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir).map_err(|e| StartError::Setup {
                            what: "registrar.path",
                            problem: format!("{}: {e}", dir.display()),
                        })?;
                    }
                    let opened = tokio::task::spawn_blocking(move || {
                        embedded::EmbeddedStore::open(&path, cfg, std::time::SystemTime::now())
                            .map_err(|e| format!("{}: {e}", path.display()))
                    })
                    .await
                    .map_err(|e| StartError::Setup { what: "registrar.path", problem: e.to_string() })?;
                    Arc::new(opened.map_err(|problem| StartError::Setup { what: "registrar.path", problem })?)
                }
            }
        }
        StoreKind::Redis => {
            let url = r.redis_url.clone().unwrap_or_else(|| redis::RedisConfig::default().url);
            Arc::new(
                redis::RedisStore::new(redis::RedisConfig {
                    url,
                    max_aors: r.max_aors,
                    ..redis::RedisConfig::default()
                })
                .map_err(|e| StartError::Setup { what: "registrar.redis_url", problem: e.to_string() })?,
            )
        }
    };
    let cfg = crate::location::registrar::RegistrarConfig {
        default_expires: r.default_expires,
        min_expires: r.min_expires,
        max_expires: r.max_expires,
        domains: config.proxy.domains.clone(),
        ..crate::location::registrar::RegistrarConfig::default()
    };
    let metrics = Arc::new(metrics);
    Ok((Registrar::new(store, cfg, Some(metrics.clone())), metrics))
}

/// Digest authentication from `[auth]` (None when disabled).
pub fn build_auth(
    config: &Config,
    metrics: Arc<crate::location::metrics::LocationMetrics>,
) -> Result<Option<Authenticator>, StartError> {
    use crate::location::auth::{Algorithm, AuthConfig, DigestAuth};
    use crate::location::policy::{FailureTracker, LockoutConfig};
    let a = &config.auth;
    if !a.enabled {
        warn!("[auth] enabled = false: REGISTER and local users are not authenticated");
        return Ok(None);
    }
    let secret = match &a.secret_file {
        Some(f) => std::fs::read(f)
            .map_err(|e| StartError::Setup { what: "auth.secret_file", problem: format!("{}: {e}", f.display()) })?,
        None => {
            info!("[auth] secret_file not set: nonces are signed with a key of this process only");
            (0..4).flat_map(|_| rand::random::<u64>().to_le_bytes()).collect()
        }
    };
    let algorithms = a.algorithms.iter().filter_map(|n| Algorithm::parse(n)).collect();
    let cfg = AuthConfig { nonce_ttl_s: a.nonce_ttl_s, algorithms, ..AuthConfig::default() };
    let digest = DigestAuth::new(&secret, cfg)
        .map_err(|e| StartError::Setup { what: "auth.secret_file", problem: e.to_string() })?;
    let tracker = FailureTracker::new(LockoutConfig {
        max_failures_per_ip: a.lockout_max_failures_per_ip,
        max_failures_per_user: a.lockout_max_failures_per_user,
        window: a.lockout_window,
        lockout: a.lockout,
        ..LockoutConfig::default()
    });
    Ok(Some(Authenticator::new(digest, tracker, Some(metrics))))
}

/// Lapsed bindings are swept every 30 s (lookups already skip them; this
/// frees their space).
fn spawn_expiry(registrar: Arc<Registrar>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            if let Err(e) = registrar.expire(std::time::SystemTime::now()).await {
                warn!(error = %e, "expiring registrations failed");
            }
        }
    });
}

/// The ExUM directory named by `[directory]`: a file, the built-in example
/// (no file), or LDAP with the file as its topology (policies, dial plans,
/// providers).
pub async fn load_directory(config: &Config) -> Result<DirectoryHandle, StartError> {
    let opts = directory_options(config);
    match (config.directory.backend, &config.directory.file, &config.directory.ldap) {
        (DirectoryBackend::Ldap, _, Some(_)) => {
            let (settings, topology, name) = ldap_source(config)?;
            let dir = crate::exum::ldap::load(&settings, &topology, &name, &opts).await?;
            Ok(DirectoryHandle::from_directory(dir, opts))
        }
        (_, Some(file), _) => Ok(DirectoryHandle::open(file, opts)?),
        (_, None, _) => Ok(DirectoryHandle::from_directory(Directory::example(&opts)?, opts)),
    }
}

fn directory_options(config: &Config) -> LoadOptions {
    LoadOptions {
        has_tls_listener: config.listen.iter().any(|l| l.transport == Transport::Tls),
        domains: config.proxy.domains.clone(),
    }
}

/// The LDAP settings, and the topology (policies, dial plans, providers)
/// from `[directory] file`.
fn ldap_source(config: &Config) -> Result<(LdapSettings, String, String), StartError> {
    let Some(l) = &config.directory.ldap else {
        return Err(StartError::Setup { what: "directory.ldap", problem: "missing".into() });
    };
    let (topology, name) = match &config.directory.file {
        Some(f) => (
            std::fs::read_to_string(f)
                .map_err(|e| StartError::Setup { what: "directory.file", problem: format!("{}: {e}", f.display()) })?,
            f.display().to_string(),
        ),
        None => (String::new(), "<no topology file>".to_string()),
    };
    let bind_password = match &l.bind_password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| StartError::Setup {
                    what: "directory.ldap.bind_password_file",
                    problem: format!("{}: {e}", p.display()),
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => None,
    };
    let settings = LdapSettings {
        url: l.url.clone(),
        bind_dn: l.bind_dn.clone(),
        bind_password,
        base_dn: l.base_dn.clone(),
        timeout: Duration::from_secs(5),
        page_size: 500,
    };
    Ok((settings, topology, name))
}

/// With the LDAP backend, the directory is read again every
/// `[directory.ldap] cache_ttl_s`; a failed read keeps the one in use.
fn spawn_ldap_refresh(config: &Config, directory: Arc<DirectoryHandle>) -> Option<tokio::task::JoinHandle<()>> {
    let every =
        config.directory.ldap.as_ref().filter(|_| config.directory.backend == DirectoryBackend::Ldap)?.cache_ttl;
    let (settings, topology, name) = ldap_source(config).ok()?;
    let opts = directory_options(config);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            match crate::exum::ldap::load(&settings, &topology, &name, &opts).await {
                Ok(dir) => {
                    directory.install(dir);
                    tracing::debug!("directory refreshed from LDAP");
                }
                Err(e) => warn!(error = %e, "LDAP refresh failed; keeping the directory in use"),
            }
        }
    }))
}

impl Wire for TransportHub {
    fn send(&self, out: Outbound) {
        TransportHub::send(self, out)
    }
    fn listener_for(&self, transport: Transport, remote: &SocketAddr) -> Option<ListenerInfo> {
        TransportHub::listener_for(self, transport, remote).cloned()
    }
    fn is_local(&self, host: &str, port: Option<u16>) -> bool {
        TransportHub::is_local(self, host, port)
    }
    fn alias(&self, flow: crate::transport::FlowId, addr: SocketAddr) {
        TransportHub::alias(self, flow, addr);
    }
}

/// RFC 3263 resolution with the next hops that said they are out of
/// service (503 + Retry-After) moved to the end of the list: still tried,
/// but after the others.
pub struct NextHops {
    resolver: Resolver,
    blacklist: crate::dns::Blacklist,
}

impl NextHops {
    pub fn new(resolver: Resolver) -> NextHops {
        NextHops { resolver, blacklist: crate::dns::Blacklist::new() }
    }

    fn down_last(&self, dests: Vec<Destination>) -> Vec<Destination> {
        let now = std::time::Instant::now();
        let key =
            |d: &Destination| crate::dns::Target { transport: d.transport, addr: d.addr, server_name: String::new() };
        let (up, down): (Vec<_>, Vec<_>) = dests.into_iter().partition(|d| !self.blacklist.is_down(&key(d), now));
        up.into_iter().chain(down).collect()
    }
}

impl Resolve for NextHops {
    fn resolve(&self, uri: String) -> Resolving {
        let fut = Resolve::resolve(&self.resolver, uri);
        let me = NextHops { resolver: self.resolver.clone(), blacklist: self.blacklist.clone() };
        Box::pin(async move { fut.await.map(|d| me.down_last(d)) })
    }
    fn resolve_service(&self, name: String, transport: Transport) -> Resolving {
        let fut = Resolve::resolve_service(&self.resolver, name, transport);
        let me = NextHops { resolver: self.resolver.clone(), blacklist: self.blacklist.clone() };
        Box::pin(async move { fut.await.map(|d| me.down_last(d)) })
    }
    fn mark_down(&self, dest: &Destination, duration: Duration) {
        let target = crate::dns::Target { transport: dest.transport, addr: dest.addr, server_name: String::new() };
        self.blacklist.mark_down(&target, std::time::Instant::now(), duration);
    }
}

/// A resolved target as a destination whose certificate must name the
/// target's server name.
fn destinations(targets: Vec<crate::dns::Target>) -> Vec<Destination> {
    targets
        .into_iter()
        .map(|t| Destination {
            transport: t.transport,
            addr: t.addr,
            flow: None,
            server_name: Some(t.server_name.into()),
        })
        .collect()
}

impl Resolve for Resolver {
    fn resolve_service(&self, name: String, transport: Transport) -> Resolving {
        let me = self.clone();
        Box::pin(
            async move { Ok(destinations(me.resolve_service(&name, transport).await.map_err(|e| e.to_string())?)) },
        )
    }

    fn resolve(&self, uri: String) -> Resolving {
        let me = self.clone();
        Box::pin(async move {
            let parsed = Uri::parse(uri.as_bytes()).ok_or_else(|| format!("not a SIP URI: {uri}"))?;
            Ok(destinations(me.resolve_uri(&parsed).await.map_err(|e| e.to_string())?))
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StartError> {
    Ok(load_certificates(path)?)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, StartError> {
    Ok(load_private_key(path)?)
}

/// The TLS material of a listener, read from its files.
pub fn server_tls(tls: &ListenTls) -> Result<TlsServerSpec, StartError> {
    Ok(TlsServerSpec {
        cert_chain: read_certs(&tls.certificate)?,
        key: read_key(&tls.private_key)?,
        client_ca: tls.client_ca.as_deref().map(read_certs).transpose()?,
    })
}

/// Outbound TLS: `[tls_client]` for every server, and for each hosting
/// provider with a `ca` in the directory, that CA for its proxy FQDN (the
/// provider's edge must chain to it), presenting the same client
/// certificate. A provider `ca` path is relative to the directory file.
fn outbound_tls(cfg: &Config, dir: &Directory) -> Result<OutboundTls, StartError> {
    let identity = match cfg.tls_client.as_ref().map(|c| (&c.certificate, &c.private_key)) {
        Some((Some(cert), Some(key))) => Some((read_certs(cert)?, read_key(key)?)),
        _ => None,
    };
    let roots = cfg.tls_client.as_ref().and_then(|c| c.ca.as_deref()).map(read_certs).transpose()?;
    let base = cfg.directory.file.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let mut per_server = Vec::new();
    for p in dir.providers().iter().filter(|p| p.enabled) {
        let Some(ca) = &p.ca else { continue };
        let provider_roots = read_certs(&base.join(ca))?;
        let identity = identity.as_ref().map(|(chain, key)| (chain.clone(), key.clone_key()));
        per_server.push((p.proxy_fqdn.clone(), TlsClientSpec { identity, roots: provider_roots }));
    }
    let default = match (identity, roots) {
        (None, None) => None,
        (identity, roots) => Some(TlsClientSpec { identity, roots: roots.unwrap_or_default() }),
    };
    Ok(OutboundTls { default, per_server })
}

/// A running umproxy.
pub struct Server {
    pub hub: Arc<TransportHub>,
    pub metrics: Arc<Metrics>,
    core: Arc<CoreHandle>,
    health_task: tokio::task::JoinHandle<()>,
    watch_task: tokio::task::JoinHandle<()>,
    ldap_task: Option<tokio::task::JoinHandle<()>>,
    admin: Option<AdminHandle>,
    config: Config,
    directory: Arc<DirectoryHandle>,
    /// Flushed last at shutdown (write-behind registrations).
    locations: Arc<dyn crate::location::store::LocationStore>,
}

impl Server {
    /// Start everything, or nothing: a failure returns before any listener
    /// serves traffic.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::new());
        let mut specs = Vec::with_capacity(config.listen.len());
        for l in &config.listen {
            specs.push(ListenerSpec {
                transport: l.transport,
                bind: l.address,
                advertise: l.advertise.clone(),
                tls: l.tls.as_ref().map(server_tls).transpose()?,
            });
        }
        let limits = TransportLimits {
            sip: config.limits.sip_limits(),
            max_connections: config.limits.max_connections,
            max_connections_per_ip: config.limits.max_connections_per_ip,
            idle_timeout: config.limits.idle_timeout(),
            ..TransportLimits::default()
        };
        let core_cfg = CoreConfig {
            record_route: config.proxy.record_route,
            timer_c: config.timers.timer_c(),
            transactions: sip_transaction::Config {
                t1: config.timers.t1(),
                t2: config.timers.t2(),
                t4: config.timers.t4(),
                ..sip_transaction::Config::default()
            },
            limits: config.limits.sip_limits(),
            max_forwards: u32::from(config.proxy.max_forwards),
            own_realms: config.proxy.domains.clone(),
            nat: config.nat.mode,
            sources: crate::core::admission::SourceLimits {
                rate: config.limits.source_rate,
                burst: config.limits.source_burst,
                exempt: config.proxy.trusted_peers.clone(),
                ..crate::core::admission::SourceLimits::default()
            },
            ..CoreConfig::default()
        };
        let core = Core::new(core_cfg, metrics.clone());
        let resolver: Arc<dyn Resolve> = Arc::new(NextHops::new(Resolver::from_config(&config.dns)?));
        let health = Arc::new(
            UmHealth::register(metrics.registry())
                .map_err(|e| StartError::Setup { what: "metrics", problem: e.to_string() })?,
        );
        let statics =
            StaticRouter::new(config.proxy.domains.clone(), config.proxy.trusted_peers.clone(), config.routes.clone());
        let directory = Arc::new(load_directory(&config).await?);
        let settings = ExumSettings {
            ring_time: Duration::from_secs(u64::from(config.exum.ring_time_s)),
            attempt_timeout: Duration::from_millis(u64::from(config.exum.um_attempt_timeout_ms)),
            templates: UmTemplates::new(
                config.exum.on_prem_request_uri.as_deref(),
                config.exum.hosted_request_uri.as_deref(),
            )
            .map_err(|e| StartError::Setup { what: "exum", problem: e.to_string() })?,
            verification_header: config
                .exum
                .verification_header
                .clone()
                .unwrap_or_else(|| crate::exum::DEFAULT_VERIFICATION_HEADER.to_string()),
            health: Some(health.clone()),
        };
        let exum_metrics = ExumMetrics::register(metrics.registry())
            .map_err(|e| StartError::Setup { what: "metrics", problem: e.to_string() })?;
        let (registrar, location_metrics) = build_registrar(&config, metrics.registry()).await?;
        let (registrar, keepalive) = crate::nat::keepalive::attach(registrar, &config.nat, metrics.registry())
            .map_err(|e| StartError::Setup { what: "metrics", problem: e.to_string() })?;
        let registrar = Arc::new(registrar);
        let locations: Arc<dyn crate::app::Locations> = Arc::new(RegistrarLocations(registrar.clone()));
        let mut app = AppRouter::new(statics, Some(directory.clone()), Some(locations), settings, exum_metrics)
            .with_registrar(registrar.clone())
            .with_nat(config.nat.mode);
        if let Some(auth) = build_auth(&config, location_metrics)? {
            app = app.with_auth(Arc::new(auth));
        }
        let router: Arc<dyn Router> = Arc::new(app);
        spawn_expiry(registrar.clone());
        let locations = registrar.store().clone();
        let hub = TransportHub::start(
            specs,
            limits,
            outbound_tls(&config, &directory.snapshot())?,
            core.dispatch(),
            metrics.registry(),
        )
        .await?;
        let admin = match &config.admin {
            Some(a) => Some(
                admin::serve(a.address, metrics.clone(), || true)
                    .await
                    .map_err(|source| StartError::Admin { addr: a.address, source })?,
            ),
            None => None,
        };
        let core = Arc::new(core.start(hub.clone(), router, resolver.clone()));
        let received = hub.clone();
        crate::alloc::spawn_idle_trim(Arc::new(move || received.messages_received()));
        if let Some(k) = keepalive {
            crate::nat::keepalive::spawn(k, Arc::downgrade(&core), registrar.store().clone(), config.nat.ping_timeout);
        }
        let health_task = spawn_health_checks(
            core.clone(),
            directory.clone(),
            resolver,
            health,
            Duration::from_secs(UM_HEALTH_CHECK_S),
        );
        for l in hub.listeners() {
            info!(transport = %l.transport, address = %l.local, "listening");
        }
        let watch_task = spawn_file_watch(
            Some(hub.clone()),
            config.listen.clone(),
            directory.clone(),
            match config.directory.backend {
                DirectoryBackend::File => config.directory.file.clone(),
                DirectoryBackend::Ldap => None,
            },
            Duration::from_secs(2),
        );
        let ldap_task = spawn_ldap_refresh(&config, directory.clone());
        Ok(Server { hub, metrics, core, admin, config, directory, health_task, watch_task, ldap_task, locations })
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminHandle::local_addr)
    }

    /// Re-read the certificate files of every TLS listener: new handshakes
    /// use the new certificate, connections already up keep their session.
    /// A file that does not load leaves that listener as it was.
    pub fn reload_tls(&self) -> usize {
        reload_tls_listeners(&self.hub, &self.config.listen)
    }

    /// Re-read the directory file; a bad file keeps the directory in use
    /// (and says why). Calls in progress keep the snapshot they started with.
    pub fn reload_directory(&self) -> bool {
        reload_directory_handle(&self.directory)
    }

    /// Stop accepting, let transactions drain for up to `grace`, then stop.
    pub async fn shutdown(self, grace: Duration) {
        self.hub.shutdown();
        let deadline = tokio::time::Instant::now() + grace;
        while self.metrics.transactions_active().get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.hub.close();
        self.health_task.abort();
        self.watch_task.abort();
        if let Some(t) = &self.ldap_task {
            t.abort();
        }
        self.core.abort();
        if let Some(a) = self.admin {
            a.shutdown().await;
        }
        // Registrations answered but still in memory only reach the file.
        if let Err(e) = self.locations.flush().await {
            warn!(error = %e, "registrations not saved at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_USER: &str = "[[user]]\nsip_address = \"sip:alice@example.test\"\n";
    const TWO_USERS: &str =
        "[[user]]\nsip_address = \"sip:alice@example.test\"\n[[user]]\nsip_address = \"sip:bob@example.test\"\n";

    async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[test]
    fn next_hops_marked_down_are_tried_last() {
        let resolver =
            Resolver::with_nameservers(&["127.0.0.1:9".parse().expect("addr")], Duration::from_millis(10), 1)
                .expect("resolver");
        let hops = NextHops::new(resolver);
        let d = |a: &str| Destination {
            transport: Transport::Udp,
            addr: a.parse().expect("addr"),
            flow: None,
            server_name: None,
        };
        hops.mark_down(&d("192.0.2.1:5060"), Duration::from_secs(60));
        let order = hops.down_last(vec![d("192.0.2.1:5060"), d("192.0.2.2:5060")]);
        assert_eq!(order, vec![d("192.0.2.2:5060"), d("192.0.2.1:5060")]);
    }

    #[tokio::test]
    async fn the_directory_is_reloaded_when_its_file_changes_and_kept_when_the_new_file_is_bad() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("directory.toml");
        std::fs::write(&file, ONE_USER).expect("write");
        let opts = LoadOptions { has_tls_listener: false, domains: vec!["example.test".into()] };
        let handle = Arc::new(DirectoryHandle::open(&file, opts).expect("loads"));
        let task = spawn_file_watch(None, Vec::new(), handle.clone(), Some(file.clone()), Duration::from_millis(20));
        assert!(handle.snapshot().user("bob", "example.test").is_none());
        // File systems with coarse timestamps need the write to land in a
        // later second to show as a change.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        std::fs::write(&file, TWO_USERS).expect("write");
        assert!(eventually(|| handle.snapshot().user("bob", "example.test").is_some()).await, "bob appears");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        std::fs::write(&file, "[[user]]\nsip_address = 42\n").expect("write");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(handle.snapshot().user("bob", "example.test").is_some(), "a bad file keeps the directory in use");
        task.abort();
    }
}
