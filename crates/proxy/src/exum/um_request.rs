//! The INVITE toward UM (DESIGN.md §9 "The INVITE to UM"; EXUM.md behaviour
//! 5, §4 [MS-OCEXUM] §3.1.5 steps 1–2).
//!
//! [`build_um_invite`] edits the caller's INVITE: Request-URI from a
//! template, Diversion replaced, History-Info appended. Call-ID, From (and
//! its tag), To and CSeq are the caller's. The proxy's own Via, Max-Forwards
//! and Route are the core's job (RFC 3261 §16.6): the bytes returned have
//! neither a new Via nor a changed Max-Forwards.

use crate::exum::decision::{from_aor, DiversionReason};
use crate::exum::error::UmRequestError;
use crate::exum::model::{Security, UmRoute, UmServer, UmTarget};
use bytes::Bytes;
use sip_message::{HeaderName, Message, NameAddr, Scheme, Uri};

/// Most History-Info entries we read from a request before giving up on
/// appending ours (bounds the work on peer input).
const MAX_HISTORY_ENTRIES: usize = 64;
/// Deepest `index` we extend (`1.1.1…`); deeper chains are left as they are.
const MAX_INDEX_DEPTH: usize = 16;

/// A placeholder of a Request-URI template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    User,
    Domain,
    Extension,
    Number,
    Target,
    UmFqdn,
    DialPlan,
    Transport,
    Destination,
    Organization,
}

impl Var {
    fn from_name(s: &str) -> Option<Var> {
        Some(match s {
            "user" => Var::User,
            "domain" => Var::Domain,
            "extension" => Var::Extension,
            "number" => Var::Number,
            "target" => Var::Target,
            "um_fqdn" => Var::UmFqdn,
            "dial_plan" => Var::DialPlan,
            "transport" => Var::Transport,
            "destination" => Var::Destination,
            "organization" => Var::Organization,
            _ => return None,
        })
    }
}

const COMMON: &[&str] = &["user", "domain", "extension", "number", "target"];
const ON_PREM_ONLY: &[&str] = &["um_fqdn", "dial_plan", "transport"];
const HOSTED_ONLY: &[&str] = &["destination", "organization"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var(Var),
}

/// A parsed Request-URI template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UriTemplate {
    key: &'static str,
    segments: Vec<Segment>,
}

impl UriTemplate {
    fn parse(key: &'static str, text: &str, extra: &[&str]) -> Result<UriTemplate, UmRequestError> {
        let bad = |problem: &str| UmRequestError::BadTemplate { key, problem: problem.to_owned() };
        let lower = text.to_ascii_lowercase();
        if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
            return Err(bad("must start with sip: or sips:"));
        }
        if text.contains('?') {
            // The cause parameter of History-Info is appended to the URI; headers would end up before it.
            return Err(bad("URI headers (?…) are not allowed"));
        }
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            let (lit, tail) = rest.split_at(open);
            if !lit.is_empty() {
                segments.push(Segment::Literal(lit.to_owned()));
            }
            let Some(inner) = tail.strip_prefix('{') else { return Err(bad("unbalanced '}'")) };
            let Some(close) = inner.find('}') else { return Err(bad("unbalanced '{'")) };
            let (name, after) = inner.split_at(close);
            let known = COMMON.contains(&name) || extra.contains(&name);
            match Var::from_name(name).filter(|_| known) {
                Some(v) => segments.push(Segment::Var(v)),
                None => {
                    let allowed = COMMON.iter().chain(extra).map(|n| format!("{{{n}}}")).collect::<Vec<_>>().join(", ");
                    return Err(UmRequestError::UnknownPlaceholder { key, name: name.to_owned(), allowed });
                }
            }
            rest = after.get(1..).unwrap_or_default();
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(UriTemplate { key, segments })
    }

    fn render(&self, value: impl Fn(Var, &mut String)) -> String {
        let mut out = String::with_capacity(64);
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Var(v) => value(*v, &mut out),
            }
        }
        out
    }
}

/// The Request-URI templates of INVITEs to UM (`[exum]` keys
/// `on_prem_request_uri` and `hosted_request_uri`).
///
/// Defaults (the real syntax, [MS-EUMR], is unpublished; EXUM.md §5):
/// - on-premises: `sip:{um_fqdn};transport={transport}` — the callee
///   travels in Diversion and History-Info, as [MS-OCEXUM] §3.1.5 has it;
/// - hosted: `sip:{destination};opaque=app:voicemail;ms-organization={organization}`.
///
/// Placeholders, all modes: `{user}` `{domain}` (of the mailbox's SIP
/// address), `{extension}` (UM extension, else the line's `ext=`),
/// `{number}` (E.164), `{target}` (the mailbox AOR URI, for RFC 4458
/// `target=`). On-premises only: `{um_fqdn}` (the server of this attempt),
/// `{dial_plan}`, `{transport}` (`tls` for a `secured` or `sip_secured`
/// dial plan — mutual TLS, EXUM.md §4 — `tcp` for `unsecured`). Hosted only: `{destination}`, `{organization}` (several
/// joined by an escaped comma, `%2C`). Values other than host names are
/// %-escaped outside `A-Z a-z 0-9 - _ . ! ~ * ' ( ) +`. Any other
/// placeholder is a configuration error; a missing value renders empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmTemplates {
    on_prem: UriTemplate,
    hosted: UriTemplate,
}

impl UmTemplates {
    pub const DEFAULT_ON_PREM: &'static str = "sip:{um_fqdn};transport={transport}";
    pub const DEFAULT_HOSTED: &'static str = "sip:{destination};opaque=app:voicemail;ms-organization={organization}";

    /// Parse the configured templates; `None` takes the default.
    pub fn new(on_prem: Option<&str>, hosted: Option<&str>) -> Result<UmTemplates, UmRequestError> {
        Ok(UmTemplates {
            on_prem: UriTemplate::parse("on_prem_request_uri", on_prem.unwrap_or(Self::DEFAULT_ON_PREM), ON_PREM_ONLY)?,
            hosted: UriTemplate::parse("hosted_request_uri", hosted.unwrap_or(Self::DEFAULT_HOSTED), HOSTED_ONLY)?,
        })
    }

    /// The Request-URI toward UM for `target`; `server` is the on-premises
    /// server of this attempt (the dial plan's first when `None`).
    pub fn request_uri(&self, target: &UmTarget, server: Option<&UmServer>) -> Result<String, UmRequestError> {
        let m = &target.mailbox;
        let (user, domain) = m.aor.rsplit_once('@').unwrap_or((m.aor.as_str(), ""));
        let common = |v: Var, out: &mut String| match v {
            Var::User => escape_into(out, user),
            Var::Domain => out.push_str(domain),
            Var::Extension => escape_into(out, m.extension.as_deref().unwrap_or_default()),
            Var::Number => escape_into(out, m.number.as_deref().unwrap_or_default()),
            Var::Target => escape_into(out, &m.uri),
            _ => {}
        };
        let (template, uri) = match &target.route {
            UmRoute::OnPrem { dial_plan, servers, security } => {
                let transport = match security {
                    Security::Unsecured => "tcp",
                    Security::SipSecured | Security::Secured => "tls",
                };
                let fqdn = server.or(servers.first()).map(|s| s.fqdn.as_str()).unwrap_or_default();
                let uri = self.on_prem.render(|v, out| match v {
                    Var::UmFqdn => out.push_str(fqdn),
                    Var::DialPlan => escape_into(out, dial_plan),
                    Var::Transport => out.push_str(transport),
                    v => common(v, out),
                });
                (&self.on_prem, uri)
            }
            UmRoute::Hosted { destination, organization, .. } => {
                let uri = self.hosted.render(|v, out| match v {
                    Var::Destination => out.push_str(destination),
                    Var::Organization => {
                        for (i, o) in organization.iter().enumerate() {
                            if i > 0 {
                                out.push_str("%2C");
                            }
                            escape_into(out, o);
                        }
                    }
                    v => common(v, out),
                });
                (&self.hosted, uri)
            }
        };
        match Uri::parse(uri.as_bytes()) {
            Some(u) if matches!(u.scheme, Scheme::Sip | Scheme::Sips) && !u.host().is_empty() => Ok(uri),
            _ => Err(UmRequestError::BadRenderedUri { key: template.key, uri }),
        }
    }
}

/// %-escape everything but a set that is legal unescaped in a user part and
/// in a URI parameter value (RFC 3261 §25.1 `unreserved`, plus `+`).
fn escape_into(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()+".contains(&b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// What [`build_um_invite`] needs besides the request and the target.
#[derive(Debug, Clone, Copy)]
pub struct UmInviteContext<'a> {
    pub templates: &'a UmTemplates,
    /// Why the call diverts. `None` for subscriber access and SA/AA
    /// contacts: no Diversion, no `cause`.
    pub reason: Option<DiversionReason>,
    /// The on-premises UM server of this attempt ([`crate::exum::plan::UmAttemptPlan`]).
    pub server: Option<&'a UmServer>,
}

/// Build the INVITE to UM from the caller's INVITE.
///
/// - Request-URI: from [`UmTemplates`].
/// - Diversion: every incoming one removed; exactly one
///   `Diversion: <sip:callee@domain>;reason=…;counter=1` added when a reason
///   is given and the caller (From user@host) is not the mailbox owner. A
///   call from the owner carries none: UM treats it as subscriber access.
/// - History-Info (RFC 7044): incoming entries kept; appended are the
///   mailbox `<sip:callee@domain>;index=N` (unless the last incoming entry
///   already is the mailbox, then N is its index) and the UM target
///   `<UM-URI;cause=NNN>;index=N.1;mp=N` (`mp`: the target user changed,
///   RFC 7044 §4.1; `cause` per RFC 4458 from [`DiversionReason::cause`],
///   left out without a reason). With no incoming entry N is 1; when the
///   last incoming entry is another URI, the mailbox is recorded as its
///   retarget, N = last index + `.1`.
/// - `Privacy: history` in the request (RFC 7044 §10.1): the header is kept,
///   and each entry we add carries `?Privacy=history` in its URI so the
///   privacy of our entries survives a hop that drops the Privacy header.
///   We do not anonymise: that is the job of the privacy service at the
///   trust-domain boundary (RFC 7044 §10.3).
pub fn build_um_invite(
    original: &Message,
    target: &UmTarget,
    ctx: &UmInviteContext<'_>,
) -> Result<Bytes, UmRequestError> {
    if original.request_uri().is_none() {
        return Err(UmRequestError::NotARequest);
    }
    let ruri = ctx.templates.request_uri(target, ctx.server)?;
    let mailbox = &target.mailbox;
    let is_owner = from_aor(original).is_some_and(|c| c == mailbox.aor);
    let mut edit = original.edit().set_request_uri(&ruri).remove_header(HeaderName::Diversion);
    if let (Some(reason), false) = (ctx.reason, is_owner) {
        let value = format!("<{}>;reason={};counter=1", mailbox.uri, reason.as_str());
        edit = edit.add_header("Diversion", &value);
    }
    if let Some(entries) = history_entries(original, &mailbox.uri, &ruri, ctx.reason) {
        for e in &entries {
            edit = edit.add_header("History-Info", e);
        }
    }
    Ok(edit.finish())
}

/// Whether the request carries `Privacy: history` (RFC 3323 priv-value list).
fn wants_history_privacy(req: &Message) -> bool {
    req.header_values(HeaderName::Privacy)
        .flat_map(|v| v.split(|b| *b == b';' || *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"history"))
}

/// One History-Info entry: its URI (no params) and its index.
struct HiEntry {
    uri_aor: Option<String>,
    index: String,
}

/// Split History-Info values into entries (commas outside `<>` and quotes).
fn incoming_history(req: &Message) -> Option<Vec<HiEntry>> {
    let mut out = Vec::new();
    for value in req.header_values(HeaderName::HistoryInfo) {
        let (mut depth, mut quoted, mut start) = (0u32, false, 0usize);
        let mut parts = Vec::new();
        for (i, b) in value.iter().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b'<' if !quoted => depth = depth.saturating_add(1),
                b'>' if !quoted => depth = depth.saturating_sub(1),
                b',' if !quoted && depth == 0 => {
                    parts.push(value.get(start..i)?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(value.get(start..)?);
        for p in parts {
            if out.len() >= MAX_HISTORY_ENTRIES {
                return None;
            }
            let p = p.trim_ascii();
            let (_, na) = sip_message::grammar::name_addr::name_addr(p, false).ok()?;
            let na: NameAddr<'_> = na;
            let index = na.param("index").flatten()?.to_owned();
            let uri_aor = na.uri.user().map(|u| crate::exum::directory::aor_key(u, na.uri.host()));
            out.push(HiEntry { uri_aor, index });
        }
    }
    Some(out)
}

fn is_index(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').count() <= MAX_INDEX_DEPTH
        && s.split('.').all(|l| !l.is_empty() && l.len() <= 5 && l.bytes().all(|b| b.is_ascii_digit()))
}

/// The History-Info values to append, or `None` when the incoming ones are
/// beyond our bounds or malformed (then we add nothing rather than guess).
fn history_entries(
    req: &Message,
    mailbox_uri: &str,
    um_uri: &str,
    reason: Option<DiversionReason>,
) -> Option<Vec<String>> {
    let incoming = incoming_history(req)?;
    let privacy = if wants_history_privacy(req) { "?Privacy=history" } else { "" };
    let mailbox_aor = mailbox_uri.split_once(':').map(|(_, a)| a.to_ascii_lowercase());
    let mut out = Vec::with_capacity(2);
    let n = match incoming.last() {
        None => {
            out.push(format!("<{mailbox_uri}{privacy}>;index=1"));
            "1".to_owned()
        }
        Some(last) if !is_index(&last.index) => return None,
        Some(last) if last.uri_aor.is_some() && last.uri_aor == mailbox_aor => last.index.clone(),
        Some(last) => {
            let n = format!("{}.1", last.index);
            if !is_index(&n) {
                return None;
            }
            out.push(format!("<{mailbox_uri}{privacy}>;index={n}"));
            n
        }
    };
    let cause = reason.map(|r| format!(";cause={}", r.cause())).unwrap_or_default();
    let child = format!("{n}.1");
    if !is_index(&child) {
        return None;
    }
    out.push(format!("<{um_uri}{cause}{privacy}>;index={child};mp={n}"));
    Some(out)
}
