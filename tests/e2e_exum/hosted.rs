//! Hosted UM: users with the hosted voice-mail flag divert to the hosting
//! provider's edge over mutual TLS, the Request-URI built from their policy
//! (user tag, site, global); a mixed directory serves both kinds in one run
//! (EXUM.md behaviours 1, 2, 5, 10, 14).

use e2e_support::{SipMessage, TlsUas, WAIT};

use crate::fixture::{
    assert_um_invite, dead_addr, directory_toml, um_invite, Backend, Call, Expected, Exum, Peers, Pki, ACCEPT,
    EXAP_FQDN,
};
use crate::have_sipp;

const TENANT_A_URI: &str =
    "sip:exap.um.example.net;opaque=app:voicemail;ms-organization=tenant-a.example.net%2Ctenant-a2.example.net";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_user_diverts_to_the_provider_with_the_user_policy_in_the_request_uri() {
    hosted_user_policy_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_hosted_user_diverts_to_the_provider_with_the_user_policy_in_the_request_uri() {
    hosted_user_policy_scenario(Backend::Ldap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_user_granted_a_policy_by_its_bare_name_gets_the_same_route() {
    hosted_user_policy_scenario_as(Backend::File, "tenant-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_hosted_user_granted_a_policy_by_its_bare_name_gets_the_same_route() {
    hosted_user_policy_scenario_as(Backend::Ldap, "tenant-a").await;
}

/// A hosted user reaches the provider with their own policy in the Request-URI.
async fn hosted_user_policy_scenario(backend: Backend) {
    hosted_user_policy_scenario_as(backend, "tag:tenant-a").await;
}

/// [`hosted_user_policy_scenario`] with bob's policy granted as `granted`
/// (`Grant-CsHostedVoicemailPolicy -PolicyName tenant-a`, or its identity
/// `tag:tenant-a`): the same route either way.
async fn hosted_user_policy_scenario_as(backend: Backend, granted: &str) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let exap = pki.uas(&[EXAP_FQDN], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), dead_addr())], exap: exap.addr, sfb: dead_addr() };
    let fixture = directory_toml(&peers, None);
    let directory = fixture.replacen(
        r#"hosted_voicemail_policy = "tag:tenant-a""#,
        &format!("hosted_voicemail_policy = {granted:?}"),
        1,
    );
    assert!(directory.contains(&format!("hosted_voicemail_policy = {granted:?}")));
    let Some(exum) = Exum::start_on(backend, &pki, &directory, "") else { return };
    let log = || exum.proxy.log();
    // bob is not registered: unavailable, hosted by his granted policy.
    let call = Call::new("sip:carl@example.net", "sip:bob@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    assert!(caller.succeeded(), "caller:\n{}\nproxy log:\n{}", caller.describe(), log());
    let invite = um_invite(&exap, WAIT, &log).await;
    let um_target = format!("{TENANT_A_URI};cause=404");
    assert_um_invite(
        &invite,
        &call,
        &Expected {
            request_uri: TENANT_A_URI,
            diversion: Some("<sip:bob@contoso.test>;reason=unavailable;counter=1"),
            history_info: &["<sip:bob@contoso.test>;index=1", &format!("<{um_target}>;index=1.1;mp=1")],
        },
        &log,
    );
    assert_eq!(exum.metric(r#"umproxy_exum_routes_total{mode="hosted",reason="unavailable"}"#), 1.0);
}

/// The INVITE with `call_id` among those `uas` received.
fn invite_of(uas: &TlsUas, call_id: &str) -> Option<SipMessage> {
    uas.received().into_iter().find(|m| m.method() == Some("INVITE") && m.header("Call-ID") == Some(call_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_directory_sends_each_user_to_on_prem_or_hosted_um_by_settings_and_policy() {
    mixed_directory_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_mixed_directory_sends_each_user_to_on_prem_or_hosted_um_by_settings_and_policy() {
    mixed_directory_scenario(Backend::Ldap).await;
}

/// On-premises and hosted users (user, site, global policy) in one run.
async fn mixed_directory_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let um1 = pki.uas(&["um1.contoso.test"], ACCEPT).await;
    let exap = pki.uas(&[EXAP_FQDN], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), um1.addr)], exap: exap.addr, sfb: dead_addr() };
    let Some(exum) = Exum::start_on(backend, &pki, &directory_toml(&peers, None), "") else { return };
    let log = || exum.proxy.log();
    // (callee, the peer that must get the call, its Request-URI).
    let cases: [(&str, &TlsUas, &str); 4] = [
        ("alice", &um1, "sip:um1.contoso.test;transport=tls"),
        // Site policy (paris).
        ("carol", &exap, "sip:exap.um.example.net;opaque=app:voicemail;ms-organization=paris.contoso.test"),
        // Global policy (redmond has no site policy).
        ("dave", &exap, "sip:exap.um.example.net;opaque=app:voicemail;ms-organization=corp.contoso.test"),
        // Hosted flag and on-premises binding: hosted wins.
        ("erin", &exap, "sip:exap.um.example.net;opaque=app:voicemail;ms-organization=corp.contoso.test"),
    ];
    for (user, peer, uri) in cases {
        let call = Call::new("sip:carl@example.net", &format!("sip:{user}@contoso.test"));
        let caller = call.run(exum.proxy.udp_addr(), None).await;
        assert!(caller.succeeded(), "{user}: caller:\n{}\nproxy log:\n{}", caller.describe(), log());
        let Some(invite) = invite_of(peer, &call.call_id) else {
            panic!("{user}: the expected UM peer got no INVITE; proxy log:\n{}", log())
        };
        assert_eq!(invite.request_uri(), Some(uri), "{user}: {invite}");
        let diversion = format!("<sip:{user}@contoso.test>;reason=unavailable;counter=1");
        assert_eq!(invite.header_values("Diversion"), vec![diversion], "{user}: {invite}");
    }
    assert!(
        invite_of(&um1, "").is_none() && um1.received().iter().filter(|m| m.method() == Some("INVITE")).count() == 1,
        "erin (hosted and on-prem) reached the on-premises UM server"
    );
    assert_eq!(exum.metric(r#"umproxy_exum_routes_total{mode="on_prem",reason="unavailable"}"#), 1.0);
    assert_eq!(exum.metric(r#"umproxy_exum_routes_total{mode="hosted",reason="unavailable"}"#), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_hosted_user_and_auto_attendant_reach_the_provider() {
    busy_hosted_and_aa_scenario(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_busy_hosted_user_and_auto_attendant_reach_the_provider() {
    busy_hosted_and_aa_scenario(Backend::Ldap).await;
}

/// A busy hosted user and the hosted Auto Attendant contact reach the provider.
async fn busy_hosted_and_aa_scenario(backend: Backend) {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    let exap = pki.uas(&[EXAP_FQDN], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), dead_addr())], exap: exap.addr, sfb: dead_addr() };
    let Some(exum) = Exum::start_on(backend, &pki, &directory_toml(&peers, None), "") else { return };
    let log = || exum.proxy.log();
    let bob = crate::fixture::callee(Some(486));
    exum.register("bob", bob.local_addr()).await;
    let call = Call::new("sip:carl@example.net", "sip:bob@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    crate::fixture::assert_call_succeeded(&caller, &log);
    let invite = invite_of(&exap, &call.call_id).unwrap_or_else(|| panic!("bob's call missing; log:\n{}", log()));
    let um_target = format!("<{TENANT_A_URI};cause=486>;index=1.1;mp=1");
    assert_um_invite(
        &invite,
        &call,
        &Expected {
            request_uri: TENANT_A_URI,
            diversion: Some("<sip:bob@contoso.test>;reason=user-busy;counter=1"),
            history_info: &["<sip:bob@contoso.test>;index=1", &um_target],
        },
        &log,
    );
    assert!(bob.wait().succeeded(), "bob's phone did not see the call through");
    // The Auto Attendant contact, hosted by the tenant-a policy: no Diversion.
    let call = Call::new("sip:carl@example.net", "sip:aa-main@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    crate::fixture::assert_call_succeeded(&caller, &log);
    let invite = invite_of(&exap, &call.call_id).unwrap_or_else(|| panic!("AA call missing; log:\n{}", log()));
    assert_eq!(invite.request_uri(), Some(TENANT_A_URI), "{invite}");
    assert!(invite.header_values("Diversion").is_empty(), "AA call carries a Diversion:\n{invite}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_edge_not_named_by_its_certificate_is_refused_and_the_caller_gets_480() {
    if !have_sipp() {
        return;
    }
    let pki = Pki::new();
    // The edge presents a certificate from the trusted CA that does not
    // name the provider's proxy FQDN.
    let impostor = pki.uas(&["edge.elsewhere.example.net"], ACCEPT).await;
    let peers = Peers { um: vec![("um1.contoso.test".into(), dead_addr())], exap: impostor.addr, sfb: dead_addr() };
    let exum = Exum::start(&pki, &directory_toml(&peers, None));
    let log = || exum.proxy.log();
    let call = Call::new("sip:carl@example.net", "sip:dave@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), Some(480)).await;
    crate::fixture::assert_call_succeeded(&caller, &log);
    assert!(impostor.received().is_empty(), "a request reached the impostor edge");
    assert_eq!(exum.metric(r#"umproxy_exum_um_failures_total{mode="hosted",reason="all_failed"}"#), 1.0);
    let refused = exum.metric_sum("umproxy_transport_tls_handshake_failures_total", r#"direction="outbound""#);
    assert!(refused >= 1.0, "{}", exum.proxy.metrics());
}

/// A provider without a static address is found the way Lync federates:
/// `_sipfederationtls._tcp.<proxy_fqdn>` SRV, then the target's address;
/// its certificate must still name the proxy FQDN (EXUM.md behaviour 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_without_an_address_is_found_by_its_federation_srv_record() {
    if !have_sipp() || !e2e_support::require_tool_sbin("dnsmasq") {
        return;
    }
    const FQDN: &str = "exap.um.provider.test";
    let pki = Pki::new();
    let edge = pki.uas(&[FQDN], ACCEPT).await;
    let records = vec![
        format!("--srv-host=_sipfederationtls._tcp.{FQDN},edge1.provider.test,{},0,0", edge.addr.port()),
        "--host-record=edge1.provider.test,127.0.0.1".to_owned(),
    ];
    let Some(dns) = e2e_support::DnsServer::start(&records) else { return };
    let exap_placeholder = dead_addr();
    let peers = Peers { um: vec![("um1.contoso.test".into(), dead_addr())], exap: exap_placeholder, sfb: dead_addr() };
    let directory = directory_toml(&peers, None)
        .replace(&format!("address = \"{exap_placeholder}\"\n"), "")
        .replace(EXAP_FQDN, FQDN);
    let exum = Exum::start_with(
        &pki,
        &directory,
        &format!("[dns]\nnameservers = [\"{}\"]\ntimeout_ms = 1000\nattempts = 1\n", dns.addr),
    );
    let log = || exum.proxy.log();
    let call = Call::new("sip:carl@example.net", "sip:dave@contoso.test");
    let caller = call.run(exum.proxy.udp_addr(), None).await;
    crate::fixture::assert_call_succeeded(&caller, &log);
    let invite = invite_of(&edge, &call.call_id).unwrap_or_else(|| panic!("no INVITE at the edge; log:\n{}", log()));
    assert_eq!(
        invite.request_uri(),
        Some("sip:exap.um.provider.test;opaque=app:voicemail;ms-organization=corp.contoso.test"),
        "{invite}"
    );
}
