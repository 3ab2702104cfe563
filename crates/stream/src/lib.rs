//! Stream transports for the client leg (TCP and TLS), sans-IO: bytes in,
//! frames out; frames in, bytes to write. No sockets, no clock, no threads
//! and no `unsafe`: the shard owns the file descriptors and passes `now` in.
//!
//! * [`frames`]: a connection's bytes split into STUN and ChannelData frames.
//! * [`queue`]: the bounded send queue of one connection.
//! * [`tls`]: the TLS server configuration (rustls), from PEM files or
//!   self-signed for a demo.
//! * [`ledger`]: connections per node and per source, shared by shards.
//! * [`proxy`]: PROXY protocol v2 headers from trusted load balancers.
#![forbid(unsafe_code)]

pub mod frames;
pub mod ledger;
pub mod proxy;
pub mod queue;
pub mod tls;

pub use frames::{Deframer, Frame};
pub use ledger::{ConnLedger, Refused};
pub use queue::SendQueue;
