//! The failover table: one row per fault that struck while the workload ran (and one per run
//! of an experiment): detection, takeover and failover latency after T_fault, the longest
//! stall, bytes lost and duplicated, and the integrity verdict. Rows fill in live from the
//! client's telemetry events and are settled, exactly, from its result.

use super::chart::MarkerKind;
use super::{Component, bytes, ms};
use crate::lab::figures::{FailoverFigures, failover_figures, resume_after};
use halab_protocol::{ClientEvent, ClientResult, EventKind};
use halab_workload::ConnEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Row, Table};
use std::collections::BTreeSet;

/// Where a row's measurement stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RowState {
    /// The fault struck while no client ran: nothing to measure.
    NoWorkload,
    /// Waiting for these client hosts' runs to end.
    Measuring(BTreeSet<String>),
    Done,
    /// The workload was stopped before the run that saw the fault ended.
    Stopped,
}

/// One fault and what the clients saw of it. Times are console-clock ns.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverRow {
    pub fault_id: u64,
    pub label: String,
    pub fault_ns: u64,
    pub detect_ns: Option<u64>,
    pub takeover_ns: Option<u64>,
    pub resume_ns: Option<u64>,
    /// Settled figures, worst over the client hosts that reported.
    pub figures: Option<FailoverFigures>,
    pub state: RowState,
}

impl FailoverRow {
    fn ms_after(&self, t: Option<u64>) -> Option<f64> {
        t.map(|t| (t as f64 - self.fault_ns as f64) / 1e6)
    }

    pub fn detect_ms(&self) -> Option<f64> {
        self.figures
            .as_ref()
            .and_then(|f| f.detect_ms)
            .or(self.ms_after(self.detect_ns))
    }
    pub fn takeover_ms(&self) -> Option<f64> {
        self.figures
            .as_ref()
            .and_then(|f| f.takeover_ms)
            .or(self.ms_after(self.takeover_ns))
    }
    pub fn failover_ms(&self) -> Option<f64> {
        self.figures
            .as_ref()
            .and_then(|f| f.failover_ms)
            .or(self.ms_after(self.resume_ns))
    }
}

#[derive(Debug)]
pub struct FailoverTable {
    pub rows: Vec<FailoverRow>,
    /// The current mode's names of the detect, takeover and failover columns.
    pub columns: [&'static str; 3],
}

fn worst(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

impl FailoverTable {
    /// An empty table headed as `mode` names its columns.
    pub fn for_mode(mode: crate::topology::Mode) -> FailoverTable {
        FailoverTable {
            rows: Vec::new(),
            columns: mode.behaviour().failover_columns(),
        }
    }

    /// Fault `fault_id` took effect at `fault_ns` while `clients` were running the workload.
    pub fn fault(
        &mut self,
        fault_id: u64,
        label: String,
        fault_ns: u64,
        clients: BTreeSet<String>,
    ) {
        let state = if clients.is_empty() {
            RowState::NoWorkload
        } else {
            RowState::Measuring(clients)
        };
        self.rows.push(FailoverRow {
            fault_id,
            label,
            fault_ns,
            detect_ns: None,
            takeover_ns: None,
            resume_ns: None,
            figures: None,
            state,
        });
    }

    /// Live events of `client`'s run (times already on the console clock); `grew_at` is when
    /// the client's byte count was seen growing.
    pub fn telemetry(&mut self, client: &str, events: &[ClientEvent], grew_at: Option<u64>) {
        for row in &mut self.rows {
            let RowState::Measuring(waiting) = &row.state else {
                continue;
            };
            if !waiting.contains(client) {
                continue;
            }
            for e in events.iter().filter(|e| e.at_ns >= row.fault_ns) {
                match e.event {
                    ConnEvent::Reset | ConnEvent::Fin | ConnEvent::TimedOut => {
                        row.detect_ns.get_or_insert(e.at_ns);
                    }
                    ConnEvent::Reconnect { .. } => {
                        row.takeover_ns.get_or_insert(e.at_ns);
                    }
                    ConnEvent::Connected => {}
                }
            }
            if let (Some(t), Some(g)) = (row.takeover_ns, grew_at)
                && g >= t
            {
                row.resume_ns.get_or_insert(g);
            }
        }
    }

    /// A failover mode reported `kind` (`detect`, `takeover`, ...) at `at_ns` (console
    /// clock): in a mode where the client sees no failover at all (st-tcp), these are the
    /// row's detection and takeover, and its resume is the first byte after the takeover.
    pub fn mode_event(&mut self, kind: EventKind, at_ns: u64) {
        for row in &mut self.rows {
            if !matches!(row.state, RowState::Measuring(_)) || at_ns < row.fault_ns {
                continue;
            }
            match kind {
                EventKind::Detect => {
                    row.detect_ns.get_or_insert(at_ns);
                }
                EventKind::Takeover => {
                    row.takeover_ns.get_or_insert(at_ns);
                }
                _ => {}
            }
        }
    }

    /// `client`'s run ended with `result` (times on the console clock): it settles every row
    /// of a fault that struck before the run ended.
    pub fn client_done(&mut self, client: &str, result: &ClientResult) {
        let stopped = result
            .connections
            .iter()
            .any(|c| c.error == Some(halab_protocol::message::ConnError::Stopped));
        for row in &mut self.rows {
            let RowState::Measuring(waiting) = &mut row.state else {
                continue;
            };
            if !waiting.contains(client) || result.ended_ns < row.fault_ns {
                continue;
            }
            waiting.remove(client);
            let left = waiting.is_empty();
            // A takeover the client did not see (st-tcp): it resumed with the first 10 ms
            // bucket holding bytes after the takeover.
            if let Some(t) = row.takeover_ns
                && row.resume_ns.is_none()
            {
                row.resume_ns =
                    resume_after(t as f64, &result.connections).map(|end| end.round() as u64);
            }
            let f = failover_figures(result, Some(row.fault_ns as f64));
            // Events of a connection before the fault are not the fault's doing.
            let f = FailoverFigures {
                detect_ms: f.detect_ms.filter(|x| *x >= 0.0),
                takeover_ms: f.takeover_ms.filter(|x| *x >= 0.0),
                failover_ms: f.failover_ms.filter(|x| *x >= 0.0),
                ..f
            };
            row.figures = Some(match row.figures.take() {
                None => f,
                Some(g) => FailoverFigures {
                    failover_ms: worst(g.failover_ms, f.failover_ms),
                    detect_ms: worst(g.detect_ms, f.detect_ms),
                    takeover_ms: worst(g.takeover_ms, f.takeover_ms),
                    stall_ms: worst(g.stall_ms, f.stall_ms),
                    integrity: halab_workload::IntegrityReport::combine([
                        &g.integrity,
                        &f.integrity,
                    ]),
                },
            });
            if stopped {
                row.state = RowState::Stopped;
            } else if left {
                row.state = RowState::Done;
            }
        }
    }

    /// `client` will not report (powered off, lost): rows stop waiting for it; a row left
    /// with no figure at all is marked stopped.
    pub fn client_gone(&mut self, client: &str) {
        for row in &mut self.rows {
            let RowState::Measuring(waiting) = &mut row.state else {
                continue;
            };
            if waiting.remove(client) && waiting.is_empty() {
                row.state = if row.figures.is_some() {
                    RowState::Done
                } else {
                    RowState::Stopped
                };
            }
        }
    }

    /// A finished run of an experiment, as its record has it.
    pub fn record(&mut self, r: &crate::run::record::RunRecord) {
        let label = format!(
            "{} #{} {}",
            r.experiment,
            r.run_index,
            r.faults
                .iter()
                .map(|f| format!("{} {}", f.kind, f.target))
                .collect::<Vec<_>>()
                .join("+")
        );
        self.rows.push(FailoverRow {
            fault_id: 0,
            label,
            fault_ns: 0,
            detect_ns: None,
            takeover_ns: None,
            resume_ns: None,
            figures: Some(FailoverFigures {
                failover_ms: r.failover_ms,
                detect_ms: r.detect_ms,
                takeover_ms: r.takeover_ms,
                stall_ms: r.stall_ms,
                integrity: r.integrity.clone(),
            }),
            state: if r.error.is_some() {
                RowState::Stopped
            } else {
                RowState::Done
            },
        });
    }

    /// Markers for the throughput chart.
    pub fn markers(&self) -> Vec<(MarkerKind, u64)> {
        let mut m = Vec::new();
        for r in self.rows.iter().filter(|r| r.fault_ns > 0) {
            m.push((MarkerKind::Fault, r.fault_ns));
            let at = |x: Option<f64>| x.map(|ms| r.fault_ns + (ms.max(0.0) * 1e6) as u64);
            for (k, t) in [
                (MarkerKind::Detect, at(r.detect_ms())),
                (MarkerKind::Takeover, at(r.takeover_ms())),
                (MarkerKind::Resume, at(r.failover_ms())),
            ] {
                if let Some(t) = t {
                    m.push((k, t));
                }
            }
        }
        m
    }
}

impl Component for FailoverTable {
    fn draw(&self, frame: &mut Frame, area: Rect) {
        // The newest rows that fit.
        let fit = area.height.saturating_sub(3) as usize;
        let skip = self.rows.len().saturating_sub(fit);
        let rows = self.rows.iter().skip(skip).map(|r| {
            let (verdict, style) = match (&r.state, &r.figures) {
                (RowState::NoWorkload, _) => ("no load".to_string(), Style::new().dim()),
                (RowState::Measuring(_), _) => ("…".to_string(), Style::new().fg(Color::Yellow)),
                (RowState::Stopped, _) => ("stopped".to_string(), Style::new().fg(Color::Yellow)),
                (RowState::Done, Some(f)) if f.integrity.integrity_ok => {
                    ("ok".to_string(), Style::new().fg(Color::Green))
                }
                (RowState::Done, _) => ("FAILED".to_string(), Style::new().fg(Color::Red).bold()),
            };
            let f = r.figures.as_ref();
            let count =
                |g: fn(&FailoverFigures) -> u64| f.map(|f| bytes(g(f))).unwrap_or("-".into());
            Row::new(vec![
                Cell::from(r.label.clone()),
                Cell::from(ms(r.detect_ms())),
                Cell::from(ms(r.takeover_ms())),
                Cell::from(ms(r.failover_ms())),
                Cell::from(ms(f.and_then(|f| f.stall_ms))),
                Cell::from(count(|f| f.integrity.bytes_lost)),
                Cell::from(count(|f| f.integrity.bytes_duplicated)),
                Cell::from(verdict).style(style),
            ])
        });
        let widths = [
            Constraint::Fill(1),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(9),
        ];
        let [detect, takeover, failover] = self.columns;
        let header = Row::new(vec![
            "fault",
            detect,
            takeover,
            failover,
            "stall",
            "lost",
            "dup",
            "integrity",
        ])
        .style(Style::new().bold());
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(Line::from(" failovers (after T_fault) ")));
        frame.render_widget(table, area);
    }
}
