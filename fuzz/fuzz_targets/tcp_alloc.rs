#![no_main]
//! See `uturn_fuzz::tcp` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uturn_fuzz::tcp::run(data));
