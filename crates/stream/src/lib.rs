//! Stream transports for the client leg (TCP and TLS), sans-IO: bytes in,
//! frames out; frames in, bytes to write. No sockets, no clock, no threads
//! and no `unsafe`: the shard owns the file descriptors and passes `now` in.
//!
//! * [`frames`]: a connection's bytes split into STUN and ChannelData frames.
//! * [`queue`]: the bounded send queue of one connection.
//! * [`tls`]: the TLS server configuration (rustls), from PEM files or
//!   self-signed for a demo.
//! * [`proxy`]: PROXY protocol v2 headers from trusted load balancers.
#![forbid(unsafe_code)]

pub mod frames;
pub mod proxy;
pub mod queue;
pub mod tls;

pub use frames::{Deframer, Frame};
pub use queue::SendQueue;
