//! Load arbitrary text as `umproxy.toml`. It must never panic: a bad file
//! gets an error naming the file (and, past the TOML syntax, a key).
#![no_main]

use umproxy::config::{Config, ConfigError};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Relative paths resolve against a directory that does not exist: the
    // loader only asks whether files exist, it never reads them.
    let base = std::path::Path::new("/nonexistent-umproxy-fuzz");
    if let Err(e) = Config::from_str_with_base(text, "umproxy.toml", base) {
        let message = e.to_string();
        assert!(message.starts_with("umproxy.toml"), "error without the file name: {message}");
        if let ConfigError::Invalid { key, .. } = &e {
            assert!(!key.is_empty(), "an invalid value without its key: {message}");
        }
    }
});
