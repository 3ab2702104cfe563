//! Per-source token buckets in a fixed-size table: bounded memory whatever
//! the number of sources.
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

use std::net::IpAddr;
use std::time::Instant;

pub struct RateLimiter {
    per_second: u32,
    burst: u32,
}

impl RateLimiter {
    /// `per_second` replies per source on average, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        todo!()
    }
    /// True when a reply to `source` may be sent now (and takes a token).
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        todo!()
    }
}
