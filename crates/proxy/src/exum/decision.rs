//! ExUM decisions as plain functions (DESIGN.md §9, EXUM.md behaviours 1, 4,
//! 6, 7, 11, 12): no I/O, no clock, so each is tested with a directory and a
//! parsed request.

use crate::exum::directory::{aor_key, Directory, Entry};
use crate::exum::model::{Home, Mailbox, Provider, UmRoute, UmTarget, User, VerificationLevel};
use sip_message::{Message, Scheme, Uri};
use std::time::Duration;
use tracing::debug;

/// Longest telephone number we look up; longer text is no number of ours.
const MAX_NUMBER_LEN: usize = 32;

/// The voice-mail target of a user (DESIGN.md §9 per-user decision):
/// 1. hosted when the settings enable it — this wins over an on-prem binding;
/// 2. else on-prem when the user has a dial plan and extension;
/// 3. else none: the caller gets the callee's best final response.
pub fn voicemail_target(dir: &Directory, callee: &User) -> Option<UmTarget> {
    let mailbox = Mailbox {
        aor: callee.aor.clone(),
        uri: callee.sip_address.clone(),
        extension: callee.um_binding.as_ref().map(|(_, e)| e.clone()).or_else(|| callee.line_extension.clone()),
        number: callee.number.clone(),
    };
    if callee.is_hosted_voicemail {
        // The loader checked the policy, its destination and the provider.
        let policy = dir.policy(callee.effective_policy.as_deref()?)?;
        let destination = policy.destination.clone()?;
        let provider = dir.providers().iter().find(|p| p.enabled && p.proxy_fqdn == destination)?;
        let route = UmRoute::Hosted {
            policy: policy.identity.clone(),
            destination,
            organization: policy.organization.clone(),
            provider: provider.identity.clone(),
        };
        return Some(UmTarget { mailbox, route });
    }
    let (dp, _) = callee.um_binding.as_ref()?;
    let dp = dir.dial_plan(dp)?;
    let route = UmRoute::OnPrem { dial_plan: dp.name.clone(), security: dp.security, servers: dp.servers.clone() };
    Some(UmTarget { mailbox, route })
}

/// How to ring a local user before voice mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingPlan {
    /// The user's ring time; `None` = `[exum] ring_time_s`.
    pub ring_time: Option<Duration>,
    /// Voice-mail escape window for this user's branches (see [`crate::exum::plan::EscapeGuard`]).
    pub escape: Option<Duration>,
}

/// What to do with an incoming request (DESIGN.md §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// A Subscriber Access or Auto Attendant contact, addressed by SIP URI or
    /// number: straight to its UM target, no Diversion.
    Contact { kind: crate::exum::model::ContactKind, target: UmTarget },
    /// `opaque=app:voicemail` from the mailbox owner: subscriber access, no Diversion.
    OwnVoicemail { target: UmTarget },
    /// `opaque=app:voicemail` for another user: skip the endpoints, divert
    /// with reason `unconditional`.
    VoicemailFor { target: UmTarget },
    /// The user forwards every call to voice mail: divert with reason `unconditional`.
    ForwardImmediately { target: UmTarget },
    /// A user homed here: ring the registered contacts, then consult
    /// [`divert_reason`] and divert to `voicemail` if it says so.
    LocalUser { aor: String, ring: RingPlan, voicemail: Option<UmTarget> },
    /// A user of the shared address space homed at this hosting provider
    /// (or unknown here while that provider hosts users): relay there over mutual TLS.
    ToProvider { provider: String },
    /// Voice mail was asked for (`opaque=app:voicemail`) but the user has none: 404.
    NoVoicemail { aor: String },
    /// A domain of ours, but no such user and nowhere to send it: 404.
    NotFound,
    /// Not a domain of ours, or a telephone number (`tel:`, `user=phone`)
    /// the directory does not know: the core's routes apply.
    NotOurs,
}

impl Classification {
    /// The Diversion reason the INVITE to UM carries when it is sent at once
    /// (no ringing first). `None` for subscriber access and contacts.
    pub fn immediate_reason(&self) -> Option<DiversionReason> {
        match self {
            Classification::VoicemailFor { .. } | Classification::ForwardImmediately { .. } => {
                Some(DiversionReason::Unconditional)
            }
            _ => None,
        }
    }

    /// The UM target when this request goes to UM at once.
    pub fn immediate_target(&self) -> Option<&UmTarget> {
        match self {
            Classification::Contact { target, .. }
            | Classification::OwnVoicemail { target }
            | Classification::VoicemailFor { target }
            | Classification::ForwardImmediately { target } => Some(target),
            _ => None,
        }
    }
}

/// Classify a request addressed by its Request-URI.
///
/// `caller_aor` is the caller's `user@host` (authenticated identity, else
/// From), compared lower-case with the mailbox owner. `from_provider` is the
/// identity of the hosting provider the request came from (mutual TLS, see
/// [`accept_from_provider`]); a request is never sent back there (EXUM.md
/// behaviour 12).
pub fn classify_request(
    dir: &Directory,
    req: &Message,
    caller_aor: Option<&str>,
    from_provider: Option<&str>,
) -> Classification {
    let Some(ruri) = req.request_uri() else { return Classification::NotOurs };
    let is_voicemail = ruri.param("opaque").flatten().is_some_and(|v| v.eq_ignore_ascii_case("app:voicemail"));
    let entry = match ruri.scheme {
        // A telephone number we do not know is for the core's routes
        // (a gateway by prefix), not for the shared address space.
        Scheme::Tel => match ruri.user().and_then(normalize_number).and_then(|n| dir.entry_by_number(&n)) {
            Some(e) => Some(e),
            None => return Classification::NotOurs,
        },
        Scheme::Sip | Scheme::Sips => {
            if !dir.is_local_domain(ruri.host()) {
                return Classification::NotOurs;
            }
            let user = ruri.user().unwrap_or_default();
            let by_number = normalize_number(user).and_then(|n| dir.entry_by_number(&n));
            let is_phone = ruri.param("user").flatten().is_some_and(|v| v.eq_ignore_ascii_case("phone"));
            match by_number.or_else(|| dir.entry_by_aor(user, ruri.host())) {
                None if is_phone => return Classification::NotOurs,
                e => e,
            }
        }
        _ => return Classification::NotOurs,
    };
    let not_here = || match dir.user_hosting_provider() {
        Some(p) if from_provider != Some(p.identity.as_str()) => {
            Classification::ToProvider { provider: p.identity.clone() }
        }
        _ => Classification::NotFound,
    };
    let user = match entry {
        None => return not_here(),
        Some(Entry::Contact(i)) => {
            return match dir.contact_at(i) {
                Some(c) => Classification::Contact { kind: c.kind, target: c.target.clone() },
                None => Classification::NotFound,
            }
        }
        Some(Entry::User(i)) => match dir.user_at(i) {
            Some(u) => u,
            None => return Classification::NotFound,
        },
    };
    if let Home::Provider(p) = &user.home {
        if from_provider == Some(p.as_str()) {
            // The provider says the user is ours and we say theirs: a loop.
            debug!(aor = %user.aor, provider = %p, "shared-domain user homed at the provider it came from");
            return Classification::NotFound;
        }
        return Classification::ToProvider { provider: p.clone() };
    }
    let target = voicemail_target(dir, user);
    if is_voicemail {
        let is_owner = caller_aor.is_some_and(|c| c.eq_ignore_ascii_case(&user.aor));
        return match target {
            Some(target) if is_owner => Classification::OwnVoicemail { target },
            Some(target) => Classification::VoicemailFor { target },
            None => Classification::NoVoicemail { aor: user.aor.clone() },
        };
    }
    match target {
        Some(target) if user.forward_to_voicemail => Classification::ForwardImmediately { target },
        voicemail => Classification::LocalUser {
            aor: user.aor.clone(),
            ring: RingPlan { ring_time: user.ring_time, escape: user.voicemail_escape },
            voicemail,
        },
    }
}

/// A telephone number from a tel: subscriber or a SIP user part: `+` and
/// digits (E.164), or digits only (an extension). RFC 3966 visual separators
/// (`-`, `.`, `(`, `)`) are dropped. Anything else is no number.
fn normalize_number(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > MAX_NUMBER_LEN {
        return None;
    }
    let (plus, rest) = match s.strip_prefix('+') {
        Some(r) => ("+", r),
        None => ("", s),
    };
    let mut out = String::with_capacity(s.len());
    out.push_str(plus);
    for b in rest.bytes() {
        match b {
            b'0'..=b'9' => out.push(char::from(b)),
            b'-' | b'.' | b'(' | b')' => {}
            _ => return None,
        }
    }
    (out.len() > plus.len()).then_some(out)
}

/// The caller's `user@host` from the From header, lower-case.
pub fn from_aor(req: &Message) -> Option<String> {
    let from = req.from();
    Some(aor_key(from.uri.user()?, from.uri.host()))
}

/// RFC 5806 Diversion reasons umproxy emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiversionReason {
    UserBusy,
    NoAnswer,
    Unavailable,
    Unconditional,
    Deflection,
}

impl DiversionReason {
    /// The RFC 5806 `reason` token.
    pub fn as_str(self) -> &'static str {
        match self {
            DiversionReason::UserBusy => "user-busy",
            DiversionReason::NoAnswer => "no-answer",
            DiversionReason::Unavailable => "unavailable",
            DiversionReason::Unconditional => "unconditional",
            DiversionReason::Deflection => "deflection",
        }
    }

    /// The RFC 4458 `cause` for History-Info, by the Diversion → History-Info
    /// table of RFC 6044 §6.2.1 (kept by RFC 7544, which obsoletes it):
    /// unconditional 302, user-busy 486, no-answer 408, deflection 480,
    /// unavailable (like unknown and every other reason) 404.
    pub fn cause(self) -> u16 {
        match self {
            DiversionReason::Unconditional => 302,
            DiversionReason::UserBusy => 486,
            DiversionReason::NoAnswer => 408,
            DiversionReason::Deflection => 480,
            DiversionReason::Unavailable => 404,
        }
    }
}

/// How the attempt to reach a local user ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome<'a> {
    /// A branch answered (any 2xx).
    Answered,
    /// The caller sent CANCEL (the 487s that follow are ours).
    CallerCancelled,
    /// The ring time ran out while branches were ringing; the core CANCELs them.
    NoAnswerTimeout,
    /// The user has no registered contact.
    NoContacts,
    /// Every branch ended with a final response, in arrival order. A
    /// transport error or timeout counts as the 503 of RFC 3261 §16.9.
    BranchesFailed(&'a [u16]),
}

/// Whether (and why) a call to a local user diverts to voice mail
/// (DESIGN.md §9 "When a call diverts"; EXUM.md behaviour 4).
pub fn divert_reason(outcome: CallOutcome<'_>) -> Option<DiversionReason> {
    match outcome {
        CallOutcome::Answered | CallOutcome::CallerCancelled => None,
        CallOutcome::NoAnswerTimeout => Some(DiversionReason::NoAnswer),
        CallOutcome::NoContacts => Some(DiversionReason::Unavailable),
        CallOutcome::BranchesFailed(statuses) => {
            if statuses.is_empty() {
                return Some(DiversionReason::Unavailable);
            }
            if statuses.iter().any(|s| (200..300).contains(s)) {
                return None;
            }
            // RFC 3261 §16.7: the first 6xx decides the call.
            match statuses.iter().find(|s| (600..700).contains(*s)) {
                Some(600) => return Some(DiversionReason::UserBusy),
                // Decline by the user while alerting: RFC 5806 "deflection".
                Some(603) => return Some(DiversionReason::Deflection),
                Some(_) => return None,
                None => {}
            }
            if statuses.contains(&486) {
                return Some(DiversionReason::UserBusy);
            }
            if statuses.iter().all(|s| matches!(s, 404 | 408 | 480 | 503)) {
                return Some(DiversionReason::Unavailable);
            }
            // 403, 488… say something the caller must hear; no voice mail.
            None
        }
    }
}

/// Default `[exum] verification_header`: the header Lync's Access Edge puts
/// its trust verdict in (`ms-source-verified-user=verified|unverified`), as
/// seen in Lync SIP traces. UNCONFIRMED for hosted UM providers
/// (EXUM.md §2, behaviour 11), hence configurable.
pub const DEFAULT_VERIFICATION_HEADER: &str = "ms-edge-proxy-message-trust";

/// The decision on a request that arrived from a possible hosting provider
/// (EXUM.md behaviour 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAcceptance {
    /// No mutual-TLS certificate naming an enabled provider: not from a
    /// provider. The core's ordinary rules (not an open relay) apply.
    NotAProvider,
    /// From this provider; `is_verified` is what the provider's level says.
    Accept { provider: String, is_verified: bool },
    /// From this provider, but `use_source_verification` and the marker
    /// header is missing: answer 403.
    Reject { provider: String },
}

/// Decide on a request received over a connection whose client certificate
/// (verified by the TLS layer against the provider's CA) carries
/// `tls_names` (SAN DNS names; empty without mutual TLS).
///
/// `marker_header` is `[exum] verification_header` (default
/// [`DEFAULT_VERIFICATION_HEADER`]): under `use_source_verification` it must
/// be present; a value containing `unverified` (any case, e.g.
/// `ms-source-verified-user=unverified`) marks the request unverified, any
/// other value verified.
pub fn accept_from_provider(
    dir: &Directory,
    tls_names: &[&str],
    req: &Message,
    marker_header: &str,
) -> ProviderAcceptance {
    let provider =
        dir.providers().iter().find(|p| p.enabled && tls_names.iter().any(|n| n.eq_ignore_ascii_case(&p.proxy_fqdn)));
    let Some(p) = provider else { return ProviderAcceptance::NotAProvider };
    let provider = p.identity.clone();
    match p.verification_level {
        VerificationLevel::AlwaysVerifiable => ProviderAcceptance::Accept { provider, is_verified: true },
        VerificationLevel::AlwaysUnverifiable => ProviderAcceptance::Accept { provider, is_verified: false },
        VerificationLevel::UseSourceVerification => match req.header_values_named(marker_header).next() {
            None => ProviderAcceptance::Reject { provider },
            Some(v) => {
                let is_verified = !v.windows(10).any(|w| w.eq_ignore_ascii_case(b"unverified"));
                ProviderAcceptance::Accept { provider, is_verified }
            }
        },
    }
}

/// Whether a hosting provider may speak for the caller its request names
/// in From (split domain, EXUM.md behaviour 11): a provider sends its own
/// users of the shared domain, never the users homed on premises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCaller {
    /// From a domain (or number) that is not ours: a caller the provider
    /// relays. It may reach our users, never be relayed further.
    Foreign,
    /// A user of the shared address space the provider may send: unknown
    /// here (so homed there), or homed at this very provider; or a contact
    /// whose voice mail the provider hosts.
    HomedThere,
    /// The provider does not share the address space
    /// (`enabled_shared_address_space = false`): none of our users are its.
    NotShared,
    /// A user or contact homed on premises (or at another provider): the
    /// provider may not claim it.
    Impersonation,
}

impl ProviderCaller {
    /// The bounded label of `umproxy_exum_provider_requests_total` for a refusal.
    pub fn refusal_label(self) -> Option<&'static str> {
        match self {
            ProviderCaller::Foreign | ProviderCaller::HomedThere => None,
            ProviderCaller::NotShared => Some("refused_not_shared"),
            ProviderCaller::Impersonation => Some("refused_impersonation"),
        }
    }
}

/// Judge the From of a request that arrived from `provider` (see
/// [`ProviderCaller`]). The caller is looked up as a Request-URI is: a
/// `tel:` number or a number in the user part by number, else by address.
pub fn provider_caller(dir: &Directory, provider: &Provider, from: &Uri<'_>) -> ProviderCaller {
    let by_number = || from.user().and_then(normalize_number).and_then(|n| dir.entry_by_number(&n));
    let entry = match from.scheme {
        Scheme::Tel => match by_number() {
            Some(e) => Some(e),
            // A telephone number we do not know is nobody of ours.
            None => return ProviderCaller::Foreign,
        },
        Scheme::Sip | Scheme::Sips if dir.is_local_domain(from.host()) => {
            by_number().or_else(|| dir.entry_by_aor(from.user().unwrap_or_default(), from.host()))
        }
        _ => return ProviderCaller::Foreign,
    };
    if !provider.enabled_shared_address_space {
        return ProviderCaller::NotShared;
    }
    let is_theirs = match entry {
        None => true,
        Some(Entry::User(i)) => {
            dir.user_at(i).is_some_and(|u| matches!(&u.home, Home::Provider(p) if *p == provider.identity))
        }
        Some(Entry::Contact(i)) => dir
            .contact_at(i)
            .is_some_and(|c| matches!(&c.target.route, UmRoute::Hosted { provider: p, .. } if *p == provider.identity)),
    };
    if is_theirs {
        ProviderCaller::HomedThere
    } else {
        ProviderCaller::Impersonation
    }
}

/// The value umproxy writes in `[exum] verification_header` on every
/// request it forwards from a hosting provider, so that the users and UM
/// servers on premises see how far it is trusted (Lync's Access Edge
/// stamps federated traffic the same way): `verified` when the provider's
/// `verification_level` is `always_verifiable`, or `use_source_verification`
/// and the provider said so; `unverified` otherwise. Requests from anyone
/// else have the header removed, so it cannot be forged.
pub fn verification_marker(is_verified: bool) -> &'static str {
    if is_verified {
        "ms-source-type=HostingProvider;ms-source-network=federation;ms-source-verified-user=verified"
    } else {
        "ms-source-type=HostingProvider;ms-source-network=federation;ms-source-verified-user=unverified"
    }
}

/// The bounded `reason` label of logs and metrics: the Diversion reason, or
/// `subscriber_access` for a call without one (own mailbox, SA/AA contact).
pub fn reason_label(reason: Option<DiversionReason>) -> &'static str {
    reason.map_or("subscriber_access", DiversionReason::as_str)
}
