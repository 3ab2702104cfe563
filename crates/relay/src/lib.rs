//! The relay's decisions, sans-IO: the TURN state machine ([`turn`]), who
//! may use it ([`auth`]) and what it may do ([`policy`]).
//!
//! The rule this crate keeps: **it owns no resource**. No sockets (the
//! caller's [`turn::RelaySockets`] opens them), no clock (every input carries
//! [`turn::Now`]), no threads, no logging (what an operator may want to
//! read is handed to the caller's [`turn::Observer`] as an [`turn::Event`]),
//! and no `unsafe`. So every behaviour can be driven, replayed and fuzzed
//! from a test with a fake clock.
#![forbid(unsafe_code)]

pub mod auth;
pub mod policy;
pub mod turn;
