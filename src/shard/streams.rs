//! A shard's stream connections (TCP and TLS on the client leg), the same
//! on both io backends.
//!
//! The shard's TCP listeners (one per stream listen address, each in an
//! SO_REUSEPORT group) and every connection they accept are watched by an
//! epoll instance of their own, which the backend watches in turn (a nested
//! epoll, or a poll from the io_uring). When it is readable, `poll` accepts,
//! reads, splits frames (`uturn_stream::Deframer`) and hands each frame to
//! the relay, in place in the read buffer whenever it lies there whole.
//! What the relay answers to the client is queued on the connection
//! (`SendQueue`, bounded, whole frames) and written once per turn by
//! `flush`; what it forwards to a peer leaves at once from the relay socket.
//!
//! A connection, its allocation and that allocation's relay socket all live
//! on the shard that accepted it. When the connection closes, for any
//! reason, its allocation is deleted (`Relay::connection_closed`).
//!
//! Limits: connections per node and per source (`ConnLedger`, shared), a
//! handshake deadline (TLS), a deadline for holding an allocation, and the
//! send queue per connection, beyond which frames to the client are dropped
//! and counted.

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rustls::{ServerConfig, ServerConnection};

use crate::io::syscall::{Events, Poller};
use crate::stream::proxy::{self, ProxyHeader};
use crate::stream::{ConnLedger, Deframer, Frame, Refused, SendQueue};
use crate::turn::{
    ConnId, Leg, Now, Payload, Relay, RelaySockets, RelayToken, Transport, Via, MAX_REPLY,
    PEER_HEADROOM, PEER_TAILROOM,
};
use uturn_stun::framing::MAX_FRAME_LEN;

/// Bytes read from a socket (or out of a TLS session) at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per ready connection per turn (fairness; epoll is level-triggered).
const READS_PER_EVENT: usize = 4;
/// Connections accepted per ready listener per turn.
const ACCEPTS_PER_EVENT: usize = 64;
/// Readiness events per look.
const EVENTS: usize = 256;
/// Plaintext handed to a TLS session at a time.
const TLS_CHUNK: usize = 16 * 1024;
/// Marks a listener's key in the stream poller.
const LISTENER_KEY: u64 = 1 << 63;
/// How often deadlines are checked.
const SWEEP: Duration = Duration::from_secs(1);

/// A stream listen socket and what its connections speak.
pub struct StreamListener {
    pub sock: TcpListener,
    pub tls: bool,
    /// Some: every connection starts with a PROXY v2 header, and only
    /// these source networks (the load balancers) may connect.
    pub proxy: Option<Arc<Vec<IpNet>>>,
}

/// Limits on one connection (restart-only).
#[derive(Clone, Debug)]
pub struct StreamLimits {
    /// A TLS connection must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// A connection without an allocation is closed this long after it was
    /// accepted (or after its handshake, or after its allocation ended).
    pub auth_timeout: Duration,
    /// Bytes waiting for one client at most; beyond, frames are dropped.
    pub send_queue: usize,
}

/// What a shard's stream side is built from.
pub struct StreamSpec {
    pub listeners: Vec<StreamListener>,
    pub limits: StreamLimits,
    pub ledger: Arc<ConnLedger>,
    /// The TLS configuration new connections start with (None: no TLS
    /// listener).
    pub tls: Option<Arc<ServerConfig>>,
}

impl StreamSpec {
    /// No stream listener.
    pub fn none() -> StreamSpec {
        StreamSpec {
            listeners: Vec::new(),
            limits: StreamLimits {
                handshake_timeout: Duration::from_secs(10),
                auth_timeout: Duration::from_secs(30),
                send_queue: MAX_FRAME_LEN,
            },
            ledger: Arc::new(ConnLedger::new(0, 0)),
            tls: None,
        }
    }
}

/// Why a connection closed (a metrics label each).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it (end of stream).
    ClientClosed,
    /// A read or write failed (reset, timeout of the kernel's own).
    Error,
    /// Bytes that are neither STUN nor ChannelData.
    InvalidFrame,
    /// A TLS alert, a bad record, a failed handshake.
    Tls,
    /// No valid PROXY v2 header where one was expected.
    Proxy,
    /// Over the per-source limit once the PROXY header named the source.
    SourceLimit,
    /// The TLS handshake took too long.
    HandshakeTimeout,
    /// No allocation in time.
    AuthTimeout,
    /// The server is stopping.
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 9] = [
        CloseReason::ClientClosed,
        CloseReason::Error,
        CloseReason::InvalidFrame,
        CloseReason::Tls,
        CloseReason::Proxy,
        CloseReason::SourceLimit,
        CloseReason::HandshakeTimeout,
        CloseReason::AuthTimeout,
        CloseReason::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::Error => "error",
            CloseReason::InvalidFrame => "invalid_frame",
            CloseReason::Tls => "tls_error",
            CloseReason::Proxy => "proxy_header",
            CloseReason::SourceLimit => "limit_per_source",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// A shard's stream counters; `[0]` is TCP, `[1]` TLS.
#[derive(Clone, Debug, Default)]
pub struct StreamStats {
    pub accepted: [u64; 2],
    /// Refused at accept: over the node's limit, over the source's limit.
    pub refused_total: [u64; 2],
    pub refused_per_source: [u64; 2],
    /// Refused at accept on a PROXY listener: not from a trusted network.
    pub refused_untrusted: [u64; 2],
    /// Closed, by transport and `CloseReason` (in `CloseReason::ALL` order).
    pub closed: [[u64; 9]; 2],
    /// Open now.
    pub open: [u64; 2],
    pub tls_handshakes_ok: u64,
    pub tls_handshakes_failed: u64,
    /// Frames to clients dropped because their send queue was full.
    pub tx_queue_full: u64,
    /// Frames from stream clients forwarded to peers, and those a relay
    /// socket refused.
    pub to_peer_sent: u64,
    pub to_peer_failed: u64,
}

/// The peer side a stream frame may need: the relay sockets (for the
/// relay's Allocate) and a way to send from one of them.
pub(super) trait PeerSockets: RelaySockets {
    /// Sends `bytes` to `to` from the relay socket of `token`. False when
    /// it could not (unknown socket, full buffer, error).
    fn send_to_peer(&mut self, token: RelayToken, to: SocketAddr, bytes: &[u8]) -> bool;
}

/// Where a connection is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the PROXY v2 header.
    Proxy,
    /// TLS handshake under way.
    Handshake,
    Open,
}

/// One client connection.
struct Conn {
    sock: TcpStream,
    /// Bumped each time the slot is reused, so a stale event is ignored.
    generation: u32,
    leg: Leg,
    /// The client's address: the TCP peer's, or the one its PROXY header
    /// carried.
    client: SocketAddr,
    /// The address counted against the per-source limit (None while the
    /// PROXY header is awaited).
    counted: Option<std::net::IpAddr>,
    tls: Option<Box<ServerConnection>>,
    phase: Phase,
    /// The PROXY header's bytes so far, while `phase` is `Proxy`.
    header: Vec<u8>,
    deframer: Deframer,
    out: SendQueue,
    /// When it closes unless it holds an allocation by then (None: it does).
    deadline: Option<Instant>,
    /// EPOLLOUT is asked for.
    watching_writes: bool,
    /// Listed in `Streams::dirty`.
    dirty: bool,
}

impl Conn {
    fn transport(&self) -> usize {
        usize::from(self.tls.is_some())
    }

    /// Output not yet on the socket (ours and the TLS session's).
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

/// A slot of the connection table.
struct Slot {
    conn: Option<Box<Conn>>,
    generation: u32,
}

/// The stream side of one shard.
pub(super) struct Streams {
    index: usize,
    poller: Poller,
    events: Events,
    listeners: Vec<StreamListener>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    limits: StreamLimits,
    ledger: Arc<ConnLedger>,
    tls: Option<Arc<ServerConfig>>,
    /// Read buffer: headroom, `READ_CHUNK`, tailroom.
    rbuf: Vec<u8>,
    /// A frame put together from several reads, laid out the same way.
    jbuf: Vec<u8>,
    scratch: Vec<u8>,
    stats: StreamStats,
    next_sweep: Option<Instant>,
}

fn key(id: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(id)
}

impl Streams {
    pub(super) fn new(index: usize, spec: StreamSpec) -> io::Result<Streams> {
        let poller = Poller::new()?;
        for (i, l) in spec.listeners.iter().enumerate() {
            poller.add(l.sock.as_fd(), LISTENER_KEY | i as u64)?;
        }
        Ok(Streams {
            index,
            poller,
            events: Events::with_capacity(EVENTS),
            listeners: spec.listeners,
            slots: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            limits: spec.limits,
            ledger: spec.ledger,
            tls: spec.tls,
            rbuf: vec![0; PEER_HEADROOM + READ_CHUNK + PEER_TAILROOM],
            jbuf: vec![0; PEER_HEADROOM + MAX_FRAME_LEN + PEER_TAILROOM],
            scratch: vec![0; MAX_REPLY],
            stats: StreamStats::default(),
            next_sweep: None,
        })
    }

    /// Whether this shard serves any stream listener.
    pub(super) fn is_active(&self) -> bool {
        !self.listeners.is_empty()
    }

    /// The descriptor the backend watches: readable when a listener or a
    /// connection is ready.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }

    pub(super) fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// New TLS connections use `config` from now on; open ones keep theirs.
    pub(super) fn set_tls(&mut self, config: Arc<ServerConfig>) {
        self.tls = Some(config);
    }

    /// When `sweep` next has something to do.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Accepts, reads and handles whatever is ready, without blocking.
    pub(super) fn poll(&mut self, relay: &mut Relay, sockets: &mut impl PeerSockets, now: Now) {
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
            let (id, generation) = (key as u32, (key >> 32) as u32);
            if self.live(id, generation).is_none() {
                continue;
            }
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

    /// Queues `bytes` (one whole frame) for the client of connection `id`;
    /// written by the next `flush`. A full queue drops it (counted).
    pub(super) fn send(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self
            .slots
            .get_mut(id.0 as usize)
            .and_then(|s| s.conn.as_deref_mut())
        else {
            return;
        };
        if !conn.out.push(bytes) {
            self.stats.tx_queue_full += 1;
            return;
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id.0);
        }
    }

    /// Writes what this turn queued, one write per connection.
    pub(super) fn flush(&mut self, relay: &mut Relay, sockets: &mut impl PeerSockets) {
        while let Some(id) = self.dirty.pop() {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            conn.dirty = false;
            if let Err(why) = self.write_out(id) {
                self.close(id, why, relay, sockets);
            }
        }
    }

    /// Checks deadlines: a connection past its handshake deadline, or
    /// without an allocation past its deadline, is closed.
    pub(super) fn sweep(&mut self, relay: &mut Relay, sockets: &mut impl PeerSockets, now: Now) {
        match self.next_sweep {
            Some(t) if now.at >= t => {}
            _ => return,
        }
        let mut expired = Vec::new();
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(conn) = slot.conn.as_deref_mut() else {
                continue;
            };
            if conn.phase == Phase::Open {
                if relay.has_allocation(now.at, conn.leg, conn.client) {
                    conn.deadline = None;
                } else if conn.deadline.is_none() {
                    conn.deadline = Some(now.at + self.limits.auth_timeout);
                }
            }
            if conn.deadline.is_some_and(|d| now.at >= d) {
                let why = match conn.phase {
                    Phase::Proxy | Phase::Handshake => CloseReason::HandshakeTimeout,
                    Phase::Open => CloseReason::AuthTimeout,
                };
                expired.push((id as u32, why));
            }
        }
        for (id, why) in expired {
            self.close(id, why, relay, sockets);
        }
        self.next_sweep = self.has_connections().then(|| now.at + SWEEP);
    }

    /// Closes every connection (shutdown), deleting their allocations.
    pub(super) fn close_all(&mut self, relay: &mut Relay, sockets: &mut impl PeerSockets) {
        for id in 0..self.slots.len() as u32 {
            if self.conn_mut(id).is_some() {
                self.close(id, CloseReason::Shutdown, relay, sockets);
            }
        }
    }

    fn has_connections(&self) -> bool {
        self.stats.open.iter().any(|&n| n > 0)
    }

    fn live(&self, id: u32, generation: u32) -> Option<&Conn> {
        let slot = self.slots.get(id as usize)?;
        slot.conn.as_deref().filter(|c| c.generation == generation)
    }

    fn conn_mut(&mut self, id: u32) -> Option<&mut Conn> {
        self.slots.get_mut(id as usize)?.conn.as_deref_mut()
    }

    fn accept(&mut self, listener: usize, now: Instant) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let Some(l) = self.listeners.get(listener) else {
                return;
            };
            let tls = l.tls;
            let proxied = l.proxy.clone();
            let t = usize::from(tls);
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
            let admitted = match &proxied {
                Some(trusted) => {
                    // SECURITY.md: a PROXY header is believed only from a
                    // configured load balancer; anyone else could name any
                    // source address.
                    if !trusted.iter().any(|n| n.contains(&from.ip())) {
                        self.stats.refused_untrusted[t] += 1;
                        tracing::debug!(
                            shard = self.index,
                            "PROXY listener: untrusted source refused"
                        );
                        continue;
                    }
                    // The per-source count waits for the header.
                    self.ledger.admit_total().map(|()| None)
                }
                None => self.ledger.admit(from.ip()).map(|()| Some(from.ip())),
            };
            let counted = match admitted {
                Ok(c) => c,
                Err(why) => {
                    match why {
                        Refused::Total => self.stats.refused_total[t] += 1,
                        Refused::PerSource => self.stats.refused_per_source[t] += 1,
                    }
                    tracing::debug!(
                        shard = self.index,
                        reason = why.label(),
                        "connection refused"
                    );
                    continue;
                }
            };
            let release = |ledger: &ConnLedger| {
                ledger.release_total();
                if let Some(ip) = counted {
                    ledger.release_source(ip);
                }
            };
            let session = match (tls, &self.tls) {
                (false, _) => None,
                (true, Some(cfg)) => match ServerConnection::new(Arc::clone(cfg)) {
                    Ok(s) => Some(Box::new(s)),
                    Err(e) => {
                        tracing::debug!(shard = self.index, error = %e, "TLS session refused");
                        release(&self.ledger);
                        continue;
                    }
                },
                (true, None) => {
                    release(&self.ledger);
                    continue;
                }
            };
            if let Err(e) = self.admit(sock, from, counted, session, now) {
                tracing::debug!(shard = self.index, error = %e, "connection setup failed");
                release(&self.ledger);
            }
        }
    }

    fn admit(
        &mut self,
        sock: TcpStream,
        from: SocketAddr,
        counted: Option<std::net::IpAddr>,
        tls: Option<Box<ServerConnection>>,
        now: Instant,
    ) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        // Media frames are small and latency-bound.
        sock.set_nodelay(true)?;
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.slots.len())
                    .map_err(|_| io::Error::other("connection table full"))?;
                self.slots.push(Slot {
                    conn: None,
                    generation: 0,
                });
                id
            }
        };
        let slot = &mut self.slots[id as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        if let Err(e) = self
            .poller
            .add_stream(sock.as_fd(), key(id, generation), false)
        {
            self.free.push(id);
            return Err(e);
        }
        let t = usize::from(tls.is_some());
        let (leg, phase, wait) = match (&tls, counted) {
            // A proxied connection's header comes first (counted is None).
            (_, None) => (
                if tls.is_some() {
                    Leg::Tls(ConnId(id))
                } else {
                    Leg::Tcp(ConnId(id))
                },
                Phase::Proxy,
                self.limits.handshake_timeout,
            ),
            (Some(_), Some(_)) => (
                Leg::Tls(ConnId(id)),
                Phase::Handshake,
                self.limits.handshake_timeout,
            ),
            (None, Some(_)) => (Leg::Tcp(ConnId(id)), Phase::Open, self.limits.auth_timeout),
        };
        self.slots[id as usize].conn = Some(Box::new(Conn {
            sock,
            generation,
            leg,
            client: from,
            counted,
            tls,
            phase,
            header: Vec::new(),
            deframer: Deframer::new(),
            out: SendQueue::new(self.limits.send_queue),
            deadline: Some(now + wait),
            watching_writes: false,
            dirty: false,
        }));
        self.stats.accepted[t] += 1;
        self.stats.open[t] += 1;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP);
        }
        Ok(())
    }

    /// Reads what connection `id` has and handles every whole frame.
    fn read(
        &mut self,
        id: u32,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
        now: Now,
    ) -> Result<(), CloseReason> {
        for _ in 0..READS_PER_EVENT {
            let Some(conn) = self.slots[id as usize].conn.as_deref_mut() else {
                return Ok(());
            };
            if conn.phase == Phase::Proxy {
                match self.read_proxy_header(id, relay, sockets, now)? {
                    true => continue,
                    false => return Ok(()),
                }
            }
            let Some(conn) = self.slots[id as usize].conn.as_deref_mut() else {
                return Ok(());
            };
            let more = if conn.tls.is_none() {
                let room = &mut self.rbuf[PEER_HEADROOM..PEER_HEADROOM + READ_CHUNK];
                let n = match conn.sock.read(room) {
                    Ok(0) => return Err(CloseReason::ClientClosed),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(CloseReason::Error),
                };
                self.frames(id, n, relay, sockets, now)?;
                n == READ_CHUNK
            } else {
                let (more, eof) = self.receive_records(id, now.at)?;
                // Every byte of plaintext the records held, before the
                // socket is read again (the session holds only so much).
                loop {
                    let Some(tls) = self.slots[id as usize]
                        .conn
                        .as_deref_mut()
                        .and_then(|c| c.tls.as_deref_mut())
                    else {
                        return Ok(());
                    };
                    let room = &mut self.rbuf[PEER_HEADROOM..PEER_HEADROOM + READ_CHUNK];
                    let n = match tls.reader().read(room) {
                        Ok(0) => return Err(CloseReason::ClientClosed),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // The stream was cut without a close_notify.
                        Err(_) => return Err(CloseReason::ClientClosed),
                    };
                    self.frames(id, n, relay, sockets, now)?;
                }
                if eof {
                    return Err(CloseReason::ClientClosed);
                }
                more
            };
            if !more {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads the PROXY v2 header of connection `id` (at most
    /// `proxy::MAX_HEADER_LEN` bytes are taken from the socket, so nothing
    /// after the header is read early). Once it is whole, the client's
    /// address is the one it carries, the per-source limit applies to it,
    /// and the connection goes on to its TLS handshake or its frames.
    /// Returns whether to read on.
    fn read_proxy_header(
        &mut self,
        id: u32,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
        now: Now,
    ) -> Result<bool, CloseReason> {
        let Some(conn) = self.slots[id as usize].conn.as_deref_mut() else {
            return Ok(false);
        };
        let want = match proxy::parse(&conn.header) {
            ProxyHeader::Incomplete { missing } => missing,
            _ => 1,
        };
        let start = conn.header.len();
        conn.header
            .resize(start + want.min(proxy::MAX_HEADER_LEN), 0);
        match conn.sock.read(&mut conn.header[start..]) {
            Ok(0) => return Err(CloseReason::ClientClosed),
            Ok(n) => conn.header.truncate(start + n),
            Err(e) => {
                conn.header.truncate(start);
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(false),
                    io::ErrorKind::Interrupted => Ok(true),
                    _ => Err(CloseReason::Error),
                };
            }
        }
        let (len, source) = match proxy::parse(&conn.header) {
            ProxyHeader::Incomplete { .. } => return Ok(true),
            ProxyHeader::Invalid(why) => {
                tracing::debug!(shard = self.index, reason = why.label(), "bad PROXY header");
                return Err(CloseReason::Proxy);
            }
            ProxyHeader::Done { len, source } => (len, source),
        };
        // Only what the header says was read: nothing of the stream yet.
        debug_assert_eq!(len, conn.header.len());
        conn.header = Vec::new();
        if let Some(source) = source {
            conn.client = SocketAddr::new(source.ip().to_canonical(), source.port());
        }
        let ip = conn.client.ip();
        if self.ledger.admit_source(ip).is_err() {
            return Err(CloseReason::SourceLimit);
        }
        conn.counted = Some(ip);
        if conn.tls.is_some() {
            conn.phase = Phase::Handshake;
        } else {
            conn.phase = Phase::Open;
            conn.deadline = Some(now.at + self.limits.auth_timeout);
        }
        let _ = (relay, sockets);
        Ok(true)
    }

    /// Reads TLS records from connection `id`'s socket into its session and
    /// processes them. Returns whether the socket may hold more, and whether
    /// it has ended.
    fn receive_records(&mut self, id: u32, now: Instant) -> Result<(bool, bool), CloseReason> {
        let Some(conn) = self.slots[id as usize].conn.as_deref_mut() else {
            return Ok((false, false));
        };
        let Some(tls) = conn.tls.as_deref_mut() else {
            return Ok((false, false));
        };
        let (more, eof) = match tls.read_tls(&mut conn.sock) {
            Ok(0) => (false, true),
            Ok(_) => (true, false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => (false, false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => (true, false),
            Err(_) => return Err(CloseReason::Error),
        };
        if let Err(e) = tls.process_new_packets() {
            tracing::debug!(shard = self.index, error = %e, "TLS error");
            // The alert the session queued for the client goes if it can.
            let _ = tls.write_tls(&mut conn.sock);
            return Err(CloseReason::Tls);
        }
        if conn.phase == Phase::Handshake && !tls.is_handshaking() {
            conn.phase = Phase::Open;
            conn.deadline = Some(now + self.limits.auth_timeout);
            self.stats.tls_handshakes_ok += 1;
        }
        if tls.wants_write() && !conn.dirty {
            // Handshake messages, alerts, key updates: out with this turn.
            conn.dirty = true;
            self.dirty.push(id);
        }
        Ok((more, eof))
    }

    /// Handles the frames in the `n` bytes just read into `rbuf`.
    fn frames(
        &mut self,
        id: u32,
        n: usize,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
        now: Now,
    ) -> Result<(), CloseReason> {
        let Streams {
            slots,
            rbuf,
            jbuf,
            scratch,
            stats,
            dirty,
            ..
        } = self;
        let Some(conn) = slots[id as usize].conn.as_deref_mut() else {
            return Ok(());
        };
        let data = &rbuf[..PEER_HEADROOM + n];
        let mut pos = PEER_HEADROOM;
        loop {
            // The frame in a buffer laid out for the relay: the slice starts
            // `PEER_HEADROOM` bytes before it.
            let (buf, len): (&[u8], usize) = match conn.deframer.next(data, &mut pos) {
                Frame::InPlace(range, _) => (&data[range.start - PEER_HEADROOM..], range.len()),
                Frame::Joined(bytes, _) => {
                    let len = bytes.len();
                    jbuf[PEER_HEADROOM..PEER_HEADROOM + len].copy_from_slice(bytes);
                    (&jbuf[..], len)
                }
                Frame::Done => return Ok(()),
                Frame::Invalid(_) => return Err(CloseReason::InvalidFrame),
            };
            let Some(t) =
                relay.handle_client(now, conn.leg, conn.client, buf, len, scratch, sockets)
            else {
                continue;
            };
            match (t.via, t.payload) {
                (Via::Relay(token), Payload::Rx(range)) => {
                    let ok = buf
                        .get(range)
                        .is_some_and(|b| sockets.send_to_peer(token, t.to, b));
                    if ok {
                        stats.to_peer_sent += 1;
                    } else {
                        stats.to_peer_failed += 1;
                    }
                }
                (Via::Stream(_), Payload::Reply(r)) => {
                    // An answer goes back on this connection, whole.
                    if !conn.out.push(&scratch[..r]) {
                        stats.tx_queue_full += 1;
                    } else if !conn.dirty {
                        conn.dirty = true;
                        dirty.push(id);
                    }
                }
                _ => {}
            }
        }
    }

    /// Writes connection `id`'s queued bytes until the socket is full, and
    /// asks for writability only while something waits.
    fn write_out(&mut self, id: u32) -> Result<(), CloseReason> {
        let Some(conn) = self.slots[id as usize].conn.as_deref_mut() else {
            return Ok(());
        };
        match conn.tls.as_deref_mut() {
            None => write_plain(&mut conn.sock, &mut conn.out)?,
            Some(tls) => write_tls(tls, &mut conn.sock, &mut conn.out)?,
        }
        let want = conn.has_output();
        if want != conn.watching_writes {
            let k = key(id, conn.generation);
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
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        let Some(mut conn) = slot.conn.take() else {
            return;
        };
        if let Err(e) = self.poller.delete(conn.sock.as_fd()) {
            tracing::debug!(shard = self.index, error = %e, "epoll delete failed");
        }
        if matches!(
            why,
            CloseReason::ClientClosed | CloseReason::Shutdown | CloseReason::AuthTimeout
        ) {
            // A client that half-closed after its last request (a Refresh
            // to 0, say) still gets the answer, as far as the socket takes
            // it at once; then, over TLS, a close_notify.
            let Conn { sock, tls, out, .. } = &mut *conn;
            let _ = match tls.as_deref_mut() {
                None => write_plain(sock, out),
                Some(tls) => write_tls(tls, sock, out).map(|()| {
                    tls.send_close_notify();
                    let _ = tls.write_tls(sock);
                }),
            };
        }
        if conn.tls.is_some() && conn.phase != Phase::Open {
            // Whatever ended it: an alert, a timeout, a cut.
            self.stats.tls_handshakes_failed += 1;
        }
        relay.connection_closed(conn.leg, conn.client, sockets);
        self.ledger.release_total();
        if let Some(ip) = conn.counted {
            self.ledger.release_source(ip);
        }
        let t = conn.transport();
        self.stats.open[t] = self.stats.open[t].saturating_sub(1);
        let r = CloseReason::ALL.iter().position(|&r| r == why).unwrap_or(0);
        self.stats.closed[t][r] += 1;
        tracing::debug!(
            shard = self.index,
            transport = conn.leg.transport().label(),
            reason = why.label(),
            unsent = conn.out.len(),
            "connection closed"
        );
        self.free.push(id);
    }
}

/// Writes a plain connection's queue, in at most two pieces per call.
fn write_plain(sock: &mut TcpStream, out: &mut SendQueue) -> Result<(), CloseReason> {
    while !out.is_empty() {
        let (a, b) = out.front();
        let written = match sock.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(CloseReason::Error),
        };
        if written == 0 {
            return Err(CloseReason::Error);
        }
        out.consume(written);
    }
    Ok(())
}

/// Moves a TLS connection's queue through its session onto the socket. The
/// session gets more plaintext only once its records are all written, so it
/// holds at most one chunk beyond our bounded queue.
fn write_tls(
    tls: &mut ServerConnection,
    sock: &mut TcpStream,
    out: &mut SendQueue,
) -> Result<(), CloseReason> {
    loop {
        while tls.wants_write() {
            match tls.write_tls(sock) {
                Ok(0) => return Err(CloseReason::Error),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(CloseReason::Error),
            }
        }
        if out.is_empty() || tls.is_handshaking() {
            return Ok(());
        }
        let (a, _) = out.front();
        let chunk = &a[..a.len().min(TLS_CHUNK)];
        match tls.writer().write(chunk) {
            Ok(0) | Err(_) => return Err(CloseReason::Tls),
            Ok(n) => out.consume(n),
        }
    }
}

/// The transport label of stats index `t`.
pub fn transport_of(t: usize) -> Transport {
    if t == 0 {
        Transport::Tcp
    } else {
        Transport::Tls
    }
}
