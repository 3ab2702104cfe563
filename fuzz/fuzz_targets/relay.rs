#![no_main]
//! See `uturn_fuzz::relay` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uturn_fuzz::relay::run(data));
