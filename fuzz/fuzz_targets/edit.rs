//! Parse arbitrary bytes; if they parse, apply forwarding edits chosen by
//! the input's last bytes and reparse the result. The edited message must
//! parse and show the edits.
#![no_main]

use bytes::Bytes;
use sip_message::{HeaderName, Limits, Message};

/// Edits may add a header line, a Via, a Record-Route and some bytes to a
/// message that sat exactly at a limit; reparse with room for that.
fn roomier() -> Limits {
    let d = Limits::default();
    Limits {
        max_message_size: d.max_message_size + 1024,
        max_headers: d.max_headers + 8,
        max_vias: d.max_vias + 1,
        max_routes: d.max_routes + 1,
        ..d
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&ops, msg)) = data.split_last() else { return };
    let Ok(m) = Message::parse(Bytes::copy_from_slice(msg), &Limits::default()) else { return };
    let mut e = m.edit();
    let is_request = m.is_request();
    if ops & 1 != 0 {
        e = e.push_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKfuzz");
    }
    if ops & 2 != 0 {
        e = e.pop_route();
    }
    if ops & 4 != 0 && is_request {
        e = e.decrement_max_forwards();
    }
    if ops & 8 != 0 {
        e = e.push_record_route("<sip:proxy.example.com;lr>");
    }
    if ops & 16 != 0 && is_request {
        e = e.set_request_uri("sip:target@192.0.2.7:5062");
    }
    if ops & 32 != 0 {
        e = e.remove_header(HeaderName::Supported).add_header("X-Fuzz", "1");
    }
    if ops & 64 != 0 {
        e = e.set_body(Some("text/plain"), Bytes::from_static(b"edited"));
    }
    if ops & 128 != 0 && ops & 1 == 0 {
        e = e.remove_top_via();
    }
    let out = e.finish();
    // Removing the only Via leaves a message that is rightly refused.
    let Ok(r) = Message::parse(out, &roomier()) else {
        assert!(ops & 128 != 0 && ops & 1 == 0, "edited message must reparse");
        return;
    };
    if ops & 1 != 0 {
        assert_eq!(r.branch(), Some("z9hG4bKfuzz"));
    }
    if ops & 4 != 0 && is_request {
        assert_eq!(r.max_forwards(), Some(m.max_forwards().map(|n| n.saturating_sub(1)).unwrap_or(70)));
    }
    if ops & 8 != 0 {
        assert_eq!(r.record_routes().next().map(|rr| rr.uri.host()), Some("proxy.example.com"));
    }
    if ops & 16 != 0 && is_request {
        assert_eq!(r.request_uri_str(), Some("sip:target@192.0.2.7:5062"));
    }
    if ops & 64 != 0 {
        assert_eq!(r.body(), b"edited");
    }
});
