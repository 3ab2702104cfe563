//! The `uturn_tcp_*` family: TCP allocations (RFC 6062), their peer
//! connections and the bytes relayed between peer and data connections.

use prometheus_client::registry::Registry;

use super::{by_label, gauge};
use crate::shard::{ShardReport, TcpStats};
use crate::turn::TcpCounts;

pub(super) fn register(reg: &mut Registry, reports: &[Option<ShardReport>]) {
    let mut io = TcpStats::default();
    let mut turn = TcpCounts::default();
    for r in reports.iter().flatten() {
        io.to_peer_bytes += r.tcp.to_peer_bytes;
        io.to_client_bytes += r.tcp.to_client_bytes;
        io.peer_connections += r.tcp.peer_connections;
        io.pipes += r.tcp.pipes;
        io.orphans += r.tcp.orphans;
        io.early_refused += r.tcp.early_refused;
        let t = &r.turn.tcp;
        turn.connected += t.connected;
        turn.connect_failed += t.connect_failed;
        turn.attempts += t.attempts;
        turn.refused += t.refused;
        turn.bound += t.bound;
        turn.bind_timeouts += t.bind_timeouts;
        turn.connect_timeouts += t.connect_timeouts;
    }
    let bytes = by_label(
        "direction",
        &[
            ("to_peer", io.to_peer_bytes),
            ("to_client", io.to_client_bytes),
        ],
    );
    reg.register(
        "tcp_relay_bytes",
        "Bytes relayed between TCP allocations' peer connections and their clients' data connections",
        bytes,
    );
    reg.register(
        "tcp_peer_connections",
        "TCP allocations' peer connections open now (connecting, waiting for a ConnectionBind, or bound)",
        gauge(io.peer_connections),
    );
    reg.register(
        "tcp_data_connections",
        "Client data connections bound to a peer connection now",
        gauge(io.pipes),
    );
    let outcomes = by_label(
        "outcome",
        &[
            ("connected", turn.connected),
            ("connect_failed", turn.connect_failed),
            ("connect_timeout", turn.connect_timeouts),
            ("peer_announced", turn.attempts),
            ("peer_refused", turn.refused),
            ("bound", turn.bound),
            ("bind_timeout", turn.bind_timeouts),
            ("data_connection_orphaned", io.orphans),
            ("data_connection_early_data_refused", io.early_refused),
        ],
    );
    reg.register(
        "tcp_connections",
        "TCP allocations' peer connections by outcome: Connect made, failed (447) or not made \
         within 30 s (447), a peer that connected in announced (ConnectionAttempt) or refused \
         (no permission, refused peer, limits), bound by a ConnectionBind, closed for want of \
         one within 30 s, a data connection whose peer connection had gone, or one closed because \
         what it sent before its ConnectionBind answer could not be kept (over 64 KiB)",
        outcomes,
    );
}
