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
//!   says so.
//! * `--transport tcp|tls` gives uturn `--listen-tcp` / `--listen-tls` (with
//!   a self-signed certificate made for the comparison) and coturn its TCP
//!   listener / `--tls-listening-port`, and the generator talks to that
//!   listener; the floor serves UDP only and is skipped. The floor has no authentication, so it is driven with
//!   `--no-auth` (in the `allocate` scenario its figure is therefore the
//!   cost of the bare set-up exchange, without the 401 round); it forwards
//!   ChannelData only, so it is skipped for the Send/Data-indication mode.
//!
//! The report (markdown) holds the machine (kernel, CPU model, cores,
//! commit, tuning profile), the method, every exact command line (servers
//! and generator), a table per metric and every single run; the summary
//! table is also printed on stdout (or everything as JSON with `--json`).

mod command;
mod metrics;
mod report;
mod systems;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::allocate;
use crate::flags::Transport;
use crate::output::Output;
use crate::relay::{self, RelayArgs};
use command::{command_line, parse_generator, user_relay_flags, GeneratorCommand};
use metrics::{extract, summarize, MetricDef, ALLOCATE_METRICS, RELAY_METRICS};
use report::{machine, utc_stamp, Comparison};
use systems::{locate, Server};

/// The static user every authenticated server is given.
const USER: &str = "lg:lgpw";
const REALM: &str = "uturn.test";

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
    /// uturn on its portable recvmmsg/sendmmsg backend (`--io-backend syscall`),
    /// to compare the two io backends in one run.
    #[value(name = "uturn-syscall")]
    #[serde(rename = "uturn-syscall")]
    UturnSyscall,
    /// A second uturn binary (`--baseline-bin`), with the same flags and
    /// configuration as `uturn`: before and after a change, in one run.
    #[value(name = "uturn-baseline")]
    #[serde(rename = "uturn-baseline")]
    UturnBaseline,
    Floor,
    Coturn,
}

impl System {
    pub(super) fn name(self) -> &'static str {
        match self {
            System::Uturn => "uturn",
            System::UturnSyscall => "uturn-syscall",
            System::UturnBaseline => "uturn-baseline",
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
uturn/floor and uturn/coturn of the medians. The summary is also printed. \
`--systems uturn,uturn-baseline --baseline-bin PATH` compares two builds of \
uturn (after/before a change) in the same alternating run.

Every relay flag (--flows, --payload, --rate, --duration, --direction, \
--mode, --gso, --batch, --threads, --transport, ...) is passed to each run \
unchanged; --server, --user, --realm, --rest-secret, --no-auth, --server-pid, \
--tls-ca and --tls-sni are set per system and ignored here. The allocate \
scenario uses --duration, --transport and any --allocate-arg.

With --transport tcp or tls the generator's clients reach each server over \
that transport (the relay leg stays UDP): uturn is started with --listen-tcp, \
or --listen-tls with --tls-cert/--tls-key, coturn with its TCP listener or \
--tls-listening-port/--cert/--pkey; the TLS certificate is a self-signed \
P-256 one made for the comparison, and the generator does not verify it. The \
floor serves UDP only and is skipped.

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
    /// The binary of the `uturn-baseline` system: another build of uturn
    /// (say, before a change), run with the same flags and configuration.
    /// Its ratio is reported as uturn/uturn-baseline.
    #[arg(long, value_name = "PATH")]
    pub baseline_bin: Option<PathBuf>,
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

/// What every run of a comparison shares.
struct Plan<'a> {
    args: &'a CompareArgs,
    coturn: Option<&'a Path>,
    log_dir: &'a Path,
    /// The relay flags given to every relay run.
    user_flags: &'a [String],
    /// The generator's CPUs, as given to --cpu.
    cpu_list: &'a str,
    /// The generator's output settings (its CPUs; never JSON).
    gen_out: &'a Output,
    defs: &'static [MetricDef],
    settle: Duration,
}

/// Why `system` cannot run the scenario with these relay flags, if it cannot.
fn unsupported(system: System, args: &CompareArgs) -> Option<&'static str> {
    if system == System::Floor && args.relay.target.transport.is_stream() {
        return Some("the floor serves UDP only (no TCP or TLS listener)");
    }
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
    if args.relay.client_netns.is_some() || args.relay.peer_netns.is_some() {
        bail!(
            "compare starts its servers on loopback: --client-netns and --peer-netns are for \
             relay and sweep (tuning/xdp/bench.sh compares across namespaces)"
        );
    }
    let coturn = locate(&args.coturn_bin);
    if args
        .systems
        .iter()
        .any(|s| matches!(s, System::Uturn | System::UturnSyscall))
        && locate(&args.uturn_bin).is_none()
    {
        bail!(
            "uturn binary {} not found (build it with `cargo build --release --bin uturn` or pass --uturn-bin)",
            args.uturn_bin.display()
        );
    }
    if args.systems.contains(&System::UturnBaseline) {
        match &args.baseline_bin {
            None => bail!("--systems names uturn-baseline: give its binary with --baseline-bin"),
            Some(b) if locate(b).is_none() => {
                bail!("baseline binary {} not found", b.display())
            }
            Some(_) => {}
        }
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
    if args.relay.target.transport == Transport::Tls {
        systems::write_certificate(&log_dir)?;
    }
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
    let plan = Plan {
        args,
        coturn: coturn.as_deref(),
        log_dir: &log_dir,
        user_flags: &user_flags,
        cpu_list: &cpu_list,
        gen_out: &gen_out,
        defs,
        settle: Duration::from_secs_f64(args.settle.max(0.0)),
    };
    for round in 1..=args.rounds {
        for &system in &systems {
            if !out.json {
                eprintln!("compare: round {round}/{}: {}", args.rounds, system.name());
            }
            let rec = one_run(&plan, round, system);
            if let Some(e) = &rec.error {
                eprintln!("compare: {} round {round} failed: {e}", system.name());
            }
            runs.push(rec);
            std::thread::sleep(plan.settle);
        }
    }

    let summary = summarize(defs, &systems, &runs);
    let report_path = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "tuning/results/compare-{}.md",
            utc_stamp(started, false)
        ))
    });
    let comparison = Comparison {
        args,
        machine,
        systems,
        skipped,
        runs,
        defs,
        summary,
        cpu_list,
        log_dir,
    };
    let md = comparison.markdown();
    if let Some(dir) = report_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&report_path, md)
        .with_context(|| format!("writing {}", report_path.display()))?;
    if out.json {
        comparison.print_json(out, &report_path)
    } else {
        comparison.print_summary(&report_path);
        Ok(())
    }
}

/// Round `round` of `system`: the system started, the generator run
/// against it, the system stopped.
fn one_run(plan: &Plan<'_>, round: usize, system: System) -> RunRecord {
    let Plan {
        args,
        coturn,
        log_dir,
        user_flags,
        cpu_list,
        gen_out,
        defs,
        settle,
    } = *plan;
    let tag = format!("r{round}");
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
    let mut server = match Server::start(system, args, coturn, log_dir, &tag, args.relay.flows) {
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
            let transport = args.relay.target.transport;
            if transport != Transport::Udp {
                argv.extend(["--transport".into(), transport.name().into()]);
            }
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
