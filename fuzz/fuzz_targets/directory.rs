//! Load arbitrary text as the ExUM `directory.toml`. It must never panic:
//! a bad directory gets errors naming the file, the object and the field.
#![no_main]

use umproxy::exum::{Directory, LoadOptions};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let opts = LoadOptions { has_tls_listener: true, domains: vec!["contoso.test".to_owned()] };
    match Directory::from_toml(text, "directory.toml", &opts) {
        Ok(dir) => {
            // Every user of a loaded directory has a decision.
            for u in dir.users() {
                let _ = umproxy::exum::voicemail_target(&dir, u);
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("directory.toml"), "{message}");
        }
    }
});
