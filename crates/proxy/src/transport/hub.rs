//! [`TransportHub`]: binds the listeners, runs their tasks, and sends what
//! the core hands down.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use prometheus::Registry;
use rustls::ServerConfig;
use sip_message::build::{error_response, reason_phrase, Response};
use sip_message::{Limits, Message, Method};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::conn_table::ConnTable;
use super::error::TransportError;
use super::limits::TransportLimits;
use super::metrics::{parse_error_kind, TransportMetrics};
use super::tls::{certified_key, server_config, ClientConfigs, OutboundTls, SwappableCert, TlsServerSpec};
use super::types::{Dispatch, FlowId, Inbound, ListenerInfo, Outbound, Peer, SendFailure, TlsIdentity, Transport};
use super::{tcp, udp};

/// One listener to bind.
#[derive(Debug)]
pub struct ListenerSpec {
    pub transport: Transport,
    pub bind: SocketAddr,
    /// Host (and optional `:port`) to advertise in Via and Record-Route
    /// instead of the bound address (NAT, wildcard binds).
    pub advertise: Option<String>,
    /// Required for TLS listeners, refused on others.
    pub tls: Option<TlsServerSpec>,
}

/// State shared by the hub and its tasks.
pub(crate) struct Shared {
    pub dispatch: Arc<dyn Dispatch>,
    pub limits: TransportLimits,
    pub metrics: TransportMetrics,
    pub conns: Arc<ConnTable>,
    pub client_tls: RwLock<Arc<ClientConfigs>>,
    /// What the listeners bound, for choosing outbound source addresses.
    pub listeners: Vec<ListenerInfo>,
    /// The runtime the hub started on: [`TransportHub::send`] may be called
    /// from threads outside it (core workers) and still spawn connects.
    pub runtime: tokio::runtime::Handle,
    /// Cancelled by [`TransportHub::shutdown`]: accept loops stop.
    pub stop_accepting: CancellationToken,
    /// Cancelled by [`TransportHub::close`]: every task stops.
    pub closed: CancellationToken,
}

/// The 503 answer to a request the core had no room for.
const RETRY_AFTER_S: &str = "5";

impl Shared {
    /// Parse one message and hand it to the core. Returns what to answer on
    /// the same path, if anything: an error response for a request that
    /// did not parse, or 503 when the core is overloaded.
    pub fn receive(&self, raw: Bytes, peer: &Peer, tls: Option<&Arc<TlsIdentity>>, limits: &Limits) -> Option<Bytes> {
        let t = peer.transport.param_name();
        let msg = match Message::parse(raw.clone(), limits) {
            Ok(msg) => msg,
            Err(e) => {
                self.metrics.count_parse_error(peer.transport, parse_error_kind(&e.kind));
                debug!(remote = %peer.remote, error = %e, "unparseable message");
                // RFC 3261 §17: an ACK is never answered.
                if raw.starts_with(b"ACK ") {
                    return None;
                }
                let code = e.status()?;
                return error_response(&raw, code, reason_phrase(code));
            }
        };
        self.metrics.received(peer.transport).inc();
        let answers_503 = msg.is_request() && msg.method() != Some(Method::Ack);
        match self.dispatch.deliver(Inbound { msg, peer: peer.clone(), tls: tls.cloned() }) {
            Ok(()) => None,
            Err(_) if answers_503 => {
                self.metrics.overload.with_label_values(&[t, "rejected_503"]).inc();
                // Parsed a second time only on this overload path, to keep
                // the common path free of a message clone.
                let msg = Message::parse(raw, limits).ok()?;
                let bytes =
                    Response::new(&msg, 503, reason_phrase(503), None).header("Retry-After", RETRY_AFTER_S).finish();
                // RFC 3581 §4, as on every response.
                Some(crate::nat::with_fixed_via(bytes, peer, limits))
            }
            Err(_) => {
                self.metrics.overload.with_label_values(&[t, "dropped"]).inc();
                None
            }
        }
    }

    pub fn fail(&self, out: &Outbound, failure: SendFailure) {
        self.metrics.send_failures.with_label_values(&[out.dest.transport.param_name(), failure.as_str()]).inc();
        debug!(dest = %out.dest.addr, transport = %out.dest.transport, reason = failure.as_str(), "send failed");
        if let Some(token) = out.token {
            self.dispatch.send_failed(token, &out.dest, failure);
        }
    }
}

/// A TLS listener's configuration, replaceable by [`TransportHub::reload_tls`].
pub(crate) struct TlsListener {
    pub cert: Arc<SwappableCert>,
    pub config: RwLock<Arc<ServerConfig>>,
}

impl TlsListener {
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The transports: UDP sockets, TCP and TLS listeners and connections.
///
/// Getters: [`listeners`](Self::listeners), [`listener_for`](Self::listener_for),
/// [`is_local`](Self::is_local). Commands from the core: [`send`](Self::send),
/// [`alias`](Self::alias), [`reload_tls`](Self::reload_tls),
/// [`set_outbound_tls`](Self::set_outbound_tls), [`shutdown`](Self::shutdown),
/// [`close`](Self::close). Messages in go to the [`Dispatch`].
pub struct TransportHub {
    shared: Arc<Shared>,
    listeners: Vec<ListenerInfo>,
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    tls: Vec<(SocketAddr, Arc<TlsListener>)>,
}

impl TransportHub {
    /// Messages received so far, over every transport.
    pub fn messages_received(&self) -> u64 {
        self.shared.metrics.received_total()
    }
}

impl std::fmt::Debug for TransportHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportHub").field("listeners", &self.listeners).finish_non_exhaustive()
    }
}

/// Split an `advertise` value into host and optional port: `host`,
/// `host:port`, `[v6]` or `[v6]:port`.
fn split_hostport(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = s.get(..end + 2).unwrap_or(s);
            let port = rest.get(end + 1..).and_then(|p| p.strip_prefix(':')).and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (s, None),
    }
}

fn ip_host(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

fn info_for(transport: Transport, local: SocketAddr, advertise: Option<&str>) -> ListenerInfo {
    let (host, port) = match advertise {
        Some(a) => {
            let (h, p) = split_hostport(a);
            (h.to_owned(), p.unwrap_or(local.port()))
        }
        None => (ip_host(&local), local.port()),
    };
    ListenerInfo { transport, local, host: host.into(), port }
}

pub(crate) fn listener_for<'a>(
    listeners: &'a [ListenerInfo],
    transport: Transport,
    remote: &SocketAddr,
) -> Option<&'a ListenerInfo> {
    let same_family = |l: &&ListenerInfo| l.transport == transport && l.local.is_ipv4() == remote.is_ipv4();
    let loopback = remote.ip().is_loopback();
    listeners
        .iter()
        .filter(same_family)
        .find(|l| l.local.ip().is_loopback() == loopback)
        .or_else(|| listeners.iter().find(same_family))
}

impl TransportHub {
    /// Bind every listener and spawn its task. Nothing is spawned unless
    /// everything binds.
    pub async fn start(
        specs: Vec<ListenerSpec>,
        limits: TransportLimits,
        outbound_tls: OutboundTls,
        dispatch: Arc<dyn Dispatch>,
        registry: &Registry,
    ) -> Result<Arc<TransportHub>, TransportError> {
        let client_tls = ClientConfigs::build(outbound_tls)?;
        let mut listeners = Vec::new();
        let mut udp_sockets = Vec::new();
        let mut tcp_listeners = Vec::new();
        let mut tls_listeners = Vec::new();
        for spec in specs {
            let (transport, addr) = (spec.transport, spec.bind);
            let bind_err = |source| TransportError::Bind { transport, addr, source };
            let tls = match (transport, spec.tls) {
                (Transport::Tls, Some(tls)) => {
                    let what = format!("TLS listener {addr}");
                    let cert = Arc::new(SwappableCert::new(certified_key(tls.cert_chain, tls.key, &what)?));
                    let config = server_config(cert.clone(), tls.client_ca, &what)?;
                    Some(Arc::new(TlsListener { cert, config: RwLock::new(config) }))
                }
                (Transport::Tls, None) => {
                    return Err(TransportError::Listener {
                        transport,
                        addr,
                        problem: "TLS listener without certificate",
                    })
                }
                (_, Some(_)) => {
                    return Err(TransportError::Listener {
                        transport,
                        addr,
                        problem: "certificate on a non-TLS listener",
                    })
                }
                (_, None) => None,
            };
            let local = match transport {
                Transport::Udp => {
                    let socket = udp::bind(addr, limits.udp_recv_buffer).map_err(bind_err)?;
                    let local = socket.local_addr().map_err(bind_err)?;
                    udp_sockets.push((local, Arc::new(socket)));
                    local
                }
                Transport::Tcp | Transport::Tls => {
                    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
                    let local = listener.local_addr().map_err(bind_err)?;
                    if let Some(tls) = &tls {
                        tls_listeners.push((local, tls.clone()));
                    }
                    tcp_listeners.push((transport, listener, local, tls));
                    local
                }
            };
            listeners.push(info_for(transport, local, spec.advertise.as_deref()));
        }
        // Registered only once everything is bound, so that a failed start
        // can be retried with the same registry.
        let metrics = TransportMetrics::register(registry)?;
        for l in listeners.iter().filter(|l| l.transport == Transport::Tls) {
            for result in ["ok", "failed"] {
                metrics.tls_handshakes.with_label_values(&[&l.local.to_string(), result]);
            }
        }
        let shared = Arc::new(Shared {
            dispatch,
            conns: Arc::new(ConnTable::new(limits.max_connections, limits.max_connections_per_ip)),
            limits,
            metrics,
            client_tls: RwLock::new(Arc::new(client_tls)),
            listeners: listeners.clone(),
            runtime: tokio::runtime::Handle::current(),
            stop_accepting: CancellationToken::new(),
            closed: CancellationToken::new(),
        });
        for (local, socket) in &udp_sockets {
            tokio::spawn(udp::run(shared.clone(), socket.clone(), *local));
        }
        for (transport, listener, local, tls) in tcp_listeners {
            tokio::spawn(tcp::accept_loop(shared.clone(), transport, listener, local, tls));
        }
        for l in &listeners {
            info!(transport = %l.transport, local = %l.local, host = %l.host, port = l.port, "listening");
        }
        Ok(Arc::new(TransportHub { shared, listeners, udp: udp_sockets, tls: tls_listeners }))
    }

    // ---- getters ----

    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.listeners
    }

    /// The listener to send from toward `remote` (and to put in Via and
    /// Record-Route): same transport and address family, a loopback-bound
    /// one for a loopback remote, else a non-loopback one, else any.
    pub fn listener_for(&self, transport: Transport, remote: &SocketAddr) -> Option<&ListenerInfo> {
        listener_for(&self.listeners, transport, remote)
    }

    /// Whether `host[:port]` names this proxy (loop detection, Route
    /// pointing at us): the host is a listener's advertised host or bound
    /// IP, and the port is that listener's or, absent, the transport's
    /// default port (RFC 3261 §19.1.2).
    pub fn is_local(&self, host: &str, port: Option<u16>) -> bool {
        fn bare(h: &str) -> &str {
            h.trim_start_matches('[').trim_end_matches(']')
        }
        let want = bare(host);
        // Compared as addresses, so `::1` and `0:0::1` are the same host.
        // A domain name never parses as an address: skip the parser for one.
        let could_be_ip = want.bytes().next().is_some_and(|c| c.is_ascii_digit()) || want.contains(':');
        // Parsed only once a listener's port matches: the port is the cheap
        // test, and most hosts asked about (a UA's Via, a Request-URI
        // without a port) are on no port of ours.
        let mut want_ip = None;
        self.listeners.iter().any(|l| {
            let port_matches = match port {
                Some(p) => p == l.port || p == l.local.port(),
                None => l.port == l.transport.default_port(),
            };
            if !port_matches {
                return false;
            }
            let advertised = bare(&l.host);
            if advertised.eq_ignore_ascii_case(want) {
                return true;
            }
            let ip =
                *want_ip.get_or_insert_with(|| could_be_ip.then(|| want.parse::<std::net::IpAddr>().ok()).flatten());
            ip.is_some_and(|ip| (ip == l.local.ip() && !ip.is_unspecified()) || advertised.parse().ok() == Some(ip))
        })
    }

    /// TCP and TLS connections open now.
    pub fn connection_count(&self) -> usize {
        self.shared.conns.len()
    }

    /// Change `max_connections` and `max_connections_per_ip` for the
    /// connections accepted or opened from now on (a configuration reload).
    pub fn set_connection_limits(&self, max_total: usize, max_per_ip: usize) {
        self.shared.conns.set_limits(max_total, max_per_ip);
    }

    /// Up to `limit` TLS connections open now: the peer's address and the
    /// names its certificate proved (empty when it presented none).
    pub fn tls_peers(&self, limit: usize) -> Vec<(SocketAddr, Vec<String>)> {
        self.shared
            .conns
            .snapshot(usize::MAX)
            .into_iter()
            .filter(|c| c.transport == Transport::Tls)
            .take(limit)
            .map(|c| (c.remote, c.names.lock().unwrap_or_else(|p| p.into_inner()).names.clone()))
            .collect()
    }

    // ---- commands ----

    /// Send one message without waiting. Failures of sends that carry a
    /// token are reported through [`Dispatch::send_failed`]: later from a
    /// connection's task, or before `send` returns when the failure is
    /// known at once (no listener, queue full, no TLS settings). Messages
    /// to one connection are written in the order `send` was called.
    pub fn send(&self, out: Outbound) {
        match out.dest.transport {
            Transport::Udp => {
                let addr = out.dest.addr;
                let Some(socket) = self
                    .listener_for(Transport::Udp, &addr)
                    .and_then(|l| self.udp.iter().find(|(local, _)| *local == l.local))
                    .map(|(_, s)| s)
                else {
                    self.shared.fail(&out, SendFailure::NoRoute);
                    return;
                };
                if let Err(failure) = udp::send_to(&self.shared, socket, out.bytes.clone(), addr) {
                    self.shared.fail(&out, failure);
                }
            }
            Transport::Tcp | Transport::Tls => tcp::send(&self.shared, out),
        }
    }

    /// RFC 5923: the peer on `flow` asked (Via `alias`) that requests to
    /// `addr` reuse its connection. Returns whether the alias was taken
    /// (the flow is open and has room for another alias).
    pub fn alias(&self, flow: FlowId, addr: SocketAddr) -> bool {
        self.shared.conns.alias(flow, addr)
    }

    /// Replace the certificate (and client CA) of the TLS listener bound to
    /// `bind` (as in [`ListenerInfo::local`]). New handshakes use the new
    /// certificate; established connections keep their session.
    pub fn reload_tls(&self, bind: SocketAddr, spec: TlsServerSpec) -> Result<(), TransportError> {
        let (_, listener) =
            self.tls.iter().find(|(local, _)| *local == bind).ok_or(TransportError::NoTlsListener(bind))?;
        let what = format!("TLS listener {bind}");
        let key = certified_key(spec.cert_chain, spec.key, &what)?;
        let config = server_config(listener.cert.clone(), spec.client_ca, &what)?;
        listener.cert.swap(key);
        *listener.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        info!(%bind, "TLS certificate reloaded");
        Ok(())
    }

    /// Replace the outbound TLS settings; connections already open keep
    /// theirs.
    pub fn set_outbound_tls(&self, spec: OutboundTls) -> Result<(), TransportError> {
        let configs = Arc::new(ClientConfigs::build(spec)?);
        *self.shared.client_tls.write().unwrap_or_else(|p| p.into_inner()) = configs;
        Ok(())
    }

    /// Graceful shutdown, first step: stop accepting connections. UDP
    /// sockets and open connections keep working so that transactions can
    /// finish; [`close`](Self::close) ends them.
    pub fn shutdown(&self) {
        if !self.shared.stop_accepting.is_cancelled() {
            info!("transports: no longer accepting connections");
        }
        self.shared.stop_accepting.cancel();
    }

    /// Stop everything: listeners, UDP receive loops, every connection.
    pub fn close(&self) {
        self.shared.stop_accepting.cancel();
        self.shared.closed.cancel();
        if self.shared.conns.len() > 0 {
            warn!(open = self.shared.conns.len(), "transports closed with connections open");
        }
    }
}

impl Drop for TransportHub {
    fn drop(&mut self) {
        // The tasks hold `Shared`, not the hub: without this they would
        // outlive it.
        self.close();
    }
}
