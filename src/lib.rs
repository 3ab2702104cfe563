//! uturn: a TURN relay (RFC 8656) for bare-metal Linux edge nodes.
//!
//! Layers, top to bottom (each depends only on those below it):
//! `stun` (wire codec) → `turn` (sans-IO state machine) → `auth`, `policy`
//! → `io` (sockets; the only place with `unsafe`) → `shard`, `server`, `config`.
#![deny(unsafe_code)]

pub mod auth;
pub mod config;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod shard;
pub mod stun;
pub mod tune;
pub mod turn;
