//! The `umproxy.toml` configuration (DESIGN.md §10), validated before
//! anything starts.
//!
//! [`Config::load`] reads a file, [`Config::from_str_named`] parses text,
//! [`Config::example`] is the built-in example used when no file is given.
//! All three run the same validation: addresses parse, certificate, key and
//! CA files exist and hold PEM, domains and CIDRs are valid, route next hops
//! are SIP URIs, listeners do not collide. A problem is a [`ConfigError`]
//! that names the file, the key path and what is wrong:
//! `umproxy.toml: listen[1].certificate: file not found: certs/x.pem`.
//!
//! Relative file paths resolve against the directory of the configuration
//! file, so a configuration directory can be moved as a whole.
//!
//! Parsing happens in two steps: [`raw`] mirrors the TOML with serde
//! (`deny_unknown_fields` everywhere, so a typo is an error with toml's line
//! and column), then [`raw::RawConfig::validate`] turns it into the typed
//! structs below, checking what serde cannot and naming the key.

mod logging;
mod nat;
mod raw;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::transport::Transport;

pub use logging::{check_level, current_level, init_logging, set_level, LoggingError};
pub use nat::NatConfig;

/// The built-in example configuration (loopback, no TLS).
pub const EXAMPLE: &str = include_str!("example.toml");
/// The name the built-in example has in error messages.
pub const EXAMPLE_NAME: &str = "<built-in example>";

/// A configuration problem, found before anything starts.
///
/// Every variant names the file; [`ConfigError::Invalid`] also names the key
/// path (`listen[1].certificate`, `route[0].next_hop`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file itself could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type; the
    /// message is toml's and keeps its line and column.
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// A value that is well-formed TOML but not acceptable.
    #[error("{file}: {key}: {problem}")]
    Invalid { file: String, key: String, problem: String },
}

impl ConfigError {
    /// The key path, for [`ConfigError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: the file path as given, or [`EXAMPLE_NAME`].
    pub source: String,
    /// `[[listen]]`: at least one.
    pub listen: Vec<Listen>,
    /// `[proxy]`.
    pub proxy: ProxyConfig,
    /// `[admin]`; `None` when the section is absent (no admin listener).
    pub admin: Option<AdminConfig>,
    /// `[[route]]`, in file order (first match wins).
    pub routes: Vec<Route>,
    /// `[registrar]`.
    pub registrar: RegistrarConfig,
    /// `[directory]`.
    pub directory: DirectoryConfig,
    /// `[exum]`.
    pub exum: ExumConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[timers]`.
    pub timers: TimersConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[tls_client]`: identity and trust for outbound TLS.
    pub tls_client: Option<TlsClientConfig>,
    /// `[dns]`.
    pub dns: DnsConfig,
    pub auth: AuthSettings,
    /// `[shutdown]`.
    pub shutdown: ShutdownConfig,
    /// `[nat]`.
    pub nat: NatConfig,
}

/// `[shutdown]`: how SIGTERM drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Longest wait for calls in progress and open transactions before the
    /// process exits anyway, seconds (`run --grace-s` overrides; 30).
    pub grace_s: u64,
    /// `Retry-After` of the 503 that refuses new calls while draining,
    /// seconds (30).
    pub retry_after_s: u32,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_s: 30, retry_after_s: 30 }
    }
}

/// `[auth]`: digest authentication (RFC 3261 §22, RFC 8760).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// REGISTER and requests from users of the served domains (not from
    /// trusted peers) must authenticate. Default true.
    pub enabled: bool,
    /// The nonce key (at least 16 bytes); instances sharing registrations
    /// share it. None: a random key per process (nonces die with it).
    pub secret_file: Option<PathBuf>,
    pub nonce_ttl_s: u64,
    /// Challenges offered, in order: `SHA-256`, `SHA-512-256`, `MD5`.
    pub algorithms: Vec<String>,
    pub lockout_max_failures_per_ip: u32,
    pub lockout_max_failures_per_user: u32,
    pub lockout_window: Duration,
    pub lockout: Duration,
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: name.clone(), source })?;
        Config::from_str_named(&text, &name)
    }

    /// Parse and validate configuration text. `name` is the file name used
    /// in errors; relative paths resolve against its directory.
    pub fn from_str_named(text: &str, name: &str) -> Result<Config, ConfigError> {
        let base = Path::new(name).parent().map(Path::to_path_buf).unwrap_or_default();
        Config::from_str_with_base(text, name, &base)
    }

    /// Parse and validate configuration text, resolving relative paths
    /// against `base`.
    pub fn from_str_with_base(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax { file: name.to_owned(), message: e.to_string() };
        let de = toml::Deserializer::parse(text).map_err(syntax)?;
        // serde_path_to_error knows where in the tree a value failed; an
        // unknown key then reads `proxy.bogus: unknown key`, not a parser
        // message with a byte span.
        let raw: raw::RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_owned();
            match message.strip_prefix("unknown field `").and_then(|m| m.split_once('`')) {
                Some((field, rest)) => {
                    // The path ends at the unknown key itself.
                    let key = if path.is_empty() || path == "." {
                        field.to_owned()
                    } else if path == field || path.ends_with(&format!(".{field}")) {
                        path
                    } else {
                        format!("{path}.{field}")
                    };
                    let expected = rest.trim_start_matches(',').trim();
                    let problem = if expected.is_empty() {
                        "unknown key".to_owned()
                    } else {
                        format!("unknown key ({expected})")
                    };
                    ConfigError::Invalid { file: name.to_owned(), key, problem }
                }
                // A value of the wrong type: name the key and where it is.
                None if !path.is_empty() && path != "." => {
                    let at = inner.span().map(|span| {
                        let upto = text.get(..span.start).unwrap_or_default();
                        let line = upto.matches('\n').count() + 1;
                        let column = upto.rfind('\n').map_or(upto.len(), |nl| upto.len() - nl - 1) + 1;
                        format!(" (line {line}, column {column})")
                    });
                    let problem = format!("{}{}", message.trim_end(), at.unwrap_or_default());
                    ConfigError::Invalid { file: name.to_owned(), key: path, problem }
                }
                None => syntax(inner),
            }
        })?;
        raw.validate(&raw::Ctx { file: name, base })
    }

    /// The file at `path`, or the built-in example when there is none (the
    /// first-contact `cargo run`).
    pub fn load_or_example(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => Config::example(),
        }
    }

    /// The built-in example configuration.
    pub fn example() -> Result<Config, ConfigError> {
        Config::from_str_with_base(EXAMPLE, EXAMPLE_NAME, Path::new(""))
    }
}

/// One `[[listen]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub address: SocketAddr,
    /// `advertise`: the host (and optional port) written into Via and
    /// Record-Route instead of the bound address, for listeners behind NAT
    /// or on a wildcard address. Validated as a SIP `hostport`.
    pub advertise: Option<String>,
    /// Present exactly when `transport = "tls"`.
    pub tls: Option<ListenTls>,
}

/// Certificate files of a TLS listener (paths resolved, files checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Present: clients must present a certificate signed by this CA
    /// (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// `[proxy]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// SIP domains served here, lower case, at least one.
    pub domains: Vec<String>,
    /// Sources allowed to relay to foreign domains without authentication.
    /// A bare address is a /32 or /128.
    pub trusted_peers: Vec<IpNet>,
    /// Insert Record-Route (default true).
    pub record_route: bool,
    /// Max-Forwards put on requests that have none (default 70, RFC 3261
    /// §16.6 step 3).
    pub max_forwards: u8,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address of the HTTP listener serving `/metrics`, `/healthz`,
    /// `/readyz` and the runtime control API (`/api/…`).
    pub address: SocketAddr,
    /// A file holding the bearer token the control API requires
    /// (`Authorization: Bearer …`); without it the API is open to whoever
    /// reaches the address. `/metrics`, `/healthz` and `/readyz` never need it.
    pub token_file: Option<PathBuf>,
    /// Allow an address that is not loopback or private (default false).
    pub allow_public: bool,
}

/// What a `[[route]]` matches, from its `match` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// `"*"`: every request.
    Any,
    /// A domain (lower case): the Request-URI host equals it.
    Domain(String),
    /// A user prefix (`"+4930"`): the Request-URI user starts with it.
    UserPrefix(String),
}

/// One `[[route]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub matches: RouteMatch,
    /// `sip:` or `sips:` URIs, validated with `sip_message::Uri::parse`;
    /// without port and transport, RFC 3263 decides. One, or several to
    /// fork to.
    pub next_hop: Vec<String>,
    /// How several next hops are tried.
    pub fork: Fork,
}

/// `[[route]] fork`: all next hops at once, or one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fork {
    #[default]
    Parallel,
    Serial,
}

/// `[registrar] store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Embedded,
    Redis,
}

/// `[registrar]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    pub store: StoreKind,
    /// Embedded store: the file registrations persist to; `None` keeps them
    /// in memory only.
    pub path: Option<PathBuf>,
    /// Redis store: `redis://` or `rediss://` URL; required for `redis`.
    pub redis_url: Option<String>,
    /// Shorter requested expiries get 423 (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// Used when a REGISTER names no expiry.
    pub default_expires: u32,
    /// Longer requested expiries are shortened to this.
    pub max_expires: u32,
    /// Embedded store: changes are fsynced at most this long after the 200
    /// (write-behind); zero fsyncs before every 200 (write-through).
    pub flush_interval: std::time::Duration,
    /// AORs the store holds at most (with Redis: across all instances);
    /// a REGISTER that would create one more gets 503.
    pub max_aors: usize,
}

/// `[directory] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryBackend {
    File,
    Ldap,
}

/// `[directory]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    pub backend: DirectoryBackend,
    /// File backend: the directory TOML file (checked to exist). `None`: the
    /// directory module's built-in example.
    pub file: Option<PathBuf>,
    /// `[directory.ldap]`, required for the `ldap` backend.
    pub ldap: Option<LdapConfig>,
}

/// `[directory.ldap]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapConfig {
    /// `ldap://` or `ldaps://` URL.
    pub url: String,
    pub bind_dn: Option<String>,
    /// File holding the bind password (checked to exist); never inline.
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    pub cache_ttl: Duration,
}

/// `[exum]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExumConfig {
    /// Default no-answer time before voice mail, seconds (1–600, default 30).
    pub ring_time_s: u32,
    /// Time allowed for one UM server attempt, milliseconds (default 4000).
    pub um_attempt_timeout_ms: u32,
    /// Request-URI template of INVITEs to on-premises UM (default
    /// `sip:{um_fqdn};transport={transport}`).
    pub on_prem_request_uri: Option<String>,
    /// Request-URI template of INVITEs to hosted UM (default
    /// `sip:{destination};opaque=app:voicemail;ms-organization={organization}`).
    pub hosted_request_uri: Option<String>,
    /// The header a hosting provider marks verified requests with (default
    /// `ms-edge-proxy-message-trust`; unconfirmed, hence configurable).
    pub verification_header: Option<String>,
}

impl Default for ExumConfig {
    fn default() -> Self {
        ExumConfig {
            ring_time_s: 30,
            um_attempt_timeout_ms: 4000,
            on_prem_request_uri: None,
            hosted_request_uri: None,
            verification_header: None,
        }
    }
}

/// `[limits]`: the `sip_message::Limits` fields plus connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_message_size: usize,
    pub max_headers: usize,
    pub max_header_line: usize,
    pub max_uri_len: usize,
    pub max_vias: usize,
    pub max_routes: usize,
    pub max_body: usize,
    /// TCP and TLS connections open at once, inbound and outbound (10 000).
    pub max_connections: usize,
    /// Inbound TCP and TLS connections from one IP address (100).
    pub max_connections_per_ip: usize,
    /// A TCP or TLS connection with no traffic for this long is closed, in
    /// seconds (300; clients keep flows alive with RFC 5626 CRLF pings).
    pub idle_timeout_s: u64,
    /// Calls in progress tracked for the drain and `umproxy_dialogs_active`,
    /// per worker (100 000); beyond it calls work but are not tracked.
    pub max_dialogs: usize,
    /// A tracked call with no request for this long is forgotten, seconds
    /// (21 600: its BYE went another way or never came).
    pub dialog_idle_timeout_s: u64,
    /// Transactions held at once per worker, finished ones on their
    /// clean-up timers included (200 000); beyond it new requests get 503.
    pub max_transactions: usize,
    /// Messages waiting per worker (32 768); new requests get 503 once a
    /// quarter of it is left, kept for the calls in progress.
    pub queue_depth: usize,
    /// New requests (out of dialog) one source address may send per
    /// second, sustained (200; 0 = no per-source limit). Trusted peers and
    /// mutual-TLS peers are exempt.
    pub source_rate: u32,
    /// New requests one source may send at once above its rate (400).
    pub source_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = sip_message::Limits::default();
        LimitsConfig {
            max_message_size: l.max_message_size,
            max_headers: l.max_headers,
            max_header_line: l.max_header_line,
            max_uri_len: l.max_uri_len,
            max_vias: l.max_vias,
            max_routes: l.max_routes,
            max_body: l.max_body,
            max_dialogs: 100_000,
            dialog_idle_timeout_s: 6 * 3600,
            max_transactions: sip_transaction::Config::default().max_transactions,
            queue_depth: crate::core::CoreConfig::default().queue_depth,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            idle_timeout_s: 300,
            source_rate: crate::core::admission::DEFAULT_RATE,
            source_burst: crate::core::admission::DEFAULT_BURST,
        }
    }
}

impl LimitsConfig {
    /// The parser limits.
    pub fn sip_limits(&self) -> sip_message::Limits {
        sip_message::Limits {
            max_message_size: self.max_message_size,
            max_headers: self.max_headers,
            max_header_line: self.max_header_line,
            max_uri_len: self.max_uri_len,
            max_vias: self.max_vias,
            max_routes: self.max_routes,
            max_body: self.max_body,
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }
}

/// `[timers]`: RFC 3261 transaction timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    /// RTT estimate (RFC 3261 §17.1.1.1), default 500 ms.
    pub t1_ms: u64,
    /// Maximum non-INVITE retransmit interval, default 4000 ms.
    pub t2_ms: u64,
    /// Time a message stays in the network, default 5000 ms.
    pub t4_ms: u64,
    /// Proxy INVITE timer C (RFC 3261 §16.6 step 11), default 180 s.
    pub timer_c_s: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig { t1_ms: 500, t2_ms: 4000, t4_ms: 5000, timer_c_s: 180 }
    }
}

impl TimersConfig {
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }
    pub fn t2(&self) -> Duration {
        Duration::from_millis(self.t2_ms)
    }
    pub fn t4(&self) -> Duration {
        Duration::from_millis(self.t4_ms)
    }
    pub fn timer_c(&self) -> Duration {
        Duration::from_secs(self.timer_c_s)
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, or `umproxy=debug,hickory=warn`
    /// (validated). `RUST_LOG`, when set, wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// `[tls_client]`: outbound TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientConfig {
    /// Client certificate chain presented to servers asking for one (mutual
    /// TLS toward hosting providers); set together with `private_key`.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Trust anchors for server certificates; `None`: the built-in web PKI
    /// roots.
    pub ca: Option<PathBuf>,
}

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask; empty: those of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Per-query timeout (default 2000 ms).
    pub timeout: Duration,
    /// Attempts per name server (default 2).
    pub attempts: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { nameservers: Vec::new(), timeout: Duration::from_millis(2000), attempts: 2 }
    }
}

impl fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteMatch::Any => f.write_str("*"),
            RouteMatch::Domain(d) => f.write_str(d),
            RouteMatch::UserPrefix(p) => f.write_str(p),
        }
    }
}
