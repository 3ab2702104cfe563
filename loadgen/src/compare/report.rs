//! What a comparison reports: the machine it ran on, the summary table
//! printed on stdout, the JSON object of `--json` and the markdown report
//! with the method, every command line and every run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::command::command_line;
use super::metrics::{fmt_ratio, ratio_pairs, MetricDef, Summary, RATIOS};
use super::systems::{STOP_GRACE, UTURN_CONFIG};
use super::{CompareArgs, RunRecord, Scenario, System, REALM, USER};
use crate::flags::Transport;
use crate::output::{self, Output};

/// Everything the report is written from.
pub(super) struct Comparison<'a> {
    pub args: &'a CompareArgs,
    pub machine: Machine,
    /// The systems run, in their order within a round.
    pub systems: Vec<System>,
    /// The systems left out, and why.
    pub skipped: Vec<(System, String)>,
    pub runs: Vec<RunRecord>,
    pub defs: &'static [MetricDef],
    pub summary: Summary,
    /// The generator's CPUs, as given to --cpu.
    pub cpu_list: String,
    /// Where the servers' logs are.
    pub log_dir: PathBuf,
}

/// Machine description for the report.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Machine {
    date_utc: String,
    kernel: String,
    cpu_model: String,
    cores: usize,
    commit: String,
    tuning: String,
    uturn_version: String,
    /// The `uturn-baseline` binary and its version, when one is given.
    baseline: String,
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

pub(super) fn machine(args: &CompareArgs, coturn: Option<&Path>) -> Machine {
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
    let baseline = match &args.baseline_bin {
        Some(b) => format!(
            "{} ({})",
            b.display(),
            command_output(Command::new(b).arg("--version")).unwrap_or_else(|| "unknown".into())
        ),
        None => "none".into(),
    };
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
        baseline,
        coturn_version,
        loadgen_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` (or `YYYY-MM-DDTHHMMSSZ` for file names).
pub(super) fn utc_stamp(t: SystemTime, readable: bool) -> String {
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

impl Comparison<'_> {
    /// The summary on stdout: the table, the systems skipped, the runs that
    /// failed and where the report is.
    pub(super) fn print_summary(&self, report_path: &Path) {
        print!("{}", self.stdout_table());
        for (s, why) in &self.skipped {
            println!("  {} skipped: {why}", s.name());
        }
        let failed = self.runs.iter().filter(|r| r.error.is_some()).count();
        if failed > 0 {
            println!("  {failed} run(s) failed; see the report");
        }
        println!("report: {}", report_path.display());
    }

    /// Everything as one JSON object (with `--json`).
    pub(super) fn print_json(&self, out: &Output, report_path: &Path) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct Json<'a> {
            scenario: Scenario,
            machine: &'a Machine,
            rounds: usize,
            skipped: Vec<(System, &'a str)>,
            runs: &'a [RunRecord],
            summary: &'a Summary,
            ratios: BTreeMap<String, BTreeMap<String, f64>>,
            report: String,
        }
        let ratios = self
            .defs
            .iter()
            .map(|d| {
                let r = ratio_pairs(d.key, &self.summary)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                (d.key.to_string(), r)
            })
            .collect();
        out.print_json(&Json {
            scenario: self.args.scenario,
            machine: &self.machine,
            rounds: self.args.rounds,
            skipped: self.skipped.iter().map(|(s, w)| (*s, w.as_str())).collect(),
            runs: &self.runs,
            summary: &self.summary,
            ratios,
            report: report_path.display().to_string(),
        })
    }

    /// The summary table: every metric's median (min–max) per system, and
    /// uturn's ratios.
    fn stdout_table(&self) -> String {
        let (args, defs, systems, summary) =
            (self.args, self.defs, &self.systems[..], &self.summary);
        let mut header: Vec<&str> = vec!["metric"];
        header.extend(systems.iter().map(|s| s.name()));
        let has_uturn = systems.contains(&System::Uturn);
        for (other, label) in RATIOS {
            if has_uturn && systems.iter().any(|s| s.name() == other) {
                header.push(label);
            }
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
            for (_, label) in RATIOS {
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
                "compare: {:?} scenario over {}, {} round(s), median (min–max)",
                args.scenario,
                args.relay.target.transport.name(),
                args.rounds
            )
            .to_lowercase(),
            &header,
            &rows,
        )
    }
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

impl Comparison<'_> {
    /// The markdown report: machine, method, commands, a table per metric
    /// and every run.
    pub(super) fn markdown(&self) -> String {
        let (args, m, systems, skipped, runs) = (
            self.args,
            &self.machine,
            &self.systems[..],
            &self.skipped[..],
            &self.runs[..],
        );
        let (defs, summary, cpu_list, log_dir) = (
            self.defs,
            &self.summary,
            self.cpu_list.as_str(),
            self.log_dir.as_path(),
        );
        let mut s = String::new();
        let scen = format!("{:?}", args.scenario).to_lowercase();
        let _ = writeln!(
            s,
            "# uturn-loadgen compare: {scen} scenario over {}\n",
            args.relay.target.transport.name()
        );
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
            ("uturn-baseline", m.baseline.as_str()),
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
        match args.relay.target.transport {
            Transport::Udp => {}
            Transport::Tcp => {
                let _ = writeln!(
                    s,
                    "* Transport **tcp**: every client is a TCP connection to the server (uturn \
                     `--listen-tcp`, coturn's TCP listener on its listening port), RFC 8489 §6.2.2 \
                     framing, ChannelData padded to 4 bytes; the relay leg to the peers is UDP."
                );
            }
            Transport::Tls => {
                let _ = writeln!(
                    s,
                    "* Transport **tls**: every client is a TLS connection (TLS 1.2 or 1.3 as the \
                     server chooses, ALPN `stun.turn`, no session resumption: a full handshake per \
                     connection) to uturn's `--listen-tls` / coturn's `--tls-listening-port`, both \
                     with the self-signed P-256 certificate in the log directory, which the \
                     generator does not verify; the relay leg to the peers is UDP.{}",
                    if args.scenario == Scenario::Allocate {
                        " Each allocation flow opens its own connection, so its figure includes the \
                         handshake."
                    } else {
                        ""
                    }
                );
            }
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(utc_stamp(t, true), "2000-02-29 01:02:03 UTC");
        assert_eq!(utc_stamp(t, false), "2000-02-29T010203Z");
        assert_eq!(utc_stamp(UNIX_EPOCH, true), "1970-01-01 00:00:00 UTC");
    }
}
