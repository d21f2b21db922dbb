//! The directory of the shared SIP address space: load `directory.toml`,
//! validate it as the Lync cmdlets would (EXUM.md §1–3), index it, and swap
//! snapshots atomically on reload.

use crate::exum::error::{DirectoryError, Problem};
use crate::exum::model::{
    Contact, ContactFile, DialPlan, DirectoryFile, Home, Mailbox, Policy, Provider, Security, UmRoute, UmServer,
    UmTarget, User, UserFile,
};
use sip_message::{Scheme, Uri};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The built-in example directory's text.
pub const EXAMPLE_DIRECTORY: &str = include_str!("example-directory.toml");
/// The name the built-in example has in error messages.
pub const EXAMPLE_NAME: &str = "<built-in example directory>";

/// Voice-mail escape window bounds (Lync `PSTNVoicemailEscapeTimer`, EXUM.md §5).
pub const ESCAPE_MS_MAX: u32 = 8000;
/// Upper bound of a per-user ring time: beyond an hour is a typo, not a policy.
pub const RING_TIME_S_MAX: u32 = 3600;

/// What the rest of the configuration tells the directory loader.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Whether umproxy has a TLS listener: a dial plan that is not
    /// `unsecured` needs one (EXUM.md behaviour 9).
    pub has_tls_listener: bool,
    /// `[proxy] domains`: the SIP domains served here. Domains of directory
    /// users are served too.
    pub domains: Vec<String>,
}

/// An entry of an index: a user or a contact, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    User(usize),
    Contact(usize),
}

/// An immutable, validated, indexed snapshot of the directory.
#[derive(Debug, Default)]
pub struct Directory {
    users: Vec<User>,
    contacts: Vec<Contact>,
    policies: Vec<Policy>,
    dial_plans: Vec<DialPlan>,
    providers: Vec<Provider>,
    domains: HashSet<String>,
    // Keys are ours, but lookups use the peer's text; the default SipHash
    // keeps a crafted key from costing more than any other (STYLE.md).
    by_aor: HashMap<String, Entry>,
    by_number: HashMap<String, Entry>,
}

impl Directory {
    /// Read and validate `path`. Errors name the file as given.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Directory, DirectoryError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Io { file: file.clone(), source })?;
        Directory::from_toml(&text, &file, opts)
    }

    /// Parse and validate directory text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str, opts: &LoadOptions) -> Result<Directory, DirectoryError> {
        let raw: DirectoryFile = toml::from_str(text)
            .map_err(|e| DirectoryError::Syntax { file: file.to_owned(), message: e.to_string() })?;
        Directory::from_file_shape(raw, file, opts)
    }

    /// Validate objects gathered elsewhere (the LDAP backend) with the same
    /// rules as the file; `file` names the source in errors.
    pub(crate) fn from_file_shape(
        raw: DirectoryFile,
        file: &str,
        opts: &LoadOptions,
    ) -> Result<Directory, DirectoryError> {
        Directory::from_file_shape_with(raw, file, opts, Vec::new())
    }

    /// As [`Directory::from_file_shape`], adding `problems` found while
    /// gathering the objects.
    pub(crate) fn from_file_shape_with(
        raw: DirectoryFile,
        file: &str,
        opts: &LoadOptions,
        problems: Vec<Problem>,
    ) -> Result<Directory, DirectoryError> {
        let mut b = Builder { problems };
        let dir = b.build(raw, opts);
        if b.problems.is_empty() {
            Ok(dir)
        } else {
            Err(DirectoryError::Invalid { file: file.to_owned(), problems: b.problems })
        }
    }

    /// The built-in example directory (`example-directory.toml` beside this
    /// file): used when the configuration names no directory file.
    pub fn example(opts: &LoadOptions) -> Result<Directory, DirectoryError> {
        Directory::from_toml(EXAMPLE_DIRECTORY, EXAMPLE_NAME, opts)
    }

    // -- getters ------------------------------------------------------------

    pub fn users(&self) -> &[User] {
        &self.users
    }
    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }
    pub fn dial_plans(&self) -> &[DialPlan] {
        &self.dial_plans
    }
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The user whose AOR is `user@host` (compared lower-case).
    pub fn user(&self, user: &str, host: &str) -> Option<&User> {
        match self.by_aor.get(&aor_key(user, host)) {
            Some(Entry::User(i)) => self.users.get(*i),
            _ => None,
        }
    }

    /// The user or contact whose AOR is `user@host`.
    pub(crate) fn entry_by_aor(&self, user: &str, host: &str) -> Option<Entry> {
        self.by_aor.get(&aor_key(user, host)).copied()
    }

    /// The user or contact with this E.164 number (`+…`) or line extension.
    pub(crate) fn entry_by_number(&self, number: &str) -> Option<Entry> {
        self.by_number.get(number).copied()
    }

    pub(crate) fn user_at(&self, i: usize) -> Option<&User> {
        self.users.get(i)
    }
    pub(crate) fn contact_at(&self, i: usize) -> Option<&Contact> {
        self.contacts.get(i)
    }

    pub fn dial_plan(&self, name: &str) -> Option<&DialPlan> {
        self.dial_plans.iter().find(|d| d.name == name)
    }
    pub fn policy(&self, identity: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.identity == identity)
    }
    pub fn provider(&self, identity: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.identity == identity)
    }

    /// Whether `host` is a domain served here (compared lower-case).
    pub fn is_local_domain(&self, host: &str) -> bool {
        self.domains.contains(&host.to_ascii_lowercase())
    }

    /// The enabled provider that shares the address space and hosts users:
    /// where calls for users not homed here go (EXUM.md behaviour 12).
    pub fn user_hosting_provider(&self) -> Option<&Provider> {
        self.providers.iter().find(|p| p.enabled && p.enabled_shared_address_space && p.hosts_ocs_users)
    }
}

/// `user@host` lower-case: the AOR index key. RFC 3261 §19.1.4 compares the
/// user part case-sensitively; operators of this kind of directory (AD) do
/// not, and neither do we.
pub(crate) fn aor_key(user: &str, host: &str) -> String {
    let mut k = String::with_capacity(user.len() + host.len() + 1);
    k.push_str(user);
    k.push('@');
    k.push_str(host);
    k.make_ascii_lowercase();
    k
}

/// `+` and 1–15 digits (ITU-T E.164).
pub(crate) fn is_e164(s: &str) -> bool {
    match s.strip_prefix('+') {
        Some(d) => (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// A host name: dot-separated labels of letters, digits and hyphens, ≤ 255.
fn is_fqdn(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The identity of a hosted voice-mail policy granted to a user.
/// `Grant-CsHostedVoicemailPolicy -PolicyName tenant-a` names the tag policy
/// by its bare name; its identity is `tag:tenant-a`. Both spellings are
/// taken and mean the same policy. Global and site policies apply by scope
/// and are never granted.
fn granted_policy(name: &str) -> Result<String, String> {
    let tag = match name.split_once(':') {
        None => name,
        Some((scope, tag)) if scope.eq_ignore_ascii_case("tag") => tag,
        Some(_) => return Err(format!("{name:?}: only a tag policy is granted (\"<name>\" or \"tag:<name>\")")),
    };
    if tag.is_empty() || tag.contains(':') || name.eq_ignore_ascii_case("global") {
        return Err(format!("{name:?}: only a tag policy is granted (\"<name>\" or \"tag:<name>\")"));
    }
    Ok(format!("tag:{tag}"))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

struct Builder {
    problems: Vec<Problem>,
}

impl Builder {
    fn problem(&mut self, object: &str, field: &'static str, problem: impl Into<String>) {
        self.problems.push(Problem { object: object.to_owned(), field, problem: problem.into() });
    }

    /// Parse a `sip:user@host` address: (user, host). No parameters allowed.
    fn sip_address(&mut self, object: &str, text: &str) -> Option<(String, String)> {
        let Some(uri) = Uri::parse(text.as_bytes()) else {
            self.problem(object, "sip_address", format!("{text:?} is not a URI"));
            return None;
        };
        let user = match (uri.scheme, uri.user()) {
            (Scheme::Sip | Scheme::Sips, Some(u)) if !u.is_empty() => u,
            _ => {
                self.problem(object, "sip_address", format!("{text:?} is not a sip:user@host address"));
                return None;
            }
        };
        if !uri.params().is_empty() || !uri.headers().is_empty() || uri.port().is_some() {
            self.problem(object, "sip_address", format!("{text:?} carries a port, parameters or headers"));
            return None;
        }
        Some((user.to_owned(), uri.host().to_ascii_lowercase()))
    }

    /// Parse a `tel:+number[;ext=…]` line URI: (number, extension).
    fn line_uri(&mut self, object: &str, text: &str) -> Option<(String, Option<String>)> {
        let uri = Uri::parse(text.as_bytes()).filter(|u| u.scheme == Scheme::Tel);
        let Some(uri) = uri else {
            self.problem(object, "line_uri", format!("{text:?} is not a tel: URI"));
            return None;
        };
        let number = uri.user().unwrap_or_default();
        if !is_e164(number) {
            self.problem(object, "line_uri", format!("{number:?} is not an E.164 number (+ and 1-15 digits)"));
            return None;
        }
        let ext = uri.param("ext").flatten().map(str::to_owned);
        if let Some(e) = &ext {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                self.problem(object, "line_uri", format!("extension {e:?} is not digits"));
                return None;
            }
        }
        Some((number.to_owned(), ext))
    }

    fn build(&mut self, raw: DirectoryFile, opts: &LoadOptions) -> Directory {
        let mut dir = Directory::default();
        for d in &opts.domains {
            dir.domains.insert(d.to_ascii_lowercase());
        }

        // Hosting providers: identity and proxy_fqdn unique (New-CsHostingProvider).
        let mut seen_fqdn = HashSet::new();
        for p in raw.hosting_provider {
            let object = format!("hosting_provider[{}]", p.identity);
            if dir.providers.iter().any(|q| q.identity == p.identity) {
                self.problem(&object, "identity", "duplicate identity");
                continue;
            }
            let fqdn = p.proxy_fqdn.to_ascii_lowercase();
            if !is_fqdn(&fqdn) {
                self.problem(&object, "proxy_fqdn", format!("{:?} is not an FQDN", p.proxy_fqdn));
            } else if !seen_fqdn.insert(fqdn.clone()) {
                self.problem(&object, "proxy_fqdn", format!("{fqdn:?} is already the proxy_fqdn of another provider"));
            }
            let address = p.address.as_deref().and_then(|a| {
                let parsed = a.parse::<SocketAddr>().ok();
                if parsed.is_none() {
                    self.problem(&object, "address", format!("{a:?} is not ip:port"));
                }
                parsed
            });
            dir.providers.push(Provider {
                identity: p.identity,
                proxy_fqdn: fqdn,
                enabled: p.enabled,
                enabled_shared_address_space: p.enabled_shared_address_space,
                hosts_ocs_users: p.hosts_ocs_users,
                verification_level: p.verification_level,
                address,
                ca: p.ca,
            });
        }

        // Split domain: unknown users of the shared address space go to *the*
        // provider that hosts users (EXUM.md behaviour 12); two would be a guess.
        let hosting: Vec<&str> = dir
            .providers
            .iter()
            .filter(|p| p.enabled && p.enabled_shared_address_space && p.hosts_ocs_users)
            .map(|p| p.identity.as_str())
            .collect();
        if let [_, second, ..] = hosting.as_slice() {
            let problem = format!(
                "a second enabled provider hosting users in the shared address space (after {:?}); keep one",
                hosting.first().copied().unwrap_or_default()
            );
            self.problem(&format!("hosting_provider[{second}]"), "hosts_ocs_users", problem);
        }

        // Policies.
        for p in raw.hosted_voicemail_policy {
            let object = format!("hosted_voicemail_policy[{}]", p.identity);
            let scope_ok = p.identity == "global"
                || p.identity.strip_prefix("site:").is_some_and(|s| !s.is_empty())
                || p.identity.strip_prefix("tag:").is_some_and(|s| !s.is_empty());
            if !scope_ok {
                self.problem(&object, "identity", "must be \"global\", \"site:<name>\" or \"tag:<name>\"");
            }
            if dir.policies.iter().any(|q| q.identity == p.identity) {
                self.problem(&object, "identity", "duplicate identity");
                continue;
            }
            if let Some(d) = &p.destination {
                if !is_fqdn(d) {
                    self.problem(&object, "destination", format!("{d:?} is not an FQDN"));
                }
            }
            for o in &p.organization {
                if !is_fqdn(o) {
                    self.problem(&object, "organization", format!("{o:?} is not an FQDN"));
                }
            }
            dir.policies.push(Policy {
                identity: p.identity,
                destination: p.destination.map(|d| d.to_ascii_lowercase()),
                organization: p.organization,
            });
        }

        // Dial plans: at least one server; security needs a TLS listener.
        for d in raw.um_dial_plan {
            let object = format!("um_dial_plan[{}]", d.name);
            if dir.dial_plans.iter().any(|q| q.name == d.name) {
                self.problem(&object, "name", "duplicate name");
                continue;
            }
            if d.servers.is_empty() {
                self.problem(&object, "servers", "no UM server listed");
            }
            if d.security != Security::Unsecured && !opts.has_tls_listener {
                self.problem(
                    &object,
                    "security",
                    format!("{:?} needs a TLS listener and umproxy has none", d.security.as_str()),
                );
            }
            let mut servers = Vec::with_capacity(d.servers.len());
            for s in d.servers {
                if !is_fqdn(&s.fqdn) {
                    self.problem(&object, "servers", format!("fqdn {:?} is not an FQDN", s.fqdn));
                }
                let address = s.address.as_deref().and_then(|a| {
                    let parsed = a.parse::<SocketAddr>().ok();
                    if parsed.is_none() {
                        self.problem(&object, "servers", format!("address {a:?} of {} is not ip:port", s.fqdn));
                    }
                    parsed
                });
                servers.push(UmServer { fqdn: s.fqdn.to_ascii_lowercase(), address, port: s.port });
            }
            dir.dial_plans.push(DialPlan { name: d.name, security: d.security, servers });
        }

        // Users.
        for u in raw.user {
            self.user(&mut dir, u);
        }
        // Contacts, after users: their sip_address must be used by no user.
        for c in raw.exum_contact {
            self.contact(&mut dir, c);
        }
        dir
    }

    /// Resolve a hosted policy to a route, checking destination and provider
    /// (Set-CsUser -HostedVoiceMail; EXUM.md behaviour 10).
    fn hosted_route(&mut self, dir: &Directory, object: &str, field: &'static str, policy: &str) -> Option<UmRoute> {
        let Some(p) = dir.policy(policy) else {
            self.problem(object, field, format!("no policy {policy:?}"));
            return None;
        };
        let Some(destination) = &p.destination else {
            self.problem(object, field, format!("policy {policy:?} has no destination"));
            return None;
        };
        let provider = dir.providers.iter().find(|q| q.enabled && q.proxy_fqdn == *destination);
        let Some(provider) = provider else {
            self.problem(
                object,
                field,
                format!(
                    "destination {destination:?} of policy {policy:?} is the proxy_fqdn of no enabled hosting_provider"
                ),
            );
            return None;
        };
        if !provider.enabled_shared_address_space {
            self.problem(
                object,
                field,
                format!(
                    "hosting_provider {:?} (destination of {policy:?}) does not share the address space",
                    provider.identity
                ),
            );
            return None;
        }
        Some(UmRoute::Hosted {
            policy: p.identity.clone(),
            destination: destination.clone(),
            organization: p.organization.clone(),
            provider: provider.identity.clone(),
        })
    }

    fn on_prem_route(&mut self, dir: &Directory, object: &str, dial_plan: &str) -> Option<UmRoute> {
        match dir.dial_plan(dial_plan) {
            Some(d) => {
                Some(UmRoute::OnPrem { dial_plan: d.name.clone(), security: d.security, servers: d.servers.clone() })
            }
            None => {
                self.problem(object, "um_dial_plan", format!("no dial plan {dial_plan:?}"));
                None
            }
        }
    }

    fn index_number(&mut self, dir: &mut Directory, object: &str, number: &str, entry: Entry) {
        if dir.by_number.insert(number.to_owned(), entry).is_some() {
            self.problem(object, "line_uri", format!("number {number} is already used by another user or contact"));
        }
    }

    fn user(&mut self, dir: &mut Directory, u: UserFile) {
        let object = format!("user[{}]", u.sip_address);
        let Some((user, host)) = self.sip_address(&object, &u.sip_address) else { return };
        let aor = aor_key(&user, &host);
        if dir.by_aor.contains_key(&aor) {
            self.problem(&object, "sip_address", "duplicate sip_address");
            return;
        }
        let (number, line_extension) = match u.line_uri.as_deref().map(|l| self.line_uri(&object, l)) {
            Some(Some((n, e))) => (Some(n), e),
            _ => (None, None),
        };
        if let Some(h) = &u.ha1.md5 {
            if !is_hex(h, 32) {
                self.problem(&object, "ha1", "md5 must be 32 hex digits");
            }
        }
        for (name, v) in [("sha256", &u.ha1.sha256), ("sha512_256", &u.ha1.sha512_256)] {
            if v.as_deref().is_some_and(|h| !is_hex(h, 64)) {
                self.problem(&object, "ha1", format!("{name} must be 64 hex digits"));
            }
        }
        // msExchUCVoiceMailSettings (EXUM.md §1 table): any "=1" enables hosted.
        let mut is_hosted_voicemail = false;
        for s in &u.voicemail_settings {
            match s.as_str() {
                "CsHostedVoiceMail=1" | "ExchangeHostedVoiceMail=1" => is_hosted_voicemail = true,
                "CsHostedVoiceMail=0" | "ExchangeHostedVoiceMail=0" => {}
                other => self.problem(&object, "voicemail_settings", format!("unknown value {other:?}")),
            }
        }
        let granted = match u.hosted_voicemail_policy.as_deref().map(granted_policy) {
            None => None,
            Some(Ok(tag)) => Some(tag),
            Some(Err(problem)) => {
                self.problem(&object, "hosted_voicemail_policy", problem);
                None
            }
        };
        if let Some(tag) = &granted {
            if dir.policy(tag).is_none() {
                self.problem(&object, "hosted_voicemail_policy", format!("no policy {tag:?}"));
            }
        }
        // Policy precedence user > site > global (EXUM.md behaviour 2).
        let site_policy = u.site.as_ref().map(|s| format!("site:{s}")).filter(|id| dir.policy(id).is_some());
        let applicable = granted
            .clone()
            .filter(|t| dir.policy(t).is_some())
            .or(site_policy)
            .or_else(|| dir.policy("global").map(|p| p.identity.clone()));
        let effective_policy = if is_hosted_voicemail {
            match &applicable {
                None if granted.is_none() => {
                    self.problem(&object, "voicemail_settings", "hosted voice mail is enabled but no hosted_voicemail_policy applies (no tag, no site policy, no global)");
                    None
                }
                None => None,
                Some(p) => self.hosted_route(dir, &object, "hosted_voicemail_policy", p).map(|_| p.clone()),
            }
        } else {
            None
        };
        let um_binding = match (&u.um_dial_plan, &u.um_extension) {
            (Some(dp), Some(ext)) => {
                if dir.dial_plan(dp).is_none() {
                    self.problem(&object, "um_dial_plan", format!("no dial plan {dp:?}"));
                }
                if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
                    self.problem(&object, "um_extension", format!("{ext:?} is not digits"));
                }
                Some((dp.clone(), ext.clone()))
            }
            (Some(_), None) => {
                self.problem(&object, "um_extension", "um_dial_plan is set but um_extension is missing");
                None
            }
            (None, Some(_)) => {
                self.problem(&object, "um_dial_plan", "um_extension is set but um_dial_plan is missing");
                None
            }
            (None, None) => None,
        };
        let ring_time = u.ring_time_s.and_then(|s| {
            if s == 0 || s > RING_TIME_S_MAX {
                self.problem(&object, "ring_time_s", format!("{s} is outside 1-{RING_TIME_S_MAX}"));
                None
            } else {
                Some(Duration::from_secs(u64::from(s)))
            }
        });
        let voicemail_escape = u.voicemail_escape_ms.and_then(|ms| {
            if ms > ESCAPE_MS_MAX {
                self.problem(&object, "voicemail_escape_ms", format!("{ms} is outside 0-{ESCAPE_MS_MAX}"));
                None
            } else {
                Some(Duration::from_millis(u64::from(ms)))
            }
        });
        let home = match u.home.as_deref() {
            None | Some("here") => Home::Here,
            Some(id) => match dir.provider(id) {
                None => {
                    self.problem(&object, "home", format!("no hosting_provider {id:?}"));
                    Home::Here
                }
                Some(p) if !(p.enabled && p.enabled_shared_address_space && p.hosts_ocs_users) => {
                    self.problem(
                        &object,
                        "home",
                        format!("hosting_provider {id:?} must be enabled, share the address space and host users"),
                    );
                    Home::Here
                }
                Some(p) => Home::Provider(p.identity.clone()),
            },
        };
        let i = dir.users.len();
        if let Some(n) = &number {
            self.index_number(dir, &object, n, Entry::User(i));
        }
        if let Some(e) = &line_extension {
            self.index_number(dir, &object, e, Entry::User(i));
        }
        dir.by_aor.insert(aor.clone(), Entry::User(i));
        dir.domains.insert(host.clone());
        dir.users.push(User {
            aor,
            sip_address: format!("sip:{user}@{host}"),
            number,
            line_extension,
            site: u.site,
            ha1: u.ha1,
            is_hosted_voicemail,
            effective_policy,
            um_binding,
            ring_time,
            forward_to_voicemail: u.forward_to_voicemail,
            voicemail_escape,
            home,
        });
    }

    fn contact(&mut self, dir: &mut Directory, c: ContactFile) {
        let object = format!("exum_contact[{}]", c.sip_address);
        let Some((user, host)) = self.sip_address(&object, &c.sip_address) else { return };
        let aor = aor_key(&user, &host);
        match dir.by_aor.get(&aor) {
            Some(Entry::User(_)) => {
                self.problem(&object, "sip_address", "already the sip_address of a user");
                return;
            }
            Some(Entry::Contact(_)) => {
                self.problem(&object, "sip_address", "duplicate sip_address");
                return;
            }
            None => {}
        }
        let Some((number, _)) = self.line_uri(&object, &c.line_uri) else { return };
        // A contact names its policy as a user is granted one (a bare name
        // is the tag policy), or by a scope identity ("global", "site:…").
        let policy = c.hosted_voicemail_policy.as_deref().map(|p| match p {
            "global" => p.to_owned(),
            _ if p.starts_with("site:") => p.to_owned(),
            _ => granted_policy(p).unwrap_or_else(|_| p.to_owned()),
        });
        let route = match (&policy, &c.um_dial_plan) {
            (Some(_), Some(_)) => {
                self.problem(&object, "um_dial_plan", "set either hosted_voicemail_policy or um_dial_plan, not both");
                None
            }
            (None, Some(dp)) => self.on_prem_route(dir, &object, dp),
            // A hosted policy must apply to the contact (New-CsExUmContact):
            // the granted one, else global.
            (Some(p), None) => self.hosted_route(dir, &object, "hosted_voicemail_policy", p),
            (None, None) => match dir.policy("global") {
                Some(_) => self.hosted_route(dir, &object, "hosted_voicemail_policy", "global"),
                None => {
                    self.problem(
                        &object,
                        "hosted_voicemail_policy",
                        "no hosted_voicemail_policy or um_dial_plan applies",
                    );
                    None
                }
            },
        };
        let Some(route) = route else { return };
        let i = dir.contacts.len();
        self.index_number(dir, &object, &number, Entry::Contact(i));
        dir.by_aor.insert(aor.clone(), Entry::Contact(i));
        dir.domains.insert(host.clone());
        let sip_address = format!("sip:{user}@{host}");
        let mailbox =
            Mailbox { aor: aor.clone(), uri: sip_address.clone(), extension: None, number: Some(number.clone()) };
        dir.contacts.push(Contact { kind: c.kind, aor, sip_address, number, target: UmTarget { mailbox, route } });
    }
}

/// The directory in use, swapped whole on reload. Readers take an `Arc` and
/// keep using their snapshot for the rest of their call.
#[derive(Debug)]
pub struct DirectoryHandle {
    /// The file re-read by [`DirectoryHandle::reload`]; `None` for a
    /// directory from LDAP, refreshed with [`DirectoryHandle::install`].
    path: Option<std::path::PathBuf>,
    opts: LoadOptions,
    current: RwLock<Arc<Directory>>,
}

impl DirectoryHandle {
    /// Load `path` for the first time; a bad file is a start-up error.
    pub fn open(path: &Path, opts: LoadOptions) -> Result<DirectoryHandle, DirectoryError> {
        let dir = Directory::load(path, &opts)?;
        Ok(DirectoryHandle { path: Some(path.to_owned()), opts, current: RwLock::new(Arc::new(dir)) })
    }

    /// A handle around a snapshot built elsewhere (the LDAP backend).
    pub fn from_directory(dir: Directory, opts: LoadOptions) -> DirectoryHandle {
        DirectoryHandle { path: None, opts, current: RwLock::new(Arc::new(dir)) }
    }

    /// The snapshot in use.
    pub fn snapshot(&self) -> Arc<Directory> {
        // A poisoned lock only means a writer panicked between two whole
        // `Arc` values; the value inside is still a complete snapshot.
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Install a snapshot built elsewhere (the LDAP backend's refresh every
    /// `cache_ttl_s`); calls in progress keep the one they hold.
    pub fn install(&self, dir: Directory) {
        let new = Arc::new(dir);
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    /// Re-read the file (SIGHUP or on change). On error the old snapshot
    /// stays in use and the error is returned for the log line. A handle
    /// without a file has nothing to re-read and returns its snapshot.
    pub fn reload(&self) -> Result<Arc<Directory>, DirectoryError> {
        let Some(path) = &self.path else { return Ok(self.snapshot()) };
        let new = Arc::new(Directory::load(path, &self.opts)?);
        match self.current.write() {
            Ok(mut g) => *g = Arc::clone(&new),
            Err(p) => *p.into_inner() = Arc::clone(&new),
        }
        Ok(new)
    }
}
