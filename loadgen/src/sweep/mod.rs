//! `sweep`: the relay scenario at a list of open-loop rates.
//!
//! Each rate is one complete relay run (fresh flows, the same flags, only
//! `--rate` replaced), with a pause in between so that the server's queues
//! drain. The answer is the highest rate whose loss stays within
//! `--max-loss` (0.1 % by default, BENCHMARKING.md's criterion).
//!
//! This file holds the flags and the search over rates; the results are
//! written elsewhere:
//!
//! * [`report`]: the points and the summary, as a table or as JSON;
//! * [`chart`]: with `--svg`, one SVG with two panels: offered vs delivered
//!   rate (with the ideal delivered = offered line), and the latency
//!   percentiles p50/p90/p99/p99.9 vs offered rate on a logarithmic axis.

mod chart;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::output::{fmt_count, fmt_pct, Output};
use crate::relay::{self, Rate, RelayArgs};

use report::{SweepPoint, SweepReport};

/// Shown after the flags in `sweep --help`.
const SWEEP_HELP: &str = "\
Each rate of --rates is one complete relay run with the same flags (only \
--rate is replaced), --pause seconds apart. The result is the highest rate \
whose loss is at most --max-loss, printed with a table of every rate \
(offered, delivered, loss, reordering, latency p50/p90/p99/p99.9, generator \
and server CPU), or one JSON object with --json. With --svg FILE, one SVG with \
two panels: offered vs delivered rate, and the latency percentiles vs offered \
rate (log scale).

Example:
  uturn-loadgen --cpu 1 sweep --server 127.0.0.1:3478 --user lg:lgpw \\
      --server-pid $(pidof uturn) --flows 100 --payload 120 --duration 5 \\
      --rates 20k,50k,100k,150k,200k --svg sweep.svg";

/// Arguments of `sweep`: the relay flags plus the list of rates.
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = SWEEP_HELP)]
pub struct SweepArgs {
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Offered rates to run, in packets per second (all flows and
    /// directions), comma-separated; `20k` and `1.5M` are accepted. Run in
    /// the order given. Overrides --rate.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "PPS,PPS,..."
    )]
    pub rates: Vec<Rate>,
    /// Largest loss ratio that still counts as "no loss" (0.001 = 0.1 %).
    #[arg(long, default_value_t = 0.001, value_name = "RATIO")]
    pub max_loss: f64,
    /// Seconds to pause between two rates (lets the server drain).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub pause: f64,
    /// Stop after this many consecutive rates over --max-loss (0: run every rate).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stop_after: usize,
    /// Write the chart here (SVG: offered vs delivered, latency percentiles vs offered).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

pub fn run(args: &SweepArgs, out: &Output) -> anyhow::Result<()> {
    let mut rates = Vec::with_capacity(args.rates.len());
    for r in &args.rates {
        match r {
            Rate::Pps(p) => rates.push(*p),
            Rate::Max => bail!("--rates takes packets per second; `max` is not a sweep point"),
        }
    }
    if rates.is_empty() {
        bail!("--rates is empty");
    }
    if !(args.max_loss.is_finite() && (0.0..1.0).contains(&args.max_loss)) {
        bail!("--max-loss must be a ratio in [0, 1)");
    }
    let pause = Duration::from_secs_f64(args.pause.clamp(0.0, 600.0));
    let mut points = Vec::with_capacity(rates.len());
    let mut failing_in_a_row = 0;
    let mut notes = Vec::new();
    for (i, &rate) in rates.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        let mut step = args.relay.clone();
        step.rate = Rate::Pps(rate);
        if !out.json {
            eprintln!(
                "sweep: {}/{}: {} packets/s for {} s",
                i + 1,
                rates.len(),
                fmt_count(rate),
                step.duration
            );
        }
        let report = relay::run_relay(&step, out, true)
            .with_context(|| format!("relay run at {} packets/s", fmt_count(rate)))?;
        let p = SweepPoint::from_report(rate, &report, args.max_loss);
        if !out.json {
            eprintln!(
                "sweep:   delivered {} packets/s, loss {}, p99 {:.0} µs{}",
                fmt_count(p.delivered_pps),
                fmt_pct(p.loss_ratio),
                p.latency_p99_us,
                if p.generator_limited {
                    " (generator-limited)"
                } else {
                    ""
                }
            );
        }
        failing_in_a_row = if p.ok { 0 } else { failing_in_a_row + 1 };
        points.push(p);
        if args.stop_after > 0 && failing_in_a_row >= args.stop_after {
            if i + 1 < rates.len() {
                notes.push(format!(
                    "stopped after {failing_in_a_row} consecutive rates over the loss limit; {} rate(s) not run",
                    rates.len() - i - 1
                ));
            }
            break;
        }
    }

    let best = points
        .iter()
        .filter(|p| p.ok)
        .max_by(|a, b| a.target_pps.total_cmp(&b.target_pps));
    let first_fail = points
        .iter()
        .filter(|p| !p.ok)
        .map(|p| p.target_pps)
        .min_by(f64::total_cmp);
    let non_monotonic = matches!((best, first_fail), (Some(b), Some(f)) if b.target_pps > f);
    if non_monotonic {
        notes.push(
            "a rate passed above a rate that failed: the result is noisy; rerun or use longer runs"
                .into(),
        );
    }
    if let Some(b) = best {
        if b.generator_limited {
            notes.push(format!(
                "at {} packets/s the generator did not reach its target: the server was not the limit there",
                fmt_count(b.target_pps)
            ));
        }
    }
    if points
        .iter()
        .any(|p| p.generator_cpu_util >= 0.9 * args.relay.threads as f64)
    {
        notes.push(
            "the generator used ≥ 90 % of its CPU at some rate: add --threads/--cpu cores or --gso"
                .into(),
        );
    }
    let svg = match &args.svg {
        Some(path) => {
            chart::draw_svg(path, &points, args, best.map(|b| b.target_pps))
                .with_context(|| format!("drawing {}", path.display()))?;
            Some(path.display().to_string())
        }
        None => None,
    };
    let report = SweepReport {
        scenario: "sweep",
        args: args.relay.clone(),
        max_loss: args.max_loss,
        highest_ok_pps: best.map(|b| b.target_pps),
        highest_ok_delivered_pps: best.map(|b| b.delivered_pps),
        first_failing_pps: first_fail,
        non_monotonic,
        points,
        svg,
        notes,
    };
    if out.json {
        out.print_json(&report)
    } else {
        report::print_table(&report);
        Ok(())
    }
}
