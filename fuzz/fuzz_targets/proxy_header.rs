#![no_main]
//! See `uturn_fuzz::proxy` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uturn_fuzz::proxy::run(data));
