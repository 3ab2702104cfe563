//! The shard's side of the XDP fast path: keeps the program's maps in step
//! with the state machine and brings its counters back.
//!
//! The relay records a `RouteChange` whenever a UDP client's channel
//! becomes forwardable, its expiry moves, or it ends (`turn/offload.rs`).
//! After every turn, and after every command, the shard applies them here:
//! an Up installs (or updates) both map entries of the channel under a
//! counter slot of this shard's own range; a Down removes them, reads the
//! slot's counters a last time and frees it. While routes are installed,
//! their counters are read back every `POLL`, `POLL_CHUNK` routes per loop
//! turn (each read is a system call), and before a metrics report, and
//! what the program forwarded is handed to
//! `Relay::offloaded`, so `uturn_packets_total` and `uturn_bytes_total`
//! count it as the socket path would have.
//!
//! A route the program cannot take stays on the socket path, counted by
//! why: its listener is a wildcard address (the program matches the exact
//! destination address), the maps are full, or the kernel refused the
//! update.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::io::process::monotonic_ns;
use crate::io::xdp::{self, Routes};
use crate::turn::{Relay, RouteChange, RouteKey, Traffic};

/// How often the counters of installed routes are read back.
const POLL: Duration = Duration::from_secs(1);
/// Routes whose counters are read in one loop turn: a read is a system
/// call, so a pass over tens of thousands of routes is spread over turns
/// instead of stalling the shard for all of them at once.
const POLL_CHUNK: usize = 1024;
/// Up to this many routes, a metrics report reads them all first (exact
/// counters); beyond, it reports what the last pass read (at most `POLL`
/// plus a pass old).
const POLL_ALL_FOR_REPORT: usize = 4096;
/// How often the learned next hops are forgotten, so that a changed route
/// or neighbour is learned again from the socket path (at the cost of one
/// datagram per direction and route through the sockets).
const FORGET_HOPS: Duration = Duration::from_secs(30);

/// What a shard gets from the loader: its handle on the maps and its own
/// range of counter slots.
pub struct OffloadSpec {
    pub routes: Routes,
    pub slots: Range<u32>,
}

/// Counted per shard; summed into `uturn_xdp_*` by the metrics.
#[derive(Clone, Debug, Default)]
pub struct OffloadStats {
    /// Routes installed now.
    pub routes: u64,
    pub installed_total: u64,
    pub removed_total: u64,
    /// Routes left on the socket path, by why.
    pub refused_wildcard: u64,
    pub refused_full: u64,
    pub refused_error: u64,
}

struct Installed {
    route: xdp::Route,
    /// The slot's counters when last read.
    seen: xdp::Traffic,
}

pub struct Offload {
    index: usize,
    routes: Routes,
    /// Each UDP listener's address, by `ListenerId`; None for a wildcard.
    servers: Vec<Option<SocketAddr>>,
    free: Vec<u32>,
    installed: HashMap<RouteKey, Installed>,
    changes: Vec<crate::turn::RouteChange>,
    next_poll: Option<Instant>,
    /// The routes the current pass has yet to read (empty between passes).
    sweep: Vec<RouteKey>,
    /// Whether the current pass also forgets the learned next hops.
    sweep_forgets: bool,
    next_forget: Instant,
    stats: OffloadStats,
    /// Whether a refused update has been logged (once per shard).
    warned: bool,
}

impl Offload {
    /// `servers`: the local address of each listener, in `ListenerId` order.
    pub fn new(index: usize, spec: OffloadSpec, servers: Vec<SocketAddr>) -> Offload {
        let servers = servers
            .into_iter()
            .map(|a| (!a.ip().is_unspecified()).then_some(a))
            .collect();
        Offload {
            index,
            routes: spec.routes,
            servers,
            // Taken from the end: the lowest slots first.
            free: spec.slots.rev().collect(),
            installed: HashMap::new(),
            changes: Vec::new(),
            next_poll: None,
            sweep: Vec::new(),
            sweep_forgets: false,
            next_forget: Instant::now() + FORGET_HOPS,
            stats: OffloadStats::default(),
            warned: false,
        }
    }

    pub fn stats(&self) -> &OffloadStats {
        &self.stats
    }

    /// When the counters are next due to be read (None with no route; now
    /// while a pass is under way).
    pub fn next_timer(&self) -> Option<Instant> {
        if self.sweep.is_empty() {
            self.next_poll
        } else {
            Some(Instant::now())
        }
    }

    /// Applies the relay's route changes to the maps, and reads the
    /// counters back when they are due.
    pub fn turn(&mut self, relay: &mut Relay) {
        relay.take_route_changes(&mut self.changes);
        let mut changes = std::mem::take(&mut self.changes);
        for change in changes.drain(..) {
            match change {
                RouteChange::Up(route) => self.up(route.key, route.expires),
                RouteChange::Down(key) => self.down(relay, &key),
            }
        }
        self.changes = changes;
        if self.sweep.is_empty() && self.next_poll.is_some_and(|t| t <= Instant::now()) {
            self.start_pass();
        }
        self.read_some(POLL_CHUNK, relay);
        self.stats.routes = self.installed.len() as u64;
    }

    /// Before a metrics report: what the program forwarded up to now, exact
    /// while there are few routes (see `POLL_ALL_FOR_REPORT`).
    pub fn refresh_for_report(&mut self, relay: &mut Relay) {
        self.turn(relay);
        if self.installed.len() <= POLL_ALL_FOR_REPORT {
            if self.sweep.is_empty() {
                self.start_pass();
            }
            self.read_some(usize::MAX, relay);
        }
    }

    /// Starts a pass over every installed route (and schedules the next).
    fn start_pass(&mut self) {
        let now = Instant::now();
        self.sweep.extend(self.installed.keys().copied());
        self.sweep_forgets = self.next_forget <= now;
        if self.sweep_forgets {
            self.next_forget = now + FORGET_HOPS;
        }
        self.next_poll = (!self.installed.is_empty()).then(|| now + POLL);
    }

    /// Reads the counters of up to `most` routes of the current pass and
    /// accounts what is new.
    fn read_some(&mut self, most: usize, relay: &mut Relay) {
        let from = self.sweep.len().saturating_sub(most);
        for key in self.sweep.drain(from..) {
            // Gone since the pass began: `down` accounted it already.
            let Some(entry) = self.installed.get_mut(&key) else {
                continue;
            };
            if let Ok(now) = self.routes.traffic(entry.route.slot) {
                account(relay, &key, &mut entry.seen, now);
            }
            if self.sweep_forgets {
                let _ = self.routes.forget_hops(entry.route.slot);
            }
        }
    }

    fn up(&mut self, key: RouteKey, expires: Instant) {
        let expires_ns = monotonic_ns().saturating_add(duration_ns(
            expires.saturating_duration_since(Instant::now()),
        ));
        if let Some(entry) = self.installed.get_mut(&key) {
            entry.route.expires_ns = expires_ns;
            if let Err(e) = self.routes.install(&entry.route, false) {
                // The old expiry stays in the map: the program stops at it,
                // and the socket path carries the channel from then on.
                self.refused(&e);
            }
            return;
        }
        let Some(server) = self
            .servers
            .get(usize::from(key.listener.0))
            .copied()
            .flatten()
        else {
            self.stats.refused_wildcard += 1;
            return;
        };
        if key.relayed.ip().is_unspecified() {
            self.stats.refused_wildcard += 1;
            return;
        }
        let Some(slot) = self.free.pop() else {
            self.stats.refused_full += 1;
            return;
        };
        let route = xdp::Route {
            client: key.client,
            server,
            channel: key.channel,
            peer: key.peer,
            relayed: key.relayed,
            slot,
            expires_ns,
        };
        match self.routes.install(&route, true) {
            Ok(()) => {
                self.stats.installed_total += 1;
                self.installed.insert(
                    key,
                    Installed {
                        route,
                        seen: xdp::Traffic::default(),
                    },
                );
                self.next_poll.get_or_insert_with(|| Instant::now() + POLL);
            }
            Err(e) => {
                self.free.push(slot);
                self.refused(&e);
            }
        }
    }

    fn down(&mut self, relay: &mut Relay, key: &RouteKey) {
        let Some(mut entry) = self.installed.remove(key) else {
            return;
        };
        self.routes.remove(&entry.route);
        // Read after the removal, so that what was forwarded up to it counts.
        if let Ok(now) = self.routes.traffic(entry.route.slot) {
            account(relay, key, &mut entry.seen, now);
        }
        self.free.push(entry.route.slot);
        self.stats.removed_total += 1;
        if self.installed.is_empty() {
            self.next_poll = None;
            self.sweep.clear();
        }
    }

    fn refused(&mut self, e: &xdp::XdpError) {
        self.stats.refused_error += 1;
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                shard = self.index,
                "XDP: a channel stays on the socket path: {e} (logged once per worker; \
                 see uturn_xdp_routes_refused_total)"
            );
        }
    }
}

/// Hands the relay what the program forwarded on `key` since `seen`.
fn account(relay: &mut Relay, key: &RouteKey, seen: &mut xdp::Traffic, now: xdp::Traffic) {
    let delta = |a: u64, b: u64| a.saturating_sub(b);
    let to_peer = Traffic {
        packets: delta(now.to_peer_packets, seen.to_peer_packets),
        bytes: delta(now.to_peer_bytes, seen.to_peer_bytes),
    };
    let to_client = Traffic {
        packets: delta(now.to_client_packets, seen.to_client_packets),
        bytes: delta(now.to_client_bytes, seen.to_client_bytes),
    };
    if to_peer.packets > 0 || to_client.packets > 0 {
        relay.offloaded(key, to_peer, to_client);
    }
    *seen = now;
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
