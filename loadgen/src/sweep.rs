//! `sweep`: the relay scenario at a list of open-loop rates.
//!
//! Each rate is one complete relay run (fresh flows, the same flags, only
//! `--rate` replaced), with a pause in between so that the server's queues
//! drain. The answer is the highest rate whose loss stays within
//! `--max-loss` (0.1 % by default, BENCHMARKING.md's criterion). The points
//! are printed as a table (or JSON with `--json`) and, with `--svg`, drawn as
//! one SVG with two panels: offered vs delivered rate (with the ideal
//! delivered = offered line), and the latency percentiles p50/p90/p99/p99.9
//! vs offered rate on a logarithmic axis.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use serde::Serialize;

use crate::output::{self, fmt_count, fmt_pct, Output};
use crate::relay::{self, Rate, RelayArgs, RelayReport};

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

/// One rate of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    pub target_pps: f64,
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub loss_ratio: f64,
    pub reordered: u64,
    pub latency_p50_us: f64,
    pub latency_p90_us: f64,
    pub latency_p99_us: f64,
    pub latency_p999_us: f64,
    pub generator_cpu_util: f64,
    pub generator_limited: bool,
    pub server_cpu_util: Option<f64>,
    pub delivered_per_server_cpu_sec: Option<f64>,
    /// Loss within --max-loss.
    pub ok: bool,
}

impl SweepPoint {
    fn from_report(target: f64, r: &RelayReport, max_loss: f64) -> SweepPoint {
        SweepPoint {
            target_pps: target,
            offered_pps: r.offered_pps,
            delivered_pps: r.delivered_pps,
            loss_ratio: r.loss_ratio,
            reordered: r.reordered,
            latency_p50_us: r.latency_us.p50,
            latency_p90_us: r.latency_us.p90,
            latency_p99_us: r.latency_us.p99,
            latency_p999_us: r.latency_us.p999,
            generator_cpu_util: r.generator_cpu_util,
            generator_limited: r.generator_limited,
            server_cpu_util: r.server_cpu_util,
            delivered_per_server_cpu_sec: r.delivered_per_server_cpu_sec,
            ok: r.loss_ratio <= max_loss,
        }
    }
}

/// The whole sweep, as printed with --json.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub scenario: &'static str,
    pub args: RelayArgs,
    pub max_loss: f64,
    pub points: Vec<SweepPoint>,
    /// Highest target rate with loss ≤ max_loss (None: none passed).
    pub highest_ok_pps: Option<f64>,
    /// What was delivered at that rate.
    pub highest_ok_delivered_pps: Option<f64>,
    /// Lowest target rate over max_loss, if any.
    pub first_failing_pps: Option<f64>,
    /// A rate passed above one that failed: the curve is not monotonic
    /// (noise, or a limit that comes and goes); rerun before trusting it.
    pub non_monotonic: bool,
    pub svg: Option<String>,
    pub notes: Vec<String>,
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
            draw_svg(path, &points, args, best.map(|b| b.target_pps))
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
        print_table(&report);
        Ok(())
    }
}

/// "100 flows × 120 B · both · channel[ · GSO]" with `sep` between the parts.
fn shape(a: &RelayArgs, sep: &str) -> String {
    let mut parts = vec![
        format!("{} flows × {} B", a.flows, a.payload),
        format!("{:?}", a.direction).to_lowercase(),
        format!("{:?}", a.mode).to_lowercase(),
    ];
    if a.gso {
        parts.push("GSO".into());
    }
    parts.join(sep)
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |u| format!("{:.0} %", u * 100.0))
}

fn print_table(r: &SweepReport) {
    let a = &r.args;
    let title = format!(
        "sweep · {} · {} · {} s per rate",
        a.server,
        shape(a, " · "),
        a.duration
    );
    let header = [
        "target/s",
        "offered/s",
        "delivered/s",
        "loss",
        "reord",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "gen CPU",
        "srv CPU",
        "ok",
    ];
    let rows: Vec<Vec<String>> = r
        .points
        .iter()
        .map(|p| {
            vec![
                fmt_count(p.target_pps),
                fmt_count(p.offered_pps),
                fmt_count(p.delivered_pps),
                fmt_pct(p.loss_ratio),
                p.reordered.to_string(),
                format!("{:.0}", p.latency_p50_us),
                format!("{:.0}", p.latency_p90_us),
                format!("{:.0}", p.latency_p99_us),
                format!("{:.0}", p.latency_p999_us),
                format!("{:.0} %", p.generator_cpu_util * 100.0),
                opt_pct(p.server_cpu_util),
                match (p.ok, p.generator_limited) {
                    (true, false) => "yes".into(),
                    (true, true) => "yes (gen-limited)".into(),
                    (false, _) => "NO".into(),
                },
            ]
        })
        .collect();
    output::print_grid(&title, &header, &rows);
    match (r.highest_ok_pps, r.highest_ok_delivered_pps) {
        (Some(t), Some(d)) => println!(
            "highest rate with loss ≤ {}: {} packets/s (delivered {} packets/s)",
            fmt_pct(r.max_loss),
            fmt_count(t),
            fmt_count(d)
        ),
        _ => println!(
            "no rate had loss ≤ {} (lower the rates)",
            fmt_pct(r.max_loss)
        ),
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if let Some(s) = &r.svg {
        println!("chart: {s}");
    }
}

/// A latency curve: its name, colour and value.
type LatencySeries = (&'static str, RGBColor, fn(&SweepPoint) -> f64);

/// Rounds `v` up to a "nice" axis limit (1, 2 or 5 × 10^k).
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A panel of the chart: its caption, margins and label areas.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(45)
        .y_label_area_size(80);
    builder
}

/// The legend of a panel, in its upper left corner.
fn draw_legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Two panels, one above the other, in one SVG file.
fn draw_svg(
    path: &Path,
    points: &[SweepPoint],
    args: &SweepArgs,
    best: Option<f64>,
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let root = SVGBackend::new(path, (960, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let a = &args.relay;
    let caption = format!("{}, {} s per rate", shape(a, ", "), a.duration);
    let (top, bottom) = root.split_vertically(550);
    let x_max = nice_ceiling(
        points
            .iter()
            .map(|p| p.target_pps.max(p.offered_pps))
            .fold(0.0, f64::max)
            * 1.05,
    );
    let y_max = nice_ceiling(
        points
            .iter()
            .map(|p| p.delivered_pps.max(p.target_pps))
            .fold(0.0, f64::max)
            * 1.05,
    );

    // Panel 1: offered vs delivered.
    {
        let mut chart = panel(&top, &format!("Offered vs delivered rate ({caption})"))
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("offered (packets/s)")
            .y_desc("delivered (packets/s)")
            .x_label_formatter(&|v| fmt_count(*v))
            .y_label_formatter(&|v| fmt_count(*v))
            .draw()
            .map_err(|e| err(&e))?;
        let lim = x_max.min(y_max);
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (lim, lim)],
                ShapeStyle::from(&RGBColor(160, 160, 160)).stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label("delivered = offered")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(160, 160, 160)));
        let series: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.offered_pps, p.delivered_pps))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), BLUE.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("delivered")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| {
                let style = if p.ok { BLUE.filled() } else { RED.filled() };
                Circle::new((p.offered_pps, p.delivered_pps), 4, style)
            }))
            .map_err(|e| err(&e))?;
        if let Some(b) = best {
            chart
                .draw_series(LineSeries::new(
                    [(b, 0.0), (b, y_max)],
                    RGBColor(0, 140, 0).stroke_width(1),
                ))
                .map_err(|e| err(&e))?
                .label(format!(
                    "highest rate with loss ≤ {}: {}/s",
                    fmt_pct(args.max_loss),
                    fmt_count(b)
                ))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(0, 140, 0)));
        }
        draw_legend(&mut chart)?;
    }

    // Panel 2: latency percentiles (log scale).
    {
        let all: Vec<f64> = points
            .iter()
            .flat_map(|p| {
                [
                    p.latency_p50_us,
                    p.latency_p90_us,
                    p.latency_p99_us,
                    p.latency_p999_us,
                ]
            })
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = all.iter().copied().fold(0.0, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > 0.0 {
            (
                10f64.powf(lo.log10().floor()).max(0.1),
                nice_ceiling(hi * 1.2),
            )
        } else {
            (1.0, 1000.0)
        };
        let mut chart = panel(&bottom, "One-way latency percentiles vs offered rate")
            .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("offered (packets/s)")
            .y_desc("latency (µs, log scale)")
            .x_label_formatter(&|v| fmt_count(*v))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        let series: [LatencySeries; 4] = [
            ("p50", RGBColor(31, 119, 180), |p| p.latency_p50_us),
            ("p90", RGBColor(44, 160, 44), |p| p.latency_p90_us),
            ("p99", RGBColor(255, 127, 14), |p| p.latency_p99_us),
            ("p99.9", RGBColor(214, 39, 40), |p| p.latency_p999_us),
        ];
        for (name, color, get) in series {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.offered_pps, get(p)))
                .filter(|(_, v)| v.is_finite() && *v > 0.0)
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        draw_legend(&mut chart)?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(target: f64, delivered: f64, loss: f64) -> SweepPoint {
        SweepPoint {
            target_pps: target,
            offered_pps: target,
            delivered_pps: delivered,
            loss_ratio: loss,
            reordered: 0,
            latency_p50_us: 20.0,
            latency_p90_us: 40.0,
            latency_p99_us: 90.0,
            latency_p999_us: 400.0,
            generator_cpu_util: 0.3,
            generator_limited: false,
            server_cpu_util: Some(0.5),
            delivered_per_server_cpu_sec: Some(1e5),
            ok: loss <= 0.001,
        }
    }

    #[test]
    fn nice_limits() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(95.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
        assert_eq!(nice_ceiling(210_000.0), 500_000.0);
    }

    #[test]
    fn draws_an_svg() {
        let dir = std::env::temp_dir().join(format!("lg-sweep-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.svg");
        let args = SweepArgs {
            relay: RelayArgs::default(),
            rates: vec![Rate::Pps(1e4), Rate::Pps(5e4), Rate::Pps(1e5)],
            max_loss: 0.001,
            pause: 0.0,
            stop_after: 0,
            svg: Some(path.clone()),
        };
        let pts = [
            point(1e4, 1e4, 0.0),
            point(5e4, 5e4, 0.0005),
            point(1e5, 8e4, 0.2),
        ];
        draw_svg(&path, &pts, &args, Some(5e4)).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Offered vs delivered"));
        assert!(svg.contains("p99.9"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
