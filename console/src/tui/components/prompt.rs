//! Prompts over the dashboard: the loss percent, the delay, the peer of a partition, an experiment to
//! run, and the confirmation of a quit while faults are active.

use super::{Component, centered};
use crate::tui::action::{Action, FaultKey};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Loss percent for `host`, as typed.
    Loss {
        host: String,
        input: String,
        error: Option<String>,
    },
    /// Delay on `host`'s way in, milliseconds, as typed.
    Delay {
        host: String,
        input: String,
        error: Option<String>,
    },
    /// Which other host `host` is cut off from.
    Partition {
        host: String,
        peers: Vec<String>,
        selected: usize,
    },
    /// Which experiment to run.
    Experiment {
        files: Vec<PathBuf>,
        selected: usize,
    },
    /// `faults` faults are active: quit anyway?
    ConfirmQuit { faults: usize },
}

fn step(selected: &mut usize, len: usize, delta: isize) {
    if len > 0 {
        *selected = (*selected as isize + delta).rem_euclid(len as isize) as usize;
    }
}

impl Component for Prompt {
    fn handle_event(&mut self, key: KeyEvent) -> Option<Action> {
        if key.code == KeyCode::Esc {
            return Some(Action::Close);
        }
        match self {
            Prompt::Loss { host, input, error } => match key.code {
                KeyCode::Char(c) if c.is_ascii_digit() || c == '.' => {
                    if input.len() < 6 {
                        input.push(c);
                    }
                    *error = None;
                    None
                }
                KeyCode::Backspace => {
                    input.pop();
                    None
                }
                KeyCode::Enter => match input.parse::<f64>() {
                    Ok(p) if p > 0.0 && p <= 100.0 => Some(Action::Fault {
                        host: host.clone(),
                        fault: FaultKey::Loss(p),
                    }),
                    _ => {
                        *error = Some("a percent in (0, 100]".into());
                        None
                    }
                },
                _ => None,
            },
            Prompt::Delay { host, input, error } => match key.code {
                KeyCode::Char(c) if c.is_ascii_digit() => {
                    if input.len() < 5 {
                        input.push(c);
                    }
                    *error = None;
                    None
                }
                KeyCode::Backspace => {
                    input.pop();
                    None
                }
                KeyCode::Enter => match input.parse::<u64>() {
                    Ok(ms) if (1..=10_000).contains(&ms) => Some(Action::Fault {
                        host: host.clone(),
                        fault: FaultKey::Delay(ms),
                    }),
                    _ => {
                        *error = Some("milliseconds, 1 to 10000".into());
                        None
                    }
                },
                _ => None,
            },
            Prompt::Partition {
                host,
                peers,
                selected,
            } => match key.code {
                KeyCode::Up => {
                    step(selected, peers.len(), -1);
                    None
                }
                KeyCode::Down | KeyCode::Tab => {
                    step(selected, peers.len(), 1);
                    None
                }
                KeyCode::Enter => peers.get(*selected).map(|p| Action::Fault {
                    host: host.clone(),
                    fault: FaultKey::Partition(p.clone()),
                }),
                _ => None,
            },
            Prompt::Experiment { files, selected } => match key.code {
                KeyCode::Up => {
                    step(selected, files.len(), -1);
                    None
                }
                KeyCode::Down | KeyCode::Tab => {
                    step(selected, files.len(), 1);
                    None
                }
                KeyCode::Enter => files
                    .get(*selected)
                    .map(|f| Action::RunExperiment(f.clone())),
                _ => None,
            },
            Prompt::ConfirmQuit { .. } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('q') | KeyCode::Enter => Some(Action::Quit),
                KeyCode::Char('n') => Some(Action::Close),
                _ => None,
            },
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect) {
        let selected = Style::new().add_modifier(Modifier::REVERSED);
        let list = |items: Vec<String>, sel: usize| -> Vec<Line<'static>> {
            items
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let l = Line::from(format!(" {s} "));
                    if i == sel { l.style(selected) } else { l }
                })
                .collect()
        };
        let (title, mut lines) = match self {
            Prompt::Loss { host, input, error } => {
                let mut l = vec![Line::from(format!(" drop {input}_ % of {host}'s packets"))];
                if let Some(e) = error {
                    l.push(Line::from(format!(" {e}")).style(Style::new().fg(Color::Red)));
                }
                (format!(" loss on {host} "), l)
            }
            Prompt::Delay { host, input, error } => {
                let mut l = vec![Line::from(format!(
                    " add {input}_ ms to every packet reaching {host}"
                ))];
                if let Some(e) = error {
                    l.push(Line::from(format!(" {e}")).style(Style::new().fg(Color::Red)));
                }
                (format!(" delay on {host} "), l)
            }
            Prompt::Partition {
                host,
                peers,
                selected: s,
            } => (format!(" partition {host} from "), list(peers.clone(), *s)),
            Prompt::Experiment { files, selected: s } => {
                let names = files
                    .iter()
                    .map(|f| {
                        f.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>();
                if names.is_empty() {
                    (
                        " experiments ".into(),
                        vec![Line::from(" no experiments/*.toml found")],
                    )
                } else {
                    (" run an experiment ".into(), list(names, *s))
                }
            }
            Prompt::ConfirmQuit { faults } => (
                " quit? ".into(),
                vec![
                    Line::from(format!(" {faults} fault(s) active.")),
                    Line::from(" Quit, revert them and tear the testbed down? y/n"),
                ],
            ),
        };
        lines.push(
            Line::from(" Enter confirms, Esc cancels").style(Style::new().fg(Color::DarkGray)),
        );
        let width = lines
            .iter()
            .map(|l| l.width())
            .max()
            .unwrap_or(20)
            .max(title.len()) as u16
            + 2;
        let area = centered(area, width, lines.len() as u16 + 2);
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::bordered()
                    .title(title)
                    .border_style(Style::new().fg(Color::Yellow)),
            ),
            area,
        );
    }
}
