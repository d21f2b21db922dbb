//! Server transactions: INVITE (RFC 3261 §17.2.1, RFC 6026) and non-INVITE
//! (§17.2.2, RFC 4320).

use super::*;

fn ack(branch: &str) -> Message {
    request_with("ACK", branch, "pc33.example.com", "UDP", Some("totag"))
}

#[test]
fn invite_retransmission_is_absorbed_and_no_100_is_sent_by_the_layer() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), false);
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Proceeding"));
    // The core sends 100 Trying itself: the layer sends nothing, runs no timer.
    assert_eq!(h.layer.poll_timeout(), None);
    h.run_until(Duration::from_secs(1));
    h.request_in(inv.clone(), false).unwrap();
    assert!(h.take_sent().is_empty());
    assert!(h.take_events().is_empty(), "a retransmission is not a new request");
    // Once a provisional went out, a retransmission gets it again.
    h.respond(id, &inv, 100).unwrap();
    h.respond(id, &inv, 180).unwrap();
    assert_eq!(h.take_sent().len(), 2);
    h.request_in(inv, false).unwrap();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(parse(&sent[0].1).status(), Some(180));
    assert_eq!(sent[0].1.dest, PEER);
    assert_eq!(sent[0].1.tx, TxId::Server(id));
}

#[test]
fn invite_non2xx_is_retransmitted_by_timer_g_capped_at_t2_until_timer_h() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), false);
    h.respond(id, &inv, 486).unwrap();
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Completed"));
    h.run_until(Duration::from_secs(40));
    // §17.2.1: at once, then T1, 2·T1, 4·T1, then every T2, until H (64·T1).
    assert_eq!(times_ms(&h.take_sent()), vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    let ev = h.take_events();
    assert_eq!(ev.len(), 1);
    assert!(is_terminated(&ev[0], TxId::Server(id)));
    assert!(h.layer.is_empty());
}

#[test]
fn invite_completed_resends_final_on_retransmission_and_refuses_more_responses() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), true);
    h.respond(id, &inv, 404).unwrap();
    h.take_sent();
    h.request_in(inv.clone(), true).unwrap();
    assert_eq!(parse(&h.take_sent()[0].1).status(), Some(404));
    assert_eq!(h.respond(id, &inv, 180), Err(Rejected::NotAllowed));
    assert_eq!(h.respond(id, &inv, 200), Err(Rejected::NotAllowed));
    assert_eq!(h.respond(id, &inv, 404), Err(Rejected::NotAllowed));
    // Reliable: no Timer G.
    h.run_until(Duration::from_secs(31));
    assert!(h.take_sent().is_empty());
}

#[test]
fn invite_ack_confirms_stops_g_absorbs_acks_until_timer_i() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), false);
    h.respond(id, &inv, 486).unwrap();
    h.run_until(ms(600));
    assert_eq!(h.take_sent().len(), 2);
    h.request_in(ack("z9hG4bKs"), false).unwrap();
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Confirmed"));
    assert!(h.take_events().is_empty(), "the ACK for a non-2xx stays in the transaction");
    h.request_in(ack("z9hG4bKs"), false).unwrap();
    h.request_in(inv, false).unwrap();
    assert!(h.take_events().is_empty());
    assert!(h.take_sent().is_empty(), "Confirmed absorbs ACKs and sends nothing");
    // Timer I = T4 from the ACK.
    h.run_until(ms(5_599));
    assert_eq!(h.layer.len(), 1);
    h.run_until(ms(5_600));
    assert!(is_terminated(&h.take_events()[0], TxId::Server(id)));
    assert!(h.take_sent().is_empty());
    assert!(h.layer.is_empty());
}

#[test]
fn invite_ack_over_reliable_transport_terminates_at_once() {
    let mut h = Harness::new();
    let inv = request_with("INVITE", "z9hG4bKs", "pc33.example.com", "TCP", None);
    let id = h.server(inv.clone(), true);
    h.respond(id, &inv, 486).unwrap();
    h.request_in(request_with("ACK", "z9hG4bKs", "pc33.example.com", "TCP", Some("totag")), true).unwrap();
    let ev = h.take_events();
    assert!(is_terminated(&ev[0], TxId::Server(id)), "Timer I is 0 on a reliable transport");
    assert!(h.layer.is_empty());
}

#[test]
fn invite_2xx_enters_accepted_absorbs_invite_sends_2xx_passes_ack_until_timer_l() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), false);
    h.respond(id, &inv, 180).unwrap();
    h.respond(id, &inv, 200).unwrap();
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Accepted"));
    h.take_sent();
    // RFC 6026 §8.7: no retransmission by the layer (the core retransmits 2xx) …
    h.run_until(Duration::from_secs(2));
    assert!(h.take_sent().is_empty());
    // … the INVITE retransmission is absorbed (no new Request, no response) …
    h.request_in(inv.clone(), false).unwrap();
    assert!(h.take_sent().is_empty());
    assert!(h.take_events().is_empty());
    // … the core's 2xx retransmissions are sent, other responses refused …
    h.respond(id, &inv, 200).unwrap();
    assert_eq!(h.take_sent().len(), 1);
    assert_eq!(h.respond(id, &inv, 486), Err(Rejected::NotAllowed));
    assert_eq!(h.respond(id, &inv, 183), Err(Rejected::NotAllowed));
    // … and an ACK matching it goes to the core.
    h.request_in(ack("z9hG4bKs"), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Ack { source, .. }] if *source == PEER));
    // Timer L = 64·T1 from the first 2xx.
    h.run_until(ms(31_999));
    assert_eq!(h.layer.len(), 1);
    h.run_until(Duration::from_secs(32));
    assert!(is_terminated(&h.take_events()[0], TxId::Server(id)));
    assert!(h.layer.is_empty());
}

#[test]
fn ack_before_any_final_response_goes_to_the_core() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv, false);
    h.request_in(ack("z9hG4bKs"), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Ack { .. }]));
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Proceeding"));
}

#[test]
fn ack_for_2xx_with_its_own_branch_goes_to_the_core() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), false);
    h.respond(id, &inv, 200).unwrap();
    h.request_in(ack("z9hG4bKother"), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Ack { .. }]));
    // An ACK matching nothing at all, likewise.
    h.request_in(ack("z9hG4bKnothing"), false).unwrap();
    assert!(matches!(&h.take_events()[..], [Event::Ack { .. }]));
    assert_eq!(h.layer.len(), 1, "an ACK never creates a transaction");
}

#[test]
fn invite_transport_error_ends_the_transaction() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), false);
    h.respond(id, &inv, 500).unwrap();
    h.layer.handle_transport_error(h.now, TxId::Server(id));
    let ev = h.take_events();
    assert!(matches!(ev[0], Event::TransportError { id: TxId::Server(i) } if i == id));
    assert!(is_terminated(&ev[1], TxId::Server(id)));
    assert!(h.layer.is_empty());
    assert_eq!(h.respond(id, &inv, 500), Err(Rejected::UnknownTransaction));
}

#[test]
fn transport_error_in_accepted_is_reported_but_keeps_absorbing_retransmissions() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let id = h.server(inv.clone(), false);
    h.respond(id, &inv, 200).unwrap();
    h.layer.handle_transport_error(h.now, TxId::Server(id));
    assert!(matches!(&h.take_events()[..], [Event::TransportError { .. }]));
    h.request_in(inv, false).unwrap();
    assert!(h.take_events().is_empty());
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Accepted"));
}

#[test]
fn non_invite_trying_absorbs_retransmissions_silently() {
    let mut h = Harness::new();
    let req = request("OPTIONS", "z9hG4bKn");
    let id = h.server(req.clone(), false);
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Trying"));
    h.request_in(req, false).unwrap();
    assert!(h.take_sent().is_empty());
    assert!(h.take_events().is_empty());
}

#[test]
fn non_invite_proceeding_and_completed_resend_last_response_until_timer_j() {
    let mut h = Harness::new();
    let req = request("REGISTER", "z9hG4bKn");
    let id = h.server(req.clone(), false);
    h.respond(id, &req, 183).unwrap();
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Proceeding"));
    h.request_in(req.clone(), false).unwrap();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(parse(&sent[1].1).status(), Some(183));
    h.respond(id, &req, 200).unwrap();
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Completed"));
    h.request_in(req.clone(), false).unwrap();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(parse(&sent[1].1).status(), Some(200));
    assert_eq!(h.respond(id, &req, 200), Err(Rejected::NotAllowed));
    // No retransmission timer for non-INVITE responses; Timer J = 64·T1.
    h.run_until(ms(31_999));
    assert!(h.take_sent().is_empty());
    assert_eq!(h.layer.len(), 1);
    h.run_until(Duration::from_secs(32));
    assert!(is_terminated(&h.take_events()[0], TxId::Server(id)));
}

#[test]
fn non_invite_final_over_reliable_transport_terminates_at_once() {
    let mut h = Harness::new();
    let req = request("OPTIONS", "z9hG4bKn");
    let id = h.server(req.clone(), true);
    h.respond(id, &req, 200).unwrap();
    assert_eq!(h.take_sent().len(), 1);
    assert!(is_terminated(&h.take_events()[0], TxId::Server(id)), "Timer J is 0 on a reliable transport");
    assert!(h.layer.is_empty());
}

#[test]
fn rfc4320_no_100_and_no_408_to_non_invite_but_100_to_invite() {
    let mut h = Harness::new();
    let req = request("OPTIONS", "z9hG4bKn");
    let id = h.server(req.clone(), false);
    assert_eq!(h.respond(id, &req, 100), Err(Rejected::NotAllowed));
    assert_eq!(h.respond(id, &req, 408), Err(Rejected::NotAllowed));
    assert!(h.take_sent().is_empty());
    assert_eq!(h.layer.state_name(TxId::Server(id)), Some("Trying"));
    let inv = request("INVITE", "z9hG4bKi");
    let iid = h.server(inv.clone(), false);
    assert_eq!(h.respond(iid, &inv, 100), Ok(()));
    assert_eq!(h.respond(iid, &inv, 408), Ok(()));
}

#[test]
fn an_unanswerable_non_invite_can_be_abandoned_and_is_freed() {
    let mut h = Harness::new();
    let req = request("OPTIONS", "z9hG4bKab");
    let id = h.server(req, false);
    h.take_events();
    assert_eq!(h.layer.abandon(id), Ok(()));
    assert!(h.take_sent().is_empty(), "nothing is sent");
    assert!(h.take_events().iter().any(|e| is_terminated(e, TxId::Server(id))));
    assert_eq!(h.layer.len(), 0);
    assert_eq!(h.layer.abandon(id), Err(Rejected::UnknownTransaction));
    let inv = request("INVITE", "z9hG4bKai");
    let iid = h.server(inv, false);
    assert_eq!(h.layer.abandon(iid), Err(Rejected::NotAllowed), "an INVITE always gets a final response");
}

#[test]
fn out_of_range_status_and_unknown_ids_are_refused() {
    let mut h = Harness::new();
    let req = request("OPTIONS", "z9hG4bKn");
    let id = h.server(req.clone(), false);
    assert_eq!(h.layer.send_response(h.now, id, Bytes::new(), 99), Err(Rejected::NotAllowed));
    assert_eq!(h.layer.send_response(h.now, id, Bytes::new(), 700), Err(Rejected::NotAllowed));
    assert_eq!(h.layer.send_response(h.now, ServerId(12345), Bytes::new(), 200), Err(Rejected::UnknownTransaction));
}

#[test]
fn non_invite_transport_error_ends_the_transaction() {
    let mut h = Harness::new();
    let req = request("OPTIONS", "z9hG4bKn");
    let id = h.server(req, false);
    h.layer.handle_transport_error(h.now, TxId::Server(id));
    let ev = h.take_events();
    assert!(matches!(ev[0], Event::TransportError { .. }));
    assert!(is_terminated(&ev[1], TxId::Server(id)));
}

/// Timer J of transactions completed a few milliseconds apart falls on one
/// point of the clean-up grid, so one wake-up frees them all; none is freed
/// before its own 64·T1.
#[test]
fn clean_up_timers_of_one_moment_share_a_deadline() {
    let mut h = Harness::new();
    let first = request("REGISTER", "z9hG4bKgrid0");
    let id = h.server(first.clone(), false);
    h.respond(id, &first, 200).unwrap();
    for k in 1..=3u64 {
        h.run_until(ms(10 * k));
        let req = request("REGISTER", &format!("z9hG4bKgrid{k}"));
        let id = h.server(req.clone(), false);
        h.respond(id, &req, 200).unwrap();
    }
    h.take_events();
    // The first Timer J is the grid's origin: exactly 64·T1.
    h.run_until(Duration::from_secs(32));
    assert_eq!(h.layer.len(), 3);
    // The others, due at 32.010 / .020 / .030 s, wait for the next point.
    h.run_until(ms(32_099));
    assert_eq!(h.layer.len(), 3);
    h.run_until(ms(32_100));
    assert!(h.layer.is_empty());
}

#[test]
fn a_transaction_past_its_final_response_counts_as_finishing_until_its_timers_end() {
    let mut h = Harness::new();
    let inv = request("INVITE", "z9hG4bKs");
    let reg = request("REGISTER", "z9hG4bKr");
    let i = h.server(inv.clone(), false);
    let r = h.server(reg.clone(), false);
    assert_eq!((h.layer.len(), h.layer.finishing(), h.layer.in_progress()), (2, 0, 2));
    h.respond(r, &reg, 200).unwrap();
    assert_eq!((h.layer.finishing(), h.layer.in_progress()), (1, 1), "REGISTER waits on Timer J only");
    h.respond(i, &inv, 486).unwrap();
    assert_eq!((h.layer.finishing(), h.layer.in_progress()), (2, 0), "INVITE in Completed owes nothing");
    h.run_until(Duration::from_secs(40));
    assert_eq!((h.layer.len(), h.layer.finishing()), (0, 0));
}
