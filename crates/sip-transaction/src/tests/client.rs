//! Client transactions: INVITE (RFC 3261 §17.1.1, RFC 6026) and non-INVITE
//! (§17.1.2, RFC 4320).

use super::*;
use sip_message::Method;

fn client_id(h: &mut Harness, msg: Message, reliable: bool) -> (ClientId, Message) {
    let id = h.client(msg.clone(), reliable);
    (id, msg)
}

#[test]
fn invite_timer_a_doubles_without_cap_until_timer_b() {
    let mut h = Harness::new();
    let (id, _) = client_id(&mut h, request("INVITE", "z9hG4bKa"), false);
    assert_eq!(h.layer.state_name(TxId::Client(id)), Some("Calling"));
    h.run_until(Duration::from_secs(40));
    // §17.1.1.2: sent at 0, then Timer A at T1, 2·T1, 4·T1 … (no T2 cap),
    // until Timer B at 64·T1 = 32 s.
    assert_eq!(times_ms(&h.take_sent()), vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    let ev = h.take_events();
    assert!(matches!(ev.first(), Some(Event::Timeout { id: i }) if *i == id));
    assert!(is_terminated(&ev[1], TxId::Client(id)));
    assert_eq!(h.take_events().len(), 0);
    assert!(h.layer.is_empty());
    assert_eq!(h.layer.poll_timeout(), None);
}

#[test]
fn invite_over_reliable_transport_is_not_retransmitted_and_times_out_by_b() {
    let mut h = Harness::new();
    let (id, _) = client_id(&mut h, request("INVITE", "z9hG4bKa"), true);
    h.run_until(Duration::from_secs(31));
    assert_eq!(times_ms(&h.take_sent()), vec![0]);
    assert!(h.take_events().is_empty());
    h.run_until(Duration::from_secs(33));
    let ev = h.take_events();
    assert!(matches!(ev[0], Event::Timeout { id: i } if i == id));
    assert!(h.layer.is_empty());
}

#[test]
fn invite_provisional_stops_retransmission_and_timer_b() {
    let mut h = Harness::new();
    let (id, inv) = client_id(&mut h, request("INVITE", "z9hG4bKa"), false);
    h.run_until(ms(700));
    h.response_in(response(&inv, 180));
    assert_eq!(h.layer.state_name(TxId::Client(id)), Some("Proceeding"));
    h.response_in(response(&inv, 183));
    h.run_until(Duration::from_secs(300));
    assert_eq!(times_ms(&h.take_sent()), vec![0, 500]);
    let ev = h.take_events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| matches!(e, Event::Response { id: i, .. } if *i == id)));
    // Proceeding has no timer of its own: the core's Timer C ends it.
    assert_eq!(h.layer.len(), 1);
}

#[test]
fn invite_non2xx_final_is_acked_retransmissions_absorbed_until_timer_d() {
    let mut h = Harness::new();
    let (id, inv) = client_id(&mut h, request("INVITE", "z9hG4bKa"), false);
    h.take_sent();
    h.response_in(response(&inv, 486));
    assert_eq!(h.layer.state_name(TxId::Client(id)), Some("Completed"));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    let ack = parse(&sent[0].1);
    // §17.1.1.3: same branch, the response's To tag, CSeq method ACK.
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(ack.branch(), Some("z9hG4bKa"));
    assert_eq!(ack.to_tag(), Some("totag"));
    assert_eq!(ack.cseq(), (314159, Method::Ack));
    assert_eq!(sent[0].1.dest, "upstream");
    let ev = h.take_events();
    assert!(matches!(&ev[..], [Event::Response { id: i, msg }] if *i == id && msg.status() == Some(486)));
    // A retransmitted 486 is absorbed and the ACK sent again.
    h.run_until(Duration::from_secs(10));
    h.response_in(response(&inv, 486));
    assert_eq!(h.take_sent().len(), 1);
    assert!(h.take_events().is_empty());
    // No Timer A after the final.
    h.run_until(ms(31_999));
    assert!(h.take_sent().is_empty());
    assert_eq!(h.layer.len(), 1);
    // Timer D: 32 s on an unreliable transport.
    h.run_until(Duration::from_secs(32));
    assert!(is_terminated(&h.take_events()[0], TxId::Client(id)));
    assert!(h.layer.is_empty());
}

#[test]
fn invite_non2xx_final_over_reliable_transport_terminates_at_once() {
    let mut h = Harness::new();
    let (id, inv) = client_id(&mut h, request("INVITE", "z9hG4bKa"), true);
    h.take_sent();
    h.response_in(response(&inv, 603));
    assert_eq!(h.take_sent().len(), 1, "ACK");
    let ev = h.take_events();
    assert!(matches!(ev[0], Event::Response { .. }));
    assert!(is_terminated(&ev[1], TxId::Client(id)));
    assert!(h.layer.is_empty());
}

#[test]
fn invite_2xx_enters_accepted_and_passes_every_2xx_until_timer_m() {
    let mut h = Harness::new();
    let (id, inv) = client_id(&mut h, request("INVITE", "z9hG4bKa"), false);
    h.take_sent();
    h.response_in(response(&inv, 180));
    h.response_in(response(&inv, 200));
    assert_eq!(h.layer.state_name(TxId::Client(id)), Some("Accepted"));
    // RFC 6026 §8.4: 2xx retransmissions go to the core; no ACK from the
    // layer (the ACK for a 2xx is the core's), no retransmission of INVITE.
    h.run_until(Duration::from_secs(4));
    h.response_in(response(&inv, 200));
    h.response_in(response(&inv, 486)); // absorbed in Accepted
    h.response_in(response(&inv, 180)); // absorbed in Accepted
    assert!(h.take_sent().is_empty());
    let ev = h.take_events();
    let statuses: Vec<_> = ev
        .iter()
        .map(|e| match e {
            Event::Response { msg, .. } => msg.status().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(statuses, vec![180, 200, 200]);
    // Timer M = 64·T1 from the first 2xx.
    h.run_until(ms(31_999));
    assert_eq!(h.layer.len(), 1);
    h.run_until(Duration::from_secs(32));
    assert!(is_terminated(&h.take_events()[0], TxId::Client(id)));
    assert!(h.layer.is_empty());
}

#[test]
fn invite_transport_error_is_reported_and_ends_the_transaction() {
    let mut h = Harness::new();
    let (id, _) = client_id(&mut h, request("INVITE", "z9hG4bKa"), false);
    h.layer.handle_transport_error(h.now, TxId::Client(id));
    let ev = h.take_events();
    assert!(matches!(ev[0], Event::TransportError { id: TxId::Client(i) } if i == id));
    assert!(is_terminated(&ev[1], TxId::Client(id)));
    assert!(h.layer.is_empty());
    assert_eq!(h.layer.poll_timeout(), None);
    // Unknown ids are ignored.
    h.layer.handle_transport_error(h.now, TxId::Client(id));
    assert!(h.take_events().is_empty());
}

#[test]
fn cancel_before_any_provisional_waits_for_the_first_1xx() {
    let mut h = Harness::new();
    let (id, inv) = client_id(&mut h, request("INVITE", "z9hG4bKa"), false);
    h.take_sent();
    h.layer.cancel(h.now, id).unwrap();
    // §9.1: no CANCEL before a provisional response.
    assert!(h.take_sent().is_empty());
    h.run_until(ms(600));
    assert_eq!(h.take_sent().len(), 1, "Timer A still retransmits the INVITE");
    h.response_in(response(&inv, 180));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    let cancel = parse(&sent[0].1);
    assert_eq!(cancel.method(), Some(Method::Cancel));
    assert_eq!(cancel.branch(), Some("z9hG4bKa"));
    assert_eq!(cancel.cseq(), (314159, Method::Cancel));
    assert_eq!(sent[0].1.dest, "upstream");
    assert!(matches!(h.take_events()[..], [Event::Response { .. }]));
    // The CANCEL's own 200 is absorbed; the 487 to the INVITE is ACKed and passed up.
    h.response_in(response(&cancel, 200));
    assert!(h.take_events().is_empty());
    h.response_in(response(&inv, 487));
    assert_eq!(parse(&h.take_sent()[0].1).method(), Some(Method::Ack));
    assert!(matches!(&h.take_events()[..], [Event::Response { msg, .. }] if msg.status() == Some(487)));
    // Everything ends; the internal CANCEL transaction reports nothing.
    h.run_for(Duration::from_secs(40));
    let ev = h.take_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(is_terminated(&ev[0], TxId::Client(id)));
    assert!(h.layer.is_empty());
}

#[test]
fn cancel_in_proceeding_is_sent_at_once_and_retransmitted_by_timer_e() {
    let mut h = Harness::new();
    let (id, inv) = client_id(&mut h, request("INVITE", "z9hG4bKa"), false);
    h.response_in(response(&inv, 180));
    h.take_sent();
    h.take_events();
    h.layer.cancel(h.now, id).unwrap();
    h.layer.cancel(h.now, id).unwrap(); // idempotent
    assert_eq!(h.take_sent().len(), 1);
    assert_eq!(h.layer.len(), 2);
    h.run_until(ms(1600));
    let sent = h.take_sent();
    assert_eq!(times_ms(&sent), vec![500, 1500]);
    assert!(sent.iter().all(|(_, t)| parse(t).method() == Some(Method::Cancel)));
}

#[test]
fn cancelled_invite_without_final_response_ends_after_64_t1() {
    let mut h = Harness::new();
    let (id, inv) = client_id(&mut h, request("INVITE", "z9hG4bKa"), true);
    h.response_in(response(&inv, 180));
    h.run_until(Duration::from_secs(100));
    h.take_events();
    h.layer.cancel(h.now, id).unwrap();
    // §9.1: no final within 64·T1 of the CANCEL → destroy the INVITE
    // transaction; the CANCEL's own Timer F ends it unreported.
    h.run_for(Duration::from_secs(33));
    let ev = h.take_events();
    assert!(matches!(ev[0], Event::Timeout { id: i } if i == id), "{ev:?}");
    assert!(is_terminated(&ev[1], TxId::Client(id)));
    assert_eq!(ev.len(), 2);
    assert!(h.layer.is_empty());
}

#[test]
fn cancel_after_a_final_response_sends_nothing() {
    let mut h = Harness::new();
    let (id, inv) = client_id(&mut h, request("INVITE", "z9hG4bKa"), false);
    h.response_in(response(&inv, 200));
    h.take_sent();
    h.layer.cancel(h.now, id).unwrap();
    assert!(h.take_sent().is_empty());
    assert_eq!(h.layer.len(), 1);
}

#[test]
fn cancel_is_refused_for_non_invite_and_unknown_transactions() {
    let mut h = Harness::new();
    let (id, _) = client_id(&mut h, request("OPTIONS", "z9hG4bKo"), false);
    assert_eq!(h.layer.cancel(h.now, id), Err(Rejected::NotAllowed));
    assert_eq!(h.layer.cancel(h.now, ClientId(999)), Err(Rejected::UnknownTransaction));
}

#[test]
fn send_request_refuses_ack_cancel_missing_cookie_and_duplicate_branch() {
    let mut h = Harness::new();
    let now = h.now;
    let l = &mut h.layer;
    assert_eq!(l.send_request(now, request("ACK", "z9hG4bKx"), "u", false), Err(Rejected::NotAllowed));
    assert_eq!(l.send_request(now, request("CANCEL", "z9hG4bKx"), "u", false), Err(Rejected::NotAllowed));
    assert_eq!(l.send_request(now, request("INVITE", "old-style"), "u", false), Err(Rejected::NotAllowed));
    assert!(l.send_request(now, request("INVITE", "z9hG4bKx"), "u", false).is_ok());
    assert_eq!(l.send_request(now, request("INVITE", "z9hG4bKx"), "u", false), Err(Rejected::NotAllowed));
    let resp = response(&request("INVITE", "z9hG4bKx"), 200);
    assert_eq!(l.send_request(now, resp, "u", false), Err(Rejected::NotAllowed));
}

#[test]
fn non_invite_timer_e_doubles_to_t2_and_timer_f_times_out_without_408() {
    let mut h = Harness::new();
    let (id, _) = client_id(&mut h, request("OPTIONS", "z9hG4bKo"), false);
    assert_eq!(h.layer.state_name(TxId::Client(id)), Some("Trying"));
    h.run_until(Duration::from_secs(40));
    // §17.1.2.2: T1, 2·T1, 4·T1, then every T2 (4 s), until F at 64·T1.
    assert_eq!(times_ms(&h.take_sent()), vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    let ev = h.take_events();
    // RFC 4320: the layer reports Timeout; it never fabricates a 408.
    assert!(matches!(ev[0], Event::Timeout { id: i } if i == id));
    assert!(is_terminated(&ev[1], TxId::Client(id)));
    assert_eq!(ev.len(), 2);
}

#[test]
fn non_invite_proceeding_retransmits_every_t2() {
    let mut h = Harness::new();
    let (_, req) = client_id(&mut h, request("REGISTER", "z9hG4bKr"), false);
    h.run_until(ms(200));
    h.response_in(response(&req, 183));
    h.run_until(ms(13_000));
    assert_eq!(times_ms(&h.take_sent()), vec![0, 500, 4500, 8500, 12500]);
}

#[test]
fn non_invite_reliable_sends_once() {
    let mut h = Harness::new();
    let (id, _) = client_id(&mut h, request("OPTIONS", "z9hG4bKo"), true);
    h.run_until(Duration::from_secs(31));
    assert_eq!(times_ms(&h.take_sent()), vec![0]);
    h.run_until(Duration::from_secs(32));
    assert!(matches!(h.take_events()[0], Event::Timeout { id: i } if i == id));
}

#[test]
fn non_invite_final_absorbs_retransmissions_until_timer_k() {
    let mut h = Harness::new();
    let (id, req) = client_id(&mut h, request("BYE", "z9hG4bKb"), false);
    h.take_sent();
    h.response_in(response(&req, 200));
    assert_eq!(h.layer.state_name(TxId::Client(id)), Some("Completed"));
    h.response_in(response(&req, 200));
    h.response_in(response(&req, 180));
    let ev = h.take_events();
    assert_eq!(ev.len(), 1);
    assert!(matches!(ev[0], Event::Response { id: i, .. } if i == id));
    // Timer K = T4 on an unreliable transport; nothing retransmitted.
    h.run_until(ms(4_999));
    assert_eq!(h.layer.len(), 1);
    h.run_until(ms(5_000));
    assert!(is_terminated(&h.take_events()[0], TxId::Client(id)));
    assert!(h.take_sent().is_empty());
}

#[test]
fn non_invite_final_over_reliable_transport_terminates_at_once() {
    let mut h = Harness::new();
    let (id, req) = client_id(&mut h, request("BYE", "z9hG4bKb"), true);
    h.response_in(response(&req, 481));
    let ev = h.take_events();
    assert!(matches!(ev[0], Event::Response { .. }));
    assert!(is_terminated(&ev[1], TxId::Client(id)));
    assert!(h.layer.is_empty());
}

#[test]
fn non_invite_transport_error() {
    let mut h = Harness::new();
    let (id, _) = client_id(&mut h, request("MESSAGE", "z9hG4bKm"), false);
    h.layer.handle_transport_error(h.now, TxId::Client(id));
    let ev = h.take_events();
    assert!(matches!(ev[0], Event::TransportError { id: TxId::Client(i) } if i == id));
    assert!(h.layer.is_empty());
}

#[test]
fn timers_scale_with_configured_t1_t2_t4() {
    let mut h = Harness::with(Config { t1: ms(100), t2: ms(400), t4: ms(1000), ..Config::default() });
    let (id, req) = client_id(&mut h, request("OPTIONS", "z9hG4bKo"), false);
    h.run_until(ms(2000));
    assert_eq!(times_ms(&h.take_sent()), vec![0, 100, 300, 700, 1100, 1500, 1900]);
    h.response_in(response(&req, 200));
    h.run_until(ms(2999));
    assert_eq!(h.layer.len(), 1);
    h.run_until(ms(3000)); // K = T4
    assert!(h.layer.is_empty());
    let _ = id;
}
