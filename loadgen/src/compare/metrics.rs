//! The metrics a comparison reports per scenario, read from each run's
//! generator report, and their summary: median and spread per system and
//! the ratios of uturn's median to the others'.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{RunRecord, System};
use crate::output;

/// metric → system → spread.
pub(super) type Summary = BTreeMap<String, BTreeMap<String, Spread>>;

/// A metric of the summary.
pub(super) struct MetricDef {
    pub key: &'static str,
    pub title: &'static str,
    /// JSON pointer into the generator's report (empty: computed here).
    pointer: &'static str,
    pub higher_is_better: bool,
    pub fmt: fn(f64) -> String,
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

/// The server's CPU use, read at `pointer` (empty: computed in `extract`).
const fn server_cpu_util(pointer: &'static str) -> MetricDef {
    MetricDef {
        key: "server_cpu_util",
        title: "Server CPU use (% of one core)",
        pointer,
        higher_is_better: false,
        fmt: fmt_util,
    }
}

/// The generator's CPU use, in every scenario's report.
const GENERATOR_CPU_UTIL: MetricDef = MetricDef {
    key: "generator_cpu_util",
    title: "Generator CPU use (% of one core, all its threads)",
    pointer: "/generator_cpu_util",
    higher_is_better: false,
    fmt: fmt_util,
};

pub(super) const RELAY_METRICS: &[MetricDef] = &[
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
    server_cpu_util("/server_cpu_util"),
    GENERATOR_CPU_UTIL,
];

pub(super) const ALLOCATE_METRICS: &[MetricDef] = &[
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
    // The allocate report has no utilisation: computed in `extract`.
    server_cpu_util(""),
    GENERATOR_CPU_UTIL,
];

/// Median, min and max of one metric for one system.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
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

/// The metrics of one run from the generator's report.
pub(super) fn extract(defs: &[MetricDef], report: &Value) -> BTreeMap<String, f64> {
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

/// Every metric's spread per system, over the runs that succeeded.
pub(super) fn summarize(defs: &[MetricDef], systems: &[System], runs: &[RunRecord]) -> Summary {
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

/// The systems uturn is compared with, and the label of each ratio.
pub(super) const RATIOS: [(&str, &str); 4] = [
    ("floor", "uturn/floor"),
    ("coturn", "uturn/coturn"),
    ("uturn-syscall", "uturn/uturn-syscall"),
    ("uturn-baseline", "uturn/uturn-baseline"),
];

/// (label, uturn median / other median) for each system in `RATIOS` present.
pub(super) fn ratio_pairs(key: &str, summary: &Summary) -> Vec<(&'static str, f64)> {
    let Some(per) = summary.get(key) else {
        return Vec::new();
    };
    let Some(u) = per.get("uturn") else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for (other, label) in RATIOS {
        if let Some(o) = per.get(other) {
            if o.median != 0.0 {
                v.push((label, u.median / o.median));
            }
        }
    }
    v
}

pub(super) fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "-".into()
    }
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
}
