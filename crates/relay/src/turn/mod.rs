//! The TURN state machine (RFC 8656), sans-IO: no sockets, no clock, no
//! threads. Inputs carry `now`; outputs say what to send where.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::Authenticator;
use crate::policy::{AllocationLedger, PeerPolicy, Quotas, RateLimiter};
pub use crate::Transport;
use uturn_stun::{self as stun, PacketKind};

use allocation::{FiveTuple, Table};
use ports::PortPool;
use rng::Rng;

pub use event::{Event, Ignore, Observer};
pub use offload::{Route, RouteChange, RouteKey, Traffic};
pub use stats::{Gauges, Stats, TcpCounts, TransportCounts, ERROR_CODES};
pub use tcp::{
    peek_connection_bind, Bind, ConnectionId, BIND_TIMEOUT, CONNECT_TIMEOUT, MAX_SHARDS,
};
pub(crate) use transmit::Answer;
pub use transmit::{Payload, Transmit, Via};

mod allocation;
mod control;
mod data;
mod event;
mod offload;
mod ports;
mod reply;
mod rng;
mod stats;
mod tcp;
#[cfg(test)]
mod tests;
mod transmit;

/// Bytes the io layer leaves free in front of a peer datagram so that a
/// ChannelData header or a Data indication prefix is written in place.
pub const PEER_HEADROOM: usize = 48;
/// Bytes the io layer leaves free after a peer datagram (padding).
pub const PEER_TAILROOM: usize = 4;
/// Largest response the control path writes.
pub const MAX_REPLY: usize = 1280;

/// The time, twice: a monotonic instant for timers and the wall clock (unix
/// seconds) for nonces and REST credential expiry.
#[derive(Copy, Clone, Debug)]
pub struct Now {
    pub at: Instant,
    pub unix: u64,
}

/// Which UDP listener socket a client datagram arrived on. Chosen by the io
/// layer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(pub u16);

/// One TCP or TLS connection from a client. Chosen by the io layer, unique
/// among the shard's open connections (it may be reused once
/// [`Relay::connection_closed`] has been called for it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u32);

/// The server side of a client's 5-tuple: the UDP listener its datagrams
/// arrive on, the stream connection its frames arrive on, or its DTLS
/// session. With the
/// client's address it names one allocation at most (RFC 8656 §2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    Udp(ListenerId),
    Tcp(ConnId),
    Tls(ConnId),
    /// A DTLS session (its own id space, chosen by the io layer like a
    /// connection's; closed with [`Relay::connection_closed`] too).
    Dtls(ConnId),
}

impl Leg {
    pub fn transport(self) -> Transport {
        match self {
            Leg::Udp(_) => Transport::Udp,
            Leg::Tcp(_) => Transport::Tcp,
            Leg::Tls(_) => Transport::Tls,
            Leg::Dtls(_) => Transport::Dtls,
        }
    }

    /// The socket replies to the client leave from.
    pub fn via(self) -> Via {
        match self {
            Leg::Udp(listener) => Via::Listener(listener),
            Leg::Tcp(conn) | Leg::Tls(conn) => Via::Stream(conn),
            Leg::Dtls(session) => Via::Dtls(session),
        }
    }

    /// Whether messages to the client go on a byte stream, where
    /// ChannelData is padded to a multiple of 4 bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        matches!(self, Leg::Tcp(_) | Leg::Tls(_))
    }
}

/// Names one relay socket; chosen by the state machine, echoed by the io
/// layer with every datagram that socket receives.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelayToken(pub u64);

/// The io layer's side of relay sockets.
pub trait RelaySockets {
    /// Binds a UDP socket to `addr` and starts receiving on it, tagging its
    /// datagrams with `token`. `AddrInUse` makes the state machine try
    /// another port.
    fn bind(
        &mut self,
        addr: SocketAddr,
        token: RelayToken,
        dont_fragment: bool,
    ) -> std::io::Result<()>;
    /// Closes the socket bound for `token` (a TCP allocation's: its
    /// listener).
    fn close(&mut self, token: RelayToken);

    /// RFC 6062: listens for peers' TCP connections on `addr`, a TCP
    /// allocation's relayed address, tagging them with `token`; they are
    /// offered to `Relay::tcp_accepted`. The io layer that cannot (the
    /// default) makes TCP allocations fail with 508.
    fn listen_tcp(&mut self, addr: SocketAddr, token: RelayToken) -> std::io::Result<()> {
        let _ = (addr, token);
        Err(std::io::ErrorKind::Unsupported.into())
    }
    /// RFC 6062: starts a TCP connection from `from` (the relayed address
    /// of `token`'s listener) to `peer`, named `id`; its outcome goes to
    /// `Relay::tcp_connected`. An error answers the Connect with 447 at once.
    fn connect_tcp(
        &mut self,
        token: RelayToken,
        id: ConnectionId,
        from: SocketAddr,
        peer: SocketAddr,
    ) -> std::io::Result<()> {
        let _ = (token, id, from, peer);
        Err(std::io::ErrorKind::Unsupported.into())
    }
    /// RFC 6062: closes peer connection `id`, and the client data
    /// connection bound to it if there is one.
    fn close_tcp(&mut self, id: ConnectionId) {
        let _ = id;
    }
}

/// What one shard's state machine is built with and keeps until a restart:
/// its relay addresses and its slice of the relay ports (sockets depend on
/// them).
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// Relay address for IPv4 allocations (None: IPv4 relays unsupported → 440).
    pub relay_v4: Option<Ipv4Addr>,
    /// Relay address for IPv6 allocations (None: IPv6 relays unsupported → 440).
    pub relay_v6: Option<Ipv6Addr>,
    /// This shard's slice of the relay port range.
    pub ports: RangeInclusive<u16>,
}

/// The settings a reload may change, all in one value: given to
/// `Relay::new`, replaced whole by `Relay::apply`. Every shard gets a clone;
/// the credentials and the peer policy are shared, immutable snapshots.
#[derive(Clone)]
pub struct Settings {
    pub auth: Arc<Authenticator>,
    pub policy: Arc<PeerPolicy>,
    /// The per-allocation permission and channel limits (the per-user and
    /// total ones are the shared `AllocationLedger`'s).
    pub quotas: Quotas,
    /// Upper bound for requested lifetimes (RFC 8656 §7.2: default 600 s).
    pub max_lifetime: Duration,
    /// SOFTWARE attribute value in responses (off by default).
    pub software: Option<String>,
    /// Unauthenticated replies allowed per source per second, and the burst.
    pub unauth_rate: u32,
    pub unauth_burst: u32,
}

/// A RESERVATION-TOKEN handed out with an even port (RFC 8656 §7.2): the
/// next port stays out of the pool until redeemed or expired.
struct Reservation {
    token: [u8; 8],
    port: u16,
    expires: Instant,
}

/// RFC 8656 §7.2: a reservation is kept for about 30 seconds.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// How often expiry is swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One shard's TURN server state.
pub struct Relay {
    cfg: TurnConfig,
    settings: Settings,
    ledger: Arc<AllocationLedger>,
    table: Table,
    ports: PortPool,
    reservations: Vec<Reservation>,
    limiter: RateLimiter,
    rng: Rng,
    stats: Stats,
    next_sweep: Option<Instant>,
    admission: Admission,
    observer: Box<dyn Observer>,
    /// Route changes for the XDP path (offload.rs), off by default.
    offload: offload::Offload,
    /// The shard index CONNECTION-IDs carry (tcp.rs).
    shard: u32,
    /// TCP allocations' peer connections: CONNECTION-ID → allocation slot.
    tcp_ids: std::collections::HashMap<u32, u32>,
    /// Peer connections a narrowed policy ended, for the io layer to close.
    tcp_revoked: Vec<ConnectionId>,
    /// Connects the sweep gave up on, whose 447 is still to be written
    /// (`take_connect_timeout`).
    tcp_timed_out: Vec<(allocation::FiveTuple, tcp::Delayed)>,
}

/// Whether new allocations are made.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Admission {
    Open,
    /// Draining: new allocations are refused, with 300 naming `alternate`
    /// when there is one of the client's family, else with 508.
    Draining {
        alternate: Option<SocketAddr>,
    },
}

impl Relay {
    pub fn new(cfg: TurnConfig, settings: Settings, ledger: Arc<AllocationLedger>) -> Self {
        let ports = PortPool::new(*cfg.ports.start(), *cfg.ports.end());
        // Every allocation holds at least one relay port of this shard.
        let most =
            (usize::from(*cfg.ports.end()) + 1).saturating_sub(usize::from(*cfg.ports.start()));
        let limiter = RateLimiter::new(settings.unauth_rate, settings.unauth_burst);
        Relay {
            cfg,
            settings,
            ledger,
            table: Table::with_capacity(most),
            ports,
            reservations: Vec::new(),
            limiter,
            rng: Rng::from_os(),
            stats: Stats::default(),
            next_sweep: None,
            admission: Admission::Open,
            observer: Box::new(Ignore),
            offload: offload::Offload::default(),
            shard: 0,
            tcp_ids: std::collections::HashMap::new(),
            tcp_revoked: Vec::new(),
            tcp_timed_out: Vec::new(),
        }
    }

    /// Seeds the generator behind port choice and Data indication
    /// transaction ids, so that a run can be replayed exactly (the fuzz
    /// harness). By default it is seeded from the OS.
    pub fn seed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    /// Hands this relay's events to `observer` from now on (by default they
    /// are ignored).
    pub fn set_observer(&mut self, observer: Box<dyn Observer>) {
        self.observer = observer;
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Puts `settings` in force (a reload); every allocation stays.
    /// * Credentials: requests are checked against the new ones from now on.
    /// * Peer policy: permissions and channels toward peers the new policy
    ///   refuses end at once, so that a narrowed policy stops relaying to
    ///   them now rather than when they expire (up to 10 minutes later).
    ///   So do TCP allocations' peer connections to them (RFC 6062): the
    ///   caller closes them (`take_revoked_connections`).
    /// * Quotas: an allocation over a lowered permission or channel limit
    ///   keeps what it has and cannot add.
    /// * Longest lifetime: live allocations keep theirs until their next
    ///   Refresh.
    /// * Rate of unauthenticated replies: the limiter starts afresh only
    ///   when the rate or the burst changes.
    ///
    /// Returns how many permissions and channels ended.
    pub fn apply(&mut self, settings: Settings, now: Instant) -> usize {
        let old = (self.settings.unauth_rate, self.settings.unauth_burst);
        if (settings.unauth_rate, settings.unauth_burst) != old {
            self.limiter = RateLimiter::new(settings.unauth_rate, settings.unauth_burst);
        }
        self.settings = settings;
        let policy = &self.settings.policy;
        let ended = self.table.revoke(|peer| policy.check(peer).is_ok(), now);
        // The XDP path stops relaying to them at the same moment.
        self.routes_lapsed(now);
        ended + self.tcp_revoke()
    }

    /// Refuses new allocations from now on (drain): 300 (Try Alternate)
    /// naming `alternate` to clients of its address family, 508 to others.
    /// Existing allocations are served as before.
    pub fn start_drain(&mut self, alternate: Option<SocketAddr>) {
        self.admission = Admission::Draining { alternate };
    }

    pub fn is_draining(&self) -> bool {
        self.admission != Admission::Open
    }

    /// Live allocations, permissions and channel bindings at `now`.
    pub fn gauges(&self, now: Instant) -> Gauges {
        let mut g = Gauges::default();
        for i in self.table.indices() {
            let Some(a) = self.table.get(i).filter(|a| now < a.expires) else {
                continue;
            };
            g.allocations += 1;
            g.permissions += a.perms.iter().filter(|p| now < p.expires).count() as u64;
            g.channels += a.channels.iter().filter(|c| now < c.expires).count() as u64;
        }
        g
    }

    /// A datagram from `client` on a UDP listener, or one whole frame (STUN
    /// or ChannelData with its padding) from a stream connection, both
    /// named by `leg`; it sits at `buf[PEER_HEADROOM..PEER_HEADROOM + len]`
    /// (the receive buffer's layout for both directions, see
    /// [`handle_peer`](Self::handle_peer)). Answers are written into
    /// `scratch` (at least `MAX_REPLY` bytes).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_client(
        &mut self,
        now: Now,
        leg: Leg,
        client: SocketAddr,
        buf: &[u8],
        len: usize,
        scratch: &mut [u8],
        sockets: &mut impl RelaySockets,
    ) -> Option<Transmit> {
        let Some(pkt) = PEER_HEADROOM
            .checked_add(len)
            .and_then(|end| buf.get(PEER_HEADROOM..end))
        else {
            self.stats.drop_malformed += 1;
            return None;
        };
        let five = FiveTuple { leg, client };
        let answer = match stun::message::classify(pkt) {
            PacketKind::ChannelData => self.channel_data_from_client(now, five, pkt),
            PacketKind::Stun => self.control(now, five, pkt, scratch, sockets),
            PacketKind::Other => {
                self.stats.drop_malformed += 1;
                Answer::Nothing
            }
        };
        match answer {
            Answer::Nothing => None,
            Answer::Reply(n) => Some(Transmit {
                via: leg.via(),
                to: client,
                payload: Payload::Reply(n),
            }),
            Answer::ToPeer {
                relay,
                peer,
                payload,
            } => Some(Transmit {
                via: Via::Relay(relay),
                to: peer,
                payload: Payload::Rx(PEER_HEADROOM + payload.start..PEER_HEADROOM + payload.end),
            }),
        }
    }

    /// The client's connection `leg` has closed (either side, any reason):
    /// its allocation, if it has one, is deleted and its relay ports freed
    /// at once. Over TCP and TLS the allocation belongs to the connection
    /// (RFC 8656 §3.1: its 5-tuple is the connection's). Returns whether an
    /// allocation was deleted.
    pub fn connection_closed(
        &mut self,
        leg: Leg,
        client: SocketAddr,
        sockets: &mut impl RelaySockets,
    ) -> bool {
        let Some(index) = self.table.index_of(&FiveTuple { leg, client }) else {
            return false;
        };
        self.delete(index, sockets, "connection closed");
        self.stats.allocations_deleted += 1;
        true
    }

    /// Whether `client` on `leg` holds a live allocation (a stream
    /// connection without one is closed after a while).
    pub fn has_allocation(&self, now: Instant, leg: Leg, client: SocketAddr) -> bool {
        self.table
            .by_client(&FiveTuple { leg, client })
            .is_some_and(|(_, a)| now < a.expires)
    }

    /// Expires allocations, permissions, channels and reservations.
    pub fn handle_timeout(&mut self, now: Now, sockets: &mut impl RelaySockets) {
        match self.next_sweep {
            Some(t) if now.at >= t => {}
            _ => return,
        }
        let expired: Vec<u32> = self
            .table
            .indices()
            .filter(|&i| self.table.get(i).is_some_and(|a| now.at >= a.expires))
            .collect();
        for index in expired {
            self.delete(index, sockets, "expired");
            self.stats.allocations_expired += 1;
        }
        // Peer connections whose ConnectionBind or connect is overdue.
        if !self.tcp_ids.is_empty() {
            let tcp: Vec<u32> = self
                .table
                .indices()
                .filter(|&i| self.table.get(i).is_some_and(|a| a.tcp.is_some()))
                .collect();
            for index in tcp {
                self.tcp_sweep(index, now.at, sockets);
            }
        }
        // Before the sweep forgets expired permissions and channels.
        self.routes_lapsed(now.at);
        self.table.sweep(now.at);
        let ports = &mut self.ports;
        self.reservations.retain(|r| {
            let keep = now.at < r.expires;
            if !keep {
                ports.release(r.port);
            }
            keep
        });
        self.next_sweep = self.wants_sweep().then(|| now.at + SWEEP_INTERVAL);
    }

    fn wants_sweep(&self) -> bool {
        self.table.len() > 0 || !self.reservations.is_empty()
    }

    fn schedule_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    /// When `handle_timeout` next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live allocations on this shard.
    pub fn allocation_count(&self) -> usize {
        self.table.len()
    }

    /// Deletes every allocation, closing their sockets (shutdown).
    pub fn close_all(&mut self, sockets: &mut impl RelaySockets) {
        let all: Vec<u32> = self.table.indices().collect();
        for index in all {
            self.delete(index, sockets, "closed at shutdown");
            self.stats.allocations_deleted += 1;
        }
        for r in self.reservations.drain(..) {
            self.ports.release(r.port);
        }
        self.next_sweep = None;
    }

    /// Removes an allocation: sockets closed, ports and quota given back.
    fn delete(&mut self, index: u32, sockets: &mut impl RelaySockets, why: &'static str) {
        let tokens = [
            self.table.token(index, stun::AddressFamily::V4),
            self.table.token(index, stun::AddressFamily::V6),
        ];
        let Some(alloc) = self.table.remove(index) else {
            return;
        };
        self.routes_removed(&alloc);
        Self::tcp_release(&mut self.tcp_ids, alloc.tcp.as_deref(), sockets);
        for (port, token) in alloc.relay_ports.iter().zip(tokens) {
            if let Some(port) = port {
                sockets.close(token);
                self.ports.release(port.get());
            }
        }
        self.ledger.release(alloc.owner.quota_id());
        self.observer.event(Event::AllocationEnded {
            user: alloc.owner.username(),
            client: alloc.five.client,
            why,
        });
    }
}
