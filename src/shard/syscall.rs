//! The portable backend as a shard [`Driver`]: epoll readiness, `recvmmsg`
//! into a [`UdpBatch`], `sendmmsg` of the sends pointing into it.
//!
//! epoll keys are the socket tags: a relay socket's `RelayToken`, listener
//! `i`'s `LISTENER_TAG | i`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dtls::{DtlsSessions, DtlsStats};
use super::streams::{EpollStreams, PeerSockets, StreamStats};
use super::tcp::{self, TcpPeers, TcpStats};
use super::Letter;
use super::{
    check_new_token, dispatch, now, relay_map, socket_of, tag_via, tx_bytes, Driver, Inbound,
    RelayMap, ShardControl, BATCH, LAYOUT, LISTENER_TAG, STREAMS_TAG, TCP_TAG, WAKE_TAG,
};
use crate::io::socket::udp_relay;
use crate::io::syscall::{Events, Poller, UdpBatch};
use crate::io::wake::WakeFd;
use crate::io::IoStats;
use crate::turn::{Now, Payload, Relay, RelaySockets, RelayToken, Transmit, TurnConfig, Via};

/// Batches read from one ready socket before moving on to the next (fairness;
/// epoll is level-triggered, so a socket with more data comes back).
const MAX_BATCHES_PER_READY: usize = 8;
/// Readiness events per wait.
const EVENTS: usize = 256;

/// The shard's relay sockets, as the state machine sees them.
struct ShardSockets {
    poller: Poller,
    relays: RelayMap<UdpSocket>,
    /// Sockets closed during the current turn. They stay open until every
    /// queued send has been flushed, so that a descriptor number is never
    /// reused by a new socket while a send still names it.
    closing: Vec<UdpSocket>,
}

impl RelaySockets for ShardSockets {
    fn bind(&mut self, addr: SocketAddr, token: RelayToken, dont_fragment: bool) -> io::Result<()> {
        check_new_token(&self.relays, token)?;
        let sock = udp_relay(addr, dont_fragment)?;
        self.poller.add(sock.as_fd(), token.0)?;
        self.relays.insert(token.0, sock);
        Ok(())
    }

    fn close(&mut self, token: RelayToken) {
        if let Some(sock) = self.relays.remove(&token.0) {
            if let Err(e) = self.poller.delete(sock.as_fd()) {
                tracing::debug!(token = token.0, error = %e, "epoll delete failed");
            }
            self.closing.push(sock);
        } else {
            // A TCP allocation's listener.
            super::tcp::close_listener(token);
        }
    }

    super::tcp::relay_sockets!();
}

impl PeerSockets for ShardSockets {
    fn send_to_peer(&mut self, token: RelayToken, to: SocketAddr, bytes: &[u8]) -> bool {
        self.relays
            .get(&token.0)
            .is_some_and(|s| s.send_to(bytes, to).is_ok())
    }
}

/// The portable backend of one shard: its sockets, epoll and one batch.
pub(super) struct SyscallIo {
    index: usize,
    sockets: ShardSockets,
    listeners: Vec<UdpSocket>,
    batch: UdpBatch,
    events: Events,
    /// Ready sockets found by the last wait.
    ready: usize,
    /// The descriptor the control thread wakes this shard by.
    wake: Arc<WakeFd>,
    streams: EpollStreams,
    /// The stream poller was ready in the last wait.
    streams_ready: bool,
    /// TCP allocations (RFC 6062), and whether their poller was ready.
    tcp: TcpPeers,
    tcp_ready: bool,
    /// Letters for other shards made this turn.
    letters: Vec<(usize, Letter)>,
    dtls: DtlsSessions,
}

impl SyscallIo {
    pub(super) fn new(
        index: usize,
        listeners: Vec<UdpSocket>,
        dtls: DtlsSessions,
        streams: EpollStreams,
        tcp: TcpPeers,
        control: &ShardControl,
        turn: &TurnConfig,
    ) -> io::Result<SyscallIo> {
        let poller = Poller::new()?;
        for (i, l) in listeners.iter().enumerate() {
            poller.add(l.as_fd(), LISTENER_TAG | i as u64)?;
        }
        poller.add(control.wake.as_fd(), WAKE_TAG)?;
        if streams.is_active() {
            poller.add(streams.fd(), STREAMS_TAG)?;
            poller.add(tcp.fd(), TCP_TAG)?;
        }
        Ok(SyscallIo {
            index,
            sockets: ShardSockets {
                poller,
                relays: relay_map(turn),
                closing: Vec::with_capacity(64),
            },
            listeners,
            batch: UdpBatch::new(LAYOUT),
            events: Events::with_capacity(EVENTS),
            ready: 0,
            wake: Arc::clone(&control.wake),
            streams,
            streams_ready: false,
            tcp,
            tcp_ready: false,
            letters: Vec::new(),
            dtls,
        })
    }

    /// Reads datagrams from the socket tagged `key` and answers or forwards them.
    fn drain(&mut self, relay: &mut Relay, key: u64) {
        for _ in 0..MAX_BATCHES_PER_READY {
            // A relay socket closed earlier in this turn: its events are stale.
            let Some(fd) = tag_via(key)
                .and_then(|via| socket_of(via, &self.listeners, &self.sockets.relays))
                .map(|s| s.as_fd())
            else {
                return;
            };
            let n = match self.batch.recv(fd) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(shard = self.index, key, error = %e, "receive failed");
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let now = now();
            for i in 0..n {
                let Some((from, buf, len, scratch)) = self.batch.datagram_slot_and_reply(i) else {
                    continue;
                };
                let rx = Inbound {
                    tag: key,
                    from,
                    buf,
                    len,
                    scratch,
                };
                match dispatch(relay, now, rx, &mut self.sockets, &mut self.dtls) {
                    Some(Transmit {
                        via: Via::Stream(conn),
                        payload: Payload::Rx(range),
                        ..
                    }) => {
                        // To a stream client: onto its connection's queue.
                        if let Some((_, buf, _, _)) = self.batch.datagram_slot_and_reply(i) {
                            if let Some(bytes) = buf.get(range) {
                                self.streams.send(conn, bytes);
                            }
                        }
                    }
                    Some(t) => self.queue(i, t),
                    None => {}
                }
            }
            self.batch.flush();
            if n < BATCH {
                break;
            }
        }
    }

    /// The TCP relay's turn: data connections bound this turn join their
    /// peer connections, the state machine's requests are served, readiness
    /// handled (when `ready`), and what goes to control connections queued.
    fn tcp_turn(&mut self, relay: &mut Relay, ready: bool) {
        let detached = self.streams.take_detached();
        tcp::route_detached(
            self.index,
            relay,
            &mut self.tcp,
            detached,
            &mut self.letters,
        );
        let remote = self.streams.take_remote();
        tcp::route_remote(self.index, relay, &mut self.tcp, remote, &mut self.letters);
        self.tcp.poll(relay, now(), ready);
        let out = self.tcp.take_out();
        if !out.is_empty() {
            for (conn, bytes) in out {
                self.streams.send(conn, &bytes);
            }
            self.streams.flush(relay, &mut self.sockets);
        }
    }

    /// Queues the send caused by datagram `i`.
    fn queue(&mut self, i: usize, t: Transmit) {
        let fd = socket_of(t.via, &self.listeners, &self.sockets.relays).map(|s| s.as_fd());
        let Some(fd) = fd else {
            self.batch.stats_mut().tx_unroutable += 1;
            tracing::debug!(shard = self.index, via = ?t.via, "send from an unknown socket dropped");
            return;
        };
        self.batch.queue(fd, t.to, i, tx_bytes(t.payload));
    }
}

impl Driver for SyscallIo {
    const NAME: &'static str = "syscall";

    fn wait(&mut self, timeout: Duration) -> bool {
        self.ready = match self.sockets.poller.wait(&mut self.events, timeout) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(shard = self.index, error = %e, "epoll_wait failed");
                std::thread::sleep(Duration::from_millis(10));
                0
            }
        };
        self.batch.stats_mut().wakeups += 1;
        let mut woken = false;
        for e in 0..self.ready {
            if self.events.key(e) == WAKE_TAG {
                // Level-triggered: drained here, the commands read after the turn.
                self.wake.drain();
                woken = true;
            }
        }
        woken || self.ready == 0
    }

    fn receive(&mut self, relay: &mut Relay) {
        for e in 0..self.ready {
            match self.events.key(e) {
                WAKE_TAG => {}
                STREAMS_TAG => self.streams_ready = true,
                TCP_TAG => self.tcp_ready = true,
                key => self.drain(relay, key),
            }
        }
        if std::mem::take(&mut self.streams_ready) {
            self.streams.poll(relay, &mut self.sockets, now());
        }
        // What this turn queued for stream clients, one write each.
        self.streams.flush(relay, &mut self.sockets);
        let ready = std::mem::take(&mut self.tcp_ready);
        self.tcp_turn(relay, ready);
    }

    fn timeout(&mut self, relay: &mut Relay, now: Now) {
        relay.handle_timeout(now, &mut self.sockets);
        self.streams.sweep(relay, &mut self.sockets, now);
        self.dtls.sweep(relay, &mut self.sockets, now);
        self.tcp_turn(relay, false);
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
            |conn, reply, id| streams.answer_bind(conn, reply, id),
        );
        // An answer to send, a data connection to hand on: now, not at
        // the next event.
        self.streams.flush(relay, &mut self.sockets);
        self.tcp_turn(relay, false);
    }

    fn next_timer(&self) -> Option<Instant> {
        super::earliest(self.streams.next_timer(), self.dtls.next_timer())
    }

    fn set_dtls(&mut self, context: crate::dtls::DtlsContext) {
        self.dtls.set_context(context);
    }

    fn set_tls(&mut self, config: Arc<rustls::ServerConfig>) {
        self.streams.set_tls(config);
    }

    fn end_turn(&mut self) {
        // Every send of this turn has been flushed: closing is safe now.
        self.sockets.closing.clear();
    }

    fn stats(&self) -> (&IoStats, &StreamStats, &DtlsStats) {
        (self.batch.stats(), self.streams.stats(), self.dtls.stats())
    }

    fn close(&mut self, relay: &mut Relay) {
        self.streams.close_all(relay, &mut self.sockets);
        self.dtls.close_all(relay, &mut self.sockets);
        relay.close_all(&mut self.sockets);
        self.tcp.close_all(relay);
        self.batch.flush();
        self.sockets.closing.clear();
        self.sockets.relays.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockets() -> ShardSockets {
        ShardSockets {
            poller: Poller::new().unwrap(),
            relays: RelayMap::default(),
            closing: Vec::new(),
        }
    }

    #[test]
    fn relay_sockets_bind_register_and_close_after_the_turn() {
        let mut s = sockets();
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        s.bind(addr, RelayToken(5), false).unwrap();
        // A token is bound once; the listener bit is never a relay token.
        assert_eq!(
            s.bind("127.0.0.1:0".parse().unwrap(), RelayToken(5), false)
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            s.bind(
                "127.0.0.1:0".parse().unwrap(),
                RelayToken(LISTENER_TAG | 1),
                false
            )
            .unwrap_err()
            .kind(),
            io::ErrorKind::InvalidInput
        );
        // Readiness comes back under the token.
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"x", addr)
            .unwrap();
        let mut ev = Events::with_capacity(4);
        assert_eq!(s.poller.wait(&mut ev, Duration::from_secs(2)).unwrap(), 1);
        assert_eq!(ev.key(0), 5);
        // Closed sockets stay open (and their port taken) until the turn ends,
        // so a queued send can never go out of a recycled descriptor.
        s.close(RelayToken(5));
        assert!(s.relays.is_empty());
        assert_eq!(
            s.bind(addr, RelayToken(6), false).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        s.closing.clear();
        s.bind(addr, RelayToken(6), false).unwrap();
        // Closing an unknown token is harmless.
        s.close(RelayToken(99));
    }
}
