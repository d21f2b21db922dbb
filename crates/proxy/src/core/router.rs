//! Where requests go. The core asks a [`Router`] for the targets of an
//! out-of-dialog request whose route set does not already decide it; the
//! registrar, the location service and the ExUM application are routers,
//! and the core names none of them.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use sip_message::{Message, Scheme};

use crate::config::{Fork, Route, RouteMatch};
use crate::core::validate::Rejection;
use crate::transport::{Destination, Peer, TlsIdentity};

/// One request the router is asked about.
#[derive(Debug)]
pub struct RouteRequest<'a> {
    pub msg: &'a Message,
    pub source: &'a Peer,
    pub tls: Option<&'a TlsIdentity>,
}

/// Where one branch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// A SIP URI resolved per RFC 3263 (numeric hosts need no DNS).
    Uri(String),
    /// An exact destination, e.g. the connection a contact registered over
    /// (RFC 5626).
    Destination(Destination),
    /// An SRV service name resolved to its targets (e.g.
    /// `_sipfederationtls._tcp.<domain>` for a hosting provider); every
    /// target's certificate must name `server_name`.
    Service { name: String, transport: crate::transport::Transport, server_name: String },
}

/// One branch of a fork. The default keeps the Request-URI and sends to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// The Request-URI of this branch; `None` keeps the request's.
    pub request_uri: Option<String>,
    /// Where to send it; `None` sends to the Request-URI (after rewrite).
    pub next_hop: Option<NextHop>,
    /// Route values pushed on top of the request's route set, first on top
    /// (a registered Path, RFC 3327).
    pub route: Vec<String>,
    /// The request this branch is built from, when it is not the caller's
    /// (e.g. the INVITE to a UM server with its Diversion and
    /// History-Info). The core adds its Via, Max-Forwards and Record-Route.
    pub request: Option<Bytes>,
    /// Voice-mail escape: a 2xx within this long of the branch's INVITE is
    /// taken for a voice-mail system answering (a mobile's mailbox): that
    /// leg is ended by the proxy and the other branches ring on.
    pub escape: Option<Duration>,
}

impl Target {
    /// Send to `uri` as the Request-URI and the next hop.
    pub fn to_uri(uri: impl Into<String>) -> Target {
        Target { request_uri: Some(uri.into()), ..Target::default() }
    }
    /// Keep the Request-URI and send through `next_hop`.
    pub fn via(next_hop: impl Into<String>) -> Target {
        Target { next_hop: Some(NextHop::Uri(next_hop.into())), ..Target::default() }
    }
}

/// How the branches of a request are tried (RFC 3261 §16.6, forking by q).
#[derive(Clone, Default)]
pub struct ForkPlan {
    /// Groups tried one after the other (serial forking by descending q);
    /// the targets of one group are tried at once (parallel, equal q).
    pub groups: Vec<Vec<Target>>,
    /// Ring no longer than this: then the pending branches are cancelled
    /// and the fork ends as "no answer" (the callee's ring time).
    pub ring_timeout: Option<Duration>,
    /// Give each branch this long to answer finally, else cancel it and
    /// count it as 408 (e.g. a per-UM-server attempt timer).
    pub attempt_timeout: Option<Duration>,
    /// Follow up to this many 3xx redirects (first Contact) instead of
    /// treating them as final answers (e.g. a UM call router's redirect).
    pub follow_redirects: u8,
    /// Asked when the fork ends without a 2xx and the caller did not
    /// cancel: it may divert the call to new targets.
    pub fallback: Option<Arc<dyn Fallback>>,
    /// A header set on every branch of this request, a fallback's divert
    /// included (a later plan without one keeps it).
    pub rewrite: Option<Arc<HeaderRewrite>>,
}

/// A header the proxy owns on the requests it forwards: every value the
/// request carries is removed, so that no caller can forge it, and `value`
/// (when given) is written instead. E.g. a hosting provider's verification
/// marker, set from the provider's trust level and removed from every
/// other request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRewrite {
    pub name: String,
    pub value: Option<String>,
}

impl std::fmt::Debug for ForkPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkPlan")
            .field("groups", &self.groups)
            .field("ring_timeout", &self.ring_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("follow_redirects", &self.follow_redirects)
            .field("fallback", &self.fallback.is_some())
            .field("rewrite", &self.rewrite)
            .finish()
    }
}

impl ForkPlan {
    pub fn single(t: Target) -> ForkPlan {
        ForkPlan { groups: vec![vec![t]], ..ForkPlan::default() }
    }
}

/// How a fork ended without a 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkOutcome {
    /// Time since the request arrived.
    pub elapsed: Duration,
    /// How many times the fallback was asked before for this request (0 the
    /// first time).
    pub stage: u8,
    /// The best final response's code (§16.7), if any branch answered or
    /// failed.
    pub best: Option<u16>,
    /// The ring timeout expired (no answer).
    pub no_answer: bool,
    /// Every branch's final code (synthetic ones included: 408 timeout,
    /// 503 transport failure or unresolvable next hop), in branch order.
    pub codes: Vec<u16>,
}

/// What a fallback wants done.
pub enum FallbackAction {
    /// Send the best response upstream as usual.
    Respond,
    /// Answer with this status instead.
    Reject(Rejection),
    /// Go on with new targets. `request`, when given, replaces the request
    /// the new branches are built from (e.g. with Diversion and
    /// History-Info); the caller's transaction keeps its own.
    Divert { plan: ForkPlan, request: Option<Bytes> },
}

/// A router's hook into the end of a fork (voice mail on no answer, busy …).
pub trait Fallback: Send + Sync + 'static {
    fn on_failure(&self, original: &Message, outcome: &ForkOutcome) -> FallbackAction;
}

/// A router's answer.
#[derive(Debug)]
pub enum RouteDecision {
    Forward(ForkPlan),
    /// Answer with a status (e.g. 404, 403) built by the core.
    Reject(Rejection),
    /// Answer with a complete response the router built (e.g. the
    /// registrar's 200 listing the bindings).
    Respond {
        status: u16,
        bytes: Bytes,
    },
}

/// A future that resolves to a decision.
pub type PendingDecision = Pin<Box<dyn Future<Output = RouteDecision> + Send>>;

/// A router answers at once when it can (static routes, in-memory
/// location) and with a future when it must wait (Redis, LDAP); the core
/// then goes on with other requests.
pub enum Routing {
    Ready(RouteDecision),
    Pending(PendingDecision),
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Routing::Ready(d) => f.debug_tuple("Ready").field(d).finish(),
            Routing::Pending(_) => f.write_str("Pending"),
        }
    }
}

pub trait Router: Send + Sync + 'static {
    fn route(&self, req: &RouteRequest<'_>) -> Routing;
}

/// Routing by configuration: the proxy's domains, trusted peers and the
/// `[[route]]` table (first match wins). Requests for a served domain that no
/// route matches get 404; requests for foreign domains are relayed by RFC
/// 3263 only for trusted peers, anyone else gets 403 (not an open relay).
#[derive(Debug, Clone)]
pub struct StaticRouter {
    /// Shared by clones: [`StaticRouter::replace`] on one (a reload) is
    /// seen by all. Each decision takes one snapshot, so a reload never
    /// mixes old and new tables within a request.
    tables: Arc<RwLock<Arc<StaticTables>>>,
}

#[derive(Debug)]
struct StaticTables {
    domains: Vec<String>,
    trusted: Vec<IpNet>,
    routes: Vec<Route>,
}

impl StaticRouter {
    pub fn new(domains: Vec<String>, trusted: Vec<IpNet>, routes: Vec<Route>) -> StaticRouter {
        StaticRouter { tables: Arc::new(RwLock::new(Arc::new(StaticTables::new(domains, trusted, routes)))) }
    }

    /// Swap in new domains, trusted peers and routes (a configuration
    /// reload); requests being routed keep the tables they started with.
    pub fn replace(&self, domains: Vec<String>, trusted: Vec<IpNet>, routes: Vec<Route>) {
        let new = Arc::new(StaticTables::new(domains, trusted, routes));
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = new;
    }

    fn snapshot(&self) -> Arc<StaticTables> {
        self.tables.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_local_domain(&self, host: &str) -> bool {
        self.snapshot().is_local_domain(host)
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.snapshot().trusted.iter().any(|n| n.contains(&ip))
    }

    /// The decision as a plain function, for a source that is trusted or
    /// not.
    pub fn decide(&self, req: &RouteRequest<'_>) -> RouteDecision {
        let tables = self.snapshot();
        let ip = req.source.remote.ip();
        tables.decide_for(req, tables.trusted.iter().any(|n| n.contains(&ip)))
    }

    /// The decision when whether the source may relay is known (a trusted
    /// peer, or a local user who authenticated). Not an open relay: a
    /// request for a foreign domain or a telephone number from anyone else
    /// gets 403 before any route is looked at; requests for the served
    /// domains need no such right.
    pub fn decide_for(&self, req: &RouteRequest<'_>, may_relay: bool) -> RouteDecision {
        self.snapshot().decide_for(req, may_relay)
    }
}

impl StaticTables {
    fn new(domains: Vec<String>, trusted: Vec<IpNet>, routes: Vec<Route>) -> StaticTables {
        let domains = domains.into_iter().map(|d| d.to_ascii_lowercase()).collect();
        StaticTables { domains, trusted, routes }
    }

    fn is_local_domain(&self, host: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(host))
    }

    fn decide_for(&self, req: &RouteRequest<'_>, may_relay: bool) -> RouteDecision {
        let Some(ruri) = req.msg.request_uri() else {
            return RouteDecision::Reject(Rejection::new(416, "Unsupported URI Scheme"));
        };
        let host = ruri.host();
        let user = ruri.user().unwrap_or_default();
        let is_local_target = !matches!(ruri.scheme, Scheme::Tel) && self.is_local_domain(host);
        if !is_local_target && !may_relay {
            return RouteDecision::Reject(Rejection::new(403, "Forbidden"));
        }
        for r in self.routes.iter() {
            let hit = match &r.matches {
                RouteMatch::Any => true,
                RouteMatch::Domain(d) => d.eq_ignore_ascii_case(host),
                RouteMatch::UserPrefix(p) => user.starts_with(p.as_str()),
            };
            if hit {
                let targets = r.next_hop.iter().map(|h| Target::via(h.clone()));
                let groups = match r.fork {
                    Fork::Parallel => vec![targets.collect()],
                    Fork::Serial => targets.map(|t| vec![t]).collect(),
                };
                return RouteDecision::Forward(ForkPlan { groups, ..ForkPlan::default() });
            }
        }
        if matches!(ruri.scheme, Scheme::Tel) || self.is_local_domain(host) {
            return RouteDecision::Reject(Rejection::new(404, "Not Found"));
        }
        // A foreign domain, for a source allowed to relay: RFC 3263.
        RouteDecision::Forward(ForkPlan::single(Target::default()))
    }
}

impl Router for StaticRouter {
    fn route(&self, req: &RouteRequest<'_>) -> Routing {
        Routing::Ready(self.decide(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    #[test]
    fn replaced_tables_are_seen_by_every_clone() {
        let r = StaticRouter::new(vec!["example.test".into()], vec![], vec![route(RouteMatch::Any, "sip:10.9.0.1")]);
        let shared = r.clone();
        r.replace(vec!["example.test".into()], vec![], vec![route(RouteMatch::Any, "sip:10.9.0.2")]);
        match decide(&shared, "sip:bob@example.test", "192.0.2.1") {
            RouteDecision::Forward(p) => {
                assert_eq!(p.groups[0][0].next_hop, Some(NextHop::Uri("sip:10.9.0.2".into())))
            }
            other => panic!("expected forward, got {other:?}"),
        }
    }

    fn req(ruri: &str) -> Message {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@example.test>;tag=1\r\n\
             To: <sip:b@example.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse_slice(text.as_bytes()).expect("test message parses")
    }

    fn peer(ip: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            remote: format!("{ip}:5060").parse().expect("addr"),
            local: "127.0.0.1:5060".parse().expect("addr"),
            flow: None,
        }
    }

    fn route(matches: RouteMatch, hop: &str) -> Route {
        Route { matches, next_hop: vec![hop.into()], fork: Fork::Parallel }
    }

    #[test]
    fn a_route_with_several_next_hops_forks() {
        let hops = vec!["sip:10.9.0.1".to_string(), "sip:10.9.0.2".to_string()];
        let par = router(vec![Route { matches: RouteMatch::Any, next_hop: hops.clone(), fork: Fork::Parallel }]);
        match decide(&par, "sip:bob@example.test", "192.0.2.1") {
            RouteDecision::Forward(p) => assert_eq!((p.groups.len(), p.groups[0].len()), (1, 2)),
            other => panic!("expected forward, got {other:?}"),
        }
        let ser = router(vec![Route { matches: RouteMatch::Any, next_hop: hops, fork: Fork::Serial }]);
        match decide(&ser, "sip:bob@example.test", "192.0.2.1") {
            RouteDecision::Forward(p) => assert_eq!((p.groups.len(), p.groups[1].len()), (2, 1)),
            other => panic!("expected forward, got {other:?}"),
        }
    }

    fn router(routes: Vec<Route>) -> StaticRouter {
        StaticRouter::new(vec!["Example.test".into()], vec!["10.1.0.0/16".parse().expect("net")], routes)
    }

    fn decide(r: &StaticRouter, ruri: &str, src: &str) -> RouteDecision {
        let m = req(ruri);
        let p = peer(src);
        r.decide(&RouteRequest { msg: &m, source: &p, tls: None })
    }

    #[test]
    fn first_matching_route_wins() {
        let r = router(vec![
            route(RouteMatch::UserPrefix("+4930".into()), "sip:10.9.0.1"),
            route(RouteMatch::Domain("example.test".into()), "sip:10.9.0.2"),
            route(RouteMatch::Any, "sip:10.9.0.3"),
        ]);
        let hop = |d: RouteDecision| match d {
            RouteDecision::Forward(p) => p.groups[0][0].next_hop.clone(),
            other => panic!("expected forward, got {other:?}"),
        };
        assert_eq!(
            hop(decide(&r, "sip:+493012345@example.test", "192.0.2.1")),
            Some(NextHop::Uri("sip:10.9.0.1".into()))
        );
        assert_eq!(hop(decide(&r, "sip:bob@example.test", "192.0.2.1")), Some(NextHop::Uri("sip:10.9.0.2".into())));
        assert_eq!(hop(decide(&r, "sip:bob@elsewhere.test", "10.1.0.9")), Some(NextHop::Uri("sip:10.9.0.3".into())));
    }

    #[test]
    fn a_catch_all_route_does_not_open_the_relay() {
        let r = router(vec![route(RouteMatch::Any, "sip:10.9.0.3")]);
        assert!(matches!(decide(&r, "sip:bob@foreign.test", "192.0.2.1"), RouteDecision::Reject(x) if x.code == 403));
        assert!(matches!(decide(&r, "tel:+4930123", "192.0.2.1"), RouteDecision::Reject(x) if x.code == 403));
        assert!(matches!(decide(&r, "sip:bob@foreign.test", "10.1.2.3"), RouteDecision::Forward(_)), "trusted");
        // Calls for the served domain from anyone still take the route.
        assert!(matches!(decide(&r, "sip:bob@example.test", "192.0.2.1"), RouteDecision::Forward(_)));
        let m = req("sip:bob@foreign.test");
        let p = peer("192.0.2.1");
        let authenticated = r.decide_for(&RouteRequest { msg: &m, source: &p, tls: None }, true);
        assert!(matches!(authenticated, RouteDecision::Forward(_)), "an authenticated local user may relay");
    }

    #[test]
    fn unrouted_local_domain_is_404() {
        let r = router(vec![]);
        assert!(matches!(decide(&r, "sip:bob@EXAMPLE.test", "192.0.2.1"), RouteDecision::Reject(x) if x.code == 404));
    }

    #[test]
    fn foreign_domain_is_relayed_only_for_trusted_peers() {
        let r = router(vec![]);
        assert!(matches!(decide(&r, "sip:bob@foreign.test", "192.0.2.1"), RouteDecision::Reject(x) if x.code == 403));
        assert!(matches!(decide(&r, "sip:bob@foreign.test", "10.1.2.3"), RouteDecision::Forward(_)));
    }
}
