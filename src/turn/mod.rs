//! The TURN state machine (RFC 8656), sans-IO: no sockets, no clock, no
//! threads. Inputs carry `now`; outputs say what to send where.
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::Authenticator;
use crate::policy::{AllocationLedger, PeerPolicy, Quotas};

/// Bytes the io layer leaves free in front of a peer datagram so that a
/// ChannelData header or a Data indication prefix is written in place.
pub const PEER_HEADROOM: usize = 48;
/// Bytes the io layer leaves free after a peer datagram (padding).
pub const PEER_TAILROOM: usize = 4;
/// Largest response the control path writes.
pub const MAX_REPLY: usize = 1280;

/// The time, twice: a monotonic instant for timers and the wall clock (unix
/// seconds) for nonces and REST credential expiry.
#[derive(Copy, Clone, Debug)]
pub struct Now {
    pub at: Instant,
    pub unix: u64,
}

/// Which listener socket a client datagram arrived on (the server side of
/// the 5-tuple). Chosen by the io layer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(pub u16);

/// Names one relay socket; chosen by the state machine, echoed by the io
/// layer with every datagram that socket receives.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelayToken(pub u64);

/// The io layer's side of relay sockets.
pub trait RelaySockets {
    /// Binds a UDP socket to `addr` and starts receiving on it, tagging its
    /// datagrams with `token`. `AddrInUse` makes the state machine try
    /// another port.
    fn bind(&mut self, addr: SocketAddr, token: RelayToken, dont_fragment: bool) -> std::io::Result<()>;
    /// Closes the socket bound for `token`.
    fn close(&mut self, token: RelayToken);
}

/// Static settings of one shard's state machine.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// Relay address for IPv4 allocations (None: IPv4 relays unsupported → 440).
    pub relay_v4: Option<Ipv4Addr>,
    /// Relay address for IPv6 allocations (None: IPv6 relays unsupported → 440).
    pub relay_v6: Option<Ipv6Addr>,
    /// This shard's slice of the relay port range.
    pub ports: RangeInclusive<u16>,
    /// Upper bound for requested lifetimes (RFC 8656 §7.2: default 600 s).
    pub max_lifetime: Duration,
    pub quotas: Quotas,
    /// Unauthenticated replies allowed per source per second, and the burst.
    pub unauth_rate: u32,
    pub unauth_burst: u32,
    /// SOFTWARE attribute value in responses (off by default).
    pub software: Option<String>,
}

/// What to do with a datagram a client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Nothing to send (dropped and counted, or an indication consumed).
    Nothing,
    /// Send `scratch[..n]` back to the client through the same listener.
    Reply(usize),
    /// Send `pkt[payload]` to `peer` from the relay socket `relay`.
    ToPeer { relay: RelayToken, peer: SocketAddr, payload: Range<usize> },
}

/// A peer datagram turned into ChannelData or a Data indication, in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToClient {
    pub listener: ListenerId,
    pub client: SocketAddr,
    /// Range of the finished message in the buffer given to `handle_peer`.
    pub range: Range<usize>,
}

/// Counters of one shard.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub allocations_created: u64,
    pub allocations_expired: u64,
    pub allocations_deleted: u64,
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
    pub drop_malformed: u64,
    pub drop_no_allocation: u64,
    pub drop_no_permission: u64,
    pub drop_rate_limited: u64,
    pub auth_failures: u64,
}

/// One shard's TURN server state.
pub struct Relay {
    cfg: TurnConfig,
}

impl Relay {
    pub fn new(cfg: TurnConfig, auth: Arc<Authenticator>, policy: Arc<PeerPolicy>, ledger: Arc<AllocationLedger>) -> Self {
        todo!()
    }
    /// Replaces credentials and peer policy (reload); allocations stay.
    pub fn set_auth(&mut self, auth: Arc<Authenticator>) {
        todo!()
    }
    pub fn set_policy(&mut self, policy: Arc<PeerPolicy>) {
        todo!()
    }
    /// A datagram from `client` on `listener`. Responses are written into
    /// `scratch` (at least `MAX_REPLY` bytes).
    pub fn handle_client(
        &mut self,
        now: Now,
        listener: ListenerId,
        client: SocketAddr,
        pkt: &[u8],
        scratch: &mut [u8],
        sockets: &mut impl RelaySockets,
    ) -> ClientOutput {
        todo!()
    }
    /// A datagram from `peer` on relay socket `relay`; its payload sits at
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]` and `buf` has
    /// `PEER_TAILROOM` more bytes after it.
    pub fn handle_peer(&mut self, now: Now, relay: RelayToken, peer: SocketAddr, buf: &mut [u8], len: usize) -> Option<ToClient> {
        todo!()
    }
    /// Expires allocations, permissions, channels and reservations.
    pub fn handle_timeout(&mut self, now: Now, sockets: &mut impl RelaySockets) {
        todo!()
    }
    /// When `handle_timeout` next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    pub fn stats(&self) -> &Stats {
        todo!()
    }
    /// Live allocations on this shard.
    pub fn allocation_count(&self) -> usize {
        todo!()
    }
    /// Deletes every allocation, closing their sockets (shutdown).
    pub fn close_all(&mut self, sockets: &mut impl RelaySockets) {
        todo!()
    }
}
