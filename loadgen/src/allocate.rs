//! `allocate`: complete authenticated flows per second.
//!
//! A flow is what a call costs the server before any media flows: a fresh
//! client socket (over TCP a new connection, over TLS a new connection and
//! a full handshake), Allocate without credentials → 401 (REALM, NONCE) →
//! Allocate with credentials → CreatePermission → ChannelBind, and then a
//! Refresh with LIFETIME 0 that deletes the allocation again so the quota
//! is free for the next flow (and the connection is closed).
//! `--concurrency` flows are kept in flight for `--duration` seconds; a new
//! one starts as soon as one ends.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{self, Connector, Engine, Event, FailureCounts, Step, TlsInfo, TurnFlow};
use crate::cpu;
use crate::creds::Auth;
use crate::flags::{mask_secret, mask_user, ClientIps, Dial, Transport};
use crate::output::{fmt_code_counts, fmt_count, Output, Table};
use crate::stats::{self, Percentiles};

/// Authenticated allocation flows per second, N in flight.
///
/// Each flow: 401 round, Allocate, CreatePermission, ChannelBind (its
/// latency is measured from the first request to the ChannelBind answer),
/// then Refresh LIFETIME 0 to free the quota; counted as complete when the
/// delete is answered. Over TCP and TLS each flow opens its own connection
/// (TLS: a full handshake, no resumption) and closes it at the end, so the
/// figure is connections + allocations per second. Errors are counted by
/// STUN error code.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct AllocateArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: Dial,
    /// Long-term credentials for every client, as NAME:PASSWORD.
    #[arg(long, value_name = "NAME:PASSWORD", conflicts_with = "rest_secret")]
    #[serde(serialize_with = "mask_user")]
    pub user: Option<String>,
    /// TURN REST shared secret: each flow mints `<now+3600>:lg<i>` with
    /// password base64(HMAC-SHA1(secret, username)).
    #[arg(long, value_name = "SECRET")]
    #[serde(serialize_with = "mask_secret")]
    pub rest_secret: Option<String>,
    /// Realm for the key derivation (default: the REALM of the server's 401).
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
    /// Flows in flight at once (each its own client socket or connection,
    /// and allocation).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub concurrency: usize,
    /// How long new flows are started, in seconds (flows in flight at the
    /// end get up to 6 s more to finish).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Process id of the server: reports its CPU seconds and flows per
    /// server-CPU-second.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Peer address permissions and channels are for (loopback only; a
    /// socket of the generator is bound there).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub peer_ip: IpAddr,
    #[command(flatten)]
    #[serde(flatten)]
    pub clients: ClientIps,
    /// Send no credentials and expect no 401 (for `floor`).
    #[arg(long)]
    pub no_auth: bool,
}

impl Default for AllocateArgs {
    /// The command-line defaults.
    fn default() -> Self {
        crate::relay::defaults()
    }
}

/// The result of an allocate run.
#[derive(serde::Serialize, Clone, Debug)]
pub struct AllocateReport {
    pub scenario: &'static str,
    pub args: AllocateArgs,
    /// Between the clients and the server: "udp", "tcp" or "tls".
    pub transport: &'static str,
    /// What one flow is, e.g. "TCP connect + TLS handshake, 401 round,
    /// Allocate, CreatePermission, ChannelBind, Refresh(0), close".
    pub flow: String,
    /// The TLS parameters the server chose (first flow), with --transport tls.
    pub tls: Option<TlsInfo>,
    /// Complete flows (through the delete) finished within the duration, per second.
    pub flows_per_sec: f64,
    /// Complete flows within the duration.
    pub completed: u64,
    /// Complete flows in the whole run (completed + completed_late): what
    /// the server's CPU time over the whole run paid for.
    pub flows: u64,
    /// Complete flows that finished in the grace period after it.
    pub completed_late: u64,
    pub started: u64,
    pub failed: u64,
    /// Set-up latency (first request to ChannelBind answer, including the
    /// 401 round), milliseconds.
    pub latency_ms: Percentiles,
    /// Whole flow including the delete, milliseconds.
    pub cycle_latency_ms: Percentiles,
    /// Failed flows by the STUN error code that ended them.
    pub errors_by_code: BTreeMap<u16, u64>,
    /// Flows that got no answer to some request after 5 sends.
    pub timeouts: u64,
    /// Flows that failed otherwise (socket errors, malformed answers).
    pub other_errors: u64,
    /// Flows still unfinished when the grace period ran out.
    pub abandoned: u64,
    pub requests: u64,
    pub retransmits: u64,
    pub challenges_401: u64,
    pub stale_nonce_438: u64,
    pub generator_cpu_secs: f64,
    /// generator_cpu_secs / wall seconds (1.0 = one core).
    pub generator_cpu_util: f64,
    /// True when the generator (one thread) used ≥ 90 % of a core: the
    /// flow rate is then the generator's limit, not the server's.
    pub generator_limited: bool,
    pub server_cpu_secs: Option<f64>,
    pub flows_per_server_cpu_sec: Option<f64>,
    pub duration_secs: f64,
    pub notes: Vec<String>,
}

/// How long flows in flight at the end may still finish.
const GRACE: Duration = Duration::from_secs(6);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Delete,
    /// Deleting after a failure; not counted again.
    Cleanup,
}

pub fn run(args: &AllocateArgs, out: &Output) -> anyhow::Result<()> {
    let r = run_allocate(args, out, false)?;
    if out.json {
        return out.print_json(&r);
    }
    let mut t = Table::new(format!(
        "allocate · {} over {} · {} in flight · {:.1} s",
        r.args.target.server, r.transport, r.args.concurrency, r.duration_secs
    ));
    t.row("flow", r.flow.clone());
    if let Some(tls) = &r.tls {
        t.row("TLS", tls.describe(r.args.target.tls_ca.is_some()));
    }
    t.row(
        "complete flows",
        format!(
            "{} /s ({} flows, {} finished late)",
            fmt_count(r.flows_per_sec),
            r.completed,
            r.completed_late
        ),
    );
    t.row(
        "set-up latency p50/p90/p99",
        format!(
            "{:.2} / {:.2} / {:.2} ms (max {:.2})",
            r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
        ),
    );
    t.row(
        "whole flow p50/p99",
        format!(
            "{:.2} / {:.2} ms",
            r.cycle_latency_ms.p50, r.cycle_latency_ms.p99
        ),
    );
    t.row("started / failed", format!("{} / {}", r.started, r.failed));
    t.row("errors by code", fmt_code_counts(&r.errors_by_code));
    t.row(
        "timeouts / other / abandoned",
        format!("{} / {} / {}", r.timeouts, r.other_errors, r.abandoned),
    );
    t.row(
        "requests",
        format!(
            "{} ({} retransmitted, {} × 401, {} × 438)",
            r.requests, r.retransmits, r.challenges_401, r.stale_nonce_438
        ),
    );
    t.row(
        "generator CPU",
        format!(
            "{:.2} s ({:.0} % of a core)",
            r.generator_cpu_secs,
            r.generator_cpu_util * 100.0
        ),
    );
    match r.server_cpu_secs {
        Some(s) => t.row(
            "server CPU",
            format!(
                "{s:.2} s{}",
                r.flows_per_server_cpu_sec
                    .map(|f| format!(
                        ", {} {} flows per CPU-second",
                        fmt_count(f),
                        r.transport.to_uppercase()
                    ))
                    .unwrap_or_default()
            ),
        ),
        None => t.row("server CPU", "(give --server-pid)"),
    };
    for n in &r.notes {
        t.row("note", n.clone());
    }
    t.print();
    Ok(())
}

/// Runs the allocate scenario; `quiet` suppresses the progress line.
pub fn run_allocate(
    args: &AllocateArgs,
    out: &Output,
    quiet: bool,
) -> anyhow::Result<AllocateReport> {
    client::require_loopback("--server", args.target.server.ip())?;
    client::require_loopback("--peer-ip", args.peer_ip)?;
    if args.concurrency == 0 || args.concurrency > 10_000 {
        anyhow::bail!("--concurrency must be 1–10000");
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        anyhow::bail!("--duration must be between 0 and 3600 seconds");
    }
    cpu::require_process(args.server_pid)?;
    let auth = Auth::from_flags(
        args.user.as_deref(),
        args.rest_secret.as_deref(),
        args.no_auth,
    )?;
    let connector = Connector::new(&args.target, args.clients.client_ips)?;
    uturn_io::socket::raise_fd_limit();
    // A real peer socket, so nothing the server might send there bounces.
    let peer_sock = client::udp_socket(SocketAddr::new(args.peer_ip, 0), None, 1 << 16)
        .context("binding the peer socket")?;
    let peer = peer_sock.local_addr()?;
    let mut engine = Engine::new()?;
    let mut phase: Vec<Option<(Phase, Instant)>> = Vec::new();
    let mut setup_hist = stats::new_histogram();
    let mut cycle_hist = stats::new_histogram();
    let mut failures = FailureCounts::default();
    let (mut started, mut failed) = (0u64, 0u64);
    let (mut completed, mut completed_late) = (0u64, 0u64);
    let mut active = 0usize;
    let mut next_index = 0u64;
    let mut events = Vec::new();
    let duration = Duration::from_secs_f64(args.duration);
    let bar = out.progress(duration, quiet, "allocate");
    let mut notes = Vec::new();
    let mut tls = None;

    let gen0 = cpu::self_cpu_secs();
    let server_cpu = cpu::CpuMeter::start(args.server_pid);
    let t0 = Instant::now();
    let end = t0 + duration;
    let mut last_bar = t0;
    loop {
        let now = Instant::now();
        if now < end {
            while active < args.concurrency {
                let conn = match connector.open(next_index, 1 << 16) {
                    Ok(c) => c,
                    Err(e) => {
                        if notes.is_empty() {
                            notes.push(format!("could not open a client connection: {e}"));
                        }
                        break;
                    }
                };
                let flow = TurnFlow::new(next_index, conn, peer, &auth, args.realm.as_deref());
                next_index += 1;
                let slot = engine.insert(flow)?;
                if phase.len() <= slot {
                    phase.resize(slot + 1, None);
                }
                phase[slot] = Some((Phase::Setup, Instant::now()));
                engine.start(slot, client::setup_plan(true));
                active += 1;
                started += 1;
            }
        } else if active == 0 || now >= end + GRACE {
            break;
        }
        events.clear();
        engine.poll(Duration::from_millis(20), &mut events)?;
        for ev in events.drain(..) {
            let (slot, ok) = match ev {
                Event::Finished(s) => (s, true),
                Event::Failed(s) => (s, false),
                Event::Data(..) | Event::Extra(_) => continue,
            };
            let Some((ph, t_start)) = phase.get(slot).copied().flatten() else {
                continue;
            };
            let flow = engine.flow(slot).expect("flow of an event");
            let now = Instant::now();
            match (ph, ok) {
                (Phase::Setup, true) => {
                    if tls.is_none() {
                        tls = flow.conn.tls_info();
                    }
                    let lat = flow.finished.unwrap_or(now) - flow.started.unwrap_or(t_start);
                    stats::record(&mut setup_hist, lat.as_nanos() as u64);
                    phase[slot] = Some((Phase::Delete, t_start));
                    engine.start(slot, &[Step::Delete]);
                    continue;
                }
                (Phase::Delete, true) => {
                    stats::record(&mut cycle_hist, (now - t_start).as_nanos() as u64);
                    if now <= end {
                        completed += 1;
                    } else {
                        completed_late += 1;
                    }
                }
                (Phase::Cleanup, _) => {}
                (Phase::Setup | Phase::Delete, false) => {
                    failed += 1;
                    failures.count(flow.error.as_ref());
                    // Free what was allocated before the failure.
                    if ph == Phase::Setup && flow.relayed.is_some() {
                        phase[slot] = Some((Phase::Cleanup, t_start));
                        engine.start(slot, &[Step::Delete]);
                        continue;
                    }
                }
            }
            phase[slot] = None;
            engine.remove(slot);
            active -= 1;
        }
        if let Some(b) = &bar {
            if last_bar.elapsed() >= Duration::from_millis(200) {
                last_bar = Instant::now();
                let el = t0.elapsed();
                b.set_position(el.as_millis().min(duration.as_millis()) as u64);
                b.set_message(format!(
                    "{} flows/s, {} requests in flight, {} failed",
                    fmt_count(completed as f64 / el.as_secs_f64().max(1e-3)),
                    engine.in_flight(),
                    failed
                ));
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let wall = t0.elapsed().as_secs_f64();
    let gen_cpu = cpu::self_cpu_secs() - gen0;
    let server_cpu_secs = server_cpu.and_then(|c| c.secs());
    let abandoned = active as u64;
    if abandoned > 0 {
        notes.push(format!(
            "{abandoned} flows were still unfinished {} s after the end and were abandoned",
            GRACE.as_secs()
        ));
    }
    let generator_cpu_util = gen_cpu / wall.max(1e-9);
    let generator_limited = generator_cpu_util >= 0.9;
    if generator_limited {
        notes.push(format!(
            "generator-limited: its one thread used {:.0} % of a core, so {} flows/s is a \
             lower bound for the server",
            generator_cpu_util * 100.0,
            fmt_count(completed as f64 / args.duration)
        ));
    }
    Ok(AllocateReport {
        scenario: "allocate",
        args: args.clone(),
        transport: args.target.transport.name(),
        flow: flow_steps(args.target.transport),
        tls,
        flows_per_sec: completed as f64 / args.duration,
        completed,
        flows: completed + completed_late,
        completed_late,
        started,
        failed,
        latency_ms: stats::percentiles(&setup_hist, 1e6),
        cycle_latency_ms: stats::percentiles(&cycle_hist, 1e6),
        errors_by_code: failures.by_code,
        timeouts: failures.timeouts,
        other_errors: failures.other,
        abandoned,
        requests: engine.stats.requests,
        retransmits: engine.stats.retransmits,
        challenges_401: engine.stats.challenges_401,
        stale_nonce_438: engine.stats.stale_nonce_438,
        generator_cpu_secs: gen_cpu,
        generator_cpu_util,
        generator_limited,
        server_cpu_secs,
        flows_per_server_cpu_sec: server_cpu_secs
            .filter(|&s| s > 0.0)
            .map(|s| (completed + completed_late) as f64 / s),
        duration_secs: args.duration,
        notes,
    })
}

/// What one flow is over `transport`.
fn flow_steps(transport: Transport) -> String {
    let opening = match transport {
        Transport::Udp => "",
        Transport::Tcp => "TCP connect, ",
        Transport::Tls => "TCP connect + TLS handshake, ",
    };
    let closing = if transport.is_stream() { ", close" } else { "" };
    format!("{opening}401 round, Allocate, CreatePermission, ChannelBind, Refresh(0){closing}")
}
