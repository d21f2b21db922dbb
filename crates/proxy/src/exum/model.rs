//! The directory model: the file shape of `directory.toml` (DESIGN.md §10,
//! the `*File` structs, `deny_unknown_fields`) and the validated objects the
//! decision code reads.

use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

// ---------------------------------------------------------------------------
// File shape. Field names follow the Lync cmdlets in snake_case.
// ---------------------------------------------------------------------------

/// `directory.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectoryFile {
    #[serde(default)]
    pub user: Vec<UserFile>,
    #[serde(default)]
    pub hosted_voicemail_policy: Vec<PolicyFile>,
    #[serde(default)]
    pub um_dial_plan: Vec<DialPlanFile>,
    #[serde(default)]
    pub hosting_provider: Vec<ProviderFile>,
    #[serde(default)]
    pub exum_contact: Vec<ContactFile>,
}

/// `[[user]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserFile {
    pub sip_address: String,
    pub line_uri: Option<String>,
    pub site: Option<String>,
    #[serde(default)]
    pub ha1: Ha1,
    /// `msExchUCVoiceMailSettings` values, e.g. `CsHostedVoiceMail=1`.
    #[serde(default)]
    pub voicemail_settings: Vec<String>,
    pub hosted_voicemail_policy: Option<String>,
    pub um_dial_plan: Option<String>,
    pub um_extension: Option<String>,
    pub ring_time_s: Option<u32>,
    #[serde(default)]
    pub forward_to_voicemail: bool,
    pub voicemail_escape_ms: Option<u32>,
    /// `"here"` (default) or the identity of a hosting provider with `hosts_ocs_users`.
    pub home: Option<String>,
}

/// Hashed digest credentials (RFC 8760), never plaintext: the type the
/// digest check reads, so a lookup lends it without a copy.
pub use crate::location::auth::Ha1Set as Ha1;

/// `[[hosted_voicemail_policy]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    pub identity: String,
    pub destination: Option<String>,
    #[serde(default)]
    pub organization: Vec<String>,
}

/// `[[um_dial_plan]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DialPlanFile {
    pub name: String,
    pub security: Security,
    #[serde(default)]
    pub servers: Vec<ServerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerFile {
    pub fqdn: String,
    pub address: Option<String>,
    pub port: Option<u16>,
}

/// UM dial plan VoIP security (Exchange `-VoIPSecurity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    Unsecured,
    /// TLS signalling, RTP media.
    SipSecured,
    /// TLS signalling, SRTP media.
    Secured,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Unsecured => "unsecured",
            Security::SipSecured => "sip_secured",
            Security::Secured => "secured",
        }
    }
}

/// `[[hosting_provider]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderFile {
    pub identity: String,
    pub proxy_fqdn: String,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub enabled_shared_address_space: bool,
    #[serde(default)]
    pub hosts_ocs_users: bool,
    #[serde(default)]
    pub verification_level: VerificationLevel,
    pub address: Option<String>,
    pub ca: Option<String>,
}

/// `VerificationLevel` of `New-CsHostingProvider`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationLevel {
    /// Nothing from the provider is rejected (the cmdlet's default).
    #[default]
    AlwaysVerifiable,
    /// Requests are accepted but marked unverified.
    AlwaysUnverifiable,
    /// Requests must carry the verification marker header, else 403.
    UseSourceVerification,
}

/// `[[exum_contact]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactFile {
    pub kind: ContactKind,
    pub sip_address: String,
    pub line_uri: String,
    pub hosted_voicemail_policy: Option<String>,
    pub um_dial_plan: Option<String>,
}

/// Subscriber Access or Auto Attendant (`New-CsExUmContact -AutoAttendant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    SubscriberAccess,
    AutoAttendant,
}

// ---------------------------------------------------------------------------
// Validated objects.
// ---------------------------------------------------------------------------

/// Where a user is homed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// Registers and is served here.
    Here,
    /// Homed at this hosting provider (identity); the shared address space
    /// sends its calls there.
    Provider(String),
}

/// A user of the shared address space.
#[derive(Debug, Clone)]
pub struct User {
    /// `user@host`, lower-case: the index key.
    pub aor: String,
    /// `sip:user@host` as written in the directory, without parameters.
    pub sip_address: String,
    /// The E.164 number of `line_uri` (`+15550100`), if any.
    pub number: Option<String>,
    /// The `ext=` of `line_uri`, if any.
    pub line_extension: Option<String>,
    pub site: Option<String>,
    pub ha1: Ha1,
    /// `CsHostedVoiceMail=1` or `ExchangeHostedVoiceMail=1` in the settings.
    pub is_hosted_voicemail: bool,
    /// The policy that applies (user > site > global), resolved at load; set
    /// whenever `is_hosted_voicemail` is.
    pub effective_policy: Option<String>,
    /// On-premises UM binding (the EUM proxy address): dial plan and extension.
    pub um_binding: Option<(String, String)>,
    pub ring_time: Option<Duration>,
    pub forward_to_voicemail: bool,
    /// Voice-mail escape window; `None` = escape off for this user.
    pub voicemail_escape: Option<Duration>,
    pub home: Home,
}

/// A hosted voice-mail policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub identity: String,
    pub destination: Option<String>,
    pub organization: Vec<String>,
}

/// A UM server of a dial plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UmServer {
    /// The name its certificate must carry, and the `{um_fqdn}` of templates.
    pub fqdn: String,
    /// A static address; `None` = RFC 3263 lookup of `fqdn`.
    pub address: Option<SocketAddr>,
    /// A port for the RFC 3263 lookup (no SRV then); ignored with `address`.
    pub port: Option<u16>,
}

/// An on-premises UM dial plan.
#[derive(Debug, Clone)]
pub struct DialPlan {
    pub name: String,
    pub security: Security,
    pub servers: Vec<UmServer>,
}

/// A hosting provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub identity: String,
    /// Lower-case.
    pub proxy_fqdn: String,
    pub enabled: bool,
    pub enabled_shared_address_space: bool,
    pub hosts_ocs_users: bool,
    pub verification_level: VerificationLevel,
    pub address: Option<SocketAddr>,
    /// Path of the CA bundle its certificates must chain to (read by the TLS layer).
    pub ca: Option<String>,
}

/// A Subscriber Access / Auto Attendant contact.
#[derive(Debug, Clone)]
pub struct Contact {
    pub kind: ContactKind,
    pub aor: String,
    pub sip_address: String,
    /// E.164, with the `+`.
    pub number: String,
    /// Resolved at load: the UM target of this contact.
    pub target: UmTarget,
}

/// Whose mailbox a UM call is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// `user@host`, lower-case; compared with the caller's to tell subscriber access.
    pub aor: String,
    /// `sip:user@host`, no parameters: the Diversion and History-Info URI.
    pub uri: String,
    /// The UM extension (on-prem binding) or the line's `ext=`, if any.
    pub extension: Option<String>,
    /// The E.164 number, if any.
    pub number: Option<String>,
}

/// How to reach the UM service of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UmRoute {
    /// Exchange UM on premises: the dial plan's servers, tried in order.
    OnPrem { dial_plan: String, security: Security, servers: Vec<UmServer> },
    /// Hosted UM through a hosting provider (shared address space).
    Hosted {
        policy: String,
        destination: String,
        organization: Vec<String>,
        /// Identity of the enabled provider whose `proxy_fqdn` is `destination`.
        provider: String,
    },
}

/// A voice-mail target: the mailbox and the route to its UM service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmTarget {
    pub mailbox: Mailbox,
    pub route: UmRoute,
}

impl UmTarget {
    /// `"on_prem"` or `"hosted"`: the bounded `mode` label of metrics and logs.
    pub fn mode(&self) -> &'static str {
        match self.route {
            UmRoute::OnPrem { .. } => "on_prem",
            UmRoute::Hosted { .. } => "hosted",
        }
    }
}
