//! Host tuning for edge nodes: the sysctl profiles of `tuning/profiles/`
//! (built into the binary) and `uturn tune`, which compares a host with one
//! and prints what to change or how to put things back.
//!
//! Nothing here writes to the kernel: applying a profile is left to
//! `sysctl -p`, so that what changes is a file an operator can read, keep
//! and revert (tuning/README.md).

pub mod check;
mod cli;
pub mod profile;
pub mod sysctl;

pub use cli::{run, CheckArgs, ProfileArgs, TuneArgs, TuneCommand, TuneError};
