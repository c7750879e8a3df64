//! The report's SVG plots, drawn with plotters' SVG backend into strings: throughput around
//! the fault per mode, and the distribution of failover latency per mode. One line series per
//! mode, named by the mode in the legend.

use super::input::{Plot, ReportError};
use crate::run::record::RunRecord;
use plotters::prelude::*;

const SIZE: (u32, u32) = (900, 440);
/// Throughput plot window before T_fault, ms.
const BEFORE_MS: f64 = 500.0;
/// After T_fault: the slowest failover plus this, within [1 s, 30 s].
const AFTER_MARGIN_MS: f64 = 500.0;
const BUCKET_MS: f64 = 10.0;

/// `(file_name, title)` of the two plots for `stem`.
pub fn names(stem: &str) -> [(String, &'static str); 2] {
    [
        (
            format!("{stem}-throughput.svg"),
            "Throughput around the fault, per mode",
        ),
        (
            format!("{stem}-failover.svg"),
            "Failover latency distribution, per mode",
        ),
    ]
}

/// The plots that have data: none without a faulted run that moved bytes or measured a
/// failover.
pub fn plots(records: &[RunRecord], stem: &str) -> Result<Vec<Plot>, ReportError> {
    let [(tp_name, tp_title), (fo_name, fo_title)] = names(stem);
    let mut out = Vec::new();
    let series = throughput_series(records);
    if !series.is_empty() {
        out.push(Plot {
            svg: line_chart(
                tp_title,
                "ms from T_fault",
                "MB/s (mean over runs)",
                &series,
            )
            .map_err(|reason| ReportError::Plot {
                plot: tp_name.clone(),
                reason,
            })?,
            file_name: tp_name,
            title: tp_title.to_string(),
        });
    }
    let series = failover_cdf_series(records);
    if !series.is_empty() {
        out.push(Plot {
            svg: line_chart(
                fo_title,
                "failover latency (ms)",
                "fraction of runs",
                &series,
            )
            .map_err(|reason| ReportError::Plot {
                plot: fo_name.clone(),
                reason,
            })?,
            file_name: fo_name,
            title: fo_title.to_string(),
        });
    }
    Ok(out)
}

/// A named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The modes in the order they first ran.
fn modes(records: &[RunRecord]) -> Vec<&str> {
    let mut modes: Vec<&str> = Vec::new();
    for r in records {
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    modes
}

/// When the run's first fault took effect, ms after the client started.
fn fault_at(r: &RunRecord) -> Option<f64> {
    r.faults.iter().filter_map(|f| f.at_ms).reduce(f64::min)
}

/// Per mode, the mean throughput of its faulted runs in 10 ms steps relative to T_fault. A run
/// that had ended counts as moving nothing (it did).
pub fn throughput_series(records: &[RunRecord]) -> Vec<Series> {
    let slowest = records
        .iter()
        .filter_map(|r| r.failover_ms)
        .fold(0.0f64, f64::max);
    let after = (slowest + AFTER_MARGIN_MS).clamp(1000.0, 30_000.0);
    let bins = ((BEFORE_MS + after) / BUCKET_MS).ceil() as usize;
    let mut out = Vec::new();
    for mode in modes(records) {
        let runs: Vec<(&RunRecord, f64)> = records
            .iter()
            .filter(|r| r.mode == mode && !r.throughput_10ms.is_empty())
            .filter_map(|r| fault_at(r).map(|at| (r, at)))
            .collect();
        if runs.is_empty() {
            continue;
        }
        let mut sum = vec![0.0f64; bins];
        for (r, at) in &runs {
            for (k, bytes) in r.throughput_10ms.iter().enumerate() {
                let rel = k as f64 * BUCKET_MS - at + BEFORE_MS;
                if rel < 0.0 {
                    continue;
                }
                let j = (rel / BUCKET_MS).floor() as usize;
                if let Some(s) = sum.get_mut(j) {
                    *s += *bytes as f64;
                }
            }
        }
        let n = runs.len() as f64;
        let points = sum
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let t = j as f64 * BUCKET_MS - BEFORE_MS;
                // bytes per 10 ms → MB/s
                (t, s / n * (1000.0 / BUCKET_MS) / 1e6)
            })
            .collect();
        out.push(Series {
            name: mode.to_string(),
            points,
        });
    }
    out
}

/// Per mode, the empirical distribution (CDF, as steps) of failover_ms over its runs.
pub fn failover_cdf_series(records: &[RunRecord]) -> Vec<Series> {
    let mut out = Vec::new();
    for mode in modes(records) {
        let mut v: Vec<f64> = records
            .iter()
            .filter(|r| r.mode == mode)
            .filter_map(|r| r.failover_ms)
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mut points = vec![(v[0], 0.0)];
        for (i, x) in v.iter().enumerate() {
            points.push((*x, i as f64 / n));
            points.push((*x, (i + 1) as f64 / n));
        }
        out.push(Series {
            name: mode.to_string(),
            points,
        });
    }
    out
}

/// The colour of a mode: fixed for the modes of the design, so plots of different reports
/// agree.
fn colour(mode: &str, i: usize) -> RGBColor {
    match crate::topology::Mode::from_name(mode) {
        Some(m) => {
            let (r, g, b) = m.behaviour().plot_color();
            RGBColor(r, g, b)
        }
        // A record of a mode this version does not know.
        None => {
            let c = Palette99::pick(i + 4).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

/// Draws `series` as lines with a legend into an SVG string.
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<String, String> {
    let pts = || series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let y1 = pts().fold(0.0f64, |m, (_, y)| m.max(*y));
    if x0 >= x1 {
        // One distinct x (a single run): widen so the axis has a length.
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let pad = (x1 - x0) * 0.02;
    let y1 = if y1 > 0.0 { y1 * 1.08 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d((x0 - pad)..(x1 + pad), 0.0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let c = colour(&s.name, i);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
