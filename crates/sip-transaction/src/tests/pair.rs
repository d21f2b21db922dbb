//! A client layer and a server layer talking over a lossy virtual network
//! on one virtual clock (quinn's `Pair` idea): retransmission timers on
//! both sides recover lost messages.

use super::*;

struct Pair {
    client: TransactionLayer<&'static str>,
    server: TransactionLayer<&'static str>,
    now: Instant,
    /// Drop the next n datagrams of each direction.
    drop_to_server: usize,
    drop_to_client: usize,
    server_events: Vec<Event<&'static str>>,
    client_events: Vec<Event<&'static str>>,
}

impl Pair {
    fn new() -> Self {
        Pair {
            client: TransactionLayer::new(Config::default()),
            server: TransactionLayer::new(Config::default()),
            now: Instant::now(),
            drop_to_server: 0,
            drop_to_client: 0,
            server_events: Vec::new(),
            client_events: Vec::new(),
        }
    }

    /// Deliver everything in flight until both sides are quiet.
    fn drive(&mut self) {
        loop {
            let mut progress = false;
            while let Some(t) = self.client.poll_transmit() {
                progress = true;
                if self.drop_to_server > 0 {
                    self.drop_to_server -= 1;
                    continue;
                }
                let m = Message::parse(t.bytes, &sip_message::Limits::default()).unwrap();
                let _ = self.server.handle_request(self.now, m, "client", false);
            }
            while let Some(t) = self.server.poll_transmit() {
                progress = true;
                if self.drop_to_client > 0 {
                    self.drop_to_client -= 1;
                    continue;
                }
                let m = Message::parse(t.bytes, &sip_message::Limits::default()).unwrap();
                self.client.handle_response(self.now, m);
            }
            while let Some(e) = self.server.poll_event() {
                progress = true;
                self.server_events.push(e);
            }
            while let Some(e) = self.client.poll_event() {
                progress = true;
                self.client_events.push(e);
            }
            if !progress {
                return;
            }
        }
    }

    /// Advance to the next deadline of either side.
    fn step_time(&mut self) -> bool {
        let next = [self.client.poll_timeout(), self.server.poll_timeout()].into_iter().flatten().min();
        let Some(at) = next else { return false };
        self.now = at;
        self.client.handle_timeout(at);
        self.server.handle_timeout(at);
        self.drive();
        true
    }
}

#[test]
fn lost_invite_and_lost_final_response_are_recovered_by_timers_a_and_g() {
    let mut p = Pair::new();
    let start = p.now;
    let invite = request_with("INVITE", "z9hG4bKpair", "proxy.example.net", "UDP", None);
    let cid = p.client.send_request(p.now, invite, "server", false).unwrap();
    p.drop_to_server = 1; // the INVITE is lost
    p.drive();
    assert!(p.server_events.is_empty());
    p.step_time(); // Timer A at T1
    assert_eq!(p.now - start, ms(500));
    let (sid, req) = match p.server_events.pop() {
        Some(Event::Request { id, msg, .. }) => (id, msg),
        other => panic!("{other:?}"),
    };
    // The core answers 486; it is lost once, Timer G resends it.
    p.drop_to_client = 1;
    p.server.send_response(p.now, sid, response_bytes(&req, 486), 486).unwrap();
    p.drive();
    assert!(p.client_events.is_empty());
    p.step_time(); // Timer A again (1 s interval) or Timer G: whichever first
    while p.client_events.is_empty() {
        assert!(p.step_time());
    }
    assert!(matches!(&p.client_events[..], [Event::Response { id, msg }] if *id == cid && msg.status() == Some(486)));
    // The layer's ACK reached the server: it is Confirmed.
    assert_eq!(p.server.state_name(TxId::Server(sid)), Some("Confirmed"));
    // Everything ends by itself: I (T4) on the server, D (32 s) on the client.
    while p.step_time() {}
    assert!(p.client.is_empty() && p.server.is_empty());
    assert!(p.now - start <= Duration::from_secs(40));
}
