//! The sweep's results: one point per rate, the summary over all of them,
//! and the table printed without `--json`.

use serde::Serialize;

use crate::output::{self, fmt_count, fmt_pct};
use crate::relay::{RelayArgs, RelayReport};

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
    pub(super) fn from_report(target: f64, r: &RelayReport, max_loss: f64) -> SweepPoint {
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

/// "100 flows × 120 B · both · channel[ · GSO]" with `sep` between the parts.
pub(super) fn shape(a: &RelayArgs, sep: &str) -> String {
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

pub(super) fn print_table(r: &SweepReport) {
    let a = &r.args;
    let title = format!(
        "sweep · {} · {} · {} s per rate",
        a.target.server,
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
