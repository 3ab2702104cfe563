//! The shard's side of the XDP fast path: keeps the program's maps in step
//! with the state machine and brings its counters back.
//!
//! The relay records a `RouteChange` whenever a UDP client's channel
//! becomes forwardable, its expiry moves, or it ends (`turn/offload.rs`).
//! After every turn, and after every command, the shard applies them here:
//! an Up installs (or updates) both map entries of the channel under a
//! counter slot of this shard's own range; a Down removes them, reads the
//! slot's counters a last time and frees it. While routes are installed,
//! their counters are read back every `POLL` (and before every metrics
//! report), and what the program forwarded is handed to
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
            next_forget: Instant::now() + FORGET_HOPS,
            stats: OffloadStats::default(),
            warned: false,
        }
    }

    pub fn stats(&self) -> &OffloadStats {
        &self.stats
    }

    /// When the counters are next due to be read (None with no route).
    pub fn next_timer(&self) -> Option<Instant> {
        self.next_poll
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
        if self.next_poll.is_some_and(|t| t <= Instant::now()) {
            self.poll(relay);
        }
        self.stats.routes = self.installed.len() as u64;
    }

    /// Reads every installed route's counters and accounts what is new.
    pub fn poll(&mut self, relay: &mut Relay) {
        let forget = self.next_forget <= Instant::now();
        if forget {
            self.next_forget = Instant::now() + FORGET_HOPS;
        }
        for (key, entry) in &mut self.installed {
            if let Ok(now) = self.routes.traffic(entry.route.slot) {
                account(relay, key, &mut entry.seen, now);
            }
            if forget {
                let _ = self.routes.forget_hops(entry.route.slot);
            }
        }
        self.next_poll = (!self.installed.is_empty()).then(|| Instant::now() + POLL);
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
