//! The io_uring backend as a shard [`Driver`]: one `io_uring_enter` per
//! turn submits every send and re-arm queued by the previous turn and waits
//! for completions; each datagram received goes through `dispatch`, and its
//! send (if any) is queued as a `sendmsg` pointing into the receive buffer or
//! the reply area.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::streams::{PeerSockets, StreamStats, Streams};
use super::{
    check_new_token, dispatch, now, relay_map, socket_of, tx_bytes, Driver, Inbound, RelayMap,
    ShardControl, LISTENER_TAG, RECV_CAPACITY,
};
use crate::io::socket::{fd_limit, udp_relay};
use crate::io::uring::{RingMode, SockId, SocketCtl, Uring, UringConfig};
use crate::io::IoStats;
use crate::turn::{
    Now, Payload, Relay, RelaySockets, RelayToken, Transmit, TurnConfig, Via, MAX_REPLY,
    PEER_HEADROOM, PEER_TAILROOM,
};

/// Provided receive buffers per shard (about 2 KiB each).
pub const URING_BUFFERS: u16 = 1024;
/// Submission queue entries; the completion queue has four times as many.
const SQ_ENTRIES: u32 = 1024;
/// Sends in flight at most.
const TX_SLOTS: u32 = 1024;
/// Fixed-file slots beyond the listeners and the port slice, for sockets
/// still closing (their slot is busy until their last request completes).
const CLOSING_SLOTS: usize = 1024;
/// How long shutdown waits for the ring's requests to finish.
const DRAIN: Duration = Duration::from_secs(2);

/// The ring geometry of a shard with `listeners` listen sockets and `ports`
/// relay ports.
pub fn uring_config(
    listeners: usize,
    ports: usize,
    batch_wait: Duration,
    gso: bool,
) -> UringConfig {
    // The kernel refuses a fixed-file table larger than RLIMIT_NOFILE; a
    // socket beyond it could not be opened anyway.
    let files = (listeners + ports + CLOSING_SLOTS)
        .min(fd_limit())
        .clamp(listeners.max(1) + 1, 1 << 20);
    UringConfig {
        sq_entries: SQ_ENTRIES,
        cq_entries: SQ_ENTRIES * 4,
        buffers: URING_BUFFERS,
        headroom: PEER_HEADROOM,
        capacity: RECV_CAPACITY,
        tailroom: PEER_TAILROOM,
        tx_slots: TX_SLOTS,
        reply_len: MAX_REPLY,
        stream_buffers: 0,
        stream_capacity: 0,
        files: files as u32,
        flags: RingMode::DeferTaskrun,
        batch_wait,
        gso,
    }
}

/// The shard's relay sockets, as the state machine sees them: registering
/// and unregistering go straight to the ring.
struct UringSockets<'a> {
    ctl: &'a mut SocketCtl,
    relays: &'a mut RelayMap<SockId>,
}

impl RelaySockets for UringSockets<'_> {
    fn bind(&mut self, addr: SocketAddr, token: RelayToken, dont_fragment: bool) -> io::Result<()> {
        check_new_token(self.relays, token)?;
        let sock = udp_relay(addr, dont_fragment)?;
        let id = self.ctl.add(sock, token.0)?;
        self.relays.insert(token.0, id);
        Ok(())
    }

    fn close(&mut self, token: RelayToken) {
        if let Some(id) = self.relays.remove(&token.0) {
            // Datagrams already received for it are dropped from now on;
            // the descriptor closes once no request refers to it.
            self.ctl.close(id);
        }
    }
}

impl PeerSockets for UringSockets<'_> {
    fn send_to_peer(&mut self, token: RelayToken, to: SocketAddr, bytes: &[u8]) -> bool {
        // Outside the ring: a frame from a stream client is not in a ring
        // buffer, and one send is one system call either way.
        self.relays
            .get(&token.0)
            .and_then(|&id| self.ctl.socket(id))
            .is_some_and(|s| s.send_to(bytes, to).is_ok())
    }
}

/// The io_uring backend of one shard.
pub(super) struct UringIo {
    index: usize,
    io: Uring,
    /// Listener `i`'s socket.
    listeners: Vec<SockId>,
    relays: RelayMap<SockId>,
    /// Datagrams completed by the last wait.
    received: usize,
    streams: Streams,
}

impl UringIo {
    pub(super) fn new(
        index: usize,
        listeners: Vec<UdpSocket>,
        streams: Streams,
        control: &ShardControl,
        turn: &TurnConfig,
        batch_wait: Duration,
        gso: bool,
    ) -> io::Result<UringIo> {
        let ports =
            (usize::from(*turn.ports.end()) + 1).saturating_sub(usize::from(*turn.ports.start()));
        let mut io = Uring::new(&uring_config(listeners.len(), ports, batch_wait, gso))?;
        tracing::debug!(shard = index, flags = io.mode().name(), "io_uring ready");
        let mut ids = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            ids.push(io.ctl().add(l, LISTENER_TAG | i as u64)?);
        }
        io.watch_wake(Arc::clone(&control.wake));
        if streams.is_active() {
            // `streams` lives as long as the ring (both are this driver's).
            io.watch_readable(streams.fd().as_raw_fd());
        }
        Ok(UringIo {
            index,
            io,
            listeners: ids,
            relays: relay_map(turn),
            received: 0,
            streams,
        })
    }

    /// Queues the send caused by datagram `i`.
    fn send(&mut self, i: usize, t: Transmit) {
        let sock = socket_of(t.via, &self.listeners, &self.relays).copied();
        let Some(sock) = sock else {
            self.io.stats_mut().tx_unroutable += 1;
            tracing::debug!(shard = self.index, via = ?t.via, "send from an unknown socket dropped");
            return;
        };
        self.io.send(i, sock, t.to, tx_bytes(t.payload));
    }

    /// The relay sockets, as the state machine sees them.
    fn sockets(&mut self) -> UringSockets<'_> {
        UringSockets {
            ctl: self.io.ctl(),
            relays: &mut self.relays,
        }
    }
}

impl Driver for UringIo {
    const NAME: &'static str = "uring";

    fn wait(&mut self, timeout: Duration) -> bool {
        self.received = match self.io.wait(timeout) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(shard = self.index, error = %e, "io_uring_enter failed");
                std::thread::sleep(Duration::from_millis(10));
                self.io.received()
            }
        };
        self.io.take_wake() || self.received == 0
    }

    fn receive(&mut self, relay: &mut Relay) {
        let at = now();
        for i in 0..self.received {
            let Some(d) = self.io.datagram(i) else {
                continue;
            };
            let rx = Inbound {
                tag: d.tag,
                from: d.from,
                buf: &mut *d.buf,
                len: d.len,
                scratch: d.scratch,
            };
            let mut sockets = UringSockets {
                ctl: d.ctl,
                relays: &mut self.relays,
            };
            match dispatch(relay, at, rx, &mut sockets) {
                Some(Transmit {
                    via: Via::Stream(conn),
                    payload: Payload::Rx(range),
                    ..
                }) => {
                    // To a stream client: onto its connection's queue.
                    if let Some(bytes) = d.buf.get(range) {
                        self.streams.send(conn, bytes);
                    }
                }
                Some(t) => self.send(i, t),
                None => {}
            }
        }
        if self.io.take_watch() {
            let mut sockets = UringSockets {
                ctl: self.io.ctl(),
                relays: &mut self.relays,
            };
            self.streams.poll(relay, &mut sockets, at);
        }
        let mut sockets = UringSockets {
            ctl: self.io.ctl(),
            relays: &mut self.relays,
        };
        self.streams.flush(relay, &mut sockets);
    }

    fn timeout(&mut self, relay: &mut Relay, now: Now) {
        let mut sockets = UringSockets {
            ctl: self.io.ctl(),
            relays: &mut self.relays,
        };
        relay.handle_timeout(now, &mut sockets);
        self.streams.sweep(relay, &mut sockets, now);
    }

    fn next_timer(&self) -> Option<Instant> {
        self.streams.next_timer()
    }

    fn set_tls(&mut self, config: Arc<rustls::ServerConfig>) {
        self.streams.set_tls(config);
    }

    fn stats(&self) -> (&IoStats, &StreamStats) {
        (self.io.stats(), self.streams.stats())
    }

    fn close(&mut self, relay: &mut Relay) {
        let mut sockets = UringSockets {
            ctl: self.io.ctl(),
            relays: &mut self.relays,
        };
        self.streams.close_all(relay, &mut sockets);
        relay.close_all(&mut self.sockets());
        if !self.io.shutdown(DRAIN) {
            tracing::warn!(
                shard = self.index,
                "io_uring requests still in flight after {DRAIN:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Instant;

    /// A shard-sized ring, or None when io_uring is unavailable and
    /// `UTURN_SKIP_URING=1`.
    fn ring() -> Option<Uring> {
        if let Err(why) = crate::io::uring::probe() {
            if std::env::var("UTURN_SKIP_URING").is_ok_and(|v| v == "1") {
                println!("SKIPPED: io_uring unavailable ({why})");
                return None;
            }
            panic!("io_uring unavailable ({why}); set UTURN_SKIP_URING=1 to skip");
        }
        Some(Uring::new(&uring_config(1, 16, Duration::ZERO, true)).expect("ring"))
    }

    #[test]
    fn relay_sockets_register_with_the_ring_and_close_once_settled() {
        let Some(mut io) = ring() else { return };
        let mut relays = RelayMap::default();
        let addr = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut s = UringSockets {
            ctl: io.ctl(),
            relays: &mut relays,
        };
        s.bind(addr, RelayToken(5), false).unwrap();
        // A token is bound once; the listener bit is never a relay token.
        let any = "127.0.0.1:0".parse().unwrap();
        assert_eq!(
            s.bind(any, RelayToken(5), false).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            s.bind(any, RelayToken(LISTENER_TAG | 1), false)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        // Datagrams come back tagged with the token.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"x", addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut tags = Vec::new();
        while tags.is_empty() && Instant::now() < deadline {
            let n = io.wait(Duration::from_millis(50)).unwrap();
            tags.extend((0..n).filter_map(|i| io.datagram(i).map(|d| (d.tag, d.len))));
        }
        assert_eq!(tags, vec![(5, 1)]);
        // Closed: gone from the map at once, but the port stays taken until
        // the ring has finished with the socket.
        let mut s = UringSockets {
            ctl: io.ctl(),
            relays: &mut relays,
        };
        s.close(RelayToken(5));
        s.close(RelayToken(99)); // unknown: harmless
        assert!(relays.is_empty());
        assert_eq!(
            UdpSocket::bind(addr).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while UdpSocket::bind(addr).is_err() && Instant::now() < deadline {
            io.wait(Duration::from_millis(20)).unwrap();
        }
        io.end_turn();
        let mut s = UringSockets {
            ctl: io.ctl(),
            relays: &mut relays,
        };
        s.bind(addr, RelayToken(6), false).unwrap();
        assert_eq!(io.stats().rx_cancelled, 1);
    }

    #[test]
    fn the_payload_lands_after_the_peer_headroom() {
        let cfg = uring_config(2, 8192, Duration::ZERO, true);
        assert_eq!(cfg.headroom, PEER_HEADROOM);
        assert!(cfg.stride() >= PEER_HEADROOM + RECV_CAPACITY + PEER_TAILROOM);
        assert!(cfg.files as usize >= 3);
        assert!(cfg.files as usize <= 2 + 8192 + CLOSING_SLOTS);
    }
}
