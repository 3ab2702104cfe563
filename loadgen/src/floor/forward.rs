//! The floor's event loop and data path: ChannelData forwarded both ways
//! with no TURN logic, straight out of the receive slots.
//!
//! * client → peer: a ChannelData datagram (first byte 0x40–0x4F) from a
//!   client is looked up by (client address, channel number); the 4-byte
//!   header is stripped by sending the payload straight from the receive slot
//!   (no copy) out of that allocation's relay socket to the bound peer.
//!   Unknown channels and bad lengths are dropped and counted.
//! * peer → client: a datagram arriving on a relay socket from a bound peer
//!   gets the 4-byte ChannelData header written into the free headroom in
//!   front of it in the receive slot (no copy) and is sent from the
//!   client-facing socket to the allocation's client. Datagrams from peers
//!   without a channel are dropped and counted (no Data indications).
//!
//! STUN requests on the client-facing socket go to [`super::control`].

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use uturn_io::{process, TxBytes};
use uturn_stun::{channel::CHANNEL_HEADER_LEN, message::classify, PacketKind};

use super::{Floor, LISTENER_KEY};

/// Batches read from one ready socket before moving to the next.
const MAX_BATCHES_PER_READY: usize = 8;
/// Longest wait, so that the stop flag and the deadline are noticed.
const MAX_WAIT: Duration = Duration::from_millis(100);

impl Floor {
    pub(super) fn event_loop(&mut self, deadline: Option<Instant>) -> anyhow::Result<()> {
        while !process::stop_requested() {
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    (d - now).min(MAX_WAIT)
                }
                None => MAX_WAIT,
            };
            let ready = self
                .poller
                .wait(&mut self.events, wait)
                .context("epoll_wait")?;
            self.report.epoll_wakeups += 1;
            for e in 0..ready {
                let key = self.events.key(e);
                if key == LISTENER_KEY {
                    self.drain_listener();
                } else {
                    self.drain_relay(key);
                }
            }
            self.batch.flush();
            self.closing.clear();
        }
        self.batch.flush();
        Ok(())
    }

    /// Client datagrams: ChannelData forwarded, set-up requests answered.
    fn drain_listener(&mut self) {
        for _ in 0..MAX_BATCHES_PER_READY {
            let n = match self.batch.recv(self.listener.as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("floor: receive on the listener failed: {e}");
                    break;
                }
            };
            for i in 0..n {
                // Skipped by the batch: truncated or an unreadable source.
                let Some((client, head)) = self.batch.datagram(i) else {
                    continue;
                };
                let len = head.len();
                match classify(head) {
                    PacketKind::ChannelData if len >= CHANNEL_HEADER_LEN => {
                        let number = u16::from_be_bytes([head[0], head[1]]);
                        let plen = usize::from(u16::from_be_bytes([head[2], head[3]]));
                        let route = self.channels.get(&(client, number)).copied();
                        let relay = route.and_then(|r| self.allocations.get(r.alloc)?.as_ref());
                        match (route, relay) {
                            (Some(r), Some(a)) if CHANNEL_HEADER_LEN + plen <= len => {
                                // The payload straight from the slot, the
                                // header left behind.
                                let start = self.batch.layout().headroom + CHANNEL_HEADER_LEN;
                                self.batch.queue(
                                    a.sock.as_fd(),
                                    r.peer,
                                    i,
                                    TxBytes::Rx(start..start + plen),
                                );
                                self.report.to_peer += 1;
                            }
                            _ => self.report.dropped_unknown_channel += 1,
                        }
                    }
                    PacketKind::Stun => {
                        if let Some(rlen) = self.handle_stun(i, client) {
                            self.batch.queue(
                                self.listener.as_fd(),
                                client,
                                i,
                                TxBytes::Reply(rlen),
                            );
                        }
                    }
                    _ => self.report.dropped_other += 1,
                }
            }
            self.batch.flush();
            if n < self.batch.layout().slots {
                break;
            }
        }
    }

    /// Peer datagrams on relay socket `key`: header prepended in place, sent to the client.
    fn drain_relay(&mut self, key: u64) {
        let idx = (key & 0xFFFF_FFFF) as usize;
        let generation = (key >> 32) as u32;
        for _ in 0..MAX_BATCHES_PER_READY {
            // Deleted (or replaced) earlier in this turn: a stale event.
            let Some(Some(alloc)) = self.allocations.get(idx) else {
                return;
            };
            if alloc.generation != generation {
                return;
            }
            let n = match self.batch.recv(alloc.sock.as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("floor: receive on a relay socket failed: {e}");
                    break;
                }
            };
            let client = alloc.client;
            for i in 0..n {
                let Some((peer, slot, len)) = self.batch.datagram_in_slot(i) else {
                    continue;
                };
                let Some(&(_, number)) = alloc.peers.iter().find(|(p, _)| *p == peer) else {
                    self.report.dropped_unknown_peer += 1;
                    continue;
                };
                let Ok(wire_len) = u16::try_from(len) else {
                    self.report.dropped_unknown_peer += 1;
                    continue;
                };
                // The headroom is exactly one ChannelData header.
                slot[..2].copy_from_slice(&number.to_be_bytes());
                slot[2..CHANNEL_HEADER_LEN].copy_from_slice(&wire_len.to_be_bytes());
                self.batch.queue(
                    self.listener.as_fd(),
                    client,
                    i,
                    TxBytes::Rx(0..CHANNEL_HEADER_LEN + len),
                );
                self.report.to_client += 1;
            }
            self.batch.flush();
            if n < self.batch.layout().slots {
                break;
            }
        }
    }
}
