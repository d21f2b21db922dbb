//! Behaviour tests of the ExUM core, named after EXUM.md's "What an open
//! proxy must implement" list (`b1_…` = behaviour 1).

use crate::exum::decision::{
    accept_from_provider, classify_request, divert_reason, provider_caller, voicemail_target, CallOutcome,
    Classification, DiversionReason, ProviderAcceptance, ProviderCaller,
};
use crate::exum::directory::{Directory, DirectoryHandle, LoadOptions};
use crate::exum::error::{DirectoryError, UmRequestError};
use crate::exum::model::{ContactKind, Home, UmRoute, UmServer, UmTarget};
use crate::exum::plan::{EscapeGuard, HealthTable, UmAttempt, UmAttemptPlan};
use crate::exum::um_request::{build_um_invite, UmInviteContext, UmTemplates};
use sip_message::Message;
use std::time::{Duration, Instant};

const VALID: &str = include_str!("../../tests/fixtures/exum/valid.toml");
const INVALID_HOSTED_POLICY: &str = include_str!("../../tests/fixtures/exum/invalid-hosted-policy.toml");
const INVALID_PROVIDERS: &str = include_str!("../../tests/fixtures/exum/invalid-providers.toml");
const INVALID_CONTACTS: &str = include_str!("../../tests/fixtures/exum/invalid-contacts.toml");

fn opts() -> LoadOptions {
    LoadOptions { has_tls_listener: true, domains: vec!["contoso.test".to_owned()] }
}

fn dir() -> Directory {
    match Directory::from_toml(VALID, "directory.toml", &opts()) {
        Ok(d) => d,
        Err(e) => panic!("valid fixture rejected:\n{e}"),
    }
}

fn errors(text: &str, opts: &LoadOptions) -> Vec<String> {
    match Directory::from_toml(text, "directory.toml", opts) {
        Ok(_) => panic!("invalid directory accepted"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

fn assert_has(errors: &[String], expected: &str) {
    assert!(errors.iter().any(|e| e == expected), "missing error {expected:?} in:\n{}", errors.join("\n"));
}

fn invite(ruri: &str, from: &str, extra: &str) -> Message {
    let text = format!(
        "INVITE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-caller-1\r\n\
         Max-Forwards: 69\r\n\
         From: <{from}>;tag=caller-tag-1\r\n\
         To: <sip:callee@contoso.test>\r\n\
         Call-ID: call-1@192.0.2.10\r\n\
         CSeq: 7 INVITE\r\n\
         Contact: <sip:caller@192.0.2.10:5061;transport=tls>\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    );
    match Message::parse_slice(text.as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("test INVITE does not parse: {e:?}"),
    }
}

fn user<'d>(d: &'d Directory, name: &str) -> &'d crate::exum::model::User {
    match d.user(name, "contoso.test") {
        Some(u) => u,
        None => panic!("no user {name}"),
    }
}

fn target_of(d: &Directory, name: &str) -> UmTarget {
    match voicemail_target(d, user(d, name)) {
        Some(t) => t,
        None => panic!("{name} has no voice mail"),
    }
}

fn hosted_policy(t: &UmTarget) -> &str {
    match &t.route {
        UmRoute::Hosted { policy, .. } => policy,
        UmRoute::OnPrem { .. } => panic!("expected hosted, got on-prem"),
    }
}

fn header_lines<'a>(bytes: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}: ");
    bytes.split("\r\n").filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

// -- behaviour 1: hosted vs on-prem vs none ----------------------------------

#[test]
fn b1_hosted_flag_wins_over_on_prem_binding() {
    let d = dir();
    let erin = target_of(&d, "erin");
    assert_eq!(erin.mode(), "hosted");
    assert_eq!(hosted_policy(&erin), "global");
}

#[test]
fn b1_on_prem_binding_without_hosted_flag_goes_to_dial_plan() {
    let d = dir();
    let alice = target_of(&d, "alice");
    match &alice.route {
        UmRoute::OnPrem { dial_plan, servers, .. } => {
            assert_eq!(dial_plan, "dp-redmond");
            let names: Vec<_> = servers.iter().map(|s| s.fqdn.as_str()).collect();
            assert_eq!(names, ["um1.contoso.test", "um2.contoso.test"]);
        }
        UmRoute::Hosted { .. } => panic!("alice is on-prem"),
    }
    assert_eq!(alice.mailbox.extension.as_deref(), Some("2001"));
}

#[test]
fn b1_user_without_hosted_flag_or_binding_has_no_voicemail() {
    let d = dir();
    assert_eq!(voicemail_target(&d, user(&d, "frank")), None);
    let c = classify_request(
        &d,
        &invite("sip:frank@contoso.test", "sip:bob@contoso.test", ""),
        Some("bob@contoso.test"),
        None,
    );
    assert!(matches!(c, Classification::LocalUser { voicemail: None, .. }), "{c:?}");
}

// -- behaviour 2: policy precedence user > site > global ---------------------

#[test]
fn b2_policy_resolution_user_then_site_then_global() {
    let d = dir();
    assert_eq!(hosted_policy(&target_of(&d, "bob")), "tag:tenant-a");
    assert_eq!(hosted_policy(&target_of(&d, "carol")), "site:paris");
    assert_eq!(hosted_policy(&target_of(&d, "dave")), "global");
    match &target_of(&d, "carol").route {
        UmRoute::Hosted { destination, organization, provider, .. } => {
            assert_eq!(destination, "exap.um.example.net");
            assert_eq!(organization, &["paris.contoso.test".to_owned()]);
            assert_eq!(provider, "exchange-online");
        }
        UmRoute::OnPrem { .. } => panic!("carol is hosted"),
    }
}

#[test]
fn b2_granted_policy_by_its_bare_name_is_the_tag_policy() {
    // Grant-CsHostedVoicemailPolicy -PolicyName tenant-a: the bare name and
    // the identity tag:tenant-a are one policy, for users and contacts alike.
    let bare = VALID.replace(r#"hosted_voicemail_policy = "tag:tenant-a""#, r#"hosted_voicemail_policy = "tenant-a""#);
    assert_ne!(bare, VALID, "the fixture grants tag:tenant-a");
    let d = match Directory::from_toml(&bare, "directory.toml", &opts()) {
        Ok(d) => d,
        Err(e) => panic!("bare policy name rejected:\n{e}"),
    };
    assert_eq!(target_of(&d, "bob"), target_of(&dir(), "bob"));
    assert_eq!(hosted_policy(&target_of(&d, "bob")), "tag:tenant-a");
    let aa = |d: &Directory| {
        let c = classify_request(d, &invite("sip:aa-main@contoso.test", "sip:x@example.net", ""), None, None);
        match c {
            Classification::Contact { target, .. } => target,
            other => panic!("expected the contact, got {other:?}"),
        }
    };
    assert_eq!(aa(&d), aa(&dir()));
    // A scope identity is not granted; an unknown name names its tag.
    let global =
        VALID.replace(r#"hosted_voicemail_policy = "tag:tenant-a""#, r#"hosted_voicemail_policy = "site:paris""#);
    assert!(errors(&global, &opts()).iter().any(|e| e.contains("only a tag policy is granted")));
    let unknown =
        VALID.replace(r#"hosted_voicemail_policy = "tag:tenant-a""#, r#"hosted_voicemail_policy = "tenant-z""#);
    assert!(errors(&unknown, &opts()).iter().any(|e| e.ends_with(r#"no policy "tag:tenant-z""#)));
}

#[test]
fn b2_b3_hosted_user_without_applicable_policy_or_destination_is_rejected() {
    let e = errors(INVALID_HOSTED_POLICY, &opts());
    assert_has(&e, "directory.toml: user[sip:ivan@contoso.test].voicemail_settings: hosted voice mail is enabled but no hosted_voicemail_policy applies (no tag, no site policy, no global)");
    assert_has(&e, "directory.toml: user[sip:judy@contoso.test].hosted_voicemail_policy: policy \"tag:no-destination\" has no destination");
    assert_has(&e, "directory.toml: user[sip:ken@contoso.test].hosted_voicemail_policy: no policy \"tag:tenant-x\"");
}

// -- behaviours 3, 9, 10: validation mirroring the cmdlets ------------------

#[test]
fn b3_b10_providers_unique_and_destination_matched_by_an_enabled_provider() {
    let e = errors(INVALID_PROVIDERS, &opts());
    assert_has(&e, "directory.toml: hosting_provider[exchange-online].identity: duplicate identity");
    assert_has(
        &e,
        "directory.toml: hosting_provider[second].proxy_fqdn: \"exap.um.example.net\" is already the proxy_fqdn of another provider",
    );
    assert_has(&e, "directory.toml: user[sip:alice@contoso.test].hosted_voicemail_policy: destination \"exap.um.example.net\" of policy \"global\" is the proxy_fqdn of no enabled hosting_provider");
    assert_has(&e, "directory.toml: user[sip:bob@contoso.test].home: hosting_provider \"exchange-online\" must be enabled, share the address space and host users");
    assert_has(&e, "directory.toml: user[sip:carol@contoso.test].home: no hosting_provider \"nobody\"");
}

#[test]
fn b3_b9_contacts_numbers_references_and_dial_plan_security() {
    let no_tls = LoadOptions { has_tls_listener: false, ..opts() };
    let e = errors(INVALID_CONTACTS, &no_tls);
    assert_has(&e, "directory.toml: user[sip:alice@contoso.test].um_dial_plan: no dial plan \"dp-nowhere\"");
    assert_has(
        &e,
        "directory.toml: exum_contact[sip:alice@contoso.test].sip_address: already the sip_address of a user",
    );
    assert_has(&e, "directory.toml: exum_contact[sip:sa@contoso.test].line_uri: number +15550100 is already used by another user or contact");
    assert_has(&e, "directory.toml: exum_contact[sip:aa@contoso.test].line_uri: \"5550198\" is not an E.164 number (+ and 1-15 digits)");
    assert_has(
        &e,
        "directory.toml: exum_contact[sip:aa2@contoso.test].hosted_voicemail_policy: no policy \"tag:missing\"",
    );
    assert_has(&e, "directory.toml: um_dial_plan[dp-empty].servers: no UM server listed");
    assert_has(
        &e,
        "directory.toml: um_dial_plan[dp-empty].security: \"secured\" needs a TLS listener and umproxy has none",
    );
    // With a TLS listener the security problem goes away, the others stay.
    let e = errors(INVALID_CONTACTS, &opts());
    assert!(!e.iter().any(|l| l.contains(".security:")), "{e:?}");
}

#[test]
fn b9_unsecured_dial_plan_needs_no_tls_listener() {
    let text = VALID.replace("security = \"sip_secured\"", "security = \"unsecured\"");
    let no_tls = LoadOptions { has_tls_listener: false, ..opts() };
    assert!(Directory::from_toml(&text, "directory.toml", &no_tls).is_ok());
    assert!(Directory::from_toml(VALID, "directory.toml", &no_tls).is_err());
}

#[test]
fn b3_unknown_keys_are_rejected_with_the_file_name() {
    let text = "[[user]]\nsip_address = \"sip:a@contoso.test\"\nhosted_voicemail = true\n";
    match Directory::from_toml(text, "directory.toml", &opts()) {
        Err(e @ DirectoryError::Syntax { .. }) => {
            let s = e.to_string();
            assert!(s.starts_with("directory.toml: ") && s.contains("hosted_voicemail"), "{s}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn b3_duplicate_users_and_bad_values_name_the_field() {
    let text = "[[user]]\nsip_address = \"sip:a@contoso.test\"\nvoicemail_escape_ms = 9000\nring_time_s = 0\n\
                voicemail_settings = [\"CsHostedVoiceMail=yes\"]\nha1 = { sha256 = \"abc\" }\n\
                [[user]]\nsip_address = \"sip:A@Contoso.test\"\n";
    let e = errors(text, &opts());
    assert_has(&e, "directory.toml: user[sip:a@contoso.test].voicemail_escape_ms: 9000 is outside 0-8000");
    assert_has(&e, "directory.toml: user[sip:a@contoso.test].ring_time_s: 0 is outside 1-3600");
    assert_has(
        &e,
        "directory.toml: user[sip:a@contoso.test].voicemail_settings: unknown value \"CsHostedVoiceMail=yes\"",
    );
    assert_has(&e, "directory.toml: user[sip:a@contoso.test].ha1: sha256 must be 64 hex digits");
    assert_has(&e, "directory.toml: user[sip:A@Contoso.test].sip_address: duplicate sip_address");
}

#[test]
fn reload_keeps_the_old_snapshot_when_the_new_file_is_bad() {
    let path = std::env::temp_dir().join(format!("umproxy-exum-reload-{}.toml", std::process::id()));
    std::fs::write(&path, VALID).unwrap();
    let handle = DirectoryHandle::open(&path, opts()).unwrap();
    let before = handle.snapshot();
    std::fs::write(&path, INVALID_HOSTED_POLICY).unwrap();
    let err = handle.reload().unwrap_err();
    assert!(err.to_string().contains("user[sip:ivan@contoso.test]"), "{err}");
    assert!(std::sync::Arc::ptr_eq(&before, &handle.snapshot()));
    std::fs::write(&path, VALID.replace("forward_to_voicemail = true", "forward_to_voicemail = false")).unwrap();
    let after = handle.reload().unwrap();
    assert!(!std::sync::Arc::ptr_eq(&before, &after));
    assert!(!user(&after, "grace").forward_to_voicemail);
    assert!(user(&before, "grace").forward_to_voicemail, "readers keep their snapshot");
    let _ = std::fs::remove_file(&path);
}

// -- behaviour 4: triggers ---------------------------------------------------

#[test]
fn b4_divert_reasons_by_outcome() {
    use DiversionReason::*;
    assert_eq!(divert_reason(CallOutcome::NoAnswerTimeout), Some(NoAnswer));
    assert_eq!(divert_reason(CallOutcome::BranchesFailed(&[486])), Some(UserBusy));
    assert_eq!(divert_reason(CallOutcome::BranchesFailed(&[480, 600])), Some(UserBusy));
    assert_eq!(divert_reason(CallOutcome::BranchesFailed(&[486, 603])), Some(Deflection));
    assert_eq!(divert_reason(CallOutcome::NoContacts), Some(Unavailable));
    assert_eq!(divert_reason(CallOutcome::BranchesFailed(&[404, 408, 480, 503])), Some(Unavailable));
    // Never: any 2xx, the caller's CANCEL, or a final the caller must see.
    assert_eq!(divert_reason(CallOutcome::Answered), None);
    assert_eq!(divert_reason(CallOutcome::CallerCancelled), None);
    assert_eq!(divert_reason(CallOutcome::BranchesFailed(&[486, 200])), None);
    assert_eq!(divert_reason(CallOutcome::BranchesFailed(&[403])), None);
    assert_eq!(divert_reason(CallOutcome::BranchesFailed(&[488, 480])), None);
    assert_eq!(divert_reason(CallOutcome::BranchesFailed(&[604])), None);
}

#[test]
fn b4_rfc6044_causes() {
    use DiversionReason::*;
    let table: Vec<_> =
        [UserBusy, NoAnswer, Unavailable, Unconditional, Deflection].iter().map(|r| (r.as_str(), r.cause())).collect();
    assert_eq!(
        table,
        [("user-busy", 486), ("no-answer", 408), ("unavailable", 404), ("unconditional", 302), ("deflection", 480)]
    );
    assert_eq!(crate::exum::decision::reason_label(None), "subscriber_access");
}

#[test]
fn b4_local_user_rings_with_ring_time_and_escape() {
    let d = dir();
    let c = classify_request(
        &d,
        &invite("sip:alice@contoso.test", "sip:bob@contoso.test", ""),
        Some("bob@contoso.test"),
        None,
    );
    match c {
        Classification::LocalUser { aor, ring, voicemail } => {
            assert_eq!(aor, "alice@contoso.test");
            assert_eq!(ring.ring_time, Some(Duration::from_secs(20)));
            assert_eq!(ring.escape, Some(Duration::from_millis(1500)));
            assert_eq!(voicemail.map(|t| t.mode()), Some("on_prem"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn b4_forward_immediately_and_explicit_voicemail_skip_the_endpoints() {
    let d = dir();
    let c = classify_request(
        &d,
        &invite("sip:grace@contoso.test", "sip:bob@contoso.test", ""),
        Some("bob@contoso.test"),
        None,
    );
    assert!(matches!(c, Classification::ForwardImmediately { .. }), "{c:?}");
    assert_eq!(c.immediate_reason(), Some(DiversionReason::Unconditional));
    let req = invite("sip:carol@contoso.test;opaque=app:voicemail", "sip:bob@contoso.test", "");
    let c = classify_request(&d, &req, Some("bob@contoso.test"), None);
    assert!(
        matches!(&c, Classification::VoicemailFor { target } if target.mailbox.aor == "carol@contoso.test"),
        "{c:?}"
    );
    let req = invite("sip:frank@contoso.test;opaque=app:voicemail", "sip:bob@contoso.test", "");
    assert_eq!(
        classify_request(&d, &req, Some("bob@contoso.test"), None),
        Classification::NoVoicemail { aor: "frank@contoso.test".into() }
    );
}

// -- behaviour 5: the INVITE to UM -------------------------------------------

fn templates() -> UmTemplates {
    UmTemplates::new(None, None).unwrap()
}

#[test]
fn b5_busy_on_prem_invite_has_one_diversion_and_history_info() {
    let d = dir();
    let t = target_of(&d, "alice");
    let req = invite(
        "sip:alice@contoso.test",
        "sip:bob@contoso.test",
        "Diversion: <sip:old@elsewhere.test>;reason=no-answer;counter=1\r\nDiversion: <sip:older@elsewhere.test>\r\n",
    );
    let server = &d.dial_plan("dp-redmond").unwrap().servers[1];
    let ctx =
        UmInviteContext { templates: &templates(), reason: Some(DiversionReason::UserBusy), server: Some(server) };
    let out = build_um_invite(&req, &t, &ctx).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.starts_with("INVITE sip:um2.contoso.test;transport=tls SIP/2.0\r\n"), "{text}");
    assert_eq!(header_lines(text, "Diversion"), ["<sip:alice@contoso.test>;reason=user-busy;counter=1"]);
    assert_eq!(
        header_lines(text, "History-Info"),
        ["<sip:alice@contoso.test>;index=1", "<sip:um2.contoso.test;transport=tls;cause=486>;index=1.1;mp=1"]
    );
    // The caller's dialog identifiers are kept; the Via and Max-Forwards are the core's job.
    assert_eq!(header_lines(text, "Call-ID"), ["call-1@192.0.2.10"]);
    assert_eq!(header_lines(text, "From"), ["<sip:bob@contoso.test>;tag=caller-tag-1"]);
    assert_eq!(header_lines(text, "CSeq"), ["7 INVITE"]);
    assert_eq!(header_lines(text, "Via"), ["SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-caller-1"]);
    assert_eq!(header_lines(text, "Max-Forwards"), ["69"]);
    assert!(Message::parse_slice(out.as_ref()).is_ok());
}

#[test]
fn b5_hosted_request_uri_carries_destination_and_organizations() {
    let d = dir();
    let t = target_of(&d, "bob");
    let req = invite("sip:bob@contoso.test", "sip:alice@contoso.test", "");
    let ctx = UmInviteContext { templates: &templates(), reason: Some(DiversionReason::NoAnswer), server: None };
    let out = build_um_invite(&req, &t, &ctx).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    let ruri =
        "sip:exap.um.example.net;opaque=app:voicemail;ms-organization=tenant-a.example.net%2Ctenant-a2.example.net";
    assert!(text.starts_with(&format!("INVITE {ruri} SIP/2.0\r\n")), "{text}");
    assert_eq!(header_lines(text, "Diversion"), ["<sip:bob@contoso.test>;reason=no-answer;counter=1"]);
    assert_eq!(
        header_lines(text, "History-Info"),
        ["<sip:bob@contoso.test>;index=1".to_owned(), format!("<{ruri};cause=408>;index=1.1;mp=1")]
    );
}

#[test]
fn b5_incoming_history_info_is_continued() {
    let d = dir();
    let t = target_of(&d, "alice");
    let ctx = UmInviteContext { templates: &templates(), reason: Some(DiversionReason::NoAnswer), server: None };
    // The previous hop recorded alice as the last target: our UM entry is its child.
    let req = invite(
        "sip:alice@contoso.test",
        "sip:bob@contoso.test",
        "History-Info: <sip:sales@contoso.test>;index=1, <sip:Alice@contoso.test>;index=1.1;mp=1\r\n",
    );
    let out = build_um_invite(&req, &t, &ctx).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        header_lines(text, "History-Info"),
        [
            "<sip:sales@contoso.test>;index=1, <sip:Alice@contoso.test>;index=1.1;mp=1",
            "<sip:um1.contoso.test;transport=tls;cause=408>;index=1.1.1;mp=1.1",
        ]
    );
    // The last entry is someone else: alice is recorded as its retarget first.
    let req =
        invite("sip:alice@contoso.test", "sip:bob@contoso.test", "History-Info: <sip:sales@contoso.test>;index=1\r\n");
    let out = build_um_invite(&req, &t, &ctx).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        header_lines(text, "History-Info")[1..],
        ["<sip:alice@contoso.test>;index=1.1", "<sip:um1.contoso.test;transport=tls;cause=408>;index=1.1.1;mp=1.1",]
    );
}

#[test]
fn b5_privacy_history_marks_our_entries() {
    let d = dir();
    let t = target_of(&d, "alice");
    let req = invite("sip:alice@contoso.test", "sip:bob@contoso.test", "Privacy: id; history\r\n");
    let ctx = UmInviteContext { templates: &templates(), reason: Some(DiversionReason::Unavailable), server: None };
    let out = build_um_invite(&req, &t, &ctx).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        header_lines(text, "History-Info"),
        [
            "<sip:alice@contoso.test?Privacy=history>;index=1",
            "<sip:um1.contoso.test;transport=tls;cause=404?Privacy=history>;index=1.1;mp=1",
        ]
    );
    assert_eq!(header_lines(text, "Privacy"), ["id; history"]);
}

#[test]
fn b5_request_uri_templates_and_their_errors() {
    let d = dir();
    let custom = UmTemplates::new(
        Some("sip:{extension}@{um_fqdn};transport=tls;phone-context={dial_plan}"),
        Some("sips:{destination};opaque=app:voicemail;target={target};org={organization}"),
    )
    .unwrap();
    assert_eq!(
        custom.request_uri(&target_of(&d, "alice"), None).unwrap(),
        "sip:2001@um1.contoso.test;transport=tls;phone-context=dp-redmond"
    );
    assert_eq!(
        custom.request_uri(&target_of(&d, "carol"), None).unwrap(),
        "sips:exap.um.example.net;opaque=app:voicemail;target=sip%3Acarol%40contoso.test;org=paris.contoso.test"
    );
    assert_eq!(
        UmTemplates::new(Some("sip:{destination}"), None),
        Err(UmRequestError::UnknownPlaceholder {
            key: "on_prem_request_uri",
            name: "destination".into(),
            allowed: "{user}, {domain}, {extension}, {number}, {target}, {um_fqdn}, {dial_plan}, {transport}".into()
        })
    );
    assert!(matches!(UmTemplates::new(None, Some("sip:{destination")), Err(UmRequestError::BadTemplate { .. })));
    assert!(matches!(UmTemplates::new(Some("tel:{number}"), None), Err(UmRequestError::BadTemplate { .. })));
    // A template that renders to no URI is an error at request time, not garbage on the wire.
    let empty_ext = UmTemplates::new(Some("sip:{extension}@{um_fqdn}"), None).unwrap();
    let sa = d.contacts().iter().find(|c| c.kind == ContactKind::SubscriberAccess).unwrap();
    assert!(matches!(empty_ext.request_uri(&sa.target, None), Err(UmRequestError::BadRenderedUri { .. })));
}

// -- behaviour 6: own voice mail ---------------------------------------------

#[test]
fn b6_own_voicemail_carries_no_diversion() {
    let d = dir();
    let req = invite(
        "sip:alice@contoso.test;opaque=app:voicemail",
        "sip:Alice@contoso.test",
        "Diversion: <sip:x@y.test>\r\n",
    );
    let c = classify_request(&d, &req, Some("alice@contoso.test"), None);
    let Classification::OwnVoicemail { target } = &c else { panic!("{c:?}") };
    assert_eq!(c.immediate_reason(), None);
    let ctx = UmInviteContext { templates: &templates(), reason: c.immediate_reason(), server: None };
    let out = build_um_invite(&req, target, &ctx).unwrap();
    assert!(header_lines(std::str::from_utf8(&out).unwrap(), "Diversion").is_empty());
}

#[test]
fn b6_caller_other_than_owner_always_gets_diversion_owner_never() {
    let d = dir();
    let t = target_of(&d, "alice");
    for reason in [DiversionReason::UserBusy, DiversionReason::NoAnswer, DiversionReason::Unconditional] {
        let ctx = UmInviteContext { templates: &templates(), reason: Some(reason), server: None };
        let other = build_um_invite(&invite("sip:alice@contoso.test", "sip:bob@contoso.test", ""), &t, &ctx).unwrap();
        assert_eq!(header_lines(std::str::from_utf8(&other).unwrap(), "Diversion").len(), 1);
        let own = build_um_invite(&invite("sip:alice@contoso.test", "sip:alice@CONTOSO.test", ""), &t, &ctx).unwrap();
        assert!(header_lines(std::str::from_utf8(&own).unwrap(), "Diversion").is_empty());
    }
}

// -- behaviour 7: SA / AA contacts --------------------------------------------

#[test]
fn b7_contacts_by_sip_uri_and_by_number_route_without_diversion() {
    let d = dir();
    for ruri in ["sip:sa-redmond@contoso.test", "tel:+1-555-0199", "sip:+15550199@contoso.test;user=phone"] {
        let req = invite(ruri, "sip:bob@contoso.test", "Diversion: <sip:x@y.test>\r\n");
        let c = classify_request(&d, &req, Some("bob@contoso.test"), None);
        let Classification::Contact { kind: ContactKind::SubscriberAccess, target } = &c else {
            panic!("{ruri}: {c:?}")
        };
        assert_eq!(target.mode(), "on_prem");
        let ctx = UmInviteContext { templates: &templates(), reason: c.immediate_reason(), server: None };
        let out = build_um_invite(&req, target, &ctx).unwrap();
        assert!(header_lines(std::str::from_utf8(&out).unwrap(), "Diversion").is_empty(), "{ruri}");
    }
    let c = classify_request(&d, &invite("tel:+15550198", "sip:bob@contoso.test", ""), None, None);
    let Classification::Contact { kind: ContactKind::AutoAttendant, target } = &c else { panic!("{c:?}") };
    assert_eq!(hosted_policy(target), "tag:tenant-a");
}

#[test]
fn b7_users_are_found_by_number_and_extension() {
    let d = dir();
    for ruri in ["tel:+15550100", "sip:2001@contoso.test;user=phone"] {
        let c = classify_request(&d, &invite(ruri, "sip:bob@contoso.test", ""), None, None);
        assert!(matches!(&c, Classification::LocalUser { aor, .. } if aor == "alice@contoso.test"), "{ruri}: {c:?}");
    }
}

// -- behaviour 8: UM failover plan --------------------------------------------

fn servers(names: &[&str]) -> Vec<UmServer> {
    names.iter().map(|n| UmServer { fqdn: (*n).to_owned(), address: None, port: None }).collect()
}

fn sent(a: Option<UmAttempt>) -> (u32, String) {
    match a {
        Some(UmAttempt::Send { attempt, server, .. }) => (attempt, server.fqdn),
        other => panic!("expected a send, got {other:?}"),
    }
}

#[test]
fn b8_plan_tries_servers_in_order_then_480_with_the_list() {
    let now = Instant::now();
    let mut plan = UmAttemptPlan::new(&servers(&["um1", "um2", "um3"]), &HealthTable::new(), Duration::from_secs(4));
    let (a1, s) = sent(Some(plan.start(now)));
    assert_eq!(s, "um1");
    assert_eq!(plan.poll_timeout(), Some(now + Duration::from_secs(4)));
    let (a2, s) = sent(plan.handle_response(a1, 503, None, now));
    assert_eq!(s, "um2");
    assert_eq!(plan.handle_response(a1, 500, None, now), None, "stale attempt ignored");
    assert_eq!(plan.handle_timeout(now + Duration::from_secs(3)), None, "timer not due");
    let (a3, s) = sent(plan.handle_timeout(now + Duration::from_secs(4)));
    assert_eq!(s, "um3");
    match plan.handle_transport_error(a3, now) {
        Some(UmAttempt::Failed(f)) => {
            assert_eq!(f.status, 480);
            assert_eq!(f.to_string(), "all UM servers failed: um1 (503), um2 (timeout), um3 (transport)");
        }
        other => panic!("{other:?}"),
    }
    let _ = a2;
}

#[test]
fn b8_down_servers_are_skipped_unless_all_are_down() {
    let now = Instant::now();
    let mut health = HealthTable::new();
    health.mark("UM1", false, now);
    let plan = UmAttemptPlan::new(&servers(&["um1", "um2"]), &health, Duration::from_secs(4));
    assert_eq!(plan.order(), servers(&["um2"]).as_slice());
    health.mark("um2", false, now);
    let plan = UmAttemptPlan::new(&servers(&["um1", "um2"]), &health, Duration::from_secs(4));
    assert_eq!(plan.order(), servers(&["um1", "um2"]).as_slice());
    health.mark("um1", true, now);
    assert!(health.is_up("um1") && !health.is_up("um2"));
}

#[test]
fn b8_redirects_are_followed_up_to_three_then_the_next_server() {
    let now = Instant::now();
    let mut plan = UmAttemptPlan::new(&servers(&["router1", "router2"]), &HealthTable::new(), Duration::from_secs(4));
    let (mut a, _) = sent(Some(plan.start(now)));
    for hop in 1..=3 {
        let contact = format!("<sip:mbx{hop}.contoso.test:5065;transport=tls>");
        let (next, s) = sent(plan.handle_response(a, 302, Some(&contact), now));
        assert_eq!(s, format!("mbx{hop}.contoso.test"));
        a = next;
    }
    let (a, s) = sent(plan.handle_response(a, 302, Some("<sip:mbx4.contoso.test>"), now));
    assert_eq!(s, "router2", "a fourth redirect is not followed");
    // A redirect to an IP literal carries the address; a 2xx ends the plan.
    let mut plan2 = UmAttemptPlan::new(&servers(&["router1"]), &HealthTable::new(), Duration::from_secs(4));
    let (b, _) = sent(Some(plan2.start(now)));
    match plan2.handle_response(b, 301, Some("sip:192.0.2.7:5065"), now) {
        Some(UmAttempt::Send { server, .. }) => assert_eq!(server.address, Some("192.0.2.7:5065".parse().unwrap())),
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.handle_response(a, 200, None, now), Some(UmAttempt::Answered));
    assert_eq!(plan.poll_timeout(), None);
}

// -- behaviour 10: hosted target via the matching provider -------------------

#[test]
fn b10_hosted_target_names_the_provider_whose_proxy_fqdn_is_the_destination() {
    let d = dir();
    match &target_of(&d, "dave").route {
        UmRoute::Hosted { provider, destination, .. } => {
            assert_eq!(provider, "exchange-online");
            assert_eq!(d.provider(provider).map(|p| p.proxy_fqdn.as_str()), Some(destination.as_str()));
        }
        UmRoute::OnPrem { .. } => panic!("dave is hosted"),
    }
}

// -- behaviour 11: accepting requests from a provider ------------------------

#[test]
fn b11_provider_acceptance_by_tls_name_level_and_marker_header() {
    let d = dir();
    let marker = "X-Umproxy-Verified";
    let plain = invite("sip:alice@contoso.test", "sip:eve@contoso.test", "");
    let marked = invite("sip:alice@contoso.test", "sip:eve@contoso.test", "x-umproxy-verified: verified\r\n");
    let unverified = invite(
        "sip:alice@contoso.test",
        "sip:eve@contoso.test",
        "X-Umproxy-Verified: ms-source-network=federation;ms-source-verified-user=Unverified\r\n",
    );
    assert_eq!(accept_from_provider(&d, &[], &marked, marker), ProviderAcceptance::NotAProvider);
    assert_eq!(accept_from_provider(&d, &["evil.example.net"], &marked, marker), ProviderAcceptance::NotAProvider);
    let exo = ["EXAP.um.example.net"];
    assert_eq!(
        accept_from_provider(&d, &exo, &plain, marker),
        ProviderAcceptance::Reject { provider: "exchange-online".into() }
    );
    assert_eq!(
        accept_from_provider(&d, &exo, &marked, marker),
        ProviderAcceptance::Accept { provider: "exchange-online".into(), is_verified: true }
    );
    assert_eq!(
        accept_from_provider(&d, &exo, &unverified, marker),
        ProviderAcceptance::Accept { provider: "exchange-online".into(), is_verified: false }
    );
    assert_eq!(
        accept_from_provider(&d, &["sipfed.online.example.net"], &plain, marker),
        ProviderAcceptance::Accept { provider: "sfb-online".into(), is_verified: true }
    );
    // A disabled provider's certificate names no provider.
    let text = VALID
        .replace(
            "enabled = true\nenabled_shared_address_space = true\nhosts_ocs_users = true",
            "enabled = false\nenabled_shared_address_space = true\nhosts_ocs_users = true",
        )
        .replace("home = \"sfb-online\"", "");
    let d2 = Directory::from_toml(&text, "directory.toml", &opts()).unwrap();
    assert_eq!(
        accept_from_provider(&d2, &["sipfed.online.example.net"], &plain, marker),
        ProviderAcceptance::NotAProvider
    );
}

#[test]
fn b11_a_provider_speaks_only_for_users_it_may_have() {
    let d = dir();
    let provider = |id: &str| match d.provider(id) {
        Some(p) => p.clone(),
        None => panic!("no provider {id}"),
    };
    let sfb = provider("sfb-online");
    let caller = |p: &crate::exum::model::Provider, from: &str| {
        let m = invite("sip:alice@contoso.test", from, "");
        provider_caller(&d, p, &m.from().uri)
    };
    // Unknown here, or homed at this provider: the provider's own.
    assert_eq!(caller(&sfb, "sip:online-user@contoso.test"), ProviderCaller::HomedThere);
    assert_eq!(caller(&sfb, "sip:heidi@contoso.test"), ProviderCaller::HomedThere);
    assert_eq!(caller(&sfb, "sip:HEIDI@Contoso.Test"), ProviderCaller::HomedThere);
    // Homed on premises, by address or by number; a contact not hosted there.
    assert_eq!(caller(&sfb, "sip:alice@contoso.test"), ProviderCaller::Impersonation);
    assert_eq!(caller(&sfb, "tel:+15550100"), ProviderCaller::Impersonation);
    assert_eq!(caller(&sfb, "sip:+15550100@contoso.test"), ProviderCaller::Impersonation);
    assert_eq!(caller(&sfb, "sip:sa-redmond@contoso.test"), ProviderCaller::Impersonation);
    // heidi is sfb-online's, not Exchange Online's; the auto attendant's
    // voice mail is Exchange Online's.
    let exo = provider("exchange-online");
    assert_eq!(caller(&exo, "sip:heidi@contoso.test"), ProviderCaller::Impersonation);
    assert_eq!(caller(&exo, "sip:aa-main@contoso.test"), ProviderCaller::HomedThere);
    // Not ours at all: a caller the provider relays.
    assert_eq!(caller(&sfb, "sip:carl@example.net"), ProviderCaller::Foreign);
    assert_eq!(caller(&sfb, "tel:+4930123456"), ProviderCaller::Foreign);
    // Without a shared address space, none of the domain's users are its.
    let mut partner = sfb.clone();
    partner.enabled_shared_address_space = false;
    assert_eq!(caller(&partner, "sip:online-user@contoso.test"), ProviderCaller::NotShared);
    assert_eq!(caller(&partner, "sip:heidi@contoso.test"), ProviderCaller::NotShared);
    assert_eq!(caller(&partner, "sip:carl@example.net"), ProviderCaller::Foreign);
    assert_eq!(ProviderCaller::Impersonation.refusal_label(), Some("refused_impersonation"));
    assert_eq!(ProviderCaller::HomedThere.refusal_label(), None);
}

// -- behaviour 12: shared domain ----------------------------------------------

#[test]
fn b12_shared_domain_users_go_to_the_hosting_provider_never_back() {
    let d = dir();
    assert_eq!(user(&d, "heidi").home, Home::Provider("sfb-online".into()));
    let to_heidi = invite("sip:heidi@contoso.test", "sip:alice@contoso.test", "");
    assert_eq!(
        classify_request(&d, &to_heidi, None, None),
        Classification::ToProvider { provider: "sfb-online".into() }
    );
    assert_eq!(classify_request(&d, &to_heidi, None, Some("sfb-online")), Classification::NotFound);
    let unknown = invite("sip:nobody@contoso.test", "sip:alice@contoso.test", "");
    assert_eq!(
        classify_request(&d, &unknown, None, None),
        Classification::ToProvider { provider: "sfb-online".into() }
    );
    assert_eq!(classify_request(&d, &unknown, None, Some("sfb-online")), Classification::NotFound);
    // Requests from a provider for users homed here are served here.
    let c = classify_request(&d, &invite("sip:alice@contoso.test", "sip:x@contoso.test", ""), None, Some("sfb-online"));
    assert!(matches!(c, Classification::LocalUser { .. }), "{c:?}");
    let foreign = invite("sip:someone@fabrikam.test", "sip:alice@contoso.test", "");
    assert_eq!(classify_request(&d, &foreign, None, None), Classification::NotOurs);
    // Unknown telephone numbers are PSTN destinations for the core's routes, not shared-domain users.
    for ruri in ["tel:+4930123456", "sip:+4930123456@contoso.test;user=phone"] {
        assert_eq!(
            classify_request(&d, &invite(ruri, "sip:alice@contoso.test", ""), None, None),
            Classification::NotOurs
        );
    }
}

#[test]
fn b12_without_a_user_hosting_provider_unknown_users_are_404() {
    // Only the UM provider (hosts_ocs_users = false) shares the space: never sent there.
    let text = VALID.replace("hosts_ocs_users = true", "hosts_ocs_users = false").replace("home = \"sfb-online\"", "");
    let d = Directory::from_toml(&text, "directory.toml", &opts()).unwrap();
    let unknown = invite("sip:nobody@contoso.test", "sip:alice@contoso.test", "");
    assert_eq!(classify_request(&d, &unknown, None, None), Classification::NotFound);
}

// -- behaviour 13: voice-mail escape -----------------------------------------

#[test]
fn b13_answer_within_the_escape_window_is_a_voicemail_system() {
    let t0 = Instant::now();
    let mut g = EscapeGuard::new(Duration::from_millis(1500));
    g.handle_branch_sent(1, t0);
    g.handle_branch_sent(2, t0 + Duration::from_millis(500));
    assert!(g.handle_answer(1, t0 + Duration::from_millis(1499)));
    assert!(!g.handle_answer(1, t0 + Duration::from_millis(1500)));
    assert!(g.handle_answer(2, t0 + Duration::from_millis(1900)), "window runs from each branch's own INVITE");
    assert!(!g.handle_answer(3, t0 + Duration::from_millis(10)), "unwatched branch answers for real");
    let mut off = EscapeGuard::new(Duration::ZERO);
    off.handle_branch_sent(1, t0);
    assert!(!off.handle_answer(1, t0));
}

// -- the same decisions on any backend ----------------------------------------

/// Decisions every backend must reproduce on the reference directory (the
/// users and contacts of `fixtures/exum/valid.toml`): behaviours 1, 2, 4, 6, 7, 12.
pub(crate) fn assert_reference_decisions(d: &Directory) {
    // 1: hosted wins; on-prem binding; none.
    assert_eq!(target_of(d, "erin").mode(), "hosted");
    assert_eq!(target_of(d, "alice").mode(), "on_prem");
    assert_eq!(voicemail_target(d, user(d, "frank")), None);
    // 2: user > site > global.
    assert_eq!(hosted_policy(&target_of(d, "bob")), "tag:tenant-a");
    assert_eq!(hosted_policy(&target_of(d, "carol")), "site:paris");
    assert_eq!(hosted_policy(&target_of(d, "dave")), "global");
    // 4: ring plan and forward-immediately.
    let c = classify_request(d, &invite("tel:+15550100", "sip:bob@contoso.test", ""), Some("bob@contoso.test"), None);
    assert!(
        matches!(&c, Classification::LocalUser { aor, ring, .. }
            if aor == "alice@contoso.test" && ring.ring_time == Some(Duration::from_secs(20))
               && ring.escape == Some(Duration::from_millis(1500))),
        "{c:?}"
    );
    let c = classify_request(d, &invite("sip:grace@contoso.test", "sip:bob@contoso.test", ""), None, None);
    assert!(matches!(c, Classification::ForwardImmediately { .. }), "{c:?}");
    // 6: own voice mail.
    let req = invite("sip:alice@contoso.test;opaque=app:voicemail", "sip:alice@contoso.test", "");
    let c = classify_request(d, &req, Some("alice@contoso.test"), None);
    assert!(matches!(c, Classification::OwnVoicemail { .. }), "{c:?}");
    // 7: SA by number, AA by SIP URI.
    let c = classify_request(d, &invite("tel:+15550199", "sip:bob@contoso.test", ""), None, None);
    assert!(matches!(c, Classification::Contact { kind: ContactKind::SubscriberAccess, .. }), "{c:?}");
    let c = classify_request(d, &invite("sip:aa-main@contoso.test", "sip:bob@contoso.test", ""), None, None);
    assert!(matches!(c, Classification::Contact { kind: ContactKind::AutoAttendant, .. }), "{c:?}");
    // 12: provider-homed user, never back to the provider.
    let to_heidi = invite("sip:heidi@contoso.test", "sip:alice@contoso.test", "");
    assert_eq!(
        classify_request(d, &to_heidi, None, None),
        Classification::ToProvider { provider: "sfb-online".into() }
    );
    assert_eq!(classify_request(d, &to_heidi, None, Some("sfb-online")), Classification::NotFound);
}

#[test]
fn file_backend_reproduces_the_reference_decisions() {
    assert_reference_decisions(&dir());
}

#[test]
fn b5_malformed_or_oversized_history_info_is_left_alone_and_never_panics() {
    let d = dir();
    let t = target_of(&d, "alice");
    let ctx = UmInviteContext { templates: &templates(), reason: Some(DiversionReason::UserBusy), server: None };
    let many = (1..=70).map(|i| format!("<sip:h{i}@x.test>;index=1.{i}")).collect::<Vec<_>>().join(", ");
    for hi in ["<sip:a@x.test>", "garbage,,<", "<sip:a@x.test>;index=1.x", many.as_str()] {
        let req = invite("sip:alice@contoso.test", "sip:bob@contoso.test", &format!("History-Info: {hi}\r\n"));
        let out = build_um_invite(&req, &t, &ctx).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(header_lines(text, "History-Info"), [hi], "incoming {hi:?} kept as is, nothing added");
        assert_eq!(header_lines(text, "Diversion").len(), 1);
    }
}

#[test]
fn b12_two_providers_hosting_users_in_the_shared_space_are_rejected() {
    let second = "\n[[hosting_provider]]\nidentity = \"other-online\"\nproxy_fqdn = \"sip.other.example.net\"\n\
                  enabled = true\nenabled_shared_address_space = true\nhosts_ocs_users = true\n";
    let e = errors(&format!("{VALID}{second}"), &opts());
    assert_has(&e, "directory.toml: hosting_provider[other-online].hosts_ocs_users: a second enabled provider hosting users in the shared address space (after \"sfb-online\"); keep one");
}

#[test]
fn built_in_example_directory_loads_without_tls_and_routes_to_on_prem_um() {
    let opts = LoadOptions { has_tls_listener: false, domains: vec!["example.test".to_owned()] };
    let d = match Directory::example(&opts) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let c = classify_request(&d, &invite("sip:1001@example.test", "sip:bob@example.test", ""), None, None);
    match c {
        Classification::LocalUser { aor, voicemail: Some(t), .. } => {
            assert_eq!(aor, "alice@example.test");
            assert_eq!(templates().request_uri(&t, None).unwrap(), "sip:um.example.test;transport=tcp");
        }
        other => panic!("{other:?}"),
    }
    let sa = classify_request(&d, &invite("tel:+15550199", "sip:bob@example.test", ""), None, None);
    assert!(matches!(sa, Classification::Contact { kind: ContactKind::SubscriberAccess, .. }), "{sa:?}");
}

// -- random inputs never panic and always end ---------------------------------

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Response(u16, bool),
        Timeout(u64),
        TransportError,
        Stale(u16),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (100u16..700, any::<bool>()).prop_map(|(s, c)| Event::Response(s, c)),
            (0u64..10_000).prop_map(Event::Timeout),
            Just(Event::TransportError),
            (100u16..700).prop_map(Event::Stale),
        ]
    }

    proptest! {
        /// Behaviour 8: whatever UM servers answer, the plan ends (answered
        /// or 480) within servers + MAX_REDIRECTS attempts, and never panics.
        #[test]
        fn um_plan_always_ends(n in 1usize..5, events in proptest::collection::vec(event(), 0..64)) {
            let names: Vec<String> = (0..n).map(|i| format!("um{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut plan = UmAttemptPlan::new(&servers(&refs), &HealthTable::new(), Duration::from_secs(4));
            let mut now = Instant::now();
            let mut current = plan.start(now);
            let mut sends = 1usize;
            for ev in events {
                let UmAttempt::Send { attempt, .. } = current.clone() else { break };
                now += Duration::from_millis(10);
                let next = match ev {
                    Event::Response(s, with_contact) => {
                        let contact = with_contact.then_some("<sip:mbx.contoso.test>");
                        plan.handle_response(attempt, s, contact, now)
                    }
                    Event::Timeout(ms) => plan.handle_timeout(now + Duration::from_millis(ms)),
                    Event::TransportError => plan.handle_transport_error(attempt, now),
                    Event::Stale(s) => {
                        prop_assert_eq!(plan.handle_response(attempt.wrapping_sub(1), s, None, now), None);
                        None
                    }
                };
                if let Some(next) = next {
                    if matches!(next, UmAttempt::Send { .. }) {
                        sends += 1;
                    }
                    current = next;
                }
                // Each server once, plus at most MAX_REDIRECTS redirects per plan.
                prop_assert!(sends <= n + usize::from(crate::exum::plan::MAX_REDIRECTS));
            }
            if let UmAttempt::Failed(f) = &current {
                prop_assert_eq!(f.status, 480);
                prop_assert!(!f.tried.is_empty());
            }
        }

        /// Peer-controlled Request-URIs, From and History-Info never panic the
        /// classifier or the UM INVITE builder.
        #[test]
        fn classify_and_build_never_panic(
            user in "[a-zA-Z0-9+.()%-]{0,40}",
            host in prop_oneof![Just("contoso.test".to_owned()), "[a-z]{1,10}\\.test"],
            params in "(;[a-z]{1,8}(=[a-zA-Z0-9:._-]{0,12})?){0,3}",
            hi in "[ -~]{0,120}",
        ) {
            let d = dir();
            let ruri = if user.is_empty() { format!("sip:{host}{params}") } else { format!("sip:{user}@{host}{params}") };
            let text = format!(
                "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:{user}@{host}>;tag=1\r\n\
                 To: <sip:x@contoso.test>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nHistory-Info: {hi}\r\nContent-Length: 0\r\n\r\n"
            );
            if let Ok(req) = Message::parse_slice(text.as_bytes()) {
                let c = classify_request(&d, &req, Some("bob@contoso.test"), None);
                let t = target_of(&d, "alice");
                let ctx = UmInviteContext { templates: &templates(), reason: Some(DiversionReason::NoAnswer), server: None };
                let out = build_um_invite(&req, c.immediate_target().unwrap_or(&t), &ctx);
                if let Ok(bytes) = out {
                    prop_assert!(Message::parse_slice(bytes.as_ref()).is_ok());
                }
            }
        }
    }
}
