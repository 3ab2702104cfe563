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
//!
//! # TCP and TLS
//! With `--transport tcp` or `tls` each client is a connection (set up,
//! TLS handshake included, before the measurement); the peer side stays
//! UDP. A c2p burst is the burst's ChannelData frames (padded to 4 bytes,
//! RFC 8656 §12.5) back to back in ONE `write` on the flow's connection
//! (over TLS: one rustls record, then one `write`). A connection whose
//! earlier bytes the kernel has not taken yet refuses the burst (counted
//! as refused on send, like datagrams a full UDP socket refuses). p2c
//! frames are read from the connections by the same epoll loop, one `read`
//! of up to 64 KiB per ready connection and turn, split with
//! `uturn_stun::next_frame`; the frame a read ends inside waits in the
//! connection for the next read.

mod measure;
mod receiver;
mod report;
mod sender;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use uturn_io::client::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
use uturn_stun::channel;

use crate::client::{self, Conn, Connector, Engine, FlowError, TurnFlow};
use crate::cpu;
use crate::creds::Auth;
use crate::flags::{mask_secret, mask_user, ClientIps, Dial};
use crate::netns;
use crate::output::Output;
use crate::payload;
pub use report::RelayReport;

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

impl Rate {
    /// Packets per second (`None` for `max`).
    pub fn pps(self) -> Option<f64> {
        match self {
            Rate::Max => None,
            Rate::Pps(r) => Some(r),
        }
    }
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

/// Relayed packets: N clients with a channel (or permission) each, each
/// bound to a peer socket of the generator; open-loop rate or max.
///
/// Reports offered and delivered packets per second, loss (sent −
/// delivered after a 300 ms drain), reordering, one-way latency
/// percentiles (µs), the generator's own CPU use and, with --server-pid,
/// the server's CPU seconds and packets per server-CPU-second.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct RelayArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: Dial,
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
    /// then receives bursts of equal-sized datagrams at once. UDP only.
    #[arg(long)]
    pub gso: bool,
    /// Datagrams per sendmmsg/recvmmsg call (and largest burst), 1–1024;
    /// over TCP/TLS, the most ChannelData frames written in one write.
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
    /// Address the generator's peer sockets are bound on, and so the peer
    /// address the relay is told (loopback only, unless --peer-netns).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub peer_ip: IpAddr,
    #[command(flatten)]
    #[serde(flatten)]
    pub clients: ClientIps,
    /// Create the client sockets (one per flow, towards --server) in this
    /// network namespace: a name of `ip netns` or a path such as
    /// /proc/PID/ns/net (root needed). They bind to the unspecified
    /// address, so the namespace's route to --server picks their source
    /// (--client-ips must stay 0), and --server may be any address. For a
    /// relay between namespaces joined by veth (tuning/xdp/topology.sh).
    #[arg(long, value_name = "NAME")]
    pub client_netns: Option<String>,
    /// Create the peer sockets in this network namespace (see
    /// --client-netns). --peer-ip must then be that namespace's address that
    /// the relay reaches (e.g. 10.200.2.2 or fd00:2::2 in
    /// tuning/xdp/topology.sh).
    #[arg(long, value_name = "NAME")]
    pub peer_netns: Option<String>,
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
/// Send buffer of each TCP/TLS client connection (the kernel doubles it):
/// with autotuning (up to 4 MiB per connection) a server slower than the
/// offered rate would let the generator queue seconds of frames on its own
/// side; capped, the connection refuses bursts instead, which is the
/// server's backpressure made visible (refused on send).
const STREAM_SEND_BUFFER: usize = 32 << 10;

/// Index of a direction in per-direction arrays.
const C2P: usize = 0;
const P2C: usize = 1;
const DIR_NAMES: [&str; 2] = ["c2p", "p2c"];

/// The directions `direction` sends in, as indices of per-direction arrays.
fn directions(direction: Direction) -> &'static [usize] {
    match direction {
        Direction::C2p => &[C2P],
        Direction::P2c => &[P2C],
        Direction::Both => &[C2P, P2C],
    }
}

/// Runs the relay scenario and prints its report.
pub fn run(args: &RelayArgs, out: &Output) -> anyhow::Result<()> {
    let r = run_relay(args, out, false)?;
    if out.json {
        out.print_json(&r)
    } else {
        report::print_report(&r);
        Ok(())
    }
}

/// Everything the threads share about the flows.
struct FlowInfo<'a> {
    client: &'a Conn,
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
    cpu::require_process(args.server_pid)?;
    let mut connector = Connector::new(&args.target, args.clients.client_ips)?;
    if args.client_netns.is_some() {
        connector = connector.source_by_route();
    }
    let nofile = uturn_io::socket::raise_fd_limit();
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
    let peers: Vec<UdpSocket> = netns::within(args.peer_netns.as_deref(), || {
        (0..npeers)
            .map(|_| client::udp_socket(SocketAddr::new(args.peer_ip, 0), None, bufsize))
            .collect::<Result<_, _>>()
            .context("creating peer sockets")
    })?;
    let peer_addrs: Vec<SocketAddr> = peers
        .iter()
        .map(|p| p.local_addr())
        .collect::<Result<_, _>>()?;

    // Clients, set up with many requests in flight.
    say(&format!(
        "relay: setting up {} flows on {} over {} ({})",
        args.flows,
        args.target.server,
        args.target.transport.name(),
        auth.describe()
    ));
    let conns: Vec<Conn> = netns::within(args.client_netns.as_deref(), || {
        (0..args.flows)
            .map(|i| {
                let conn = connector
                    .open(i as u64, bufsize)
                    .context("opening client connections")?;
                if let Some(s) = conn.stream() {
                    s.set_send_buffer(STREAM_SEND_BUFFER)
                        .context("sizing a connection's send buffer")?;
                }
                Ok(conn)
            })
            .collect()
    })?;
    let mut engine = Engine::new()?;
    let mut slots = Vec::with_capacity(args.flows);
    for (i, conn) in conns.into_iter().enumerate() {
        let flow = TurnFlow::new(
            i as u64,
            conn,
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
    let tls = slots
        .first()
        .and_then(|&s| engine.flow(s))
        .and_then(|f| f.conn.tls_info());

    let flows: Vec<FlowInfo<'_>> = slots
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let f = engine.flow(s).expect("flow present");
            FlowInfo {
                client: &f.conn,
                peer: peers[i % npeers].as_fd(),
                peer_addr: peer_addrs[i % npeers],
                relayed: f.relayed.expect("allocated"),
                channel: f.channel,
            }
        })
        .collect();

    let measured = measure::measure(args, out, quiet, &flows, &peers)?;
    drop(flows);

    let setup = report::Setup {
        secs: setup_secs,
        requests: setup_requests,
        retransmits: setup_retransmits,
        peer_sockets: npeers,
        teardown_failures: teardown(&mut engine, &slots),
        tls,
    };
    Ok(RelayReport::new(args, &measured, setup, notes))
}

fn validate(args: &RelayArgs) -> anyhow::Result<()> {
    // Outside loopback only from inside a namespace that was named.
    if args.client_netns.is_none() {
        client::require_loopback("--server", args.target.server.ip())?;
    } else if args.clients.client_ips != 0 {
        anyhow::bail!(
            "--client-ips spreads clients over loopback addresses; with --client-netns they \
             use the namespace's address towards --server"
        );
    }
    if args.peer_netns.is_none() {
        client::require_loopback("--peer-ip", args.peer_ip)?;
    } else if args.peer_ip.is_loopback() || args.peer_ip.is_unspecified() {
        anyhow::bail!(
            "with --peer-netns, --peer-ip must be the peer namespace's address that the relay \
             reaches (e.g. 10.200.2.2), not {}",
            args.peer_ip
        );
    }
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
    args.target.validate()?;
    if args.gso && args.target.transport.is_stream() {
        anyhow::bail!("--gso is for UDP: over --transport tcp/tls a burst is one write anyway");
    }
    if args.target.server.is_ipv4() != args.peer_ip.is_ipv4() {
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

/// Bytes on the wire (UDP payload, or frame on a stream) of one packet in
/// direction `dir` on the client side (c2p) or the peer side (p2c).
fn frame_len(args: &RelayArgs, dir: usize) -> usize {
    match (dir, args.mode) {
        (P2C, _) => args.payload,
        // RFC 8656 §12.5: over TCP and TLS, ChannelData is padded to 4 bytes.
        (_, Mode::Channel) if args.target.transport.is_stream() => {
            channel::CHANNEL_HEADER_LEN + args.payload.div_ceil(4) * 4
        }
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
        .min(GSO_MAX_SEGMENTS)
        .min(GSO_MAX_BYTES / frame.max(1))
        .max(1)
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
        assert_eq!(a.target.server, "127.0.0.1:3478".parse().unwrap());
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
    fn a_namespace_lifts_the_loopback_rule_for_its_side_only() {
        let mut a = RelayArgs::default();
        a.target.server = "10.200.1.1:3478".parse().unwrap();
        assert!(
            validate(&a).is_err(),
            "a server off loopback without a namespace"
        );
        a.client_netns = Some("uc".into());
        validate(&a).unwrap();
        a.clients.client_ips = 4;
        assert!(validate(&a).is_err(), "--client-ips with --client-netns");
        a.clients.client_ips = 0;
        a.peer_ip = "10.200.2.2".parse().unwrap();
        assert!(
            validate(&a).is_err(),
            "a peer off loopback without a namespace"
        );
        a.peer_netns = Some("up".into());
        validate(&a).unwrap();
        a.peer_ip = "127.0.0.1".parse().unwrap();
        assert!(
            validate(&a).is_err(),
            "a loopback peer the relay cannot reach"
        );
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(j["client_netns"], "uc");
        assert_eq!(j["peer_netns"], "up");
    }

    #[test]
    fn frame_lengths() {
        let mut a = RelayArgs::default();
        assert_eq!(frame_len(&a, C2P), 124);
        assert_eq!(frame_len(&a, P2C), 120);
        a.mode = Mode::Indication;
        assert_eq!(frame_len(&a, C2P), 156);
        a.mode = Mode::Channel;
        a.payload = 121;
        assert_eq!(frame_len(&a, C2P), 125);
        a.target.transport = crate::flags::Transport::Tcp;
        assert_eq!(frame_len(&a, C2P), 128);
        assert_eq!(frame_len(&a, P2C), 121);
        assert_eq!(gso_cap(32, 1204), 32);
        assert_eq!(gso_cap(128, 124), 64);
        assert_eq!(gso_cap(64, 1204), 53);
    }
}
