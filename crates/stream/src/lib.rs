//! Stream transports for the client leg (TCP and TLS), sans-IO: bytes in,
//! frames out; frames in, bytes to write. No sockets, no clock, no threads
//! and no `unsafe`: the shard owns the file descriptors and passes `now` in.
//!
//! * `proxy`: PROXY protocol v2 headers from trusted load balancers.
#![forbid(unsafe_code)]

pub mod proxy;
