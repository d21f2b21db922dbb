//! Cost of one full INVITE transaction pair through the sans-IO layer: the
//! proxy's client transaction sends the INVITE, the UAS side's server
//! transaction receives it, answers 100, 180 and 200 (each received by the
//! client transaction), the ACK for the 2xx arrives, and Timers L and M
//! free both transactions.
//!
//! `cargo bench -p umproxy-benches --bench transaction`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use sip_message::{build, Limits, Message};
use sip_transaction::{Config, Event, TransactionLayer};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bK74bf9.1\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:proxy.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

const ACK: &str = "ACK sip:bob@192.0.2.4 SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds9\r\n\
Max-Forwards: 70\r\n\
Route: <sip:proxy.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 ACK\r\n\
Content-Length: 0\r\n\r\n";

struct Corpus {
    invite: Message,
    ack: Message,
    /// (status, bytes, parsed) for 100, 180, 200.
    responses: Vec<(u16, Bytes, Message)>,
}

fn corpus() -> Corpus {
    let invite = Message::parse_slice(INVITE).unwrap();
    let responses = [100u16, 180, 200]
        .into_iter()
        .map(|code| {
            let bytes = build::response(&invite, code, build::reason_phrase(code), Some("a6c85cf"));
            let msg = Message::parse(bytes.clone(), &Limits::default()).unwrap();
            (code, bytes, msg)
        })
        .collect();
    Corpus { invite, ack: Message::parse_slice(ACK).unwrap(), responses }
}

/// One call's transactions, start to finish. With `parse`, every message is
/// parsed from bytes as the transport would; without, pre-parsed messages
/// are cloned (a refcount and the header index).
fn pair(
    c: &Corpus,
    client: &mut TransactionLayer<SocketAddr>,
    server: &mut TransactionLayer<SocketAddr>,
    now: Instant,
    parse: bool,
) {
    let uas: SocketAddr = ([192, 0, 2, 4], 5060).into();
    let uac: SocketAddr = ([192, 0, 2, 1], 5060).into();
    let get =
        |m: &Message| if parse { Message::parse(m.as_bytes().clone(), &Limits::default()).unwrap() } else { m.clone() };
    let cid = client.send_request(now, get(&c.invite), uas, false).unwrap();
    let wire = client.poll_transmit().unwrap();
    server.handle_request(now, get(&c.invite), uac, false).unwrap();
    let Some(Event::Request { id: sid, .. }) = server.poll_event() else { unreachable!() };
    for (code, bytes, msg) in &c.responses {
        server.send_response(now, sid, bytes.clone(), *code).unwrap();
        black_box(server.poll_transmit());
        client.handle_response(now, get(msg));
        black_box(client.poll_event());
    }
    server.handle_request(now, get(&c.ack), uac, false).unwrap();
    black_box(server.poll_event());
    let later = now + Duration::from_secs(33);
    client.handle_timeout(later);
    server.handle_timeout(later);
    while let Some(e) = client.poll_event() {
        black_box(e);
    }
    while let Some(e) = server.poll_event() {
        black_box(e);
    }
    debug_assert!(client.is_empty() && server.is_empty());
    black_box((cid, wire));
}

fn bench(cr: &mut Criterion) {
    let c = corpus();
    let mut group = cr.benchmark_group("transaction");
    for (name, parse) in [("invite_pair", false), ("invite_pair_with_parse", true)] {
        let mut client = TransactionLayer::new(Config::default());
        let mut server = TransactionLayer::new(Config::default());
        let mut now = Instant::now();
        group.bench_function(name, |b| {
            b.iter(|| {
                pair(&c, &mut client, &mut server, now, parse);
                now += Duration::from_secs(40);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
