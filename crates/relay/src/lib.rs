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

/// The transport between a client and the relay (the client leg). It is
/// part of the 5-tuple: nonces are bound to it as well as to the client's
/// address, and metrics are labelled with it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    /// DTLS over UDP (RFC 7350): datagrams, so ChannelData is not padded.
    Dtls,
}

impl Transport {
    /// Every transport, in label order.
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Dtls,
    ];

    /// The metrics label (and the word in logs).
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Dtls => "dtls",
        }
    }

    /// A dense index (0..4) for per-transport counters.
    pub fn index(self) -> usize {
        self as usize
    }
}
