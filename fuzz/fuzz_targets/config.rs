//! Any text as a `pgcat.toml`: parsing and validation must refuse what is wrong with an error, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ocelot::config::Config::parse_and_validate(text);
    }
});
