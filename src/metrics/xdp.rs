//! The `uturn_xdp_*` family: what the XDP program did with each packet it
//! saw (read from its per-CPU counters at each scrape), where it is
//! attached, and the routes the shards keep in its maps.

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{counter, gauge, labels, Labels};
use crate::io::xdp::{Program, OUTCOMES};
use crate::shard::{OffloadStats, ShardReport};

pub(super) fn register(
    reg: &mut Registry,
    reports: &[Option<ShardReport>],
    program: &Mutex<Program>,
) {
    let (outcomes, attached) = match program.lock() {
        Ok(p) => (
            p.outcomes(),
            p.attached()
                .map(|(n, m)| (n.to_string(), m.name()))
                .collect::<Vec<_>>(),
        ),
        // A scrape that panicked holding the lock: report nothing of it.
        Err(_) => return,
    };
    let up: Family<Labels, Gauge> = Family::default();
    for (name, mode) in &attached {
        up.get_or_create(&labels(&[("interface", name), ("mode", mode)]))
            .set(1);
    }
    reg.register(
        "xdp_attached",
        "1 for each interface the XDP program is attached to, with its mode (native or generic)",
        up,
    );
    let packets: Family<Labels, Counter> = Family::default();
    for (name, n) in OUTCOMES.iter().zip(outcomes) {
        packets
            .get_or_create(&labels(&[("outcome", name)]))
            .inc_by(n);
    }
    reg.register(
        "xdp_packets",
        "Packets the XDP program saw, by outcome: forwarded_to_peer and forwarded_to_client \
         were relayed in the driver; every other outcome is a reason it passed the packet up \
         to the socket path untouched",
        packets,
    );
    let mut s = OffloadStats::default();
    for r in reports.iter().flatten() {
        s.routes += r.xdp.routes;
        s.installed_total += r.xdp.installed_total;
        s.removed_total += r.xdp.removed_total;
        s.refused_wildcard += r.xdp.refused_wildcard;
        s.refused_full += r.xdp.refused_full;
        s.refused_error += r.xdp.refused_error;
    }
    reg.register(
        "xdp_routes",
        "Bound channels in the XDP program's maps now",
        gauge(s.routes),
    );
    reg.register(
        "xdp_routes_installed",
        "Bound channels installed in the XDP maps",
        counter(s.installed_total),
    );
    reg.register(
        "xdp_routes_removed",
        "Bound channels removed from the XDP maps (channel, permission or allocation ended)",
        counter(s.removed_total),
    );
    let refused: Family<Labels, Counter> = Family::default();
    for (reason, n) in [
        ("wildcard_address", s.refused_wildcard),
        ("maps_full", s.refused_full),
        ("kernel_error", s.refused_error),
    ] {
        refused
            .get_or_create(&labels(&[("reason", reason)]))
            .inc_by(n);
    }
    reg.register(
        "xdp_routes_refused",
        "Bound channels left on the socket path, by why",
        refused,
    );
}
