//! The hosts panel: name, roles, state, who holds the service address, CPU and memory from the
//! agent, and the faults active on the host with the time they have left. Owns the selection
//! and turns the fault keys into actions on the selected host.

use super::{Component, bytes, secs};
use crate::experiment::FaultKind;
use crate::state::{HostRecord, HostState};
use crate::tui::action::{Action, FaultKey};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Row, Table};

/// A fault the dashboard put on a host and that is not reverted yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveFault {
    pub id: u64,
    pub host: String,
    pub kind: FaultKind,
    /// As the table shows it (`loss 5%`, `partition/backup`).
    pub label: String,
    /// Sent, not yet confirmed applied.
    pub pending: bool,
    /// When it took effect, console clock (ns).
    pub since_ns: u64,
    pub lease_ms: Option<u64>,
}

/// A host's state as the panel shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownState {
    Up,
    Starting,
    Stopped,
    /// Lost, or its links are down (nic-down).
    Down,
    /// Its server process is stopped (process-hang).
    Hung,
    PoweredOff,
    /// Powered off by a mode's fence.
    Fenced,
}

impl ShownState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShownState::Up => "up",
            ShownState::Starting => "starting",
            ShownState::Stopped => "stopped",
            ShownState::Down => "down",
            ShownState::Hung => "hung",
            ShownState::PoweredOff => "powered-off",
            ShownState::Fenced => "fenced",
        }
    }
}

/// One host as the panel shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    pub record: HostRecord,
    /// CPU %, memory used and total (bytes), from the agent's last `HostStats`.
    pub stats: Option<(f64, u64, u64)>,
}

#[derive(Debug, Default)]
pub struct HostsPanel {
    pub hosts: Vec<HostView>,
    pub faults: Vec<ActiveFault>,
    pub selected: usize,
    pub now_ns: u64,
}

impl HostsPanel {
    pub fn new(hosts: Vec<HostRecord>) -> HostsPanel {
        HostsPanel {
            hosts: hosts
                .into_iter()
                .map(|record| HostView {
                    record,
                    stats: None,
                })
                .collect(),
            ..HostsPanel::default()
        }
    }

    pub fn selected_host(&self) -> Option<&str> {
        self.hosts
            .get(self.selected)
            .map(|h| h.record.name.as_str())
    }

    pub fn select(&mut self, delta: isize) {
        let n = self.hosts.len();
        if n > 0 {
            self.selected = (self.selected as isize + delta).rem_euclid(n as isize) as usize;
        }
    }

    /// New records from the orchestrator; the load figures are kept.
    pub fn set_records(&mut self, records: Vec<HostRecord>) {
        for r in records {
            match self.hosts.iter_mut().find(|h| h.record.name == r.name) {
                Some(h) => h.record = r,
                None => self.hosts.push(HostView {
                    record: r,
                    stats: None,
                }),
            }
        }
    }

    pub fn set_stats(&mut self, host: &str, stats: (f64, u64, u64)) {
        if let Some(h) = self.hosts.iter_mut().find(|h| h.record.name == host) {
            h.stats = Some(stats);
        }
    }

    pub fn record(&self, host: &str) -> Option<&HostRecord> {
        self.hosts
            .iter()
            .find(|h| h.record.name == host)
            .map(|h| &h.record)
    }

    /// Faults and powered-off hosts: what `q` asks about.
    pub fn active_faults(&self) -> usize {
        let off = self
            .hosts
            .iter()
            .filter(|h| h.record.state == HostState::PoweredOff)
            .filter(|h| !self.faults.iter().any(|f| f.host == h.record.name))
            .count();
        self.faults.len() + off
    }

    /// The state of a host as the panel shows it: its agent's state, refined by its faults.
    pub fn shown_state(&self, h: &HostRecord) -> ShownState {
        let has = |kind: FaultKind| {
            self.faults
                .iter()
                .any(|f| f.host == h.name && !f.pending && f.kind == kind)
        };
        match h.state {
            // The testbed records a fence as the power-off's reason.
            HostState::PoweredOff if h.reason.as_deref().is_some_and(|r| r.contains("fenc")) => {
                ShownState::Fenced
            }
            HostState::PoweredOff => ShownState::PoweredOff,
            HostState::Lost => ShownState::Down,
            HostState::Starting => ShownState::Starting,
            HostState::Stopped => ShownState::Stopped,
            HostState::Connected if has(FaultKind::NicDown) => ShownState::Down,
            HostState::Connected if has(FaultKind::ProcessHang) => ShownState::Hung,
            HostState::Connected => ShownState::Up,
        }
    }

    /// The state word of a host (see [`HostsPanel::shown_state`]).
    pub fn state_word(&self, h: &HostRecord) -> &'static str {
        self.shown_state(h).as_str()
    }

    /// The host holding the service address, as the hosts report it (the topology's primary
    /// until a mode with a takeover moves it), while it is up and its links are.
    pub fn vip_owner(&self) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.record.holds_service_address)
            .filter(|h| !matches!(h.record.state, HostState::PoweredOff | HostState::Lost))
            .filter(|h| {
                !self
                    .faults
                    .iter()
                    .any(|f| f.host == h.record.name && f.kind == FaultKind::NicDown)
            })
            .map(|h| h.record.name.as_str())
    }

    fn fault_text(&self, host: &str) -> String {
        self.faults
            .iter()
            .filter(|f| f.host == host)
            .map(|f| {
                if f.pending {
                    return format!("{}…", f.label);
                }
                let held_s = self.now_ns.saturating_sub(f.since_ns) / 1_000_000_000;
                match f.lease_ms {
                    Some(l) => format!(
                        "{} {} left",
                        f.label,
                        secs((l / 1000).saturating_sub(held_s))
                    ),
                    None => format!("{} {}", f.label, secs(held_s)),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Component for HostsPanel {
    fn handle_event(&mut self, key: KeyEvent) -> Option<Action> {
        let host = self.selected_host().map(str::to_string);
        let fault = |fault: FaultKey| host.clone().map(|host| Action::Fault { host, fault });
        match key.code {
            KeyCode::Up | KeyCode::BackTab => Some(Action::SelectPrev),
            KeyCode::Down | KeyCode::Tab => Some(Action::SelectNext),
            KeyCode::Char('k') => fault(FaultKey::Kill),
            KeyCode::Char('h') => fault(FaultKey::Hang),
            KeyCode::Char('c') => fault(FaultKey::Crash),
            KeyCode::Char('n') => fault(FaultKey::NicDown),
            KeyCode::Char('p') => fault(FaultKey::PowerOff),
            KeyCode::Char('o') => fault(FaultKey::PowerOn),
            KeyCode::Char('r') => fault(FaultKey::RevertAll),
            KeyCode::Char('l') => host.map(|host| Action::AskLoss { host }),
            KeyCode::Char('d') => host.map(|host| Action::AskDelay { host }),
            KeyCode::Char('x') => host.map(|host| Action::AskPartition { host }),
            _ => None,
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect) {
        let vip = self.vip_owner();
        // Rows that fit under the border and header; the window follows the selection.
        let fit = (area.height.saturating_sub(3) as usize).max(1);
        let skip = (self.selected + 1).saturating_sub(fit);
        let rows = self
            .hosts
            .iter()
            .enumerate()
            .skip(skip)
            .take(fit)
            .map(|(i, h)| {
                let r = &h.record;
                let shown = self.shown_state(r);
                let state = shown.as_str();
                let state_style = match shown {
                    ShownState::Up => Style::new().fg(Color::Green),
                    ShownState::Starting | ShownState::Stopped => Style::new().fg(Color::Yellow),
                    _ => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                };
                let roles = r
                    .roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                let (cpu, mem) = match h.stats {
                    Some((c, used, _)) if state != "powered-off" => {
                        (format!("{c:.0}%"), bytes(used))
                    }
                    _ => ("-".into(), "-".into()),
                };
                let row = Row::new(vec![
                    Cell::from(if i == self.selected { "▶" } else { " " }),
                    Cell::from(r.name.clone()),
                    Cell::from(roles),
                    Cell::from(state).style(state_style),
                    Cell::from(if vip == Some(r.name.as_str()) {
                        "VIP"
                    } else {
                        ""
                    }),
                    Cell::from(cpu),
                    Cell::from(mem),
                    Cell::from(self.fault_text(&r.name)).style(Style::new().fg(Color::Red)),
                ]);
                if i == self.selected {
                    row.style(Style::new().add_modifier(Modifier::REVERSED))
                } else {
                    row
                }
            });
        let widths = [
            Constraint::Length(1),
            Constraint::Length(10),
            Constraint::Length(14),
            Constraint::Length(11),
            Constraint::Length(3),
            Constraint::Length(4),
            Constraint::Length(5),
            Constraint::Fill(1),
        ];
        let header = Row::new(vec![
            "", "host", "roles", "state", "vip", "cpu", "mem", "faults",
        ])
        .style(Style::new().bold());
        let up = self
            .hosts
            .iter()
            .filter(|h| self.shown_state(&h.record) == ShownState::Up)
            .count();
        let table = Table::new(rows, widths).header(header).block(
            Block::bordered().title(Line::from(format!(" hosts {up}/{} up ", self.hosts.len()))),
        );
        frame.render_widget(table, area);
    }
}
