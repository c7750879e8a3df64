//! The status bar: testbed, mode (and a switch in progress), heartbeat settings, the
//! workload, an experiment's progress, and the keys.

use super::Component;
use crate::tui::action::{ExperimentView, ModeView};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

#[derive(Debug)]
pub struct StatusBar {
    pub testbed: String,
    pub mode: ModeView,
    /// `heartbeat 200 ms × 3`, or `no heartbeat`.
    pub heartbeat: String,
    pub workload_running: bool,
    pub workload: String,
    pub experiment: Option<ExperimentView>,
    /// Set once quitting: teardown in progress.
    pub quitting: bool,
}

/// The keys, for 100 columns and more.
pub const KEYS: &str = "↑↓ host  k kill h hang c crash n nic l loss x part p off o on r revert  w load m mode e exp ? q";
/// The keys in 80 columns.
pub const KEYS_SHORT: &str =
    "↑↓ host · faults: k h c n l x p o r · w load · m mode · e exp · ? help · q quit";

impl Component for StatusBar {
    fn draw(&self, frame: &mut Frame, area: Rect) {
        let mode = match (&self.mode.switching, &self.mode.note) {
            (Some(to), _) => Span::styled(
                format!("mode {} → {to}: redeploying roles…", self.mode.current),
                Style::new().fg(Color::Yellow),
            ),
            (None, Some(note)) => Span::styled(
                format!("mode {} ({note})", self.mode.current),
                Style::new().fg(Color::Yellow),
            ),
            (None, None) => Span::raw(format!("mode {}", self.mode.current)),
        };
        let load = if self.workload_running {
            Span::styled(
                format!("load {}", self.workload),
                Style::new().fg(Color::Green),
            )
        } else {
            Span::raw(format!("load {}", self.workload))
        };
        let mut first = vec![
            Span::styled(format!(" {} ", self.testbed), Style::new().reversed()),
            Span::raw(" "),
            mode,
            Span::raw(" · "),
            // A mode without heartbeat (none) shows none, whatever the topology sets for the
            // other modes.
            Span::raw(if !self.mode.current.behaviour().run_keys().heartbeat {
                "no heartbeat".to_string()
            } else {
                self.heartbeat.clone()
            }),
            Span::raw(" · "),
            load,
        ];
        if let Some(e) = &self.experiment {
            first.push(Span::raw(" · "));
            first.push(Span::styled(
                format!(
                    "exp {} {}/{}{}: {}",
                    e.name,
                    e.done,
                    e.total,
                    if e.finished { " done" } else { "" },
                    e.current
                ),
                Style::new().fg(Color::Cyan),
            ));
        }
        let second = if self.quitting {
            Line::from(Span::styled(
                " tearing down: agents stopping, faults reverted, namespaces removed…",
                Style::new().fg(Color::Yellow).bold(),
            ))
        } else {
            let keys = if area.width as usize > KEYS.chars().count() + 1 {
                KEYS
            } else {
                KEYS_SHORT
            };
            Line::from(Span::styled(format!(" {keys}"), Style::new().dim()))
        };
        frame.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
    }
}
