//! Parse arbitrary bytes as a URI. It must never panic, and a URI that
//! parses must hand back sub-slices of the input that reparse to the same
//! values.
#![no_main]

use sip_message::Uri;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(u) = Uri::parse(data) else { return };
    assert_eq!(u.as_bytes(), data);
    let _ = (u.user(), u.password(), u.host(), u.host_kind(), u.port(), u.transport(), u.is_loose_route());
    let params: Vec<_> = u.params().iter().collect();
    let again = Uri::parse(u.as_bytes());
    assert_eq!(again.map(|a| a.params().iter().count()), Some(params.len()));
    assert_eq!(again.map(|a| (a.host(), a.port())), Some((u.host(), u.port())));
});
