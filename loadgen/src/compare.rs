//! `compare`: uturn, the kernel floor and coturn side by side.
//!
//! The method is BENCHMARKING.md's: the same scenario, the same generator,
//! the roles alternated (A B C A B C … for `--rounds` rounds) and the median
//! of each metric reported with its spread (min–max), plus the ratios
//! uturn/floor and uturn/coturn of the medians, which hold better than
//! absolute numbers on a shared machine.
//!
//! * Every run starts its system fresh (a new process on a new free port),
//!   waits until it is ready (`uturn: ready` / `floor: ready` on its stdout;
//!   for coturn, a STUN Binding request answered, within `--ready-timeout`),
//!   lets it settle, measures, then stops it by PID (SIGTERM, then SIGKILL
//!   after 5 s).
//! * The system under test is pinned to `--sut-cpu` (sched_setaffinity in
//!   the child before exec, inherited by all its threads); the generator
//!   runs in this process, its threads pinned to the global `--cpu` list
//!   (default: every other core).
//! * The generator is given `--server-pid`, so the server's CPU seconds and
//!   packets (or flows) per server-CPU-second are measured.
//! * coturn is run when `--coturn-bin` (default `turnserver`, Debian's
//!   `coturn` package) can be found; otherwise it is skipped and the report
//!   says so. The floor has no authentication, so it is driven with
//!   `--no-auth` (in the `allocate` scenario its figure is therefore the
//!   cost of the bare set-up exchange, without the 401 round); it forwards
//!   ChannelData only, so it is skipped for the Send/Data-indication mode.
//!
//! The report (markdown) holds the machine (kernel, CPU model, cores,
//! commit, tuning profile), the method, every exact command line (servers
//! and generator), a table per metric and every single run; the summary
//! table is also printed on stdout (or everything as JSON with `--json`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use serde_json::Value;
use uturn::stun::{attr, Class, Message, MessageWriter, Method};

use crate::allocate::{self, AllocateArgs};
use crate::output::{self, Output};
use crate::relay::{self, RelayArgs};

/// The static user every authenticated server is given.
const USER: &str = "lg:lgpw";
const REALM: &str = "uturn.test";
/// uturn's configuration file for every run: its defaults except two
/// limits that a loopback load test trips over and coturn does not have by
/// default: the allocation quotas (10 per user, 10 000 in total), and the
/// rate limit on replies to unauthenticated requests (20/s, burst 40, per
/// source IP — every generated client is 127.0.0.1, so the 401 of the first
/// round would be refused to all but about 40 flows plus 20 per second).
/// Everything else is given as flags.
const UTURN_CONFIG: &str =
    "# Written by uturn-loadgen compare: uturn's defaults except these limits.\n\
[quotas]\n\
allocations_per_user = 100000\n\
total_allocations = 100000\n\
[rate_limit]\n\
unauth_per_second = 1000000\n\
unauth_burst = 1000000\n";
/// How long a stopped server gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Which scenario each run drives.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// The relay scenario with the given relay flags (packets per second).
    Relay,
    /// Authenticated Allocate + CreatePermission + ChannelBind flows per second.
    Allocate,
}

/// One of the compared systems.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Uturn,
    Floor,
    Coturn,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Uturn => "uturn",
            System::Floor => "floor",
            System::Coturn => "coturn",
        }
    }
}

/// Shown after the flags in `compare --help`.
const COMPARE_HELP: &str = "\
Runs one scenario against uturn, the floor (this binary's `floor`) and coturn \
(`turnserver`, skipped when not installed), alternating A B C for --rounds \
rounds, and writes a markdown report: machine (kernel, CPU, cores, commit, \
tuning profile), method, every exact command line, a table per metric with \
median and spread (min-max) per system, every run, and the ratios \
uturn/floor and uturn/coturn of the medians. The summary is also printed.

Every relay flag (--flows, --payload, --rate, --duration, --direction, \
--mode, --gso, --batch, --threads, ...) is passed to each run unchanged; \
--server, --user, --realm, --rest-secret, --no-auth and --server-pid are set \
per system and ignored here. The allocate scenario uses --duration and any \
--allocate-arg.

Each run starts its system fresh on a free loopback port, pinned to \
--sut-cpu, waits for it (`uturn: ready` / `floor: ready` on stdout, or a STUN \
Binding answer from coturn; at most --ready-timeout), measures with the \
generator pinned to the global --cpu cores (default: every other core), and \
stops it by PID. uturn gets --workers 1 and a config file that lifts its \
allocation quotas and its per-IP limit on unauthenticated replies; coturn \
gets --relay-threads 1. Both use the user lg:lgpw in realm uturn.test.

Example:
  uturn-loadgen --cpu 1 compare --rounds 3 --scenario relay \\
      --flows 100 --payload 120 --rate max --duration 5";

/// Arguments of `compare`: the relay flags plus the comparison's own.
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = COMPARE_HELP)]
pub struct CompareArgs {
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Rounds: each round runs every system once, in --systems order.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100))]
    pub rounds: usize,
    /// Scenario driven against each system: `relay` (packets per second,
    /// with the relay flags) or `allocate` (authenticated flows per second
    /// for --duration seconds).
    #[arg(long, value_enum, default_value_t = Scenario::Relay)]
    pub scenario: Scenario,
    /// Systems compared, in the order run within each round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "uturn,floor,coturn"
    )]
    pub systems: Vec<System>,
    /// uturn's binary.
    #[arg(long, default_value = "target/release/uturn")]
    pub uturn_bin: PathBuf,
    /// Extra flag for uturn (a named variant), e.g. `--uturn-arg=--log-level=warn`. Repeatable.
    #[arg(long = "uturn-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub uturn_args: Vec<String>,
    /// coturn's binary (Debian package `coturn`); skipped when not found.
    #[arg(long, default_value = "turnserver")]
    pub coturn_bin: PathBuf,
    /// Extra flag for the `allocate` scenario's generator, e.g.
    /// `--allocate-arg=--in-flight=64`. Repeatable.
    #[arg(long = "allocate-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub allocate_args: Vec<String>,
    /// CPU core the system under test is pinned to (all its threads).
    #[arg(long, default_value_t = 0)]
    pub sut_cpu: usize,
    /// Seconds to wait for a system to be ready before giving up on that run.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub ready_timeout: f64,
    /// Seconds between a system being ready and the measurement, and
    /// between runs.
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    pub settle: f64,
    /// Markdown report to write [default: tuning/results/compare-<UTC date-time>.md].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// One run of one system.
#[derive(Clone, Debug, Serialize)]
struct RunRecord {
    round: usize,
    system: System,
    server_command: String,
    generator_command: String,
    /// Metric name → value (NaN when the run failed or did not measure it).
    metrics: BTreeMap<String, f64>,
    server_rss_bytes: Option<u64>,
    error: Option<String>,
    /// The generator's full report.
    report: Value,
}

/// A metric of the summary.
struct MetricDef {
    key: &'static str,
    title: &'static str,
    /// JSON pointer into the generator's report (empty: computed here).
    pointer: &'static str,
    higher_is_better: bool,
    fmt: fn(f64) -> String,
}

fn fmt_rate(v: f64) -> String {
    output::fmt_count(v)
}
fn fmt_us(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0} µs")
    } else {
        "-".into()
    }
}
fn fmt_ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2} ms")
    } else {
        "-".into()
    }
}
fn fmt_util(v: f64) -> String {
    if v.is_finite() {
        format!("{:.0} %", v * 100.0)
    } else {
        "-".into()
    }
}

const RELAY_METRICS: &[MetricDef] = &[
    MetricDef {
        key: "delivered_pps",
        title: "Delivered packets per second",
        pointer: "/delivered_pps",
        higher_is_better: true,
        fmt: fmt_rate,
    },
    MetricDef {
        key: "delivered_per_server_cpu_sec",
        title: "Delivered packets per server CPU-second",
        pointer: "/delivered_per_server_cpu_sec",
        higher_is_better: true,
        fmt: fmt_rate,
    },
    MetricDef {
        key: "loss_ratio",
        title: "Loss",
        pointer: "/loss_ratio",
        higher_is_better: false,
        fmt: output::fmt_pct,
    },
    MetricDef {
        key: "latency_p50_us",
        title: "Latency p50 (one-way, µs)",
        pointer: "/latency_us/p50",
        higher_is_better: false,
        fmt: fmt_us,
    },
    MetricDef {
        key: "latency_p99_us",
        title: "Latency p99 (one-way, µs)",
        pointer: "/latency_us/p99",
        higher_is_better: false,
        fmt: fmt_us,
    },
    MetricDef {
        key: "server_cpu_util",
        title: "Server CPU use (% of one core)",
        pointer: "/server_cpu_util",
        higher_is_better: false,
        fmt: fmt_util,
    },
    MetricDef {
        key: "generator_cpu_util",
        title: "Generator CPU use (% of one core, all its threads)",
        pointer: "/generator_cpu_util",
        higher_is_better: false,
        fmt: fmt_util,
    },
];

const ALLOCATE_METRICS: &[MetricDef] = &[
    MetricDef {
        key: "flows_per_sec",
        title: "Allocation flows per second",
        pointer: "/flows_per_sec",
        higher_is_better: true,
        fmt: fmt_rate,
    },
    MetricDef {
        key: "flows_per_server_cpu_sec",
        title: "Flows per server CPU-second",
        pointer: "/flows_per_server_cpu_sec",
        higher_is_better: true,
        fmt: fmt_rate,
    },
    MetricDef {
        key: "flow_latency_p50_ms",
        title: "Set-up latency p50 (401 round to ChannelBind answer, ms)",
        pointer: "/latency_ms/p50",
        higher_is_better: false,
        fmt: fmt_ms,
    },
    MetricDef {
        key: "flow_latency_p99_ms",
        title: "Set-up latency p99 (ms)",
        pointer: "/latency_ms/p99",
        higher_is_better: false,
        fmt: fmt_ms,
    },
    MetricDef {
        key: "failed_flows",
        title: "Failed flows (any STUN error, timeout or other)",
        pointer: "/failed",
        higher_is_better: false,
        fmt: fmt_rate,
    },
    MetricDef {
        key: "server_cpu_util",
        title: "Server CPU use (% of one core)",
        pointer: "",
        higher_is_better: false,
        fmt: fmt_util,
    },
    MetricDef {
        key: "generator_cpu_util",
        title: "Generator CPU use (% of one core, all its threads)",
        pointer: "/generator_cpu_util",
        higher_is_better: false,
        fmt: fmt_util,
    },
];

/// Median, min and max of one metric for one system.
#[derive(Clone, Debug, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
        runs: n,
    })
}

/// A parser for the generator's own command lines: the exact argv that is
/// reported is the one parsed and run.
#[derive(Parser, Debug)]
#[command(name = "uturn-loadgen")]
struct GeneratorCli {
    #[command(subcommand)]
    command: GeneratorCommand,
}

#[derive(Subcommand, Debug)]
enum GeneratorCommand {
    Relay(RelayArgs),
    Allocate(AllocateArgs),
}

/// Relay flags that `compare` sets itself for every system.
const OVERRIDDEN: &[&str] = &[
    "server",
    "user",
    "realm",
    "rest-secret",
    "no-auth",
    "server-pid",
];

/// The relay flags as the user typed them after `compare` (minus the ones
/// set per system), recovered from this process's argv with the relay
/// scenario's own flag definitions, so that every run's generator command
/// line can be printed and re-run exactly.
fn user_relay_flags() -> Vec<String> {
    let argv: Vec<String> = std::env::args().collect();
    relay_flags_in(&argv)
}

/// The relay flags after the `compare` token of `argv`, minus [`OVERRIDDEN`].
fn relay_flags_in(argv: &[String]) -> Vec<String> {
    let relay_cmd = RelayArgs::augment_args(clap::Command::new("relay"));
    let compare_cmd = CompareArgs::augment_args(clap::Command::new("compare"));
    let Some(start) = argv.iter().position(|a| a == "compare") else {
        return Vec::new();
    };
    let find = |cmd: &clap::Command, tok: &str| -> Option<(String, bool)> {
        let (long, short) = if let Some(l) = tok.strip_prefix("--") {
            (Some(l.split('=').next().unwrap_or(l).to_string()), None)
        } else if let Some(s) = tok.strip_prefix('-') {
            (None, s.chars().next())
        } else {
            return None;
        };
        cmd.get_arguments().find_map(|a| {
            let hit = match (&long, short) {
                (Some(l), _) => a.get_long() == Some(l.as_str()),
                (None, Some(s)) => a.get_short() == Some(s),
                _ => false,
            };
            hit.then(|| {
                (
                    a.get_long().unwrap_or("").to_string(),
                    a.get_action().takes_values(),
                )
            })
        })
    };
    let mut out = Vec::new();
    let mut i = start + 1;
    while i < argv.len() {
        let tok = &argv[i];
        i += 1;
        if tok == "--" {
            break;
        }
        let inline_value = tok.starts_with("--") && tok.contains('=')
            || (tok.starts_with('-') && !tok.starts_with("--") && tok.len() > 2);
        if let Some((long, takes)) = find(&relay_cmd, tok) {
            let keep = !OVERRIDDEN.contains(&long.as_str());
            if keep {
                out.push(tok.clone());
            }
            if takes && !inline_value && i < argv.len() {
                if keep {
                    out.push(argv[i].clone());
                }
                i += 1;
            }
        } else {
            // Compare's own flags and the global ones: skip, with their value.
            let takes = match find(&compare_cmd, tok) {
                Some((_, t)) => t,
                None => tok == "--cpu",
            };
            if takes && !inline_value {
                i += 1;
            }
        }
    }
    out
}

/// Machine description for the report.
#[derive(Clone, Debug, Serialize)]
struct Machine {
    date_utc: String,
    kernel: String,
    cpu_model: String,
    cores: usize,
    commit: String,
    tuning: String,
    uturn_version: String,
    coturn_version: String,
    loadgen_version: String,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn command_output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn machine(args: &CompareArgs, coturn: Option<&Path>) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let commit = match command_output(Command::new("git").args(["rev-parse", "--short", "HEAD"])) {
        Some(c) => {
            let dirty = command_output(Command::new("git").args([
                "status",
                "--porcelain",
                "--untracked-files=no",
            ]))
            .is_some();
            if dirty {
                format!("{c} (with uncommitted changes)")
            } else {
                c
            }
        }
        None => "unknown (not a git checkout)".into(),
    };
    let sysctl = |name: &str| {
        read_trim(&format!("/proc/sys/{}", name.replace('.', "/"))).unwrap_or_else(|| "?".into())
    };
    let tuning = format!(
        "none (default sysctls: net.core.rmem_default={} rmem_max={} wmem_default={} wmem_max={})",
        sysctl("net.core.rmem_default"),
        sysctl("net.core.rmem_max"),
        sysctl("net.core.wmem_default"),
        sysctl("net.core.wmem_max"),
    );
    let uturn_version = command_output(Command::new(&args.uturn_bin).arg("--version"))
        .unwrap_or_else(|| "unknown".into());
    let coturn_version = coturn
        .and_then(|c| command_output(Command::new(c).arg("--version")))
        .map(|v| format!("coturn {v}"))
        .unwrap_or_else(|| "not installed".into());
    Machine {
        date_utc: utc_stamp(SystemTime::now(), true),
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
        cpu_model,
        cores,
        commit,
        tuning,
        uturn_version,
        coturn_version,
        loadgen_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` (or `YYYY-MM-DDTHHMMSSZ` for file names).
fn utc_stamp(t: SystemTime, readable: bool) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days since 1970-01-01 to a proleptic Gregorian date (era arithmetic).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    if readable {
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}{m:02}{s:02}Z")
    }
}

/// Finds `bin` as a path or on PATH.
fn locate(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(s.local_addr()?.port())
}

/// A relay port range for uturn and coturn: above the kernel's ephemeral
/// range (32768–60999 by default) where the generator's own sockets live,
/// growing downwards when many flows need more ports. The allocate scenario
/// gets 20000–65535: coturn does not hand a deleted allocation's port out
/// again at once, so thousands of flows per second need many ports.
fn relay_port_range(scenario: Scenario, flows: usize) -> (u16, u16) {
    if scenario == Scenario::Allocate {
        return (20_000, 65_535);
    }
    let want = (flows * 2 + 256).clamp(4_000, 30_000) as u16;
    let hi = 65_535u16;
    (hi - want + 1, hi)
}

/// A started system under test.
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    command: String,
    log: PathBuf,
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Sends one STUN Binding request to `addr`; true when a response with the
/// same transaction id comes back within `wait`.
fn stun_answers(addr: SocketAddr, wait: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)) else {
        return false;
    };
    let mut tid = [0u8; 12];
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    tid.copy_from_slice(&nanos.to_be_bytes()[4..]);
    let mut buf = [0u8; 512];
    let Ok(w) = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &tid) else {
        return false;
    };
    let n = w.finish();
    if sock.set_read_timeout(Some(wait)).is_err() || sock.send_to(&buf[..n], addr).is_err() {
        return false;
    }
    let mut resp = [0u8; 1500];
    match sock.recv_from(&mut resp) {
        Ok((n, _)) => Message::parse(&resp[..n]).is_ok_and(|m| {
            m.transaction_id() == &tid
                && m.method() == Method::Binding
                && m.get(attr::XOR_MAPPED_ADDRESS).is_some()
        }),
        Err(_) => false,
    }
}

impl Server {
    /// Starts `system`, pinned to `cpu`, and waits until it is ready.
    fn start(
        system: System,
        args: &CompareArgs,
        coturn: Option<&Path>,
        log_dir: &Path,
        tag: &str,
        flows: usize,
    ) -> anyhow::Result<Server> {
        let port = free_udp_port()?;
        let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
        let (lo, hi) = relay_port_range(args.scenario, flows);
        let log = log_dir.join(format!("{tag}-{}.log", system.name()));
        let (program, argv, ready_line): (PathBuf, Vec<String>, Option<&str>) = match system {
            System::Uturn => {
                let config = log_dir.join("uturn.toml");
                std::fs::write(&config, UTURN_CONFIG)
                    .with_context(|| format!("writing {}", config.display()))?;
                let mut v: Vec<String> = [
                    "--config",
                    &config.display().to_string(),
                    "--listen",
                    &addr.to_string(),
                    "--relay-ip",
                    "127.0.0.1",
                    "--relay-ports",
                    &format!("{lo}-{hi}"),
                    "--user",
                    USER,
                    "--realm",
                    REALM,
                    "--allow-peer",
                    "127.0.0.0/8",
                    "--workers",
                    "1",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                v.extend(args.uturn_args.iter().cloned());
                (args.uturn_bin.clone(), v, Some("uturn: ready"))
            }
            System::Floor => {
                let exe = std::env::current_exe().context("finding this binary")?;
                let v = [
                    "floor",
                    "--listen",
                    &addr.to_string(),
                    "--relay-ip",
                    "127.0.0.1",
                    "--batch",
                    "32",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                (exe, v, Some("floor: ready"))
            }
            System::Coturn => {
                let bin = coturn.context("coturn is not installed")?.to_path_buf();
                let pidfile = log_dir.join(format!("{tag}-coturn.pid"));
                let v = [
                    "-n",
                    "--listening-ip",
                    "127.0.0.1",
                    "--listening-port",
                    &port.to_string(),
                    "--relay-ip",
                    "127.0.0.1",
                    "--min-port",
                    &lo.to_string(),
                    "--max-port",
                    &hi.to_string(),
                    "--user",
                    USER,
                    "--realm",
                    REALM,
                    "--lt-cred-mech",
                    "--allow-loopback-peers",
                    "--no-tls",
                    "--no-dtls",
                    "--no-cli",
                    "--relay-threads",
                    "1",
                    "--no-stdout-log",
                    "--simple-log",
                    "--log-file",
                    &log.display().to_string(),
                    "--pidfile",
                    &pidfile.display().to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                (bin, v, None)
            }
        };
        let shown = match system {
            System::Floor => "uturn-loadgen".to_string(),
            _ => program.display().to_string(),
        };
        let command = format!(
            "taskset -c {} {}",
            args.sut_cpu,
            command_line(&shown, &argv)
        );
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&program);
        cmd.args(&argv)
            .stdin(Stdio::null())
            .stdout(if ready_line.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(log_file.try_clone()?);
        pin_child(&mut cmd, args.sut_cpu);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        // The ready line is looked for by a thread that keeps draining the
        // server's stdout into its log afterwards (a full pipe would stall it).
        let ready_rx = match (child.stdout.take(), ready_line) {
            (Some(stdout), Some(marker)) => {
                let (tx, rx) = mpsc::channel::<()>();
                let mut sink = log_file;
                std::thread::spawn(move || {
                    let mut tx = Some(tx);
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let _ = writeln!(sink, "{line}");
                        if line.trim() == marker {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                });
                Some(rx)
            }
            _ => None,
        };
        let mut server = Server {
            child,
            pid,
            addr,
            command,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs_f64(args.ready_timeout.max(0.1));
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{} exited before it was ready ({status}); log {}:\n{}",
                    system.name(),
                    server.log.display(),
                    log_tail(&server.log)
                );
            }
            let ready = match &ready_rx {
                Some(rx) => match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) => true,
                    Err(mpsc::RecvTimeoutError::Timeout) => false,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(50));
                        false
                    }
                },
                _ => stun_answers(addr, Duration::from_millis(100)),
            };
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                server.stop();
                bail!(
                    "{} was not ready within {} s; log {}:\n{}",
                    system.name(),
                    args.ready_timeout,
                    server.log.display(),
                    log_tail(&server.log)
                );
            }
        }
        Ok(server)
    }

    /// SIGTERM by PID, then SIGKILL after the grace period; reaps the child.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        crate::floor::signal_pid(self.pid, libc::SIGTERM);
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "compare: pid {} did not stop on SIGTERM; killing it",
            self.pid
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pins the child (and every thread it creates) to `cpu` before it executes.
#[allow(unsafe_code)]
fn pin_child(cmd: &mut Command, cpu: usize) {
    let cpus = [cpu];
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls sched_setaffinity on a stack cpu_set_t (async-signal-safe, no
    // allocation, no locks).
    unsafe {
        cmd.pre_exec(move || crate::floor::pin_current_thread(&cpus));
    }
}

/// Parses a generator command line (without the program name).
fn parse_generator(argv: &[String]) -> anyhow::Result<GeneratorCommand> {
    let full: Vec<OsString> = std::iter::once(OsString::from("uturn-loadgen"))
        .chain(argv.iter().map(OsString::from))
        .collect();
    let matches = GeneratorCli::command()
        .try_get_matches_from(full)
        .map_err(|e| anyhow::anyhow!("generator flags: {e}"))?;
    Ok(GeneratorCli::from_arg_matches(&matches)?.command)
}

/// The metrics of one run from the generator's report.
fn extract(defs: &[MetricDef], report: &Value) -> BTreeMap<String, f64> {
    let num = |p: &str| report.pointer(p).and_then(Value::as_f64);
    defs.iter()
        .map(|d| {
            let v = if !d.pointer.is_empty() {
                num(d.pointer)
            } else if d.key == "server_cpu_util" {
                // The allocate report has no utilisation: CPU seconds over its window.
                match (num("/server_cpu_secs"), num("/duration_secs")) {
                    (Some(c), Some(w)) if w > 0.0 => Some(c / w),
                    _ => None,
                }
            } else {
                None
            };
            (d.key.to_string(), v.unwrap_or(f64::NAN))
        })
        .collect()
}

/// Why `system` cannot run the scenario with these relay flags, if it cannot.
fn unsupported(system: System, args: &CompareArgs) -> Option<&'static str> {
    if system == System::Floor
        && args.scenario == Scenario::Relay
        && args.relay.mode == relay::Mode::Indication
    {
        return Some("the floor forwards ChannelData only (no Send/Data indications)");
    }
    None
}

pub fn run(args: &CompareArgs, out: &Output) -> anyhow::Result<()> {
    if args.systems.is_empty() {
        bail!("--systems is empty");
    }
    let coturn = locate(&args.coturn_bin);
    if args.systems.contains(&System::Uturn) && locate(&args.uturn_bin).is_none() {
        bail!(
            "uturn binary {} not found (build it with `cargo build --release --bin uturn` or pass --uturn-bin)",
            args.uturn_bin.display()
        );
    }
    let defs = match args.scenario {
        Scenario::Relay => RELAY_METRICS,
        Scenario::Allocate => ALLOCATE_METRICS,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gen_cpus: Vec<usize> = if out.cpus.is_empty() {
        (0..cores).filter(|&c| c != args.sut_cpu).collect()
    } else {
        out.cpus.clone()
    };
    if gen_cpus.contains(&args.sut_cpu) {
        eprintln!(
            "compare: warning: the generator shares CPU {} with the system under test",
            args.sut_cpu
        );
    }
    let gen_out = Output {
        json: false,
        cpus: gen_cpus.clone(),
    };
    let cpu_list = gen_cpus
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let user_flags = user_relay_flags();
    let started = SystemTime::now();
    let log_dir = std::env::temp_dir().join(format!(
        "uturn-loadgen-compare-{}-{}",
        std::process::id(),
        utc_stamp(started, false)
    ));
    std::fs::create_dir_all(&log_dir)?;
    let machine = machine(args, coturn.as_deref());

    let mut skipped: Vec<(System, String)> = Vec::new();
    let mut systems: Vec<System> = Vec::new();
    for &s in &args.systems {
        if systems.contains(&s) {
            continue;
        }
        if s == System::Coturn && coturn.is_none() {
            skipped.push((
                s,
                format!(
                    "`{}` not found (install Debian's `coturn` package)",
                    args.coturn_bin.display()
                ),
            ));
        } else if let Some(why) = unsupported(s, args) {
            skipped.push((s, why.to_string()));
        } else {
            systems.push(s);
        }
    }
    for (s, why) in &skipped {
        eprintln!("compare: skipping {}: {why}", s.name());
    }
    if systems.is_empty() {
        bail!("no system left to run");
    }

    let mut runs: Vec<RunRecord> = Vec::new();
    let settle = Duration::from_secs_f64(args.settle.max(0.0));
    for round in 1..=args.rounds {
        for &system in &systems {
            let tag = format!("r{round}");
            if !out.json {
                eprintln!("compare: round {round}/{}: {}", args.rounds, system.name());
            }
            let rec = one_run(
                round,
                system,
                args,
                coturn.as_deref(),
                &log_dir,
                &tag,
                &user_flags,
                &cpu_list,
                &gen_out,
                defs,
                settle,
            );
            if let Some(e) = &rec.error {
                eprintln!("compare: {} round {round} failed: {e}", system.name());
            }
            runs.push(rec);
            std::thread::sleep(settle);
        }
    }

    let summary = summarize(defs, &systems, &runs);
    let report_path = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "tuning/results/compare-{}.md",
            utc_stamp(started, false)
        ))
    });
    let md = markdown(
        args, &machine, &systems, &skipped, &runs, defs, &summary, &cpu_list, &log_dir,
    );
    if let Some(dir) = report_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&report_path, md)
        .with_context(|| format!("writing {}", report_path.display()))?;

    if out.json {
        #[derive(Serialize)]
        struct Json<'a> {
            scenario: Scenario,
            machine: &'a Machine,
            rounds: usize,
            skipped: Vec<(System, &'a str)>,
            runs: &'a [RunRecord],
            summary: &'a BTreeMap<String, BTreeMap<String, Spread>>,
            ratios: BTreeMap<String, BTreeMap<String, f64>>,
            report: String,
        }
        let ratios = defs
            .iter()
            .map(|d| {
                let r = ratio_pairs(d.key, &summary)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                (d.key.to_string(), r)
            })
            .collect();
        out.print_json(&Json {
            scenario: args.scenario,
            machine: &machine,
            rounds: args.rounds,
            skipped: skipped.iter().map(|(s, w)| (*s, w.as_str())).collect(),
            runs: &runs,
            summary: &summary,
            ratios,
            report: report_path.display().to_string(),
        })?;
    } else {
        print!("{}", stdout_table(args, defs, &systems, &summary));
        for (s, why) in &skipped {
            println!("  {} skipped: {why}", s.name());
        }
        let failed = runs.iter().filter(|r| r.error.is_some()).count();
        if failed > 0 {
            println!("  {failed} run(s) failed; see the report");
        }
        println!("report: {}", report_path.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn one_run(
    round: usize,
    system: System,
    args: &CompareArgs,
    coturn: Option<&Path>,
    log_dir: &Path,
    tag: &str,
    user_flags: &[String],
    cpu_list: &str,
    gen_out: &Output,
    defs: &[MetricDef],
    settle: Duration,
) -> RunRecord {
    let mut rec = RunRecord {
        round,
        system,
        server_command: String::new(),
        generator_command: String::new(),
        metrics: defs.iter().map(|d| (d.key.to_string(), f64::NAN)).collect(),
        server_rss_bytes: None,
        error: None,
        report: Value::Null,
    };
    let mut server = match Server::start(system, args, coturn, log_dir, tag, args.relay.flows) {
        Ok(s) => s,
        Err(e) => {
            rec.error = Some(format!("{e:#}"));
            return rec;
        }
    };
    rec.server_command = server.command.clone();
    std::thread::sleep(settle);
    let mut argv: Vec<String> = vec![
        match args.scenario {
            Scenario::Relay => "relay".into(),
            Scenario::Allocate => "allocate".into(),
        },
        "--server".into(),
        server.addr.to_string(),
    ];
    match system {
        System::Floor => argv.push("--no-auth".into()),
        _ => argv.extend(["--user".into(), USER.into(), "--realm".into(), REALM.into()]),
    }
    argv.extend(["--server-pid".into(), server.pid.to_string()]);
    match args.scenario {
        Scenario::Relay => argv.extend(user_flags.iter().cloned()),
        Scenario::Allocate => {
            argv.extend(["--duration".into(), format!("{}", args.relay.duration)]);
            argv.extend(args.allocate_args.iter().cloned());
        }
    }
    rec.generator_command = format!(
        "uturn-loadgen --cpu {cpu_list} {}",
        command_line("", &argv).trim_start()
    );
    let result = (|| -> anyhow::Result<Value> {
        Ok(match parse_generator(&argv)? {
            GeneratorCommand::Relay(ra) => {
                serde_json::to_value(relay::run_relay(&ra, gen_out, true)?)?
            }
            GeneratorCommand::Allocate(aa) => {
                serde_json::to_value(allocate::run_allocate(&aa, gen_out, true)?)?
            }
        })
    })();
    rec.server_rss_bytes = crate::cpu::rss_bytes(server.pid);
    match result {
        Ok(report) => {
            rec.metrics = extract(defs, &report);
            rec.report = report;
        }
        Err(e) => rec.error = Some(format!("{e:#}")),
    }
    if let Ok(Some(status)) = server.child.try_wait() {
        let msg = format!(
            "{} exited during the run ({status}); log {}",
            system.name(),
            server.log.display()
        );
        rec.error = Some(match rec.error.take() {
            Some(e) => format!("{e}; {msg}"),
            None => msg,
        });
    }
    server.stop();
    rec
}

/// metric → system → spread.
fn summarize(
    defs: &[MetricDef],
    systems: &[System],
    runs: &[RunRecord],
) -> BTreeMap<String, BTreeMap<String, Spread>> {
    let mut s = BTreeMap::new();
    for d in defs {
        let mut per = BTreeMap::new();
        for &sys in systems {
            let vals: Vec<f64> = runs
                .iter()
                .filter(|r| r.system == sys && r.error.is_none())
                .filter_map(|r| r.metrics.get(d.key).copied())
                .collect();
            if let Some(sp) = spread(&vals) {
                per.insert(sys.name().to_string(), sp);
            }
        }
        s.insert(d.key.to_string(), per);
    }
    s
}

/// (label, uturn median / other median) for floor and coturn.
fn ratio_pairs(
    key: &str,
    summary: &BTreeMap<String, BTreeMap<String, Spread>>,
) -> Vec<(&'static str, f64)> {
    let Some(per) = summary.get(key) else {
        return Vec::new();
    };
    let Some(u) = per.get("uturn") else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for (other, label) in [("floor", "uturn/floor"), ("coturn", "uturn/coturn")] {
        if let Some(o) = per.get(other) {
            if o.median != 0.0 {
                v.push((label, u.median / o.median));
            }
        }
    }
    v
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "-".into()
    }
}

fn stdout_table(
    args: &CompareArgs,
    defs: &[MetricDef],
    systems: &[System],
    summary: &BTreeMap<String, BTreeMap<String, Spread>>,
) -> String {
    let mut header: Vec<&str> = vec!["metric"];
    header.extend(systems.iter().map(|s| s.name()));
    let has_uturn = systems.contains(&System::Uturn);
    if has_uturn && systems.contains(&System::Floor) {
        header.push("uturn/floor");
    }
    if has_uturn && systems.contains(&System::Coturn) {
        header.push("uturn/coturn");
    }
    let mut rows = Vec::new();
    for d in defs {
        let per = summary.get(d.key);
        let mut row = vec![d.key.to_string()];
        for s in systems {
            row.push(match per.and_then(|p| p.get(s.name())) {
                Some(sp) => format!(
                    "{} ({}–{})",
                    (d.fmt)(sp.median),
                    (d.fmt)(sp.min),
                    (d.fmt)(sp.max)
                ),
                None => "-".into(),
            });
        }
        let ratios = ratio_pairs(d.key, summary);
        for label in ["uturn/floor", "uturn/coturn"] {
            if header.contains(&label) {
                row.push(
                    ratios
                        .iter()
                        .find(|(l, _)| *l == label)
                        .map_or("-".into(), |(_, r)| fmt_ratio(*r)),
                );
            }
        }
        rows.push(row);
    }
    output::render_grid(
        &format!(
            "compare: {:?} scenario, {} round(s), median (min–max)",
            args.scenario, args.rounds
        )
        .to_lowercase(),
        &header,
        &rows,
    )
}

/// Remarks on one run's report: "errors 486×3 508×1, 2 timeouts" for
/// allocate; "generator-limited", drops at the generator's own sockets and
/// refused sends for relay ("" when there is nothing to say).
fn failure_summary(report: &Value) -> String {
    let mut parts = Vec::new();
    if report.get("generator_limited").and_then(Value::as_bool) == Some(true) {
        parts.push("generator-limited".to_string());
    }
    for (key, what) in [
        ("generator_rx_drops", "dropped at the generator's sockets"),
        ("send_failures", "sends refused at the generator"),
    ] {
        if let Some(n) = report.get(key).and_then(Value::as_u64).filter(|n| *n > 0) {
            parts.push(format!("{n} {what}"));
        }
    }
    if let Some(Value::Object(codes)) = report.get("errors_by_code") {
        let list: Vec<String> = codes
            .iter()
            .filter_map(|(code, n)| n.as_u64().map(|n| format!("{code}×{n}")))
            .collect();
        if !list.is_empty() {
            parts.push(format!("errors {}", list.join(" ")));
        }
    }
    for (key, what) in [
        ("timeouts", "timeouts"),
        ("other_errors", "other errors"),
        ("abandoned", "abandoned"),
    ] {
        if let Some(n) = report.get(key).and_then(Value::as_u64).filter(|n| *n > 0) {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

#[allow(clippy::too_many_arguments)]
fn markdown(
    args: &CompareArgs,
    m: &Machine,
    systems: &[System],
    skipped: &[(System, String)],
    runs: &[RunRecord],
    defs: &[MetricDef],
    summary: &BTreeMap<String, BTreeMap<String, Spread>>,
    cpu_list: &str,
    log_dir: &Path,
) -> String {
    let mut s = String::new();
    let scen = format!("{:?}", args.scenario).to_lowercase();
    let _ = writeln!(s, "# uturn-loadgen compare: {scen} scenario\n");
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    for (k, v) in [
        ("Date", m.date_utc.as_str()),
        ("Kernel", m.kernel.as_str()),
        ("CPU", m.cpu_model.as_str()),
        ("Cores", &m.cores.to_string()),
        ("Commit", m.commit.as_str()),
        ("Tuning profile", m.tuning.as_str()),
        ("uturn", m.uturn_version.as_str()),
        ("coturn", m.coturn_version.as_str()),
        ("uturn-loadgen", m.loadgen_version.as_str()),
    ] {
        let _ = writeln!(s, "| {k} | {} |", v.replace('|', "\\|"));
    }
    let _ = writeln!(s, "\n## Method\n");
    let order: Vec<&str> = systems.iter().map(|s| s.name()).collect();
    let _ = writeln!(
        s,
        "* {} round(s), order within each round: {} (alternated, so drift hits every system alike).",
        args.rounds,
        order.join(" → ")
    );
    let _ = writeln!(
        s,
        "* Every run starts its system fresh on a new free loopback port, waits for it to be ready \
         (`uturn: ready` / `floor: ready` on stdout; coturn: a STUN Binding answered; at most {} s), \
         waits {} s, measures, and stops it by PID (SIGTERM, SIGKILL after {} s).",
        args.ready_timeout,
        args.settle,
        STOP_GRACE.as_secs()
    );
    let _ = writeln!(
        s,
        "* System under test pinned to CPU {} (all threads, set before exec; shown as `taskset` below); \
         generator threads pinned to CPU(s) {cpu_list}.",
        args.sut_cpu
    );
    let _ = writeln!(
        s,
        "* The generator is told the server's PID, so its CPU time (from /proc) gives packets per \
         server CPU-second. Delivered packets are counted at the generator's sink."
    );
    let _ = writeln!(
        s,
        "* uturn and coturn authenticate with the long-term user `{USER}` (realm `{REALM}`); the floor \
         has no authentication (`--no-auth`). None of the servers enables UDP_GRO (uturn's portable \
         backend, the floor and coturn read datagram by datagram), so a GSO run offers super-packets \
         that each server still receives as single datagrams."
    );
    if systems.contains(&System::Uturn) {
        let _ = writeln!(
            s,
            "* uturn runs with its defaults plus this `--config` file: the default quotas (10 \
             allocations per user, 10 000 in total) would refuse a many-flow run under one user, and \
             the default limit on unauthenticated replies (20/s, burst 40, per source IP) would \
             refuse the 401 round to most of the generator's clients, which all share 127.0.0.1; \
             coturn has neither limit by default:\n\n  ```toml\n{}  ```",
            UTURN_CONFIG
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
    }
    let _ = writeln!(s, "* Server logs: `{}`.", log_dir.display());
    for (sys, why) in skipped {
        let _ = writeln!(s, "* **{} skipped**: {why}.", sys.name());
    }
    let _ = writeln!(s, "\n## Commands\n");
    let _ = writeln!(
        s,
        "Ports differ per run (each run gets a free one); the first run of each system:\n"
    );
    let _ = writeln!(s, "```sh");
    for &sys in systems {
        if let Some(r) = runs
            .iter()
            .find(|r| r.system == sys && !r.server_command.is_empty())
        {
            let _ = writeln!(s, "# {}", sys.name());
            let _ = writeln!(s, "{}", r.server_command);
            let _ = writeln!(s, "{}", r.generator_command);
        }
    }
    let _ = writeln!(s, "```\n");
    let _ = writeln!(s, "Whole comparison:\n\n```sh");
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(s, "{}", command_line("uturn-loadgen", &argv));
    let _ = writeln!(s, "```\n");

    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(
        s,
        "Median over the runs that succeeded, spread as min–max. Ratios are uturn's median over the \
         other system's; for metrics where lower is better (loss, latency, CPU use) a ratio below 1 \
         favours uturn.\n"
    );
    for d in defs {
        let _ = writeln!(
            s,
            "### {} {}\n",
            d.title,
            if d.higher_is_better {
                "(higher is better)"
            } else {
                "(lower is better)"
            }
        );
        let _ = writeln!(
            s,
            "| system | median | min–max | runs |\n|---|---:|---:|---:|"
        );
        let per = summary.get(d.key);
        for sys in systems {
            match per.and_then(|p| p.get(sys.name())) {
                Some(sp) => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} – {} | {} |",
                        sys.name(),
                        (d.fmt)(sp.median),
                        (d.fmt)(sp.min),
                        (d.fmt)(sp.max),
                        sp.runs
                    );
                }
                None => {
                    let _ = writeln!(s, "| {} | - | - | 0 |", sys.name());
                }
            }
        }
        let ratios = ratio_pairs(d.key, summary);
        if !ratios.is_empty() {
            let text: Vec<String> = ratios
                .iter()
                .map(|(l, r)| format!("{l} = **{}**", fmt_ratio(*r)))
                .collect();
            let _ = writeln!(s, "\n{}", text.join(", "));
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "## Every run\n");
    let mut header = String::from("| round | system |");
    let mut sep = String::from("|---:|---|");
    for d in defs {
        let _ = write!(header, " {} |", d.key);
        sep.push_str("---:|");
    }
    header.push_str(" server RSS | note |");
    sep.push_str("---:|---|");
    let _ = writeln!(s, "{header}\n{sep}");
    for r in runs {
        let mut line = format!("| {} | {} |", r.round, r.system.name());
        for d in defs {
            let v = r.metrics.get(d.key).copied().unwrap_or(f64::NAN);
            let _ = write!(line, " {} |", (d.fmt)(v));
        }
        let rss = r.server_rss_bytes.map_or("-".into(), output::fmt_bytes);
        let note = match &r.error {
            Some(e) => e.clone(),
            None => failure_summary(&r.report),
        }
        .replace('|', "\\|")
        .replace('\n', " ");
        let _ = write!(line, " {rss} | {note} |");
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "### Exact command lines of every run\n\n```sh");
    for r in runs {
        let _ = writeln!(s, "# round {} {}", r.round, r.system.name());
        if !r.server_command.is_empty() {
            let _ = writeln!(s, "{}", r.server_command);
        }
        if !r.generator_command.is_empty() {
            let _ = writeln!(s, "{}", r.generator_command);
        }
    }
    let _ = writeln!(s, "```");
    let gen_hot = runs.iter().any(|r| {
        r.metrics
            .get("generator_cpu_util")
            .is_some_and(|u| *u >= 0.9)
    });
    if gen_hot {
        let _ = writeln!(
            s,
            "\n**Note:** the generator used ≥ 90 % of its CPU in at least one run: there it may have \
             been the bottleneck (offer less, add generator cores, or use --gso)."
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        let s = spread(&[4.0, 1.0, f64::NAN, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.runs), (2.5, 4));
        assert!(spread(&[f64::NAN]).is_none());
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(utc_stamp(t, true), "2000-02-29 01:02:03 UTC");
        assert_eq!(utc_stamp(t, false), "2000-02-29T010203Z");
        assert_eq!(utc_stamp(UNIX_EPOCH, true), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--flows"), "--flows");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn relay_flags_are_recovered() {
        let argv: Vec<String> = [
            "uturn-loadgen",
            "--cpu",
            "1",
            "compare",
            "--rounds",
            "3",
            "--flows",
            "100",
            "--server=127.0.0.1:9",
            "--payload=120",
            "--json",
            "--user",
            "a:b",
            "--scenario",
            "relay",
            "--rate",
            "max",
            "--gso",
            "--uturn-arg=--log-level=warn",
            "--out",
            "x.md",
            "--duration",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            relay_flags_in(&argv),
            [
                "--flows",
                "100",
                "--payload=120",
                "--rate",
                "max",
                "--gso",
                "--duration",
                "2"
            ]
        );
        // And they parse as a relay command line.
        let mut gen = vec!["relay".to_string()];
        gen.extend(relay_flags_in(&argv));
        assert!(matches!(
            parse_generator(&gen).unwrap(),
            GeneratorCommand::Relay(r) if r.flows == 100 && r.gso
        ));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(relay_port_range(Scenario::Relay, 100), (61_536, 65_535));
        assert_eq!(relay_port_range(Scenario::Allocate, 1), (20_000, 65_535));
        let (lo, hi) = relay_port_range(Scenario::Relay, 10_000);
        assert_eq!(hi, 65_535);
        assert!(usize::from(hi - lo) >= 20_000);
    }
}
