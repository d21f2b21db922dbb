//! Parse arbitrary bytes as one SIP message. It must never panic, and a
//! message that parses must answer every getter and survive an unchanged
//! write: the writer copies it byte for byte up to the end of its body.
#![no_main]

use bytes::Bytes;
use sip_message::{Limits, Message};

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
    let Ok(m) = Message::parse(Bytes::copy_from_slice(data), &Limits::default()) else { return };
    let _ = (m.method_str(), m.request_uri(), m.status(), m.reason(), m.top_via(), m.from(), m.to());
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.content_type(), m.expires());
    let _ = m.vias().count() + m.routes().count() + m.record_routes().count() + m.contacts().count();
    let _ = m.require().count() + m.proxy_require().count() + m.supported().count();
    let _ = m.authorization().count() + m.www_authenticate().count() + m.diversions().count();
    let _ = (m.history_info().count(), m.paths().count(), m.reasons().count(), m.privacy(), m.date());
    let _ = m.check_request_uri_scheme();
    let written = m.edit().finish();
    if m.content_length().is_some() {
        assert_eq!(&written[..], data.get(..m.len()).unwrap_or_default());
    }
    assert!(Message::parse(written, &roomier()).is_ok());
});
