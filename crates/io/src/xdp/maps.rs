//! The XDP program's map layouts, mirrored from `xdp/relay.bpf.c`, and the
//! per-shard handle that writes them.
use std::net::{IpAddr, SocketAddr};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use aya::Pod;

use super::{Route, Traffic, XdpError};

/// Key of `to_peer`: a client's datagram to a listen address, with the
/// channel number it carries. Ports and channel in network order.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ClientKey {
    client_ip: [u8; 16],
    server_ip: [u8; 16],
    client_port: u16,
    server_port: u16,
    channel: u16,
    zero: u16,
}

/// Key of `to_client`: a peer's datagram to a relayed address.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct PeerKey {
    peer_ip: [u8; 16],
    relay_ip: [u8; 16],
    peer_port: u16,
    relay_port: u16,
    zero: u32,
}

/// Value of both: how to rewrite, which counter slot, until when.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Rewrite {
    src_ip: [u8; 16],
    dst_ip: [u8; 16],
    src_port: u16,
    dst_port: u16,
    channel: u16,
    v4: u8,
    zero: u8,
    slot: u32,
    zero2: u32,
    expires_ns: u64,
}

/// The learned next hops of a slot (both sides); zero means not learned.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Hops {
    client: [u8; 16],
    peer: [u8; 16],
}

/// A slot's per-CPU traffic counters.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Counters {
    to_peer_packets: u64,
    to_peer_bytes: u64,
    to_client_packets: u64,
    to_client_bytes: u64,
}

// SAFETY: each type is repr(C), Copy, made only of integers and byte
// arrays, with explicit fields where C would pad (sizes checked in the
// tests below), so every bit pattern is a valid value and no byte is
// uninitialised.
unsafe impl Pod for ClientKey {}
// SAFETY: as above.
unsafe impl Pod for PeerKey {}
// SAFETY: as above.
unsafe impl Pod for Rewrite {}
// SAFETY: as above.
unsafe impl Pod for Hops {}
// SAFETY: as above.
unsafe impl Pod for Counters {}

/// 16 bytes; an IPv4 address as IPv4-mapped, as the program keeps them.
fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn be(n: u16) -> u16 {
    n.to_be()
}

impl Route {
    pub(super) fn client_key(&self) -> ClientKey {
        ClientKey {
            client_ip: ip16(self.client.ip()),
            server_ip: ip16(self.server.ip()),
            client_port: be(self.client.port()),
            server_port: be(self.server.port()),
            channel: be(self.channel),
            zero: 0,
        }
    }

    pub(super) fn peer_key(&self) -> PeerKey {
        PeerKey {
            peer_ip: ip16(self.peer.ip()),
            relay_ip: ip16(self.relayed.ip()),
            peer_port: be(self.peer.port()),
            relay_port: be(self.relayed.port()),
            zero: 0,
        }
    }

    fn rewrite(&self, from: SocketAddr, to: SocketAddr, channel: u16) -> Rewrite {
        Rewrite {
            src_ip: ip16(from.ip()),
            dst_ip: ip16(to.ip()),
            src_port: be(from.port()),
            dst_port: be(to.port()),
            channel: be(channel),
            v4: u8::from(to.is_ipv4()),
            zero: 0,
            slot: self.slot,
            zero2: 0,
            expires_ns: self.expires_ns,
        }
    }
}

/// One shard's handle on the program's maps: its own file descriptors
/// (duplicates of the loader's), so shards write without sharing a lock.
pub struct Routes {
    to_peer: HashMap<MapData, ClientKey, Rewrite>,
    to_client: HashMap<MapData, PeerKey, Rewrite>,
    hops: Array<MapData, Hops>,
    traffic: PerCpuArray<MapData, Counters>,
}

impl Routes {
    pub(super) fn new(
        to_peer: MapData,
        to_client: MapData,
        hops: MapData,
        traffic: MapData,
    ) -> Result<Routes, XdpError> {
        let map = |d: MapData| Map::from_map_data(d);
        Ok(Routes {
            to_peer: map(to_peer)
                .and_then(HashMap::try_from)
                .map_err(XdpError::map("to_peer"))?,
            to_client: map(to_client)
                .and_then(HashMap::try_from)
                .map_err(XdpError::map("to_client"))?,
            hops: map(hops)
                .and_then(Array::try_from)
                .map_err(XdpError::map("hops"))?,
            traffic: map(traffic)
                .and_then(PerCpuArray::try_from)
                .map_err(XdpError::map("traffic"))?,
        })
    }

    /// Installs `route` in both directions, or updates it (a later expiry).
    /// `fresh`: the slot was just taken, so its learned hops and counters
    /// (left by a previous route) are cleared first.
    pub fn install(&mut self, route: &Route, fresh: bool) -> Result<(), XdpError> {
        if fresh {
            self.hops
                .set(route.slot, Hops::default(), 0)
                .map_err(XdpError::map("hops"))?;
            let cpus = self.traffic_zero()?;
            self.traffic
                .set(route.slot, cpus, 0)
                .map_err(XdpError::map("traffic"))?;
        }
        let toward_peer = route.rewrite(route.relayed, route.peer, 0);
        let toward_client = route.rewrite(route.server, route.client, route.channel);
        self.to_peer
            .insert(route.client_key(), toward_peer, 0)
            .map_err(XdpError::map("to_peer"))?;
        if let Err(e) = self.to_client.insert(route.peer_key(), toward_client, 0) {
            let _ = self.to_peer.remove(&route.client_key());
            return Err(XdpError::map("to_client")(e));
        }
        Ok(())
    }

    /// Forgets the next hops learned for `slot`: the next datagram each way
    /// takes the socket path and teaches them again (so that a changed
    /// route or neighbour is followed).
    pub fn forget_hops(&mut self, slot: u32) -> Result<(), XdpError> {
        self.hops
            .set(slot, Hops::default(), 0)
            .map_err(XdpError::map("hops"))
    }

    /// Removes both directions of `route` (absent entries are fine).
    pub fn remove(&mut self, route: &Route) {
        let _ = self.to_peer.remove(&route.client_key());
        let _ = self.to_client.remove(&route.peer_key());
    }

    /// What the program forwarded on `slot`, summed over CPUs, since the
    /// slot was last taken.
    pub fn traffic(&self, slot: u32) -> Result<Traffic, XdpError> {
        let per_cpu = self
            .traffic
            .get(&slot, 0)
            .map_err(XdpError::map("traffic"))?;
        let mut t = Traffic::default();
        for c in per_cpu.iter() {
            t.to_peer_packets += c.to_peer_packets;
            t.to_peer_bytes += c.to_peer_bytes;
            t.to_client_packets += c.to_client_packets;
            t.to_client_bytes += c.to_client_bytes;
        }
        Ok(t)
    }

    fn traffic_zero(&self) -> Result<aya::maps::PerCpuValues<Counters>, XdpError> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| XdpError::Kernel {
            what: "count the possible CPUs",
            why: format!("{what}: {e}"),
        })?;
        aya::maps::PerCpuValues::try_from(vec![Counters::default(); cpus]).map_err(|e| {
            XdpError::Kernel {
                what: "size the per-CPU counters",
                why: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn layouts_match_the_c_program() {
        assert_eq!(size_of::<ClientKey>(), 40);
        assert_eq!(size_of::<PeerKey>(), 40);
        assert_eq!(size_of::<Rewrite>(), 56);
        assert_eq!(size_of::<Hops>(), 32);
        assert_eq!(size_of::<Counters>(), 32);
    }

    #[test]
    fn keys_and_rewrites_in_network_order_with_mapped_v4() {
        let route = Route {
            client: "192.0.2.1:40000".parse().unwrap(),
            server: "198.51.100.1:3478".parse().unwrap(),
            channel: 0x4001,
            peer: "[2001:db8::7]:5000".parse().unwrap(),
            relayed: "[2001:db8::1]:49152".parse().unwrap(),
            slot: 9,
            expires_ns: 77,
        };
        let k = route.client_key();
        assert_eq!(
            &k.client_ip[..12],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        );
        assert_eq!(&k.client_ip[12..], &[192, 0, 2, 1]);
        assert_eq!(k.client_port.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(k.channel.to_ne_bytes(), [0x40, 0x01]);
        let w = route.rewrite(route.relayed, route.peer, 0);
        assert_eq!(w.v4, 0);
        assert_eq!(w.slot, 9);
        assert_eq!(w.src_port.to_ne_bytes(), 49152u16.to_be_bytes());
        let back = route.rewrite(route.server, route.client, route.channel);
        assert_eq!(back.v4, 1);
        assert_eq!(back.channel.to_ne_bytes(), [0x40, 0x01]);
        assert_eq!(&back.dst_ip[12..], &[192, 0, 2, 1]);
    }
}
