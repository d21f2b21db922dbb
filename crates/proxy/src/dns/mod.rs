//! Locating SIP servers (RFC 3263) with hickory-resolver.
//!
//! [`Resolver::resolve`] turns a next hop (host, optional port, optional
//! transport, sips or not) into the ordered list of [`Target`]s to try:
//!
//! 1. A numeric IP address is used as is (RFC 3263 §4.1, §4.2).
//! 2. An explicit port means A/AAAA only (§4.2).
//! 3. An explicit transport means an SRV query for that transport, then
//!    A/AAAA with the transport's default port (§4.2).
//! 4. Otherwise NAPTR (§4.1): `SIP+D2U`, `SIP+D2T`, `SIPS+D2T` records with
//!    the `s` flag, by order then preference, each followed to its SRV; then,
//!    without usable NAPTR records, SRV for `_sip._udp`, `_sip._tcp` and
//!    `_sips._tcp`; then A/AAAA with UDP and port 5060.
//!
//! A `sips` next hop only ever yields TLS targets. `SIP+D2S` (SCTP) is
//! ignored: umproxy has no SCTP transport.
//!
//! SRV ordering (priority, RFC 2782 weighted random) is ours: [`order_srv`].
//! Caching relies on hickory's response cache, which keeps every answer
//! (positive and negative) for its TTL; we add no cache of our own.
//!
//! Failover is the core's job; [`TargetCursor`] and [`Blacklist`] give it the
//! next target and remember targets that failed (RFC 3263 §4.3).

mod cursor;
mod srv;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use sip_message::{HostKind, Scheme, Uri};

use crate::config::DnsConfig;
use crate::transport::Transport;

pub use cursor::{Blacklist, TargetCursor, MAX_DOWN};
pub use srv::{order_srv, SrvRecord};

/// One place to send a request to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The name a TLS server certificate must match: the domain of the next
    /// hop as written (RFC 5922 §4: not the SRV target), or the address when
    /// the next hop was numeric. For [`Resolver::resolve_service`], the SRV
    /// target.
    pub server_name: String,
}

/// Why a next hop could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    #[error("{name}: no such domain")]
    NxDomain { name: String },
    /// The name exists but yielded no usable target.
    #[error("{name}: no usable NAPTR, SRV or address records")]
    NoRecords { name: String },
    /// The next hop itself is unusable (our caller's or the configuration's
    /// fault, not the network's).
    #[error("{host:?}: {problem}")]
    InvalidTarget { host: String, problem: &'static str },
    /// The lookup failed: timeout, server failure, no server reachable.
    #[error("{name}: lookup failed: {source}")]
    Lookup {
        name: String,
        #[source]
        source: NetError,
    },
    /// The resolver could not be set up (no usable name server).
    #[error("resolver setup: {0}")]
    Setup(String),
}

/// The RFC 3263 resolver. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// From `[dns]`: its name servers, or those of `/etc/resolv.conf` when
    /// the list is empty.
    pub fn from_config(cfg: &DnsConfig) -> Result<Resolver, DnsError> {
        let servers = if cfg.nameservers.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf")
                .map_err(|e| DnsError::Setup(format!("/etc/resolv.conf: {e}")))?;
            let servers = resolv_conf_nameservers(&text);
            if servers.is_empty() {
                return Err(DnsError::Setup("/etc/resolv.conf names no usable nameserver".to_owned()));
            }
            servers
        } else {
            cfg.nameservers.clone()
        };
        Resolver::with_nameservers(&servers, cfg.timeout, cfg.attempts)
    }

    /// Ask exactly these name servers (UDP, then TCP on truncation).
    pub fn with_nameservers(servers: &[SocketAddr], timeout: Duration, attempts: usize) -> Result<Resolver, DnsError> {
        if servers.is_empty() {
            return Err(DnsError::Setup("no name servers".to_owned()));
        }
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        );
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = attempts;
        // Next hops are fully qualified; never append search domains.
        opts.ndots = 0;
        // Both families, IPv4 first: most SIP networks are IPv4.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder.build().map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// Resolve the next hop named by a SIP URI (its `maddr`, else its host;
    /// its port, `transport` parameter and scheme).
    pub async fn resolve_uri(&self, uri: &Uri<'_>) -> Result<Vec<Target>, DnsError> {
        let sips = match uri.scheme {
            Scheme::Sips => true,
            Scheme::Sip => false,
            _ => {
                return Err(DnsError::InvalidTarget {
                    host: uri.as_str().to_owned(),
                    problem: "not a sip: or sips: URI",
                })
            }
        };
        let transport = match uri.transport() {
            Some(t) => Some(Transport::from_name(t).ok_or_else(|| DnsError::InvalidTarget {
                host: uri.as_str().to_owned(),
                problem: "unsupported transport parameter",
            })?),
            None => None,
        };
        // RFC 3261 §19.1.1: maddr overrides the host for where to send.
        let host = uri.param("maddr").flatten().unwrap_or_else(|| uri.host());
        self.resolve(host, uri.port(), transport, sips).await
    }

    /// Resolve a next hop per RFC 3263 into the ordered targets to try.
    pub async fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
        sips: bool,
    ) -> Result<Vec<Target>, DnsError> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if sips && matches!(transport, Some(Transport::Udp)) {
            return Err(DnsError::InvalidTarget { host: host.to_owned(), problem: "sips cannot use UDP" });
        }
        let default_transport = if sips { Transport::Tls } else { Transport::Udp };

        // §4.1/§4.2: a numeric address needs no DNS.
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let t = transport.unwrap_or(default_transport);
            let addr = SocketAddr::new(ip, port.unwrap_or(t.default_port()));
            return Ok(vec![Target { transport: t, addr, server_name: ip.to_string() }]);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if !is_domain(&name) {
            return Err(DnsError::InvalidTarget { host: host.to_owned(), problem: "not a domain name or address" });
        }

        // §4.2: an explicit port means address records only.
        if let Some(port) = port {
            let t = transport.unwrap_or(default_transport);
            return self.address_targets(&name, t, port, &name).await;
        }

        // §4.2: an explicit transport means SRV for it, then addresses.
        if let Some(t) = transport {
            let targets = self.srv_targets(&srv_name(t, sips, &name), t, &name).await?;
            if !targets.is_empty() {
                return Ok(targets);
            }
            return self.address_targets(&name, t, t.default_port(), &name).await;
        }

        // §4.1: NAPTR, then SRV, then addresses.
        let mut targets = Vec::new();
        for (t, replacement) in self.naptr(&name, sips).await? {
            for target in self.srv_targets(&replacement, t, &name).await? {
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
        }
        if !targets.is_empty() {
            return Ok(targets);
        }
        let transports: &[Transport] =
            if sips { &[Transport::Tls] } else { &[Transport::Udp, Transport::Tcp, Transport::Tls] };
        for &t in transports {
            for target in self.srv_targets(&srv_name(t, sips, &name), t, &name).await? {
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
        }
        if !targets.is_empty() {
            return Ok(targets);
        }
        self.address_targets(&name, default_transport, default_transport.default_port(), &name).await
    }

    /// The SRV records of `name` (like `_sipfederationtls._tcp.contoso.test`),
    /// in RFC 2782 order; empty when there are none.
    pub async fn resolve_srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let records = match self.inner.srv_lookup(fqdn(&name)).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) if !srv.target.is_root() => Some(SrvRecord {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
                    }),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(source) => return Err(DnsError::Lookup { name, source }),
        };
        Ok(order_srv(records, &mut rand::rng()))
    }

    /// The targets of an SRV service such as `_sipfederationtls._tcp.<domain>`
    /// (ExUM hosting providers), over `transport`, each with the SRV target
    /// as its TLS server name.
    pub async fn resolve_service(&self, name: &str, transport: Transport) -> Result<Vec<Target>, DnsError> {
        let mut targets = Vec::new();
        for srv in self.resolve_srv(name).await? {
            match self.addresses(&srv.target).await {
                Ok(ips) => targets.extend(ips.into_iter().map(|ip| Target {
                    transport,
                    addr: SocketAddr::new(ip, srv.port),
                    server_name: srv.target.clone(),
                })),
                Err(e) => tracing::debug!(srv_target = %srv.target, error = %e, "SRV target has no address"),
            }
        }
        if targets.is_empty() {
            return Err(DnsError::NoRecords { name: name.trim_end_matches('.').to_owned() });
        }
        Ok(targets)
    }

    /// Usable NAPTR records of `name` (§4.1): `(transport, SRV name)` in
    /// order, preference order.
    async fn naptr(&self, name: &str, sips: bool) -> Result<Vec<(Transport, String)>, DnsError> {
        let lookup = match self.inner.lookup(fqdn(name), RecordType::NAPTR).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
            Err(source) => return Err(DnsError::Lookup { name: name.to_owned(), source }),
        };
        let mut records: Vec<(u16, u16, Transport, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NAPTR(n) if n.flags.eq_ignore_ascii_case(b"s") && !n.replacement.is_root() => {
                    let t = naptr_transport(&n.services, sips)?;
                    let srv = n.replacement.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                    Some((n.order, n.preference, t, srv))
                }
                _ => None,
            })
            .collect();
        records.sort_by_key(|(order, pref, _, _)| (*order, *pref));
        Ok(records.into_iter().map(|(_, _, t, srv)| (t, srv)).collect())
    }

    /// Targets for the SRV records of `srv`, in RFC 2782 order. SRV targets
    /// without addresses are skipped.
    async fn srv_targets(&self, srv: &str, transport: Transport, server_name: &str) -> Result<Vec<Target>, DnsError> {
        let mut targets = Vec::new();
        for rec in self.resolve_srv(srv).await? {
            match self.addresses(&rec.target).await {
                Ok(ips) => targets.extend(ips.into_iter().map(|ip| Target {
                    transport,
                    addr: SocketAddr::new(ip, rec.port),
                    server_name: server_name.to_owned(),
                })),
                Err(e) => tracing::debug!(srv, srv_target = %rec.target, error = %e, "SRV target has no address"),
            }
        }
        Ok(targets)
    }

    async fn address_targets(
        &self,
        name: &str,
        transport: Transport,
        port: u16,
        server_name: &str,
    ) -> Result<Vec<Target>, DnsError> {
        Ok(self
            .addresses(name)
            .await?
            .into_iter()
            .map(|ip| Target { transport, addr: SocketAddr::new(ip, port), server_name: server_name.to_owned() })
            .collect())
    }

    /// A and AAAA records of `name`.
    async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        match self.inner.lookup_ip(fqdn(name)).await {
            Ok(l) => {
                let ips: Vec<IpAddr> = l.iter().collect();
                if ips.is_empty() {
                    Err(DnsError::NoRecords { name: name.to_owned() })
                } else {
                    Ok(ips)
                }
            }
            Err(e) if e.is_nx_domain() => Err(DnsError::NxDomain { name: name.to_owned() }),
            Err(e) if e.is_no_records_found() => Err(DnsError::NoRecords { name: name.to_owned() }),
            Err(source) => Err(DnsError::Lookup { name: name.to_owned(), source }),
        }
    }
}

/// The transport a NAPTR service field names (RFC 3263 §4.1, RFC 3263 §9);
/// `None` for services we do not use.
fn naptr_transport(services: &[u8], sips: bool) -> Option<Transport> {
    if services.eq_ignore_ascii_case(b"SIPS+D2T") {
        Some(Transport::Tls)
    } else if sips {
        None
    } else if services.eq_ignore_ascii_case(b"SIP+D2U") {
        Some(Transport::Udp)
    } else if services.eq_ignore_ascii_case(b"SIP+D2T") {
        Some(Transport::Tcp)
    } else {
        None
    }
}

/// The SRV name for a transport (RFC 3263 §4.2).
fn srv_name(transport: Transport, sips: bool, domain: &str) -> String {
    match transport {
        Transport::Udp => format!("_sip._udp.{domain}"),
        Transport::Tcp if !sips => format!("_sip._tcp.{domain}"),
        Transport::Tcp | Transport::Tls => format!("_sips._tcp.{domain}"),
    }
}

/// `name.`: asked as is, never with search domains appended.
fn fqdn(name: &str) -> String {
    format!("{name}.")
}

/// A syntactically valid host name, checked as the host of a SIP URI.
fn is_domain(name: &str) -> bool {
    let uri = format!("sip:{name}");
    !name.is_empty()
        && Uri::parse(uri.as_bytes()).is_some_and(|u| u.host() == name && u.host_kind() == HostKind::Domain)
}

/// The `nameserver` lines of a resolv.conf (port 53). Link-local IPv6
/// addresses with a zone (`fe80::1%eth0`) are skipped.
fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
