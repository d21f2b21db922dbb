//! LDAP directory backend (DESIGN.md §6): users and ExUM contacts from an
//! Active-Directory-like tree, validated by the same rules as the file.
//!
//! What Lync keeps in Active Directory comes from LDAP: the SIP address
//! (`msRTCSIP-PrimaryUserAddress`), line URI (`msRTCSIP-Line`), whether
//! the account is enabled (`msRTCSIP-UserEnabled`), hosted voice mail
//! (`msExchUCVoiceMailSettings`) and the on-premises UM binding (the `EUM:`
//! entry of `proxyAddresses`). What Lync keeps in its own configuration
//! store — hosted voice mail policies, UM dial plans, hosting providers —
//! comes from a TOML "topology" file of the `directory.toml` shape (its
//! `[[user]]` and `[[exum_contact]]` tables, if any, are kept too).
//!
//! | model field | attribute |
//! |---|---|
//! | sip_address | `msRTCSIP-PrimaryUserAddress` |
//! | line_uri | `msRTCSIP-Line` |
//! | voicemail_settings | `msExchUCVoiceMailSettings` (all values) |
//! | um_dial_plan, um_extension | `proxyAddresses: EUM:<extension>;phone-context=<dial plan name>` |
//! | site, home, hosted_voicemail_policy | `umproxySite`, `umproxyHome`, `umproxyHostedVoicemailPolicy` |
//! | ring_time_s, forward_to_voicemail, voicemail_escape_ms | `umproxyRingTimeS`, `umproxyForwardToVoicemail`, `umproxyVoicemailEscapeMs` |
//! | ha1 | `umproxyHa1Md5`, `umproxyHa1Sha256`, `umproxyHa1Sha512256` |
//! | contact kind, dial plan | `umproxyExumKind`, `umproxyUmDialPlan` |
//!
//! Users: `(&(objectClass=umproxyUser)(msRTCSIP-UserEnabled=TRUE))`;
//! contacts: `(objectClass=umproxyExumContact)`; subtree of `base_dn`, paged.

use crate::exum::directory::{Directory, LoadOptions};
use crate::exum::error::{DirectoryError, Problem};
use crate::exum::model::{ContactFile, ContactKind, DirectoryFile, Ha1, UserFile};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::time::Duration;

/// Most entries one search may return: a bound on memory for a directory
/// that is far larger than expected (a wrong `base_dn`).
pub const MAX_ENTRIES: usize = 200_000;

const USER_FILTER: &str = "(&(objectClass=umproxyUser)(msRTCSIP-UserEnabled=TRUE))";
const CONTACT_FILTER: &str = "(objectClass=umproxyExumContact)";
const USER_ATTRS: &[&str] = &[
    "msRTCSIP-PrimaryUserAddress",
    "msRTCSIP-Line",
    "msExchUCVoiceMailSettings",
    "proxyAddresses",
    "umproxySite",
    "umproxyHome",
    "umproxyHostedVoicemailPolicy",
    "umproxyRingTimeS",
    "umproxyForwardToVoicemail",
    "umproxyVoicemailEscapeMs",
    "umproxyHa1Md5",
    "umproxyHa1Sha256",
    "umproxyHa1Sha512256",
];
const CONTACT_ATTRS: &[&str] = &[
    "msRTCSIP-PrimaryUserAddress",
    "msRTCSIP-Line",
    "umproxyExumKind",
    "umproxyHostedVoicemailPolicy",
    "umproxyUmDialPlan",
];

/// `[directory.ldap]`.
#[derive(Clone)]
pub struct LdapSettings {
    /// `ldap://host:port` or `ldaps://…`.
    pub url: String,
    /// Simple bind; `None` = anonymous.
    pub bind_dn: Option<String>,
    /// Read by the config layer from `bind_password_file`.
    pub bind_password: Option<String>,
    pub base_dn: String,
    /// Connect and per-operation timeout.
    pub timeout: Duration,
    /// Simple paged results (RFC 2696) page size; AD returns at most 1000 per page.
    pub page_size: i32,
}

impl std::fmt::Debug for LdapSettings {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSettings")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &self.bind_password.as_ref().map(|_| "<redacted>"))
            .field("base_dn", &self.base_dn)
            .field("timeout", &self.timeout)
            .field("page_size", &self.page_size)
            .finish()
    }
}

/// Load users and contacts from LDAP onto the topology file's policies,
/// dial plans and providers, and validate the whole. Errors name
/// `topology_file + url` as their file.
pub async fn load(
    settings: &LdapSettings,
    topology: &str,
    topology_file: &str,
    opts: &LoadOptions,
) -> Result<Directory, DirectoryError> {
    let mut raw: DirectoryFile = toml::from_str(topology)
        .map_err(|e| DirectoryError::Syntax { file: topology_file.to_owned(), message: e.to_string() })?;
    let err = |operation: &'static str, e: ldap3::LdapError| DirectoryError::Ldap {
        url: settings.url.clone(),
        operation,
        message: e.to_string(),
    };
    let conn_settings = LdapConnSettings::new().set_conn_timeout(settings.timeout);
    let (conn, mut ldap) =
        LdapConnAsync::with_settings(conn_settings, &settings.url).await.map_err(|e| err("connect", e))?;
    ldap3::drive!(conn);
    if let Some(dn) = &settings.bind_dn {
        let pw = settings.bind_password.as_deref().unwrap_or_default();
        ldap.with_timeout(settings.timeout)
            .simple_bind(dn, pw)
            .await
            .and_then(|r| r.success())
            .map_err(|e| err("bind", e))?;
    }
    let users = search(&mut ldap, settings, USER_FILTER, USER_ATTRS).await?;
    let contacts = search(&mut ldap, settings, CONTACT_FILTER, CONTACT_ATTRS).await?;
    // Best effort: the server may already have closed; the data is in hand.
    let _ = ldap.unbind().await;

    let mut problems = Vec::new();
    for e in &users {
        if let Some(u) = user_from_entry(e, &mut problems) {
            raw.user.push(u);
        }
    }
    for e in &contacts {
        if let Some(c) = contact_from_entry(e, &mut problems) {
            raw.exum_contact.push(c);
        }
    }
    let label = format!("{topology_file} + {}", settings.url);
    Directory::from_file_shape_with(raw, &label, opts, problems)
}

async fn search(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    filter: &str,
    attrs: &[&str],
) -> Result<Vec<SearchEntry>, DirectoryError> {
    let err = |message: String| DirectoryError::Ldap { url: settings.url.clone(), operation: "search", message };
    let adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> =
        vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(settings.page_size))];
    let mut stream = ldap
        .with_timeout(settings.timeout)
        .streaming_search_with(adapters, &settings.base_dn, Scope::Subtree, filter, attrs.to_vec())
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    while let Some(entry) = stream.next().await.map_err(|e| err(e.to_string()))? {
        if out.len() >= MAX_ENTRIES {
            let _ = stream.finish().await;
            return Err(err(format!("{filter} matches more than {MAX_ENTRIES} entries under {}", settings.base_dn)));
        }
        out.push(SearchEntry::construct(entry));
    }
    stream.finish().await.success().map_err(|e| err(e.to_string()))?;
    Ok(out)
}

/// All values of an attribute (names compared case-insensitively, as LDAP does).
fn values<'e>(e: &'e SearchEntry, name: &str) -> &'e [String] {
    e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or_default()
}

fn first(e: &SearchEntry, name: &str) -> Option<String> {
    values(e, name).first().cloned()
}

fn object_of(e: &SearchEntry, kind: &str) -> String {
    match first(e, "msRTCSIP-PrimaryUserAddress") {
        Some(a) => format!("{kind}[{a}]"),
        None => format!("{kind}[dn: {}]", e.dn),
    }
}

fn number<T: std::str::FromStr>(e: &SearchEntry, attr: &'static str, p: &mut Vec<Problem>) -> Option<T> {
    let v = first(e, attr)?;
    let parsed = v.parse().ok();
    if parsed.is_none() {
        p.push(Problem { object: object_of(e, "user"), field: attr, problem: format!("{v:?} is not a number") });
    }
    parsed
}

fn boolean(e: &SearchEntry, attr: &'static str, p: &mut Vec<Problem>) -> bool {
    match first(e, attr).as_deref() {
        None | Some("FALSE") => false,
        Some("TRUE") => true,
        Some(other) => {
            p.push(Problem {
                object: object_of(e, "user"),
                field: attr,
                problem: format!("{other:?} is not TRUE or FALSE"),
            });
            false
        }
    }
}

/// The UM binding from `proxyAddresses`: the first `EUM:` entry whose address
/// is an extension (digits), else the first `EUM:` entry (then validation
/// reports it).
fn eum_binding(e: &SearchEntry) -> Option<(String, Option<String>)> {
    let eums: Vec<(String, Option<String>)> = values(e, "proxyAddresses")
        .iter()
        .filter_map(|v| v.get(..4).filter(|p| p.eq_ignore_ascii_case("eum:")).and_then(|_| v.get(4..)))
        .map(|rest| {
            let mut parts = rest.split(';');
            let address = parts.next().unwrap_or_default().to_owned();
            let context =
                parts.find_map(|p| p.strip_prefix("phone-context=").or_else(|| p.strip_prefix("Phone-Context=")));
            (address, context.map(str::to_owned))
        })
        .collect();
    let digits = eums.iter().position(|(a, _)| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()));
    eums.into_iter().nth(digits.unwrap_or(0))
}

fn user_from_entry(e: &SearchEntry, problems: &mut Vec<Problem>) -> Option<UserFile> {
    let Some(sip_address) = first(e, "msRTCSIP-PrimaryUserAddress") else {
        problems.push(Problem {
            object: object_of(e, "user"),
            field: "msRTCSIP-PrimaryUserAddress",
            problem: "missing".into(),
        });
        return None;
    };
    let (um_extension, um_dial_plan) = match eum_binding(e) {
        Some((ext, Some(dp))) => (Some(ext), Some(dp)),
        Some((ext, None)) => {
            problems.push(Problem {
                object: object_of(e, "user"),
                field: "proxyAddresses",
                problem: format!("EUM:{ext} has no phone-context (the dial plan)"),
            });
            (None, None)
        }
        None => (None, None),
    };
    Some(UserFile {
        sip_address,
        line_uri: first(e, "msRTCSIP-Line"),
        site: first(e, "umproxySite"),
        ha1: Ha1 {
            md5: first(e, "umproxyHa1Md5"),
            sha256: first(e, "umproxyHa1Sha256"),
            sha512_256: first(e, "umproxyHa1Sha512256"),
        },
        voicemail_settings: values(e, "msExchUCVoiceMailSettings").to_vec(),
        hosted_voicemail_policy: first(e, "umproxyHostedVoicemailPolicy"),
        um_dial_plan,
        um_extension,
        ring_time_s: number(e, "umproxyRingTimeS", problems),
        forward_to_voicemail: boolean(e, "umproxyForwardToVoicemail", problems),
        voicemail_escape_ms: number(e, "umproxyVoicemailEscapeMs", problems),
        home: first(e, "umproxyHome"),
    })
}

fn contact_from_entry(e: &SearchEntry, problems: &mut Vec<Problem>) -> Option<ContactFile> {
    let object = object_of(e, "exum_contact");
    let mut missing = |field: &'static str| {
        problems.push(Problem { object: object.clone(), field, problem: "missing".into() });
    };
    let sip_address = first(e, "msRTCSIP-PrimaryUserAddress");
    let line_uri = first(e, "msRTCSIP-Line");
    let kind = first(e, "umproxyExumKind");
    if sip_address.is_none() {
        missing("msRTCSIP-PrimaryUserAddress");
    }
    if line_uri.is_none() {
        missing("msRTCSIP-Line");
    }
    let kind = match kind.as_deref() {
        Some("subscriber_access") => Some(ContactKind::SubscriberAccess),
        Some("auto_attendant") => Some(ContactKind::AutoAttendant),
        Some(other) => {
            problems.push(Problem {
                object: object.clone(),
                field: "umproxyExumKind",
                problem: format!("{other:?} is not subscriber_access or auto_attendant"),
            });
            None
        }
        None => {
            missing("umproxyExumKind");
            None
        }
    };
    Some(ContactFile {
        kind: kind?,
        sip_address: sip_address?,
        line_uri: line_uri?,
        hosted_voicemail_policy: first(e, "umproxyHostedVoicemailPolicy"),
        um_dial_plan: first(e, "umproxyUmDialPlan"),
    })
}

#[cfg(test)]
#[path = "ldap_test.rs"]
mod tests;
