//! What a shard counts ([`Stats`], summed across shards for the metrics)
//! and what it reads when asked ([`Gauges`]).

use crate::auth::AuthFailure;

/// Counters of one shard.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub allocations_expired: u64,
    pub allocations_deleted: u64,
    pub drop_malformed: u64,
    pub drop_no_allocation: u64,
    pub drop_no_permission: u64,
    pub drop_rate_limited: u64,
    pub drop_forbidden_peer: u64,
    pub drop_encode: u64,
    /// Requests refused because a quota (allocations, permissions or
    /// channels) was reached.
    pub drop_quota: u64,
    pub relay_bind_errors: u64,
    pub auth_failures: u64,
    /// Failed authentications by reason (indexed by `AuthFailure::index`).
    pub auth_failures_by_reason: [u64; AuthFailure::ALL.len()],
    /// Error responses to authenticated requests, by code (see `ERROR_CODES`).
    pub errors_by_code: [u64; ERROR_CODES.len()],
    /// Authenticated Allocate requests refused, by code (see `ERROR_CODES`).
    pub allocations_rejected: [u64; ERROR_CODES.len()],
    /// Allocations created and traffic relayed, by the client's transport
    /// (`Transport::index`); `totals` sums them.
    pub by_transport: [TransportCounts; 4],
    /// TCP allocations' peer connections (RFC 6062).
    pub tcp: TcpCounts,
}

/// What became of TCP allocations' peer connections (RFC 6062).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounts {
    /// Connect requests whose connection was made, and those that failed.
    pub connected: u64,
    pub connect_failed: u64,
    /// Peers that connected in and were announced (ConnectionAttempt).
    pub attempts: u64,
    /// Peers that connected in and were closed at once (no permission, a
    /// refused peer, the allocation's limits).
    pub refused: u64,
    /// ConnectionBind requests that bound a data connection.
    pub bound: u64,
    /// Peer connections closed because no ConnectionBind came in time.
    pub bind_timeouts: u64,
    /// Connect requests answered 447 because the connection was not made
    /// within `CONNECT_TIMEOUT` (not counted in `connect_failed`).
    pub connect_timeouts: u64,
}

impl TcpCounts {
    fn add(&mut self, o: &TcpCounts) {
        self.connected += o.connected;
        self.connect_failed += o.connect_failed;
        self.attempts += o.attempts;
        self.refused += o.refused;
        self.bound += o.bound;
        self.bind_timeouts += o.bind_timeouts;
        self.connect_timeouts += o.connect_timeouts;
    }
}

/// The counters kept per client transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportCounts {
    pub allocations_created: u64,
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// The error codes counted in `Stats::errors_by_code`, in order.
pub const ERROR_CODES: [u16; 15] = [
    300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 508,
];

impl Stats {
    pub(crate) fn count_error(&mut self, code: u16, allocate: bool) {
        if let Some(i) = ERROR_CODES.iter().position(|&c| c == code) {
            self.errors_by_code[i] += 1;
            if allocate {
                self.allocations_rejected[i] += 1;
            }
        }
    }

    pub(crate) fn count_auth_failure(&mut self, failure: AuthFailure) {
        self.auth_failures += 1;
        self.auth_failures_by_reason[failure.index()] += 1;
    }

    /// Allocations created and traffic relayed over every transport.
    pub fn totals(&self) -> TransportCounts {
        let mut t = TransportCounts::default();
        for c in &self.by_transport {
            t.add(c);
        }
        t
    }

    /// Adds `other`'s counters to these.
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            allocations_expired,
            allocations_deleted,
            drop_malformed,
            drop_no_allocation,
            drop_no_permission,
            drop_rate_limited,
            drop_forbidden_peer,
            drop_encode,
            drop_quota,
            relay_bind_errors,
            auth_failures,
            auth_failures_by_reason,
            errors_by_code,
            allocations_rejected,
            by_transport,
            tcp,
        } = other;
        self.tcp.add(tcp);
        for (a, b) in self.by_transport.iter_mut().zip(by_transport) {
            a.add(b);
        }
        self.allocations_expired += allocations_expired;
        self.allocations_deleted += allocations_deleted;
        self.drop_malformed += drop_malformed;
        self.drop_no_allocation += drop_no_allocation;
        self.drop_no_permission += drop_no_permission;
        self.drop_rate_limited += drop_rate_limited;
        self.drop_forbidden_peer += drop_forbidden_peer;
        self.drop_encode += drop_encode;
        self.drop_quota += drop_quota;
        self.relay_bind_errors += relay_bind_errors;
        self.auth_failures += auth_failures;
        for (a, b) in self
            .auth_failures_by_reason
            .iter_mut()
            .zip(auth_failures_by_reason)
        {
            *a += b;
        }
        for (a, b) in self.errors_by_code.iter_mut().zip(errors_by_code) {
            *a += b;
        }
        for (a, b) in self
            .allocations_rejected
            .iter_mut()
            .zip(allocations_rejected)
        {
            *a += b;
        }
    }
}

impl TransportCounts {
    fn add(&mut self, o: &TransportCounts) {
        self.allocations_created += o.allocations_created;
        self.to_peer_packets += o.to_peer_packets;
        self.to_peer_bytes += o.to_peer_bytes;
        self.to_client_packets += o.to_client_packets;
        self.to_client_bytes += o.to_client_bytes;
    }
}

/// What the shard's gauges read: live state, counted when asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub allocations: u64,
    pub permissions: u64,
    pub channels: u64,
}
