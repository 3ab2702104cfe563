//! `churn`: allocations created, used and deleted continuously.
//!
//! Every 1/`--rate` seconds a new client allocates (with the 401 round),
//! creates a permission and binds a channel to the generator's peer socket,
//! sends `--packets` ChannelData packets to the peer and has the peer send
//! as many back, holds the allocation for `--hold` seconds and deletes it
//! (Refresh LIFETIME 0). About rate × hold allocations are alive at any
//! time. Over TCP or TLS each allocation has its own connection, opened
//! before the Allocate and closed after the delete. With `--server-pid` the server's resident memory and open
//! descriptors are sampled every second; a server that leaks shows a
//! series that keeps growing while the live population stays flat.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{self, Connector, Engine, Event, FailureCounts, Step, TurnFlow, EXTRA_TOKEN};
use crate::cpu;
use crate::creds::Auth;
use crate::flags::{ClientIps, Dial, Login};
use crate::output::{fmt_bytes, fmt_code_counts, print_grid, Output, Table};
use crate::payload;
use crate::stats::{self, Percentiles};
use uturn_io::process;
use uturn_stun::channel;

/// Allocations created, used and deleted at a steady rate, for leak hunting.
///
/// With --server-pid, the server's resident memory (VmRSS) and open file
/// descriptors are sampled every second and printed as a series, together
/// with the number of live allocations; a final sample is taken 1 s after
/// the last allocation was deleted.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct ChurnArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: Dial,
    #[command(flatten)]
    #[serde(flatten)]
    pub login: Login,
    /// New allocations per second.
    #[arg(long, default_value_t = 50.0, value_name = "PER_SEC")]
    pub rate: f64,
    /// How long new allocations are created, in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub duration: f64,
    /// How long each allocation lives after its channel is bound, in seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub hold: f64,
    /// ChannelData packets sent each way per allocation.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub packets: u32,
    /// Payload of those packets, in bytes (at least 16).
    #[arg(long, default_value_t = 120, value_name = "BYTES")]
    pub payload: usize,
    /// Process id of the server: sample its RSS and open descriptors every second.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Address of the generator's peer socket (loopback only).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub peer_ip: IpAddr,
    #[command(flatten)]
    #[serde(flatten)]
    pub clients: ClientIps,
    /// Send no credentials and expect no 401 (for `floor`).
    #[arg(long)]
    pub no_auth: bool,
}

impl Default for ChurnArgs {
    /// The command-line defaults.
    fn default() -> Self {
        crate::relay::defaults()
    }
}

/// One sample of the series.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Sample {
    /// Seconds since the start.
    pub t_secs: f64,
    /// Allocations the generator holds (set up, not yet deleted).
    pub live_allocations: u64,
    pub created: u64,
    pub deleted: u64,
    pub failed: u64,
    /// Server resident memory, bytes (with --server-pid).
    pub rss_bytes: Option<u64>,
    /// Server open file descriptors (with --server-pid).
    pub open_fds: Option<usize>,
}

/// The result of a churn run.
#[derive(serde::Serialize, Clone, Debug)]
pub struct ChurnReport {
    pub scenario: &'static str,
    pub args: ChurnArgs,
    /// Between the clients and the server: "udp", "tcp" or "tls".
    pub transport: &'static str,
    pub started: u64,
    /// Allocations set up (Allocate through ChannelBind answered).
    pub created: u64,
    /// Allocations deleted by Refresh(0).
    pub deleted: u64,
    pub failed: u64,
    pub errors_by_code: BTreeMap<u16, u64>,
    pub timeouts: u64,
    /// Packets sent and received client→peer and peer→client.
    pub c2p_sent: u64,
    pub c2p_received: u64,
    pub p2c_sent: u64,
    pub p2c_received: u64,
    /// Set-up latency, milliseconds.
    pub setup_latency_ms: Percentiles,
    /// One sample per second, then one after teardown.
    pub series: Vec<Sample>,
    /// Change of the server's RSS from the first to the last sample, bytes.
    pub rss_growth_bytes: Option<i64>,
    /// Change of its open descriptors from the first to the last sample.
    pub fd_growth: Option<i64>,
    pub generator_cpu_secs: f64,
    pub server_cpu_secs: Option<f64>,
    pub duration_secs: f64,
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Holding,
    Delete,
    Cleanup,
}

const PEER_TOKEN: u64 = EXTRA_TOKEN;
/// Time given to the last deletes.
const GRACE: Duration = Duration::from_secs(6);

pub fn run(args: &ChurnArgs, out: &Output) -> anyhow::Result<()> {
    let r = run_churn(args, out, false)?;
    if out.json {
        return out.print_json(&r);
    }
    let rows: Vec<Vec<String>> = r
        .series
        .iter()
        .map(|s| {
            vec![
                format!("{:.0}", s.t_secs),
                s.live_allocations.to_string(),
                s.created.to_string(),
                s.deleted.to_string(),
                s.failed.to_string(),
                s.rss_bytes.map(fmt_bytes).unwrap_or_else(|| "-".into()),
                s.open_fds
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_grid(
        "server over time (last row: 1 s after the final delete)",
        &[
            "t (s)",
            "live",
            "created",
            "deleted",
            "failed",
            "server RSS",
            "server fds",
        ],
        &rows,
    );
    println!();
    let mut t = Table::new(format!(
        "churn · {} over {} · {} allocations/s held {} s · {:.0} s",
        r.args.target.server, r.transport, r.args.rate, r.args.hold, r.duration_secs
    ));
    t.row(
        "started / created / deleted / failed",
        format!(
            "{} / {} / {} / {}",
            r.started, r.created, r.deleted, r.failed
        ),
    );
    t.row("errors by code", fmt_code_counts(&r.errors_by_code));
    t.row("timeouts", r.timeouts.to_string());
    t.row(
        "packets c2p / p2c",
        format!(
            "{}/{} and {}/{} received/sent",
            r.c2p_received, r.c2p_sent, r.p2c_received, r.p2c_sent
        ),
    );
    t.row(
        "set-up latency p50/p99",
        format!(
            "{:.2} / {:.2} ms",
            r.setup_latency_ms.p50, r.setup_latency_ms.p99
        ),
    );
    if let (Some(rss), Some(fds)) = (r.rss_growth_bytes, r.fd_growth) {
        let sign = if rss < 0 { "-" } else { "+" };
        t.row(
            "server growth (first → last sample)",
            format!("RSS {sign}{}, fds {fds:+}", fmt_bytes(rss.unsigned_abs())),
        );
    }
    if let Some(s) = r.server_cpu_secs {
        t.row("server CPU", format!("{s:.2} s"));
    }
    t.row("generator CPU", format!("{:.2} s", r.generator_cpu_secs));
    for n in &r.notes {
        t.row("note", n.clone());
    }
    t.print();
    Ok(())
}

/// Runs the churn scenario; `quiet` suppresses the progress line.
pub fn run_churn(args: &ChurnArgs, out: &Output, quiet: bool) -> anyhow::Result<ChurnReport> {
    client::require_loopback("--server", args.target.server.ip())?;
    client::require_loopback("--peer-ip", args.peer_ip)?;
    if !(args.rate > 0.0 && args.rate <= 100_000.0) {
        anyhow::bail!("--rate must be between 0 and 100000 allocations per second");
    }
    if !(args.duration > 0.0 && args.duration <= 24.0 * 3600.0) {
        anyhow::bail!("--duration must be between 0 and 86400 seconds");
    }
    if !(args.hold >= 0.0 && args.hold <= 250.0) {
        anyhow::bail!("--hold must be 0–250 seconds (permissions last 300 s)");
    }
    if args.payload < payload::HEADER_LEN || args.payload > 1400 {
        anyhow::bail!("--payload must be {}–1400 bytes", payload::HEADER_LEN);
    }
    cpu::require_process(args.server_pid)?;
    let auth = Auth::from_flags(
        args.login.user.as_deref(),
        args.login.rest_secret.as_deref(),
        args.no_auth,
    )?;
    let connector = Connector::new(&args.target, args.clients.client_ips)?;
    uturn_io::socket::raise_fd_limit();
    let peer_sock = client::udp_socket(SocketAddr::new(args.peer_ip, 0), None, 1 << 20)
        .context("binding the peer socket")?;
    let peer = peer_sock.local_addr()?;
    let mut engine = Engine::new()?;
    engine.keep_data = true;
    engine.watch(peer_sock.as_fd(), PEER_TOKEN)?;

    let mut phase: Vec<Option<Phase>> = Vec::new();
    let mut holding: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut setup_hist = stats::new_histogram();
    let mut failures = FailureCounts::default();
    let (mut started, mut created, mut deleted, mut failed) = (0u64, 0, 0, 0);
    let (mut c2p_sent, mut c2p_recv, mut p2c_sent, mut p2c_recv) = (0u64, 0u64, 0u64, 0u64);
    let mut live = 0u64;
    let mut active = 0usize;
    let mut series = Vec::new();
    let mut notes = Vec::new();
    let mut events = Vec::new();
    let mut pbuf = vec![0u8; 2048];
    let hold = Duration::from_secs_f64(args.hold);
    let duration = Duration::from_secs_f64(args.duration);
    let bar = out.progress(duration, quiet, "churn");
    let pid = args.server_pid;
    let sample = |t0: Instant, live: u64, created: u64, deleted: u64, failed: u64| Sample {
        t_secs: t0.elapsed().as_secs_f64(),
        live_allocations: live,
        created,
        deleted,
        failed,
        rss_bytes: pid.and_then(cpu::rss_bytes),
        open_fds: pid.and_then(cpu::open_fds),
    };

    let gen0 = cpu::self_cpu_secs();
    let server_cpu = cpu::CpuMeter::start(pid);
    let t0 = Instant::now();
    let end = t0 + duration;
    series.push(sample(t0, 0, 0, 0, 0));
    let mut next_sample = t0 + Duration::from_secs(1);
    let mut index = 0u64;
    loop {
        let now = Instant::now();
        // Create what the schedule says is due.
        if now < end {
            let due = ((now - t0).as_secs_f64() * args.rate) as u64;
            while started < due {
                let conn = connector
                    .open(index, 1 << 16)
                    .context("opening a client connection")?;
                let slot = engine.insert(TurnFlow::new(
                    index,
                    conn,
                    peer,
                    &auth,
                    args.login.realm.as_deref(),
                ))?;
                index += 1;
                if phase.len() <= slot {
                    phase.resize(slot + 1, None);
                }
                phase[slot] = Some(Phase::Setup);
                engine.start(slot, client::setup_plan(true));
                started += 1;
                active += 1;
            }
        } else {
            // Time is up: delete everything still held at once.
            while let Some((_, slot)) = holding.pop_front() {
                phase[slot] = Some(Phase::Delete);
                engine.start(slot, &[Step::Delete]);
            }
            if active == 0 || now >= end + GRACE {
                break;
            }
        }
        // Delete allocations whose hold time is over.
        while let Some(&(due, slot)) = holding.front() {
            if due > now {
                break;
            }
            holding.pop_front();
            phase[slot] = Some(Phase::Delete);
            engine.start(slot, &[Step::Delete]);
        }
        if now >= next_sample {
            series.push(sample(t0, live, created, deleted, failed));
            next_sample += Duration::from_secs(1);
            if let Some(b) = &bar {
                b.set_position((now - t0).as_millis().min(duration.as_millis()) as u64);
                b.set_message(format!("{live} live, {created} created, {failed} failed"));
            }
        }
        // Sleep until the next creation, hold expiry or sample.
        let mut wait = Duration::from_millis(20).min(next_sample.saturating_duration_since(now));
        if now < end {
            let next_create = t0 + Duration::from_secs_f64((started + 1) as f64 / args.rate);
            wait = wait.min(next_create.saturating_duration_since(now));
        }
        if let Some(&(due, _)) = holding.front() {
            wait = wait.min(due.saturating_duration_since(now));
        }
        events.clear();
        engine.poll(wait, &mut events)?;
        for ev in events.drain(..) {
            let (slot, ok) = match ev {
                Event::Finished(s) => (s, true),
                Event::Failed(s) => (s, false),
                Event::Data(slot, data) => {
                    // Count it if it carries the header of this client's flow.
                    let mine = engine.flow(slot).map(|f| f.index as u32);
                    if payload::read(&data).is_some_and(|(flow, _, _)| Some(flow) == mine) {
                        p2c_recv += 1;
                    }
                    continue;
                }
                Event::Extra(token) => {
                    debug_assert_eq!(token, PEER_TOKEN);
                    c2p_recv += drain_peer(&peer_sock, &mut pbuf);
                    continue;
                }
            };
            let Some(ph) = phase.get(slot).copied().flatten() else {
                continue;
            };
            let flow = engine.flow(slot).expect("flow of an event");
            match (ph, ok) {
                (Phase::Setup, true) => {
                    created += 1;
                    live += 1;
                    if let (Some(s), Some(f)) = (flow.started, flow.finished) {
                        stats::record(&mut setup_hist, (f - s).as_nanos() as u64);
                    }
                    // Use it: packets each way.
                    let relayed = flow.relayed.expect("allocated");
                    let (channel, index) = (flow.channel, flow.index);
                    // RFC 8656 §12.5: over TCP and TLS, ChannelData is padded to 4 bytes.
                    let padded = if args.target.transport.is_stream() {
                        args.payload.div_ceil(4) * 4
                    } else {
                        args.payload
                    };
                    let mut frame = vec![0u8; 4 + padded];
                    frame[4..4 + args.payload].fill(payload::FILLER);
                    let data = 4..4 + args.payload;
                    for seq in 0..args.packets {
                        let mut h = [0u8; 4];
                        channel::write_header(&mut h, channel, args.payload as u16);
                        frame[..4].copy_from_slice(&h);
                        payload::write(
                            &mut frame[data.clone()],
                            index as u32,
                            seq,
                            process::monotonic_ns(),
                        );
                        if engine.send(slot, &frame) {
                            c2p_sent += 1;
                        }
                        if peer_sock.send_to(&frame[data.clone()], relayed).is_ok() {
                            p2c_sent += 1;
                        }
                    }
                    phase[slot] = Some(Phase::Holding);
                    if Instant::now() < end {
                        holding.push_back((Instant::now() + hold, slot));
                    } else {
                        phase[slot] = Some(Phase::Delete);
                        engine.start(slot, &[Step::Delete]);
                    }
                    continue;
                }
                (Phase::Delete, true) => {
                    deleted += 1;
                    live -= 1;
                }
                (Phase::Cleanup, _) => {}
                (Phase::Holding, _) => continue,
                (Phase::Setup | Phase::Delete, false) => {
                    failed += 1;
                    if ph == Phase::Delete {
                        live -= 1;
                    }
                    failures.count(flow.error.as_ref());
                    if ph == Phase::Setup && flow.relayed.is_some() {
                        phase[slot] = Some(Phase::Cleanup);
                        engine.start(slot, &[Step::Delete]);
                        continue;
                    }
                }
            }
            phase[slot] = None;
            engine.remove(slot);
            active -= 1;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if active > 0 {
        notes.push(format!(
            "{active} allocations were still unfinished at the end"
        ));
    }
    // Let the server settle, then the final sample.
    std::thread::sleep(Duration::from_secs(1));
    c2p_recv += drain_peer(&peer_sock, &mut pbuf);
    series.push(sample(t0, live, created, deleted, failed));
    let gen_cpu = cpu::self_cpu_secs() - gen0;
    let server_cpu_secs = server_cpu.and_then(|c| c.secs());
    let rss_growth_bytes = growth(&series, |s| s.rss_bytes.map(|b| b as i64));
    let fd_growth = growth(&series, |s| s.open_fds.map(|f| f as i64));
    if pid.is_none() {
        notes.push("give --server-pid to sample the server's memory and descriptors".into());
    }
    Ok(ChurnReport {
        scenario: "churn",
        args: args.clone(),
        transport: args.target.transport.name(),
        started,
        created,
        deleted,
        failed,
        errors_by_code: failures.by_code,
        timeouts: failures.timeouts,
        c2p_sent,
        c2p_received: c2p_recv,
        p2c_sent,
        p2c_received: p2c_recv,
        setup_latency_ms: stats::percentiles(&setup_hist, 1e6),
        series,
        rss_growth_bytes,
        fd_growth,
        generator_cpu_secs: gen_cpu,
        server_cpu_secs,
        duration_secs: args.duration,
        notes,
    })
}

/// Reads every datagram queued on the peer socket; returns how many carry
/// a payload header (sent client→peer by this generator).
fn drain_peer(peer: &UdpSocket, buf: &mut [u8]) -> u64 {
    let mut n_ours = 0;
    while let Ok((n, _)) = peer.recv_from(buf) {
        if payload::read(&buf[..n]).is_some() {
            n_ours += 1;
        }
    }
    n_ours
}

/// How much `value` changed from the first sample to the last.
fn growth(series: &[Sample], value: impl Fn(&Sample) -> Option<i64>) -> Option<i64> {
    Some(value(series.last()?)? - value(series.first()?)?)
}
