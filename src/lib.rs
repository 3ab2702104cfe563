//! uturn: a TURN relay (RFC 8656) for bare-metal Linux edge nodes.
//!
//! This package is the server around three library crates (see the README's
//! "Architecture"): `uturn-stun` (the wire codec), `uturn-relay` (the sans-IO
//! relay: `turn`, `auth`, `policy`) and `uturn-io` (sockets and io
//! backends, where all `unsafe` lives). It adds what only a running server
//! needs: configuration, the per-core shards that drive `turn` over `io`,
//! the server that starts, reloads and drains them, metrics, logging and the
//! kernel tuning checks. No `unsafe` here.
//!
//! The library crates are re-exported under their old module names, so
//! `uturn::stun`, `uturn::turn`, `uturn::auth`, `uturn::policy` and
//! `uturn::io` name the same things for tests, benches and the fuzz targets.
#![forbid(unsafe_code)]

pub use uturn_dtls as dtls;
pub use uturn_io as io;
pub use uturn_relay::{auth, policy, turn};
pub use uturn_stream as stream;
pub use uturn_stun as stun;

pub mod cli;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod shard;
pub mod tune;
