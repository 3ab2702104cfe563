//! Streams through readiness: the shard's TCP listeners and connections
//! are watched by an epoll instance of their own, which the backend watches
//! in turn. When it is readable, `poll` accepts, reads into one buffer laid
//! out for the relay and hands the bytes to the connection logic; what that
//! queues for clients is written once per turn by `flush`, and writability
//! is asked for only while a socket is full.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::conn::{Closed, Conns};
use super::{CloseReason, PeerSockets, StreamListener, StreamSpec, StreamStats};
use crate::io::syscall::{Events, Poller};
use crate::shard::tcp::DataConn;
use crate::turn::ConnectionId;
use crate::turn::{ConnId, Now, Relay, PEER_HEADROOM, PEER_TAILROOM};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per ready connection per turn (fairness; epoll is level-triggered).
const READS_PER_EVENT: usize = 4;
/// Connections accepted per ready listener per turn.
const ACCEPTS_PER_EVENT: usize = 64;
/// Readiness events per look.
const EVENTS: usize = 256;
/// Marks a listener's key in the stream poller.
const LISTENER_KEY: u64 = 1 << 63;

/// A connection's socket and whether its writability is watched.
pub(super) struct EpollConn {
    sock: TcpStream,
    watching_writes: bool,
    /// Out of the poller while its ConnectionBind waits for another
    /// shard's answer (`read`).
    unwatched: bool,
}

impl Write for EpollConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.sock.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The stream side of one shard, through epoll.
pub(in crate::shard) struct EpollStreams {
    index: usize,
    poller: Poller,
    events: Events,
    listeners: Vec<StreamListener>,
    conns: Conns<EpollConn>,
    /// Read buffer: headroom, `READ_CHUNK`, tailroom.
    rbuf: Vec<u8>,
    /// Data connections bound this turn, for the TCP relay.
    detached: Vec<(ConnectionId, DataConn)>,
}

impl EpollStreams {
    pub(in crate::shard) fn new(index: usize, spec: StreamSpec) -> io::Result<EpollStreams> {
        let poller = Poller::new()?;
        for (i, l) in spec.listeners.iter().enumerate() {
            poller.add(l.sock.as_fd(), LISTENER_KEY | i as u64)?;
        }
        Ok(EpollStreams {
            index,
            poller,
            events: Events::with_capacity(EVENTS),
            listeners: spec.listeners,
            conns: Conns::new(index, spec.limits, spec.ledger, spec.tls),
            rbuf: vec![0; PEER_HEADROOM + READ_CHUNK + PEER_TAILROOM],
            detached: Vec::new(),
        })
    }

    /// Whether this shard serves any stream listener.
    pub(in crate::shard) fn is_active(&self) -> bool {
        !self.listeners.is_empty()
    }

    /// The descriptor the backend watches: readable when a listener or a
    /// connection is ready.
    pub(in crate::shard) fn fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }

    pub(in crate::shard) fn stats(&self) -> &StreamStats {
        self.conns.stats()
    }

    pub(in crate::shard) fn set_tls(&mut self, config: std::sync::Arc<rustls::ServerConfig>) {
        self.conns.set_tls(config);
    }

    pub(in crate::shard) fn next_timer(&self) -> Option<Instant> {
        self.conns.next_timer()
    }

    /// Accepts, reads and handles whatever is ready, without blocking.
    pub(in crate::shard) fn poll(
        &mut self,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
        now: Now,
    ) {
        let n = match self.poller.wait(&mut self.events, Duration::ZERO) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(shard = self.index, error = %e, "stream poll failed");
                return;
            }
        };
        for e in 0..n {
            let (key, ready) = (self.events.key(e), self.events.readiness(e));
            if key & LISTENER_KEY != 0 {
                self.accept((key & !LISTENER_KEY) as usize, now.at);
                continue;
            }
            let Some(id) = self.conns.live(key) else {
                continue;
            };
            if ready.writable {
                if let Err(why) = self.write_out(id) {
                    self.close(id, why, relay, sockets);
                    continue;
                }
            }
            if ready.readable {
                if let Err(why) = self.read(id, relay, sockets, now) {
                    self.close(id, why, relay, sockets);
                }
            }
        }
        self.flush(relay, sockets);
    }

    /// Queues `bytes` (one whole frame) for the client of connection `id`.
    pub(in crate::shard) fn send(&mut self, id: ConnId, bytes: &[u8]) {
        self.conns.send(id, bytes);
    }

    /// Writes what this turn queued, one write per connection; a data
    /// connection whose ConnectionBind answer has gone leaves.
    pub(in crate::shard) fn flush(&mut self, relay: &mut Relay, sockets: &mut impl PeerSockets) {
        while let Some(id) = self.conns.next_dirty() {
            if let Err(why) = self.write_out(id) {
                self.close(id, why, relay, sockets);
                continue;
            }
            if self.conns.bound_and_sent(id).is_some() {
                self.detach(id);
            }
        }
    }

    /// The data connections bound since the last call.
    pub(in crate::shard) fn take_detached(&mut self) -> Vec<(ConnectionId, DataConn)> {
        std::mem::take(&mut self.detached)
    }

    fn detach(&mut self, id: u32) {
        let Some(d) = self.conns.detach(id) else {
            return;
        };
        let _ = self.poller.delete(d.io.sock.as_fd());
        self.detached.push(d.into_data(|io| io.sock));
    }

    /// ConnectionBinds for other shards made since the last call.
    pub(in crate::shard) fn take_remote(&mut self) -> super::Remote {
        self.conns.take_remote()
    }

    /// Another shard's answer to a ConnectionBind (see `Conns::answer_bind`).
    pub(in crate::shard) fn answer_bind(
        &mut self,
        key: u64,
        reply: &[u8],
        id: Option<ConnectionId>,
    ) -> bool {
        if !self.conns.answer_bind(key, reply, id) {
            return false;
        }
        // Refused (a 401 or 438, say): the client may try again on it.
        if let (None, Some(slot)) = (id, self.conns.live(key)) {
            let Some(conn) = self.conns.io_mut(slot) else {
                return true;
            };
            if conn.unwatched
                && self
                    .poller
                    .add_stream(conn.sock.as_fd(), key, conn.watching_writes)
                    .is_ok()
            {
                conn.unwatched = false;
            }
        }
        true
    }

    /// Closes the connections past their deadlines.
    pub(in crate::shard) fn sweep(
        &mut self,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
        now: Now,
    ) {
        for (id, why) in self.conns.expired(relay, now) {
            self.close(id, why, relay, sockets);
        }
    }

    /// Closes every connection (shutdown), deleting their allocations.
    pub(in crate::shard) fn close_all(
        &mut self,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
    ) {
        for id in self.conns.ids() {
            self.close(id, CloseReason::Shutdown, relay, sockets);
        }
    }

    fn accept(&mut self, listener: usize, now: Instant) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let Some(l) = self.listeners.get(listener) else {
                return;
            };
            let (sock, from) = match l.sock.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and the like: the connection waits in the
                    // backlog; try again next turn.
                    tracing::debug!(shard = self.index, error = %e, "accept failed");
                    return;
                }
            };
            let Some(admission) = self.conns.admit(l.tls, l.proxy.as_ref(), from) else {
                continue;
            };
            let poller = &self.poller;
            let added = self.conns.insert(admission, now, |key| {
                sock.set_nonblocking(true)?;
                // Media frames are small and latency-bound.
                sock.set_nodelay(true)?;
                poller.add_stream(sock.as_fd(), key, false)?;
                Ok(EpollConn {
                    sock,
                    watching_writes: false,
                    unwatched: false,
                })
            });
            if let Err(e) = added {
                tracing::debug!(shard = self.index, error = %e, "connection setup failed");
            }
        }
    }

    /// Reads what connection `id` has and hands it on.
    fn read(
        &mut self,
        id: u32,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
        now: Now,
    ) -> Result<(), CloseReason> {
        for _ in 0..READS_PER_EVENT {
            // A ConnectionBind may have come in the last read: what follows
            // it stays in the kernel for the pipe (RFC 6062 data
            // connection), but for what that read held already.
            let (bound, awaiting) = (self.conns.is_bound(id), self.conns.awaits_bind(id));
            let Some(conn) = self.conns.io_mut(id) else {
                return Ok(());
            };
            if bound {
                // It leaves at this turn's flush.
                return Ok(());
            }
            if awaiting {
                // Until another shard answers: out of the poller, so that
                // readiness is not reported again and again meanwhile
                // (`answer_bind` puts it back if the bind failed).
                if !conn.unwatched && self.poller.delete(conn.sock.as_fd()).is_ok() {
                    conn.unwatched = true;
                }
                return Ok(());
            }
            let room = &mut self.rbuf[PEER_HEADROOM..PEER_HEADROOM + READ_CHUNK];
            let n = match conn.sock.read(room) {
                Ok(0) => return Err(CloseReason::ClientClosed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(CloseReason::Error),
            };
            self.conns
                .received(id, &self.rbuf, n, relay, sockets, now)?;
            if n < READ_CHUNK {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Writes connection `id`'s output until the socket is full, and asks
    /// for writability only while something waits.
    fn write_out(&mut self, id: u32) -> Result<(), CloseReason> {
        let want = self.conns.write_out(id)?;
        let Some(k) = self.conns.key_of(id) else {
            return Ok(());
        };
        let Some(conn) = self.conns.io_mut(id) else {
            return Ok(());
        };
        if conn.unwatched {
            // Out of the poller (`read`); back in only to finish a write.
            if want {
                if self.poller.add_stream(conn.sock.as_fd(), k, true).is_err() {
                    return Err(CloseReason::Error);
                }
                conn.unwatched = false;
                conn.watching_writes = true;
            }
            return Ok(());
        }
        if want != conn.watching_writes {
            if self
                .poller
                .modify_stream(conn.sock.as_fd(), k, want)
                .is_err()
            {
                return Err(CloseReason::Error);
            }
            conn.watching_writes = want;
        }
        Ok(())
    }

    fn close(
        &mut self,
        id: u32,
        why: CloseReason,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
    ) {
        let Some(Closed { io, last }) = self.conns.close(id, why, relay, sockets) else {
            return;
        };
        let EpollConn { mut sock, .. } = io;
        if let Err(e) = self.poller.delete(sock.as_fd()) {
            tracing::debug!(shard = self.index, error = %e, "epoll delete failed");
        }
        // As much as the socket takes at once.
        let mut rest = &last[..];
        while !rest.is_empty() {
            match sock.write(rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = &rest[n..],
            }
        }
    }
}
