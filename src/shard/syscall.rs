//! The shard loop on the portable backend: epoll readiness, `recvmmsg` into
//! a [`UdpBatch`], `sendmmsg` of the sends pointing into it.
//!
//! epoll keys are the socket tags: a relay socket's `RelayToken`, listener
//! `i`'s `LISTENER_TAG | i`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use super::{
    check_new_token, dispatch, new_relay, now, read_commands, relay_map, timer_due, wait_time,
    Bytes, Inbound, Out, RelayMap, ShardControl, ShardReport, ShardSpec, Via, BATCH, LAYOUT,
    LISTENER_TAG, WAKE_TAG,
};
use crate::io::socket::udp_relay;
use crate::io::syscall::{Events, Poller, UdpBatch};
use crate::io::TxData;
use crate::turn::{Relay, RelaySockets, RelayToken};

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
        }
    }
}

/// One worker on the syscall backend: a state machine and its sockets.
pub struct SyscallShard {
    index: usize,
    relay: Relay,
    sockets: ShardSockets,
    listeners: Vec<UdpSocket>,
    batch: UdpBatch,
    events: Events,
    control: ShardControl,
}

impl SyscallShard {
    pub(super) fn new(spec: ShardSpec) -> io::Result<SyscallShard> {
        let relay = new_relay(&spec);
        let poller = Poller::new()?;
        for (i, l) in spec.listeners.iter().enumerate() {
            poller.add(l.as_fd(), LISTENER_TAG | i as u64)?;
        }
        poller.add(spec.control.wake.as_fd(), WAKE_TAG)?;
        let relays = relay_map(&spec.turn);
        Ok(SyscallShard {
            index: spec.index,
            relay,
            sockets: ShardSockets {
                poller,
                relays,
                closing: Vec::with_capacity(64),
            },
            listeners: spec.listeners,
            batch: UdpBatch::new(LAYOUT),
            events: Events::with_capacity(EVENTS),
            control: spec.control,
        })
    }

    pub(super) fn run(mut self) -> ShardReport {
        tracing::debug!(shard = self.index, backend = "syscall", "shard running");
        loop {
            let wait = wait_time(&self.relay);
            let ready = match self.sockets.poller.wait(&mut self.events, wait) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(shard = self.index, error = %e, "epoll_wait failed");
                    std::thread::sleep(Duration::from_millis(10));
                    0
                }
            };
            self.batch.stats_mut().wakeups += 1;
            let mut woken = false;
            for e in 0..ready {
                let key = self.events.key(e);
                if key == WAKE_TAG {
                    // Level-triggered: drained here, read below.
                    self.control.wake.drain();
                    woken = true;
                } else {
                    self.drain(key);
                }
            }
            if timer_due(&self.relay) {
                self.relay.handle_timeout(now(), &mut self.sockets);
            }
            // Every send of this turn has been flushed: closing is safe now.
            self.sockets.closing.clear();
            // Commands when woken; on an idle turn too, to notice a control
            // side that has gone away.
            if (woken || ready == 0)
                && read_commands(
                    &self.control,
                    self.index,
                    &mut self.relay,
                    self.batch.stats(),
                )
            {
                break;
            }
        }
        let allocations_at_exit = self.relay.allocation_count();
        self.relay.close_all(&mut self.sockets);
        self.batch.flush();
        self.sockets.closing.clear();
        self.sockets.relays.clear();
        tracing::debug!(shard = self.index, allocations_at_exit, "shard stopped");
        ShardReport::new(
            self.index,
            &self.relay,
            self.batch.stats(),
            allocations_at_exit,
        )
    }

    /// Reads datagrams from the socket tagged `key` and answers or forwards them.
    fn drain(&mut self, key: u64) {
        for _ in 0..MAX_BATCHES_PER_READY {
            // A relay socket closed earlier in this turn: its events are stale.
            let Some(fd) = socket(&self.listeners, &self.sockets.relays, key) else {
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
                if let Some(out) = dispatch(&mut self.relay, now, rx, &mut self.sockets) {
                    self.queue(i, out);
                }
            }
            self.batch.flush();
            if n < BATCH {
                break;
            }
        }
    }

    /// Queues the send caused by datagram `i`.
    fn queue(&mut self, i: usize, out: Out) {
        let fd = match &out.via {
            Via::Listener(idx) => self.listeners.get(*idx).map(|s| s.as_fd()),
            Via::Relay(token) => self.sockets.relays.get(&token.0).map(|s| s.as_fd()),
        };
        let Some(fd) = fd else {
            self.batch.stats_mut().tx_unroutable += 1;
            tracing::debug!(shard = self.index, via = ?out.via, "send from an unknown socket dropped");
            return;
        };
        let data = match out.bytes {
            Bytes::Rx(range) => TxData::Slot { slot: i, range },
            Bytes::Reply(len) => TxData::Reply { slot: i, len },
        };
        self.batch.queue(fd, out.dest, data);
    }
}

/// The socket tagged `tag`, while it exists.
fn socket<'a>(
    listeners: &'a [UdpSocket],
    relays: &'a RelayMap<UdpSocket>,
    tag: u64,
) -> Option<BorrowedFd<'a>> {
    if tag & LISTENER_TAG != 0 {
        let idx = (tag & !LISTENER_TAG) as usize;
        listeners.get(idx).map(|s| s.as_fd())
    } else {
        relays.get(&tag).map(|s| s.as_fd())
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
