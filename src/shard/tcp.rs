//! TCP allocations (RFC 6062) on a shard: the relayed address's listener,
//! the peer connections, and the byte pipes between a peer connection and
//! the client data connection bound to it.
//!
//! Everything here is driven by readiness on an epoll instance of its own,
//! which the backend watches (a registration in the syscall backend's
//! epoll, a poll from the io_uring), so both backends share one
//! implementation. A pipe moves bytes as they come, both ways, through a
//! bounded buffer per direction: a side is read only while its buffer has
//! room, so a slow reader slows its writer through TCP's own flow control
//! and nothing is dropped.
//!
//! The state machine asks for sockets through `RelaySockets` (listen,
//! connect, close), while it handles a client's request. Those calls land
//! in this shard thread's `Requests` (a thread-local: one shard per thread,
//! and the request is served on the same turn), so that every relay-socket
//! type of both backends can make them without holding this module.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConnection;

use super::streams::Remote;
use super::Letter;
use crate::io::socket::{tcp_relay_connect, tcp_relay_listener};
use crate::io::splice::{Filled, Splice};
use crate::io::syscall::{Events, Poller};
use crate::stream::ConnLedger;
use crate::turn::{ConnId, ConnectionId, Now, Payload, Relay, RelayToken, Via, MAX_REPLY};

/// Bytes in flight per direction of a pipe.
const PIPE_BUFFER: usize = 64 * 1024;
/// Readiness events per look.
const EVENTS: usize = 256;
/// Connections accepted per ready listener per turn.
const ACCEPTS_PER_EVENT: usize = 16;
/// Listen backlog of a relayed address.
const BACKLOG: i32 = 64;
/// Key bits: a listener (its token below), or a pipe's side.
const LISTENER_KEY: u64 = 1 << 63;
const CLIENT_SIDE: u64 = 1 << 62;

/// What the state machine asked for on this thread, served by
/// `TcpPeers::poll` on the same turn.
#[derive(Default)]
struct Requests {
    listeners: Vec<(RelayToken, TcpListener)>,
    connects: Vec<(ConnectionId, TcpStream, SocketAddr)>,
    closed_listeners: Vec<RelayToken>,
    closed: Vec<ConnectionId>,
}

thread_local! {
    static REQUESTS: RefCell<Requests> = RefCell::new(Requests::default());
}

/// The RFC 6062 part of `RelaySockets`, the same for every relay-socket
/// type of the shard (each call lands in this thread's `Requests`).
macro_rules! relay_sockets {
    () => {
        fn listen_tcp(
            &mut self,
            addr: std::net::SocketAddr,
            token: $crate::turn::RelayToken,
        ) -> std::io::Result<()> {
            $crate::shard::tcp::listen(addr, token)
        }

        fn connect_tcp(
            &mut self,
            _token: $crate::turn::RelayToken,
            id: $crate::turn::ConnectionId,
            from: std::net::SocketAddr,
            peer: std::net::SocketAddr,
        ) -> std::io::Result<()> {
            $crate::shard::tcp::connect(id, from, peer)
        }

        fn close_tcp(&mut self, id: $crate::turn::ConnectionId) {
            $crate::shard::tcp::close(id);
        }
    };
}
pub(super) use relay_sockets;

/// `RelaySockets::listen_tcp`: binds and listens on a relayed address.
/// SO_REUSEPORT, so that the connections to peers can leave from the same
/// address (RFC 6062 §5.2).
pub(super) fn listen(addr: SocketAddr, token: RelayToken) -> io::Result<()> {
    let l = tcp_relay_listener(addr, BACKLOG)?;
    REQUESTS.with_borrow_mut(|r| r.listeners.push((token, l)));
    Ok(())
}

/// `RelaySockets::connect_tcp`: a non-blocking connection from the relayed
/// address `from` to `peer`.
pub(super) fn connect(id: ConnectionId, from: SocketAddr, peer: SocketAddr) -> io::Result<()> {
    let stream = tcp_relay_connect(from, peer)?;
    REQUESTS.with_borrow_mut(|r| r.connects.push((id, stream, peer)));
    Ok(())
}

/// `RelaySockets::close` for a TCP allocation's listener.
pub(super) fn close_listener(token: RelayToken) {
    REQUESTS.with_borrow_mut(|r| r.closed_listeners.push(token));
}

/// `RelaySockets::close_tcp`.
pub(super) fn close(id: ConnectionId) {
    REQUESTS.with_borrow_mut(|r| r.closed.push(id));
}

/// A client data connection taken from the stream side once its
/// ConnectionBind succeeded: its socket, its TLS session, and the
/// connection count it holds against the limits.
pub struct DataConn {
    pub sock: TcpStream,
    /// The limits its count is held against.
    pub ledger: Arc<ConnLedger>,
    pub tls: Option<Box<ServerConnection>>,
    /// Released when the pipe closes.
    pub counted: Option<IpAddr>,
    /// Bytes for the peer the client sent before its ConnectionBind answer
    /// (plaintext), and whether some could not be kept (over the limit, or
    /// TLS records refused): the connection is then closed, not relayed
    /// with a hole.
    pub early: Vec<u8>,
    pub early_refused: bool,
}

/// One direction's bytes in flight.
struct Buf {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            bytes: vec![0; PIPE_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
    /// A buffer holding `bytes` already; None when there are none (or
    /// more than a buffer holds).
    fn holding(bytes: &[u8]) -> Option<Buf> {
        if bytes.is_empty() || bytes.len() > PIPE_BUFFER {
            return None;
        }
        let mut b = Buf::new();
        b.bytes[..bytes.len()].copy_from_slice(bytes);
        b.end = bytes.len();
        Some(b)
    }
    fn is_empty(&self) -> bool {
        self.start == self.end
    }
    fn has_room(&self) -> bool {
        self.end < self.bytes.len()
    }
    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    fn room(&mut self) -> &mut [u8] {
        &mut self.bytes[self.end..]
    }
}

/// The client side of a bound pipe.
struct ClientSide {
    sock: TcpStream,
    tls: Option<Box<ServerConnection>>,
    counted: Option<IpAddr>,
    /// Client → peer, and peer → client.
    up: Dir,
    down: Dir,
    /// A side has ended (FIN): its direction drains, then the other side
    /// is shut for writing; the pipe ends when both directions have.
    up_ended: bool,
    down_ended: bool,
}

/// One direction's bytes in flight: through a buffer of ours (plaintext:
/// a TLS session takes it from there), or spliced through a kernel pipe
/// (plain TCP both sides).
enum Dir {
    Copy(Buf),
    Splice(Splice),
}

impl Dir {
    fn new(splice: bool) -> Dir {
        match splice.then(Splice::new) {
            Some(Ok(s)) => Dir::Splice(s),
            // No pipe to be had (descriptors short): copy instead.
            _ => Dir::Copy(Buf::new()),
        }
    }
    fn is_empty(&self) -> bool {
        match self {
            Dir::Copy(b) => b.is_empty(),
            Dir::Splice(s) => s.held() == 0,
        }
    }
    fn has_room(&self) -> bool {
        match self {
            Dir::Copy(b) => b.has_room(),
            Dir::Splice(s) => s.has_room(),
        }
    }
}

enum State {
    /// Connecting to the peer (Connect).
    Connecting,
    /// Connected or accepted: waits for the client's data connection.
    Waiting,
    Bound(Box<ClientSide>),
}

struct Pipe {
    id: ConnectionId,
    generation: u32,
    peer: TcpStream,
    state: State,
    /// Interests registered: the peer side's and the client side's.
    peer_interest: (bool, bool),
    client_interest: (bool, bool),
}

/// Why a pipe ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum End {
    /// Both sides ended, and what each sent has gone.
    Done,
    Error,
}

/// Counters of one shard's TCP allocations.
#[derive(Clone, Debug, Default)]
pub struct TcpStats {
    /// Bytes relayed client → peer and peer → client.
    pub to_peer_bytes: u64,
    pub to_client_bytes: u64,
    /// Peer connections open now, and pipes bound now.
    pub peer_connections: u64,
    pub pipes: u64,
    /// Data connections that arrived for a peer connection that had gone.
    pub orphans: u64,
    /// Data connections closed because bytes they sent before their
    /// ConnectionBind answer could not be kept (`DataConn::early_refused`).
    pub early_refused: u64,
}

/// A shard's TCP allocations.
pub(super) struct TcpPeers {
    index: usize,
    poller: Poller,
    events: Events,
    listeners: HashMap<u64, TcpListener>,
    pipes: Vec<Option<Pipe>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    by_id: HashMap<u32, u32>,
    ledger: Arc<ConnLedger>,
    pub(super) scratch: Vec<u8>,
    stats: TcpStats,
    /// Messages for clients' control connections (Connect answers,
    /// ConnectionAttempt indications), for the stream side to queue.
    out: Vec<(ConnId, Vec<u8>)>,
    /// Plain TCP pipes splice (see `Dir`).
    splice: bool,
}

fn pipe_key(slot: u32, generation: u32) -> u64 {
    u64::from(generation & 0x3FFF_FFFF) << 32 | u64::from(slot)
}

impl TcpPeers {
    /// `splice`: plain TCP pipes move their bytes with splice(2), not
    /// through a buffer of ours.
    pub(super) fn new(index: usize, ledger: Arc<ConnLedger>, splice: bool) -> io::Result<TcpPeers> {
        Ok(TcpPeers {
            splice,
            index,
            poller: Poller::new()?,
            events: Events::with_capacity(EVENTS),
            listeners: HashMap::new(),
            pipes: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            ledger,
            scratch: vec![0; MAX_REPLY],
            stats: TcpStats::default(),
            out: Vec::new(),
        })
    }

    /// The descriptor the backend watches.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }

    pub(super) fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Messages for control connections, to be queued by the stream side.
    pub(super) fn take_out(&mut self) -> Vec<(ConnId, Vec<u8>)> {
        std::mem::take(&mut self.out)
    }

    /// Serves what the state machine asked for this turn, then, when
    /// `ready`, whatever the sockets have.
    pub(super) fn poll(&mut self, relay: &mut Relay, now: Now, ready: bool) {
        self.serve_requests();
        // Connects the sweep gave up on (their sockets closed just now).
        while let Some(t) = relay.take_connect_timeout(&mut self.scratch) {
            self.queue_out(t.via, t.payload);
        }
        if !ready {
            return;
        }
        let n = match self.poller.wait(&mut self.events, Duration::ZERO) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(shard = self.index, error = %e, "tcp relay poll failed");
                return;
            }
        };
        for e in 0..n {
            let key = self.events.key(e);
            if key & LISTENER_KEY != 0 {
                self.accept(key & !LISTENER_KEY, relay, now);
                continue;
            }
            let slot = (key & 0xFFFF_FFFF) as u32;
            let generation = ((key & !CLIENT_SIDE) >> 32) as u32;
            if self.generations.get(slot as usize).map(|g| g & 0x3FFF_FFFF) != Some(generation) {
                continue;
            }
            self.ready(slot, relay, now);
        }
        // Answers made while serving requests or events (a connect that
        // failed at once).
        self.serve_requests();
    }

    /// Takes this thread's requests: new listeners and connections, closes.
    fn serve_requests(&mut self) {
        let r = REQUESTS.with_borrow_mut(std::mem::take);
        for token in r.closed_listeners {
            if let Some(l) = self.listeners.remove(&token.0) {
                let _ = self.poller.delete(l.as_fd());
            }
        }
        for (token, l) in r.listeners {
            match self.poller.add(l.as_fd(), LISTENER_KEY | token.0) {
                Ok(()) => {
                    self.listeners.insert(token.0, l);
                }
                Err(e) => {
                    tracing::debug!(shard = self.index, error = %e, "relay listener not watched")
                }
            }
        }
        for (id, stream, _peer) in r.connects {
            self.insert(id, stream, State::Connecting);
        }
        for id in r.closed {
            if let Some(slot) = self.by_id.get(&id.0).copied() {
                self.remove(slot);
            }
        }
    }

    fn insert(&mut self, id: ConnectionId, peer: TcpStream, state: State) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.pipes.push(None);
                self.generations.push(0);
                (self.pipes.len() - 1) as u32
            }
        };
        let g = &mut self.generations[slot as usize];
        *g = g.wrapping_add(1);
        let generation = *g;
        let connecting = matches!(state, State::Connecting);
        let interest = (false, connecting);
        if let Err(e) = self.poller.add_interest(
            peer.as_fd(),
            pipe_key(slot, generation),
            interest.0,
            interest.1,
        ) {
            tracing::debug!(shard = self.index, error = %e, "peer connection not watched");
        }
        self.pipes[slot as usize] = Some(Pipe {
            id,
            generation,
            peer,
            state,
            peer_interest: interest,
            client_interest: (false, false),
        });
        self.by_id.insert(id.0, slot);
        self.stats.peer_connections += 1;
    }

    /// Removes a pipe: both sockets closed, the data connection's count
    /// released. The state machine is not told (it asked, or is told by
    /// the caller).
    fn remove(&mut self, slot: u32) -> Option<ConnectionId> {
        let pipe = self.pipes.get_mut(slot as usize)?.take()?;
        self.by_id.remove(&pipe.id.0);
        self.free.push(slot);
        let _ = self.poller.delete(pipe.peer.as_fd());
        self.stats.peer_connections = self.stats.peer_connections.saturating_sub(1);
        if let State::Bound(mut c) = pipe.state {
            let _ = self.poller.delete(c.sock.as_fd());
            if let Some(tls) = c.tls.as_deref_mut() {
                tls.send_close_notify();
                let _ = tls.write_tls(&mut c.sock);
            }
            self.release(c.counted);
            self.stats.pipes = self.stats.pipes.saturating_sub(1);
        }
        Some(pipe.id)
    }

    fn release(&self, counted: Option<IpAddr>) {
        self.ledger.release_total();
        if let Some(ip) = counted {
            self.ledger.release_source(ip);
        }
    }

    fn accept(&mut self, token: u64, relay: &mut Relay, now: Now) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let Some(l) = self.listeners.get(&token) else {
                return;
            };
            let (sock, from) = match l.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(shard = self.index, error = %e, "relay accept failed");
                    return;
                }
            };
            let Some((id, t)) = relay.tcp_accepted(now, RelayToken(token), from, &mut self.scratch)
            else {
                // No permission, a refused peer, a limit: closed at once.
                continue;
            };
            if sock.set_nonblocking(true).is_err() {
                relay.tcp_closed(id);
                continue;
            }
            let _ = sock.set_nodelay(true);
            self.queue_out(t.via, t.payload);
            self.insert(id, sock, State::Waiting);
        }
    }

    fn queue_out(&mut self, via: Via, payload: Payload) {
        if let (Via::Stream(conn), Payload::Reply(n)) = (via, payload) {
            if let Some(bytes) = self.scratch.get(..n) {
                self.out.push((conn, bytes.to_vec()));
            }
        }
    }

    /// A data connection bound to peer connection `id` (by this shard's
    /// state machine; the ConnectionBind's answer has gone on it).
    pub(super) fn adopt(&mut self, relay: &mut Relay, id: ConnectionId, data: DataConn) {
        let Some(&slot) = self.by_id.get(&id.0) else {
            // The peer connection ended meanwhile.
            self.stats.orphans += 1;
            refuse(data);
            relay.tcp_closed(id);
            return;
        };
        let Some(pipe) = self.pipes[slot as usize].as_mut() else {
            return;
        };
        if !matches!(pipe.state, State::Waiting) {
            self.stats.orphans += 1;
            refuse(data);
            return;
        }
        if data.early_refused {
            self.stats.early_refused += 1;
            refuse(data);
            self.forget(relay, id);
            return;
        }
        let _ = data.sock.set_nonblocking(true);
        let splice = self.splice && data.tls.is_none();
        // What the client sent before the answer goes first; through a
        // buffer of ours (it is in user space already).
        let up = match Buf::holding(&data.early) {
            Some(b) => Dir::Copy(b),
            None => Dir::new(splice),
        };
        let client = Box::new(ClientSide {
            sock: data.sock,
            tls: data.tls,
            counted: data.counted,
            up,
            down: Dir::new(splice),
            up_ended: false,
            down_ended: false,
        });
        let key = pipe_key(slot, pipe.generation) | CLIENT_SIDE;
        if let Err(e) = self
            .poller
            .add_interest(client.sock.as_fd(), key, false, false)
        {
            tracing::debug!(shard = self.index, error = %e, "data connection not watched");
        }
        pipe.state = State::Bound(client);
        self.stats.pipes += 1;
        self.ready(slot, relay, super::now());
    }

    /// Moves what can be moved on pipe `slot`, then asks for the readiness
    /// it waits for; closes it when a side has ended.
    fn ready(&mut self, slot: u32, relay: &mut Relay, now: Now) {
        let Some(pipe) = self.pipes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let result = match &mut pipe.state {
            State::Connecting => {
                // Writable: the connection is made, or it failed.
                let connected = match pipe.peer.take_error() {
                    Ok(None) => pipe.peer.peer_addr().is_ok(),
                    _ => false,
                };
                let id = pipe.id;
                let answer = relay.tcp_connected(now, id, connected, &mut self.scratch);
                match answer {
                    Some(t) => {
                        self.queue_out(t.via, t.payload);
                        if connected {
                            if let Some(p) = self.pipes[slot as usize].as_mut() {
                                let _ = p.peer.set_nodelay(true);
                                p.state = State::Waiting;
                            }
                            Ok(())
                        } else {
                            // The relay forgot it already.
                            self.remove(slot);
                            return;
                        }
                    }
                    None => {
                        // Nobody waits for it (the allocation has gone).
                        self.remove(slot);
                        relay.tcp_closed(id);
                        return;
                    }
                }
            }
            State::Waiting => Ok(()),
            State::Bound(c) => pump(&mut pipe.peer, c, &mut self.stats),
        };
        match result {
            Ok(()) => self.rearm(slot),
            Err(end) => {
                tracing::debug!(shard = self.index, ?end, "tcp relay pipe closed");
                if let Some(id) = self.remove(slot) {
                    relay.tcp_closed(id);
                }
            }
        }
    }

    /// Registers what pipe `slot` waits for now.
    fn rearm(&mut self, slot: u32) {
        let Some(pipe) = self.pipes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let key = pipe_key(slot, pipe.generation);
        let (peer, client) = match &pipe.state {
            State::Connecting => ((false, true), None),
            // Nothing read from the peer until a data connection is bound
            // (its bytes wait in the kernel), but a hang-up is noticed.
            State::Waiting => ((false, false), None),
            State::Bound(c) => {
                let tls_out = c.tls.as_ref().is_some_and(|t| t.wants_write());
                (
                    (!c.down_ended && c.down.has_room(), !c.up.is_empty()),
                    Some((
                        !c.up_ended && c.up.has_room(),
                        !c.down.is_empty() || tls_out,
                    )),
                )
            }
        };
        if peer != pipe.peer_interest
            && self
                .poller
                .modify_interest(pipe.peer.as_fd(), key, peer.0, peer.1)
                .is_ok()
        {
            pipe.peer_interest = peer;
        }
        if let (Some(want), State::Bound(c)) = (client, &pipe.state) {
            if want != pipe.client_interest
                && self
                    .poller
                    .modify_interest(c.sock.as_fd(), key | CLIENT_SIDE, want.0, want.1)
                    .is_ok()
            {
                pipe.client_interest = want;
            }
        }
    }

    /// Peer connection `id` was bound, but its data connection never came:
    /// closed.
    pub(super) fn forget(&mut self, relay: &mut Relay, id: ConnectionId) {
        if let Some(&slot) = self.by_id.get(&id.0) {
            self.remove(slot);
        }
        relay.tcp_closed(id);
    }

    /// Closes everything (shutdown).
    pub(super) fn close_all(&mut self, relay: &mut Relay) {
        self.serve_requests();
        for slot in 0..self.pipes.len() as u32 {
            if let Some(id) = self.remove(slot) {
                relay.tcp_closed(id);
            }
        }
        self.listeners.clear();
    }
}

/// Moves bytes both ways on a bound pipe until every side would block. A
/// side's end (FIN) is passed on once what it sent has gone; Err once both
/// directions have ended, or on an error.
fn pump(peer: &mut TcpStream, c: &mut ClientSide, stats: &mut TcpStats) -> Result<(), End> {
    loop {
        let mut moved = false;
        // Client → peer.
        if !c.up_ended && c.up.has_room() {
            match read_client(c)? {
                Some(n) => moved |= n > 0,
                None => c.up_ended = true,
            }
        }
        if !c.up.is_empty() {
            let n = match &mut c.up {
                Dir::Copy(b) => {
                    let n = write_some(peer, b.data())?;
                    b.consume(n);
                    n
                }
                Dir::Splice(s) => s.drain(peer.as_fd()).map_err(|_| End::Error)?,
            };
            stats.to_peer_bytes += n as u64;
            moved |= n > 0;
        }
        // Peer → client.
        if !c.down_ended && c.down.has_room() {
            let got = match &mut c.down {
                Dir::Copy(b) => {
                    let got = read_some(peer, b.room())?;
                    if let Some(n) = got {
                        b.end += n;
                    }
                    got
                }
                Dir::Splice(s) => match s.fill(peer.as_fd()).map_err(|_| End::Error)? {
                    Filled::Bytes(n) => Some(n),
                    Filled::End => None,
                },
            };
            match got {
                Some(n) => moved |= n > 0,
                None => c.down_ended = true,
            }
        }
        let n = write_client(c)?;
        stats.to_client_bytes += n as u64;
        moved |= n > 0;
        if !moved {
            break;
        }
    }
    // An ended direction with nothing left in flight: its end goes on.
    let up_done = c.up_ended && c.up.is_empty();
    let down_done =
        c.down_ended && c.down.is_empty() && !c.tls.as_ref().is_some_and(|t| t.wants_write());
    if up_done {
        let _ = peer.shutdown(Shutdown::Write);
    }
    if down_done {
        if let Some(tls) = c.tls.as_deref_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut c.sock);
        }
        let _ = c.sock.shutdown(Shutdown::Write);
    }
    match (up_done, down_done) {
        (true, true) => Err(End::Done),
        _ => Ok(()),
    }
}

/// Reads into `room`: Some(bytes) (0: nothing now), None at the end.
fn read_some(s: &mut TcpStream, room: &mut [u8]) -> Result<Option<usize>, End> {
    loop {
        match s.read(room) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(End::Error),
        }
    }
}

fn write_some(s: &mut TcpStream, bytes: &[u8]) -> Result<usize, End> {
    loop {
        match s.write(bytes) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(End::Error),
        }
    }
}

/// Reads from the client into `up` (through its TLS session if it has
/// one): Some(plaintext bytes added), None at its end (a FIN, or a TLS
/// close_notify).
fn read_client(c: &mut ClientSide) -> Result<Option<usize>, End> {
    let up = match &mut c.up {
        Dir::Splice(s) => {
            return match s.fill(c.sock.as_fd()).map_err(|_| End::Error)? {
                Filled::Bytes(n) => Ok(Some(n)),
                Filled::End => Ok(None),
            };
        }
        Dir::Copy(b) => b,
    };
    let Some(tls) = c.tls.as_deref_mut() else {
        let got = read_some(&mut c.sock, up.room())?;
        if let Some(n) = got {
            up.end += n;
        }
        return Ok(got);
    };
    // Plaintext the session already holds first.
    let mut got = 0;
    loop {
        match tls.reader().read(up.room()) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                up.end += n;
                got += n;
                if !up.has_room() {
                    return Ok(Some(got));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Cut without a close_notify.
            Err(_) => return Ok(None),
        }
        if got > 0 {
            return Ok(Some(got));
        }
        match tls.read_tls(&mut c.sock) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(End::Error),
        }
        if tls.process_new_packets().is_err() {
            let _ = tls.write_tls(&mut c.sock);
            return Err(End::Error);
        }
    }
}

/// Writes `down` to the client (through its TLS session if it has one).
/// Returns the bytes taken from `down`.
fn write_client(c: &mut ClientSide) -> Result<usize, End> {
    let down = match &mut c.down {
        Dir::Splice(s) => return s.drain(c.sock.as_fd()).map_err(|_| End::Error),
        Dir::Copy(b) => b,
    };
    let Some(tls) = c.tls.as_deref_mut() else {
        if down.is_empty() {
            return Ok(0);
        }
        let n = write_some(&mut c.sock, down.data())?;
        down.consume(n);
        return Ok(n);
    };
    let mut taken = 0;
    loop {
        while tls.wants_write() {
            match tls.write_tls(&mut c.sock) {
                Ok(0) => return Err(End::Error),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Error),
            }
        }
        if down.is_empty() {
            return Ok(taken);
        }
        // One record's worth at a time, once the last has gone.
        let chunk = &down.data()[..down.data().len().min(16 * 1024)];
        match tls.writer().write(chunk) {
            Ok(0) | Err(_) => return Err(End::Error),
            Ok(n) => {
                down.consume(n);
                taken += n;
            }
        }
    }
}

/// Closes a data connection that could not be handed to its shard,
/// giving back the count it holds.
pub(super) fn refuse(data: DataConn) {
    let _ = data.sock.shutdown(Shutdown::Both);
    data.ledger.release_total();
    if let Some(ip) = data.counted {
        data.ledger.release_source(ip);
    }
}

/// What a letter from another shard makes this shard do, whatever its
/// backend: `answer` takes a ConnectionBind's answer to one of its
/// connections.
pub(super) fn letter(
    index: usize,
    relay: &mut Relay,
    tcp: &mut TcpPeers,
    letter: Letter,
    out: &mut Vec<(usize, Letter)>,
    answer: impl FnOnce(u64, &[u8], Option<ConnectionId>) -> bool,
) {
    match letter {
        Letter::Bind {
            from,
            conn,
            transport,
            msg,
        } => {
            let b = relay.connection_bind(super::now(), transport, &msg, &mut tcp.scratch);
            let reply = b.reply.map_or_else(Vec::new, |n| tcp.scratch[..n].to_vec());
            out.push((
                from,
                Letter::Bound {
                    conn,
                    reply,
                    id: b.bound,
                },
            ));
        }
        Letter::Bound { conn, reply, id } => {
            if !answer(conn, &reply, id) {
                if let Some(id) = id {
                    // The data connection went before its answer came.
                    tracing::debug!(shard = index, "bound data connection gone");
                    out.push((id.shard(), Letter::Unbound { id }));
                }
            }
        }
        Letter::Adopt { id, data } => tcp.adopt(relay, id, data),
        Letter::Unbound { id } => {
            tcp.forget(relay, id);
        }
    }
}

/// What the stream side has for the owners of peer connections: a
/// ConnectionBind that landed on this shard for another's allocation, as a
/// letter to that shard; a bound data connection that closed before it was
/// handed over, to its peer connection's owner (this shard or another).
pub(super) fn route_remote(
    index: usize,
    relay: &mut Relay,
    tcp: &mut TcpPeers,
    remote: Remote,
    out: &mut Vec<(usize, Letter)>,
) {
    for b in remote.binds {
        let letter = Letter::Bind {
            from: index,
            conn: b.conn,
            transport: b.transport,
            msg: b.msg,
        };
        out.push((b.owner, letter));
    }
    for id in remote.unbound {
        if id.shard() == index {
            tcp.forget(relay, id);
        } else {
            out.push((id.shard(), Letter::Unbound { id }));
        }
    }
}

/// Where each data connection bound this turn goes: this shard's TCP
/// relay, or a letter to the shard that owns its peer connection.
pub(super) fn route_detached(
    index: usize,
    relay: &mut Relay,
    tcp: &mut TcpPeers,
    detached: Vec<(ConnectionId, DataConn)>,
    out: &mut Vec<(usize, Letter)>,
) {
    for (id, data) in detached {
        if id.shard() == index {
            tcp.adopt(relay, id, data);
        } else {
            out.push((id.shard(), Letter::Adopt { id, data }));
        }
    }
}
