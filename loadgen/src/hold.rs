//! `hold`: what an idle allocation costs the server in memory.
//!
//! The allocations are opened in steps (`--allocations 1000,10000`), each
//! with one permission (and, with `--channel`, a channel binding), and held
//! without traffic. After every step, once the server has had `--settle`
//! seconds, the server's resident memory (VmRSS) and open descriptors are
//! read from /proc/PID and the host's Slab from /proc/meminfo. The report is
//! the growth per allocation between consecutive steps (BENCHMARKING.md:
//! the slope between two populations, never the total divided by N), so
//! what the server had before the first allocation does not count.
//!
//! Slab is host-wide, and the generator's own client sockets are kernel
//! memory too. So the client sockets of a step are opened first and Slab is
//! read once more right before their Allocate exchanges: the growth across
//! the exchanges alone is the server's kernel share (its relay sockets and
//! their epoll or io_uring entries); the growth from step to step includes
//! the generator's sockets.
//!
//! Nothing is refreshed: a run is stopped after 240 s (permissions last
//! 300 s), and every allocation is deleted (Refresh LIFETIME 0) at the end.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{self, run_plan, Conn, Engine, FailureCounts, Step, TurnFlow};
use crate::cpu;
use crate::creds::Auth;
use crate::flags::{Login, Target};
use crate::output::{fmt_bytes, fmt_code_counts, print_grid, Output, Table};

/// Idle allocations held open in steps; the server's memory per allocation.
///
/// At each step of --allocations the total held is raised to that number
/// (each allocation: 401 round, Allocate, CreatePermission, and ChannelBind
/// with --channel), the server is given --settle seconds, and its VmRSS and
/// open descriptors (--server-pid) and the host's Slab (/proc/meminfo) are
/// read. Printed: the growth per allocation between consecutive steps.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct HoldArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: Target,
    #[command(flatten)]
    #[serde(flatten)]
    pub login: Login,
    /// Allocations held at each step, increasing, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000",
        value_name = "LIST"
    )]
    pub allocations: Vec<usize>,
    /// Also bind a channel on every allocation (default: one permission only).
    #[arg(long)]
    pub channel: bool,
    /// Seconds the server is left alone after a step before it is measured.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub settle: f64,
    /// Set-up exchanges in flight at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub concurrency: usize,
    /// Process id of the server: read its VmRSS and open descriptors.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Peer address the permissions (and channels) are for (loopback only;
    /// nothing is ever sent to it).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub peer_ip: IpAddr,
    /// Loopback source addresses the clients are spread over, counted up
    /// from 127.0.0.1 (client i uses address i mod N); 0 gives every client
    /// its own address, 1 puts all on 127.0.0.1. IPv6: always ::1.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub client_ips: usize,
}

impl Default for HoldArgs {
    /// The command-line defaults.
    fn default() -> Self {
        crate::relay::defaults()
    }
}

/// What was read after one step.
#[derive(serde::Serialize, Clone, Debug)]
pub struct HoldStep {
    /// The step's target.
    pub target: usize,
    /// Allocations actually held (set up and not failed).
    pub held: usize,
    /// Seconds the step's set-up took.
    pub setup_secs: f64,
    /// Server VmRSS, bytes (with --server-pid).
    pub rss_bytes: Option<u64>,
    /// Server open descriptors (with --server-pid).
    pub open_fds: Option<usize>,
    /// Of the server's RSS, anonymous memory on transparent huge pages
    /// (AnonHugePages of /proc/PID/smaps_rollup).
    pub anon_huge_bytes: Option<u64>,
    /// Host Slab, bytes, after the step.
    pub slab_bytes: Option<u64>,
    /// Host Slab, bytes, once the step's client sockets were open and
    /// before their Allocate exchanges.
    pub slab_before_setup_bytes: Option<u64>,
    /// Growth from the previous step, per allocation: server RSS (user
    /// space), Slab across the set-up only (the server's kernel share),
    /// Slab in all (with the generator's sockets), server descriptors.
    pub rss_per_allocation: Option<f64>,
    pub slab_server_per_allocation: Option<f64>,
    pub slab_all_per_allocation: Option<f64>,
    pub fds_per_allocation: Option<f64>,
}

/// The result of a hold run.
#[derive(serde::Serialize, Clone, Debug)]
pub struct HoldReport {
    pub scenario: &'static str,
    pub args: HoldArgs,
    /// Before the first allocation, then one per step.
    pub steps: Vec<HoldStep>,
    pub failed: u64,
    pub errors_by_code: BTreeMap<u16, u64>,
    pub timeouts: u64,
    /// Allocations deleted at the end.
    pub deleted: usize,
    pub notes: Vec<String>,
}

/// A run ends (and deletes what it holds) after this, before permissions
/// (300 s) would need a refresh.
const MAX_RUN: Duration = Duration::from_secs(240);
/// Time given to the deletes at the end.
const DELETE_TIME: Duration = Duration::from_secs(30);

pub fn run(args: &HoldArgs, out: &Output) -> anyhow::Result<()> {
    let r = run_hold(args, out)?;
    if out.json {
        return out.print_json(&r);
    }
    let per = |v: Option<f64>| v.map_or_else(|| "-".into(), |b| format!("{b:.0} B"));
    let rows: Vec<Vec<String>> = r
        .steps
        .iter()
        .map(|s| {
            vec![
                s.held.to_string(),
                s.rss_bytes.map_or_else(|| "-".into(), fmt_bytes),
                s.open_fds.map_or_else(|| "-".into(), |f| f.to_string()),
                s.slab_bytes.map_or_else(|| "-".into(), fmt_bytes),
                per(s.rss_per_allocation),
                per(s.slab_server_per_allocation),
                per(s.slab_all_per_allocation),
                s.fds_per_allocation
                    .map_or_else(|| "-".into(), |f| format!("{f:.2}")),
            ]
        })
        .collect();
    print_grid(
        "server memory per idle allocation (growth from the row above)",
        &[
            "held",
            "server RSS",
            "fds",
            "host Slab",
            "RSS/alloc",
            "Slab/alloc (server)",
            "Slab/alloc (all)",
            "fds/alloc",
        ],
        &rows,
    );
    println!();
    let mut t = Table::new(format!(
        "hold · {} · {} · {}",
        r.args.target.server,
        if r.args.channel {
            "permission + channel"
        } else {
            "one permission"
        },
        r.args
            .allocations
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    t.row("failed", r.failed.to_string());
    t.row("errors by code", fmt_code_counts(&r.errors_by_code));
    t.row("timeouts", r.timeouts.to_string());
    t.row("deleted at the end", r.deleted.to_string());
    for n in &r.notes {
        t.row("note", n.clone());
    }
    t.print();
    Ok(())
}

/// Host Slab in bytes (the Slab line of /proc/meminfo).
pub fn slab_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("Slab:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The server's anonymous memory on transparent huge pages, in bytes.
fn anon_huge_bytes(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("AnonHugePages:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `(b - a) / n`, when both readings exist and n > 0.
fn slope(a: Option<u64>, b: Option<u64>, n: usize) -> Option<f64> {
    let (a, b) = (a?, b?);
    (n > 0).then(|| (b as f64 - a as f64) / n as f64)
}

/// Runs the hold scenario.
pub fn run_hold(args: &HoldArgs, out: &Output) -> anyhow::Result<HoldReport> {
    client::require_loopback("--server", args.target.server.ip())?;
    client::require_loopback("--peer-ip", args.peer_ip)?;
    if args.allocations.is_empty() || args.allocations.windows(2).any(|w| w[0] >= w[1]) {
        anyhow::bail!("--allocations must be a strictly increasing list");
    }
    let most = *args.allocations.last().expect("not empty");
    if args.allocations[0] == 0 || most > 60_000 {
        anyhow::bail!("--allocations must be between 1 and 60000");
    }
    if !(args.settle >= 0.0 && args.settle <= 60.0) {
        anyhow::bail!("--settle must be 0–60 seconds");
    }
    cpu::require_process(args.server_pid)?;
    let auth = Auth::from_flags(
        args.login.user.as_deref(),
        args.login.rest_secret.as_deref(),
        false,
    )?;
    let limit = uturn_io::socket::raise_fd_limit();
    if most.saturating_add(64) > limit {
        anyhow::bail!(
            "{most} allocations need as many client sockets, but the descriptor limit is {limit}"
        );
    }
    // Permissions name this address; nothing is sent to it.
    let peer = SocketAddr::new(args.peer_ip, 9);
    let plan = client::setup_plan(args.channel);
    let pid = args.server_pid;
    let settle = Duration::from_secs_f64(args.settle);
    let t0 = Instant::now();
    let mut engine = Engine::new()?;
    let mut held: Vec<usize> = Vec::new();
    let mut orphans: Vec<usize> = Vec::new();
    let mut failures = FailureCounts::default();
    let mut failed = 0u64;
    let mut notes = Vec::new();
    let first = HoldStep {
        target: 0,
        held: 0,
        setup_secs: 0.0,
        rss_bytes: pid.and_then(cpu::rss_bytes),
        open_fds: pid.and_then(cpu::open_fds),
        anon_huge_bytes: pid.and_then(anon_huge_bytes),
        slab_bytes: slab_bytes(),
        slab_before_setup_bytes: None,
        rss_per_allocation: None,
        slab_server_per_allocation: None,
        slab_all_per_allocation: None,
        fds_per_allocation: None,
    };
    let mut steps = vec![first];
    let mut index = 0u64;
    for &target in &args.allocations {
        if t0.elapsed() >= MAX_RUN {
            notes.push(format!(
                "stopped before the step to {target}: runs end after {} s",
                MAX_RUN.as_secs()
            ));
            break;
        }
        let mut fresh = Vec::with_capacity(target - held.len());
        while held.len() + fresh.len() < target {
            let sock = client::client_socket(args.target.server, index, args.client_ips, 4096)
                .context("creating a client socket")?;
            let flow = TurnFlow::new(
                index,
                Conn::Udp(sock),
                peer,
                &auth,
                args.login.realm.as_deref(),
            );
            fresh.push(engine.insert(flow)?);
            index += 1;
        }
        let slab_before = slab_bytes();
        let started = Instant::now();
        let lost = run_plan(
            &mut engine,
            &fresh,
            plan,
            args.concurrency,
            t0 + MAX_RUN,
            |_| {},
        )?;
        let setup_secs = started.elapsed().as_secs_f64();
        for &s in &lost {
            failed += 1;
            let flow = engine.flow(s).expect("a failed flow is still in its slot");
            failures.count(flow.error.as_ref());
            // Allocated, then failed later in the plan: deleted at the end.
            if flow.relayed.is_some() {
                orphans.push(s);
            }
        }
        held.extend(fresh.into_iter().filter(|s| !lost.contains(s)));
        if !out.json {
            eprintln!("hold: {} held ({:.1} s to set up)", held.len(), setup_secs);
        }
        std::thread::sleep(settle);
        let prev = steps.last().expect("the first row is there").clone();
        let step_n = held.len().saturating_sub(prev.held);
        let rss = pid.and_then(cpu::rss_bytes);
        let fds = pid.and_then(cpu::open_fds);
        let slab = slab_bytes();
        steps.push(HoldStep {
            target,
            held: held.len(),
            setup_secs,
            rss_bytes: rss,
            open_fds: fds,
            anon_huge_bytes: pid.and_then(anon_huge_bytes),
            slab_bytes: slab,
            slab_before_setup_bytes: slab_before,
            rss_per_allocation: slope(prev.rss_bytes, rss, step_n),
            slab_server_per_allocation: slope(slab_before, slab, step_n),
            slab_all_per_allocation: slope(prev.slab_bytes, slab, step_n),
            fds_per_allocation: slope(
                prev.open_fds.map(|f| f as u64),
                fds.map(|f| f as u64),
                step_n,
            ),
        });
        if !lost.is_empty() {
            break;
        }
    }
    if failed > 0 {
        notes.push(format!(
            "{failed} allocations failed; no step after the first failure"
        ));
    }
    if steps
        .iter()
        .any(|s| s.anon_huge_bytes.is_some_and(|b| b > 0))
    {
        notes.push(
            "the server's heap is on transparent huge pages: its RSS moves in 2 MiB steps, \
             so a step of N allocations reads ±2 MiB/N per allocation; for byte-level figures \
             start it without them (uturn's allocator, mimalloc: MIMALLOC_ALLOW_THP=0)"
                .into(),
        );
    }
    if pid.is_none() {
        notes.push("give --server-pid to read the server's memory and descriptors".into());
    }
    // Give everything back.
    let all: Vec<usize> = held.iter().chain(&orphans).copied().collect();
    let lost = run_plan(
        &mut engine,
        &all,
        &[Step::Delete],
        args.concurrency,
        Instant::now() + DELETE_TIME,
        |_| {},
    )?;
    if !lost.is_empty() {
        notes.push(format!(
            "{} deletes failed: those allocations expire on the server",
            lost.len()
        ));
    }
    Ok(HoldReport {
        scenario: "hold",
        args: args.clone(),
        steps,
        failed,
        errors_by_code: failures.by_code,
        timeouts: failures.timeouts,
        deleted: all.len() - lost.len(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_and_slab() {
        assert_eq!(slope(Some(1000), Some(3000), 4), Some(500.0));
        assert_eq!(slope(Some(3000), Some(1000), 4), Some(-500.0));
        assert_eq!(slope(None, Some(1), 1), None);
        assert_eq!(slope(Some(1), Some(2), 0), None);
        assert!(slab_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn defaults() {
        let a = HoldArgs::default();
        assert_eq!(a.allocations, vec![1000, 10000]);
        assert!(!a.channel);
    }
}
