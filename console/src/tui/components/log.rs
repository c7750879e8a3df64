//! The event log: what the dashboard did and what the agents reported, newest last. (The
//! tracing log goes to the run's log file, never here.)

use super::Component;
use crate::tui::action::Level;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use std::collections::VecDeque;

/// Lines kept.
const KEEP: usize = 500;

#[derive(Debug, Default)]
pub struct EventLog {
    pub start_ns: u64,
    pub lines: VecDeque<(u64, Level, String)>,
}

impl EventLog {
    pub fn new(start_ns: u64) -> EventLog {
        EventLog {
            start_ns,
            lines: VecDeque::new(),
        }
    }

    pub fn push(&mut self, at_ns: u64, level: Level, text: impl Into<String>) {
        self.lines.push_back((at_ns, level, text.into()));
        while self.lines.len() > KEEP {
            self.lines.pop_front();
        }
    }
}

impl Component for EventLog {
    fn draw(&self, frame: &mut Frame, area: Rect) {
        let fit = area.height.saturating_sub(2) as usize;
        let skip = self.lines.len().saturating_sub(fit);
        let lines: Vec<Line> = self
            .lines
            .iter()
            .skip(skip)
            .map(|(t, level, text)| {
                let s = t.saturating_sub(self.start_ns) as f64 / 1e9;
                let style = match level {
                    Level::Info => Style::new(),
                    Level::Warn => Style::new().fg(Color::Yellow),
                    Level::Error => Style::new().fg(Color::Red),
                };
                Line::from(vec![
                    Span::styled(format!("{s:7.1}s "), Style::new().fg(Color::DarkGray)),
                    Span::styled(text.clone(), style),
                ])
            })
            .collect();
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" events ")),
            area,
        );
    }
}
