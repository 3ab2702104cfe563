//! `relay`: relayed packets per second, loss, reordering and one-way latency.
//!
//! N TURN clients each allocate and bind a channel (or only create a
//! permission, with `--mode indication`) to a peer socket the generator
//! owns. Then, for `--duration` seconds, sender threads offer packets at an
//! open-loop rate and receiver threads count what arrives:
//!
//! * **c2p** — the client sends ChannelData (or a Send indication) to the
//!   server; the peer socket receives the bare payload from the relayed
//!   address.
//! * **p2c** — the peer socket sends the bare payload to the relayed
//!   address; the client receives ChannelData (or a Data indication).
//!
//! Every payload starts with the 16-byte header of [`crate::payload`] (flow,
//! sequence, CLOCK_MONOTONIC send time). The receivers measure delivered
//! packets and bytes, reordering (a sequence number lower than the highest
//! seen for that flow and direction) and one-way latency in an HDR
//! histogram. Loss is sent − delivered after a 300 ms drain.
//!
//! # Pacing
//! The total rate is divided among sender threads, and each thread follows
//! a token schedule: at time t it may have sent `t × rate` packets. It sends
//! whenever a burst of `rate × 250 µs` packets (at least 1, at most
//! `--batch`) is due, to the next flow and direction in round-robin order,
//! so the load is spread evenly over time and flows; a thread that falls
//! behind catches up in full batches. `--rate max` sends full batches back
//! to back.
//!
//! # System calls
//! Senders use one `sendmmsg` per burst (a burst goes to one socket, as
//! `sendmmsg` only batches on one socket), or with `--gso` one `sendmsg`
//! with `UDP_SEGMENT` per burst. Receivers block in `epoll_wait` only when
//! every socket is empty, and then drain each ready socket with
//! non-blocking `recvmmsg` batches: the server pays at most one wake-up of
//! the receiver per burst it sends, never one per packet.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use uturn::stun::{attr, channel, ChannelData, Class, Message, MessageWriter, Method};

use crate::client::{self, Engine, FlowError, TurnFlow};
use crate::cpu;
use crate::creds::Auth;
use crate::output::{fmt_count, fmt_pct, Output, Table};
use crate::payload;
pub use crate::stats::Percentiles;
use crate::stats::{self, Rng};
use crate::sys::{self, RawAddr, RecvBatch, SendBatch};

/// Which way packets travel through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client → server → peer.
    C2p,
    /// Peer → server → client.
    P2c,
    /// Both, half of the rate each.
    Both,
}

/// How data is framed between client and server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// ChannelData (after ChannelBind).
    Channel,
    /// Send and Data indications (after CreatePermission only).
    Indication,
}

/// An offered rate: packets per second, or as fast as the generator can.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Max,
    Pps(f64),
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        // Accept 200k / 1.5M as a convenience.
        let (num, mult) = match s.char_indices().last() {
            Some((i, 'k' | 'K')) => (&s[..i], 1e3),
            Some((i, 'm' | 'M')) => (&s[..i], 1e6),
            _ => (s, 1.0),
        };
        let v: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a rate (packets per second, or \"max\")"))?;
        let v = v * mult;
        if !(v.is_finite() && v > 0.0) {
            return Err("the rate must be a positive number of packets per second".into());
        }
        Ok(Rate::Pps(v))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => write!(f, "max"),
            Rate::Pps(v) => write!(f, "{v}"),
        }
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::Max => s.serialize_str("max"),
            Rate::Pps(v) => s.serialize_f64(*v),
        }
    }
}

/// Shows `NAME:***` instead of the password in JSON output.
pub(crate) fn mask_user<S: serde::Serializer>(u: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => s.serialize_str(&format!("{}:***", u.split(':').next().unwrap_or(""))),
        None => s.serialize_none(),
    }
}

/// Shows `***` instead of a secret in JSON output.
pub(crate) fn mask_secret<S: serde::Serializer>(
    v: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

/// Relayed packets: N clients with a channel (or permission) each, each
/// bound to a peer socket of the generator; open-loop rate or max.
///
/// Reports offered and delivered packets per second, loss (sent −
/// delivered after a 300 ms drain), reordering, one-way latency
/// percentiles (µs), the generator's own CPU use and, with --server-pid,
/// the server's CPU seconds and packets per server-CPU-second.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct RelayArgs {
    /// TURN server to load: address:port over UDP (loopback only).
    #[arg(long, default_value = "127.0.0.1:3478", value_name = "ADDR:PORT")]
    pub server: SocketAddr,
    /// Long-term credentials for every client, as NAME:PASSWORD.
    #[arg(long, value_name = "NAME:PASSWORD", conflicts_with = "rest_secret")]
    #[serde(serialize_with = "mask_user")]
    pub user: Option<String>,
    /// TURN REST shared secret: each client mints `<now+3600>:lg<i>` with
    /// password base64(HMAC-SHA1(secret, username)).
    #[arg(long, value_name = "SECRET")]
    #[serde(serialize_with = "mask_secret")]
    pub rest_secret: Option<String>,
    /// Realm for the key derivation (default: the REALM of the server's 401).
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
    /// Number of clients (allocations), each with its own channel and peer.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub flows: usize,
    /// Application payload per packet, in bytes (at least 16: the header
    /// with flow, sequence and send time). ChannelData adds 4 bytes on the
    /// client side, indications 36 (IPv4).
    #[arg(long, default_value_t = 120, value_name = "BYTES")]
    pub payload: usize,
    /// c2p: client→peer; p2c: peer→client; both: half the rate each way.
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,
    /// Total offered rate in packets per second (all flows and directions;
    /// `20k`, `1.5M` accepted), or `max` to send as fast as batches go.
    #[arg(long, default_value = "10000", value_name = "PPS|max")]
    pub rate: Rate,
    /// Length of the measured sending window, in seconds (at most 280:
    /// permissions last 300 s and are not refreshed during a run).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// channel: ChannelData after ChannelBind; indication: Send/Data
    /// indications after CreatePermission.
    #[arg(long, value_enum, default_value_t = Mode::Channel)]
    pub mode: Mode,
    /// Send each burst as ONE sendmsg with UDP_SEGMENT (GSO) instead of
    /// sendmmsg: far cheaper for the generator, but the server's socket
    /// then receives bursts of equal-sized datagrams at once.
    #[arg(long)]
    pub gso: bool,
    /// Datagrams per sendmmsg/recvmmsg call (and largest burst), 1–1024.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch: usize,
    /// Sender threads, and as many receiver threads (flows are divided
    /// among them). Pin them with the global --cpu.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Process id of the server: reports its CPU seconds during the run
    /// and delivered packets per server-CPU-second.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Address the generator's peer sockets are bound on (loopback only).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub peer_ip: IpAddr,
    /// Loopback source addresses the clients are spread over, counted up
    /// from 127.0.0.1 (client i uses address i mod N); 0 gives every client
    /// its own address, 1 puts all on 127.0.0.1. Servers that limit or
    /// rate-limit per source address (uturn answers at most 20
    /// unauthenticated requests per second per address by default) then
    /// see as many clients as there are flows. IPv6: always ::1.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub client_ips: usize,
    /// Skip the 401 round and send no credentials (for `floor`, which
    /// answers Allocate/CreatePermission/ChannelBind without them).
    #[arg(long)]
    pub no_auth: bool,
}

impl Default for RelayArgs {
    /// The command-line defaults.
    fn default() -> Self {
        defaults()
    }
}

/// The defaults clap would give `T` with no flags.
pub(crate) fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults"));
    let m = cmd
        .try_get_matches_from(["defaults"])
        .expect("every flag has a default");
    T::from_arg_matches(&m).expect("defaults parse")
}

/// One direction's figures.
#[derive(serde::Serialize, Clone, Debug)]
pub struct DirReport {
    /// "c2p" or "p2c".
    pub direction: String,
    pub sent: u64,
    pub delivered: u64,
    pub delivered_pps: f64,
    /// Payload bytes delivered.
    pub bytes: u64,
    pub loss_ratio: f64,
    pub reordered: u64,
    /// One-way latency, microseconds.
    pub latency_us: Percentiles,
}

/// The result of one relay run.
#[derive(serde::Serialize, Clone, Debug)]
pub struct RelayReport {
    pub scenario: &'static str,
    pub args: RelayArgs,
    /// The target rate (packets/s), or `None` with `--rate max`.
    pub target_pps: Option<f64>,
    /// What the generator actually offered: sent / duration.
    pub offered_pps: f64,
    pub sent: u64,
    pub delivered: u64,
    pub delivered_pps: f64,
    /// Payload bytes delivered (all directions).
    pub bytes: u64,
    /// Delivered payload, megabits per second.
    pub delivered_mbit_s: f64,
    /// (sent − delivered) / sent.
    pub loss_ratio: f64,
    pub reordered: u64,
    /// One-way latency, microseconds, both directions together.
    pub latency_us: Percentiles,
    pub per_direction: Vec<DirReport>,
    /// CPU seconds of the whole generator process while sending.
    pub generator_cpu_secs: f64,
    /// generator_cpu_secs / sending seconds: cores used on average
    /// (1.0 = one core saturated).
    pub generator_cpu_util: f64,
    /// Per sender thread: fraction of one core used while sending
    /// (1.0 = saturated).
    pub sender_cpu_util: Vec<f64>,
    /// Per receiver thread: fraction of one core used, sending and drain.
    pub receiver_cpu_util: Vec<f64>,
    /// Every CPU's load while sending (from /proc/stat), including
    /// softirq time that no process is charged for: shows whether the
    /// generator's and the server's cores were saturated, and whether
    /// anything else ran on them.
    pub cores: Vec<cpu::CoreLoad>,
    /// True when the generator, not the server, set the figure: the target
    /// rate was not reached, or at `max` nothing was lost.
    pub generator_limited: bool,
    /// Datagrams the kernel dropped at the generator's own receive sockets
    /// (counted in `loss_ratio`, but not the server's fault).
    pub generator_rx_drops: u64,
    /// Datagrams the kernel dropped at the server's listening socket and
    /// its relayed-address sockets (full receive buffers), from
    /// /proc/net/udp: loss before the server ever saw the packet.
    pub server_socket_drops: u64,
    /// Datagrams the generator's sockets refused (full buffer or error).
    pub send_failures: u64,
    /// Server CPU seconds (all threads) from the start of sending to the
    /// end of the drain; needs --server-pid.
    pub server_cpu_secs: Option<f64>,
    /// server_cpu_secs / that window: cores the server used.
    pub server_cpu_util: Option<f64>,
    /// delivered / server_cpu_secs.
    pub delivered_per_server_cpu_sec: Option<f64>,
    /// The measured sending window, seconds.
    pub duration_secs: f64,
    /// Wait after sending stopped, seconds.
    pub drain_secs: f64,
    pub gso: bool,
    /// With --gso: whether the server's sockets coalesce with UDP_GRO.
    pub server_udp_gro: Option<String>,
    /// How the senders send.
    pub sender: String,
    /// How the receivers receive.
    pub receiver: String,
    pub sender_threads: usize,
    pub receiver_threads: usize,
    /// Peer sockets used (one per flow unless the descriptor limit forced sharing).
    pub peer_sockets: usize,
    /// Time to set up every flow, seconds.
    pub setup_secs: f64,
    pub setup_requests: u64,
    pub setup_retransmits: u64,
    /// Flows whose Refresh(0) failed at the end.
    pub teardown_failures: usize,
    /// Datagrams received that were not ours (bad header, unknown flow).
    pub foreign_datagrams: u64,
    pub notes: Vec<String>,
}

/// Longest relay run: permissions (300 s) are not refreshed during a run.
const MAX_DURATION_SECS: f64 = 280.0;
/// Wait for packets still in flight after sending stops.
const DRAIN: Duration = Duration::from_millis(300);
/// Pacing granularity: a burst is what falls due in this time.
const TICK_SECS: f64 = 250e-6;
/// Requests in flight during set-up and teardown.
const SETUP_CONCURRENCY: usize = 256;
/// Total receive-buffer budget over all sockets.
const SOCKET_BUFFER_BUDGET: usize = 256 << 20;

/// recvmmsg batches taken from one ready socket before the next.
const MAX_BATCHES_PER_READY: usize = 8;

/// Index of a direction in per-direction arrays.
const C2P: usize = 0;
const P2C: usize = 1;
const DIR_NAMES: [&str; 2] = ["c2p", "p2c"];

/// Runs the relay scenario and prints its report.
pub fn run(args: &RelayArgs, out: &Output) -> anyhow::Result<()> {
    let r = run_relay(args, out, false)?;
    if out.json {
        out.print_json(&r)
    } else {
        print_report(&r);
        Ok(())
    }
}

/// Everything the threads share about the flows.
struct FlowInfo<'a> {
    client: BorrowedFd<'a>,
    peer: BorrowedFd<'a>,
    peer_addr: SocketAddr,
    relayed: SocketAddr,
    channel: u16,
}

/// Runs the relay scenario; `quiet` suppresses the progress line and
/// messages (for callers that run many).
pub fn run_relay(args: &RelayArgs, out: &Output, quiet: bool) -> anyhow::Result<RelayReport> {
    validate(args)?;
    let auth = Auth::from_flags(
        args.user.as_deref(),
        args.rest_secret.as_deref(),
        args.no_auth,
    )?;
    let say = |m: &str| {
        if !quiet && !out.json {
            eprintln!("{m}");
        }
    };
    if let Some(pid) = args.server_pid {
        if !cpu::process_exists(pid) {
            anyhow::bail!("--server-pid {pid}: no such process");
        }
    }
    let nofile = sys::raise_nofile_limit() as usize;
    let mut notes = Vec::new();

    // Peer sockets: one per flow unless the descriptor limit says otherwise.
    let spare = nofile.saturating_sub(args.flows + 64);
    if spare == 0 {
        anyhow::bail!(
            "{} flows need more than the {} descriptors this process may open",
            args.flows,
            nofile
        );
    }
    let npeers = args.flows.min(spare);
    if npeers < args.flows {
        notes.push(format!(
            "descriptor limit {nofile}: {npeers} peer sockets shared by {} flows",
            args.flows
        ));
    }
    let sockets = args.flows + npeers;
    let bufsize = (SOCKET_BUFFER_BUDGET / sockets).clamp(128 << 10, 4 << 20);
    let peers: Vec<UdpSocket> = (0..npeers)
        .map(|_| client::udp_socket(SocketAddr::new(args.peer_ip, 0), None, bufsize))
        .collect::<Result<_, _>>()
        .context("creating peer sockets")?;
    let peer_addrs: Vec<SocketAddr> = peers
        .iter()
        .map(|p| p.local_addr())
        .collect::<Result<_, _>>()?;

    // Clients, set up with many requests in flight.
    say(&format!(
        "relay: setting up {} flows on {} ({})",
        args.flows,
        args.server,
        auth.describe()
    ));
    let mut engine = Engine::new()?;
    let mut slots = Vec::with_capacity(args.flows);
    for i in 0..args.flows {
        let sock = client::udp_socket(
            client::client_addr(&args.server, i as u64, args.client_ips),
            Some(args.server),
            bufsize,
        )
        .context("creating client sockets")?;
        let flow = TurnFlow::new(
            i as u64,
            sock,
            peer_addrs[i % npeers],
            &auth,
            args.realm.as_deref(),
        );
        slots.push(engine.insert(flow)?);
    }
    let setup_start = Instant::now();
    let plan = client::setup_plan(args.mode == Mode::Channel);
    let failed = client::run_plan(
        &mut engine,
        &slots,
        plan,
        SETUP_CONCURRENCY,
        setup_start + Duration::from_secs(60),
        |_| {},
    )?;
    let setup_secs = setup_start.elapsed().as_secs_f64();
    if !failed.is_empty() {
        let summary = summarize_errors(&engine, &failed);
        teardown(&mut engine, &slots);
        anyhow::bail!(
            "{} of {} flows failed set-up: {summary}",
            failed.len(),
            args.flows
        );
    }
    let setup_requests = engine.stats.requests;
    let setup_retransmits = engine.stats.retransmits;

    let flows: Vec<FlowInfo<'_>> = slots
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let f = engine.flow(s).expect("flow present");
            FlowInfo {
                client: f.sock.as_fd(),
                peer: peers[i % npeers].as_fd(),
                peer_addr: peer_addrs[i % npeers],
                relayed: f.relayed.expect("allocated"),
                channel: f.channel,
            }
        })
        .collect();

    let measured = measure(args, out, quiet, &flows, &peers)?;
    drop(flows);

    let teardown_failures = teardown(&mut engine, &slots);
    let m = measured;
    notes.extend(m.notes.iter().cloned());

    let dur = m.send_secs.max(1e-9);
    let sent: u64 = m.sent.iter().sum();
    let delivered: u64 = m.delivered.iter().sum();
    let bytes: u64 = m.bytes.iter().sum();
    let mut all = stats::new_histogram();
    for h in &m.hist {
        all.add(h).ok();
    }
    let active: Vec<usize> = match args.direction {
        Direction::C2p => vec![C2P],
        Direction::P2c => vec![P2C],
        Direction::Both => vec![C2P, P2C],
    };
    let per_direction = active
        .iter()
        .map(|&d| DirReport {
            direction: DIR_NAMES[d].to_string(),
            sent: m.sent[d],
            delivered: m.delivered[d],
            delivered_pps: m.delivered[d] as f64 / dur,
            bytes: m.bytes[d],
            loss_ratio: loss(m.sent[d], m.delivered[d]),
            reordered: m.reordered[d],
            latency_us: stats::percentiles(&m.hist[d], 1e3),
        })
        .collect();
    let loss_ratio = loss(sent, delivered);
    let target_pps = match args.rate {
        Rate::Max => None,
        Rate::Pps(r) => Some(r),
    };
    let offered_pps = sent as f64 / dur;
    let generator_limited = match target_pps {
        Some(t) => offered_pps < 0.97 * t,
        None => loss_ratio < 0.001,
    };
    if generator_limited {
        notes.push(match target_pps {
            Some(t) => format!(
                "generator-limited: offered {} of the {} packets/s asked for",
                fmt_count(offered_pps),
                fmt_count(t)
            ),
            None => "generator-limited: at --rate max nothing was lost, so the server was not \
                     saturated; add sender threads (--threads) or --gso"
                .to_string(),
        });
    }
    if m.rx_drops > 0 {
        notes.push(format!(
            "{} datagrams were dropped at the generator's own receive sockets (its receivers \
             were too slow): part of the loss is the generator's",
            m.rx_drops
        ));
    }
    let window = m.window_secs.max(1e-9);
    let server_cpu_secs = m.server_cpu;
    let server_udp_gro = args
        .gso
        .then(|| "not enabled by uturn; unknown for other servers".to_string());
    if args.gso {
        notes.push(
            "with --gso each burst is one UDP_SEGMENT write: the server's socket receives the \
             burst's datagrams at once (server UDP_GRO: not enabled by uturn; unknown for other \
             servers)"
                .to_string(),
        );
    }
    let sender = if args.gso {
        format!(
            "one sendmsg with UDP_SEGMENT (GSO) per burst of ≤ {} datagrams to one socket",
            gso_cap(args.batch, frame_len(args, C2P).max(frame_len(args, P2C)))
        )
    } else {
        format!(
            "sendmmsg, bursts of ≤ {} datagrams per call to one socket",
            args.batch
        )
    };
    Ok(RelayReport {
        scenario: "relay",
        args: args.clone(),
        target_pps,
        offered_pps,
        sent,
        delivered,
        delivered_pps: delivered as f64 / dur,
        bytes,
        delivered_mbit_s: bytes as f64 * 8.0 / dur / 1e6,
        loss_ratio,
        reordered: m.reordered.iter().sum(),
        latency_us: stats::percentiles(&all, 1e3),
        per_direction,
        generator_cpu_secs: m.gen_cpu,
        generator_cpu_util: m.gen_cpu / m.gen_secs.max(1e-9),
        sender_cpu_util: m.sender_util.clone(),
        cores: m.cores.clone(),
        receiver_cpu_util: m.receiver_util.clone(),
        generator_limited,
        generator_rx_drops: m.rx_drops,
        server_socket_drops: m.server_drops,
        send_failures: m.send_failures,
        server_cpu_secs,
        server_cpu_util: server_cpu_secs.map(|s| s / window),
        delivered_per_server_cpu_sec: server_cpu_secs
            .filter(|&s| s > 0.0)
            .map(|s| delivered as f64 / s),
        duration_secs: m.send_secs,
        drain_secs: DRAIN.as_secs_f64(),
        gso: args.gso,
        server_udp_gro,
        sender,
        receiver: format!(
            "epoll (blocks only when every socket is empty) + non-blocking recvmmsg batches of {}",
            args.batch
        ),
        sender_threads: args.threads,
        receiver_threads: args.threads,
        peer_sockets: npeers,
        setup_secs,
        setup_requests,
        setup_retransmits,
        teardown_failures,
        foreign_datagrams: m.foreign,
        notes,
    })
}

fn loss(sent: u64, delivered: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        sent.saturating_sub(delivered) as f64 / sent as f64
    }
}

fn validate(args: &RelayArgs) -> anyhow::Result<()> {
    client::require_loopback("--server", args.server.ip())?;
    client::require_loopback("--peer-ip", args.peer_ip)?;
    if args.flows == 0 {
        anyhow::bail!("--flows must be at least 1");
    }
    if args.payload < payload::HEADER_LEN || args.payload > 60_000 {
        anyhow::bail!(
            "--payload must be {}–60000 bytes (it carries a {}-byte header)",
            payload::HEADER_LEN,
            payload::HEADER_LEN
        );
    }
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION_SECS) {
        anyhow::bail!("--duration must be between 0 and {MAX_DURATION_SECS} seconds");
    }
    if !(1..=1024).contains(&args.batch) {
        anyhow::bail!("--batch must be 1–1024");
    }
    if args.threads == 0 || args.threads > 64 {
        anyhow::bail!("--threads must be 1–64");
    }
    if args.threads > args.flows {
        anyhow::bail!(
            "--threads ({}) cannot exceed --flows ({})",
            args.threads,
            args.flows
        );
    }
    if args.server.is_ipv4() != args.peer_ip.is_ipv4() {
        anyhow::bail!(
            "--server and --peer-ip must be of the same address family (for an IPv6 server \
             give --peer-ip ::1)"
        );
    }
    Ok(())
}

/// Deletes every flow's allocation (Refresh LIFETIME 0); returns failures.
fn teardown(engine: &mut Engine, slots: &[usize]) -> usize {
    let live: Vec<usize> = slots
        .iter()
        .copied()
        .filter(|&s| engine.flow(s).is_some_and(|f| f.relayed.is_some()))
        .collect();
    client::run_plan(
        engine,
        &live,
        &[client::Step::Delete],
        SETUP_CONCURRENCY,
        Instant::now() + Duration::from_secs(10),
        |_| {},
    )
    .map(|f| f.len())
    .unwrap_or(live.len())
}

/// "8 × error 486 (Allocate), 2 × timeout (ChannelBind)".
pub(crate) fn summarize_errors(engine: &Engine, failed: &[usize]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for &s in failed {
        let e = engine.flow(s).and_then(|f| f.error.clone());
        let key = match e {
            Some(FlowError::Code(c, step)) => format!("error {c} ({})", step.name()),
            Some(FlowError::Timeout(step)) => format!("timeout ({})", step.name()),
            Some(e) => e.to_string(),
            None => "unknown".into(),
        };
        *by.entry(key).or_default() += 1;
    }
    let mut s = by
        .iter()
        .map(|(k, n)| format!("{n} × {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let has = |needle: &str| by.keys().any(|k| k.contains(needle));
    if has("error 486") {
        s.push_str(
            " — 486: the server's allocation quota per user is reached; raise it, or \
                    use --rest-secret (REST users count separately)",
        );
    }
    if has("error 401") {
        s.push_str(" — 401: wrong credentials or realm");
    }
    if has("error 508") {
        s.push_str(" — 508: the server is out of relay ports or capacity");
    }
    if has("timeout") {
        s.push_str(
            " — timeouts: the server is not answering, or limits replies per source \
                    address (spread clients with --client-ips 0)",
        );
    }
    s
}

/// Bytes on the wire (UDP payload) of one packet in direction `dir` on
/// the client side (c2p) or the peer side (p2c).
fn frame_len(args: &RelayArgs, dir: usize) -> usize {
    match (dir, args.mode) {
        (P2C, _) => args.payload,
        (_, Mode::Channel) => channel::CHANNEL_HEADER_LEN + args.payload,
        (_, Mode::Indication) => {
            let addr = if args.peer_ip.is_ipv4() { 8 } else { 20 };
            20 + 4 + addr + 4 + args.payload.div_ceil(4) * 4
        }
    }
}

/// Largest burst of one GSO write for frames of `frame` bytes.
fn gso_cap(batch: usize, frame: usize) -> usize {
    batch
        .min(sys::GSO_MAX_SEGMENTS)
        .min(sys::GSO_MAX_BYTES / frame.max(1))
        .max(1)
}

/// What the threads measured.
struct Measured {
    sent: [u64; 2],
    delivered: [u64; 2],
    bytes: [u64; 2],
    reordered: [u64; 2],
    hist: [Histogram<u64>; 2],
    foreign: u64,
    send_failures: u64,
    rx_drops: u64,
    server_drops: u64,
    send_secs: f64,
    window_secs: f64,
    gen_cpu: f64,
    gen_secs: f64,
    server_cpu: Option<f64>,
    cores: Vec<cpu::CoreLoad>,
    sender_util: Vec<f64>,
    receiver_util: Vec<f64>,
    notes: Vec<String>,
}

/// Counters the threads publish for the progress line.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    delivered: AtomicU64,
}

/// One (flow, direction) a sender feeds.
struct Lane<'a> {
    fd: BorrowedFd<'a>,
    dest: Option<RawAddr>,
    template: Vec<u8>,
    hdr_off: usize,
    flow: u32,
    dir: usize,
    seq: u32,
}

struct SendResult {
    sent: [u64; 2],
    failures: u64,
    cpu_util: f64,
    errors: Vec<String>,
}

struct RecvResult {
    delivered: [u64; 2],
    bytes: [u64; 2],
    reordered: [u64; 2],
    hist: [Histogram<u64>; 2],
    foreign: u64,
    cpu_util: f64,
}

/// The datagram template for flow `i` in direction `dir`, and where the
/// 16-byte payload header goes in it.
fn template(args: &RelayArgs, f: &FlowInfo<'_>, dir: usize, rng: &mut Rng) -> (Vec<u8>, usize) {
    let mut pl = vec![payload::FILLER; args.payload];
    pl[..payload::HEADER_LEN].fill(0);
    match (dir, args.mode) {
        (P2C, _) => (pl, 0),
        (_, Mode::Channel) => {
            let mut h = [0u8; 4];
            channel::write_header(&mut h, f.channel, args.payload as u16);
            let mut v = h.to_vec();
            v.extend_from_slice(&pl);
            (v, channel::CHANNEL_HEADER_LEN)
        }
        (_, Mode::Indication) => {
            let mut buf = vec![0u8; args.payload + 128];
            let tid = rng.tid();
            let mut w = MessageWriter::new(&mut buf, Method::Send, Class::Indication, &tid)
                .expect("buffer fits a header");
            w.xor_address(attr::XOR_PEER_ADDRESS, f.peer_addr)
                .expect("fits");
            w.raw(attr::DATA, &pl).expect("payload ≤ 60000 fits");
            let n = w.finish();
            buf.truncate(n);
            let off = Message::parse(&buf)
                .ok()
                .and_then(|m| m.get(attr::DATA))
                .map(|a| a.offset + 4)
                .expect("DATA just written");
            (buf, off)
        }
    }
}

fn measure(
    args: &RelayArgs,
    out: &Output,
    quiet: bool,
    flows: &[FlowInfo<'_>],
    peers: &[UdpSocket],
) -> anyhow::Result<Measured> {
    let threads = args.threads;
    let dirs: Vec<usize> = match args.direction {
        Direction::C2p => vec![C2P],
        Direction::P2c => vec![P2C],
        Direction::Both => vec![C2P, P2C],
    };
    let mut rng = Rng::new(0x6c61_6e65);
    // Lanes per sender thread: its flows, directions interleaved.
    let mut lanes: Vec<Vec<Lane<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, f) in flows.iter().enumerate() {
        for &d in &dirs {
            let (template, hdr_off) = template(args, f, d, &mut rng);
            let (fd, dest) = if d == C2P {
                (f.client, None)
            } else {
                (f.peer, Some(RawAddr::new(&f.relayed)))
            };
            lanes[i % threads].push(Lane {
                fd,
                dest,
                template,
                hdr_off,
                flow: i as u32,
                dir: d,
                seq: 0,
            });
        }
    }
    // Receive sockets per receiver thread: client sockets (p2c arrives
    // there) and peer sockets (c2p arrives there).
    let mut rx: Vec<Vec<(BorrowedFd<'_>, usize)>> = (0..threads).map(|_| Vec::new()).collect();
    if dirs.contains(&P2C) {
        for (i, f) in flows.iter().enumerate() {
            rx[i % threads].push((f.client, P2C));
        }
    }
    if dirs.contains(&C2P) {
        for (j, p) in peers.iter().enumerate() {
            rx[j % threads].push((p.as_fd(), C2P));
        }
    }
    let mut ports: HashSet<SocketAddr> = HashSet::new();
    for p in peers {
        ports.insert(p.local_addr()?);
    }
    for f in flows {
        if let Ok(a) = socket_addr(f.client) {
            ports.insert(a);
        }
    }
    let drops_before = cpu::udp_drops(&ports);
    let mut server_socks: HashSet<SocketAddr> = flows.iter().map(|f| f.relayed).collect();
    server_socks.insert(args.server);
    let server_drops_before = cpu::udp_drops(&server_socks);

    let total_rate = match args.rate {
        Rate::Max => None,
        Rate::Pps(r) => Some(r / threads as f64),
    };
    let duration = Duration::from_secs_f64(args.duration);
    let stop = AtomicBool::new(false);
    let live = Live::default();
    let ready = Barrier::new(threads + 1);
    let nflows = flows.len();
    let recv_slot = frame_len(args, C2P).max(frame_len(args, P2C)) + 64;
    let bar = out.progress(duration, quiet, "relay");

    let result = std::thread::scope(|s| -> anyhow::Result<Measured> {
        let mut rx_handles = Vec::new();
        for (k, socks) in rx.into_iter().enumerate() {
            let (stop, live, ready) = (&stop, &live, &ready);
            let mode = args.mode;
            let batch = args.batch;
            rx_handles.push(s.spawn(move || {
                out.pin(threads + k);
                receiver(&socks, mode, batch, recv_slot, nflows, stop, live, ready)
            }));
        }
        ready.wait();
        let gen0 = cpu::self_cpu_secs();
        let cores0 = cpu::core_times();
        let srv0 = args.server_pid.and_then(cpu::process_cpu_secs);
        let t0 = Instant::now() + Duration::from_millis(5);
        let mut tx_handles = Vec::new();
        for (k, mut my) in lanes.into_iter().enumerate() {
            let live = &live;
            let gso = args.gso;
            let batch = args.batch;
            tx_handles.push(s.spawn(move || {
                out.pin(k);
                sender(&mut my, gso, batch, total_rate, t0, duration, live)
            }));
        }
        // Progress until the senders are done.
        while t0.elapsed() < duration {
            std::thread::sleep(
                Duration::from_millis(200).min(duration.saturating_sub(t0.elapsed())),
            );
            if let Some(b) = &bar {
                let el = t0.elapsed().as_secs_f64().max(1e-3);
                b.set_position(t0.elapsed().as_millis() as u64);
                b.set_message(format!(
                    "sent {}/s delivered {}/s",
                    fmt_count(live.sent.load(Ordering::Relaxed) as f64 / el),
                    fmt_count(live.delivered.load(Ordering::Relaxed) as f64 / el)
                ));
            }
        }
        let mut sent = [0u64; 2];
        let mut failures = 0;
        let mut sender_util = Vec::new();
        let mut notes = Vec::new();
        for h in tx_handles {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("a sender thread panicked"))?;
            sent[0] += r.sent[0];
            sent[1] += r.sent[1];
            failures += r.failures;
            sender_util.push(r.cpu_util);
            notes.extend(r.errors);
        }
        // Senders stop at t0 + duration (a burst in progress ends just after).
        let send_secs = args.duration;
        // The generator's CPU over the sending window (its saturation);
        // the server's over sending and drain (it works off its backlog).
        let gen_cpu = cpu::self_cpu_secs() - gen0;
        let cores = cpu::core_loads(&cores0, &cpu::core_times());
        let gen_secs = t0.elapsed().as_secs_f64();
        std::thread::sleep(DRAIN);
        stop.store(true, Ordering::Relaxed);
        let mut m = Measured {
            sent,
            delivered: [0; 2],
            bytes: [0; 2],
            reordered: [0; 2],
            hist: [stats::new_histogram(), stats::new_histogram()],
            foreign: 0,
            send_failures: failures,
            rx_drops: 0,
            server_drops: 0,
            send_secs,
            window_secs: 0.0,
            gen_cpu: 0.0,
            gen_secs: 0.0,
            server_cpu: None,
            cores: Vec::new(),
            sender_util,
            receiver_util: Vec::new(),
            notes,
        };
        for h in rx_handles {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("a receiver thread panicked"))??;
            for d in 0..2 {
                m.delivered[d] += r.delivered[d];
                m.bytes[d] += r.bytes[d];
                m.reordered[d] += r.reordered[d];
                m.hist[d].add(&r.hist[d]).ok();
            }
            m.foreign += r.foreign;
            m.receiver_util.push(r.cpu_util);
        }
        m.window_secs = (Instant::now() - t0).as_secs_f64();
        m.gen_cpu = gen_cpu;
        m.gen_secs = gen_secs;
        m.cores = cores;
        m.server_cpu = match (srv0, args.server_pid.and_then(cpu::process_cpu_secs)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        Ok(m)
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut m = result?;
    m.rx_drops = cpu::udp_drops(&ports).saturating_sub(drops_before);
    m.server_drops = cpu::udp_drops(&server_socks).saturating_sub(server_drops_before);
    Ok(m)
}

fn socket_addr(fd: BorrowedFd<'_>) -> std::io::Result<SocketAddr> {
    socket2::SockRef::from(&fd)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))
}

/// One sender thread: paces its lanes until `duration` after `t0`.
fn sender(
    lanes: &mut [Lane<'_>],
    gso: bool,
    batch: usize,
    rate: Option<f64>,
    t0: Instant,
    duration: Duration,
    live: &Live,
) -> SendResult {
    sys::set_timer_slack_ns(1_000);
    let mut res = SendResult {
        sent: [0; 2],
        failures: 0,
        cpu_util: 0.0,
        errors: Vec::new(),
    };
    if lanes.is_empty() {
        return res;
    }
    // One batch per direction: frames of one direction all have one length.
    let len_of = |d: usize| {
        lanes
            .iter()
            .find(|l| l.dir == d)
            .map(|l| l.template.len())
            .unwrap_or(1)
    };
    let cap_of = |d: usize| {
        if gso {
            gso_cap(batch, len_of(d))
        } else {
            batch
        }
    };
    let cap = cap_of(C2P).min(cap_of(P2C));
    let mut batches = [
        SendBatch::new(cap, len_of(C2P)),
        SendBatch::new(cap, len_of(P2C)),
    ];
    let burst = match rate {
        Some(r) => ((r * TICK_SECS).round() as usize).clamp(1, cap) as u64,
        None => cap as u64,
    };
    let mut scheduled: u64 = 0;
    let mut rr = 0;
    let mut error_count = 0u64;
    // Wait for the common start.
    if let Some(d) = t0.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    let cpu0 = sys::thread_cpu_ns();
    let wall0 = Instant::now();
    loop {
        let el = t0.elapsed();
        if el >= duration {
            break;
        }
        let due = match rate {
            Some(r) => ((el.as_secs_f64() * r) as u64).saturating_sub(scheduled),
            None => cap as u64,
        };
        if due < burst {
            let r = rate.unwrap_or(f64::INFINITY);
            let next = Duration::from_secs_f64((scheduled + burst) as f64 / r).min(duration);
            if let Some(d) = next.checked_sub(el) {
                std::thread::sleep(d);
            }
            continue;
        }
        let b = (due as usize).min(cap);
        let nlanes = lanes.len();
        let lane = &mut lanes[rr];
        rr = (rr + 1) % nlanes;
        let sb = &mut batches[lane.dir];
        let len = lane.template.len();
        let ts = sys::monotonic_ns();
        for i in 0..b {
            let slot = &mut sb.slot_mut(i)[..len];
            slot.copy_from_slice(&lane.template);
            payload::write(
                &mut slot[lane.hdr_off..],
                lane.flow,
                lane.seq.wrapping_add(i as u32),
                ts,
            );
        }
        let r = if gso {
            sb.send_gso(lane.fd, b, lane.dest.as_ref())
        } else {
            sb.send(lane.fd, b, len, lane.dest.as_ref())
        };
        let n = match r {
            Ok(n) => n,
            Err(e) => {
                error_count += 1;
                if res.errors.len() < 3 {
                    res.errors.push(format!("send error: {e}"));
                }
                0
            }
        };
        scheduled += b as u64;
        lane.seq = lane.seq.wrapping_add(n as u32);
        res.sent[lane.dir] += n as u64;
        res.failures += (b - n) as u64;
        live.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    if error_count > 3 {
        res.errors
            .push(format!("{error_count} send calls failed in all"));
    }
    let wall = wall0.elapsed().as_secs_f64().max(1e-9);
    res.cpu_util = (sys::thread_cpu_ns().saturating_sub(cpu0)) as f64 / 1e9 / wall;
    res
}

/// One receiver thread: drains its sockets until `stop`.
#[allow(clippy::too_many_arguments)]
fn receiver(
    socks: &[(BorrowedFd<'_>, usize)],
    mode: Mode,
    batch: usize,
    slot: usize,
    nflows: usize,
    stop: &AtomicBool,
    live: &Live,
    ready: &Barrier,
) -> anyhow::Result<RecvResult> {
    let mut res = RecvResult {
        delivered: [0; 2],
        bytes: [0; 2],
        reordered: [0; 2],
        hist: [stats::new_histogram(), stats::new_histogram()],
        foreign: 0,
        cpu_util: 0.0,
    };
    let setup = (|| -> std::io::Result<sys::Epoll> {
        let ep = sys::Epoll::new(256)?;
        for (i, (fd, _)) in socks.iter().enumerate() {
            ep.add(fd.as_raw_fd(), i as u64)?;
        }
        Ok(ep)
    })();
    ready.wait();
    let mut ep = setup?;
    let mut rb = RecvBatch::new(batch, slot);
    // Highest sequence + 1 seen per flow and direction (0: none yet).
    let mut highest: [Vec<u32>; 2] = [vec![0; nflows], vec![0; nflows]];
    let mut tokens = Vec::with_capacity(256);
    let cpu0 = sys::thread_cpu_ns();
    let wall0 = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        tokens.clear();
        tokens.extend(ep.wait(2)?);
        for &t in &tokens {
            let (fd, dir) = socks[t as usize];
            // A bounded number of batches per socket and turn, so one busy
            // socket cannot starve the others (epoll reports it again).
            for _ in 0..MAX_BATCHES_PER_READY {
                let n = match rb.recv(fd) {
                    Ok(n) => n,
                    // ICMP errors queued on the socket; keep reading.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    break;
                }
                let now = sys::monotonic_ns();
                let mut got = 0;
                for i in 0..n {
                    let d = rb.get(i);
                    let body = if dir == C2P {
                        Some(d)
                    } else {
                        match mode {
                            Mode::Channel => ChannelData::parse(d).ok().map(|c| c.payload),
                            Mode::Indication => data_indication(d),
                        }
                    };
                    let Some((flow, seq, ts)) = body.and_then(payload::read) else {
                        res.foreign += 1;
                        continue;
                    };
                    let Some(h) = highest[dir].get_mut(flow as usize) else {
                        res.foreign += 1;
                        continue;
                    };
                    got += 1;
                    res.delivered[dir] += 1;
                    res.bytes[dir] += body.map_or(0, |b| b.len()) as u64;
                    let next = seq.wrapping_add(1);
                    if *h == 0 || next > *h {
                        *h = next;
                    } else if next < *h {
                        res.reordered[dir] += 1;
                    }
                    stats::record(&mut res.hist[dir], now.saturating_sub(ts));
                }
                live.delivered.fetch_add(got, Ordering::Relaxed);
                if n < batch {
                    break;
                }
            }
        }
    }
    let wall = wall0.elapsed().as_secs_f64().max(1e-9);
    res.cpu_util = (sys::thread_cpu_ns().saturating_sub(cpu0)) as f64 / 1e9 / wall;
    Ok(res)
}

/// The DATA of a Data indication.
fn data_indication(d: &[u8]) -> Option<&[u8]> {
    let m = Message::parse(d).ok()?;
    if m.method() != Method::Data || m.class() != Class::Indication {
        return None;
    }
    m.get(attr::DATA).map(|a| a.value)
}

fn print_report(r: &RelayReport) {
    let a = &r.args;
    let mut t = Table::new(format!(
        "relay · {} · {} flows × {} B · {} · {}{}",
        a.server,
        a.flows,
        a.payload,
        match a.direction {
            Direction::C2p => "client→peer",
            Direction::P2c => "peer→client",
            Direction::Both => "both directions",
        },
        match a.mode {
            Mode::Channel => "ChannelData",
            Mode::Indication => "Send/Data indications",
        },
        if r.gso { " · GSO" } else { "" }
    ));
    t.row(
        "target rate",
        r.target_pps
            .map(|p| format!("{} packets/s", fmt_count(p)))
            .unwrap_or_else(|| "max".into()),
    );
    t.row(
        "offered",
        format!(
            "{} packets/s ({} sent in {:.2} s)",
            fmt_count(r.offered_pps),
            fmt_count(r.sent as f64),
            r.duration_secs
        ),
    );
    t.row(
        "delivered",
        format!(
            "{} packets/s ({} packets, {:.1} Mbit/s payload)",
            fmt_count(r.delivered_pps),
            fmt_count(r.delivered as f64),
            r.delivered_mbit_s
        ),
    );
    t.row(
        "loss",
        format!(
            "{} ({} packets)",
            fmt_pct(r.loss_ratio),
            fmt_count(r.sent.saturating_sub(r.delivered) as f64)
        ),
    );
    t.row("reordered", fmt_count(r.reordered as f64));
    t.row("latency p50/p90/p99/p99.9", fmt_lat(&r.latency_us));
    for d in &r.per_direction {
        t.row(
            format!("  {}", d.direction),
            format!(
                "{} delivered/s, loss {}, reordered {}, latency {}",
                fmt_count(d.delivered_pps),
                fmt_pct(d.loss_ratio),
                d.reordered,
                fmt_lat(&d.latency_us)
            ),
        );
    }
    t.row(
        "generator CPU",
        format!(
            "{:.2} s, {:.0} % of a core; senders {}; receivers {}",
            r.generator_cpu_secs,
            r.generator_cpu_util * 100.0,
            pcts(&r.sender_cpu_util),
            pcts(&r.receiver_cpu_util)
        ),
    );
    t.row(
        "CPU busy (softirq)",
        r.cores
            .iter()
            .map(|c| {
                format!(
                    "cpu{} {:.0} % ({:.0} %)",
                    c.cpu,
                    c.busy * 100.0,
                    c.softirq * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    t.row(
        "generator-limited",
        if r.generator_limited { "yes" } else { "no" },
    );
    t.row(
        "socket drops",
        format!(
            "server {} (its receive buffers full), generator {} on receive, {} refused on send",
            fmt_count(r.server_socket_drops as f64),
            fmt_count(r.generator_rx_drops as f64),
            fmt_count(r.send_failures as f64)
        ),
    );
    match (r.server_cpu_secs, r.delivered_per_server_cpu_sec) {
        (Some(s), per) => {
            t.row(
                "server CPU",
                format!(
                    "{:.2} s ({:.0} % of a core){}",
                    s,
                    r.server_cpu_util.unwrap_or(0.0) * 100.0,
                    per.map(|p| format!(", {} delivered packets per CPU-second", fmt_count(p)))
                        .unwrap_or_default()
                ),
            );
        }
        (None, _) => {
            t.row("server CPU", "(give --server-pid)");
        }
    }
    if let Some(g) = &r.server_udp_gro {
        t.row("server UDP_GRO", g.clone());
    }
    t.row("sender", r.sender.clone());
    t.row("receiver", r.receiver.clone());
    t.row(
        "set-up",
        format!(
            "{:.0} ms, {} requests ({} retransmitted), {} peer sockets",
            r.setup_secs * 1e3,
            r.setup_requests,
            r.setup_retransmits,
            r.peer_sockets
        ),
    );
    if r.teardown_failures > 0 {
        t.row("teardown failures", r.teardown_failures.to_string());
    }
    if r.foreign_datagrams > 0 {
        t.row("foreign datagrams", r.foreign_datagrams.to_string());
    }
    for n in &r.notes {
        t.row("note", n.clone());
    }
    t.print();
}

fn fmt_lat(p: &Percentiles) -> String {
    if p.samples == 0 {
        return "-".into();
    }
    format!(
        "{:.0} / {:.0} / {:.0} / {:.0} µs",
        p.p50, p.p90, p.p99, p.p999
    )
}

fn pcts(v: &[f64]) -> String {
    v.iter()
        .map(|u| format!("{:.0} %", u * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert_eq!("2500".parse::<Rate>().unwrap(), Rate::Pps(2500.0));
        assert_eq!("20k".parse::<Rate>().unwrap(), Rate::Pps(20_000.0));
        assert_eq!("1.5M".parse::<Rate>().unwrap(), Rate::Pps(1_500_000.0));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn defaults_match_the_flags() {
        let a = RelayArgs::default();
        assert_eq!(a.flows, 100);
        assert_eq!(a.payload, 120);
        assert_eq!(a.batch, 32);
        assert_eq!(a.direction, Direction::Both);
        assert_eq!(a.mode, Mode::Channel);
        assert_eq!(a.server, "127.0.0.1:3478".parse().unwrap());
        let j = serde_json::to_value(RelayArgs {
            user: Some("lg:secret".into()),
            rest_secret: Some("s".into()),
            ..a
        })
        .unwrap();
        assert_eq!(j["user"], "lg:***");
        assert_eq!(j["rest_secret"], "***");
        assert_eq!(j["rate"], 10000.0);
    }

    #[test]
    fn frame_lengths() {
        let mut a = RelayArgs::default();
        assert_eq!(frame_len(&a, C2P), 124);
        assert_eq!(frame_len(&a, P2C), 120);
        a.mode = Mode::Indication;
        assert_eq!(frame_len(&a, C2P), 156);
        assert_eq!(gso_cap(32, 1204), 32);
        assert_eq!(gso_cap(128, 124), 64);
        assert_eq!(gso_cap(64, 1204), 53);
    }
}
