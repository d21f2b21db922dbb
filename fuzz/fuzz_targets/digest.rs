//! Parse arbitrary bytes as an `Authorization` / `Proxy-Authorization`
//! value (digest credentials, RFC 3261 §22, RFC 7616). It must never panic;
//! credentials that parse carry slices of the input that parse again to the
//! same values.
#![no_main]

use umproxy::location::auth::parse_credentials;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(c) = parse_credentials(data) else { return };
    let seen = format!("{c:?}");
    let again = parse_credentials(data).map(|d| format!("{d:?}"));
    assert_eq!(again.as_deref(), Ok(seen.as_str()));
});
