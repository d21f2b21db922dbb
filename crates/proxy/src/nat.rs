//! NAT traversal for user agents that do not speak SIP Outbound (RFC 5626),
//! in the spirit of the `nathelper` functions Kamailio and OpenSIPS
//! operators rely on: detection, Contact marking for dialogs, and the
//! routing of in-dialog requests by that mark. Plain functions, no I/O; the
//! registrar, the core and the keep-alive driver call them.
//!
//! - Detection ([`is_behind_nat`]): a request straight from a UA (one Via)
//!   whose top Via or Contact names another IP address than the packet's
//!   source, or (over UDP) whose Via names another port. A TCP/TLS
//!   connection's source port is ephemeral, and a Contact on another port
//!   of the sender's own address is a UA listening elsewhere: neither is a
//!   sign of NAT.
//! - Marking ([`aliased_contact`]): the Contact of a NAT'd UA gains
//!   `;alias=<ip>~<port>~<transport>`, the address its packets really come
//!   from, so that the other party's in-dialog requests (whose
//!   Request-URI is that Contact) can be sent there by [`take_alias`].
//!   Nothing is marked when no NAT is detected.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use sip_message::{HeaderName, HostKind, Limits, Message, NameAddr, Uri, Via};

use crate::transport::{Destination, Peer, Transport};

/// `[nat] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatMode {
    /// NAT is assumed when the top Via or the Contact of a request straight
    /// from a UA names another address than the packet's source.
    #[default]
    Auto,
    /// Every UA talking to the proxy directly is treated as behind NAT.
    Always,
    /// No NAT handling (RFC 3581 `received`/`rport` on Vias still applies).
    Off,
}

impl NatMode {
    pub fn from_name(name: &str) -> Option<NatMode> {
        match name {
            "auto" => Some(NatMode::Auto),
            "always" => Some(NatMode::Always),
            "off" => Some(NatMode::Off),
            _ => None,
        }
    }
}

/// The URI parameter that carries a NAT'd UA's public address.
pub const ALIAS_PARAM: &str = "alias";

fn ip_of(kind: HostKind) -> Option<IpAddr> {
    match kind {
        HostKind::Ipv4(a) => Some(IpAddr::V4(a)),
        HostKind::Ipv6(a) => Some(IpAddr::V6(a)),
        HostKind::Domain => None,
    }
}

/// Whether `host[:port]` (a Via sent-by or a Contact's host and port) is
/// not where the packets come from. A domain name cannot be compared and
/// counts as no sign of NAT.
pub fn names_other_address(kind: HostKind, port: Option<u16>, src: SocketAddr, transport: Transport) -> bool {
    let Some(ip) = ip_of(kind) else { return false };
    if ip.to_canonical() != src.ip().to_canonical() {
        return true;
    }
    // A connection's source port is ephemeral: only UDP compares ports.
    transport == Transport::Udp && port.unwrap_or(transport.default_port()) != src.port()
}

/// The top Via of a request names another address than its source.
pub fn via_hides_source(via: &Via<'_>, peer: &Peer) -> bool {
    names_other_address(via.host_kind(), via.port(), peer.remote, peer.transport)
}

/// A Contact URI names another IP address than the request's source.
/// Only the address: a Contact on another port of the sender's own
/// address is a UA (or a registration on behalf of one) that listens
/// elsewhere, not a NAT; a NAT that keeps the address but maps the port
/// shows in the Via (its port is compared, over UDP).
pub fn uri_hides_source(uri: &Uri<'_>, peer: &Peer) -> bool {
    contact_hides(uri, peer.remote)
}

/// [`uri_hides_source`] against an address.
pub fn contact_hides(uri: &Uri<'_>, src: SocketAddr) -> bool {
    ip_of(uri.host_kind()).is_some_and(|ip| ip.to_canonical() != src.ip().to_canonical())
}

/// Whether the Contact of a response that came back from a registered
/// flow (`dest`: where the request went) hides the UA's address; every
/// such response counts in `always` mode.
pub fn response_hides_source(mode: NatMode, msg: &Message, dest: &Destination) -> bool {
    match mode {
        NatMode::Off => false,
        NatMode::Always => true,
        NatMode::Auto => msg.contacts().next().is_some_and(|c| contact_hides(&c.uri, dest.addr)),
    }
}

/// Whether NAT handling applies to `msg`, a request from `peer`: it came
/// straight from the UA (exactly one Via: a request relayed by another
/// proxy has that proxy as its source, and NAT is that proxy's business)
/// and, in `auto` mode, its top Via or first Contact shows a NAT.
pub fn is_behind_nat(mode: NatMode, msg: &Message, peer: &Peer) -> bool {
    if mode == NatMode::Off {
        return false;
    }
    let mut vias = msg.vias();
    if vias.next().is_none() || vias.next().is_some() {
        return false;
    }
    match mode {
        NatMode::Always => true,
        NatMode::Off => false,
        NatMode::Auto => {
            via_hides_source(&msg.top_via(), peer)
                || msg.contacts().next().is_some_and(|c| uri_hides_source(&c.uri, peer))
        }
    }
}

/// The `alias` value of a public address: `<ip>~<port>~<transport>`. The
/// address as the socket saw it (an IPv4 peer of a dual-stack listener
/// stays IPv4-mapped), so that requests to it leave from that listener.
pub fn alias_value(addr: SocketAddr, transport: Transport) -> String {
    format!("{}~{}~{}", addr.ip(), addr.port(), transport.param_name())
}

/// Parse an `alias` value back; `None` for anything malformed.
pub fn parse_alias(v: &str) -> Option<Destination> {
    let mut parts = v.splitn(3, '~');
    let ip: IpAddr = parts.next()?.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    let port: u16 = parts.next()?.parse().ok().filter(|p| *p != 0)?;
    let transport = Transport::from_name(parts.next()?)?;
    Some(Destination { transport, addr: SocketAddr::new(ip, port), flow: None, server_name: None })
}

/// A Contact value with `alias` added to its URI (in angle brackets, so
/// that the parameter belongs to the URI and the Contact's own parameters
/// stay its own). `None` when the URI already carries an alias.
pub fn aliased_contact(c: &NameAddr<'_>, addr: SocketAddr, transport: Transport) -> Option<String> {
    if c.uri.param(ALIAS_PARAM).is_some() {
        return None;
    }
    let uri = c.uri.as_str();
    // URI headers (`?…`) come after the URI parameters.
    let (base, headers) = match uri.find('?') {
        Some(i) => uri.split_at(i),
        None => (uri, ""),
    };
    let mut out = String::with_capacity(c.as_str().len() + 48);
    if let Some(d) = c.display_name() {
        out.push_str(d);
        out.push(' ');
    }
    // Writing to a String cannot fail.
    let _ = write!(out, "<{base};{ALIAS_PARAM}={}{headers}>", alias_value(addr, transport));
    for (name, value) in c.params().iter() {
        out.push(';');
        out.push_str(std::str::from_utf8(name).unwrap_or_default());
        if let Some(v) = value {
            out.push('=');
            out.push_str(std::str::from_utf8(v).unwrap_or_default());
        }
    }
    Some(out)
}

/// `ed` (an edit of `msg`) with the message's single Contact marked with
/// `addr`, and whether it was marked: nothing is done without a Contact,
/// with several, with `*`, or when it is already marked.
pub fn mark_contact<'m>(
    ed: sip_message::edit::Editor<'m>,
    msg: &Message,
    addr: SocketAddr,
    transport: Transport,
) -> (sip_message::edit::Editor<'m>, bool) {
    if msg.is_contact_star() {
        return (ed, false);
    }
    let mut contacts = msg.contacts();
    let (Some(c), None) = (contacts.next(), contacts.next()) else { return (ed, false) };
    match aliased_contact(&c, addr, transport) {
        Some(v) => (ed.remove_header(HeaderName::Contact).add_header("Contact", &v), true),
        None => (ed, false),
    }
}

/// A Request-URI carrying an alias: where to send the request, and the
/// Request-URI without the alias (the UA's own Contact, as it wrote it).
pub fn take_alias(uri: &str) -> Option<(String, Destination)> {
    let parsed = Uri::parse(uri.as_bytes())?;
    let dest = parse_alias(parsed.param(ALIAS_PARAM).flatten()?)?;
    // The parameter as written: `;alias=value`, found case-insensitively in
    // the part before any URI headers.
    let end = uri.find('?').unwrap_or(uri.len());
    let lower = uri.get(..end)?.to_ascii_lowercase();
    let at = lower.find(";alias=")?;
    let rest = uri.get(at + 1..end)?;
    let len = 1 + rest.find(';').unwrap_or(rest.len());
    let mut stripped = String::with_capacity(uri.len());
    stripped.push_str(uri.get(..at)?);
    stripped.push_str(uri.get(at + len..)?);
    Some((stripped, dest))
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: the top Via of a request gains
/// `received` when its host is not the source address, and always when
/// the client asked for `rport` (RFC 3581 §4: "even if it is identical to
/// the value of the sent-by component"); `rport` gets the source port.
/// `None` when nothing changes (a Via already fixed, or one without rport
/// whose host is the source), which costs no allocation.
pub fn fix_top_via(via: &Via<'_>, peer: &Peer) -> Option<String> {
    // A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6.
    let src_ip = peer.remote.ip().to_canonical();
    let src_port = peer.remote.port();
    let host_ip = match via.host_kind() {
        HostKind::Ipv4(a) => Some(IpAddr::V4(a)),
        HostKind::Ipv6(a) => Some(IpAddr::V6(a)),
        HostKind::Domain => None,
    };
    let rport = via.rport();
    let has_received = via
        .received()
        .and_then(|r| r.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok())
        .is_some_and(|r| r.to_canonical() == src_ip);
    let needs_received = (host_ip.map(|h| h.to_canonical()) != Some(src_ip) || rport.is_some()) && !has_received;
    let needs_rport = matches!(rport, Some(p) if p != Some(src_port));
    if !needs_received && !needs_rport {
        return None;
    }
    let mut out = String::with_capacity(via.as_str().len() + 48);
    // Writing to a String cannot fail.
    let _ = write!(out, "SIP/2.0/{} {}", via.transport(), via.host());
    if let Some(p) = via.port() {
        let _ = write!(out, ":{p}");
    }
    for (name, value) in via.params().iter() {
        let name = std::str::from_utf8(name).unwrap_or_default();
        if name.eq_ignore_ascii_case("received") && needs_received {
            continue;
        }
        out.push(';');
        out.push_str(name);
        if name.eq_ignore_ascii_case("rport") && needs_rport {
            let _ = write!(out, "={src_port}");
        } else if let Some(v) = value {
            out.push('=');
            out.push_str(std::str::from_utf8(v).unwrap_or_default());
        }
    }
    if needs_received {
        // RFC 5118 §4.5: an IPv6 `received` is written without brackets.
        let _ = write!(out, ";received={src_ip}");
    }
    Some(out)
}

/// A response the proxy built from a request of `peer` (its Vias copied
/// from the request), with the top Via fixed as [`fix_top_via`] says.
/// Unchanged when there is nothing to fix or it does not reparse.
pub fn with_fixed_via(bytes: Bytes, peer: &Peer, limits: &Limits) -> Bytes {
    let Ok(msg) = Message::parse(bytes.clone(), limits) else { return bytes };
    if msg.vias().next().is_none() {
        return bytes;
    }
    match fix_top_via(&msg.top_via(), peer) {
        Some(fixed) => msg.edit().push_via(&fixed).remove_top_via().finish(),
        None => bytes,
    }
}

/// A response the proxy built from `req` (its Vias copied), with the Via
/// RFC 3581 asks for ([`fix_top_via`]); unchanged when there is nothing to
/// fix. The request's top via-parm is spliced out of the bytes without
/// reparsing (the common case, a few hundred bytes searched); a response
/// where it is not found as written is reparsed and edited instead.
pub fn fix_local_response(bytes: Bytes, req: &Message, peer: &Peer, limits: &Limits) -> Bytes {
    match fix_top_via(&req.top_via(), peer) {
        None => bytes,
        Some(fixed) => match splice_top_via(&bytes, req, &fixed) {
            Some(spliced) => spliced,
            None => replace_top_via(bytes, &fixed, limits),
        },
    }
}

/// `resp` with the first copy of `req`'s top via-parm replaced by `fixed`,
/// provided that copy opens a Via header line's value. `None` otherwise.
pub fn splice_top_via(resp: &Bytes, req: &Message, fixed: &str) -> Option<Bytes> {
    let needle = req.top_via().as_bytes();
    if needle.is_empty() {
        return None;
    }
    let at = memchr::memmem::find(resp, needle)?;
    let line_start = memchr::memmem::rfind(resp.get(..at)?, b"\r\n")? + 2;
    let (name, rest) = resp.get(line_start..at)?.split_at(resp.get(line_start..at)?.iter().position(|&c| c == b':')?);
    let name = name.trim_ascii();
    if !(name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v"))
        || !rest.get(1..)?.trim_ascii().is_empty()
    {
        return None;
    }
    let mut out = bytes::BytesMut::with_capacity(resp.len() + fixed.len());
    out.extend_from_slice(resp.get(..at)?);
    out.extend_from_slice(fixed.as_bytes());
    out.extend_from_slice(resp.get(at + needle.len()..)?);
    Some(out.freeze())
}

/// A response with its top Via replaced by `fixed` (from [`fix_top_via`]
/// of its request). Unchanged when it does not reparse.
pub fn replace_top_via(bytes: Bytes, fixed: &str, limits: &Limits) -> Bytes {
    match Message::parse(bytes.clone(), limits) {
        Ok(msg) if msg.vias().next().is_some() => msg.edit().push_via(fixed).remove_top_via().finish(),
        _ => bytes,
    }
}

pub mod keepalive;

#[cfg(test)]
mod tests;
