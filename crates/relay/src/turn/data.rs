//! The fast path: ChannelData from a client to its channel's peer
//! (RFC 8656 §12.6), and a peer's datagram to the client as ChannelData or
//! a Data indication, rewritten in place in its receive buffer (§10.3,
//! §12.5). Send indications go through the control path (`control.rs`).

use std::net::SocketAddr;

use uturn_stun::{self as stun, channel, ChannelData};

use super::allocation::{self, FiveTuple};
use super::{Answer, Now, Payload, Relay, RelayToken, Transmit, PEER_HEADROOM};

impl Relay {
    /// Fast path, client → peer: RFC 8656 §12.6.
    pub(super) fn channel_data_from_client(
        &mut self,
        now: Now,
        five: FiveTuple,
        pkt: &[u8],
    ) -> Answer {
        let Ok(cd) = ChannelData::parse(pkt) else {
            self.stats.drop_malformed += 1;
            return Answer::Nothing;
        };
        let Some((index, alloc)) = self
            .table
            .by_client(&five)
            .filter(|(_, a)| now.at < a.expires)
        else {
            self.stats.drop_no_allocation += 1;
            return Answer::Nothing;
        };
        // RFC 8656 §12.6: an unbound channel number means the data is dropped.
        let Some(peer) = alloc.channel_peer(cd.number, now.at) else {
            self.stats.drop_no_permission += 1;
            return Answer::Nothing;
        };
        // A channel lives 600 s, its peer's permission 300 s (RFC 8656 §9, §12):
        // past that, ChannelData is dropped like a Send indication (§10.2), so
        // that a client reaches a peer only while it holds a permission.
        if !alloc.has_permission(peer.ip(), now.at) {
            self.stats.drop_no_permission += 1;
            return Answer::Nothing;
        }
        let family = allocation::family_of(&peer);
        let relay = self.table.token(index, family);
        let len = cd.payload.len();
        let t = &mut self.stats.by_transport[five.leg.transport().index()];
        t.to_peer_packets += 1;
        t.to_peer_bytes += len as u64;
        Answer::ToPeer {
            relay,
            peer,
            payload: channel::CHANNEL_HEADER_LEN..channel::CHANNEL_HEADER_LEN + len,
        }
    }

    /// A datagram from `peer` on relay socket `relay`; its payload sits at
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]` and `buf` has
    /// `PEER_TAILROOM` more bytes after it.
    pub fn handle_peer(
        &mut self,
        now: Now,
        relay: RelayToken,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        let Some((alloc, _family)) = self.table.by_token(relay) else {
            self.stats.drop_no_allocation += 1;
            return None;
        };
        if now.at >= alloc.expires {
            self.stats.drop_no_allocation += 1;
            return None;
        }
        // RFC 8656 §10.3: data from a peer without a permission is dropped.
        if !alloc.has_permission(peer.ip(), now.at) {
            self.stats.drop_no_permission += 1;
            return None;
        }
        let (leg, client) = (alloc.five.leg, alloc.five.client);
        let end = PEER_HEADROOM.checked_add(len)?;
        if end > buf.len() || len > usize::from(u16::MAX) {
            self.stats.drop_malformed += 1;
            return None;
        }
        let range = match alloc.channel_for_peer(&peer, now.at) {
            Some(number) => {
                // RFC 8656 §12.5: with a channel bound, relay as ChannelData.
                let start = PEER_HEADROOM - channel::CHANNEL_HEADER_LEN;
                let mut header = [0u8; 4];
                channel::write_header(&mut header, number, len as u16);
                buf[start..PEER_HEADROOM].copy_from_slice(&header);
                if leg.is_stream() {
                    // RFC 8656 §12.5: over a stream, padded to a multiple
                    // of 4 (into the tailroom) so that the next frame starts
                    // where the client's framing expects it.
                    let padded = end + (len.wrapping_neg() & 3);
                    let Some(pad) = buf.get_mut(end..padded) else {
                        self.stats.drop_malformed += 1;
                        return None;
                    };
                    pad.fill(0);
                    start..padded
                } else {
                    start..end
                }
            }
            None => {
                // RFC 8656 §10.3: otherwise as a Data indication.
                let mut tid = [0u8; 12];
                self.rng.fill(&mut tid);
                match stun::writer::data_indication_in_place(buf, PEER_HEADROOM, len, peer, &tid) {
                    Ok(r) => r,
                    Err(_) => {
                        self.stats.drop_malformed += 1;
                        return None;
                    }
                }
            }
        };
        let t = &mut self.stats.by_transport[leg.transport().index()];
        t.to_client_packets += 1;
        t.to_client_bytes += len as u64;
        Some(Transmit {
            via: leg.via(),
            to: client,
            payload: Payload::Rx(range),
        })
    }
}
