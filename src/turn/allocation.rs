//! Allocations, their permissions and channel bindings, and the per-shard
//! table that finds them by client 5-tuple or by relay token in O(1).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{ListenerId, RelayToken};
use crate::stun::{AddressFamily, TransactionId};

/// RFC 8656 §9: a permission lasts 300 s unless refreshed.
pub(crate) const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: a channel binding lasts 600 s unless refreshed.
pub(crate) const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §12: after a binding expires, neither its number nor its peer
/// may be bound to something else for another 5 minutes.
pub(crate) const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// The server side and client side of a UDP 5-tuple (the transport is
/// always UDP here).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FiveTuple {
    pub listener: ListenerId,
    pub client: SocketAddr,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    /// Usable until then; kept (cooling down) for `CHANNEL_COOLDOWN` more.
    pub expires: Instant,
}

pub(crate) fn family_of(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::V4,
        SocketAddr::V6(_) => AddressFamily::V6,
    }
}

pub(crate) fn family_index(f: AddressFamily) -> usize {
    match f {
        AddressFamily::V4 => 0,
        AddressFamily::V6 => 1,
    }
}

pub(crate) struct Allocation {
    pub five: FiveTuple,
    /// Relayed transport addresses: [IPv4, IPv6] (RFC 8656 §3: one or two).
    pub relays: [Option<SocketAddr>; 2],
    pub expires: Instant,
    /// Credentials the allocation was made with (RFC 8656 §6.2: later
    /// requests must use the same).
    pub username: Box<[u8]>,
    pub quota_id: Box<[u8]>,
    /// The Allocate transaction that created it, so a retransmission gets
    /// the same answer (RFC 8656 §7.2).
    pub alloc_tid: TransactionId,
    /// A RESERVATION-TOKEN handed out with this allocation (EVEN-PORT R bit).
    pub reservation: Option<[u8; 8]>,
    /// ADDRESS-ERROR-CODE for a second family that could not be had.
    pub family_error: Option<u16>,
    pub perms: Vec<Permission>,
    pub channels: Vec<Channel>,
}

impl Allocation {
    pub(crate) fn relay_for(&self, peer: &SocketAddr) -> Option<SocketAddr> {
        self.relays[family_index(family_of(peer))]
    }

    pub(crate) fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.perms.iter().any(|p| p.ip == ip && now < p.expires)
    }

    /// The peer a live channel number is bound to.
    pub(crate) fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .iter()
            .find(|c| c.number == number && now < c.expires)
            .map(|c| c.peer)
    }

    /// The live channel bound to `peer`.
    pub(crate) fn channel_for_peer(&self, peer: &SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.peer == *peer && now < c.expires)
            .map(|c| c.number)
    }

    /// Installs or refreshes a permission. Returns false when that would
    /// exceed `limit` permissions.
    pub(crate) fn permit(&mut self, ip: IpAddr, now: Instant, limit: usize) -> bool {
        let expires = now + PERMISSION_LIFETIME;
        if let Some(p) = self.perms.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            return true;
        }
        self.perms.retain(|p| now < p.expires);
        if self.perms.len() >= limit {
            return false;
        }
        self.perms.push(Permission { ip, expires });
        true
    }

    pub(crate) fn sweep(&mut self, now: Instant) {
        self.perms.retain(|p| now < p.expires);
        self.channels.retain(|c| now < c.expires + CHANNEL_COOLDOWN);
    }
}

/// Slot index (bits 0–31), family (bit 32), generation (bits 33–62). The
/// generation makes a token from a closed socket miss a reused slot; bit 63
/// stays clear for the io layer's own tags.
pub(crate) fn make_token(index: u32, gen: u32, family: AddressFamily) -> RelayToken {
    let fam = family_index(family) as u64;
    RelayToken(u64::from(index) | (fam << 32) | ((u64::from(gen) & 0x3FFF_FFFF) << 33))
}

fn split_token(token: RelayToken) -> (u32, u32, usize) {
    let index = (token.0 & 0xFFFF_FFFF) as u32;
    let fam = ((token.0 >> 32) & 1) as usize;
    let gen = ((token.0 >> 33) & 0x3FFF_FFFF) as u32;
    (index, gen, fam)
}

struct Slot {
    gen: u32,
    alloc: Option<Allocation>,
}

/// All allocations of a shard.
#[derive(Default)]
pub(crate) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_client: HashMap<FiveTuple, u32>,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }

    /// The slot index and generation the next `insert` will use.
    pub(crate) fn next_slot(&self) -> (u32, u32) {
        match self.free.last() {
            Some(&i) => (i, self.slots[i as usize].gen),
            None => (self.slots.len() as u32, 0),
        }
    }

    pub(crate) fn insert(&mut self, alloc: Allocation) -> u32 {
        let five = alloc.five;
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].alloc = Some(alloc);
                i
            }
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    alloc: Some(alloc),
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.by_client.insert(five, index);
        index
    }

    pub(crate) fn remove(&mut self, index: u32) -> Option<Allocation> {
        let slot = self.slots.get_mut(index as usize)?;
        let alloc = slot.alloc.take()?;
        slot.gen = slot.gen.wrapping_add(1) & 0x3FFF_FFFF;
        self.by_client.remove(&alloc.five);
        self.free.push(index);
        Some(alloc)
    }

    pub(crate) fn token(&self, index: u32, family: AddressFamily) -> RelayToken {
        let gen = self.slots.get(index as usize).map_or(0, |s| s.gen);
        make_token(index, gen, family)
    }

    pub(crate) fn index_of(&self, five: &FiveTuple) -> Option<u32> {
        self.by_client.get(five).copied()
    }

    pub(crate) fn get(&self, index: u32) -> Option<&Allocation> {
        self.slots.get(index as usize)?.alloc.as_ref()
    }

    pub(crate) fn get_mut(&mut self, index: u32) -> Option<&mut Allocation> {
        self.slots.get_mut(index as usize)?.alloc.as_mut()
    }

    /// The allocation owning a relay socket, if the token is still current.
    pub(crate) fn by_token(&self, token: RelayToken) -> Option<(&Allocation, usize)> {
        let (index, gen, fam) = split_token(token);
        let slot = self.slots.get(index as usize)?;
        if slot.gen != gen {
            return None;
        }
        slot.alloc.as_ref().map(|a| (a, fam))
    }

    /// Drops expired permissions and cooled-down channels of every live
    /// allocation, in place.
    pub(crate) fn sweep(&mut self, now: Instant) {
        for a in self.slots.iter_mut().filter_map(|s| s.alloc.as_mut()) {
            a.sweep(now);
        }
    }

    /// Indices of live slots (for sweeps and shutdown).
    pub(crate) fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alloc.is_some())
            .map(|(i, _)| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_go_stale() {
        let t = make_token(7, 3, AddressFamily::V6);
        assert_eq!(split_token(t), (7, 3, 1));
        assert_eq!(t.0 >> 63, 0);
        let max = make_token(u32::MAX, u32::MAX, AddressFamily::V6);
        assert_eq!(max.0 >> 63, 0);
    }
}
