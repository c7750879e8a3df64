//! The help overlay (`?`).

use super::{Component, centered};
use crate::tui::action::Action;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};

#[derive(Debug, Default)]
pub struct HelpOverlay {
    pub visible: bool,
}

const HELP: &[(&str, &str)] = &[
    ("↑ ↓ Tab", "select a host"),
    ("k", "kill the host's server (SIGKILL)"),
    ("h", "hang it (SIGSTOP)"),
    ("c", "crash with cleanup (SIGTERM)"),
    ("n", "NIC down"),
    ("l", "packet loss (asks for percent)"),
    ("d", "delay on its way in (asks for ms)"),
    ("x", "partition from another host"),
    ("p / o", "power off / power on"),
    ("r", "revert every fault on the host"),
    ("w", "start / stop the workload"),
    ("m", "switch mode (roles redeployed)"),
    ("e", "run an experiment from experiments/"),
    ("?", "this help"),
    ("q", "quit and tear down"),
];

impl Component for HelpOverlay {
    fn handle_event(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Char('?') | KeyCode::Esc | KeyCode::Enter => Some(Action::ToggleHelp),
            KeyCode::Char('q') => Some(Action::RequestQuit),
            _ => None,
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect) {
        if !self.visible {
            return;
        }
        let mut lines: Vec<Line> = HELP
            .iter()
            .map(|(k, what)| Line::from(format!(" {k:<8} {what}")))
            .collect();
        lines.push(Line::from(""));
        lines.push(Line::from(" Faults act on the selected host; its agent reverts them").dim());
        lines.push(Line::from(" on r, on their lease, and when the console goes.").dim());
        let area = centered(area, 62, lines.len() as u16 + 2);
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(lines)
                .style(Style::new())
                .block(Block::bordered().title(" help — ? or Esc closes ")),
            area,
        );
    }
}
