use super::*;
use crate::location::store::embedded::{EmbeddedConfig, EmbeddedStore};
use std::time::{Duration, UNIX_EPOCH};

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn cfg() -> RegistrarConfig {
    RegistrarConfig { domains: vec!["contoso.test".into()], max_contacts_per_aor: 3, ..RegistrarConfig::default() }
}

fn ctx() -> RegisterContext {
    RegisterContext {
        received: Some("192.0.2.10:5060".parse().unwrap()),
        flow: Some(FlowToken(7)),
        authenticated_user: None,
        nat: None,
    }
}

fn register(call_id: &str, cseq: u32, extra: &str) -> Message {
    let msg = format!(
        "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK{cseq}\r\n\
         To: <sip:alice@Contoso.test>\r\nFrom: <sip:alice@contoso.test>;tag=9\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse_slice(msg.as_bytes()).unwrap()
}

fn plan(req: &Message, current: &[Binding], now: SystemTime) -> Result<Plan, Reject> {
    plan_register(req, current, &cfg(), &ctx(), now)
}

#[test]
fn new_contact_bound_with_header_expires_and_q() {
    let req = register("c1", 1, "Contact: <sip:alice@192.0.2.10:5060>;q=0.7\r\nExpires: 600\r\n");
    let p = plan(&req, &[], t(0)).unwrap();
    assert_eq!(p.aor, "sip:alice@contoso.test");
    assert!(p.is_changed);
    let b = &p.bindings[0];
    assert_eq!(b.contact_uri, "sip:alice@192.0.2.10:5060");
    assert_eq!(b.q, QValue::parse("0.7").unwrap());
    assert_eq!(b.remaining(t(0)), 600);
    assert_eq!(b.flow, None, "no reg-id: not an outbound binding");
}

#[test]
fn contact_expires_param_beats_header_and_default_applies_and_max_clamps() {
    let req = register("c1", 1, "Contact: <sip:a@192.0.2.1>;expires=120, <sip:a@192.0.2.2>\r\nExpires: 300\r\n");
    let p = plan(&req, &[], t(0)).unwrap();
    let exp: Vec<u64> = p.bindings.iter().map(|b| b.remaining(t(0))).collect();
    assert_eq!(exp, vec![120, 300]);
    let p = plan(&register("c1", 1, "Contact: <sip:a@192.0.2.1>\r\n"), &[], t(0)).unwrap();
    assert_eq!(p.bindings[0].remaining(t(0)), 3600);
    let p = plan(&register("c1", 1, "Contact: <sip:a@192.0.2.1>;expires=999999999\r\n"), &[], t(0)).unwrap();
    assert_eq!(p.bindings[0].remaining(t(0)), 86_400);
}

#[test]
fn too_brief_interval_gets_423_with_min_expires() {
    let r = plan(&register("c1", 1, "Contact: <sip:a@192.0.2.1>;expires=10\r\n"), &[], t(0));
    assert_eq!(r, Err(Reject::IntervalTooBrief { min_expires: 60 }));
}

#[test]
fn bad_contacts_and_bad_params_get_400() {
    for extra in [
        "Contact: <tel:+15550100>\r\n",
        "Contact: <sip:a@192.0.2.1>;q=1.5\r\n",
        "Contact: <sip:a@192.0.2.1>;expires=soon\r\n",
        "Contact: <sip:a@192.0.2.1>;+sip.instance=\"<urn:x>\";reg-id=zero\r\n",
    ] {
        let r = plan(&register("c1", 1, extra), &[], t(0));
        assert!(matches!(r, Err(Reject::BadRequest(_))), "{extra}: {r:?}");
    }
}

#[test]
fn star_only_with_expires_zero() {
    let first = plan(&register("c1", 1, "Contact: <sip:a@192.0.2.1>\r\n"), &[], t(0)).unwrap().bindings;
    let r = plan(&register("c2", 1, "Contact: *\r\n"), &first, t(1));
    assert_eq!(r, Err(Reject::BadRequest("Wildcard Contact Needs Expires 0")));
    let r = plan(&register("c2", 1, "Contact: *\r\nExpires: 5\r\n"), &first, t(1));
    assert!(matches!(r, Err(Reject::BadRequest(_))));
    let p = plan(&register("c2", 1, "Contact: *\r\nExpires: 0\r\n"), &first, t(1)).unwrap();
    assert!(p.bindings.is_empty() && p.is_changed);
    // Same Call-ID with a CSeq not higher: the removal is a late duplicate.
    let p = plan(&register("c1", 1, "Contact: *\r\nExpires: 0\r\n"), &first, t(1)).unwrap();
    assert!(p.is_stale && !p.is_changed && p.bindings.len() == 1);
}

#[test]
fn star_mixed_with_contacts_does_not_parse() {
    let msg = "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@contoso.test>\r\n\
               From: <sip:a@contoso.test>;tag=1\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContact: *\r\n\
               Contact: <sip:a@192.0.2.1>\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n";
    assert!(Message::parse_slice(msg).is_err(), "the parser refuses it; the core answers 400");
}

#[test]
fn refresh_same_call_id_higher_cseq_and_stale_cseq_ignored() {
    let b1 = plan(&register("c1", 5, "Contact: <sip:a@192.0.2.1>;expires=100\r\n"), &[], t(0)).unwrap().bindings;
    let p = plan(&register("c1", 6, "Contact: <sip:a@192.0.2.1>;expires=200\r\n"), &b1, t(10)).unwrap();
    assert_eq!(p.bindings.len(), 1);
    assert_eq!(p.bindings[0].remaining(t(10)), 200);
    assert_eq!(p.bindings[0].cseq, 6);
    for cseq in [5, 4] {
        let p = plan(&register("c1", cseq, "Contact: <sip:a@192.0.2.1>;expires=0\r\n"), &b1, t(10)).unwrap();
        assert!(p.is_stale && !p.is_changed);
        assert_eq!(p.bindings, b1);
    }
    // Another Call-ID replaces whatever the CSeq.
    let p = plan(&register("other", 1, "Contact: <sip:a@192.0.2.1>;expires=0\r\n"), &b1, t(10)).unwrap();
    assert!(p.bindings.is_empty() && p.is_changed);
}

#[test]
fn contact_uri_comparison_ignores_host_case_and_param_order() {
    let b1 = plan(&register("c1", 1, "Contact: <sip:a@Host.Example;transport=tcp;ob>\r\n"), &[], t(0)).unwrap();
    let p = plan(&register("c1", 2, "Contact: <sip:a@host.example:5060;ob;transport=TCP>\r\n"), &b1.bindings, t(1))
        .unwrap();
    assert_eq!(p.bindings.len(), 1);
}

#[test]
fn contacts_capped_per_aor_oldest_dropped_and_oversized_request_forbidden() {
    let mut cur = Vec::new();
    for k in 1..=3u64 {
        let req = register(&format!("c{k}"), 1, &format!("Contact: <sip:a@192.0.2.{k}>\r\n"));
        cur = plan(&req, &cur, t(k)).unwrap().bindings;
    }
    assert_eq!(cur.len(), 3);
    let p = plan(&register("c4", 1, "Contact: <sip:a@192.0.2.4>\r\n"), &cur, t(10)).unwrap();
    let uris: Vec<&str> = p.bindings.iter().map(|b| b.contact_uri.as_str()).collect();
    assert_eq!(uris, vec!["sip:a@192.0.2.2", "sip:a@192.0.2.3", "sip:a@192.0.2.4"]);
    let four = "Contact: <sip:a@192.0.2.1>, <sip:a@192.0.2.2>, <sip:a@192.0.2.3>, <sip:a@192.0.2.4>\r\n";
    assert_eq!(plan(&register("c5", 1, four), &[], t(0)), Err(Reject::Forbidden("Too Many Contacts")));
}

#[test]
fn outbound_instance_and_reg_id_bind_the_flow_and_replace_the_old_flow() {
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"";
    let req =
        register("c1", 1, &format!("Contact: <sip:a@192.0.2.1;ob>;{inst};reg-id=1\r\nSupported: outbound, path\r\n"));
    let first = plan(&req, &[], t(0)).unwrap().bindings;
    assert_eq!(first[0].flow, Some(FlowToken(7)));
    assert_eq!(first[0].instance.as_deref(), Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"));
    assert_eq!(first[0].reg_id, Some(1));
    // The UA reconnects (new flow, new source port, new Call-ID) with the same instance and reg-id.
    let req = register("c2", 1, &format!("Contact: <sip:a@192.0.2.1:40000;ob>;{inst};reg-id=1\r\n"));
    let ctx2 = RegisterContext { flow: Some(FlowToken(8)), ..ctx() };
    let p = plan_register(&req, &first, &cfg(), &ctx2, t(5)).unwrap();
    assert_eq!(p.bindings.len(), 1);
    assert_eq!(p.bindings[0].flow, Some(FlowToken(8)));
    assert_eq!(p.bindings[0].contact_uri, "sip:a@192.0.2.1:40000;ob");
    // A second reg-id is a second flow, kept alongside.
    let req = register("c2", 2, &format!("Contact: <sip:a@192.0.2.1:40001;ob>;{inst};reg-id=2\r\n"));
    let p2 = plan_register(&req, &p.bindings, &cfg(), &ctx2, t(6)).unwrap();
    assert_eq!(p2.bindings.len(), 2);
}

#[test]
fn path_is_stored_and_echoed_with_supported_path() {
    let req = register(
        "c1",
        1,
        "Path: <sip:edge1.example.net;lr>, <sip:edge2.example.net;lr>\r\nSupported: path\r\nContact: <sip:a@192.0.2.1>\r\n",
    );
    let p = plan(&req, &[], t(0)).unwrap();
    assert_eq!(p.bindings[0].path, vec!["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"]);
    let resp = Message::parse(ok_response(&req, &p.bindings, t(0)), &sip_message::Limits::default()).unwrap();
    assert_eq!(resp.header_values(HeaderName::Path).count(), 1);
    assert!(resp.supported().any(|s| s == "path"));
}

#[test]
fn foreign_domain_is_404_and_other_users_aor_is_403() {
    let msg =
        "REGISTER sip:fabrikam.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@fabrikam.test>\r\n\
               From: <sip:a@fabrikam.test>;tag=1\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(plan(&Message::parse_slice(msg).unwrap(), &[], t(0)), Err(Reject::NotFound));
    let bob = RegisterContext { authenticated_user: Some("bob".into()), ..ctx() };
    let req = register("c1", 1, "Contact: <sip:a@192.0.2.1>\r\n");
    assert_eq!(plan_register(&req, &[], &cfg(), &bob, t(0)), Err(Reject::Forbidden("Not Your AOR")));
}

#[test]
fn required_unknown_extension_gets_420_and_known_ones_pass() {
    let r = plan(&register("c1", 1, "Require: path, gruu\r\nContact: <sip:a@192.0.2.1>\r\n"), &[], t(0));
    assert_eq!(r, Err(Reject::BadExtension(vec!["gruu".into()])));
    let req = register("c1", 1, "Require: gruu\r\nContact: <sip:a@192.0.2.1>\r\n");
    let resp = Message::parse(
        reject_response(&req, &Reject::BadExtension(vec!["gruu".into()])),
        &sip_message::Limits::default(),
    )
    .unwrap();
    assert_eq!(resp.status(), Some(420));
    assert_eq!(resp.header_values_named("Unsupported").next(), Some(&b"gruu"[..]));
    assert!(plan(&register("c1", 1, "Require: path, outbound\r\nContact: <sip:a@192.0.2.1>\r\n"), &[], t(0)).is_ok());
}

#[test]
fn forking_order_by_q_and_groups() {
    let req = register("c1", 1, "Contact: <sip:a@192.0.2.1>;q=0.5, <sip:a@192.0.2.2>;q=1, <sip:a@192.0.2.3>;q=0.5\r\n");
    let mut b = plan(&req, &[], t(0)).unwrap().bindings;
    sort_for_forking(&mut b);
    let groups = fork_groups(&b);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].len(), 1);
    assert_eq!(groups[0][0].contact_uri, "sip:a@192.0.2.2");
    assert_eq!(groups[1].len(), 2);
}

#[test]
fn config_validation_names_the_key() {
    assert_eq!(RegistrarConfig::default().validate(), Ok(()));
    let bad = RegistrarConfig { min_expires: 100, max_expires: 50, ..RegistrarConfig::default() };
    assert_eq!(bad.validate().map_err(|e| e.0), Err("min_expires"));
    let bad = RegistrarConfig { max_contacts_per_aor: 0, ..RegistrarConfig::default() };
    assert_eq!(bad.validate().map_err(|e| e.0), Err("max_contacts_per_aor"));
}

#[test]
fn date_header_format() {
    assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(1_795_606_823)), "Wed, 25 Nov 2026 11:40:23 GMT");
    assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[tokio::test]
async fn register_against_a_store_answers_200_with_all_bindings_and_date() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LocationStore> =
        Arc::new(EmbeddedStore::open(&dir.path().join("r.db"), EmbeddedConfig::default(), t(0)).unwrap());
    let reg = Registrar::new(Arc::clone(&store), cfg(), None);
    let o = reg.handle_register(&register("c1", 1, "Contact: <sip:a@192.0.2.1>;expires=100\r\n"), &ctx(), t(0)).await;
    assert_eq!((o.status, o.result), (200, RegisterResult::Updated));
    let o = reg.handle_register(&register("c2", 1, "Contact: <sip:a@192.0.2.2>;q=0.4\r\n"), &ctx(), t(10)).await;
    let resp = Message::parse(o.response.clone(), &sip_message::Limits::default()).unwrap();
    assert_eq!(resp.status(), Some(200));
    assert!(resp.to_tag().is_some());
    let contacts: Vec<String> = resp.contacts().map(|c| c.as_str().to_owned()).collect();
    assert_eq!(contacts, vec!["<sip:a@192.0.2.1>;expires=90", "<sip:a@192.0.2.2>;expires=3600;q=0.4"]);
    assert!(resp.header(HeaderName::Date).is_some());
    // A query (no Contact) lists them without changing anything.
    let o = reg.handle_register(&register("c3", 1, ""), &ctx(), t(20)).await;
    let listed = Message::parse(o.response.clone(), &sip_message::Limits::default()).unwrap().contacts().count();
    assert_eq!((o.result, listed), (RegisterResult::Fetched, 2));
    // Lapsed bindings are not returned.
    assert_eq!(reg.lookup("sip:alice@contoso.test", t(100)).await.unwrap().len(), 1);
    let o = reg.handle_register(&register("c1", 2, "Contact: <sip:a@192.0.2.1>;expires=5\r\n"), &ctx(), t(20)).await;
    let resp = Message::parse(o.response, &sip_message::Limits::default()).unwrap();
    assert_eq!(resp.status(), Some(423));
    assert_eq!(resp.header(HeaderName::MinExpires), Some(&b"60"[..]));
}

/// A store whose backend is down.
struct DownStore;
impl LocationStore for DownStore {
    fn name(&self) -> &'static str {
        "down"
    }
    fn get<'a>(
        &'a self,
        _: &'a str,
        _: SystemTime,
    ) -> crate::location::store::StoreFuture<'a, crate::location::binding::AorBindings> {
        Box::pin(async { Err(StoreError::Unavailable { store: "down", reason: "test".into() }) })
    }
    fn replace<'a>(
        &'a self,
        _: &'a str,
        _: u64,
        _: Vec<Binding>,
        _: SystemTime,
    ) -> crate::location::store::StoreFuture<'a, u64> {
        Box::pin(async { Err(StoreError::Conflict) })
    }
    fn remove<'a>(&'a self, _: &'a str) -> crate::location::store::StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn expire(&self, _: SystemTime) -> crate::location::store::StoreFuture<'_, usize> {
        Box::pin(async { Ok(0) })
    }
    fn list_aors(&self, _: usize) -> crate::location::store::StoreFuture<'_, Vec<String>> {
        Box::pin(async { Err(StoreError::Unavailable { store: "down", reason: "test".into() }) })
    }
    fn binding_count(&self) -> Option<usize> {
        None
    }
}

#[tokio::test]
async fn store_unavailable_gives_503_with_retry_after() {
    let reg = Registrar::new(Arc::new(DownStore), cfg(), None);
    let o = reg.handle_register(&register("c1", 1, "Contact: <sip:a@192.0.2.1>\r\n"), &ctx(), t(0)).await;
    assert_eq!((o.status, o.result), (503, RegisterResult::StoreError));
    let resp = Message::parse(o.response, &sip_message::Limits::default()).unwrap();
    assert_eq!(resp.header(HeaderName::RetryAfter), Some(&b"5"[..]));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_contact_headers_never_panic_and_respect_the_cap(
            contacts in proptest::collection::vec("[ -~]{0,60}", 0..12),
            expires in proptest::option::of(0u32..200_000),
        ) {
            let mut extra = String::new();
            for c in &contacts {
                extra.push_str(&format!("Contact: {c}\r\n"));
            }
            if let Some(e) = expires {
                extra.push_str(&format!("Expires: {e}\r\n"));
            }
            let msg = format!(
                "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@contoso.test>\r\n\
                 From: <sip:a@contoso.test>;tag=1\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
            );
            if let Ok(req) = Message::parse_slice(msg.as_bytes()) {
                if let Ok(p) = plan(&req, &[], t(0)) {
                    prop_assert!(p.bindings.len() <= cfg().max_contacts_per_aor);
                }
            }
        }
    }
}

#[test]
fn contact_keys_read_as_before() {
    for (uri, want) in [
        ("sip:Alice@Example.COM", "sip:Alice@example.com:5060;"),
        ("sips:bob@h.test:5070;Transport=TLS;lr", "sips:bob@h.test:5070;lr;transport=tls"),
        ("sip:192.0.2.1:65535", "sip:@192.0.2.1:65535;"),
    ] {
        let u = Uri::parse(uri.as_bytes()).unwrap();
        assert_eq!(contact_key(&u), want, "{uri}");
    }
}

/// NAT handling as the core sets it for a REGISTER straight from a UA over
/// UDP from `source`.
fn nat_ctx(source: &str, is_natted: bool) -> RegisterContext {
    RegisterContext {
        received: Some(source.parse().unwrap()),
        flow: None,
        authenticated_user: None,
        nat: Some(RegisterNat { is_natted, transport: crate::transport::Transport::Udp, flow: FlowToken::UDP_SOURCE }),
    }
}

#[test]
fn a_contact_naming_another_address_than_the_source_is_bound_to_the_source() {
    let req = register("n1", 1, "Contact: <sip:alice@192.168.1.10:5060>, <sip:alice@203.0.113.5:40000>\r\n");
    let p = plan_register(&req, &[], &cfg(), &nat_ctx("203.0.113.5:40000", false), t(0)).unwrap();
    let by_uri = |u: &str| p.bindings.iter().find(|b| b.contact_uri == u).unwrap();
    let natted = by_uri("sip:alice@192.168.1.10:5060");
    assert_eq!(natted.flow, Some(FlowToken::UDP_SOURCE), "reached where the REGISTER came from");
    assert_eq!(natted.received, Some("203.0.113.5:40000".parse().unwrap()));
    assert_eq!(by_uri("sip:alice@203.0.113.5:40000").flow, None, "a public Contact is used as it is");
    // Another port of the sender's own address: a UA listening elsewhere
    // (or registering on behalf of one), not a NAT.
    let req = register("n2", 1, "Contact: <sip:alice@203.0.113.5>\r\n");
    let p = plan_register(&req, &[], &cfg(), &nat_ctx("203.0.113.5:40000", false), t(0)).unwrap();
    assert_eq!(p.bindings[0].flow, None);
}

#[test]
fn a_request_known_to_be_natted_binds_every_contact_to_the_source_but_not_outbound_ones() {
    let req = register(
        "n3",
        1,
        "Contact: <sip:alice@203.0.113.5:40000>, <sip:alice@192.0.2.77>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n",
    );
    let p = plan_register(&req, &[], &cfg(), &nat_ctx("203.0.113.5:40000", true), t(0)).unwrap();
    let plain = p.bindings.iter().find(|b| b.reg_id.is_none()).unwrap();
    assert_eq!(plain.flow, Some(FlowToken::UDP_SOURCE));
    let outbound = p.bindings.iter().find(|b| b.reg_id.is_some()).unwrap();
    assert_eq!(outbound.flow, None, "an outbound binding keeps its own flow (none over UDP)");
}

#[test]
fn without_nat_handling_bindings_are_as_before() {
    let req = register("n4", 1, "Contact: <sip:alice@192.168.1.10:5060>\r\n");
    let mut c = nat_ctx("203.0.113.5:40000", false);
    c.nat = None;
    let p = plan_register(&req, &[], &cfg(), &c, t(0)).unwrap();
    assert_eq!(p.bindings[0].flow, None);
}

#[tokio::test]
async fn a_natted_udp_binding_survives_a_restart_of_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reg.db");
    let req = register("n5", 1, "Contact: <sip:alice@192.168.1.10:5060>\r\n");
    {
        let store = EmbeddedStore::open(&path, EmbeddedConfig::write_through(), t(0)).unwrap();
        let out = process_register(&req, &store, &cfg(), &nat_ctx("203.0.113.5:40000", false), t(0)).await;
        assert_eq!(out.status, 200);
        assert_eq!(out.natted_contacts, 1);
        let (aor, targets) = out.nat_udp.expect("the keep-alive hears of the NAT'd binding");
        assert_eq!(aor, "sip:alice@contoso.test");
        assert_eq!(targets[0].addr, "203.0.113.5:40000".parse().unwrap());
        store.flush_now().await.unwrap();
    }
    let store = EmbeddedStore::open(&path, EmbeddedConfig::write_through(), t(1)).unwrap();
    let b = lookup(&store, "sip:alice@contoso.test", t(1)).await.unwrap();
    assert_eq!(b[0].flow, Some(FlowToken::UDP_SOURCE));
    assert_eq!(b[0].received, Some("203.0.113.5:40000".parse().unwrap()));
}
