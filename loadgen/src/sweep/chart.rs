//! The sweep's chart (`--svg`): plotters draws two panels into one SVG,
//! offered vs delivered rate above, latency percentiles vs offered rate
//! (log scale) below.

use std::path::Path;

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::report::{shape, SweepPoint};
use super::SweepArgs;
use crate::output::{fmt_count, fmt_pct};

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
pub(super) fn draw_svg(
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
    use crate::relay::{Rate, RelayArgs};

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
