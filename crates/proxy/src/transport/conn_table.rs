//! Open TCP and TLS connections: by flow, by remote address (RFC 5923
//! aliases included), and counted against the connection limits.
//!
//! DashMaps with the default SipHash hasher: remote addresses and aliases
//! are chosen by peers, and a weak hash would let them collide buckets.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::mpsc;

use super::types::{FlowId, Outbound, TlsIdentity, Transport};

/// Aliases (RFC 5923) one connection may register; more are ignored.
const MAX_ALIASES: usize = 4;

/// The send side of one connection.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub flow: FlowId,
    pub transport: Transport,
    pub remote: SocketAddr,
    /// Bounded queue to the connection's task, written in order.
    pub tx: mpsc::Sender<Outbound>,
    /// For TLS: the names the peer's certificate proved (outbound: known
    /// once the handshake is done; until then the server name we asked for).
    pub names: Mutex<Arc<TlsIdentity>>,
    aliases: Mutex<Vec<SocketAddr>>,
}

impl ConnHandle {
    /// Whether this connection may carry a message meant for a TLS server
    /// called `name`: its certificate proved that name.
    pub fn proves(&self, name: &str) -> bool {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Why a connection could not be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    MaxConnections,
    MaxPerIp,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::MaxPerIp => "max_per_ip",
        }
    }
}

#[derive(Debug)]
pub(crate) struct ConnTable {
    next_flow: AtomicU64,
    total: AtomicUsize,
    /// The limits; atomics so that a configuration reload can change them
    /// (connections already open above a lowered limit stay).
    max_total: AtomicUsize,
    max_per_ip: AtomicUsize,
    by_flow: DashMap<FlowId, Arc<ConnHandle>>,
    by_addr: DashMap<(Transport, SocketAddr), FlowId>,
    per_ip: DashMap<IpAddr, usize>,
}

/// A connection's place in the table; dropping it (however the
/// connection's task ends) removes the connection and frees its slot.
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<ConnTable>,
    pub handle: Arc<ConnHandle>,
    per_ip: Option<IpAddr>,
}

/// What the per-IP limit counts by: the IPv4 address, or the IPv6 /64 (one
/// host usually holds a whole /64, so counting /128s would limit nothing).
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s.iter_mut().skip(4).for_each(|seg| *seg = 0);
                IpAddr::V6(s.into())
            }
        },
    }
}

impl ConnTable {
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnTable {
        ConnTable {
            next_flow: AtomicU64::new(1),
            total: AtomicUsize::new(0),
            max_total: AtomicUsize::new(max_total),
            max_per_ip: AtomicUsize::new(max_per_ip),
            by_flow: DashMap::new(),
            by_addr: DashMap::new(),
            per_ip: DashMap::new(),
        }
    }

    /// New limits for connections admitted from now on.
    pub fn set_limits(&self, max_total: usize, max_per_ip: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_ip.store(max_per_ip, Ordering::Relaxed);
    }

    /// Admit a connection: count it, mint its flow and index it by remote
    /// address. `inbound` connections also count against the per-IP limit.
    pub fn admit(
        self: &Arc<Self>,
        transport: Transport,
        remote: SocketAddr,
        inbound: bool,
        queue: usize,
        names: Arc<TlsIdentity>,
    ) -> Result<(Slot, mpsc::Receiver<Outbound>), Refused> {
        let max_total = self.max_total.load(Ordering::Relaxed);
        if self.total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max_total).then_some(n + 1)).is_err() {
            return Err(Refused::MaxConnections);
        }
        let per_ip = if inbound {
            let ip = limit_key(remote.ip());
            let mut count = self.per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip.load(Ordering::Relaxed) {
                drop(count);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::MaxPerIp);
            }
            *count += 1;
            Some(ip)
        } else {
            None
        };
        let flow = FlowId(self.next_flow.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(queue.max(1));
        let handle = Arc::new(ConnHandle {
            flow,
            transport,
            remote,
            tx,
            names: Mutex::new(names),
            aliases: Mutex::new(Vec::new()),
        });
        self.by_flow.insert(flow, handle.clone());
        self.by_addr.insert((transport, remote), flow);
        Ok((Slot { table: self.clone(), handle, per_ip }, rx))
    }

    pub fn get(&self, flow: FlowId) -> Option<Arc<ConnHandle>> {
        self.by_flow.get(&flow).map(|h| h.clone())
    }

    /// The newest open connection to `addr` (or aliased to it).
    pub fn by_addr(&self, transport: Transport, addr: SocketAddr) -> Option<Arc<ConnHandle>> {
        let flow = *self.by_addr.get(&(transport, addr))?;
        let found = self.get(flow);
        if found.is_none() {
            // An alias added while its connection was closing: forget it.
            self.unindex(transport, addr, flow);
        }
        found
    }

    /// RFC 5923: requests to `addr` may reuse `flow`.
    pub fn alias(&self, flow: FlowId, addr: SocketAddr) -> bool {
        let Some(handle) = self.get(flow) else { return false };
        {
            let mut aliases = handle.aliases.lock().unwrap_or_else(|p| p.into_inner());
            if !aliases.contains(&addr) {
                if aliases.len() >= MAX_ALIASES {
                    return false;
                }
                aliases.push(addr);
            }
        }
        self.by_addr.insert((handle.transport, addr), flow);
        true
    }

    /// Up to `limit` open connections (for the admin API).
    pub fn snapshot(&self, limit: usize) -> Vec<Arc<ConnHandle>> {
        self.by_flow.iter().take(limit).map(|e| e.value().clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn unindex(&self, transport: Transport, addr: SocketAddr, flow: FlowId) {
        self.by_addr.remove_if(&(transport, addr), |_, f| *f == flow);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let t = &self.table;
        let h = &self.handle;
        t.by_flow.remove(&h.flow);
        t.unindex(h.transport, h.remote, h.flow);
        let aliases = std::mem::take(&mut *h.aliases.lock().unwrap_or_else(|p| p.into_inner()));
        for a in aliases {
            t.unindex(h.transport, a, h.flow);
        }
        if let Some(ip) = self.per_ip {
            if let Entry::Occupied(mut e) = t.per_ip.entry(ip) {
                *e.get_mut() = e.get().saturating_sub(1);
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        t.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(t: &Arc<ConnTable>, remote: &str) -> Result<Slot, Refused> {
        let remote: SocketAddr = remote.parse().expect("addr");
        t.admit(Transport::Tcp, remote, true, 4, Arc::new(TlsIdentity::default())).map(|(slot, _rx)| slot)
    }

    #[test]
    fn limits_changed_at_run_time_apply_to_the_next_connection() {
        let t = Arc::new(ConnTable::new(10, 1));
        let _a = admit(&t, "192.0.2.1:1000").expect("first");
        assert_eq!(admit(&t, "192.0.2.1:1001").err(), Some(Refused::MaxPerIp));
        t.set_limits(10, 2);
        let _b = admit(&t, "192.0.2.1:1001").expect("allowed after raising the per-IP limit");
        t.set_limits(2, 5);
        assert_eq!(admit(&t, "192.0.2.2:1000").err(), Some(Refused::MaxConnections));
        assert_eq!(t.len(), 2, "connections already open stay");
    }
}
