//! What the relay tells its caller about, for an operator to read.
//!
//! The state machine does not log: it hands each [`Event`] to the
//! [`Observer`] it was given, at once and by reference, so reporting costs
//! nothing when nobody listens and never allocates. The caller decides what
//! becomes a log line, at which level, and how much of the client's identity
//! it shows (uturn redacts usernames and addresses unless told otherwise).

use std::net::SocketAddr;

use crate::policy::PeerDenied;

/// Something worth telling an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// An allocation was made; `relay` is its first relayed address.
    AllocationCreated {
        user: &'a [u8],
        client: SocketAddr,
        relay: SocketAddr,
    },
    /// An allocation ended (`why`: "expired", "refresh 0", "drain", …).
    AllocationEnded {
        user: &'a [u8],
        client: SocketAddr,
        why: &'static str,
    },
    /// An authenticated Allocate was refused because a quota is reached:
    /// `quota` names the configuration key, `limit` its value, `code` the
    /// error sent (486 or 508).
    QuotaReached {
        /// The name the quota is counted under (the REST username's user
        /// part, or the static username).
        quota_id: &'a [u8],
        client: SocketAddr,
        quota: &'static str,
        limit: u32,
        code: u16,
    },
    /// A request named a peer that the peer policy refuses.
    PeerRefused { peer: SocketAddr, why: PeerDenied },
}

/// Receives the relay's events. Called on the shard's thread, in the middle
/// of handling a datagram: keep it short.
pub trait Observer: Send {
    fn event(&mut self, event: Event<'_>);
}

/// Listens to nothing (tests, the fuzz harness, benches).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ignore;

impl Observer for Ignore {
    fn event(&mut self, _: Event<'_>) {}
}
