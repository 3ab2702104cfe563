//! What the XDP fast path may forward, and what it did forward.
//!
//! An XDP program in the io layer relays the ChannelData of bound channels
//! inside the kernel. Its maps are a cache of this state machine's
//! decisions, never a second authority (DESIGN.md, "Kernel bypass"): while
//! offload is on, the relay records a [`RouteChange`] each time a channel
//! route appears, its expiry moves or it goes, and the caller applies the
//! changes to the maps after every input. Traffic the XDP path forwarded
//! comes back through [`Relay::offloaded`], so that the counters stay true.
//!
//! A route is one channel of an allocation whose client leg is UDP, for as
//! long as the allocation, the channel and the permission for the channel
//! peer's address are all live: exactly when `channel_data_from_client`
//! relays the client's ChannelData on it and `handle_peer` relays the peer's
//! datagrams as ChannelData (data.rs; DESIGN.md invariant 7: the XDP path
//! forwards what the socket path would have, no more).
//!
//! Nothing here runs on the fast path. While offload is off nothing is
//! recorded, looked up or allocated: each hook returns on its first line.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::time::Instant;

use super::allocation::{family_index, family_of, Allocation, Channel, FiveTuple, Permission};
use super::{Leg, ListenerId, Relay, Transport, TurnConfig};
use uturn_stun::AddressFamily;

/// Both map keys of one channel: what the XDP program matches on in each
/// direction. Client → peer: a datagram from `client` arriving on
/// `listener` with channel number `channel`, sent on from `relayed` to
/// `peer`. Peer → client: a datagram from `peer` to `relayed`, sent on from
/// the listener's address to `client` with `channel`'s header in front.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// The UDP listener the client's datagrams arrive on.
    pub listener: ListenerId,
    /// The client's address (the source of its datagrams).
    pub client: SocketAddr,
    pub channel: u16,
    pub peer: SocketAddr,
    /// The allocation's relayed address of the peer's family (RFC 8656 §3:
    /// an allocation may hold one of each).
    pub relayed: SocketAddr,
}

/// A channel the XDP path may forward on until `expires`: the earliest of
/// the allocation's, the channel's and the peer address's permission
/// expiry. Past it the entry must be refused even if no Down has come yet
/// (the sweep records that within a second or so).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub key: RouteKey,
    pub expires: Instant,
}

/// One change to the set of routes, in the order it happened.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// A route appeared, or its expiry moved (install or overwrite).
    Up(Route),
    /// A route went: the socket path no longer forwards on it.
    Down(RouteKey),
}

/// Packets and bytes the XDP path forwarded in one direction. `bytes`
/// counts ChannelData payload only, without the 4-byte header, as the
/// socket path counts them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

/// The relay's side of offload. Which routes have been handed over is kept
/// on each channel (`Channel::offloaded`), not here, so that nothing grows
/// with the number of routes but the changes the caller has not taken yet.
#[derive(Debug, Default)]
pub(super) struct Offload {
    on: bool,
    /// Recorded, not yet taken by the caller.
    pub(super) changes: Vec<RouteChange>,
    /// Scratch: (channel number, expiry) of one allocation's live routes
    /// before a request, to tell an expiry that moved from one that did not.
    before: Vec<(u16, Instant)>,
}

impl Relay {
    /// Starts (true) or stops recording route changes. Off by default: a
    /// relay without XDP pays nothing.
    ///
    /// Turning it on records an Up for every route the relay holds. It is
    /// not given the time, so a route whose expiry has passed but which the
    /// sweep has not reached yet is included, with that expiry: its entry
    /// is refused by the XDP path, and the next sweep records its Down.
    /// Turning it on when it is on does nothing.
    ///
    /// Turning it off drops the changes not yet taken (the caller is
    /// dropping the maps they were for) and forgets what was handed over, so
    /// that turning it on again starts afresh.
    pub fn set_offload(&mut self, on: bool) {
        if on == self.offload.on {
            return;
        }
        self.offload.on = on;
        if !on {
            self.offload.changes = Vec::new();
            self.offload.before = Vec::new();
            for a in self.table.allocations_mut() {
                for c in a.channels.iter_mut() {
                    c.offloaded = false;
                }
            }
            return;
        }
        // Nothing is handed over yet, so every route is an Up.
        let (cfg, changes) = (&self.cfg, &mut self.offload.changes);
        for a in self.table.allocations_mut() {
            sync(cfg, a, None, |_, _| false, changes);
        }
    }

    /// Moves the changes recorded since the last call into `out` (appended),
    /// in the order they happened. Call it after every input while offload
    /// is on: nothing else bounds them.
    pub fn take_route_changes(&mut self, out: &mut Vec<RouteChange>) {
        out.append(&mut self.offload.changes);
    }

    /// Accounts traffic the XDP path forwarded for `key` since it last did
    /// (deltas, not running totals): into the UDP counters
    /// (`Stats::by_transport`), exactly as if the socket path had relayed it.
    /// A route that is unknown or has gone is still counted: its packets
    /// were forwarded before it went down.
    pub fn offloaded(&mut self, key: &RouteKey, to_peer: Traffic, to_client: Traffic) {
        // Every route belongs to a UDP client: the key names no counter of
        // its own (yet), so it is not looked up.
        let _ = key;
        let t = &mut self.stats.by_transport[Transport::Udp.index()];
        t.to_peer_packets += to_peer.packets;
        t.to_peer_bytes += to_peer.bytes;
        t.to_client_packets += to_client.packets;
        t.to_client_bytes += to_client.bytes;
    }

    /// Before a request on `five` that may move its allocation's routes
    /// (Refresh, CreatePermission, ChannelBind): notes their expiries and
    /// returns the allocation for [`routes_after`](Self::routes_after).
    /// None while offload is off.
    pub(super) fn routes_before(&mut self, five: &FiveTuple, now: Instant) -> Option<u32> {
        if !self.offload.on {
            return None;
        }
        let index = self.table.index_of(five)?;
        let a = self.table.get(index)?;
        let before = &mut self.offload.before;
        before.clear();
        before.extend(a.channels.iter().filter_map(|c| {
            let expires = route_end(a.expires, &a.perms, c).filter(|&e| now < e)?;
            Some((c.number, expires))
        }));
        Some(index)
    }

    /// After that request: an Up for each route that appeared or whose
    /// expiry moved (a ChannelBind refreshes the channel and its
    /// permission, CreatePermission permissions, Refresh the allocation),
    /// a Down for each that went. An allocation the request deleted
    /// (Refresh 0) had its Downs recorded by `delete`.
    pub(super) fn routes_after(&mut self, index: u32, now: Instant) {
        if !self.offload.on {
            return;
        }
        let Some(a) = self.table.get_mut(index) else {
            return;
        };
        let before = &self.offload.before;
        let moved = |number, expires| !before.contains(&(number, expires));
        sync(&self.cfg, a, Some(now), moved, &mut self.offload.changes);
    }

    /// A Down for every route handed over that the socket path no longer
    /// forwards on at `now`: its allocation, channel or permission expired
    /// (the sweep, before it forgets them) or was revoked (a reload that
    /// narrowed the peer policy).
    pub(super) fn routes_lapsed(&mut self, now: Instant) {
        if !self.offload.on {
            return;
        }
        let (cfg, changes) = (&self.cfg, &mut self.offload.changes);
        for a in self.table.allocations_mut() {
            // Time only ends routes: none of the live ones has moved.
            sync(cfg, a, Some(now), |_, _| false, changes);
        }
    }

    /// `alloc` was removed from the table (Refresh 0, expiry, connection
    /// closed, shutdown, an expired one replaced): a Down for each of its
    /// routes handed over.
    pub(super) fn routes_removed(&mut self, alloc: &Allocation) {
        if !self.offload.on {
            return;
        }
        for c in alloc.channels.iter().filter(|c| c.offloaded) {
            if let Some(key) = route_key(&self.cfg, &alloc.five, &alloc.relay_ports, c) {
                self.offload.changes.push(RouteChange::Down(key));
            }
        }
    }
}

/// Brings what was handed over of `a`'s routes up to date at `now`: an Up
/// for each live route not handed over yet or whose expiry `moved`, a Down
/// for each handed over that is no longer live. Without a `now`, every
/// route with a permission counts as live (its expiry goes with it).
fn sync(
    cfg: &TurnConfig,
    a: &mut Allocation,
    now: Option<Instant>,
    moved: impl Fn(u16, Instant) -> bool,
    changes: &mut Vec<RouteChange>,
) {
    let Allocation {
        five,
        relay_ports,
        expires,
        perms,
        channels,
        ..
    } = a;
    for c in channels.iter_mut() {
        let Some(key) = route_key(cfg, five, relay_ports, c) else {
            continue;
        };
        match route_end(*expires, perms, c).filter(|&e| now.map_or(true, |now| now < e)) {
            Some(expires) if !c.offloaded || moved(c.number, expires) => {
                changes.push(RouteChange::Up(Route { key, expires }));
                c.offloaded = true;
            }
            None if c.offloaded => {
                changes.push(RouteChange::Down(key));
                c.offloaded = false;
            }
            _ => {}
        }
    }
}

/// When channel `c`'s route ends, from the entries the allocation holds:
/// the earliest of the allocation's expiry `alloc_expires`, the channel's,
/// and that of the permission for the peer's address (RFC 8656 §9: one per
/// address, whatever the port). None without that permission. The route is
/// live while `now` is before it: `channel_data_from_client` needs the
/// allocation, the channel (§12.6) and the permission live; `handle_peer`
/// the allocation and the permission (§10.3), and the channel to send
/// ChannelData rather than a Data indication (§12.5).
fn route_end(alloc_expires: Instant, perms: &[Permission], c: &Channel) -> Option<Instant> {
    let ip = c.peer.ip();
    let p = perms.iter().find(|p| p.ip == ip)?;
    Some(alloc_expires.min(c.expires).min(p.expires))
}

/// The map keys of channel `c`, or None when it is not offloaded: TCP and
/// TLS clients never are (their ChannelData travels in a byte stream).
fn route_key(
    cfg: &TurnConfig,
    five: &FiveTuple,
    relay_ports: &[Option<NonZeroU16>; 2],
    c: &Channel,
) -> Option<RouteKey> {
    let Leg::Udp(listener) = five.leg else {
        return None;
    };
    let family = family_of(&c.peer);
    // The relay sends to a peer from its relayed address of the peer's
    // family (data.rs: `table.token(index, family_of(&peer))`).
    let ip: IpAddr = match family {
        AddressFamily::V4 => cfg.relay_v4?.into(),
        AddressFamily::V6 => cfg.relay_v6?.into(),
    };
    let port = relay_ports[family_index(family)]?;
    Some(RouteKey {
        listener,
        client: five.client,
        channel: c.number,
        peer: c.peer,
        relayed: SocketAddr::new(ip, port.get()),
    })
}
