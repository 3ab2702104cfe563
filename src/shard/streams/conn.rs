//! A stream connection's life, whatever carries its bytes: admission,
//! the PROXY header, TLS, frames, the bounded send queue, deadlines,
//! metrics and the close. One implementation for both plumbings (epoll
//! readiness with reads and writes, or io_uring completions); neither ever
//! decides anything about a connection.
//!
//! Sans-IO: bytes come in as they were received, in a buffer laid out for
//! the relay (`PEER_HEADROOM` free bytes, the bytes, more after them), and
//! go out through a `Write` (the socket itself, or a send buffer). `S` is
//! what the plumbing keeps per connection (a socket, a ring slot).

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use rustls::{ServerConfig, ServerConnection};

mod frames;

use frames::FrameOut;

use super::{CloseReason, PeerSockets, StreamLimits, StreamStats, SWEEP};
use crate::shard::tcp::DataConn;
use crate::stream::proxy::{self, ProxyHeader};
use crate::stream::{ConnLedger, Deframer, Refused, SendQueue};
use crate::turn::{
    ConnId, ConnectionId, Leg, Now, Relay, Transport, MAX_REPLY, PEER_HEADROOM, PEER_TAILROOM,
};
use uturn_stun::framing::MAX_FRAME_LEN;

/// Plaintext taken out of a TLS session at a time.
const PLAIN_CHUNK: usize = 16 * 1024;
/// Plaintext handed to a TLS session at a time.
const TLS_CHUNK: usize = 16 * 1024;

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
struct Conn<S> {
    /// The plumbing's handle (a socket, a ring slot).
    io: S,
    /// Bumped each time the slot is reused, so a stale event is ignored.
    generation: u32,
    leg: Leg,
    /// The client's address: the TCP peer's, or the one its PROXY header
    /// carried.
    client: SocketAddr,
    /// The address counted against the per-source limit (None while the
    /// PROXY header is awaited).
    counted: Option<IpAddr>,
    tls: Option<Box<ServerConnection>>,
    phase: Phase,
    /// The PROXY header's bytes so far, while `phase` is `Proxy`.
    header: Vec<u8>,
    deframer: Deframer,
    out: SendQueue,
    /// When it closes unless it holds an allocation by then (None: it does).
    deadline: Option<Instant>,
    /// Listed in `Conns::dirty`.
    dirty: bool,
    /// Bound as a data connection to this peer connection (RFC 6062): it
    /// leaves the stream side once its answer has been handed on.
    data_bind: Option<ConnectionId>,
    /// Its ConnectionBind went to another shard: what it sends is kept
    /// (`early`) until the answer comes (`answer_bind`).
    awaiting_bind: bool,
    /// A data connection's bytes after its ConnectionBind, sent before the
    /// answer (RFC 6062 §5.4 says to wait; some clients do not): for the
    /// peer, first thing once bound. At most `EARLY_DATA_LIMIT`.
    early: Vec<u8>,
    /// The client ended its side while its ConnectionBind waited for
    /// another shard: if that shard refuses it, it closes once answered.
    ended: bool,
}

/// What a data connection may send after its ConnectionBind and before the
/// answer has gone: the size of the pipe's buffer it goes through.
pub(in crate::shard) const EARLY_DATA_LIMIT: usize = 64 * 1024;

/// What this shard's stream side has for the shards that own peer
/// connections (RFC 6062).
#[derive(Default)]
pub(in crate::shard) struct Remote {
    /// ConnectionBinds for another shard to decide.
    pub(in crate::shard) binds: Vec<RemoteBind>,
    /// Peer connections whose data connection closed after it was bound
    /// and before it could be handed over: the owner closes them.
    pub(in crate::shard) unbound: Vec<ConnectionId>,
}

/// A ConnectionBind for the shard that owns its CONNECTION-ID.
pub(in crate::shard) struct RemoteBind {
    pub(in crate::shard) owner: usize,
    pub(in crate::shard) conn: u64,
    pub(in crate::shard) transport: Transport,
    pub(in crate::shard) msg: Vec<u8>,
}

impl<S> Conn<S> {
    fn transport(&self) -> usize {
        usize::from(self.tls.is_some())
    }

    /// Output not yet handed on (ours and the TLS session's).
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

/// A slot of the connection table.
struct Slot<S> {
    conn: Option<Box<Conn<S>>>,
    generation: u32,
}

/// A connection let in at accept: counted, its TLS session made. Give it
/// to `insert`, or to `refuse` if its socket could not be set up.
pub(super) struct Admission {
    from: SocketAddr,
    counted: Option<IpAddr>,
    tls: Option<Box<ServerConnection>>,
    tls_listener: bool,
}

/// What is left of a closed connection for its plumbing: its handle, and
/// the bytes that should still go (answers queued for a client that closed
/// its side, a TLS alert or `close_notify`), as far as the socket takes
/// them at once.
pub(super) struct Closed<S> {
    pub(super) io: S,
    pub(super) last: Vec<u8>,
}

/// A data connection taken out by `detach`.
pub(super) struct Detached<S> {
    pub(super) io: S,
    pub(super) tls: Option<Box<ServerConnection>>,
    pub(super) counted: Option<IpAddr>,
    pub(super) ledger: Arc<ConnLedger>,
    pub(super) id: ConnectionId,
    /// Bytes for the peer that came before the answer went (`Conn::early`).
    pub(super) early: Vec<u8>,
    /// More came than `EARLY_DATA_LIMIT`, or TLS records its session
    /// refused: closed rather than relayed with a hole.
    pub(super) refused: bool,
}

impl<S> Detached<S> {
    /// Keeps `bytes`, received from the client after the connection left
    /// the stream side (the ring's last receives): plaintext for the peer,
    /// through the TLS session if it has one.
    pub(super) fn received(&mut self, bytes: &[u8]) {
        let Some(mut tls) = self.tls.take() else {
            self.keep(bytes);
            return;
        };
        let mut records = bytes;
        while !records.is_empty() && !self.refused {
            let read = tls.read_tls(&mut records);
            if !matches!(read, Ok(1..)) || tls.process_new_packets().is_err() {
                self.refused = true;
                break;
            }
            let mut plain = [0u8; 4096];
            // Until nothing more now, or the client's close_notify (which
            // the session remembers for the pipe).
            while let Ok(n @ 1..) = tls.reader().read(&mut plain) {
                self.keep(&plain[..n]);
            }
        }
        self.tls = Some(tls);
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.early.len() + bytes.len() > EARLY_DATA_LIMIT {
            self.refused = true;
        } else {
            self.early.extend_from_slice(bytes);
        }
    }

    /// The data connection, over the socket `sock` makes of the handle.
    pub(super) fn into_data(
        self,
        sock: impl FnOnce(S) -> std::net::TcpStream,
    ) -> (ConnectionId, DataConn) {
        (
            self.id,
            DataConn {
                sock: sock(self.io),
                ledger: self.ledger,
                tls: self.tls,
                counted: self.counted,
                early: self.early,
                early_refused: self.refused,
            },
        )
    }
}

/// A connection's key: its slot and the slot's generation.
pub(super) fn key(id: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(id)
}

/// The slot and generation a key names.
pub(super) fn unkey(key: u64) -> (u32, u32) {
    (key as u32, (key >> 32) as u32)
}

/// Every connection of one shard's stream side.
pub(super) struct Conns<S> {
    index: usize,
    slots: Vec<Slot<S>>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    limits: StreamLimits,
    ledger: Arc<ConnLedger>,
    tls: Option<Arc<ServerConfig>>,
    /// TLS plaintext, laid out for the relay: headroom, `PLAIN_CHUNK`,
    /// tailroom.
    plain: Vec<u8>,
    /// A frame put together from several receives, laid out the same way.
    jbuf: Vec<u8>,
    scratch: Vec<u8>,
    stats: StreamStats,
    next_sweep: Option<Instant>,
    /// For the shards that own peer connections, made this turn.
    remote: Remote,
}

impl<S> Conns<S> {
    pub(super) fn new(
        index: usize,
        limits: StreamLimits,
        ledger: Arc<ConnLedger>,
        tls: Option<Arc<ServerConfig>>,
    ) -> Conns<S> {
        Conns {
            index,
            slots: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            limits,
            ledger,
            tls,
            plain: vec![0; PEER_HEADROOM + PLAIN_CHUNK + PEER_TAILROOM],
            jbuf: vec![0; PEER_HEADROOM + MAX_FRAME_LEN + PEER_TAILROOM],
            scratch: vec![0; MAX_REPLY],
            stats: StreamStats::default(),
            next_sweep: None,
            remote: Remote::default(),
        }
    }

    pub(super) fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// New TLS connections use `config` from now on; open ones keep theirs.
    pub(super) fn set_tls(&mut self, config: Arc<ServerConfig>) {
        self.tls = Some(config);
    }

    /// When `expired` next has something to do.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.next_sweep
    }

    fn has_connections(&self) -> bool {
        self.stats.open.iter().any(|&n| n > 0)
    }

    fn conn_mut(&mut self, id: u32) -> Option<&mut Conn<S>> {
        self.slots.get_mut(id as usize)?.conn.as_deref_mut()
    }

    /// The connection a key names, if it is still that one.
    pub(super) fn live(&self, key: u64) -> Option<u32> {
        let (id, generation) = unkey(key);
        let slot = self.slots.get(id as usize)?;
        slot.conn
            .as_deref()
            .filter(|c| c.generation == generation)
            .map(|_| id)
    }

    /// The key of connection `id`.
    pub(super) fn key_of(&self, id: u32) -> Option<u64> {
        let slot = self.slots.get(id as usize)?;
        slot.conn.as_deref().map(|c| key(id, c.generation))
    }

    /// The plumbing's handle of connection `id`.
    pub(super) fn io(&self, id: u32) -> Option<&S> {
        self.slots.get(id as usize)?.conn.as_deref().map(|c| &c.io)
    }

    pub(super) fn io_mut(&mut self, id: u32) -> Option<&mut S> {
        self.conn_mut(id).map(|c| &mut c.io)
    }

    /// Every open connection.
    pub(super) fn ids(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&id| self.slots[id as usize].conn.is_some())
            .collect()
    }

    /// Decides on a connection from `from` accepted on a listener (`tls`,
    /// and `proxy`: the load balancers allowed on a PROXY listener). None
    /// when refused (counted).
    pub(super) fn admit(
        &mut self,
        tls: bool,
        proxy: Option<&Arc<Vec<IpNet>>>,
        from: SocketAddr,
    ) -> Option<Admission> {
        let t = usize::from(tls);
        let admitted = match proxy {
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
                    return None;
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
                return None;
            }
        };
        let session = match (tls, &self.tls) {
            (false, _) => None,
            (true, Some(cfg)) => match ServerConnection::new(Arc::clone(cfg)) {
                Ok(s) => Some(Box::new(s)),
                Err(e) => {
                    tracing::debug!(shard = self.index, error = %e, "TLS session refused");
                    self.release(counted);
                    return None;
                }
            },
            (true, None) => {
                self.release(counted);
                return None;
            }
        };
        Some(Admission {
            from,
            counted,
            tls: session,
            tls_listener: tls,
        })
    }

    /// An admitted connection whose socket could not be set up.
    pub(super) fn refuse(&mut self, a: Admission) {
        self.release(a.counted);
    }

    fn release(&self, counted: Option<IpAddr>) {
        self.ledger.release_total();
        if let Some(ip) = counted {
            self.ledger.release_source(ip);
        }
    }

    /// Adds an admitted connection; `register` sets its socket up under
    /// the connection's key and returns the plumbing's handle. Returns the
    /// connection's key.
    pub(super) fn insert(
        &mut self,
        a: Admission,
        now: Instant,
        register: impl FnOnce(u64) -> io::Result<S>,
    ) -> io::Result<u64> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => match u32::try_from(self.slots.len()) {
                Ok(id) => {
                    self.slots.push(Slot {
                        conn: None,
                        generation: 0,
                    });
                    id
                }
                Err(_) => {
                    self.refuse(a);
                    return Err(io::Error::other("connection table full"));
                }
            },
        };
        let slot = &mut self.slots[id as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        let k = key(id, generation);
        let io = match register(k) {
            Ok(io) => io,
            Err(e) => {
                self.free.push(id);
                self.refuse(a);
                return Err(e);
            }
        };
        let Admission {
            from,
            counted,
            tls,
            tls_listener,
        } = a;
        let t = usize::from(tls_listener);
        let conn_id = ConnId(id);
        let leg = if tls_listener {
            Leg::Tls(conn_id)
        } else {
            Leg::Tcp(conn_id)
        };
        let (phase, wait) = match (tls_listener, counted) {
            // A proxied connection's header comes first (counted is None).
            (_, None) => (Phase::Proxy, self.limits.handshake_timeout),
            (true, Some(_)) => (Phase::Handshake, self.limits.handshake_timeout),
            (false, Some(_)) => (Phase::Open, self.limits.auth_timeout),
        };
        self.slots[id as usize].conn = Some(Box::new(Conn {
            io,
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
            dirty: false,
            data_bind: None,
            awaiting_bind: false,
            early: Vec::new(),
            ended: false,
        }));
        self.stats.accepted[t] += 1;
        self.stats.open[t] += 1;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP);
        }
        Ok(k)
    }

    /// Handles `n` bytes received on connection `id`, at
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + n]`: the PROXY header, TLS
    /// records, frames. Frames that lie whole in `buf` go to the relay in
    /// place. An error says why the connection must close.
    pub(super) fn received(
        &mut self,
        id: u32,
        buf: &[u8],
        n: usize,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
        now: Now,
    ) -> Result<(), CloseReason> {
        let end = PEER_HEADROOM.saturating_add(n).min(buf.len());
        let Conns {
            index,
            slots,
            dirty,
            limits,
            ledger,
            plain,
            jbuf,
            scratch,
            stats,
            remote,
            ..
        } = self;
        let Some(conn) = slots
            .get_mut(id as usize)
            .and_then(|s| s.conn.as_deref_mut())
        else {
            return Ok(());
        };
        let mut start = PEER_HEADROOM;
        if conn.phase == Phase::Proxy {
            start += proxy_header(conn, &buf[start..end], ledger, limits, *index, now.at)?;
            if conn.phase == Phase::Proxy {
                return Ok(());
            }
        }
        let mut out = FrameOut {
            id,
            shard: *index,
            remote: &mut remote.binds,
            jbuf,
            scratch,
            stats,
            dirty,
        };
        if conn.tls.is_none() {
            return out.frames(conn, &buf[..end], start, relay, sockets, now);
        }
        let mut records = &buf[start..end];
        loop {
            let Some(tls) = conn.tls.as_deref_mut() else {
                return Ok(());
            };
            if !records.is_empty() {
                if let Err(e) = tls.read_tls(&mut records) {
                    tracing::debug!(shard = *index, error = %e, "TLS records refused");
                    return Err(CloseReason::Tls);
                }
            }
            if let Err(e) = tls.process_new_packets() {
                tracing::debug!(shard = *index, error = %e, "TLS error");
                // The alert the session queued goes with the close.
                return Err(CloseReason::Tls);
            }
            if conn.phase == Phase::Handshake && !tls.is_handshaking() {
                conn.phase = Phase::Open;
                conn.deadline = Some(now.at + limits.auth_timeout);
                out.stats.tls_handshakes_ok += 1;
            }
            if tls.wants_write() {
                // Handshake messages, alerts, key updates: out this turn.
                out.mark(conn);
            }
            // Every byte of plaintext the records held, before more records
            // (the session holds only so much).
            loop {
                let Some(tls) = conn.tls.as_deref_mut() else {
                    return Ok(());
                };
                let room = &mut plain[PEER_HEADROOM..PEER_HEADROOM + PLAIN_CHUNK];
                let got = match tls.reader().read(room) {
                    // A data connection's close_notify (bound, or waiting
                    // for its answer): the session remembers it, and the
                    // pipe passes the end on.
                    Ok(0) if conn.data_bind.is_some() || conn.awaiting_bind => break,
                    // A close_notify.
                    Ok(0) => return Err(CloseReason::ClientClosed),
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The stream was cut without a close_notify.
                    Err(_) => return Err(CloseReason::ClientClosed),
                };
                let data = &plain[..PEER_HEADROOM + got];
                out.frames(conn, data, PEER_HEADROOM, relay, sockets, now)?;
            }
            if records.is_empty() {
                return Ok(());
            }
        }
    }

    /// Queues `bytes` (one whole frame) for the client of connection `id`;
    /// handed to the plumbing by the next flush. A full queue drops it
    /// (counted).
    pub(super) fn send(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self.conn_mut(id.0) else {
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

    /// The next connection with output to hand on this turn.
    pub(super) fn next_dirty(&mut self) -> Option<u32> {
        while let Some(id) = self.dirty.pop() {
            if let Some(conn) = self.conn_mut(id) {
                conn.dirty = false;
                return Some(id);
            }
        }
        None
    }

    /// Lists connection `id` for the next flush (its send completed: more
    /// may wait).
    pub(super) fn mark_dirty(&mut self, id: u32) {
        let Some(conn) = self
            .slots
            .get_mut(id as usize)
            .and_then(|s| s.conn.as_deref_mut())
        else {
            return;
        };
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Moves everything connection `id` has to send into `buf` (its queue,
    /// through its TLS session if it has one); those bytes stay counted
    /// against the queue's limit until `sent`.
    pub(super) fn fill(&mut self, id: u32, buf: &mut Vec<u8>) -> Result<(), CloseReason> {
        let Some(conn) = self.conn_mut(id) else {
            return Ok(());
        };
        match conn.tls.as_deref_mut() {
            None => write_plain(buf, &mut conn.out)?,
            Some(tls) => write_tls(tls, buf, &mut conn.out)?,
        }
        conn.out.hold(buf.len());
        Ok(())
    }

    /// `n` bytes given by `fill` have been sent.
    pub(super) fn sent(&mut self, id: u32, n: usize) {
        if let Some(conn) = self.conn_mut(id) {
            conn.out.release(n);
        }
    }

    /// What the owners of peer connections must hear, made since the last
    /// call.
    pub(super) fn take_remote(&mut self) -> Remote {
        std::mem::take(&mut self.remote)
    }

    /// Another shard's answer to the ConnectionBind of connection `key`:
    /// queued for the client, and when `id`, the connection is bound.
    /// False when the connection has gone meanwhile.
    pub(super) fn answer_bind(&mut self, key: u64, reply: &[u8], id: Option<ConnectionId>) -> bool {
        let Some(slot) = self.live(key) else {
            return false;
        };
        let Some(conn) = self
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.conn.as_deref_mut())
        else {
            return false;
        };
        conn.awaiting_bind = false;
        if !conn.out.push(reply) {
            self.stats.tx_queue_full += 1;
        }
        if id.is_some() {
            conn.data_bind = id;
            conn.deadline = None;
        } else {
            if !conn.early.is_empty() {
                // Not bound: what the client sent meanwhile was meant for a
                // peer it will not reach.
                tracing::debug!(
                    shard = self.index,
                    bytes = conn.early.len(),
                    "bytes before a refused ConnectionBind dropped"
                );
                conn.early = Vec::new();
            }
            if conn.ended {
                // Its client has ended: closed by the next sweep, the
                // answer going first.
                conn.deadline = Some(Instant::now());
            }
        }
        self.mark_dirty(slot);
        true
    }

    /// Whether connection `id` is a bound data connection (its answer may
    /// still be queued).
    pub(super) fn is_bound(&self, id: u32) -> bool {
        self.slots
            .get(id as usize)
            .and_then(|s| s.conn.as_deref())
            .is_some_and(|c| c.data_bind.is_some())
    }

    /// Whether connection `id` is a data connection whose ConnectionBind
    /// went to another shard and is not answered yet.
    pub(super) fn awaits_bind(&self, id: u32) -> bool {
        self.slots
            .get(id as usize)
            .and_then(|s| s.conn.as_deref())
            .is_some_and(|c| c.awaiting_bind)
    }

    /// Connection `id`, waiting for another shard's answer to its
    /// ConnectionBind, was ended by its client.
    pub(super) fn end_awaiting(&mut self, id: u32) {
        if let Some(c) = self
            .slots
            .get_mut(id as usize)
            .and_then(|s| s.conn.as_deref_mut())
        {
            c.ended = true;
        }
    }

    /// The peer connection connection `id` is bound to, once its answer
    /// has been handed on (nothing left to send): it may be detached.
    pub(super) fn bound_and_sent(&self, id: u32) -> Option<ConnectionId> {
        let c = self.slots.get(id as usize)?.conn.as_deref()?;
        c.data_bind.filter(|_| !c.has_output() && c.out.held() == 0)
    }

    /// Takes bound data connection `id` out of the stream side: its
    /// handle, its TLS session, and the count it holds against the
    /// connection limits (which goes with it).
    pub(super) fn detach(&mut self, id: u32) -> Option<Detached<S>> {
        let slot = self.slots.get_mut(id as usize)?;
        let bound = slot.conn.as_deref()?.data_bind?;
        let conn = slot.conn.take()?;
        self.free.push(id);
        let t = conn.transport();
        self.stats.open[t] = self.stats.open[t].saturating_sub(1);
        self.stats.data_connections[t] += 1;
        Some(Detached {
            io: conn.io,
            tls: conn.tls,
            counted: conn.counted,
            ledger: Arc::clone(&self.ledger),
            id: bound,
            early: conn.early,
            refused: false,
        })
    }

    /// Checks deadlines: the connections past their handshake deadline, or
    /// without an allocation past theirs, to be closed.
    pub(super) fn expired(&mut self, relay: &Relay, now: Now) -> Vec<(u32, CloseReason)> {
        match self.next_sweep {
            Some(t) if now.at >= t => {}
            _ => return Vec::new(),
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
                    _ if conn.ended => CloseReason::ClientClosed,
                    Phase::Proxy | Phase::Handshake => CloseReason::HandshakeTimeout,
                    Phase::Open => CloseReason::AuthTimeout,
                };
                expired.push((id as u32, why));
            }
        }
        // Counted before the closes: a connection closed now still counts.
        self.next_sweep = self.has_connections().then(|| now.at + SWEEP);
        expired
    }

    /// Closes connection `id`: its allocation is deleted, the limits and
    /// counters see it go, and its handle comes back with the bytes that
    /// should still go out.
    pub(super) fn close(
        &mut self,
        id: u32,
        why: CloseReason,
        relay: &mut Relay,
        sockets: &mut impl PeerSockets,
    ) -> Option<Closed<S>> {
        let mut conn = self.slots.get_mut(id as usize)?.conn.take()?;
        let unsent = conn.out.len() + conn.out.held();
        let mut last = Vec::new();
        let Conn { tls, out, .. } = &mut *conn;
        match (why, tls.as_deref_mut()) {
            // A client that half-closed after its last request (a Refresh
            // to 0, say) still gets the answer; then, over TLS, a
            // close_notify.
            (CloseReason::ClientClosed | CloseReason::Shutdown | CloseReason::AuthTimeout, t) => {
                let _ = match t {
                    None => write_plain(&mut last, out),
                    Some(tls) => write_tls(tls, &mut last, out).map(|()| {
                        tls.send_close_notify();
                        let _ = tls.write_tls(&mut last);
                    }),
                };
            }
            // The alert the session queued for the client.
            (CloseReason::Tls, Some(tls)) => {
                while tls.wants_write() {
                    if !matches!(tls.write_tls(&mut last), Ok(1..)) {
                        break;
                    }
                }
            }
            _ => {}
        }
        if conn.tls.is_some() && conn.phase != Phase::Open {
            // Whatever ended it: an alert, a timeout, a cut.
            self.stats.tls_handshakes_failed += 1;
        }
        relay.connection_closed(conn.leg, conn.client, sockets);
        if let Some(id) = conn.data_bind {
            // Bound, but closed before it could be handed over.
            self.remote.unbound.push(id);
        }
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
            unsent,
            "connection closed"
        );
        self.free.push(id);
        Some(Closed { io: conn.io, last })
    }
}

impl<S: Write> Conns<S> {
    /// Writes connection `id`'s output to its own handle (a non-blocking
    /// socket) until it is full. Returns whether output is left.
    pub(super) fn write_out(&mut self, id: u32) -> Result<bool, CloseReason> {
        let Some(conn) = self.conn_mut(id) else {
            return Ok(false);
        };
        match conn.tls.as_deref_mut() {
            None => write_plain(&mut conn.io, &mut conn.out)?,
            Some(tls) => write_tls(tls, &mut conn.io, &mut conn.out)?,
        }
        Ok(conn.has_output())
    }
}

/// Reads the PROXY v2 header of `conn` from `bytes`, the start of what
/// arrived. Once it is whole, the client's address is the one it carries,
/// the per-source limit applies to it, and the connection goes on to its
/// TLS handshake or its frames. Returns how many of `bytes` were header.
fn proxy_header<S>(
    conn: &mut Conn<S>,
    bytes: &[u8],
    ledger: &ConnLedger,
    limits: &StreamLimits,
    index: usize,
    now: Instant,
) -> Result<usize, CloseReason> {
    let before = conn.header.len();
    // Every verdict is reached within MAX_HEADER_LEN bytes.
    let take = bytes
        .len()
        .min(proxy::MAX_HEADER_LEN.saturating_sub(before));
    conn.header.extend_from_slice(&bytes[..take]);
    let (len, source) = match proxy::parse(&conn.header) {
        ProxyHeader::Incomplete { .. } if take < bytes.len() => return Err(CloseReason::Proxy),
        ProxyHeader::Incomplete { .. } => return Ok(take),
        ProxyHeader::Invalid(why) => {
            tracing::debug!(shard = index, reason = why.label(), "bad PROXY header");
            return Err(CloseReason::Proxy);
        }
        ProxyHeader::Done { len, source } => (len, source),
    };
    // A verdict on a prefix stands: the header ends in these bytes.
    let used = len.saturating_sub(before).min(take);
    conn.header = Vec::new();
    if let Some(source) = source {
        conn.client = SocketAddr::new(source.ip().to_canonical(), source.port());
    }
    let ip = conn.client.ip();
    if ledger.admit_source(ip).is_err() {
        return Err(CloseReason::SourceLimit);
    }
    conn.counted = Some(ip);
    if conn.tls.is_some() {
        conn.phase = Phase::Handshake;
    } else {
        conn.phase = Phase::Open;
        conn.deadline = Some(now + limits.auth_timeout);
    }
    Ok(used)
}

/// Writes a plain connection's queue, in at most two pieces per call.
fn write_plain(sink: &mut impl Write, out: &mut SendQueue) -> Result<(), CloseReason> {
    while !out.is_empty() {
        let (a, b) = out.front();
        let written = match sink.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
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

/// Moves a TLS connection's queue through its session into `sink`. The
/// session gets more plaintext only once its records are all written, so it
/// holds at most one chunk beyond our bounded queue.
fn write_tls(
    tls: &mut ServerConnection,
    sink: &mut impl Write,
    out: &mut SendQueue,
) -> Result<(), CloseReason> {
    loop {
        while tls.wants_write() {
            match tls.write_tls(sink) {
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
