//! Parser cost per message, side by side on the same bytes and in the same
//! run: umproxy's `sip-message`, the `rsip` crate, and a bare `memchr` scan
//! for line ends (the floor: no parser can touch fewer bytes).
//!
//! `benches/parser-vs-rsip.sh` runs this and prints the README table.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sip_message::{Limits, Message};
use std::hint::black_box;
use std::time::Duration;
use umproxy_benches::CORPUS;

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    for s in &CORPUS {
        let mut g = c.benchmark_group(s.name);
        g.throughput(Throughput::Bytes(s.bytes.len() as u64));
        // A datagram arrives as a `Bytes`; slicing a static one costs what
        // a receive buffer's `freeze()` would.
        g.bench_function("umproxy", |b| {
            b.iter(|| black_box(Message::parse(Bytes::from_static(black_box(s.bytes)), &limits)))
        });
        g.bench_function("rsip", |b| b.iter(|| black_box(rsip::SipMessage::try_from(black_box(s.bytes)))));
        g.bench_function("memchr_floor", |b| {
            b.iter(|| black_box(memchr::memchr_iter(b'\n', black_box(s.bytes)).count()))
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = parse
}
criterion_main!(benches);
