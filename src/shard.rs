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
//! Both backends feed every datagram through `dispatch` — datagram in,
//! state machine, at most one send out — and differ only in how they receive,
//! where the bytes live and how sends are queued. Sockets are tagged the same
//! way in both: a relay socket by its `RelayToken` (< 2^63), listener `i` by
//! `LISTENER_TAG | i`.

mod control;
mod syscall;
mod uring;

pub use control::{channel, collect_reports, ShardCommand, ShardControl, ShardHandle};

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::TryRecvError;

use crate::io::{Backend, BatchLayout, IoStats};
use crate::policy::AllocationLedger;
use crate::turn::{
    ClientOutput, Gauges, ListenerId, Now, Relay, RelaySockets, RelayToken, Settings, Stats,
    TurnConfig, MAX_REPLY, PEER_HEADROOM, PEER_TAILROOM,
};

/// Datagrams per `recvmmsg` (and sends per flush) on the syscall backend.
pub const BATCH: usize = 32;
/// Largest datagram received whole.
pub const RECV_CAPACITY: usize = 2048;
/// Longest wait for io. Commands wake the shard at once; this only bounds
/// how late a shard notices that the control side has gone away.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Marks a listener's tag; relay tokens never have this bit.
const LISTENER_TAG: u64 = 1 << 63;
/// The tag of the shard's wake-up descriptor (no listener index is this
/// large: there are at most 2^16 listeners).
const WAKE_TAG: u64 = LISTENER_TAG | 1 << 62;

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
}

impl ShardReport {
    fn new(index: usize, relay: &Relay, io: &IoStats, allocations_at_exit: usize) -> ShardReport {
        ShardReport {
            index,
            turn: relay.stats().clone(),
            io: io.clone(),
            gauges: relay.gauges(Instant::now()),
            draining: relay.is_draining(),
            allocations_at_exit,
        }
    }
}

/// A worker on one of the backends.
pub enum Shard {
    Syscall(Box<syscall::SyscallShard>),
    Uring(Box<uring::UringShard>),
}

impl Shard {
    /// Creates the io driver, registers the listeners and allocates every
    /// buffer the shard will use. Call on the shard's own thread.
    pub fn new(spec: ShardSpec, backend: Backend) -> io::Result<Shard> {
        if spec.listeners.len() > usize::from(u16::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many listen addresses",
            ));
        }
        Ok(match backend {
            Backend::Syscall => Shard::Syscall(Box::new(syscall::SyscallShard::new(spec)?)),
            Backend::Uring => Shard::Uring(Box::new(uring::UringShard::new(spec)?)),
        })
    }

    /// Runs until told to shut down (or until every `ShardHandle` is gone);
    /// then deletes every allocation, closes every socket and returns the
    /// counters.
    pub fn run(self) -> ShardReport {
        match self {
            Shard::Syscall(s) => s.run(),
            Shard::Uring(s) => s.run(),
        }
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

/// How long the loop may wait for io: until the next timer, at most `MAX_WAIT`.
fn wait_time(relay: &Relay) -> Duration {
    match relay.poll_timeout() {
        Some(t) => t.saturating_duration_since(Instant::now()).min(MAX_WAIT),
        None => MAX_WAIT,
    }
}

/// Reads every waiting command; true when the shard must stop (told to, or
/// the control side has gone).
fn read_commands(control: &ShardControl, index: usize, relay: &mut Relay, io: &IoStats) -> bool {
    loop {
        match control.rx.try_recv() {
            Ok(ShardCommand::Shutdown) | Err(TryRecvError::Disconnected) => return true,
            Ok(ShardCommand::Stats(reply)) => {
                // The asker may have stopped waiting: nothing to do then.
                let _ = reply.send(ShardReport::new(index, relay, io, 0));
            }
            Ok(ShardCommand::Reload(settings)) => {
                let revoked = relay.apply(settings, Instant::now());
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

/// Whether the state machine's timer is due.
fn timer_due(relay: &Relay) -> bool {
    relay.poll_timeout().is_some_and(|t| t <= Instant::now())
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

/// Which socket a send leaves from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Via {
    Listener(usize),
    Relay(RelayToken),
}

/// Where the bytes of a send are.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Bytes {
    /// This range of the receive buffer (headroom included): no copy.
    Rx(Range<usize>),
    /// The first `n` bytes of the scratch area.
    Reply(usize),
}

/// The one send a datagram may cause.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Out {
    via: Via,
    dest: SocketAddr,
    bytes: Bytes,
}

/// Datagram in → state machine → at most one send out. Shared by both
/// backends: a datagram from a listener goes to `handle_client`, one from a
/// relay socket to `handle_peer`, which rewrites it in place.
fn dispatch(
    relay: &mut Relay,
    now: Now,
    rx: Inbound<'_>,
    sockets: &mut impl RelaySockets,
) -> Option<Out> {
    if rx.tag & LISTENER_TAG != 0 {
        let idx = (rx.tag & !LISTENER_TAG) as usize;
        let id = ListenerId(u16::try_from(idx).ok()?);
        let pkt = rx
            .buf
            .get(PEER_HEADROOM..PEER_HEADROOM.checked_add(rx.len)?)?;
        match relay.handle_client(now, id, rx.from, pkt, rx.scratch, sockets) {
            ClientOutput::Nothing => None,
            ClientOutput::Reply(n) => Some(Out {
                via: Via::Listener(idx),
                dest: rx.from,
                bytes: Bytes::Reply(n),
            }),
            ClientOutput::ToPeer {
                relay,
                peer,
                payload,
            } => Some(Out {
                via: Via::Relay(relay),
                dest: peer,
                // Straight from the receive buffer: no copy.
                bytes: Bytes::Rx(
                    payload.start.saturating_add(PEER_HEADROOM)
                        ..payload.end.saturating_add(PEER_HEADROOM),
                ),
            }),
        }
    } else {
        let out = relay.handle_peer(now, RelayToken(rx.tag), rx.from, rx.buf, rx.len)?;
        Some(Out {
            via: Via::Listener(usize::from(out.listener.0)),
            dest: out.client,
            bytes: Bytes::Rx(out.range),
        })
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
