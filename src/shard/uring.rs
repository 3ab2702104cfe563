//! The io_uring backend as a shard [`Driver`]: one `io_uring_enter` per
//! turn submits every send and re-arm queued by the previous turn and waits
//! for completions; each datagram received goes through `dispatch`, and its
//! send (if any) is queued as a `sendmsg` pointing into the receive buffer or
//! the reply area.
//!
//! TCP and TLS run on the ring too (`RingStreams`: multishot accept and
//! receive, ring sends), or, on a kernel that cannot, through the stream
//! engine's own epoll instance, polled from the ring (`EpollStreams`).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dtls::{DtlsSessions, DtlsStats};
use super::streams::{EpollStreams, PeerSockets, RingStreams, StreamSpec, StreamStats};
use super::tcp::{self, TcpPeers, TcpStats};
use super::Letter;
use super::{
    check_new_token, dispatch, now, relay_map, socket_of, tx_bytes, Driver, Inbound, RelayMap,
    ShardControl, LISTENER_TAG, RECV_CAPACITY,
};
use crate::io::socket::{fd_limit, udp_relay};
use crate::io::syscall::{Events, Poller};
use crate::io::uring::{PeerOut, RingMode, SockId, SocketCtl, Uring, UringConfig};
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
/// Stream receive buffers per shard, and the bytes each takes: small
/// buffers, so that many connections with a few frames each share the
/// group (a longer frame is put together from several).
const STREAM_BUFFERS: u16 = 1024;
const STREAM_CAPACITY: usize = 4096;

/// TCP on the ring: its listeners, and the connections it must have room
/// for.
#[derive(Copy, Clone, Debug, Default)]
pub struct RingStreamSize {
    pub listeners: usize,
    pub connections: usize,
}

/// The ring geometry of a shard with `listeners` listen sockets and `ports`
/// relay ports, and TCP on the ring if `streams` says so.
pub fn uring_config(
    listeners: usize,
    ports: usize,
    batch_wait: Duration,
    gso: bool,
    streams: Option<RingStreamSize>,
) -> UringConfig {
    let tcp = streams.map_or(0, |s| s.listeners + s.connections);
    // The kernel refuses a fixed-file table larger than RLIMIT_NOFILE; a
    // socket beyond it could not be opened anyway.
    let files = (listeners + ports + tcp + CLOSING_SLOTS)
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
        stream_buffers: if streams.is_some() { STREAM_BUFFERS } else { 0 },
        stream_capacity: STREAM_CAPACITY,
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
        } else {
            // A TCP allocation's listener.
            super::tcp::close_listener(token);
        }
    }

    super::tcp::relay_sockets!();
}

/// The relay sockets while a stream event is handled or a connection
/// closes: frames to peers leave with the turn's other sends.
pub(super) struct RingSockets<'a> {
    out: PeerOut<'a>,
    relays: &'a mut RelayMap<SockId>,
}

impl<'a> RingSockets<'a> {
    pub(super) fn new(out: PeerOut<'a>, relays: &'a mut RelayMap<SockId>) -> RingSockets<'a> {
        RingSockets { out, relays }
    }

    fn relay_sockets(&mut self) -> UringSockets<'_> {
        UringSockets {
            ctl: self.out.ctl(),
            relays: self.relays,
        }
    }
}

impl RelaySockets for RingSockets<'_> {
    fn bind(&mut self, addr: SocketAddr, token: RelayToken, dont_fragment: bool) -> io::Result<()> {
        self.relay_sockets().bind(addr, token, dont_fragment)
    }

    fn close(&mut self, token: RelayToken) {
        self.relay_sockets().close(token);
    }

    super::tcp::relay_sockets!();
}

impl PeerSockets for RingSockets<'_> {
    fn send_to_peer(&mut self, token: RelayToken, to: SocketAddr, bytes: &[u8]) -> bool {
        let Some(&id) = self.relays.get(&token.0) else {
            return false;
        };
        // Copied into a send slot; when none is free, or the frame is
        // longer than a slot takes, one system call.
        self.out.send_to(id, to, bytes)
            || self
                .out
                .ctl()
                .socket(id)
                .is_some_and(|s| s.send_to(bytes, to).is_ok())
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
    /// TCP allocations (RFC 6062).
    tcp: TcpPeers,
    /// What the ring watches for readability: the TCP relay's poller and,
    /// when streams are not on the ring, the stream engine's.
    watched: Poller,
    watched_events: Events,
    /// Letters for other shards made this turn.
    letters: Vec<(usize, Letter)>,
    dtls: DtlsSessions,
}

/// Keys in `UringIo::watched`.
const WATCH_STREAMS: u64 = 1;
const WATCH_TCP: u64 = 2;

/// How a uring shard serves TCP and TLS.
enum Streams {
    /// On the ring.
    Native(RingStreams),
    /// Through the stream engine's epoll instance, polled from the ring.
    Watched(EpollStreams),
}

impl UringIo {
    /// `native`: TCP and TLS on the ring (the kernel has multishot accept
    /// and receive), else through an epoll instance.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        index: usize,
        listeners: Vec<UdpSocket>,
        dtls: DtlsSessions,
        streams: StreamSpec,
        tcp: TcpPeers,
        native: bool,
        control: &ShardControl,
        turn: &TurnConfig,
        batch_wait: Duration,
        gso: bool,
    ) -> io::Result<UringIo> {
        let ports =
            (usize::from(*turn.ports.end()) + 1).saturating_sub(usize::from(*turn.ports.start()));
        let native = native && !streams.listeners.is_empty();
        let size = native.then_some(RingStreamSize {
            listeners: streams.listeners.len(),
            connections: streams.limits.max_connections,
        });
        let mut io = Uring::new(&uring_config(listeners.len(), ports, batch_wait, gso, size))?;
        tracing::debug!(
            shard = index,
            flags = io.mode().name(),
            native_streams = native,
            "io_uring ready"
        );
        let mut ids = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            ids.push(io.ctl().add(l, LISTENER_TAG | i as u64)?);
        }
        io.watch_wake(Arc::clone(&control.wake));
        let watched = Poller::new()?;
        let active = !streams.listeners.is_empty();
        let streams = if native {
            Streams::Native(RingStreams::new(index, streams, &mut io)?)
        } else {
            let streams = EpollStreams::new(index, streams)?;
            if streams.is_active() {
                watched.add(streams.fd(), WATCH_STREAMS)?;
            }
            Streams::Watched(streams)
        };
        if active {
            watched.add(tcp.fd(), WATCH_TCP)?;
            // `watched` lives as long as the ring (both are this driver's).
            io.watch_readable(std::os::fd::AsFd::as_fd(&watched).as_raw_fd());
        }
        Ok(UringIo {
            index,
            io,
            listeners: ids,
            relays: relay_map(turn),
            received: 0,
            streams,
            tcp,
            watched,
            watched_events: Events::with_capacity(4),
            letters: Vec::new(),
            dtls,
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

    /// Which watched pollers are ready: (streams, TCP relay).
    fn watched_ready(&mut self) -> (bool, bool) {
        if !self.io.take_watch() {
            return (false, false);
        }
        let n = self
            .watched
            .wait(&mut self.watched_events, Duration::ZERO)
            .unwrap_or(0);
        let keys = (0..n).map(|e| self.watched_events.key(e));
        keys.fold((false, false), |(s, t), k| {
            (s || k == WATCH_STREAMS, t || k == WATCH_TCP)
        })
    }

    /// The TCP relay's turn (as the syscall backend's `tcp_turn`).
    fn tcp_turn(&mut self, relay: &mut Relay, ready: bool) {
        let (detached, remote) = match &mut self.streams {
            Streams::Native(s) => (s.take_detached(&mut self.io), s.take_remote()),
            Streams::Watched(s) => (s.take_detached(), s.take_remote()),
        };
        tcp::route_detached(
            self.index,
            relay,
            &mut self.tcp,
            detached,
            &mut self.letters,
        );
        tcp::route_remote(self.index, relay, &mut self.tcp, remote, &mut self.letters);
        self.tcp.poll(relay, now(), ready);
        let out = self.tcp.take_out();
        if out.is_empty() {
            return;
        }
        for (conn, bytes) in out {
            match &mut self.streams {
                Streams::Native(s) => s.send(conn, &bytes),
                Streams::Watched(s) => s.send(conn, &bytes),
            }
        }
        self.flush_streams(relay);
    }

    /// Hands what the stream side has queued to its plumbing.
    fn flush_streams(&mut self, relay: &mut Relay) {
        match &mut self.streams {
            Streams::Native(s) => s.flush(&mut self.io, &mut self.relays, relay),
            Streams::Watched(s) => {
                let mut sockets = UringSockets {
                    ctl: self.io.ctl(),
                    relays: &mut self.relays,
                };
                s.flush(relay, &mut sockets);
            }
        }
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
            match dispatch(relay, at, rx, &mut sockets, &mut self.dtls) {
                Some(Transmit {
                    via: Via::Stream(conn),
                    payload: Payload::Rx(range),
                    ..
                }) => {
                    // To a stream client: onto its connection's queue.
                    if let Some(bytes) = d.buf.get(range) {
                        match &mut self.streams {
                            Streams::Native(s) => s.send(conn, bytes),
                            Streams::Watched(s) => s.send(conn, bytes),
                        }
                    }
                }
                Some(t) => self.send(i, t),
                None => {}
            }
        }
        let (streams_ready, tcp_ready) = self.watched_ready();
        match &mut self.streams {
            Streams::Native(s) => {
                s.handle(&mut self.io, &mut self.relays, relay, at);
                s.flush(&mut self.io, &mut self.relays, relay);
            }
            Streams::Watched(s) => {
                let mut sockets = UringSockets {
                    ctl: self.io.ctl(),
                    relays: &mut self.relays,
                };
                if streams_ready {
                    s.poll(relay, &mut sockets, at);
                }
                s.flush(relay, &mut sockets);
            }
        }
        self.tcp_turn(relay, tcp_ready);
    }

    fn tcp_stats(&self) -> &TcpStats {
        self.tcp.stats()
    }

    fn take_letters(&mut self) -> Vec<(usize, Letter)> {
        std::mem::take(&mut self.letters)
    }

    fn letter(&mut self, relay: &mut Relay, letter: Letter) {
        let streams = &mut self.streams;
        tcp::letter(
            self.index,
            relay,
            &mut self.tcp,
            letter,
            &mut self.letters,
            |conn, reply, id| match streams {
                Streams::Native(s) => s.answer_bind(conn, reply, id),
                Streams::Watched(s) => s.answer_bind(conn, reply, id),
            },
        );
        // An answer to send, a data connection to hand on: now, not at
        // the next event.
        self.flush_streams(relay);
        self.tcp_turn(relay, false);
    }

    fn timeout(&mut self, relay: &mut Relay, now: Now) {
        relay.handle_timeout(now, &mut self.sockets());
        match &mut self.streams {
            Streams::Native(s) => s.sweep(&mut self.io, &mut self.relays, relay, now),
            Streams::Watched(s) => {
                let mut sockets = UringSockets {
                    ctl: self.io.ctl(),
                    relays: &mut self.relays,
                };
                s.sweep(relay, &mut sockets, now);
            }
        }
        let mut sockets = UringSockets {
            ctl: self.io.ctl(),
            relays: &mut self.relays,
        };
        self.dtls.sweep(relay, &mut sockets, now);
        self.tcp_turn(relay, false);
    }

    fn next_timer(&self) -> Option<Instant> {
        let streams = match &self.streams {
            Streams::Native(s) => s.next_timer(),
            Streams::Watched(s) => s.next_timer(),
        };
        super::earliest(streams, self.dtls.next_timer())
    }

    fn set_dtls(&mut self, context: crate::dtls::DtlsContext) {
        self.dtls.set_context(context);
    }

    fn set_tls(&mut self, config: Arc<rustls::ServerConfig>) {
        match &mut self.streams {
            Streams::Native(s) => s.set_tls(config),
            Streams::Watched(s) => s.set_tls(config),
        }
    }

    fn stats(&self) -> (&IoStats, &StreamStats, &DtlsStats) {
        let streams = match &self.streams {
            Streams::Native(s) => s.stats(),
            Streams::Watched(s) => s.stats(),
        };
        (self.io.stats(), streams, self.dtls.stats())
    }

    fn close(&mut self, relay: &mut Relay) {
        match &mut self.streams {
            Streams::Native(s) => s.close_all(&mut self.io, &mut self.relays, relay),
            Streams::Watched(s) => {
                let mut sockets = UringSockets {
                    ctl: self.io.ctl(),
                    relays: &mut self.relays,
                };
                s.close_all(relay, &mut sockets);
            }
        }
        let mut sockets = UringSockets {
            ctl: self.io.ctl(),
            relays: &mut self.relays,
        };
        self.dtls.close_all(relay, &mut sockets);
        relay.close_all(&mut self.sockets());
        self.tcp.close_all(relay);
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
        Some(Uring::new(&uring_config(1, 16, Duration::ZERO, true, None)).expect("ring"))
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
        let cfg = uring_config(2, 8192, Duration::ZERO, true, None);
        assert_eq!(cfg.headroom, PEER_HEADROOM);
        assert!(cfg.stride() >= PEER_HEADROOM + RECV_CAPACITY + PEER_TAILROOM);
        assert!(cfg.files as usize >= 3);
        assert!(cfg.files as usize <= 2 + 8192 + CLOSING_SLOTS);
        assert_eq!(cfg.stream_buffers, 0);
        // With TCP on the ring: stream bytes after the same headroom, and
        // room for every connection (as far as RLIMIT_NOFILE allows).
        let size = RingStreamSize {
            listeners: 2,
            connections: 100,
        };
        let cfg = uring_config(2, 8192, Duration::ZERO, true, Some(size));
        assert!(cfg.stream_buffers > 0);
        assert!(cfg.stream_stride() >= PEER_HEADROOM + STREAM_CAPACITY + PEER_TAILROOM);
        assert!(cfg.files as usize <= 2 + 8192 + 102 + CLOSING_SLOTS);
    }
}
