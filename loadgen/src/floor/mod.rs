//! `floor`: the kernel floor — a bare TURN-shaped UDP forwarder.
//!
//! It has the socket layout of a relay (one client-facing socket, one relay
//! socket per allocation), the system calls of uturn's portable backend,
//! through the same code (uturn-io's `Poller` and `UdpBatch`: level-triggered
//! epoll over every socket, `recvmmsg` into a preallocated batch of 32
//! slots, `sendmmsg` grouped by socket; at most 8 batches per ready socket
//! per turn), and a fixed channel → peer map. On the
//! data path there is no TURN logic at all: no permissions, no lifetimes, no
//! authentication, no statistics beyond counters. What a relay achieves
//! divided by what the floor achieves is how close it is to what the kernel
//! allows on this machine.
//!
//! This file holds the flags, the floor's state (sockets, channel map,
//! allocations), [`run`] and the report printed when it stops. Each of the
//! two paths through the floor has a file of its own:
//!
//! * [`forward`]: the event loop and the data path, ChannelData both ways;
//! * [`control`]: the set-up handshake, minimal answers to Allocate,
//!   ChannelBind, CreatePermission, Refresh and Binding.
//!
//! At start it prints `floor: listening on udp <addr>` and then
//! `floor: ready` on stdout; it stops on SIGINT/SIGTERM or after
//! `--duration`, printing its counters (JSON with `--json`).

mod control;
mod forward;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use uturn_io::syscall::{Events, Poller, UdpBatch};
use uturn_io::{process, socket, BatchLayout, IoStats};
use uturn_stun::channel::CHANNEL_HEADER_LEN;

use crate::output::Output;

/// Same as uturn's shard: datagrams per `recvmmsg` and sends per flush.
const DEFAULT_BATCH: usize = 32;
/// Largest datagram received whole (uturn's receive capacity).
const RECV_CAPACITY: usize = 2048;
/// Readiness events per `epoll_wait`.
const EVENTS: usize = 256;
/// Bytes per reply slot (set-up responses are small).
const REPLY_LEN: usize = 256;
/// epoll key of the client-facing socket; relay keys are `generation << 32 | index`
/// with a generation of at least 1.
const LISTENER_KEY: u64 = 0;

/// The handshake and behaviour, shown after the flags in `floor --help`.
const FLOOR_HELP: &str = "\
The floor is a bare TURN-shaped forwarder: one client-facing UDP socket, one \
relay socket per allocation, epoll + recvmmsg/sendmmsg in batches of --batch \
(uturn's portable backend uses 32), a fixed channel map and no TURN logic on \
the data path. ChannelData from a client loses its 4-byte header and leaves \
the allocation's relay socket for the bound peer; a datagram from that peer \
gets the header written in front of it in place and goes to the client. \
Send/Data indications are not forwarded.

Set-up handshake (STUN, no authentication, no 401 round):
  Allocate          -> success: XOR-RELAYED-ADDRESS (new socket on --relay-ip:0),
                       XOR-MAPPED-ADDRESS, LIFETIME 600 (same relay on repeat)
  ChannelBind       -> success: CHANNEL-NUMBER + XOR-PEER-ADDRESS recorded as
                       channel->peer for the client, peer->channel for its relay
                       socket (400 if either is missing, 437 without allocation)
  CreatePermission  -> success (nothing recorded)
  Refresh           -> success; LIFETIME 0 deletes the allocation and closes
                       its relay socket
  Binding           -> success with XOR-MAPPED-ADDRESS (liveness probe)
  anything else     -> dropped
Drive it with `uturn-loadgen relay --no-auth` (or allocate/churn --no-auth).

It prints `floor: listening on udp ADDR` and then `floor: ready` on stdout, \
runs until SIGINT/SIGTERM or --duration, then prints its counters (one JSON \
object with --json). The global --cpu pins the floor itself to those cores.";

/// Arguments of `floor` (see [`FLOOR_HELP`] and the module documentation).
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = FLOOR_HELP)]
pub struct FloorArgs {
    /// Client-facing UDP address to listen on (address:port).
    #[arg(long, default_value = "127.0.0.1:3478")]
    pub listen: SocketAddr,
    /// IP address relay sockets are bound on (port chosen by the kernel).
    #[arg(long, default_value = "127.0.0.1")]
    pub relay_ip: IpAddr,
    /// Datagrams per recvmmsg/sendmmsg call (uturn uses 32).
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub batch: usize,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Most allocations (relay sockets) at once; further Allocates get 486.
    #[arg(long, default_value_t = 65_536)]
    pub max_allocations: usize,
}

/// What the floor did, printed when it stops.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FloorReport {
    pub listen: String,
    pub batch: usize,
    pub run_secs: f64,
    pub allocations_created: u64,
    pub allocations_at_exit: usize,
    pub channels_bound: u64,
    pub stun_requests: u64,
    /// ChannelData datagrams forwarded client → peer (queued for sending).
    pub to_peer: u64,
    /// Datagrams forwarded peer → client (queued for sending).
    pub to_client: u64,
    /// ChannelData on a channel the client has not bound, or with a bad length.
    pub dropped_unknown_channel: u64,
    /// Datagrams on a relay socket from a peer without a channel.
    pub dropped_unknown_peer: u64,
    /// Anything else on the client-facing socket.
    pub dropped_other: u64,
    pub epoll_wakeups: u64,
    pub io: IoCounters,
}

/// The batch's counters as the report shows them (the field names and
/// meanings of the floor's JSON, taken from uturn-io's [`IoStats`]).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IoCounters {
    pub recv_calls: u64,
    pub rx_datagrams: u64,
    pub rx_truncated: u64,
    pub send_calls: u64,
    pub tx_datagrams: u64,
    /// Send buffer full (EAGAIN): the rest of that socket's run is dropped.
    pub tx_would_block: u64,
    /// Any other send failure; that datagram is dropped.
    pub tx_errors: u64,
}

impl From<&IoStats> for IoCounters {
    fn from(s: &IoStats) -> IoCounters {
        IoCounters {
            recv_calls: s.recv_calls,
            rx_datagrams: s.rx_datagrams,
            rx_truncated: s.rx_truncated,
            send_calls: s.send_calls,
            tx_datagrams: s.tx_datagrams,
            tx_would_block: s.tx_would_block,
            // Everything else that dropped a queued send.
            tx_errors: s.tx_dropped() - s.tx_would_block,
        }
    }
}

/// Multiplicative hasher for the channel map (keys come from the network,
/// but this is a benchmark tool on loopback, not a server).
#[derive(Default)]
struct MulHasher(u64);

impl Hasher for MulHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MulHasher>>;

/// Where a client's channel goes: out of the relay socket of allocation
/// `alloc` (an index into `Floor::allocations`) to `peer`.
#[derive(Copy, Clone, Debug)]
struct Route {
    alloc: usize,
    peer: SocketAddr,
}

/// One allocation: its relay socket, its client and its peer → channel list
/// (short: a linear scan beats a hash for the one or few peers of a flow).
struct Allocation {
    sock: UdpSocket,
    generation: u32,
    client: SocketAddr,
    peers: Vec<(SocketAddr, u16)>,
}

/// Everything the floor owns while it runs: the sockets, the tables both
/// paths read ([`forward`] forwards with them, [`control`] fills them) and
/// the counters of the report.
struct Floor {
    listener: UdpSocket,
    relay_ip: IpAddr,
    max_allocations: usize,
    poller: Poller,
    events: Events,
    batch: UdpBatch,
    /// Indexed by the low 32 bits of a relay's epoll key.
    allocations: Vec<Option<Allocation>>,
    free: Vec<usize>,
    next_generation: u32,
    by_client: FastMap<SocketAddr, usize>,
    channels: FastMap<(SocketAddr, u16), Route>,
    /// Relay sockets deleted this turn: closed once every queued send has
    /// been flushed, so a descriptor number is never reused under a send.
    closing: Vec<UdpSocket>,
    report: FloorReport,
}

pub fn run(args: &FloorArgs, out: &Output) -> anyhow::Result<()> {
    process::pin_current_thread(&out.cpus).context("pinning to --cpu")?;
    process::install_stop_signals().context("installing signal handlers")?;
    socket::raise_fd_limit();
    let listener =
        UdpSocket::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let poller = Poller::new()?;
    poller.add(listener.as_fd(), LISTENER_KEY)?;
    let mut floor = Floor {
        listener,
        relay_ip: args.relay_ip,
        max_allocations: args.max_allocations,
        poller,
        events: Events::with_capacity(EVENTS),
        // The headroom takes the ChannelData header written in front of a
        // peer's datagram.
        batch: UdpBatch::new(BatchLayout {
            slots: args.batch,
            headroom: CHANNEL_HEADER_LEN,
            capacity: RECV_CAPACITY,
            tailroom: 0,
            reply_len: REPLY_LEN,
        }),
        allocations: Vec::with_capacity(args.max_allocations.min(16_384)),
        free: Vec::new(),
        next_generation: 1,
        by_client: FastMap::default(),
        channels: FastMap::default(),
        closing: Vec::new(),
        report: FloorReport {
            listen: local.to_string(),
            batch: args.batch,
            ..FloorReport::default()
        },
    };
    {
        let mut so = std::io::stdout().lock();
        writeln!(so, "floor: listening on udp {local}")?;
        writeln!(so, "floor: ready")?;
        so.flush()?;
    }
    let started = Instant::now();
    let deadline = args
        .duration
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(|d| started + Duration::from_secs_f64(d));
    floor.event_loop(deadline)?;
    floor.report.run_secs = started.elapsed().as_secs_f64();
    floor.report.allocations_at_exit = floor.by_client.len();
    floor.report.io = IoCounters::from(floor.batch.stats());
    print_report(&floor.report, out)
}

fn print_report(r: &FloorReport, out: &Output) -> anyhow::Result<()> {
    let mut so = std::io::stdout().lock();
    if out.json {
        writeln!(so, "{}", serde_json::to_string(r)?)?;
    } else {
        let secs = r.run_secs.max(1e-9);
        writeln!(so, "floor: stopped after {:.1} s", r.run_secs)?;
        writeln!(
            so,
            "  allocations {} (at exit {}), channels bound {}, set-up requests {}",
            r.allocations_created, r.allocations_at_exit, r.channels_bound, r.stun_requests
        )?;
        writeln!(
            so,
            "  forwarded client→peer {} ({:.0}/s), peer→client {} ({:.0}/s)",
            r.to_peer,
            r.to_peer as f64 / secs,
            r.to_client,
            r.to_client as f64 / secs
        )?;
        writeln!(
            so,
            "  dropped: unknown channel {}, unknown peer {}, other {}, send buffer full {}, send errors {}",
            r.dropped_unknown_channel,
            r.dropped_unknown_peer,
            r.dropped_other,
            r.io.tx_would_block,
            r.io.tx_errors
        )?;
        writeln!(
            so,
            "  syscalls: epoll_wait {}, recvmmsg {} ({:.1} dgrams/call), sendmmsg {} ({:.1} dgrams/call)",
            r.epoll_wakeups,
            r.io.recv_calls,
            r.io.rx_datagrams as f64 / r.io.recv_calls.max(1) as f64,
            r.io.send_calls,
            r.io.tx_datagrams as f64 / r.io.send_calls.max(1) as f64
        )?;
    }
    so.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uturn_stun::{
        attr, Attribute, ChannelData, Class, Message, MessageWriter, Method, TransactionId,
    };

    fn request(method: Method, tid: &TransactionId, attrs: &[Attribute<'_>]) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, tid).unwrap();
        for a in attrs {
            w.attr(a).unwrap();
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    fn exchange(sock: &UdpSocket, server: SocketAddr, req: &[u8]) -> Vec<u8> {
        sock.send_to(req, server).unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// Full handshake and both directions through a floor on a thread.
    #[test]
    fn handshake_and_forwarding() {
        let port_probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let listen = port_probe.local_addr().unwrap();
        drop(port_probe);
        let args = FloorArgs {
            listen,
            relay_ip: "127.0.0.1".parse().unwrap(),
            batch: 32,
            duration: Some(3.0),
            max_allocations: 4,
        };
        let out = Output {
            json: true,
            cpus: Vec::new(),
        };
        let t = std::thread::spawn(move || run(&args, &out).unwrap());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // The floor may not be bound yet: retry the Allocate a few times.
        let tid = [1u8; 12];
        let req = request(Method::Allocate, &tid, &[Attribute::RequestedTransport(17)]);
        let mut resp = None;
        for _ in 0..20 {
            client.send_to(&req, listen).unwrap();
            let mut buf = vec![0u8; 512];
            client
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            if let Ok((n, _)) = client.recv_from(&mut buf) {
                buf.truncate(n);
                resp = Some(buf);
                break;
            }
        }
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let resp = resp.expect("no Allocate response");
        let m = Message::parse(&resp).unwrap();
        assert_eq!((m.method(), m.class()), (Method::Allocate, Class::Success));
        let relayed =
            attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap().value, &tid)
                .unwrap();
        let mapped =
            attr::decode_xor_address(m.get(attr::XOR_MAPPED_ADDRESS).unwrap().value, &tid).unwrap();
        assert_eq!(mapped, client.local_addr().unwrap());
        assert_eq!(m.get(attr::LIFETIME).unwrap().value, &600u32.to_be_bytes());

        let bind = |tid: &TransactionId| {
            let attrs = [
                Attribute::ChannelNumber(0x4001),
                Attribute::XorPeerAddress(peer.local_addr().unwrap()),
            ];
            exchange(&client, listen, &request(Method::ChannelBind, tid, &attrs))
        };
        let resp = bind(&[2u8; 12]);
        let m = Message::parse(&resp).unwrap();
        assert_eq!(
            (m.method(), m.class()),
            (Method::ChannelBind, Class::Success)
        );

        // client → peer: header stripped.
        client
            .send_to(
                &[0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0],
                listen,
            )
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], relayed));
        // peer → client: header added.
        peer.send_to(b"world!", relayed).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        let cd = ChannelData::parse(&buf[..n]).unwrap();
        assert_eq!((cd.number, cd.payload), (0x4001, &b"world!"[..]));

        // Refresh with LIFETIME 0 deletes: the channel is gone.
        let tid = [3u8; 12];
        let resp = exchange(
            &client,
            listen,
            &request(Method::Refresh, &tid, &[Attribute::Lifetime(0)]),
        );
        let m = Message::parse(&resp).unwrap();
        assert_eq!((m.method(), m.class()), (Method::Refresh, Class::Success));
        let resp = bind(&[4u8; 12]);
        assert_eq!(Message::parse(&resp).unwrap().class(), Class::Error);
        t.join().unwrap();
    }
}
