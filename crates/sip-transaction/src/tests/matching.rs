//! Matching (RFC 3261 §17.1.3, §17.2.3, §9.2) and the transaction cap.

use super::*;

#[test]
fn same_branch_from_another_sent_by_is_another_transaction() {
    let mut h = Harness::new();
    let a = h.server(request_with("INVITE", "z9hG4bKx", "a.example.com", "UDP", None), false);
    let b = h.server(request_with("INVITE", "z9hG4bKx", "b.example.com", "UDP", None), false);
    assert_ne!(a, b);
    assert_eq!(h.layer.len(), 2);
}

#[test]
fn sent_by_host_is_case_insensitive_and_default_port_is_5060() {
    let mut h = Harness::new();
    h.server(request_with("OPTIONS", "z9hG4bKx", "a.example.com", "UDP", None), false);
    h.request_in(request_with("OPTIONS", "z9hG4bKx", "A.Example.COM:5060", "UDP", None), false).unwrap();
    assert!(h.take_events().is_empty(), "a retransmission");
    h.request_in(request_with("OPTIONS", "z9hG4bKx", "a.example.com:5070", "UDP", None), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Request { .. }]));
}

#[test]
fn same_branch_other_method_is_another_transaction() {
    let mut h = Harness::new();
    h.server(request("OPTIONS", "z9hG4bKx"), false);
    h.server(request("INFO", "z9hG4bKx"), false);
    h.server(request("FOO", "z9hG4bKx"), false);
    h.request_in(request("FOO", "z9hG4bKx"), false).unwrap();
    assert!(h.take_events().is_empty());
    assert_eq!(h.layer.len(), 3);
}

#[test]
fn cancel_is_its_own_transaction_matched_to_its_invite() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKc");
    let iid = h.server(inv.clone(), false);
    let cancel = request("CANCEL", "z9hG4bKc");
    h.request_in(cancel.clone(), false).unwrap();
    let (cid, invite) = match &h.take_events()[..] {
        [Event::Cancel { cancel, invite, source, .. }] => {
            assert_eq!(*source, PEER);
            (*cancel, *invite)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(invite, Some(iid));
    assert_ne!(cid, iid);
    assert_eq!(h.layer.len(), 2);
    // The core answers 200 to the CANCEL and 487 to the INVITE.
    h.respond(cid, &cancel, 200).unwrap();
    h.respond(iid, &inv, 487).unwrap();
    // A retransmitted CANCEL gets the 200 again, not a new event.
    h.take_sent();
    h.request_in(cancel, false).unwrap();
    assert_eq!(parse(&h.take_sent()[0].1).status(), Some(200));
    assert!(h.take_events().is_empty());
}

#[test]
fn cancel_for_no_invite_reports_none() {
    let mut h = Harness::new();
    h.server(request("INVITE", "z9hG4bKc"), false);
    h.request_in(request_with("CANCEL", "z9hG4bKc", "elsewhere.example.com", "UDP", None), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Cancel { invite: None, .. }]));
    h.request_in(request("CANCEL", "z9hG4bKnone"), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Cancel { invite: None, .. }]));
}

fn rfc2543(method: &str, to_tag: Option<&str>) -> Message {
    // No magic cookie: the RFC 2543 fallback applies.
    request_with(method, "1a2b3c", "old.example.com", "UDP", to_tag)
}

#[test]
fn rfc2543_fallback_matches_retransmission_cancel_and_ack() {
    let mut h = Harness::new();
    let inv = rfc2543("INVITE", None);
    let id = h.server(inv.clone(), false);
    h.request_in(inv.clone(), false).unwrap();
    assert!(h.take_events().is_empty(), "retransmission matched without a cookie");
    h.request_in(rfc2543("CANCEL", None), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Cancel { invite: Some(i), .. }] if *i == id));
    h.respond(id, &inv, 487).unwrap();
    // An ACK with another To tag is not for this response.
    h.request_in(rfc2543("ACK", Some("other")), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Ack { .. }]));
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Completed"));
    // The ACK with the response's To tag completes it.
    h.request_in(rfc2543("ACK", Some("totag")), false).unwrap();
    assert!(h.take_events().is_empty());
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Confirmed"));
}

#[test]
fn rfc2543_fallback_tells_apart_requests_with_another_cseq_or_call_id() {
    let mut h = Harness::new();
    h.server(rfc2543("OPTIONS", None), false);
    let other = Message::parse_slice(
        "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP old.example.com;branch=1a2b3c\r\n\
         To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@pc33.example.com\r\nCSeq: 314160 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    h.request_in(other, false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Request { .. }]));
    assert_eq!(h.layer.len(), 2);
}

#[test]
fn responses_match_by_branch_and_cseq_method_else_stray() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKm");
    let id = h.client(inv.clone(), false);
    h.response_in(response(&request("INVITE", "z9hG4bKelse"), 180));
    assert!(matches!(&h.take_events()[..], [Event::StrayResponse { .. }]));
    // Same branch, CSeq method CANCEL: not the INVITE's.
    h.response_in(response(&request("CANCEL", "z9hG4bKm"), 200));
    assert!(matches!(&h.take_events()[..], [Event::StrayResponse { .. }]));
    h.response_in(response(&inv, 180));
    assert!(matches!(&h.take_events()[..], [Event::Response { id: i, .. }] if *i == id));
    // A request handed to handle_response and a response handed to
    // handle_request are ignored.
    h.response_in(inv.clone());
    h.request_in(response(&inv, 200), false).unwrap();
    assert!(h.take_events().is_empty());
}

#[test]
fn a_2xx_reaching_a_completed_invite_client_goes_up_as_stray() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKm");
    h.client(inv.clone(), false);
    h.response_in(response(&inv, 486));
    h.take_events();
    h.response_in(response(&inv, 200));
    assert!(matches!(&h.take_events()[..], [Event::StrayResponse { .. }]));
}

#[test]
fn cap_on_live_transactions_answers_overloaded_until_one_is_freed() {
    let mut h = Harness::with(Config { max_transactions: 2, ..Config::default() });
    let req = request("OPTIONS", "z9hG4bK1");
    let id = h.server(req.clone(), true);
    h.client(request("OPTIONS", "z9hG4bK2"), false);
    assert_eq!(h.request_in(request("OPTIONS", "z9hG4bK3"), false), Err(Rejected::Overloaded));
    assert_eq!(h.layer.send_request(h.now, request("OPTIONS", "z9hG4bK4"), "u", false), Err(Rejected::Overloaded));
    // Retransmissions of live transactions are still absorbed at the cap.
    assert_eq!(h.request_in(req.clone(), false), Ok(()));
    assert!(h.take_events().is_empty());
    // A terminated transaction frees its slot.
    h.respond(id, &req, 200).unwrap();
    assert_eq!(h.layer.len(), 1);
    assert_eq!(h.request_in(request("OPTIONS", "z9hG4bK3"), false), Ok(()));
}

#[test]
fn cancel_of_a_live_invite_is_admitted_past_the_cap() {
    let mut h = Harness::with(Config { max_transactions: 1, ..Config::default() });
    let iid = h.server(request("INVITE", "z9hG4bK1"), false);
    assert_eq!(h.request_in(request("CANCEL", "z9hG4bKnone"), false), Err(Rejected::Overloaded));
    assert_eq!(h.request_in(request("CANCEL", "z9hG4bK1"), false), Ok(()));
    assert!(matches!(&h.take_events()[..], [Event::Cancel { invite: Some(i), .. }] if *i == iid));
    assert_eq!(h.layer.len(), 2);
}

#[test]
fn poll_timeout_is_the_earliest_deadline() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), false);
    h.client(request("OPTIONS", "z9hG4bKo"), true); // F at 32 s
    assert_eq!(h.layer.poll_timeout(), Some(h.base + Duration::from_secs(32)));
    h.respond(id, &inv, 486).unwrap(); // G at 500 ms
    assert_eq!(h.layer.poll_timeout(), Some(h.base + ms(500)));
    // Handling a timeout early does nothing.
    h.layer.handle_timeout(h.base + ms(499));
    assert_eq!(h.take_sent().len(), 2, "the OPTIONS and the 486, nothing more");
    assert_eq!(h.layer.poll_timeout(), Some(h.base + ms(500)));
}

#[test]
fn rfc2543_fallback_matches_the_ack_of_a_re_invite_inside_a_dialog() {
    let mut h = Harness::new();
    let reinvite = rfc2543("INVITE", Some("totag"));
    let id = h.server(reinvite.clone(), false);
    h.respond(id, &reinvite, 491).unwrap();
    h.request_in(rfc2543("ACK", Some("totag")), false).unwrap();
    assert!(h.take_events().is_empty());
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Confirmed"));
}
