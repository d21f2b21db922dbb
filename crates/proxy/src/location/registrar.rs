//! The registrar (RFC 3261 §10.3) with Path (RFC 3327) and outbound
//! (RFC 5626 §6).
//!
//! [`plan_register`] is the decision as a plain function: request, current
//! bindings, config, the flow and `now` in; the new binding set or a
//! rejection out. [`Registrar`] runs it against a [`LocationStore`] with a
//! compare-and-set retry and builds the response.
//!
//! Policy choices:
//! - More contacts than `max_contacts_per_aor` in one REGISTER → 403. When a
//!   REGISTER adds contacts to an AOR that is full, the bindings refreshed
//!   longest ago are dropped (a UA that moved behind a new NAT binding keeps
//!   working; the set never grows past the cap).
//! - §10.3 step 7: a contact whose binding has the same Call-ID and a CSeq
//!   not higher than stored is a late duplicate; the whole request is not
//!   applied (nothing changes) and the 200 lists the bindings as they are.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use sip_message::build::Response;
use sip_message::{HeaderName, Message, NameAddr, Scheme, Uri};

use super::binding::{unix_secs, Binding, FlowToken, QValue};
use super::metrics::LocationMetrics;
use super::store::{LocationStore, StoreError};
use crate::nat::keepalive::{KeepaliveHandle, PingTarget};

/// `[registrar]` settings.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Expiry when the REGISTER gives none (seconds, default 3600).
    pub default_expires: u32,
    /// Shortest accepted non-zero expiry; shorter → 423 (default 60).
    pub min_expires: u32,
    /// Longer requested expiries are shortened to this (default 86400).
    pub max_expires: u32,
    /// Bindings per AOR at most (default 10).
    pub max_contacts_per_aor: usize,
    /// Path entries kept per binding at most; more → 400 (default 8).
    pub max_path: usize,
    /// Longest stored URI / Call-ID / Path value in bytes; longer → 400 (default 1024).
    pub max_value_len: usize,
    /// Domains this registrar serves (lower case); an AOR elsewhere → 404.
    pub domains: Vec<String>,
    /// Compare-and-set attempts before giving up with 500 (default 4).
    pub write_attempts: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 86_400,
            max_contacts_per_aor: 10,
            max_path: 8,
            max_value_len: 1024,
            domains: Vec::new(),
            write_attempts: 4,
        }
    }
}

impl RegistrarConfig {
    /// Check the settings; the error names the `[registrar]` key at fault.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.min_expires > self.max_expires {
            return Err(("min_expires", "must not exceed max_expires"));
        }
        if self.default_expires < self.min_expires || self.default_expires > self.max_expires {
            return Err(("default_expires", "must lie between min_expires and max_expires"));
        }
        if self.max_contacts_per_aor == 0 || self.max_contacts_per_aor > 1024 {
            return Err(("max_contacts_per_aor", "must be 1..=1024"));
        }
        if self.max_path > 64 || self.max_value_len > 8192 || self.max_value_len < 64 {
            return Err(("max_path", "max_path must be ≤ 64 and max_value_len 64..=8192"));
        }
        if self.write_attempts == 0 {
            return Err(("write_attempts", "must be at least 1"));
        }
        Ok(())
    }
}

/// What the core knows about where the REGISTER came from.
#[derive(Debug, Clone, Default)]
pub struct RegisterContext {
    /// Source address of the request.
    pub received: Option<SocketAddr>,
    /// The flow it arrived on (RFC 5626); `None` if it did not arrive
    /// directly from the UA on a flow this instance owns.
    pub flow: Option<FlowToken>,
    /// The user digest authentication established, if any. When set, it must
    /// equal the AOR's user part (§10.3 step 3), else 403.
    pub authenticated_user: Option<String>,
    /// NAT handling of this REGISTER ([`crate::nat`]); `None` when it does
    /// not apply (mode `off`, or relayed by another proxy).
    pub nat: Option<RegisterNat>,
}

/// How a REGISTER straight from a UA is treated for NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterNat {
    /// Every contact counts as behind NAT (mode `always`, or the top Via
    /// already showed it); otherwise each Contact is compared with the
    /// source address.
    pub is_natted: bool,
    /// The transport the REGISTER came over.
    pub transport: crate::transport::Transport,
    /// The flow a NAT'd binding is reached on: the connection for TCP/TLS;
    /// for UDP a token without a connection (the binding's `received`
    /// address is the flow). The same field RFC 5626 outbound bindings use,
    /// so routing treats both alike.
    pub flow: FlowToken,
}

impl RegisterNat {
    /// Whether a contact registered with `uri` is behind NAT.
    pub fn hides(&self, uri: &Uri<'_>, source: Option<SocketAddr>) -> bool {
        self.is_natted || source.is_some_and(|src| crate::nat::contact_hides(uri, src))
    }
}

/// The result class, for logs and `umproxy_register_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterResult {
    /// Bindings were added, refreshed or removed.
    Updated,
    /// A query (no Contact) or nothing to change.
    Fetched,
    /// §10.3 step 7 late duplicate, not applied.
    Stale,
    BadRequest,
    IntervalTooBrief,
    Forbidden,
    NotFound,
    BadExtension,
    StoreError,
}

impl RegisterResult {
    /// Every result, for counters resolved at start.
    pub const ALL: [RegisterResult; 9] = [
        RegisterResult::Updated,
        RegisterResult::Fetched,
        RegisterResult::Stale,
        RegisterResult::BadRequest,
        RegisterResult::IntervalTooBrief,
        RegisterResult::Forbidden,
        RegisterResult::NotFound,
        RegisterResult::BadExtension,
        RegisterResult::StoreError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RegisterResult::Updated => "updated",
            RegisterResult::Fetched => "fetched",
            RegisterResult::Stale => "stale",
            RegisterResult::BadRequest => "bad_request",
            RegisterResult::IntervalTooBrief => "interval_too_brief",
            RegisterResult::Forbidden => "forbidden",
            RegisterResult::NotFound => "not_found",
            RegisterResult::BadExtension => "bad_extension",
            RegisterResult::StoreError => "store_error",
        }
    }
}

/// Why a REGISTER is refused before the store is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 400 with a reason phrase.
    BadRequest(&'static str),
    /// 423 with Min-Expires.
    IntervalTooBrief { min_expires: u32 },
    /// 403 with a reason phrase.
    Forbidden(&'static str),
    /// 404: the AOR is not in a domain we serve.
    NotFound,
    /// 420: the UA requires extensions we do not support (listed in Unsupported).
    BadExtension(Vec<String>),
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::IntervalTooBrief { .. } => 423,
            Reject::Forbidden(_) => 403,
            Reject::NotFound => 404,
            Reject::BadExtension(_) => 420,
        }
    }
    fn result(&self) -> RegisterResult {
        match self {
            Reject::BadRequest(_) => RegisterResult::BadRequest,
            Reject::IntervalTooBrief { .. } => RegisterResult::IntervalTooBrief,
            Reject::Forbidden(_) => RegisterResult::Forbidden,
            Reject::NotFound => RegisterResult::NotFound,
            Reject::BadExtension(_) => RegisterResult::BadExtension,
        }
    }
}

/// The outcome of [`plan_register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub aor: String,
    /// The AOR's bindings after the request.
    pub bindings: Vec<Binding>,
    /// Whether the store must be written.
    pub is_changed: bool,
    /// §10.3 step 7 late duplicate: nothing applied.
    pub is_stale: bool,
}

/// The answer to a REGISTER.
#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    pub status: u16,
    /// The complete response, ready to send.
    pub response: Bytes,
    pub result: RegisterResult,
    /// The store failure behind a 500/503, for logs.
    pub store_error: Option<StoreError>,
    /// When the AOR's bindings changed: the AOR and its NAT'd UDP bindings
    /// now, for the keep-alive pings.
    pub nat_udp: Option<(String, Vec<PingTarget>)>,
    /// Contacts this REGISTER bound as behind NAT ([`RegisterNat`]).
    pub natted_contacts: usize,
}

/// The canonical AOR of a URI: `sip:user@host` (scheme and host lower-cased,
/// `sips` folded into `sip`, port and parameters dropped, RFC 3261 §10.3 step 5).
pub fn canonical_aor(uri: &Uri<'_>) -> Option<String> {
    if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips) {
        return None;
    }
    let user = uri.user().filter(|u| !u.is_empty())?;
    let host = uri.host();
    if host.is_empty() {
        return None;
    }
    let mut aor = String::with_capacity(5 + user.len() + host.len());
    aor.push_str("sip:");
    aor.push_str(user);
    aor.push('@');
    let host_at = aor.len();
    aor.push_str(host);
    if let Some(h) = aor.get_mut(host_at..) {
        h.make_ascii_lowercase();
    }
    Some(aor)
}

/// A comparison key for Contact URIs, close to RFC 3261 §19.1.4: scheme and
/// host case-insensitive, user exact, default port made explicit, parameters
/// order-insensitive with case-insensitive names.
fn contact_key(uri: &Uri<'_>) -> String {
    let scheme = match uri.scheme {
        Scheme::Sips => "sips",
        _ => "sip",
    };
    let port = uri.port().unwrap_or(if scheme == "sips" { 5061 } else { 5060 });
    let user = uri.user().unwrap_or("");
    let host = uri.host();
    let mut key = String::with_capacity(scheme.len() + user.len() + host.len() + 16);
    // Appended piece by piece (one key per Contact of every REGISTER; the
    // formatting machinery cost more than the rest of the key).
    key.push_str(scheme);
    key.push(':');
    key.push_str(user);
    key.push('@');
    let host_at = key.len();
    key.push_str(host);
    if let Some(h) = key.get_mut(host_at..) {
        h.make_ascii_lowercase();
    }
    key.push(':');
    key.push_str(itoa::Buffer::new().format(port));
    key.push(';');
    // Parameters in a canonical order; most Contacts have none or one.
    let mut params: Vec<String> = uri
        .params()
        .iter()
        .map(|(n, v)| {
            let mut p = String::from_utf8_lossy(n).into_owned();
            if let Some(v) = v {
                p.push('=');
                p.push_str(&String::from_utf8_lossy(v));
            }
            p.make_ascii_lowercase();
            p
        })
        .collect();
    params.sort_unstable();
    for (k, p) in params.iter().enumerate() {
        if k > 0 {
            key.push(';');
        }
        key.push_str(p);
    }
    key
}

/// One Contact of the request, checked.
struct RequestedContact {
    uri: String,
    key: String,
    q: QValue,
    expires: u32,
    instance: Option<String>,
    reg_id: Option<u32>,
    /// Behind NAT: reached where the REGISTER came from.
    is_natted: bool,
}

fn parse_delta(s: &str) -> Option<u32> {
    // delta-seconds = 1*DIGIT; very large values are clamped later anyway.
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().map_or(u32::MAX, |v| u32::try_from(v).unwrap_or(u32::MAX)))
}

/// Split a header value list at top-level commas (outside quotes and `<>`).
fn split_list(v: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut in_quote, mut in_angle, mut escaped) = (0, false, false, false);
    for (i, c) in v.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            ',' if !in_quote && !in_angle => {
                parts.push(v.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(v.get(start..).unwrap_or(""));
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

/// Option tags the registrar implements.
const SUPPORTED: [&str; 2] = ["path", "outbound"];

/// Decide what a REGISTER does to an AOR whose unexpired bindings are `current`.
pub fn plan_register(
    req: &Message,
    current: &[Binding],
    cfg: &RegistrarConfig,
    ctx: &RegisterContext,
    now: SystemTime,
) -> Result<Plan, Reject> {
    plan_register_to(req, &req.to(), current, cfg, ctx, now)
}

/// [`plan_register`] with the request's To already parsed (the caller
/// needed it first for the AOR).
fn plan_register_to(
    req: &Message,
    to: &NameAddr<'_>,
    current: &[Binding],
    cfg: &RegistrarConfig,
    ctx: &RegisterContext,
    now: SystemTime,
) -> Result<Plan, Reject> {
    // §10.3 step 2: Require with an extension we lack → 420.
    let unsupported: Vec<String> = req
        .require()
        .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .take(8)
        .map(|t| t.chars().filter(|c| c.is_ascii_graphic()).take(64).collect())
        .collect();
    if !unsupported.is_empty() {
        return Err(Reject::BadExtension(unsupported));
    }
    let aor =
        canonical_aor(&to.uri).filter(|a| a.len() <= cfg.max_value_len).ok_or(Reject::BadRequest("Bad To URI"))?;
    let host = to.uri.host();
    if !cfg.domains.is_empty() && !cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(host)) {
        return Err(Reject::NotFound);
    }
    if let Some(user) = &ctx.authenticated_user {
        if to.uri.user() != Some(user.as_str()) {
            return Err(Reject::Forbidden("Not Your AOR"));
        }
    }
    let call_id = req.call_id();
    let (cseq, _) = req.cseq();
    if call_id.len() > cfg.max_value_len {
        return Err(Reject::BadRequest("Call-ID Too Long"));
    }
    let now_s = unix_secs(now);

    // RFC 3261 §10.3 step 6: `*` only with Expires: 0 (the parser already
    // refuses `*` together with other contacts).
    if req.is_contact_star() {
        if req.expires() != Some(0) {
            return Err(Reject::BadRequest("Wildcard Contact Needs Expires 0"));
        }
        let is_stale = current.iter().any(|b| b.call_id == call_id && cseq <= b.cseq);
        if is_stale {
            return Ok(Plan { aor, bindings: current.to_vec(), is_changed: false, is_stale: true });
        }
        return Ok(Plan { aor, bindings: Vec::new(), is_changed: !current.is_empty(), is_stale: false });
    }

    let header_expires = req.expires();
    let mut requested: Vec<RequestedContact> = Vec::new();
    let mut too_brief = false;
    for c in req.contacts() {
        if requested.len() >= cfg.max_contacts_per_aor {
            return Err(Reject::Forbidden("Too Many Contacts"));
        }
        if !matches!(c.uri.scheme, Scheme::Sip | Scheme::Sips) || c.uri.host().is_empty() {
            return Err(Reject::BadRequest("Bad Contact URI"));
        }
        let uri = c.uri.as_str();
        if uri.is_empty() || uri.len() > cfg.max_value_len {
            return Err(Reject::BadRequest("Bad Contact URI"));
        }
        let q = match c.param("q") {
            None => QValue::DEFAULT,
            Some(v) => v.and_then(QValue::parse).ok_or(Reject::BadRequest("Bad q-value"))?,
        };
        let expires = match c.param("expires") {
            Some(v) => v.and_then(parse_delta).ok_or(Reject::BadRequest("Bad Contact expires"))?,
            None => header_expires.unwrap_or(cfg.default_expires),
        };
        if expires != 0 && expires < cfg.min_expires {
            too_brief = true;
        }
        let instance = match c.param("+sip.instance") {
            None => None,
            Some(v) => {
                let v = v.map(|v| v.trim_matches('"')).filter(|v| !v.is_empty() && v.len() <= cfg.max_value_len);
                Some(v.ok_or(Reject::BadRequest("Bad +sip.instance"))?.to_owned())
            }
        };
        let reg_id = match c.param("reg-id") {
            None => None,
            Some(v) => {
                let id = v.and_then(|v| v.parse::<u32>().ok()).filter(|&id| id > 0);
                Some(id.ok_or(Reject::BadRequest("Bad reg-id"))?)
            }
        };
        // RFC 5626 §6: a reg-id without an instance-id is ignored.
        let reg_id = reg_id.filter(|_| instance.is_some());
        let key = contact_key(&c.uri);
        // An outbound binding has its own flow; NAT handling is for the rest.
        let is_natted = reg_id.is_none() && ctx.nat.is_some_and(|n| n.hides(&c.uri, ctx.received));
        let entry = RequestedContact { uri: uri.to_owned(), key, q, expires, instance, reg_id, is_natted };
        // The same contact twice in one request: the last one counts.
        requested.retain(|r| !same_binding_req(r, &entry));
        requested.push(entry);
    }
    if too_brief {
        return Err(Reject::IntervalTooBrief { min_expires: cfg.min_expires });
    }
    if requested.is_empty() {
        // A query (§10.3 step 8 with no Contact).
        return Ok(Plan { aor, bindings: current.to_vec(), is_changed: false, is_stale: false });
    }

    let mut path = Vec::new();
    for v in req.header_values(HeaderName::Path) {
        let v = std::str::from_utf8(v).map_err(|_| Reject::BadRequest("Bad Path"))?;
        for p in split_list(v) {
            if path.len() >= cfg.max_path || p.len() > cfg.max_value_len {
                return Err(Reject::BadRequest("Path Too Long"));
            }
            path.push(p.to_owned());
        }
    }

    let mut bindings: Vec<Binding> = current.to_vec();
    let mut touched: Vec<String> = Vec::new();
    let mut is_changed = false;
    // Taken by value: each contact's strings move into its binding.
    for r in requested {
        let existing = bindings.iter().position(|b| matches_existing(b, &r));
        if let Some(i) = existing {
            let b = bindings.get(i).ok_or(Reject::BadRequest("Internal"))?;
            // §10.3 step 7: same Call-ID and a CSeq not higher → late duplicate.
            if b.call_id == call_id && cseq <= b.cseq {
                return Ok(Plan { aor, bindings: current.to_vec(), is_changed: false, is_stale: true });
            }
            bindings.remove(i);
            is_changed = true;
        }
        if r.expires == 0 {
            continue;
        }
        let expires = r.expires.min(cfg.max_expires);
        bindings.push(Binding {
            aor: aor.clone(),
            contact_uri: r.uri,
            q: r.q,
            expires_at: now_s.saturating_add(u64::from(expires)),
            call_id: call_id.to_owned(),
            cseq,
            path: path.clone(),
            instance: r.instance,
            reg_id: r.reg_id,
            // RFC 5626 §6: an outbound binding is tied to the flow it came
            // on; a NAT'd one to where it came from, the same way.
            flow: if r.reg_id.is_some() {
                ctx.flow
            } else if r.is_natted {
                ctx.nat.map(|n| n.flow)
            } else {
                None
            },
            received: ctx.received,
            updated_at: now_s,
        });
        touched.push(r.key);
        is_changed = true;
    }
    // Over the cap: drop the bindings refreshed longest ago that this request
    // did not just write.
    while bindings.len() > cfg.max_contacts_per_aor {
        let oldest = bindings
            .iter()
            .enumerate()
            .filter(|(_, b)| b.updated_at < now_s || !touched.iter().any(|k| bound_key(b) == *k))
            .min_by_key(|(_, b)| b.updated_at)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => {
                bindings.remove(i);
            }
            None => return Err(Reject::Forbidden("Too Many Contacts")),
        }
    }
    Ok(Plan { aor, bindings, is_changed, is_stale: false })
}

fn bound_key(b: &Binding) -> String {
    Uri::parse(b.contact_uri.as_bytes()).map(|u| contact_key(&u)).unwrap_or_else(|| b.contact_uri.clone())
}

/// RFC 5626 §6: with instance and reg-id, a binding is identified by the
/// pair (a new flow replaces the old one); otherwise by its Contact URI.
fn matches_existing(b: &Binding, r: &RequestedContact) -> bool {
    match (&r.instance, r.reg_id) {
        (Some(inst), Some(id)) => b.instance.as_deref() == Some(inst) && b.reg_id == Some(id),
        _ => b.reg_id.is_none() && bound_key(b) == r.key,
    }
}

fn same_binding_req(a: &RequestedContact, b: &RequestedContact) -> bool {
    match (&b.instance, b.reg_id) {
        (Some(inst), Some(id)) => a.instance.as_ref() == Some(inst) && a.reg_id == Some(id),
        _ => a.reg_id.is_none() && a.key == b.key,
    }
}

/// Order bindings for forking (RFC 3261 §16.6 / RFC 3841 q-value
/// processing): highest q first; equal q stay together (tried in parallel),
/// most recently refreshed first within a group.
pub fn sort_for_forking(bindings: &mut [Binding]) {
    bindings.sort_by(|a, b| b.q.cmp(&a.q).then(b.updated_at.cmp(&a.updated_at)));
}

/// Group sorted bindings by q: each group is tried in parallel, groups in turn.
pub fn fork_groups(bindings: &[Binding]) -> Vec<Vec<Binding>> {
    let mut groups: Vec<Vec<Binding>> = Vec::new();
    for b in bindings {
        match groups.last_mut() {
            Some(g) if g.first().is_some_and(|f| f.q == b.q) => g.push(b.clone()),
            _ => groups.push(vec![b.clone()]),
        }
    }
    groups
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// RFC 3261 §20.17 `Date` (RFC 1123 form, always GMT).
pub fn http_date(now: SystemTime) -> String {
    let secs = unix_secs(now);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS.get((days % 7) as usize).unwrap_or(&"Thu"),
        day,
        MONTHS.get((month - 1) as usize).unwrap_or(&"Jan"),
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn to_tag() -> String {
    super::auth::random_tag()
}

/// The 200 OK of §10.3 step 8: every current binding with its remaining
/// expiry, `Date`, and the Path / outbound extensions when used.
pub fn ok_response(req: &Message, bindings: &[Binding], now: SystemTime) -> Bytes {
    let mut resp = Response::new(req, 200, "OK", Some(&to_tag()));
    let mut v = String::with_capacity(128);
    for b in bindings {
        v.clear();
        // Writing to a String cannot fail.
        let _ = write!(v, "<{}>;expires={}", b.contact_uri, b.remaining(now));
        if b.q != QValue::DEFAULT {
            let _ = write!(v, ";q={}", b.q);
        }
        if let Some(inst) = &b.instance {
            let _ = write!(v, ";+sip.instance=\"{inst}\"");
        }
        if let Some(id) = b.reg_id {
            let _ = write!(v, ";reg-id={id}");
        }
        resp = resp.header("Contact", &v);
    }
    // RFC 3327 §5.3: echo the Path of the request.
    let mut has_path = false;
    for v in req.header_values(HeaderName::Path) {
        if let Ok(v) = std::str::from_utf8(v) {
            resp = resp.header("Path", v);
            has_path = true;
        }
    }
    let supports = |tag: &str| req.supported().any(|t| t.eq_ignore_ascii_case(tag));
    if has_path {
        resp = resp.header("Supported", "path");
    }
    // RFC 5626 §6: Require: outbound when an outbound binding was accepted.
    // Supported first: only then are the Contacts worth parsing again.
    let used_outbound = || req.contacts().any(|c| c.param("reg-id").is_some() && c.param("+sip.instance").is_some());
    if supports("outbound") && used_outbound() {
        resp = resp.header("Require", "outbound");
    }
    with_http_date(now, |date| resp.header("Date", date)).finish()
}

/// `f` with the HTTP date of `now`, formatted once per second per thread.
fn with_http_date<R>(now: SystemTime, f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let secs = unix_secs(now);
    LAST.with(|cell| match cell.try_borrow_mut() {
        Ok(mut last) => {
            if last.0 != secs {
                *last = (secs, http_date(now));
            }
            f(&last.1)
        }
        Err(_) => f(&http_date(now)),
    })
}

fn reject_response(req: &Message, reject: &Reject) -> Bytes {
    let tag = to_tag();
    match reject {
        Reject::BadRequest(reason) => Response::new(req, 400, reason, Some(&tag)).finish(),
        Reject::Forbidden(reason) => Response::new(req, 403, reason, Some(&tag)).finish(),
        Reject::NotFound => Response::new(req, 404, "Not Found", Some(&tag)).finish(),
        Reject::BadExtension(tags) => {
            Response::new(req, 420, "Bad Extension", Some(&tag)).header("Unsupported", &tags.join(", ")).finish()
        }
        Reject::IntervalTooBrief { min_expires } => Response::new(req, 423, "Interval Too Brief", Some(&tag))
            .header("Min-Expires", &min_expires.to_string())
            .finish(),
    }
}

/// Registrar state over a store.
#[derive(Clone)]
pub struct Registrar {
    store: Arc<dyn LocationStore>,
    cfg: Arc<RegistrarConfig>,
    metrics: Option<Arc<LocationMetrics>>,
    keepalive: Option<Arc<KeepaliveHandle>>,
    nat_metrics: Option<crate::nat::keepalive::NatMetrics>,
}

impl Registrar {
    pub fn new(store: Arc<dyn LocationStore>, cfg: RegistrarConfig, metrics: Option<Arc<LocationMetrics>>) -> Self {
        let registrar = Registrar { store, cfg: Arc::new(cfg), metrics, keepalive: None, nat_metrics: None };
        // What the store restored at start is counted before any REGISTER.
        registrar.update_gauges();
        registrar
    }

    /// NAT'd contacts are counted in `umproxy_nat_contacts_registered_total`.
    pub fn with_nat_metrics(mut self, m: crate::nat::keepalive::NatMetrics) -> Self {
        self.nat_metrics = Some(m);
        self
    }

    /// NAT'd UDP bindings are handed to `keepalive` for pinging.
    pub fn with_keepalive(mut self, keepalive: Arc<KeepaliveHandle>) -> Self {
        self.keepalive = Some(keepalive);
        self
    }

    /// `registrations_active` from the store's own count.
    fn update_gauges(&self) {
        if let (Some(m), Some(n)) = (&self.metrics, self.store.binding_count()) {
            m.registrations_active.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Drop the bindings lapsed at `now` (lookups already skip them; this
    /// frees their space) and count what is left.
    pub async fn expire(&self, now: SystemTime) -> Result<usize, StoreError> {
        let dropped = self.store.expire(now).await;
        self.update_gauges();
        dropped
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    pub fn store(&self) -> &Arc<dyn LocationStore> {
        &self.store
    }

    /// Handle an (already authenticated) REGISTER and build the response.
    pub async fn handle_register(&self, req: &Message, ctx: &RegisterContext, now: SystemTime) -> RegisterOutcome {
        let outcome = process_register(req, self.store.as_ref(), &self.cfg, ctx, now).await;
        if let (Some(k), Some((aor, targets))) = (&self.keepalive, &outcome.nat_udp) {
            k.update_aor(aor, targets);
        }
        if let (Some(m), Some(nat), n @ 1..) = (&self.nat_metrics, &ctx.nat, outcome.natted_contacts) {
            m.contacts(nat.transport).inc_by(n as u64);
        }
        if let Some(m) = &self.metrics {
            m.count_register(outcome.result);
            if outcome.store_error.is_some() {
                m.store_errors_total.with_label_values(&[self.store.name()]).inc();
            }
        }
        self.update_gauges();
        outcome
    }

    /// Bindings of `aor` at `now`, ordered for forking ([`sort_for_forking`]).
    pub async fn lookup(&self, aor: &str, now: SystemTime) -> Result<Vec<Binding>, StoreError> {
        lookup(self.store.as_ref(), aor, now).await.inspect_err(|_| {
            if let Some(m) = &self.metrics {
                m.store_errors_total.with_label_values(&[self.store.name()]).inc();
            }
        })
    }
}

/// Bindings of `aor` at `now`, ordered for forking ([`sort_for_forking`]).
pub async fn lookup(store: &dyn LocationStore, aor: &str, now: SystemTime) -> Result<Vec<Binding>, StoreError> {
    let mut bindings = store.get(aor, now).await?.bindings;
    sort_for_forking(&mut bindings);
    Ok(bindings)
}

/// RFC 3261 §10.3 against a store: read, plan, compare-and-set (retrying
/// when another writer won), answer.
pub async fn process_register(
    req: &Message,
    store: &dyn LocationStore,
    cfg: &RegistrarConfig,
    ctx: &RegisterContext,
    now: SystemTime,
) -> RegisterOutcome {
    // Parsed once for the AOR here and for the plan below.
    let to = req.to();
    let aor = match canonical_aor(&to.uri) {
        Some(a) => a,
        None => return rejected(req, &Reject::BadRequest("Bad To URI")),
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = match store.get(&aor, now).await {
            Ok(c) => c,
            Err(e) => return store_failed(req, e),
        };
        let plan = match plan_register_to(req, &to, &current.bindings, cfg, ctx, now) {
            Ok(p) => p,
            Err(r) => return rejected(req, &r),
        };
        if !plan.is_changed {
            let result = if plan.is_stale { RegisterResult::Stale } else { RegisterResult::Fetched };
            return finish(req, plan.bindings, result, now);
        }
        // The 200 is built before the bindings move into the store (it is
        // dropped if the write fails): the store keeps them without a copy.
        let mut bindings = plan.bindings;
        sort_for_forking(&mut bindings);
        let response = ok_response(req, &bindings, now);
        let nat_udp: Vec<PingTarget> = bindings.iter().filter_map(PingTarget::of).collect();
        // The bindings this request wrote (its Call-ID and CSeq) that are
        // reached where it came from, not by their Contact.
        let (call_id, cseq) = (req.call_id(), req.cseq().0);
        let natted_contacts = bindings
            .iter()
            .filter(|b| b.flow.is_some() && !b.is_outbound() && b.cseq == cseq && b.call_id == call_id)
            .count();
        let had_nat_udp = current.bindings.iter().any(|b| PingTarget::of(b).is_some());
        match store.replace(&aor, current.version, bindings, now).await {
            Ok(_) => {
                let nat_udp = (had_nat_udp || !nat_udp.is_empty()).then(|| (aor.clone(), nat_udp));
                return RegisterOutcome {
                    status: 200,
                    response,
                    result: RegisterResult::Updated,
                    store_error: None,
                    nat_udp,
                    natted_contacts,
                };
            }
            Err(StoreError::Conflict) if attempts < cfg.write_attempts => continue,
            Err(e) => return store_failed(req, e),
        }
    }
}

fn finish(req: &Message, mut bindings: Vec<Binding>, result: RegisterResult, now: SystemTime) -> RegisterOutcome {
    sort_for_forking(&mut bindings);
    RegisterOutcome {
        status: 200,
        response: ok_response(req, &bindings, now),
        result,
        store_error: None,
        nat_udp: None,
        natted_contacts: 0,
    }
}

fn rejected(req: &Message, r: &Reject) -> RegisterOutcome {
    RegisterOutcome {
        status: r.status(),
        response: reject_response(req, r),
        result: r.result(),
        store_error: None,
        nat_udp: None,
        natted_contacts: 0,
    }
}

fn store_failed(req: &Message, e: StoreError) -> RegisterOutcome {
    tracing::warn!(error = %e, "location store failed during REGISTER");
    let status = e.status();
    let tag = to_tag();
    let mut resp = Response::new(req, status, sip_message::build::reason_phrase(status), Some(&tag));
    if status == 503 {
        resp = resp.header("Retry-After", "5");
    }
    RegisterOutcome {
        status,
        response: resp.finish(),
        result: RegisterResult::StoreError,
        store_error: Some(e),
        nat_udp: None,
        natted_contacts: 0,
    }
}

#[cfg(test)]
#[path = "registrar_tests.rs"]
mod tests;
