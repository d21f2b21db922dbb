//! The TOML as written, and its validation into the typed configuration.
//!
//! Values that need checking with a key path in the error (addresses, CIDRs,
//! URIs, file paths) are strings here; the typed structs in the parent
//! module only ever hold checked values.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sip_message::{HostKind, Scheme, Uri};

use super::{
    AdminConfig, AuthSettings, Config, ConfigError, DirectoryBackend, DirectoryConfig, DnsConfig, ExumConfig, Fork,
    LdapConfig, LimitsConfig, Listen, ListenTls, LogConfig, LogFormat, ProxyConfig, RegistrarConfig, Route, RouteMatch,
    ShutdownConfig, StoreKind, TimersConfig, TlsClientConfig,
};
use crate::transport::Transport;

/// Where errors point and relative paths start.
pub(super) struct Ctx<'a> {
    pub file: &'a str,
    pub base: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { file: self.file.to_owned(), key: key.into(), problem: problem.into() }
    }

    fn resolve(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// A path that must name an existing regular file.
    fn existing_file(&self, key: &str, written: &str) -> Result<PathBuf, ConfigError> {
        if written.is_empty() {
            return Err(self.err(key, "empty path"));
        }
        let path = self.resolve(written);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(path),
            Ok(_) => Err(self.err(key, format!("not a regular file: {written}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(self.err(key, format!("file not found: {written}")))
            }
            Err(e) => Err(self.err(key, format!("cannot read {written}: {e}"))),
        }
    }

    /// A PEM file holding at least one certificate.
    fn cert_file(&self, key: &str, written: &str) -> Result<PathBuf, ConfigError> {
        let path = self.existing_file(key, written)?;
        let iter = CertificateDer::pem_file_iter(&path)
            .map_err(|e| self.err(key, format!("not a PEM certificate file: {written}: {e}")))?;
        let mut count = 0usize;
        for cert in iter {
            cert.map_err(|e| self.err(key, format!("bad PEM certificate in {written}: {e}")))?;
            count += 1;
        }
        if count == 0 {
            return Err(self.err(key, format!("no PEM certificate in {written}")));
        }
        Ok(path)
    }

    /// A PEM file holding a private key (PKCS#8, PKCS#1 or SEC1).
    fn key_file(&self, key: &str, written: &str) -> Result<PathBuf, ConfigError> {
        let path = self.existing_file(key, written)?;
        PrivateKeyDer::from_pem_file(&path)
            .map_err(|e| self.err(key, format!("no PEM private key in {written}: {e}")))?;
        Ok(path)
    }

    /// The key at `key_path` must be the certificate's at `cert_path`
    /// (rustls compares the public keys): a mismatch would only show at the
    /// first handshake otherwise.
    fn key_matches(&self, key: &str, cert_path: &Path, key_path: &Path, cert_key: &str) -> Result<(), ConfigError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| self.err(cert_key, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(cert_key, e.to_string()))?;
        let private = PrivateKeyDer::from_pem_file(key_path).map_err(|e| self.err(key, e.to_string()))?;
        let provider = rustls::crypto::ring::default_provider();
        match rustls::sign::CertifiedKey::from_der(chain, private, &provider) {
            Ok(_) => Ok(()),
            Err(rustls::Error::InconsistentKeys(_)) => {
                Err(self.err(key, format!("does not match the public key of {cert_key}")))
            }
            Err(e) => Err(self.err(key, format!("unusable private key: {e}"))),
        }
    }

    fn socket_addr(&self, key: &str, written: &str) -> Result<SocketAddr, ConfigError> {
        written.parse().map_err(|_| {
            self.err(key, format!("not an address with port (like 127.0.0.1:5060 or [::1]:5060): {written:?}"))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    listen: Vec<RawListen>,
    proxy: Option<RawProxy>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    registrar: RawRegistrar,
    #[serde(default)]
    directory: RawDirectory,
    #[serde(default)]
    exum: ExumConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    timers: TimersConfig,
    #[serde(default)]
    log: RawLog,
    tls_client: Option<RawTlsClient>,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    shutdown: ShutdownConfig,
    #[serde(default)]
    nat: super::nat::RawNat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    enabled: bool,
    secret_file: Option<String>,
    nonce_ttl_s: u64,
    algorithms: Vec<String>,
    lockout_max_failures_per_ip: u32,
    lockout_max_failures_per_user: u32,
    lockout_window_s: u64,
    lockout_s: u64,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            enabled: true,
            secret_file: None,
            nonce_ttl_s: 300,
            // MD5 only by default: RFC 8760 has a UAC use the first challenge
            // it supports, so with MD5 listed at all a compliant phone that
            // also speaks SHA-256 picks whatever is first; and deployed
            // phones that take the first challenge blindly (Debian 12's
            // baresip 1.0) fail on SHA-256 instead of falling back. SHA-256
            // is opt-in: `algorithms = ["SHA-256", "MD5"]` (README, [auth]).
            algorithms: vec!["MD5".into()],
            lockout_max_failures_per_ip: 10,
            lockout_max_failures_per_user: 20,
            lockout_window_s: 300,
            lockout_s: 900,
        }
    }
}

fn validate_auth(a: RawAuth, cx: &Ctx<'_>) -> Result<AuthSettings, ConfigError> {
    let secret_file = a.secret_file.as_deref().map(|f| cx.existing_file("auth.secret_file", f)).transpose()?;
    if !(10..=3600).contains(&a.nonce_ttl_s) {
        return Err(cx.err("auth.nonce_ttl_s", format!("must be 10 to 3600 seconds, not {}", a.nonce_ttl_s)));
    }
    if a.algorithms.is_empty() {
        return Err(cx.err("auth.algorithms", "needs at least one of SHA-256, SHA-512-256, MD5"));
    }
    for (i, alg) in a.algorithms.iter().enumerate() {
        if !["SHA-256", "SHA-512-256", "MD5"].iter().any(|k| k.eq_ignore_ascii_case(alg)) {
            return Err(cx.err(
                format!("auth.algorithms[{i}]"),
                format!("unknown algorithm {alg:?} (SHA-256, SHA-512-256 or MD5)"),
            ));
        }
    }
    for (key, v) in [
        ("lockout_max_failures_per_ip", u64::from(a.lockout_max_failures_per_ip)),
        ("lockout_max_failures_per_user", u64::from(a.lockout_max_failures_per_user)),
        ("lockout_window_s", a.lockout_window_s),
        ("lockout_s", a.lockout_s),
    ] {
        if v == 0 {
            return Err(cx.err(format!("auth.{key}"), "must be at least 1"));
        }
    }
    Ok(AuthSettings {
        enabled: a.enabled,
        secret_file,
        nonce_ttl_s: a.nonce_ttl_s,
        algorithms: a.algorithms,
        lockout_max_failures_per_ip: a.lockout_max_failures_per_ip,
        lockout_max_failures_per_user: a.lockout_max_failures_per_user,
        lockout_window: Duration::from_secs(a.lockout_window_s),
        lockout: Duration::from_secs(a.lockout_s),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    transport: String,
    address: String,
    advertise: Option<String>,
    certificate: Option<String>,
    private_key: Option<String>,
    client_ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    trusted_peers: Vec<String>,
    #[serde(default = "yes")]
    record_route: bool,
    #[serde(default = "default_max_forwards")]
    max_forwards: i64,
}

fn yes() -> bool {
    true
}

fn default_max_forwards() -> i64 {
    70
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: String,
    #[serde(default)]
    token_file: Option<String>,
    #[serde(default)]
    allow_public: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    matches: String,
    next_hop: OneOrMany,
    #[serde(default)]
    fork: Option<String>,
}

/// `next_hop = "sip:…"` or `next_hop = ["sip:…", "sip:…"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRegistrar {
    store: StoreKind,
    path: Option<String>,
    redis_url: Option<String>,
    min_expires: u32,
    default_expires: u32,
    max_expires: u32,
    flush_interval_ms: u64,
    max_aors: usize,
}

/// Longest write-behind window accepted: a crash loses at most this much.
const MAX_FLUSH_INTERVAL_MS: u64 = 10_000;

impl Default for RawRegistrar {
    fn default() -> Self {
        RawRegistrar {
            store: StoreKind::Embedded,
            path: None,
            redis_url: None,
            min_expires: 60,
            default_expires: 3600,
            max_expires: 7200,
            flush_interval_ms: 100,
            max_aors: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    #[serde(default = "default_backend")]
    backend: DirectoryBackend,
    file: Option<String>,
    ldap: Option<RawLdap>,
}

fn default_backend() -> DirectoryBackend {
    DirectoryBackend::File
}

impl Default for RawDirectory {
    fn default() -> Self {
        RawDirectory { backend: DirectoryBackend::File, file: None, ldap: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: String,
    bind_dn: Option<String>,
    bind_password_file: Option<String>,
    base_dn: String,
    #[serde(default = "default_cache_ttl")]
    cache_ttl_s: u64,
}

fn default_cache_ttl() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: LogFormat,
    #[serde(default = "default_level")]
    level: String,
}

fn default_level() -> String {
    "info".to_owned()
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { format: LogFormat::Text, level: default_level() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsClient {
    certificate: Option<String>,
    private_key: Option<String>,
    ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default)]
    nameservers: Vec<String>,
    #[serde(default = "default_dns_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_dns_attempts")]
    attempts: usize,
}

fn default_dns_timeout() -> u64 {
    2000
}

fn default_dns_attempts() -> usize {
    2
}

impl Default for RawDns {
    fn default() -> Self {
        RawDns { nameservers: Vec::new(), timeout_ms: default_dns_timeout(), attempts: default_dns_attempts() }
    }
}

impl RawConfig {
    pub(super) fn validate(self, cx: &Ctx<'_>) -> Result<Config, ConfigError> {
        let listen = validate_listeners(self.listen, cx)?;
        let proxy = match self.proxy {
            Some(p) => validate_proxy(p, cx)?,
            None => return Err(cx.err("proxy", "missing section (at least proxy.domains is required)")),
        };
        let admin = match self.admin {
            Some(a) => {
                let address = cx.socket_addr("admin.address", &a.address)?;
                // The admin listener is TCP: it cannot share a port with a
                // TCP or TLS SIP listener.
                if let Some(i) = listen.iter().position(|l| l.transport.is_reliable() && l.address == address) {
                    return Err(cx.err("admin.address", format!("{address} is already used by listen[{i}]")));
                }
                // Runtime control (remove registrations, reload) must not be
                // reachable from the Internet by accident.
                if !a.allow_public && !is_internal_address(address.ip()) {
                    return Err(cx.err(
                        "admin.address",
                        format!(
                            "{address} is not a loopback or private address; the admin API controls the proxy \
                             (set admin.allow_public = true, with admin.token_file, to listen there anyway)"
                        ),
                    ));
                }
                let token_file =
                    a.token_file.as_deref().map(|f| cx.existing_file("admin.token_file", f)).transpose()?;
                Some(AdminConfig { address, token_file, allow_public: a.allow_public })
            }
            None => None,
        };
        let routes =
            self.route.into_iter().enumerate().map(|(i, r)| validate_route(i, r, cx)).collect::<Result<_, _>>()?;
        Ok(Config {
            source: cx.file.to_owned(),
            listen,
            proxy,
            admin,
            routes,
            registrar: validate_registrar(self.registrar, cx)?,
            directory: validate_directory(self.directory, cx)?,
            exum: validate_exum(self.exum, cx)?,
            limits: validate_limits(self.limits, cx)?,
            timers: validate_timers(self.timers, cx)?,
            log: validate_log(self.log, cx)?,
            tls_client: self.tls_client.map(|t| validate_tls_client(t, cx)).transpose()?,
            dns: validate_dns(self.dns, cx)?,
            auth: validate_auth(self.auth, cx)?,
            shutdown: validate_shutdown(self.shutdown, cx)?,
            nat: self.nat.validate().map_err(|(key, problem)| cx.err(key, problem))?,
        })
    }
}

fn validate_listeners(raw: Vec<RawListen>, cx: &Ctx<'_>) -> Result<Vec<Listen>, ConfigError> {
    if raw.is_empty() {
        return Err(cx.err("listen", "no listener: add at least one [[listen]] table"));
    }
    let mut out: Vec<Listen> = Vec::with_capacity(raw.len());
    for (i, l) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("listen[{i}].{k}");
        let transport = Transport::from_name(&l.transport).ok_or_else(|| {
            cx.err(key("transport"), format!("unknown transport {:?} (expected udp, tcp or tls)", l.transport))
        })?;
        let address = cx.socket_addr(&key("address"), &l.address)?;
        // UDP and TCP may share an address and port; two stream sockets
        // (TCP or TLS) or two UDP sockets may not.
        if let Some(j) =
            out.iter().position(|o| o.address == address && o.transport.is_reliable() == transport.is_reliable())
        {
            return Err(cx.err(key("address"), format!("{address} is already used by listen[{j}]")));
        }
        if let Some(a) = &l.advertise {
            validate_hostport(a).map_err(|p| cx.err(key("advertise"), p))?;
        }
        let tls = if transport == Transport::Tls {
            let Some(cert) = &l.certificate else {
                return Err(cx.err(key("certificate"), "required for a tls listener"));
            };
            let Some(pk) = &l.private_key else {
                return Err(cx.err(key("private_key"), "required for a tls listener"));
            };
            let certificate = cx.cert_file(&key("certificate"), cert)?;
            let private_key = cx.key_file(&key("private_key"), pk)?;
            cx.key_matches(&key("private_key"), &certificate, &private_key, &key("certificate"))?;
            Some(ListenTls {
                certificate,
                private_key,
                client_ca: l.client_ca.as_deref().map(|ca| cx.cert_file(&key("client_ca"), ca)).transpose()?,
            })
        } else {
            for (name, v) in
                [("certificate", &l.certificate), ("private_key", &l.private_key), ("client_ca", &l.client_ca)]
            {
                if v.is_some() {
                    return Err(cx.err(key(name), format!("only allowed on a tls listener, this one is {transport}")));
                }
            }
            None
        };
        out.push(Listen { transport, address, advertise: l.advertise, tls });
    }
    Ok(out)
}

/// `hostport = host [ ":" port ]` (RFC 3261 §25.1), checked by parsing it
/// as the host part of a SIP URI.
fn validate_hostport(text: &str) -> Result<(), String> {
    let uri = format!("sip:{text}");
    match Uri::parse(uri.as_bytes()) {
        Some(u) if u.user().is_none() && u.params().is_empty() && u.headers().is_empty() => Ok(()),
        _ => Err(format!("not a host or host:port: {text:?}")),
    }
}

/// A domain name: what a SIP URI accepts as a host, and not an address.
fn validate_domain(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("empty domain".to_owned());
    }
    let uri = format!("sip:{text}");
    match Uri::parse(uri.as_bytes()) {
        Some(u) if u.host() == text && u.host_kind() == HostKind::Domain => Ok(text.to_ascii_lowercase()),
        _ => Err(format!("not a domain name: {text:?}")),
    }
}

fn validate_proxy(p: RawProxy, cx: &Ctx<'_>) -> Result<ProxyConfig, ConfigError> {
    if p.domains.is_empty() {
        return Err(cx.err("proxy.domains", "at least one domain is required"));
    }
    let mut domains: Vec<String> = Vec::with_capacity(p.domains.len());
    for (i, d) in p.domains.iter().enumerate() {
        let key = format!("proxy.domains[{i}]");
        let d = validate_domain(d).map_err(|e| cx.err(&key, e))?;
        if domains.contains(&d) {
            return Err(cx.err(key, format!("duplicate domain {d}")));
        }
        domains.push(d);
    }
    let mut trusted_peers = Vec::with_capacity(p.trusted_peers.len());
    for (i, t) in p.trusted_peers.iter().enumerate() {
        let net = match t.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match t.parse::<IpAddr>() {
                Ok(a) => IpNet::from(a),
                Err(_) => {
                    return Err(cx.err(
                        format!("proxy.trusted_peers[{i}]"),
                        format!("not a CIDR or address (like 10.0.0.0/8): {t:?}"),
                    ))
                }
            },
        };
        trusted_peers.push(net);
    }
    let max_forwards = u8::try_from(p.max_forwards)
        .ok()
        .filter(|m| *m > 0)
        .ok_or_else(|| cx.err("proxy.max_forwards", format!("must be 1 to 255, not {}", p.max_forwards)))?;
    Ok(ProxyConfig { domains, trusted_peers, record_route: p.record_route, max_forwards })
}

fn validate_route(i: usize, r: RawRoute, cx: &Ctx<'_>) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("route[{i}].{k}");
    let m = r.matches.trim();
    let matches = if m == "*" {
        RouteMatch::Any
    } else if m.starts_with('+') || m.starts_with(|c: char| c.is_ascii_digit()) {
        let digits = m.strip_prefix('+').unwrap_or(m);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(cx.err(key("match"), format!("a user prefix is digits with an optional leading +: {m:?}")));
        }
        RouteMatch::UserPrefix(m.to_owned())
    } else {
        RouteMatch::Domain(validate_domain(m).map_err(|e| {
            cx.err(key("match"), format!("{e} (expected \"*\", a domain or a user prefix like \"+4930\")"))
        })?)
    };
    let hops = match r.next_hop {
        OneOrMany::One(h) => vec![h],
        OneOrMany::Many(hs) => hs,
    };
    if hops.is_empty() {
        return Err(cx.err(key("next_hop"), "needs at least one SIP URI"));
    }
    for hop in &hops {
        validate_next_hop(hop, cx, &key("next_hop"))?;
    }
    let fork = match r.fork.as_deref() {
        None | Some("parallel") => Fork::Parallel,
        Some("serial") => Fork::Serial,
        Some(other) => {
            return Err(cx.err(key("fork"), format!("unknown fork mode {other:?} (expected parallel or serial)")))
        }
    };
    Ok(Route { matches, next_hop: hops, fork })
}

fn validate_next_hop(hop: &str, cx: &Ctx<'_>, k: &str) -> Result<(), ConfigError> {
    let uri = Uri::parse(hop.as_bytes()).ok_or_else(|| cx.err(k.to_owned(), format!("not a SIP URI: {hop:?}")))?;
    if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips) {
        return Err(cx.err(k.to_owned(), format!("must be a sip: or sips: URI: {hop:?}")));
    }
    if let Some(t) = uri.transport() {
        let Some(t) = Transport::from_name(t) else {
            return Err(cx.err(k.to_owned(), format!("unknown transport {t:?} (expected udp, tcp or tls)")));
        };
        if uri.scheme == Scheme::Sips && t == Transport::Udp {
            return Err(cx.err(k.to_owned(), "a sips: URI cannot use transport=udp"));
        }
    }
    Ok(())
}

fn validate_registrar(r: RawRegistrar, cx: &Ctx<'_>) -> Result<RegistrarConfig, ConfigError> {
    if r.min_expires == 0 {
        return Err(cx.err("registrar.min_expires", "must be at least 1"));
    }
    if r.default_expires < r.min_expires {
        return Err(cx.err("registrar.default_expires", format!("must be at least min_expires ({})", r.min_expires)));
    }
    if r.max_expires < r.default_expires {
        return Err(
            cx.err("registrar.max_expires", format!("must be at least default_expires ({})", r.default_expires))
        );
    }
    if r.flush_interval_ms > MAX_FLUSH_INTERVAL_MS {
        return Err(cx.err(
            "registrar.flush_interval_ms",
            format!("must be at most {MAX_FLUSH_INTERVAL_MS} (0 = fsync before every 200)"),
        ));
    }
    if r.max_aors == 0 {
        return Err(cx.err("registrar.max_aors", "must be at least 1"));
    }
    let mut path = None;
    match r.store {
        StoreKind::Embedded => {
            if r.redis_url.is_some() {
                return Err(cx.err("registrar.redis_url", "only used with store = \"redis\""));
            }
            if let Some(p) = &r.path {
                if p.is_empty() {
                    return Err(cx.err("registrar.path", "empty path"));
                }
                path = Some(cx.resolve(p));
            }
        }
        StoreKind::Redis => {
            let Some(url) = &r.redis_url else {
                return Err(cx.err("registrar.redis_url", "required with store = \"redis\""));
            };
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(cx.err("registrar.redis_url", format!("must start with redis:// or rediss://: {url:?}")));
            }
            if r.path.is_some() {
                return Err(cx.err("registrar.path", "only used with store = \"embedded\""));
            }
        }
    }
    Ok(RegistrarConfig {
        store: r.store,
        path,
        redis_url: r.redis_url,
        min_expires: r.min_expires,
        default_expires: r.default_expires,
        max_expires: r.max_expires,
        flush_interval: std::time::Duration::from_millis(r.flush_interval_ms),
        max_aors: r.max_aors,
    })
}

fn validate_directory(d: RawDirectory, cx: &Ctx<'_>) -> Result<DirectoryConfig, ConfigError> {
    let file = d.file.as_deref().map(|f| cx.existing_file("directory.file", f)).transpose()?;
    let ldap = match d.ldap {
        Some(l) => {
            if !(l.url.starts_with("ldap://") || l.url.starts_with("ldaps://")) {
                return Err(cx.err("directory.ldap.url", format!("must start with ldap:// or ldaps://: {:?}", l.url)));
            }
            if l.base_dn.trim().is_empty() {
                return Err(cx.err("directory.ldap.base_dn", "empty"));
            }
            if l.bind_password_file.is_some() && l.bind_dn.is_none() {
                return Err(cx.err("directory.ldap.bind_dn", "required when bind_password_file is set"));
            }
            let bind_password_file = l
                .bind_password_file
                .as_deref()
                .map(|f| cx.existing_file("directory.ldap.bind_password_file", f))
                .transpose()?;
            Some(LdapConfig {
                url: l.url,
                bind_dn: l.bind_dn,
                bind_password_file,
                base_dn: l.base_dn,
                cache_ttl: Duration::from_secs(l.cache_ttl_s),
            })
        }
        None => None,
    };
    if d.backend == DirectoryBackend::Ldap && ldap.is_none() {
        return Err(cx.err("directory.ldap", "required with backend = \"ldap\""));
    }
    Ok(DirectoryConfig { backend: d.backend, file, ldap })
}

fn validate_exum(e: ExumConfig, cx: &Ctx<'_>) -> Result<ExumConfig, ConfigError> {
    if !(1..=600).contains(&e.ring_time_s) {
        return Err(cx.err("exum.ring_time_s", format!("must be 1 to 600 seconds, not {}", e.ring_time_s)));
    }
    if e.um_attempt_timeout_ms < 100 {
        return Err(
            cx.err("exum.um_attempt_timeout_ms", format!("must be at least 100, not {}", e.um_attempt_timeout_ms))
        );
    }
    // Templates are checked once here so that a typo never waits for the
    // first voice-mail call to show.
    for (key, t) in [("on_prem_request_uri", &e.on_prem_request_uri), ("hosted_request_uri", &e.hosted_request_uri)] {
        if let Some(t) = t {
            let (on_prem, hosted) =
                if key == "on_prem_request_uri" { (Some(t.as_str()), None) } else { (None, Some(t.as_str())) };
            crate::exum::UmTemplates::new(on_prem, hosted)
                .map_err(|err| cx.err(format!("exum.{key}"), err.to_string()))?;
        }
    }
    if let Some(h) = &e.verification_header {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b)) {
            return Err(cx.err("exum.verification_header", format!("not a header name: {h:?}")));
        }
    }
    Ok(e)
}

fn validate_limits(l: LimitsConfig, cx: &Ctx<'_>) -> Result<LimitsConfig, ConfigError> {
    let fields = [
        ("max_message_size", l.max_message_size),
        ("max_headers", l.max_headers),
        ("max_header_line", l.max_header_line),
        ("max_uri_len", l.max_uri_len),
        ("max_vias", l.max_vias),
        ("max_routes", l.max_routes),
        ("max_body", l.max_body),
        ("max_connections", l.max_connections),
        ("max_connections_per_ip", l.max_connections_per_ip),
        ("max_dialogs", l.max_dialogs),
        ("max_transactions", l.max_transactions),
    ];
    for (name, v) in fields {
        if v == 0 {
            return Err(cx.err(format!("limits.{name}"), "must be at least 1"));
        }
    }
    if l.max_body > l.max_message_size {
        return Err(cx.err("limits.max_body", format!("larger than max_message_size ({})", l.max_message_size)));
    }
    if l.max_connections_per_ip > l.max_connections {
        return Err(
            cx.err("limits.max_connections_per_ip", format!("larger than max_connections ({})", l.max_connections))
        );
    }
    if l.queue_depth < 16 {
        return Err(cx.err("limits.queue_depth", "must be at least 16"));
    }
    if l.dialog_idle_timeout_s < 60 {
        return Err(cx.err("limits.dialog_idle_timeout_s", "must be at least 60 seconds"));
    }
    if l.idle_timeout_s == 0 {
        return Err(cx.err("limits.idle_timeout_s", "must be at least 1"));
    }
    if l.source_rate > 0 && l.source_burst == 0 {
        return Err(cx.err("limits.source_burst", "must be at least 1 while source_rate limits sources"));
    }
    Ok(l)
}

fn validate_timers(t: TimersConfig, cx: &Ctx<'_>) -> Result<TimersConfig, ConfigError> {
    if t.t1_ms == 0 {
        return Err(cx.err("timers.t1_ms", "must be at least 1"));
    }
    if t.t2_ms < t.t1_ms {
        return Err(cx.err("timers.t2_ms", format!("must be at least t1_ms ({})", t.t1_ms)));
    }
    if t.t4_ms == 0 {
        return Err(cx.err("timers.t4_ms", "must be at least 1"));
    }
    if t.timer_c_s == 0 {
        return Err(cx.err("timers.timer_c_s", "must be at least 1"));
    }
    Ok(t)
}

fn validate_log(l: RawLog, cx: &Ctx<'_>) -> Result<LogConfig, ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&l.level)
        .map_err(|e| cx.err("log.level", format!("not a log filter ({e}): {:?}", l.level)))?;
    Ok(LogConfig { format: l.format, level: l.level })
}

fn validate_tls_client(t: RawTlsClient, cx: &Ctx<'_>) -> Result<TlsClientConfig, ConfigError> {
    match (&t.certificate, &t.private_key) {
        (Some(_), None) => return Err(cx.err("tls_client.private_key", "required when certificate is set")),
        (None, Some(_)) => return Err(cx.err("tls_client.certificate", "required when private_key is set")),
        _ => {}
    }
    let certificate = t.certificate.as_deref().map(|c| cx.cert_file("tls_client.certificate", c)).transpose()?;
    let private_key = t.private_key.as_deref().map(|k| cx.key_file("tls_client.private_key", k)).transpose()?;
    if let (Some(c), Some(k)) = (&certificate, &private_key) {
        cx.key_matches("tls_client.private_key", c, k, "tls_client.certificate")?;
    }
    Ok(TlsClientConfig {
        certificate,
        private_key,
        ca: t.ca.as_deref().map(|c| cx.cert_file("tls_client.ca", c)).transpose()?,
    })
}

fn validate_dns(d: RawDns, cx: &Ctx<'_>) -> Result<DnsConfig, ConfigError> {
    let mut nameservers = Vec::with_capacity(d.nameservers.len());
    for (i, n) in d.nameservers.iter().enumerate() {
        // A bare address means port 53.
        let addr = match n.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => cx.socket_addr(&format!("dns.nameservers[{i}]"), n)?,
        };
        nameservers.push(addr);
    }
    if d.timeout_ms == 0 {
        return Err(cx.err("dns.timeout_ms", "must be at least 1"));
    }
    if d.attempts == 0 {
        return Err(cx.err("dns.attempts", "must be at least 1"));
    }
    Ok(DnsConfig { nameservers, timeout: Duration::from_millis(d.timeout_ms), attempts: d.attempts })
}

/// Loopback, RFC 1918 / RFC 4193 private, or link-local: not reachable from
/// the Internet. The unspecified address (every interface) is not.
fn is_internal_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_private() || a.is_link_local(),
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

fn validate_shutdown(s: ShutdownConfig, cx: &Ctx<'_>) -> Result<ShutdownConfig, ConfigError> {
    if s.grace_s == 0 || s.grace_s > 86_400 {
        return Err(cx.err("shutdown.grace_s", format!("{} is out of range (1 to 86400 seconds)", s.grace_s)));
    }
    if s.retry_after_s > 86_400 {
        return Err(
            cx.err("shutdown.retry_after_s", format!("{} is out of range (0 to 86400 seconds)", s.retry_after_s))
        );
    }
    Ok(s)
}
