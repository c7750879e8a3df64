//! Throughput per client host, live: bytes received binned by when they arrived (console
//! clock), with vertical markers at T_fault, T_detect, T_takeover and T_resume of each fault.

use super::Component;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker as Glyph;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, LegendPosition, Paragraph};
use std::collections::{BTreeMap, VecDeque};

/// Width of one throughput bin.
pub const BIN_NS: u64 = 500_000_000;
/// Seconds of history shown.
pub const WINDOW_S: f64 = 30.0;
/// Bins kept per client (twice the window).
const KEEP_BINS: usize = (2.0 * WINDOW_S * 1e9 / BIN_NS as f64) as usize;

/// What a marker marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    Fault,
    Detect,
    Takeover,
    Resume,
}

impl MarkerKind {
    fn color(self) -> Color {
        match self {
            MarkerKind::Fault => Color::Red,
            MarkerKind::Detect => Color::Yellow,
            MarkerKind::Takeover => Color::Blue,
            MarkerKind::Resume => Color::Green,
        }
    }
    fn name(self) -> &'static str {
        match self {
            MarkerKind::Fault => "fault",
            MarkerKind::Detect => "detect",
            MarkerKind::Takeover => "takeover",
            MarkerKind::Resume => "resume",
        }
    }
}

/// One client's bins: (bin index since the dashboard's start, bytes).
#[derive(Debug, Default, Clone)]
pub struct Series {
    bins: VecDeque<(u64, u64)>,
}

#[derive(Debug, Default)]
pub struct ThroughputChart {
    pub start_ns: u64,
    pub now_ns: u64,
    pub series: BTreeMap<String, Series>,
    pub markers: Vec<(MarkerKind, u64)>,
}

const PALETTE: [Color; 6] = [
    Color::Cyan,
    Color::Magenta,
    Color::LightGreen,
    Color::LightBlue,
    Color::LightYellow,
    Color::White,
];

impl ThroughputChart {
    pub fn new(start_ns: u64, clients: impl IntoIterator<Item = String>) -> ThroughputChart {
        ThroughputChart {
            start_ns,
            now_ns: start_ns,
            series: clients
                .into_iter()
                .map(|c| (c, Series::default()))
                .collect(),
            markers: Vec::new(),
        }
    }

    /// `n` bytes reached `client` at `at_ns` (console clock).
    pub fn add(&mut self, client: &str, at_ns: u64, n: u64) {
        let bin = at_ns.saturating_sub(self.start_ns) / BIN_NS;
        let s = self.series.entry(client.to_string()).or_default();
        match s.bins.iter_mut().rev().find(|(b, _)| *b == bin) {
            Some((_, v)) => *v += n,
            None => {
                // Bins arrive in order almost always; keep them sorted regardless.
                let pos = s
                    .bins
                    .iter()
                    .position(|(b, _)| *b > bin)
                    .unwrap_or(s.bins.len());
                s.bins.insert(pos, (bin, n));
            }
        }
        while s.bins.len() > KEEP_BINS {
            s.bins.pop_front();
        }
    }

    fn secs(&self, ns: u64) -> f64 {
        ns.saturating_sub(self.start_ns) as f64 / 1e9
    }

    /// (x s, y MB/s) points of `s` inside the window, zeros where nothing arrived, the bin in
    /// progress left out.
    fn points(&self, s: &Series, from_bin: u64, to_bin: u64) -> Vec<(f64, f64)> {
        let mut pts = Vec::with_capacity((to_bin - from_bin) as usize);
        let mut it = s.bins.iter().peekable();
        for b in from_bin..to_bin {
            while it.peek().is_some_and(|(x, _)| *x < b) {
                it.next();
            }
            let v = match it.peek() {
                Some((x, v)) if *x == b => *v,
                _ => 0,
            };
            let mbps = v as f64 / (BIN_NS as f64 / 1e9) / 1e6;
            pts.push(((b as f64 + 0.5) * BIN_NS as f64 / 1e9, mbps));
        }
        pts
    }
}

impl Component for ThroughputChart {
    fn draw(&self, frame: &mut Frame, area: Rect) {
        let now_s = self.secs(self.now_ns);
        let x0 = (now_s - WINDOW_S).max(0.0);
        let x1 = x0 + WINDOW_S;
        let now_bin = self.now_ns.saturating_sub(self.start_ns) / BIN_NS;
        let from_bin = (x0 * 1e9 / BIN_NS as f64) as u64;
        let lines: Vec<(String, Vec<(f64, f64)>)> = self
            .series
            .iter()
            .map(|(name, s)| (name.clone(), self.points(s, from_bin, now_bin)))
            .collect();
        let peak = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(0.0f64, f64::max);
        // A round top: 1, 2 or 5 × 10^k MB/s.
        let top = if peak <= 0.0 {
            1.0
        } else {
            let e = 10f64.powf(peak.log10().floor());
            [1.0, 2.0, 5.0, 10.0]
                .into_iter()
                .map(|m| m * e)
                .find(|t| *t >= peak)
                .unwrap_or(10.0 * e)
        };
        let marker_lines: Vec<(MarkerKind, [(f64, f64); 2])> = self
            .markers
            .iter()
            .map(|(k, t)| (*k, self.secs(*t)))
            .filter(|(_, x)| *x >= x0 && *x <= x1)
            .map(|(k, x)| (k, [(x, 0.0), (x, top)]))
            .collect();
        let mut datasets: Vec<Dataset> = Vec::new();
        let mut named = std::collections::BTreeSet::new();
        for (k, pts) in &marker_lines {
            let mut d = Dataset::default()
                .marker(Glyph::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(k.color()))
                .data(pts);
            if named.insert(k.name()) {
                d = d.name(k.name());
            }
            datasets.push(d);
        }
        for (i, (name, pts)) in lines.iter().enumerate() {
            datasets.push(
                Dataset::default()
                    .name(name.clone())
                    .marker(Glyph::Braille)
                    .graph_type(GraphType::Line)
                    .style(Style::new().fg(PALETTE[i % PALETTE.len()]))
                    .data(pts),
            );
        }
        let block = Block::bordered().title(Line::from(" throughput MB/s per client "));
        if self.series.is_empty() {
            frame.render_widget(
                Paragraph::new("no host holds the client role").block(block),
                area,
            );
            return;
        }
        let chart = Chart::new(datasets)
            .block(block)
            .legend_position(Some(LegendPosition::TopLeft))
            .hidden_legend_constraints((
                ratatui::layout::Constraint::Percentage(60),
                ratatui::layout::Constraint::Percentage(80),
            ))
            .x_axis(
                Axis::default()
                    .bounds([x0, x1])
                    .labels([format!("{x0:.0}s"), format!("{x1:.0}s")]),
            )
            .y_axis(
                Axis::default()
                    .bounds([0.0, top])
                    .labels(["0".to_string(), format!("{top:.0}")]),
            );
        frame.render_widget(chart, area);
    }
}
