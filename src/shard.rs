//! One worker thread: wires a `turn::Relay` to an `io` backend.
//!
//! A shard owns one listener socket per listen address (bound with
//! SO_REUSEPORT by the server), every relay socket its allocations created,
//! one epoll instance over all of them, and one preallocated [`UdpBatch`].
//! Nothing here is shared with another shard except the immutable `Arc`s the
//! state machine holds and the shutdown flag.
//!
//! epoll keys: a relay socket is registered under its `RelayToken` (< 2^63);
//! listener `i` under `LISTENER_TAG | i`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::Authenticator;
use crate::io::socket::udp_relay;
use crate::io::syscall::{Events, Poller, UdpBatch};
use crate::io::{BatchLayout, IoStats, TxData};
use crate::policy::{AllocationLedger, PeerPolicy};
use crate::turn::{
    ClientOutput, ListenerId, Now, Relay, RelaySockets, RelayToken, Stats, TurnConfig, MAX_REPLY,
    PEER_HEADROOM, PEER_TAILROOM,
};

/// Datagrams per `recvmmsg` (and sends per flush).
pub const BATCH: usize = 32;
/// Largest datagram received whole.
pub const RECV_CAPACITY: usize = 2048;
/// Batches read from one ready socket before moving on to the next (fairness;
/// epoll is level-triggered, so a socket with more data comes back).
const MAX_BATCHES_PER_READY: usize = 8;
/// Longest epoll wait, so that shutdown is noticed promptly.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Readiness events per wait.
const EVENTS: usize = 256;
/// Marks a listener's epoll key; relay tokens never have this bit.
const LISTENER_TAG: u64 = 1 << 63;

/// The receive/send geometry every shard uses.
pub const LAYOUT: BatchLayout = BatchLayout {
    slots: BATCH,
    headroom: PEER_HEADROOM,
    capacity: RECV_CAPACITY,
    tailroom: PEER_TAILROOM,
    reply_len: MAX_REPLY,
};

/// Everything a shard is built from.
pub struct ShardSpec {
    pub index: usize,
    /// One per listen address, in `ListenerId` order.
    pub listeners: Vec<UdpSocket>,
    pub turn: TurnConfig,
    pub auth: Arc<Authenticator>,
    pub policy: Arc<PeerPolicy>,
    pub ledger: Arc<AllocationLedger>,
    pub shutdown: Arc<AtomicBool>,
}

/// What a shard hands back when it stops.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    pub index: usize,
    pub turn: Stats,
    pub io: IoStats,
    /// Allocations deleted at shutdown.
    pub allocations_at_exit: usize,
}

/// Relay token → socket. Tokens come from the state machine, not from the
/// network, so a multiplicative hash is enough.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The shard's relay sockets, as the state machine sees them.
struct ShardSockets {
    poller: Poller,
    relays: HashMap<u64, UdpSocket, BuildHasherDefault<TokenHasher>>,
    /// Sockets closed during the current turn. They stay open until every
    /// queued send has been flushed, so that a descriptor number is never
    /// reused by a new socket while a send still names it.
    closing: Vec<UdpSocket>,
}

impl RelaySockets for ShardSockets {
    fn bind(
        &mut self,
        addr: std::net::SocketAddr,
        token: RelayToken,
        dont_fragment: bool,
    ) -> io::Result<()> {
        if token.0 & LISTENER_TAG != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "relay token has the listener bit set",
            ));
        }
        if self.relays.contains_key(&token.0) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "relay token already bound",
            ));
        }
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
        }
    }
}

/// One worker: a state machine and its sockets.
pub struct Shard {
    index: usize,
    relay: Relay,
    sockets: ShardSockets,
    listeners: Vec<UdpSocket>,
    batch: UdpBatch,
    events: Events,
    shutdown: Arc<AtomicBool>,
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

impl Shard {
    /// Creates the epoll instance, registers the listeners and allocates
    /// every buffer the shard will use. Call on the shard's own thread.
    pub fn new(spec: ShardSpec) -> io::Result<Shard> {
        if spec.listeners.len() > usize::from(u16::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many listen addresses",
            ));
        }
        let poller = Poller::new()?;
        for (i, l) in spec.listeners.iter().enumerate() {
            poller.add(l.as_fd(), LISTENER_TAG | i as u64)?;
        }
        let capacity = (usize::from(*spec.turn.ports.end()) + 1)
            .saturating_sub(usize::from(*spec.turn.ports.start()));
        let relays =
            HashMap::with_capacity_and_hasher(capacity.min(4096), BuildHasherDefault::default());
        Ok(Shard {
            index: spec.index,
            relay: Relay::new(spec.turn, spec.auth, spec.policy, spec.ledger),
            sockets: ShardSockets {
                poller,
                relays,
                closing: Vec::with_capacity(64),
            },
            listeners: spec.listeners,
            batch: UdpBatch::new(LAYOUT),
            events: Events::with_capacity(EVENTS),
            shutdown: spec.shutdown,
        })
    }

    /// Runs until the shutdown flag is set; then deletes every allocation,
    /// closes every socket and returns the counters.
    pub fn run(mut self) -> ShardReport {
        tracing::debug!(shard = self.index, "shard running");
        while !self.shutdown.load(Ordering::Relaxed) {
            let wait = match self.relay.poll_timeout() {
                Some(t) => t.saturating_duration_since(Instant::now()).min(MAX_WAIT),
                None => MAX_WAIT,
            };
            let ready = match self.sockets.poller.wait(&mut self.events, wait) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(shard = self.index, error = %e, "epoll_wait failed");
                    std::thread::sleep(Duration::from_millis(10));
                    0
                }
            };
            self.batch.stats_mut().wakeups += 1;
            for e in 0..ready {
                let key = self.events.key(e);
                if key & LISTENER_TAG != 0 {
                    self.drain_listener((key & !LISTENER_TAG) as usize);
                } else {
                    self.drain_relay(key);
                }
            }
            if self
                .relay
                .poll_timeout()
                .is_some_and(|t| t <= Instant::now())
            {
                self.relay.handle_timeout(now(), &mut self.sockets);
            }
            // Every send of this turn has been flushed: closing is safe now.
            self.sockets.closing.clear();
        }
        let allocations_at_exit = self.relay.allocation_count();
        self.relay.close_all(&mut self.sockets);
        self.batch.flush();
        self.sockets.closing.clear();
        self.sockets.relays.clear();
        tracing::debug!(shard = self.index, allocations_at_exit, "shard stopped");
        ShardReport {
            index: self.index,
            turn: self.relay.stats().clone(),
            io: self.batch.stats().clone(),
            allocations_at_exit,
        }
    }

    /// Reads client datagrams from listener `idx` and answers or forwards them.
    fn drain_listener(&mut self, idx: usize) {
        let Some(listener) = self.listeners.get(idx) else {
            return;
        };
        let id = ListenerId(idx as u16);
        let headroom = self.batch.layout().headroom;
        for _ in 0..MAX_BATCHES_PER_READY {
            let n = match self.batch.recv(listener.as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(shard = self.index, listener = idx, error = %e, "receive failed");
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let now = now();
            for i in 0..n {
                let Some((client, pkt, scratch)) = self.batch.datagram_and_reply(i) else {
                    continue;
                };
                match self
                    .relay
                    .handle_client(now, id, client, pkt, scratch, &mut self.sockets)
                {
                    ClientOutput::Nothing => {}
                    ClientOutput::Reply(len) => {
                        self.batch
                            .queue(listener.as_fd(), client, TxData::Reply { slot: i, len });
                    }
                    ClientOutput::ToPeer {
                        relay,
                        peer,
                        payload,
                    } => match self.sockets.relays.get(&relay.0) {
                        Some(sock) => {
                            // Straight from the receive slot: no copy.
                            let range = payload.start.saturating_add(headroom)
                                ..payload.end.saturating_add(headroom);
                            self.batch
                                .queue(sock.as_fd(), peer, TxData::Slot { slot: i, range });
                        }
                        None => {
                            self.batch.stats_mut().tx_unroutable += 1;
                            tracing::debug!(
                                shard = self.index,
                                token = relay.0,
                                "send to an unknown relay socket dropped"
                            );
                        }
                    },
                }
            }
            self.batch.flush();
            if n < BATCH {
                break;
            }
        }
    }

    /// Reads peer datagrams from relay socket `token` and forwards them.
    fn drain_relay(&mut self, token: u64) {
        for _ in 0..MAX_BATCHES_PER_READY {
            // Closed earlier in this turn: its remaining events are stale.
            let Some(sock) = self.sockets.relays.get(&token) else {
                return;
            };
            let n = match self.batch.recv(sock.as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(shard = self.index, token, error = %e, "receive failed");
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let now = now();
            for i in 0..n {
                let Some((peer, slot, len)) = self.batch.datagram_in_slot(i) else {
                    continue;
                };
                let Some(out) = self
                    .relay
                    .handle_peer(now, RelayToken(token), peer, slot, len)
                else {
                    continue;
                };
                match self.listeners.get(usize::from(out.listener.0)) {
                    Some(l) => {
                        self.batch.queue(
                            l.as_fd(),
                            out.client,
                            TxData::Slot {
                                slot: i,
                                range: out.range,
                            },
                        );
                    }
                    None => self.batch.stats_mut().tx_unroutable += 1,
                }
            }
            self.batch.flush();
            if n < BATCH {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn sockets() -> ShardSockets {
        ShardSockets {
            poller: Poller::new().unwrap(),
            relays: HashMap::default(),
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

    #[test]
    fn token_hash_spreads_sequential_tokens() {
        let h = |n: u64| {
            let mut t = TokenHasher::default();
            t.write_u64(n);
            t.finish()
        };
        let low_bits: HashSet<u64> = (0..1024).map(|n| h(n) & 1023).collect();
        assert_eq!(low_bits.len(), 1024);
    }
}
