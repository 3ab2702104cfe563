//! One worker thread: wires a `turn::Relay` to an `io` backend.
//!
//! A shard owns one listener socket per listen address (bound with
//! SO_REUSEPORT by the server), every relay socket its allocations created,
//! its io driver (an epoll instance and a recvmmsg batch, or an io_uring with
//! provided buffers) and its buffers. Nothing here is shared with another
//! shard except the immutable `Arc`s the state machine holds. The control
//! thread reaches a shard only through its command channel and eventfd
//! (`control`), which the io driver watches beside the sockets.
//!
//! One loop (`drive`) runs every shard; a backend is a `Driver` that
//! waits, receives and sends (`syscall`: epoll with recvmmsg/sendmmsg;
//! `uring`: io_uring). Every datagram goes through `dispatch` — datagram
//! in, state machine, at most one `Transmit` out — so backends differ only
//! in how they receive, where the bytes live and how sends are queued.
//! Sockets are tagged the same way in both: a relay socket by its
//! `RelayToken` (< 2^63), listener `i` by `LISTENER_TAG | i`.

mod control;
mod dtls;
mod offload;
mod streams;
mod syscall;
mod tcp;
mod uring;

pub use control::{
    channel, channels, collect_reports, Letter, ShardCommand, ShardControl, ShardHandle,
};
use dtls::DtlsSessions;
pub use dtls::{DtlsSpec, DtlsStats};
use offload::Offload;
pub use offload::{OffloadSpec, OffloadStats};
pub use streams::{
    transport_of, CloseReason, StreamLimits, StreamListener, StreamSpec, StreamStats,
};
pub use tcp::TcpStats;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::TryRecvError;

use crate::io::{Backend, BatchLayout, IoStats, TxBytes};
use crate::policy::AllocationLedger;
use crate::turn::{
    Gauges, Leg, ListenerId, Now, Payload, Relay, RelayToken, Settings, Stats, Transmit,
    TurnConfig, Via, MAX_REPLY, PEER_HEADROOM, PEER_TAILROOM,
};
use streams::PeerSockets;

/// Datagrams per `recvmmsg` (and sends per flush) on the syscall backend.
pub const BATCH: usize = 32;
/// Largest datagram received whole.
pub const RECV_CAPACITY: usize = 2048;
/// Longest wait for io. Commands wake the shard at once (through its
/// eventfd), and io and the relay's timers end a wait too, so this only
/// bounds how late an idle shard notices that the control side has gone
/// away without a word. Long on purpose: a shard that relied on it to see
/// a command would be a bug, and tests/e2e/operations.rs would show it.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Marks a listener's tag; relay tokens never have this bit.
const LISTENER_TAG: u64 = 1 << 63;
/// The tag of the shard's wake-up descriptor (no listener index is this
/// large: there are at most 2^16 listeners).
const WAKE_TAG: u64 = LISTENER_TAG | 1 << 62;
/// The tag of the shard's stream poller (TCP and TLS sockets).
const STREAMS_TAG: u64 = LISTENER_TAG | 1 << 61;
/// The tag of the shard's TCP relay poller (RFC 6062).
const TCP_TAG: u64 = LISTENER_TAG | 1 << 60;

/// The receive/send geometry of the syscall backend.
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
    /// The reloadable settings in force at start-up.
    pub settings: Settings,
    pub ledger: Arc<AllocationLedger>,
    /// Commands from the control thread, and the descriptor it wakes.
    pub control: ShardControl,
    /// io_uring: the longest a batched wait may hold datagrams (zero: off).
    pub io_batch_wait: Duration,
    /// io_uring: merge same-size sends to one destination (UDP GSO).
    pub io_gso: bool,
    /// TCP and TLS listeners and their limits.
    pub streams: StreamSpec,
    /// io_uring: serve TCP and TLS on the ring (multishot accept and
    /// receive); else through an epoll instance of their own.
    pub native_streams: bool,
    /// The XDP fast path's maps, when the program is attached.
    pub xdp: Option<OffloadSpec>,
    /// DTLS listeners, their certificate and limits.
    pub dtls: DtlsSpec,
}

/// What a shard hands back when it stops.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    pub index: usize,
    pub turn: Stats,
    pub io: IoStats,
    /// Live allocations, permissions and channels when the report was made.
    pub gauges: Gauges,
    pub draining: bool,
    /// Allocations deleted at shutdown.
    pub allocations_at_exit: usize,
    pub streams: StreamStats,
    /// The XDP routes this shard keeps (all zero without XDP).
    pub xdp: OffloadStats,
    /// TCP allocations' pipes (RFC 6062).
    pub tcp: TcpStats,
    pub dtls: DtlsStats,
}

impl ShardReport {
    fn new(
        index: usize,
        relay: &Relay,
        io: (&IoStats, &StreamStats, &DtlsStats),
        tcp: &TcpStats,
        offload: Option<&Offload>,
        allocations_at_exit: usize,
    ) -> ShardReport {
        ShardReport {
            tcp: tcp.clone(),
            dtls: io.2.clone(),
            xdp: offload.map(|o| o.stats().clone()).unwrap_or_default(),
            index,
            turn: relay.stats().clone(),
            io: io.0.clone(),
            streams: io.1.clone(),
            gauges: relay.gauges(Instant::now()),
            draining: relay.is_draining(),
            allocations_at_exit,
        }
    }
}

/// A worker: a state machine, its command channel, and an io backend.
pub struct Shard {
    index: usize,
    relay: Relay,
    control: ShardControl,
    io: Io,
    offload: Option<Offload>,
}

/// The io backend a shard drives (see [`Driver`]).
enum Io {
    Syscall(Box<syscall::SyscallIo>),
    Uring(Box<uring::UringIo>),
}

impl Shard {
    /// Creates the io driver, registers the listeners and allocates every
    /// buffer the shard will use. Call on the shard's own thread.
    pub fn new(spec: ShardSpec, backend: Backend) -> io::Result<Shard> {
        if spec.listeners.len() + spec.dtls.sockets.len() > usize::from(u16::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many listen addresses",
            ));
        }
        let mut relay = new_relay(&spec);
        let offload = match spec.xdp {
            Some(xdp) => {
                let servers = spec
                    .listeners
                    .iter()
                    .map(UdpSocket::local_addr)
                    .collect::<io::Result<Vec<_>>>()?;
                relay.set_offload(true);
                Some(Offload::new(spec.index, xdp, servers))
            }
            None => None,
        };
        let tcp = tcp::TcpPeers::new(
            spec.index,
            Arc::clone(&spec.streams.ledger),
            spec.streams.limits.relay_splice,
        )?;
        relay.set_shard(spec.index);
        // DTLS listeners come after the UDP ones, received the same way.
        let first_dtls = spec.listeners.len() as u16;
        let dtls = DtlsSessions::new(spec.index, first_dtls, spec.dtls)?;
        let mut listeners = spec.listeners;
        listeners.extend(dtls.receive_sockets()?);
        let io = match backend {
            Backend::Syscall => Io::Syscall(Box::new(syscall::SyscallIo::new(
                spec.index,
                listeners,
                dtls,
                streams::EpollStreams::new(spec.index, spec.streams)?,
                tcp,
                &spec.control,
                &spec.turn,
            )?)),
            Backend::Uring => Io::Uring(Box::new(uring::UringIo::new(
                spec.index,
                listeners,
                dtls,
                spec.streams,
                tcp,
                spec.native_streams,
                &spec.control,
                &spec.turn,
                spec.io_batch_wait,
                spec.io_gso,
            )?)),
        };
        Ok(Shard {
            index: spec.index,
            relay,
            control: spec.control,
            io,
            offload,
        })
    }

    /// Runs until told to shut down (or until every `ShardHandle` is gone);
    /// then deletes every allocation, closes every socket and returns the
    /// counters.
    pub fn run(self) -> ShardReport {
        let Shard {
            index,
            relay,
            control,
            io,
            offload,
        } = self;
        match io {
            Io::Syscall(io) => drive(index, relay, &control, *io, offload),
            Io::Uring(io) => drive(index, relay, &control, *io, offload),
        }
    }
}

/// An io backend as the shard loop sees it. A turn: `wait` for io, a
/// wake-up or the relay's next timer; `receive` every datagram that came,
/// each through [`dispatch`], its send queued and flushed; the relay's
/// timers through `timeout`; `end_turn`. A new kind of socket (TCP, TLS) or
/// of fast path is one more implementation, not one more loop.
trait Driver {
    /// The backend's name, for the log.
    const NAME: &'static str;
    /// Waits at most `timeout`. True when commands may be waiting: the
    /// shard was woken, or the turn was idle (so that a control side that
    /// has gone away is noticed).
    fn wait(&mut self, timeout: Duration) -> bool;
    /// Hands every datagram received this turn to the relay and sends what
    /// it answers.
    fn receive(&mut self, relay: &mut Relay);
    /// Runs the relay's timers, with the relay sockets at hand.
    fn timeout(&mut self, relay: &mut Relay, now: Now);
    /// The turn is over (sockets closed during it may go now).
    fn end_turn(&mut self) {}
    fn stats(&self) -> (&IoStats, &StreamStats, &DtlsStats);
    /// Deletes every allocation and lets the last sends go.
    fn close(&mut self, relay: &mut Relay);
    /// The driver's own next timer (the stream connections' deadlines).
    fn next_timer(&self) -> Option<Instant>;
    /// New TLS connections use `config` from now on.
    fn set_tls(&mut self, config: Arc<rustls::ServerConfig>);
    /// The TCP relay's counters (RFC 6062).
    fn tcp_stats(&self) -> &TcpStats;
    /// Letters for other shards made since the last call (RFC 6062 data
    /// connections that landed here for another shard's allocation).
    fn take_letters(&mut self) -> Vec<(usize, Letter)>;
    /// A letter from another shard.
    fn letter(&mut self, relay: &mut Relay, letter: Letter);
    /// New DTLS sessions use `context` from now on.
    fn set_dtls(&mut self, context: uturn_dtls::DtlsContext);
}

/// The shard loop, the same on every backend.
fn drive<D: Driver>(
    index: usize,
    mut relay: Relay,
    control: &ShardControl,
    mut io: D,
    mut offload: Option<Offload>,
) -> ShardReport {
    tracing::debug!(shard = index, backend = D::NAME, "shard running");
    loop {
        let own_timer = earliest(
            io.next_timer(),
            offload.as_ref().and_then(Offload::next_timer),
        );
        let commands = io.wait(wait_time(&relay, own_timer));
        io.receive(&mut relay);
        if timer_due(&relay, io.next_timer()) {
            io.timeout(&mut relay, now());
        }
        io.end_turn();
        let stop = commands && read_commands(control, index, &mut relay, &mut io, &mut offload);
        if commands {
            while let Some(letter) = control.mail.try_recv() {
                io.letter(&mut relay, letter);
            }
        }
        post_letters(control, index, &mut relay, &mut io);
        // After the commands too: a reload that narrows the peer policy
        // takes the XDP routes it ends away at once.
        if let Some(o) = &mut offload {
            o.turn(&mut relay);
        }
        if stop {
            break;
        }
    }
    let allocations_at_exit = relay.allocation_count();
    io.close(&mut relay);
    if let Some(o) = &mut offload {
        o.turn(&mut relay);
    }
    tracing::debug!(shard = index, allocations_at_exit, "shard stopped");
    ShardReport::new(
        index,
        &relay,
        io.stats(),
        io.tcp_stats(),
        offload.as_ref(),
        allocations_at_exit,
    )
}

/// Sends the letters this turn made. A ConnectionBind for a shard that
/// does not exist is answered here (400: no such connection). Another
/// letter that cannot go (the shard has stopped, or its mailbox is full)
/// lets go of what it holds: a data connection is closed.
fn post_letters(control: &ShardControl, index: usize, relay: &mut Relay, io: &mut impl Driver) {
    for (to, letter) in io.take_letters() {
        match control.mail.send(to, letter) {
            Ok(()) => {}
            Err(letter @ Letter::Bind { .. }) if to != index => io.letter(relay, letter),
            Err(letter) => {
                tracing::debug!(shard = index, to, "letter to another shard not delivered");
                if let Letter::Adopt { data, .. } = letter {
                    tcp::refuse(data);
                }
            }
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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

/// A shard's relay sockets by token.
type RelayMap<T> = HashMap<u64, T, BuildHasherDefault<TokenHasher>>;

/// The shard's state machine, its events written to the log.
fn new_relay(spec: &ShardSpec) -> Relay {
    let mut relay = Relay::new(
        spec.turn.clone(),
        spec.settings.clone(),
        Arc::clone(&spec.ledger),
    );
    relay.set_observer(Box::new(crate::logging::RelayLog));
    relay
}

fn relay_map<T>(turn: &TurnConfig) -> RelayMap<T> {
    let ports =
        (usize::from(*turn.ports.end()) + 1).saturating_sub(usize::from(*turn.ports.start()));
    HashMap::with_capacity_and_hasher(ports.min(4096), BuildHasherDefault::default())
}

/// Checks a token the state machine asks to bind a relay socket for.
fn check_new_token<T>(relays: &RelayMap<T>, token: RelayToken) -> io::Result<()> {
    if token.0 & LISTENER_TAG != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "relay token has the listener bit set",
        ));
    }
    if relays.contains_key(&token.0) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "relay token already bound",
        ));
    }
    Ok(())
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The earlier of the relay's next timer and the driver's.
fn next_timer(relay: &Relay, driver: Option<Instant>) -> Option<Instant> {
    earliest(relay.poll_timeout(), driver)
}

/// How long the loop may wait for io: until the next timer, at most `MAX_WAIT`.
fn wait_time(relay: &Relay, driver: Option<Instant>) -> Duration {
    match next_timer(relay, driver) {
        Some(t) => t.saturating_duration_since(Instant::now()).min(MAX_WAIT),
        None => MAX_WAIT,
    }
}

/// Reads every waiting command; true when the shard must stop (told to, or
/// the control side has gone).
fn read_commands(
    control: &ShardControl,
    index: usize,
    relay: &mut Relay,
    io: &mut impl Driver,
    offload: &mut Option<Offload>,
) -> bool {
    loop {
        match control.rx.try_recv() {
            Ok(ShardCommand::Shutdown) | Err(TryRecvError::Disconnected) => return true,
            Ok(ShardCommand::Stats(reply)) => {
                // What the XDP path forwarded up to now counts in the report.
                if let Some(o) = offload {
                    o.refresh_for_report(relay);
                }
                let offload = offload.as_ref();
                // The asker may have stopped waiting: nothing to do then.
                let _ = reply.send(ShardReport::new(
                    index,
                    relay,
                    io.stats(),
                    io.tcp_stats(),
                    offload,
                    0,
                ));
            }
            Ok(ShardCommand::Dtls(context)) => io.set_dtls(context),
            Ok(ShardCommand::Reload(settings, tls)) => {
                if let Some(config) = tls {
                    io.set_tls(config);
                }
                let revoked = relay.apply(settings, Instant::now());
                for id in relay.take_revoked_connections() {
                    tcp::close(id);
                }
                if revoked > 0 {
                    tracing::info!(
                        shard = index,
                        revoked,
                        "permissions and channels toward peers the new policy refuses ended"
                    );
                }
                tracing::debug!(shard = index, "configuration reloaded");
            }
            Ok(ShardCommand::Drain(alternate)) => {
                relay.start_drain(alternate);
                tracing::debug!(
                    shard = index,
                    allocations = relay.allocation_count(),
                    "draining"
                );
            }
            Err(TryRecvError::Empty) => return false,
        }
    }
}

/// Whether the state machine's timer or the driver's is due.
fn timer_due(relay: &Relay, driver: Option<Instant>) -> bool {
    next_timer(relay, driver).is_some_and(|t| t <= Instant::now())
}

/// One received datagram as both backends present it.
struct Inbound<'a> {
    /// The tag of the socket it arrived on.
    tag: u64,
    from: SocketAddr,
    /// The whole receive buffer: `PEER_HEADROOM` free bytes, the datagram,
    /// at least `PEER_TAILROOM` more.
    buf: &'a mut [u8],
    len: usize,
    /// Where an answer may be written (`MAX_REPLY` bytes).
    scratch: &'a mut [u8],
}

/// Where a send's bytes are, in the io layer's terms (the same two places).
fn tx_bytes(payload: Payload) -> TxBytes {
    match payload {
        Payload::Rx(range) => TxBytes::Rx(range),
        Payload::Reply(n) => TxBytes::Reply(n),
    }
}

/// The socket a tag names: a listener (`LISTENER_TAG | i`) or a relay
/// socket (its token). None for a listener index out of range.
fn tag_via(tag: u64) -> Option<Via> {
    if tag & LISTENER_TAG != 0 {
        u16::try_from(tag & !LISTENER_TAG)
            .ok()
            .map(|i| Via::Listener(ListenerId(i)))
    } else {
        Some(Via::Relay(RelayToken(tag)))
    }
}

/// The socket `via` names, while it exists: one look-up for every backend,
/// whatever it keeps per socket (a `UdpSocket`, a ring slot).
fn socket_of<'a, T>(via: Via, listeners: &'a [T], relays: &'a RelayMap<T>) -> Option<&'a T> {
    match via {
        Via::Listener(ListenerId(i)) => listeners.get(usize::from(i)),
        Via::Relay(token) => relays.get(&token.0),
        Via::Stream(_) | Via::Dtls(_) => None,
    }
}

/// Datagram in → state machine → at most one send out. Shared by every
/// backend: a datagram from a listener goes to `handle_client`, one from a
/// relay socket to `handle_peer`, which rewrites it in place. DTLS
/// listeners' datagrams, and what the relay sends to a DTLS client, go
/// through the shard's DTLS sessions, which send on their own.
fn dispatch(
    relay: &mut Relay,
    now: Now,
    rx: Inbound<'_>,
    sockets: &mut impl PeerSockets,
    dtls: &mut DtlsSessions,
) -> Option<Transmit> {
    match tag_via(rx.tag)? {
        Via::Listener(id) if dtls.listener(id).is_some() => {
            let listener = dtls.listener(id)?;
            let bytes = rx
                .buf
                .get(PEER_HEADROOM..PEER_HEADROOM.checked_add(rx.len)?)?;
            dtls.datagram(relay, now, listener, rx.from, bytes, sockets);
            None
        }
        Via::Relay(token) => match relay.handle_peer(now, token, rx.from, rx.buf, rx.len) {
            Some(Transmit {
                via: Via::Dtls(session),
                payload: Payload::Rx(range),
                ..
            }) => {
                if let Some(bytes) = rx.buf.get(range) {
                    dtls.send(session, bytes);
                }
                None
            }
            t => t,
        },
        Via::Listener(id) => relay.handle_client(
            now,
            Leg::Udp(id),
            rx.from,
            rx.buf,
            rx.len,
            rx.scratch,
            sockets,
        ),
        Via::Stream(_) | Via::Dtls(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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

    #[test]
    fn new_tokens_are_checked() {
        let mut m: RelayMap<()> = RelayMap::default();
        check_new_token(&m, RelayToken(5)).unwrap();
        m.insert(5, ());
        assert_eq!(
            check_new_token(&m, RelayToken(5)).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            check_new_token(&m, RelayToken(LISTENER_TAG | 1))
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
