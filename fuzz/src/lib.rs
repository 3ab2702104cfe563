//! The fuzz targets' bodies, kept in a library so that the targets stay one
//! line each, the seed generator (`make-seeds`) can speak the relay target's
//! input format, and `cargo test` in this directory runs every seed through
//! every check on a stable toolchain without libFuzzer.
//!
//! Every check asserts: a failed assertion or a panic is a finding.

pub mod codec;
pub mod config;
pub mod dtls;
pub mod framing;
pub mod proxy;
pub mod reader;
pub mod relay;
pub mod seeds;
pub mod tcp;
