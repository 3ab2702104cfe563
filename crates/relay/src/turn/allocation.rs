//! Allocations, their permissions and channel bindings, and the per-shard
//! table that finds them by client 5-tuple or by relay token in O(1).
//!
//! An idle allocation should cost well under 1 KiB of user space (DESIGN.md
//! invariant 6). What it costs here: its slot (`size_of::<Slot>()`, in a
//! vector reserved for the shard's whole port range up front, so that it is
//! never copied while it grows), one heap block for its credentials, one
//! per permission or channel list (grown from one element, not four), and
//! four bytes (times the load factor) in the look-up by 5-tuple.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use super::{Leg, RelayToken};
use uturn_stun::{AddressFamily, TransactionId};

/// RFC 8656 §9: a permission lasts 300 s unless refreshed.
pub(crate) const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: a channel binding lasts 600 s unless refreshed.
pub(crate) const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §12: after a binding expires, neither its number nor its peer
/// may be bound to something else for another 5 minutes.
pub(crate) const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// The server side (with the transport) and the client side of a 5-tuple.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FiveTuple {
    pub leg: Leg,
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
    /// Its route was handed to the XDP path (an Up recorded, no Down since;
    /// see `offload.rs`). Always false while offload is off. Fits in the
    /// padding: a channel stays 56 bytes.
    pub offloaded: bool,
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

/// Who made an allocation: its username and the id its quota is counted
/// under, in one heap block (the id after the name, unless both are the
/// same, as for static users).
pub(crate) struct Owner {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Owner {
    pub(crate) fn new(username: &[u8], quota_id: &[u8]) -> Owner {
        let bytes = if username == quota_id {
            username.into()
        } else {
            [username, quota_id].concat().into_boxed_slice()
        };
        Owner {
            bytes,
            name_len: username.len(),
        }
    }

    pub(crate) fn username(&self) -> &[u8] {
        &self.bytes[..self.name_len]
    }

    pub(crate) fn quota_id(&self) -> &[u8] {
        match &self.bytes[self.name_len..] {
            [] => &self.bytes,
            id => id,
        }
    }
}

pub(crate) struct Allocation {
    pub five: FiveTuple,
    /// Ports of the relayed transport addresses: [IPv4, IPv6] (RFC 8656 §3:
    /// one or two). The address of each is the shard's relay address of
    /// that family.
    pub relay_ports: [Option<NonZeroU16>; 2],
    pub expires: Instant,
    /// Credentials the allocation was made with (RFC 8656 §6.2: later
    /// requests must use the same).
    pub owner: Owner,
    /// The Allocate transaction that created it, so a retransmission gets
    /// the same answer (RFC 8656 §7.2).
    pub alloc_tid: TransactionId,
    /// A RESERVATION-TOKEN handed out with this allocation (EVEN-PORT R bit).
    pub reservation: Option<[u8; 8]>,
    /// ADDRESS-ERROR-CODE for a second family that could not be had.
    pub family_error: Option<u16>,
    pub perms: Vec<Permission>,
    pub channels: Vec<Channel>,
    /// A TCP allocation's peer connections (RFC 6062); None for UDP.
    pub tcp: Option<Box<super::tcp::TcpConns>>,
}

impl Allocation {
    /// Whether the allocation has a relayed address of `family`.
    pub(crate) fn has_relay(&self, family: AddressFamily) -> bool {
        self.relay_ports[family_index(family)].is_some()
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
        push_compact(&mut self.perms, Permission { ip, expires });
        true
    }

    /// Binds `number` to `peer` or refreshes that binding.
    pub(crate) fn bind_channel(&mut self, number: u16, peer: SocketAddr, now: Instant) {
        let expires = now + CHANNEL_LIFETIME;
        match self.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => c.expires = expires,
            None => push_compact(
                &mut self.channels,
                Channel {
                    number,
                    peer,
                    expires,
                    offloaded: false,
                },
            ),
        }
    }

    pub(crate) fn sweep(&mut self, now: Instant) {
        self.perms.retain(|p| now < p.expires);
        self.channels.retain(|c| now < c.expires + CHANNEL_COOLDOWN);
    }

    /// Ends the permissions and channels toward peers that `allowed` now
    /// refuses (a reload narrowed the peer policy). A channel ends as if it
    /// had expired: its number and peer cool down before reuse (RFC 8656
    /// §12). Returns how many permissions and channels ended.
    pub(crate) fn revoke(&mut self, allowed: impl Fn(SocketAddr) -> bool, now: Instant) -> usize {
        let before = self.perms.len();
        // A permission is for an address, whatever the port (RFC 8656 §9).
        self.perms.retain(|p| allowed(SocketAddr::new(p.ip, 1)));
        let mut ended = before - self.perms.len();
        for c in self.channels.iter_mut() {
            if now < c.expires && !allowed(c.peer) {
                c.expires = now;
                ended += 1;
            }
        }
        ended
    }
}

/// Pushes `x`, growing `v` by doubling from one element rather than from
/// `Vec`'s four: most allocations hold one permission and at most one
/// channel, and the spare room would stay allocated for their lifetime.
fn push_compact<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
    v.push(x);
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
pub(crate) struct Table {
    slots: Vec<Slot>,
    /// Slots reserved with the first allocation.
    reserve: usize,
    free: Vec<u32>,
    /// Slot indices by client 5-tuple. The key is read from the slot, so an
    /// entry is four bytes; the hash is keyed per table (SipHash), as a
    /// `HashMap`'s would be.
    by_client: HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl Table {
    /// A table that reserves room for `capacity` slots with its first
    /// allocation. Pages of the reservation are only touched as slots are
    /// used, and the slot vector is never copied to grow below that number:
    /// a copy leaves the old block with the allocator, where it stays
    /// resident on an idle shard (it was about 400 bytes per allocation at
    /// 10 000). Reserved at the first allocation rather than here, so that a
    /// shard that never holds one (and a heap on transparent huge pages,
    /// where a touched block costs 2 MiB) pays nothing. The free list and
    /// the look-up by 5-tuple grow as usual: at 4 bytes an entry, what
    /// their growth leaves behind is small.
    pub(crate) fn with_capacity(capacity: usize) -> Table {
        Table {
            slots: Vec::new(),
            reserve: capacity,
            free: Vec::new(),
            by_client: HashTable::new(),
            hasher: Default::default(),
        }
    }

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
        let hash = self.hasher.hash_one(alloc.five);
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].alloc = Some(alloc);
                i
            }
            None => {
                if self.slots.capacity() == 0 {
                    self.slots.reserve_exact(self.reserve);
                }
                self.slots.push(Slot {
                    gen: 0,
                    alloc: Some(alloc),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_client
            .insert_unique(hash, index, |&i| match five_of(slots, i) {
                Some(five) => hasher.hash_one(five),
                // Never: every entry names a live slot.
                None => 0,
            });
        index
    }

    pub(crate) fn remove(&mut self, index: u32) -> Option<Allocation> {
        let five = self.slots.get(index as usize)?.alloc.as_ref()?.five;
        let hash = self.hasher.hash_one(five);
        if let Ok(entry) = self.by_client.find_entry(hash, |&i| i == index) {
            entry.remove();
        }
        let slot = self.slots.get_mut(index as usize)?;
        let alloc = slot.alloc.take()?;
        slot.gen = slot.gen.wrapping_add(1) & 0x3FFF_FFFF;
        self.free.push(index);
        Some(alloc)
    }

    pub(crate) fn token(&self, index: u32, family: AddressFamily) -> RelayToken {
        let gen = self.slots.get(index as usize).map_or(0, |s| s.gen);
        make_token(index, gen, family)
    }

    pub(crate) fn index_of(&self, five: &FiveTuple) -> Option<u32> {
        self.by_client(five).map(|(i, _)| i)
    }

    /// The allocation of a client 5-tuple, and its slot index.
    pub(crate) fn by_client(&self, five: &FiveTuple) -> Option<(u32, &Allocation)> {
        let hash = self.hasher.hash_one(five);
        let slots = &self.slots[..];
        let &index = self
            .by_client
            .find(hash, |&i| five_of(slots, i) == Some(five))?;
        Some((index, slots.get(index as usize)?.alloc.as_ref()?))
    }

    pub(crate) fn get(&self, index: u32) -> Option<&Allocation> {
        self.slots.get(index as usize)?.alloc.as_ref()
    }

    pub(crate) fn get_mut(&mut self, index: u32) -> Option<&mut Allocation> {
        self.slots.get_mut(index as usize)?.alloc.as_mut()
    }

    /// The slot of the allocation owning a relay socket, if the token is
    /// still current.
    pub(crate) fn index_of_token(&self, token: RelayToken) -> Option<u32> {
        let (index, gen, _) = split_token(token);
        let slot = self.slots.get(index as usize)?;
        (slot.gen == gen && slot.alloc.is_some()).then_some(index)
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

    /// Every live allocation, in slot order.
    pub(crate) fn allocations_mut(&mut self) -> impl Iterator<Item = &mut Allocation> {
        self.slots.iter_mut().filter_map(|s| s.alloc.as_mut())
    }

    /// `Allocation::revoke` on every allocation; returns the total ended.
    pub(crate) fn revoke(&mut self, allowed: impl Fn(SocketAddr) -> bool, now: Instant) -> usize {
        self.slots
            .iter_mut()
            .filter_map(|s| s.alloc.as_mut())
            .map(|a| a.revoke(&allowed, now))
            .sum()
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

/// The 5-tuple of the allocation in slot `index`, if it holds one.
fn five_of(slots: &[Slot], index: u32) -> Option<&FiveTuple> {
    Some(&slots.get(index as usize)?.alloc.as_ref()?.five)
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

    #[test]
    fn a_slot_stays_small() {
        // DESIGN.md invariant 6: an idle allocation under 1 KiB of user
        // space. The slot is most of it (the heap part is bounded in
        // tests/idle_allocation_alloc.rs). 168 bytes on 64-bit Linux; it
        // was 232 with both relay addresses and two credential boxes inline.
        assert!(std::mem::size_of::<Slot>() <= 176);
        // (176 with the TCP allocation pointer.)
        // A channel's XDP flag lives in its padding.
        assert!(std::mem::size_of::<Channel>() <= 56);
    }

    #[test]
    fn owner_keeps_name_and_quota_id() {
        let same = Owner::new(b"alice", b"alice");
        assert_eq!(
            (same.username(), same.quota_id()),
            (&b"alice"[..], &b"alice"[..])
        );
        assert_eq!(same.bytes.len(), 5);
        let rest = Owner::new(b"1700000000:bob", b"bob");
        assert_eq!(rest.username(), b"1700000000:bob");
        assert_eq!(rest.quota_id(), b"bob");
    }

    #[test]
    fn lists_grow_from_one_element() {
        let mut v: Vec<u64> = Vec::new();
        push_compact(&mut v, 1);
        assert_eq!(v.capacity(), 1);
        push_compact(&mut v, 2);
        push_compact(&mut v, 3);
        assert_eq!((v.len(), v.capacity()), (3, 4));
    }

    #[test]
    fn table_finds_by_client_and_forgets_removed() {
        let mut t = Table::with_capacity(4);
        let five = |port| FiveTuple {
            leg: Leg::Udp(crate::turn::ListenerId(0)),
            client: SocketAddr::from(([192, 0, 2, 1], port)),
        };
        let alloc = |port| Allocation {
            five: five(port),
            relay_ports: [NonZeroU16::new(50000), None],
            expires: Instant::now(),
            owner: Owner::new(b"u", b"u"),
            alloc_tid: [0; 12],
            reservation: None,
            family_error: None,
            perms: Vec::new(),
            channels: Vec::new(),
            tcp: None,
        };
        // More than reserved: the look-up grows and still finds everything.
        let idx: Vec<u32> = (0..10).map(|p| t.insert(alloc(p))).collect();
        for (p, &i) in idx.iter().enumerate() {
            assert_eq!(t.index_of(&five(p as u16)), Some(i));
        }
        assert!(t.remove(idx[3]).is_some());
        assert_eq!(t.index_of(&five(3)), None);
        assert_eq!(t.index_of(&five(4)), Some(idx[4]));
        assert_eq!(t.len(), 9);
        // The freed slot is reused, under a new generation.
        assert_eq!(t.insert(alloc(3)), idx[3]);
        assert_eq!(t.index_of(&five(3)), Some(idx[3]));
    }
}
