//! Starting and stopping a whole umproxy from a validated [`Config`]:
//! metrics, the core's shards, the transports, the admin listener; and the
//! reload of TLS certificates.

use std::collections::HashMap;
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
use crate::core::{Core, CoreConfig, CoreHandle, DrainGate, Resolve, Resolving, Router, StaticRouter, Wire};
use crate::dns::Resolver;
use crate::exum::{Directory, DirectoryHandle, LdapSettings, LoadOptions, UmTemplates};
use crate::location::registrar::Registrar;
use crate::metrics::Metrics;
use crate::transport::{
    load_certificates, load_private_key, Destination, ListenerInfo, ListenerSpec, Outbound, OutboundTls, TlsClientSpec,
    TlsServerSpec, Transport, TransportHub, TransportLimits,
};

fn reload_tls_listeners(hub: &TransportHub, listen: &[Listen]) -> Result<usize, String> {
    let mut reloaded = 0;
    let mut failed = Vec::new();
    for l in listen {
        let Some(tls) = &l.tls else { continue };
        // The hub logs each certificate it installs.
        match server_tls(tls).and_then(|spec| hub.reload_tls(l.address, spec).map_err(StartError::from)) {
            Ok(()) => reloaded += 1,
            Err(e) => failed.push(format!("listener {}: {e}", l.address)),
        }
    }
    if failed.is_empty() {
        Ok(reloaded)
    } else {
        Err(failed.join("; "))
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reload on file change as on SIGHUP: the configuration file, the
/// directory file and the TLS listeners' files are polled every `every`
/// (portable, no inotify); a change runs the same reload as SIGHUP, and a
/// refused one is retried on the next change.
fn spawn_file_watch(reloader: Arc<Reloader>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            // Compared with what the last reload (by any trigger) read, so
            // that a SIGHUP is not followed by a second reload of the same
            // files.
            let now = reloader.watched_stamps();
            let changed = *reloader.seen.lock().unwrap_or_else(|p| p.into_inner()) != now;
            if changed {
                // Parsing a large directory takes a while: not on a worker.
                let r = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || r.reload(ReloadTrigger::FileChange)).await;
            }
        }
    })
}

/// What asked for a reload (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    Signal,
    FileChange,
    Admin,
}

impl ReloadTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "SIGHUP",
            ReloadTrigger::FileChange => "file change",
            ReloadTrigger::Admin => "admin API",
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys whose new values are in force (`route`, `log.level`, …).
    pub applied: Vec<String>,
    /// Keys changed in the file that only a restart applies; the running
    /// values are kept.
    pub restart_needed: Vec<String>,
    /// TLS listeners whose certificate files were read again.
    pub tls_listeners: usize,
}

/// Everything a reload touches, shared by SIGHUP, the file watcher and the
/// admin API; reloads run one at a time.
pub struct Reloader {
    path: Option<PathBuf>,
    config: std::sync::Mutex<Config>,
    hub: Option<Arc<TransportHub>>,
    directory: Arc<DirectoryHandle>,
    statics: StaticRouter,
    metrics: Arc<Metrics>,
    /// The last refusal logged, so that the same bad file seen by the
    /// watcher and then by SIGHUP is logged and counted once.
    last_refusal: std::sync::Mutex<Option<String>>,
    /// The directory file's modification time when last installed.
    directory_stamp: std::sync::Mutex<Option<std::time::SystemTime>>,
    /// Modification times of the watched files when last reloaded.
    seen: std::sync::Mutex<Vec<Option<std::time::SystemTime>>>,
    /// Per TLS listener, its files' modification times when last installed.
    tls_stamps: std::sync::Mutex<HashMap<SocketAddr, Vec<Option<std::time::SystemTime>>>>,
}

/// The modification times of a TLS listener's files (empty without TLS).
fn tls_stamp(l: &Listen) -> Vec<Option<std::time::SystemTime>> {
    l.tls
        .iter()
        .flat_map(|t| [Some(&t.certificate), Some(&t.private_key), t.client_ca.as_ref()])
        .map(|f| f.and_then(|f| modified(f)))
        .collect()
}

/// Marks a refusal caused by the directory file (for its log line).
const DIRECTORY_REFUSED: &str = "directory: ";

impl Reloader {
    fn lock_config(&self) -> std::sync::MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.lock_config().clone()
    }

    /// Modification times of every file a reload reads.
    fn watched_stamps(&self) -> Vec<Option<std::time::SystemTime>> {
        let cfg = self.lock_config();
        let mut files: Vec<PathBuf> = self.path.iter().cloned().collect();
        if cfg.directory.backend == DirectoryBackend::File {
            files.extend(cfg.directory.file.clone());
        }
        for t in cfg.listen.iter().filter_map(|l| l.tls.as_ref()) {
            files.extend(
                [Some(t.certificate.clone()), Some(t.private_key.clone()), t.client_ca.clone()].into_iter().flatten(),
            );
        }
        if let Some(c) = &cfg.tls_client {
            files.extend([c.certificate.clone(), c.private_key.clone(), c.ca.clone()].into_iter().flatten());
        }
        // The providers' CAs, relative to the directory file.
        let base = cfg.directory.file.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        for provider in self.directory.snapshot().providers().iter().filter(|p| p.enabled) {
            files.extend(provider.ca.as_ref().map(|ca| base.join(ca)));
        }
        files.iter().map(|f| modified(f)).collect()
    }

    /// Read the configuration file again and apply what can change while
    /// calls and connections stay up: routes and trusted peers, the log
    /// level, outbound TLS (`[tls_client]` and the providers' CAs), the TLS
    /// listeners' certificates and the directory. Keys that need a restart
    /// are named in a warning and keep their running values. A file that
    /// does not validate (the same checks as `check-config`) changes
    /// nothing; the refusal is logged once and counted in
    /// `umproxy_config_reloads_total{result="refused"}`.
    pub fn reload(&self, trigger: ReloadTrigger) -> Result<ReloadReport, String> {
        let result = {
            let mut current = self.lock_config();
            self.try_reload(&mut current, trigger)
        };
        let stamps = self.watched_stamps();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        match &result {
            Ok(report) => {
                *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.metrics.reload(true);
                for key in &report.restart_needed {
                    warn!(key = %key, "changed in the configuration but needs a restart; the running value is kept");
                }
                info!(
                    trigger = trigger.as_str(),
                    applied = %report.applied.join(","),
                    tls_listeners = report.tls_listeners,
                    "configuration reloaded"
                );
            }
            Err(problem) => {
                let mut last = self.last_refusal.lock().unwrap_or_else(|p| p.into_inner());
                if last.as_deref() == Some(problem.as_str()) {
                    tracing::debug!(trigger = trigger.as_str(), "the same refused configuration again");
                } else {
                    self.metrics.reload(false);
                    match problem.strip_prefix(DIRECTORY_REFUSED) {
                        Some(e) => {
                            warn!(trigger = trigger.as_str(), error = %e, "directory not reloaded; keeping the configuration and directory in use")
                        }
                        None => {
                            warn!(trigger = trigger.as_str(), error = %problem, "configuration not reloaded; keeping the one in use")
                        }
                    }
                    *last = Some(problem.clone());
                }
            }
        }
        result
    }

    fn try_reload(&self, current: &mut Config, trigger: ReloadTrigger) -> Result<ReloadReport, String> {
        let new = match &self.path {
            Some(p) => Config::load(p).map_err(|e| e.to_string())?,
            None => current.clone(),
        };
        preflight(&new).map_err(|e| match e {
            StartError::Directory(d) => format!("{DIRECTORY_REFUSED}{d}"),
            other => other.to_string(),
        })?;
        // Loaded, not yet installed: nothing changes until every check passed.
        let same_directory = new.directory == current.directory;
        let dir_file = current.directory.file.clone().filter(|_| current.directory.backend == DirectoryBackend::File);
        let new_dir = match (&dir_file, same_directory) {
            (Some(f), true) => {
                Some(Directory::load(f, &directory_options(current)).map_err(|e| format!("{DIRECTORY_REFUSED}{e}"))?)
            }
            _ => None,
        };
        let outbound = match &new_dir {
            Some(d) => outbound_tls(&new, d),
            None => outbound_tls(&new, &self.directory.snapshot()),
        }
        .map_err(|e| e.to_string())?;
        let mut report = ReloadReport { restart_needed: restart_needed(current, &new), ..ReloadReport::default() };
        if let (Some(dir), Some(f)) = (new_dir, &dir_file) {
            self.directory.install(dir);
            let stamp = modified(f);
            let mut seen = self.directory_stamp.lock().unwrap_or_else(|p| p.into_inner());
            if *seen != stamp {
                *seen = stamp;
                info!(file = %f.display(), "directory reloaded");
                report.applied.push("directory".into());
            }
        }

        if new.routes != current.routes || new.proxy.trusted_peers != current.proxy.trusted_peers {
            // Domains stay as started (the registrar and the core use them too).
            self.statics.replace(current.proxy.domains.clone(), new.proxy.trusted_peers.clone(), new.routes.clone());
            if new.routes != current.routes {
                report.applied.push("route".into());
            }
            if new.proxy.trusted_peers != current.proxy.trusted_peers {
                report.applied.push("proxy.trusted_peers".into());
            }
        }
        if new.log.level != current.log.level {
            match crate::config::set_level(&new.log.level, false) {
                Ok(true) => report.applied.push("log.level".into()),
                Ok(false) => info!("log.level: RUST_LOG is set and takes precedence"),
                Err(e) => return Err(format!("log.level: {e}")),
            }
        }
        if let Some(hub) = &self.hub {
            hub.set_outbound_tls(outbound).map_err(|e| format!("outbound TLS: {e}"))?;
            if new.tls_client != current.tls_client {
                report.applied.push("tls_client".into());
            }
            let (old_l, new_l) = (&current.limits, &new.limits);
            if (old_l.max_connections, old_l.max_connections_per_ip)
                != (new_l.max_connections, new_l.max_connections_per_ip)
            {
                hub.set_connection_limits(new_l.max_connections, new_l.max_connections_per_ip);
                report.applied.push("limits.max_connections".into());
            }
            // Listeners as started; their certificate files are read again.
            let running: Vec<Listen> = current
                .listen
                .iter()
                .map(|l| {
                    new.listen
                        .iter()
                        .find(|n| n.address == l.address && n.transport == l.transport)
                        .unwrap_or(l)
                        .clone()
                })
                .collect();
            // A file change reloads only the listeners whose files changed
            // (so the log's certificate lines mean something); SIGHUP and the
            // admin API re-read them all (a copy that kept the old
            // modification time is still picked up).
            let mut stamps = self.tls_stamps.lock().unwrap_or_else(|p| p.into_inner());
            let chosen: Vec<Listen> = running
                .into_iter()
                .filter(|l| {
                    let now = tls_stamp(l);
                    let changed = stamps.get(&l.address) != Some(&now);
                    stamps.insert(l.address, now);
                    trigger != ReloadTrigger::FileChange || changed
                })
                .collect();
            report.tls_listeners = reload_tls_listeners(hub, &chosen)?;
        }
        // What is now in force: the new file, except for the keys that need
        // a restart.
        let mut kept = new;
        keep_restart_only(current, &mut kept);
        *current = kept;
        Ok(report)
    }
}

/// Keys whose change needs a restart.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &str| {
        if changed {
            keys.push(key.to_owned());
        }
    };
    check(
        old.listen
            .iter()
            .map(|l| (l.transport, l.address, &l.advertise))
            .ne(new.listen.iter().map(|l| (l.transport, l.address, &l.advertise))),
        "listen",
    );
    check(old.admin != new.admin, "admin");
    check(old.proxy.domains != new.proxy.domains, "proxy.domains");
    check(old.proxy.record_route != new.proxy.record_route, "proxy.record_route");
    check(old.proxy.max_forwards != new.proxy.max_forwards, "proxy.max_forwards");
    check(old.registrar != new.registrar, "registrar");
    check(
        old.directory.backend != new.directory.backend
            || old.directory.file != new.directory.file
            || old.directory.ldap != new.directory.ldap,
        "directory",
    );
    check(old.exum != new.exum, "exum");
    // Connection limits reload; the message limits are compiled into the
    // parsers of running sockets and connections.
    let mut new_limits = new.limits;
    new_limits.max_connections = old.limits.max_connections;
    new_limits.max_connections_per_ip = old.limits.max_connections_per_ip;
    check(old.limits != new_limits, "limits (other than max_connections, max_connections_per_ip)");
    check(old.timers != new.timers, "timers");
    check(old.log.format != new.log.format, "log.format");
    check(old.dns != new.dns, "dns");
    check(old.auth != new.auth, "auth");
    check(old.shutdown != new.shutdown, "shutdown");
    check(old.nat != new.nat, "nat");
    keys
}

/// Put back into `new` the running values of the keys that need a restart.
fn keep_restart_only(old: &Config, new: &mut Config) {
    new.listen = old.listen.clone();
    new.admin = old.admin.clone();
    new.proxy.domains = old.proxy.domains.clone();
    new.proxy.record_route = old.proxy.record_route;
    new.proxy.max_forwards = old.proxy.max_forwards;
    new.registrar = old.registrar.clone();
    new.directory = old.directory.clone();
    new.exum = old.exum.clone();
    let (total, per_ip) = (new.limits.max_connections, new.limits.max_connections_per_ip);
    new.limits = old.limits;
    new.limits.max_connections = total;
    new.limits.max_connections_per_ip = per_ip;
    new.timers = old.timers;
    new.log.format = old.log.format;
    new.dns = old.dns.clone();
    new.auth = old.auth.clone();
    new.shutdown = old.shutdown;
    new.nat = old.nat.clone();
}

/// Every check `run` makes before it serves, without binding anything:
/// `check-config` runs it, `run` runs it first, and a reload runs it on the
/// new file before changing anything. The TLS listeners' and
/// `[tls_client]`'s keys must match their certificates, client CAs must be
/// usable trust anchors, the directory (file backend) must load with its
/// providers' CAs, `[auth]` must be usable, the UM request templates must
/// parse and the log level must be a valid filter.
pub fn preflight(config: &Config) -> Result<(), StartError> {
    for (i, l) in config.listen.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        let spec = server_tls(tls)?;
        let key = format!("listen[{i}]");
        check_identity(spec.cert_chain, spec.key, &key)?;
        if let Some(cas) = spec.client_ca {
            check_roots(cas, &format!("{key}.client_ca"))?;
        }
    }
    if let Some(c) = &config.tls_client {
        if let (Some(cert), Some(key)) = (&c.certificate, &c.private_key) {
            check_identity(read_certs(cert)?, read_key(key)?, "tls_client")?;
        }
        if let Some(ca) = &c.ca {
            check_roots(read_certs(ca)?, "tls_client.ca")?;
        }
    }
    if config.directory.backend == DirectoryBackend::File {
        let opts = directory_options(config);
        let dir = match &config.directory.file {
            Some(f) => Directory::load(f, &opts)?,
            None => Directory::example(&opts)?,
        };
        let outbound = outbound_tls(config, &dir)?;
        for (server, spec) in outbound.per_server {
            check_roots(spec.roots, &format!("directory: provider {server} ca"))?;
        }
    }
    crate::config::check_level(&config.log.level)
        .map_err(|e| StartError::Setup { what: "log.level", problem: e.to_string() })?;
    UmTemplates::new(config.exum.on_prem_request_uri.as_deref(), config.exum.hosted_request_uri.as_deref())
        .map_err(|e| StartError::Setup { what: "exum", problem: e.to_string() })?;
    let registry = prometheus::Registry::new();
    let metrics = crate::location::metrics::LocationMetrics::register(&registry)
        .map_err(|e| StartError::Setup { what: "metrics", problem: e.to_string() })?;
    build_auth_quiet(config, Arc::new(metrics))?;
    Resolver::from_config(&config.dns)?;
    if let Some(token) = config.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
        crate::admin::read_token(token).map_err(|problem| StartError::Setup { what: "admin.token_file", problem })?;
    }
    Ok(())
}

/// The key must be the certificate's (rustls checks the public keys).
fn check_identity(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<(), StartError> {
    if chain.is_empty() {
        return Err(StartError::Setup { what: "tls", problem: format!("{what}: no certificate in the file") });
    }
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map(|_| ()).map_err(|e| StartError::Setup {
        what: "tls",
        problem: format!("{what}: private_key does not go with certificate: {e}"),
    })
}

/// Every certificate must be usable as a trust anchor.
fn check_roots(certs: Vec<CertificateDer<'static>>, what: &str) -> Result<(), StartError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| StartError::Setup { what: "tls", problem: format!("{what}: {e}") })?;
    }
    Ok(())
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
    if !config.auth.enabled {
        warn!("[auth] enabled = false: REGISTER and local users are not authenticated");
        return Ok(None);
    }
    if config.auth.secret_file.is_none() {
        info!("[auth] secret_file not set: nonces are signed with a key of this process only");
    }
    build_auth_quiet(config, metrics)
}

/// [`build_auth`] without its start-up notes (for the checks).
fn build_auth_quiet(
    config: &Config,
    metrics: Arc<crate::location::metrics::LocationMetrics>,
) -> Result<Option<Authenticator>, StartError> {
    use crate::location::auth::{Algorithm, AuthConfig, DigestAuth};
    use crate::location::policy::{FailureTracker, LockoutConfig};
    let a = &config.auth;
    if !a.enabled {
        return Ok(None);
    }
    let secret = match &a.secret_file {
        Some(f) => std::fs::read(f)
            .map_err(|e| StartError::Setup { what: "auth.secret_file", problem: format!("{}: {e}", f.display()) })?,
        None => (0..4).flat_map(|_| rand::random::<u64>().to_le_bytes()).collect(),
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
/// but after the others. The hops marked down are kept for the admin API
/// and counted in `umproxy_next_hops_down`.
pub struct NextHops {
    resolver: Resolver,
    blacklist: crate::dns::Blacklist,
    down: HopTable<std::time::Instant>,
    /// The last failure seen per next hop, and when (bounded like `down`).
    failures: HopTable<(&'static str, std::time::Instant)>,
    gauge: Option<prometheus::IntGauge>,
}

/// Per next hop state, shared by the resolver's clones.
type HopTable<V> = Arc<std::sync::Mutex<HashMap<(Transport, SocketAddr), V>>>;

/// Next hops remembered as down at once; beyond, the oldest is forgotten.
const MAX_DOWN_HOPS: usize = 1024;

impl NextHops {
    pub fn new(resolver: Resolver) -> NextHops {
        NextHops {
            resolver,
            blacklist: crate::dns::Blacklist::new(),
            down: Arc::default(),
            failures: Arc::default(),
            gauge: None,
        }
    }

    /// With the `umproxy_next_hops_down` gauge registered in `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> Result<NextHops, prometheus::Error> {
        let gauge = prometheus::IntGauge::new(
            "umproxy_next_hops_down",
            "Next hops that answered 503 with Retry-After and are tried last until it passes.",
        )?;
        registry.register(Box::new(gauge.clone()))?;
        self.gauge = Some(gauge);
        Ok(self)
    }

    fn clone_shared(&self) -> NextHops {
        NextHops {
            resolver: self.resolver.clone(),
            blacklist: self.blacklist.clone(),
            down: self.down.clone(),
            failures: self.failures.clone(),
            gauge: self.gauge.clone(),
        }
    }

    /// The hops marked down now, with the seconds left.
    pub fn down_now(&self) -> Vec<(Transport, SocketAddr, u64)> {
        let now = std::time::Instant::now();
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.retain(|_, until| *until > now);
        if let Some(g) = &self.gauge {
            g.set(down.len() as i64);
        }
        down.iter().map(|(&(t, a), until)| (t, a, until.saturating_duration_since(now).as_secs())).collect()
    }

    /// Next hops whose last send failed: the failure and its age in seconds.
    pub fn recent_failures(&self) -> Vec<(Transport, SocketAddr, &'static str, u64)> {
        let now = std::time::Instant::now();
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .iter()
            .map(|(&(t, a), (what, at))| (t, a, *what, now.saturating_duration_since(*at).as_secs()))
            .collect()
    }

    fn remember_failure(&self, key: (Transport, SocketAddr), what: &'static str) {
        let now = std::time::Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_DOWN_HOPS && !failures.contains_key(&key) {
            if let Some(oldest) = failures.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                failures.remove(&oldest);
            }
        }
        failures.insert(key, (what, now));
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
        let me = self.clone_shared();
        Box::pin(async move { fut.await.map(|d| me.down_last(d)) })
    }
    fn resolve_service(&self, name: String, transport: Transport) -> Resolving {
        let fut = Resolve::resolve_service(&self.resolver, name, transport);
        let me = self.clone_shared();
        Box::pin(async move { fut.await.map(|d| me.down_last(d)) })
    }
    fn mark_down(&self, dest: &Destination, duration: Duration) {
        let target = crate::dns::Target { transport: dest.transport, addr: dest.addr, server_name: String::new() };
        let now = std::time::Instant::now();
        self.blacklist.mark_down(&target, now, duration);
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.len() >= MAX_DOWN_HOPS {
            down.retain(|_, until| *until > now);
            if down.len() >= MAX_DOWN_HOPS {
                if let Some(oldest) = down.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                    down.remove(&oldest);
                }
            }
        }
        down.insert((dest.transport, dest.addr), now + duration);
        if let Some(g) = &self.gauge {
            g.set(down.len() as i64);
        }
        drop(down);
        self.remember_failure((dest.transport, dest.addr), "503 with Retry-After");
        info!(next_hop = %dest.addr, transport = %dest.transport, seconds = duration.as_secs(), "next hop out of service; tried last until then");
    }
    fn report_failure(&self, dest: &Destination, what: &'static str) {
        self.remember_failure((dest.transport, dest.addr), what);
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
    reloader: Arc<Reloader>,
    control: Arc<ServerControl>,
    drain: DrainGate,
    /// Flushed last at shutdown (write-behind registrations).
    locations: Arc<dyn crate::location::store::LocationStore>,
}

impl Server {
    /// Start everything, or nothing: a failure returns before any listener
    /// serves traffic. `path` is the file `config` came from (reloads read
    /// it again); `None` for the built-in example.
    pub async fn start(config: Config, path: Option<PathBuf>) -> Result<Server, StartError> {
        preflight(&config)?;
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
        let drain = DrainGate::new(config.shutdown.retry_after_s);
        let core_cfg = CoreConfig {
            record_route: config.proxy.record_route,
            timer_c: config.timers.timer_c(),
            transactions: sip_transaction::Config {
                t1: config.timers.t1(),
                t2: config.timers.t2(),
                t4: config.timers.t4(),
                max_transactions: config.limits.max_transactions,
            },
            queue_depth: config.limits.queue_depth,
            limits: config.limits.sip_limits(),
            max_forwards: u32::from(config.proxy.max_forwards),
            own_realms: config.proxy.domains.clone(),
            max_dialogs: config.limits.max_dialogs,
            dialog_idle: Duration::from_secs(config.limits.dialog_idle_timeout_s),
            drain: drain.clone(),
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
        let next_hops = Arc::new(
            NextHops::new(Resolver::from_config(&config.dns)?)
                .with_metrics(metrics.registry())
                .map_err(|e| StartError::Setup { what: "metrics", problem: e.to_string() })?,
        );
        let resolver: Arc<dyn Resolve> = next_hops.clone();
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
        let mut app = AppRouter::new(statics.clone(), Some(directory.clone()), Some(locations), settings, exum_metrics)
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
        let reloader = Arc::new(Reloader {
            path,
            config: std::sync::Mutex::new(config.clone()),
            hub: Some(hub.clone()),
            directory: directory.clone(),
            statics,
            metrics: metrics.clone(),
            last_refusal: std::sync::Mutex::new(None),
            directory_stamp: std::sync::Mutex::new(config.directory.file.as_deref().and_then(modified)),
            seen: std::sync::Mutex::new(Vec::new()),
            tls_stamps: std::sync::Mutex::new(config.listen.iter().map(|l| (l.address, tls_stamp(l))).collect()),
        });
        *reloader.seen.lock().unwrap_or_else(|p| p.into_inner()) = reloader.watched_stamps();
        let control = Arc::new(ServerControl {
            reloader: reloader.clone(),
            metrics: metrics.clone(),
            drain: drain.clone(),
            locations: locations.clone(),
            next_hops,
            hub: hub.clone(),
            um_health: health.clone(),
            started: std::time::Instant::now(),
        });
        let admin = match &config.admin {
            Some(a) => {
                let token = a
                    .token_file
                    .as_deref()
                    .map(admin::read_token)
                    .transpose()
                    .map_err(|problem| StartError::Setup { what: "admin.token_file", problem })?;
                if token.is_none() && !a.address.ip().is_loopback() {
                    warn!(address = %a.address, "the admin API is reachable without a token: set [admin] token_file");
                }
                let as_control: Arc<dyn admin::Control> = control.clone();
                Some(
                    admin::serve(a.address, metrics.clone(), as_control, token)
                        .await
                        .map_err(|source| StartError::Admin { addr: a.address, source })?,
                )
            }
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
        let watch_task = spawn_file_watch(reloader.clone(), Duration::from_secs(2));
        let ldap_task = spawn_ldap_refresh(&config, directory.clone());
        Ok(Server {
            hub,
            metrics,
            core,
            admin,
            reloader,
            control,
            drain,
            health_task,
            watch_task,
            ldap_task,
            locations,
        })
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminHandle::local_addr)
    }

    /// Reload the configuration (SIGHUP): see [`Reloader::reload`]. Runs
    /// on a blocking thread (file reads, parsing, certificate checks).
    pub async fn reload(&self, trigger: ReloadTrigger) -> Result<ReloadReport, String> {
        let r = self.reloader.clone();
        tokio::task::spawn_blocking(move || r.reload(trigger)).await.map_err(|e| format!("reload task: {e}"))?
    }

    /// What a drain still waits for: transactions owed a final response and
    /// calls in progress.
    pub fn in_flight(&self) -> i64 {
        self.metrics.in_flight()
    }

    /// Start draining: `/readyz` turns 503 and new dialogs get 503 +
    /// Retry-After at once; calls in progress carry on.
    pub fn start_drain(&self) {
        if !self.drain.is_draining() {
            self.drain.start();
            self.metrics.set_draining(true);
            // Our own OPTIONS pings would count as work in flight.
            self.health_task.abort();
            info!(
                in_flight = self.in_flight(),
                dialogs = self.metrics.dialogs_active().get(),
                "draining: new calls are refused, calls in progress carry on"
            );
        }
    }

    /// Drain (see [`start_drain`](Self::start_drain)), wait until nothing
    /// is in flight or `grace` has passed, then stop. Transactions that
    /// only wait on clean-up timers do not hold the exit. `tick` is called
    /// about once a second while waiting (the watchdog).
    pub async fn shutdown(self, grace: Duration, mut tick: impl FnMut(i64)) {
        self.start_drain();
        let deadline = tokio::time::Instant::now() + grace;
        let mut last_tick = tokio::time::Instant::now();
        loop {
            let left = self.in_flight();
            if left <= 0 {
                info!("drained: nothing in flight");
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                warn!(
                    in_flight = left,
                    dialogs = self.metrics.dialogs_active().get(),
                    grace_s = grace.as_secs(),
                    "grace period over; stopping with work in flight"
                );
                break;
            }
            if now.duration_since(last_tick) >= Duration::from_secs(1) {
                last_tick = now;
                tick(left);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.hub.shutdown();
        self.hub.close();
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

    /// The core, for the watchdog's liveness check
    /// ([`CoreHandle::is_responsive`]).
    pub fn liveness(&self) -> Arc<CoreHandle> {
        self.core.clone()
    }

    /// The control API behind the admin listener.
    pub fn control(&self) -> Arc<ServerControl> {
        self.control.clone()
    }
}

/// The runtime control API (`/api/…` on the admin listener), as `kamcmd`
/// is for Kamailio:
///
/// | request | answer |
/// |---|---|
/// | `GET /api/status` | version, uptime, draining, calls and transactions in flight |
/// | `GET /api/registrations[?limit=N]` | AORs with bindings (`ul.dump`) |
/// | `GET /api/registrations/{aor}` | that AOR's bindings (`ul.lookup`) |
/// | `DELETE /api/registrations/{aor}[?contact=URI]` | remove one binding or all (`ul.rm`) |
/// | `GET /api/next-hops` | next hops out of service (503 + Retry-After) and for how long |
/// | `GET /api/um-servers` | UM servers up or down (OPTIONS pings), with their last failed ping |
/// | `GET /api/tls` | TLS peers connected (address, certificate names), handshake failures |
/// | `POST /api/reload` | the same reload as SIGHUP; the report or the refusal |
/// | `GET /api/log-level`, `PUT /api/log-level?level=F` | the log filter in force; change it |
pub struct ServerControl {
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    drain: DrainGate,
    locations: Arc<dyn crate::location::store::LocationStore>,
    next_hops: Arc<NextHops>,
    hub: Arc<TransportHub>,
    um_health: Arc<UmHealth>,
    started: std::time::Instant,
}

/// Registrations listed at most per request.
const MAX_LISTED_AORS: usize = 10_000;
/// TLS peers listed at most per request.
const MAX_LISTED_PEERS: usize = 10_000;

fn json_error(status: hyper::StatusCode, problem: impl std::fmt::Display) -> admin::ApiReply {
    (status, serde_json::json!({ "error": problem.to_string() }).to_string())
}

fn json_ok(value: serde_json::Value) -> admin::ApiReply {
    (hyper::StatusCode::OK, value.to_string())
}

/// The series of `family` in the registry, as (labels, value).
fn gauge_series(metrics: &Metrics, family: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for f in metrics.registry().gather().iter().filter(|f| f.name() == family) {
        for m in f.get_metric() {
            let labels = m.get_label().iter().map(|l| (l.name().to_owned(), l.value().to_owned())).collect();
            let value = match f.get_field_type() {
                prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                _ => 0.0,
            };
            out.push((labels, value));
        }
    }
    out
}

fn binding_json(b: &crate::location::binding::Binding, now: std::time::SystemTime) -> serde_json::Value {
    serde_json::json!({
        "contact": b.contact_uri,
        "expires_in": b.remaining(now),
        "q": b.q.to_string(),
        "call_id": b.call_id,
        "cseq": b.cseq,
        "path": b.path,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "received": b.received.map(|r| r.to_string()),
        "outbound_flow": b.flow.is_some(),
    })
}

impl ServerControl {
    async fn status(&self) -> admin::ApiReply {
        json_ok(serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config": self.reloader.config().source,
            "uptime_s": self.started.elapsed().as_secs(),
            "draining": self.drain.is_draining(),
            "dialogs": self.metrics.dialogs_active().get(),
            "transactions_active": self.metrics.transactions_active().get(),
            "transactions_finishing": self.metrics.transactions_finishing().get(),
            "registrations": self.locations.binding_count(),
            "log_level": crate::config::current_level(),
        }))
    }

    async fn registrations(&self, req: &admin::ApiRequest, aor: Option<&str>) -> admin::ApiReply {
        use hyper::{Method, StatusCode};
        let now = std::time::SystemTime::now();
        match (&req.method, aor) {
            (&Method::GET, None) => {
                let limit = req.param("limit").and_then(|l| l.parse().ok()).unwrap_or(1000).min(MAX_LISTED_AORS);
                match self.locations.list_aors(limit).await {
                    Ok(aors) => json_ok(serde_json::json!({ "store": self.locations.name(), "aors": aors })),
                    Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e),
                }
            }
            (&Method::GET, Some(aor)) => match self.locations.get(aor, now).await {
                Ok(rec) if rec.bindings.is_empty() => {
                    json_error(StatusCode::NOT_FOUND, format!("no bindings for {aor}"))
                }
                Ok(rec) => json_ok(serde_json::json!({
                    "aor": aor,
                    "bindings": rec.bindings.iter().map(|b| binding_json(b, now)).collect::<Vec<_>>(),
                })),
                Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e),
            },
            (&Method::DELETE, Some(aor)) => {
                let Some(contact) = req.param("contact") else {
                    return match self.locations.remove(aor).await {
                        Ok(()) => {
                            info!(%aor, "registrations removed by the admin API");
                            json_ok(serde_json::json!({ "aor": aor, "removed": "all" }))
                        }
                        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e),
                    };
                };
                // One binding: compare-and-set, retried if a REGISTER won.
                for _ in 0..5 {
                    let rec = match self.locations.get(aor, now).await {
                        Ok(r) => r,
                        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, e),
                    };
                    let before = rec.bindings.len();
                    let kept: Vec<_> = rec.bindings.into_iter().filter(|b| b.contact_uri != contact).collect();
                    if kept.len() == before {
                        return json_error(StatusCode::NOT_FOUND, format!("{aor} has no binding {contact}"));
                    }
                    match self.locations.replace(aor, rec.version, kept, now).await {
                        Ok(_) => {
                            info!(%aor, %contact, "registration removed by the admin API");
                            return json_ok(serde_json::json!({ "aor": aor, "removed": contact }));
                        }
                        Err(crate::location::store::StoreError::Conflict) => continue,
                        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, e),
                    }
                }
                json_error(StatusCode::CONFLICT, "the AOR kept changing; try again")
            }
            _ => json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET, or DELETE on /registrations/{aor}"),
        }
    }

    fn next_hops(&self) -> admin::ApiReply {
        let down = self.next_hops.down_now();
        let hops: Vec<_> = down
            .iter()
            .map(|(t, a, secs)| serde_json::json!({ "transport": t.to_string(), "address": a.to_string(), "state": "down", "retry_in_s": secs }))
            .collect();
        // Every hop that failed lately, with its last error; up unless
        // marked down above.
        let failed: Vec<_> = self
            .next_hops
            .recent_failures()
            .into_iter()
            .map(|(t, a, what, ago)| {
                let is_down = down.iter().any(|(dt, da, _)| *dt == t && *da == a);
                serde_json::json!({
                    "transport": t.to_string(),
                    "address": a.to_string(),
                    "state": if is_down { "down" } else { "up" },
                    "last_error": what,
                    "last_error_s_ago": ago,
                })
            })
            .collect();
        json_ok(serde_json::json!({ "down": hops, "last_errors": failed }))
    }

    fn um_servers(&self) -> admin::ApiReply {
        let servers: Vec<_> = self
            .um_health
            .states()
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "server": s.server,
                    "up": s.is_up,
                    "last_error": s.last_error.map(|(why, _)| why.as_str()),
                    "last_error_s_ago": s.last_error.map(|(_, ago)| ago.as_secs()),
                })
            })
            .collect();
        json_ok(serde_json::json!({ "um_servers": servers }))
    }

    fn tls(&self) -> admin::ApiReply {
        let open = gauge_series(&self.metrics, "umproxy_transport_connections_open")
            .into_iter()
            .find(|(labels, _)| labels.iter().any(|(k, v)| k == "transport" && v == "tls"))
            .map_or(0.0, |(_, v)| v);
        let failures: Vec<_> = gauge_series(&self.metrics, "umproxy_transport_tls_handshake_failures_total")
            .into_iter()
            .filter(|(_, v)| *v > 0.0)
            .map(|(labels, v)| {
                let mut o: serde_json::Map<String, serde_json::Value> =
                    labels.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
                o.insert("count".into(), serde_json::json!(v));
                serde_json::Value::Object(o)
            })
            .collect();
        let peers: Vec<_> = self
            .hub
            .tls_peers(MAX_LISTED_PEERS)
            .into_iter()
            .map(|(remote, names)| serde_json::json!({ "remote": remote.to_string(), "certificate_names": names }))
            .collect();
        json_ok(serde_json::json!({
            "connections_open": open,
            "connections_total": self.hub.connection_count(),
            "peers": peers,
            "handshake_failures": failures,
        }))
    }

    fn log_level(&self, req: &admin::ApiRequest) -> admin::ApiReply {
        use hyper::{Method, StatusCode};
        match req.method {
            Method::GET | Method::HEAD => json_ok(serde_json::json!({ "level": crate::config::current_level() })),
            Method::PUT | Method::POST => {
                let Some(level) = req.param("level") else {
                    return json_error(StatusCode::BAD_REQUEST, "missing ?level=FILTER");
                };
                match crate::config::set_level(level, true) {
                    Ok(changed) => {
                        info!(level, "log level set by the admin API");
                        json_ok(serde_json::json!({ "level": level, "changed": changed }))
                    }
                    Err(e) => json_error(StatusCode::BAD_REQUEST, e),
                }
            }
            _ => json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT"),
        }
    }
}

impl admin::Control for ServerControl {
    fn readiness(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if self.drain.is_draining() {
                return Err("draining".into());
            }
            // The location store answers (Redis reachable, the embedded one
            // always); a probe's own AOR has no bindings.
            match tokio::time::timeout(
                Duration::from_secs(2),
                self.locations.get("sip:readyz@umproxy.invalid", std::time::SystemTime::now()),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("location store: {e}")),
                Err(_) => Err("location store: no answer within 2 s".into()),
            }
        })
    }

    fn call(
        &self,
        req: admin::ApiRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = admin::ApiReply> + Send + '_>> {
        use hyper::{Method, StatusCode};
        Box::pin(async move {
            let path = req.path.trim_end_matches('/').to_owned();
            match path.as_str() {
                "/status" => self.status().await,
                "/registrations" => self.registrations(&req, None).await,
                p if p.starts_with("/registrations/") => {
                    let aor = p.trim_start_matches("/registrations/");
                    self.registrations(&req, Some(aor)).await
                }
                "/next-hops" => self.next_hops(),
                "/um-servers" => self.um_servers(),
                "/tls" => self.tls(),
                "/log-level" => self.log_level(&req),
                "/reload" if req.method == Method::POST => {
                    let reloader = self.reloader.clone();
                    let result = tokio::task::spawn_blocking(move || reloader.reload(ReloadTrigger::Admin)).await;
                    match result {
                        Ok(Ok(r)) => json_ok(serde_json::json!({
                            "result": "ok",
                            "applied": r.applied,
                            "restart_needed": r.restart_needed,
                            "tls_listeners": r.tls_listeners,
                        })),
                        Ok(Err(problem)) => (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            serde_json::json!({ "result": "refused", "error": problem }).to_string(),
                        ),
                        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e),
                    }
                }
                "/reload" => json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
                _ => json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
            }
        })
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
        hops.report_failure(&d("192.0.2.3:5060"), "transport error");
        let mut failed: Vec<_> =
            hops.recent_failures().into_iter().map(|(_, a, what, _)| (a.to_string(), what)).collect();
        failed.sort();
        assert_eq!(
            failed,
            vec![("192.0.2.1:5060".into(), "503 with Retry-After"), ("192.0.2.3:5060".into(), "transport error")]
        );
        assert_eq!(hops.down_now().len(), 1, "only the 503 one is out of service");
    }

    /// A reloader on `umproxy.toml` + `directory.toml` in a tempdir, with no
    /// transports (the hub's part is covered end to end).
    fn reloader(dir: &Path, config: &str, directory: &str) -> (Arc<Reloader>, PathBuf, PathBuf, Arc<DirectoryHandle>) {
        let cfg_file = dir.join("umproxy.toml");
        let dir_file = dir.join("directory.toml");
        std::fs::write(&cfg_file, config).expect("write config");
        std::fs::write(&dir_file, directory).expect("write directory");
        let config = Config::load(&cfg_file).expect("valid config");
        let handle = Arc::new(DirectoryHandle::open(&dir_file, directory_options(&config)).expect("loads"));
        let r = Arc::new(Reloader {
            path: Some(cfg_file.clone()),
            statics: StaticRouter::new(
                config.proxy.domains.clone(),
                config.proxy.trusted_peers.clone(),
                config.routes.clone(),
            ),
            directory_stamp: std::sync::Mutex::new(modified(&dir_file)),
            config: std::sync::Mutex::new(config),
            hub: None,
            directory: handle.clone(),
            metrics: Arc::new(Metrics::new()),
            last_refusal: std::sync::Mutex::new(None),
            seen: std::sync::Mutex::new(Vec::new()),
            tls_stamps: std::sync::Mutex::default(),
        });
        *r.seen.lock().expect("lock") = r.watched_stamps();
        (r, cfg_file, dir_file, handle)
    }

    fn config_text(route_to: &str, port: u16) -> String {
        format!(
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{port}\"\n\n[proxy]\ndomains = [\"example.test\"]\n\n\
             [directory]\nfile = \"directory.toml\"\n\n[[route]]\nmatch = \"*\"\nnext_hop = \"{route_to}\"\n"
        )
    }

    fn refused(m: &Metrics) -> String {
        m.encode()
            .lines()
            .find(|l| l.starts_with("umproxy_config_reloads_total{result=\"refused\"}"))
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn the_directory_is_reloaded_when_its_file_changes_and_kept_when_the_new_file_is_bad() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (r, _, file, handle) = reloader(tmp.path(), &config_text("sip:10.0.0.9", 5999), ONE_USER);
        let task = spawn_file_watch(r.clone(), Duration::from_millis(20));
        assert!(handle.snapshot().user("bob", "example.test").is_none());
        // File systems with coarse timestamps need the write to land in a
        // later second to show as a change.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        std::fs::write(&file, TWO_USERS).expect("write");
        assert!(eventually(|| handle.snapshot().user("bob", "example.test").is_some()).await, "bob appears");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        std::fs::write(&file, "[[user]]\nsip_address = 42\n").expect("write");
        assert!(eventually(|| refused(&r.metrics).ends_with(" 1")).await, "the refusal is counted");
        assert!(handle.snapshot().user("bob", "example.test").is_some(), "a bad file keeps the directory in use");
        // SIGHUP on the same bad file: refused again, but logged and counted once.
        assert!(r.reload(ReloadTrigger::Signal).is_err());
        assert!(refused(&r.metrics).ends_with(" 1"), "{}", refused(&r.metrics));
        task.abort();
    }

    #[tokio::test]
    async fn a_changed_provider_ca_triggers_a_reload() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).expect("cert");
        std::fs::write(tmp.path().join("provider-ca.pem"), ca.cert.pem()).expect("write");
        let provider = "[[hosting_provider]]\nidentity = \"p\"\nproxy_fqdn = \"edge.p.test\"\nenabled = true\n\
                        enabled_shared_address_space = false\nhosts_ocs_users = false\nca = \"provider-ca.pem\"\n";
        let (r, _, _, _) = reloader(tmp.path(), &config_text("sip:10.0.0.9", 5999), &format!("{ONE_USER}\n{provider}"));
        let ok = |m: &Metrics| {
            m.encode()
                .lines()
                .find(|l| l.starts_with("umproxy_config_reloads_total{result=\"ok\"}"))
                .unwrap_or_default()
                .to_owned()
        };
        let task = spawn_file_watch(r.clone(), Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let other = rcgen::generate_simple_self_signed(vec!["ca2.test".to_owned()]).expect("cert");
        std::fs::write(tmp.path().join("provider-ca.pem"), other.cert.pem()).expect("write");
        assert!(eventually(|| ok(&r.metrics).ends_with(" 1")).await, "{}", ok(&r.metrics));
        task.abort();
    }

    #[tokio::test]
    async fn a_reload_applies_routes_names_restart_only_keys_and_refuses_a_bad_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (r, cfg, _, _) = reloader(tmp.path(), &config_text("sip:10.0.0.1", 5999), ONE_USER);
        std::fs::write(&cfg, config_text("sip:10.0.0.2", 5998)).expect("write");
        let report = r.reload(ReloadTrigger::Signal).expect("reloads");
        assert_eq!(report.applied, vec!["route".to_string()]);
        assert_eq!(report.restart_needed, vec!["listen".to_string()]);
        assert_eq!(r.config().listen[0].address.port(), 5999, "the running listener is kept");
        assert_eq!(r.config().routes[0].next_hop, vec!["sip:10.0.0.2".to_string()]);
        // Wrong type: refused, the old configuration stays.
        std::fs::write(&cfg, config_text("sip:10.0.0.3", 5999).replace("[proxy]", "[proxy]\nmax_forwards = \"many\""))
            .expect("write");
        let e = r.reload(ReloadTrigger::Admin).expect_err("refused");
        assert!(e.contains("proxy.max_forwards"), "{e}");
        assert_eq!(r.config().routes[0].next_hop, vec!["sip:10.0.0.2".to_string()]);
        assert!(refused(&r.metrics).ends_with(" 1"));
    }
}
