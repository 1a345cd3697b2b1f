//! The plots, as SVG and PNG, drawn with `plotters` (pure Rust; text through
//! ab_glyph with a TrueType font read at run time, so nothing links
//! fontconfig or freetype): latency CDF per case, medians of the phases as
//! stacked bars, peak RSS per case, and the ramp curves.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use super::record::Record;
use super::summary::Summary;

/// Pixel size of every plot.
const SIZE: (u32, u32) = (900, 520);
/// Where a sans-serif TrueType font is looked for (`EMBER_BENCH_FONT`
/// first).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

#[derive(Debug, Clone, thiserror::Error)]
pub enum PlotError {
    #[error("no TrueType font for the plots' text (looked at $EMBER_BENCH_FONT and {0}; Debian: apt-get install fonts-dejavu-core)")]
    NoFont(String),
    #[error("drawing {0}: {1}")]
    Draw(String, String),
}

/// One plot written as `<name>.svg` and `<name>.png`.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    pub name: String,
    pub title: String,
    pub svg: PathBuf,
    pub png: PathBuf,
}

/// A chart drawable on any backend.
trait Chart {
    fn title(&self) -> String;
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Registers the font once; later calls return the first outcome.
fn font() -> Result<(), PlotError> {
    static DONE: OnceLock<Result<(), PlotError>> = OnceLock::new();
    DONE.get_or_init(|| {
        let candidates = std::env::var("EMBER_BENCH_FONT")
            .ok()
            .into_iter()
            .chain(FONTS.iter().map(|s| s.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // Registered once per process and kept for its life.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(PlotError::NoFont(FONTS.join(", ")))
    })
    .clone()
}

fn render<C: Chart>(dir: &Path, name: &str, chart: &C) -> Result<Plot, PlotError> {
    font()?;
    let err = |e: String| PlotError::Draw(name.into(), e);
    let svg = dir.join(format!("{name}.svg"));
    let png = dir.join(format!("{name}.png"));
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        chart.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        chart.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(Plot {
        name: name.into(),
        title: chart.title(),
        svg,
        png,
    })
}

/// Every plot that fits `summary` (a CDF always; phases, RSS and ramp
/// curves when there is such data), written into `dir`.
pub fn write_all(
    dir: &Path,
    summary: &Summary,
    records: &[Record],
) -> Result<Vec<Plot>, PlotError> {
    let mut plots = Vec::new();
    let series: Vec<(String, Vec<f64>)> = summary
        .cases
        .iter()
        .map(|c| {
            let v = super::stats::sorted(
                records
                    .iter()
                    .filter(|r| r.case == c.case && r.measured())
                    .filter_map(|r| r.wall_ms),
            );
            (c.case.clone(), v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if !series.is_empty() {
        let title = format!("ember bench {}: latency CDF per case", summary.scenario);
        plots.push(render(dir, "latency-cdf", &Cdf { title, series })?);
    }
    let phased: Vec<(String, Vec<(String, f64)>)> = summary
        .cases
        .iter()
        .filter(|c| !c.phase_medians_ms.is_empty())
        .map(|c| (c.case.clone(), c.phase_medians_ms.clone()))
        .collect();
    if !phased.is_empty() {
        let title = format!(
            "ember bench {}: median of each phase (ms)",
            summary.scenario
        );
        plots.push(render(
            dir,
            "phases",
            &Bars {
                title,
                y: "ms".into(),
                bars: phased,
            },
        )?);
    }
    let rss: Vec<(String, Vec<(String, f64)>)> = summary
        .cases
        .iter()
        .filter_map(|c| {
            Some((
                c.case.clone(),
                vec![("peak RSS".to_string(), c.peak_rss_mib?.median)],
            ))
        })
        .collect();
    if !rss.is_empty() {
        let title = format!("ember bench {}: median peak RSS (MiB)", summary.scenario);
        plots.push(render(
            dir,
            "peak-rss",
            &Bars {
                title,
                y: "MiB".into(),
                bars: rss,
            },
        )?);
    }
    let steps: Vec<(f64, f64, f64, f64)> = summary
        .cases
        .iter()
        .filter_map(|c| {
            let w = c.wall_ms?;
            Some((
                f64::from(c.step?),
                w.median,
                w.p90,
                c.starts_per_sec.unwrap_or(0.0),
            ))
        })
        .collect();
    if !steps.is_empty() {
        let title = format!(
            "ember bench {}: cold-start latency and starts/s per step",
            summary.scenario
        );
        plots.push(render(dir, "ramp", &RampCurve { title, steps })?);
    }
    Ok(plots)
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x7f, 0x7f, 0x7f),
    ];
    C[i % C.len()]
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Latency CDF, log-scaled x (cases often differ by orders of magnitude).
struct Cdf {
    title: String,
    series: Vec<(String, Vec<f64>)>,
}

impl Chart for Cdf {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(s)?;
        let all = self.series.iter().flat_map(|(_, v)| v.iter().copied());
        let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(x), h.max(x)));
        let (lo, hi) = ((lo * 0.8).max(1e-3), (hi * 1.25).max(lo * 1.5));
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_max_light_lines(1)
            .y_max_light_lines(1)
            .x_desc("latency (ms, log scale)")
            .y_desc("fraction of runs")
            .draw()
            .map_err(s)?;
        for (i, (name, v)) in self.series.iter().enumerate() {
            let n = v.len() as f64;
            let mut pts = Vec::with_capacity(v.len() * 2);
            for (k, &x) in v.iter().enumerate() {
                pts.push((x, k as f64 / n));
                pts.push((x, (k + 1) as f64 / n));
            }
            let c = color(i);
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(s)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(s)
    }
}

/// Stacked bars: one bar per case, one segment per part.
struct Bars {
    title: String,
    y: String,
    bars: Vec<(String, Vec<(String, f64)>)>,
}

impl Chart for Bars {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(s)?;
        let top = self
            .bars
            .iter()
            .map(|(_, parts)| parts.iter().map(|p| p.1.max(0.0)).sum::<f64>())
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.15;
        let n = self.bars.len();
        let names: Vec<String> = self.bars.iter().map(|b| b.0.clone()).collect();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0f64..top)
            .map_err(s)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_max_light_lines(1)
            .y_desc(self.y.as_str())
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    names.get(*i).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .x_label_style(("sans-serif", 12))
            .draw()
            .map_err(s)?;
        let mut part_names: Vec<String> = Vec::new();
        for (_, parts) in &self.bars {
            for (p, _) in parts {
                if !part_names.contains(p) {
                    part_names.push(p.clone());
                }
            }
        }
        for (pi, part) in part_names.iter().enumerate() {
            let c = color(pi);
            let rects: Vec<Rectangle<(SegmentValue<usize>, f64)>> = self
                .bars
                .iter()
                .enumerate()
                .filter_map(|(i, (_, parts))| {
                    let k = parts.iter().position(|(p, _)| p == part)?;
                    let below: f64 = parts[..k].iter().map(|p| p.1.max(0.0)).sum();
                    let h = parts[k].1.max(0.0);
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), below),
                            (SegmentValue::Exact(i + 1), below + h),
                        ],
                        c.filled(),
                    );
                    // Gaps between the bars (pixels).
                    r.set_margin(0, 0, 14, 14);
                    Some(r)
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(s)?
                .label(part.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(s)
    }
}

/// Ramp: median and p90 latency per step (left), starts per second (right).
struct RampCurve {
    title: String,
    /// (N, median ms, p90 ms, starts/s)
    steps: Vec<(f64, f64, f64, f64)>,
}

impl Chart for RampCurve {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(s)?;
        let max_n = self.steps.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
        let max_ms = self.steps.iter().map(|p| p.2).fold(1e-3, f64::max) * 1.15;
        let max_rate = self.steps.iter().map(|p| p.3).fold(1e-3, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..max_n, 0f64..max_ms)
            .map_err(s)?
            .set_secondary_coord(0f64..max_n, 0f64..max_rate);
        chart
            .configure_mesh()
            .x_max_light_lines(1)
            .y_max_light_lines(1)
            .x_desc("simultaneous cold starts")
            .y_desc("latency (ms)")
            .draw()
            .map_err(s)?;
        chart
            .configure_secondary_axes()
            .y_desc("environments started per second")
            .draw()
            .map_err(s)?;
        let lines = [("median latency", 1usize), ("p90 latency", 2)];
        for (i, (label, col)) in lines.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = self
                .steps
                .iter()
                .map(|p| (p.0, if *col == 1 { p.1 } else { p.2 }))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(s)?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(s)?;
        }
        let c = color(2);
        let rate: Vec<(f64, f64)> = self.steps.iter().map(|p| (p.0, p.3)).collect();
        chart
            .draw_secondary_series(LineSeries::new(rate, c.stroke_width(2)))
            .map_err(s)?
            .label("starts/s (right axis)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::record::Phase;
    use crate::bench::runner::Plan;

    fn rec(case: &str, ms: f64, step: Option<u32>) -> Record {
        Record {
            scenario: "t".into(),
            case: case.into(),
            round: 0,
            seq: 0,
            warmup: false,
            ok: true,
            start_ms: 0.0,
            wall_ms: Some(ms),
            peak_rss_kib: Some(2048),
            boot_timer_ms: None,
            phases: vec![
                Phase {
                    name: "a".into(),
                    ms: ms / 2.0,
                },
                Phase {
                    name: "b".into(),
                    ms: ms / 2.0,
                },
            ],
            step,
            batch_ms: step.map(|_| ms * 2.0),
            error: None,
        }
    }

    #[test]
    fn every_plot_renders_with_one_case_and_with_several() {
        let plan = Plan {
            runs: 3,
            warmup: 0,
            seed: 1,
        };
        for cases in [vec!["only"], vec!["x", "y", "z"]] {
            let d = tempfile::tempdir().unwrap();
            let records: Vec<Record> = cases
                .iter()
                .enumerate()
                .flat_map(|(i, c)| (1..=3).map(move |k| rec(c, (i + k) as f64, Some(1 << i))))
                .collect();
            let labels: Vec<String> = cases.iter().map(|c| c.to_string()).collect();
            let ctx = crate::bench::context::Context::capture();
            let s = Summary::build("t", ctx, plan, &labels, &records, None, vec![], vec![]);
            let plots = write_all(d.path(), &s, &records).unwrap();
            let names: Vec<&str> = plots.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["latency-cdf", "phases", "peak-rss", "ramp"]);
            for p in &plots {
                let png = std::fs::read(&p.png).unwrap();
                assert_eq!(&png[1..4], b"PNG");
                let svg = std::fs::read_to_string(&p.svg).unwrap();
                assert!(svg.contains("<svg") && svg.contains("<text"), "{svg}");
            }
        }
    }
}
