#![no_main]
//! See `uturn_fuzz::dtls` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uturn_fuzz::dtls::run(data));
