//! The dashboard's state: its panels, the prompt or overlay open, and how orchestrator updates
//! change them. Pure: time comes in as arguments, nothing here does I/O, so every state can
//! be built in a test and drawn on a test backend.

use super::action::{Action, Command, Level, ModeView, Update};
use super::components::Component;
use super::components::chart::ThroughputChart;
use super::components::failover::FailoverTable;
use super::components::help::HelpOverlay;
use super::components::hosts::{ActiveFault, HostsPanel};
use super::components::log::EventLog;
use super::components::prompt::Prompt;
use super::components::status::StatusBar;
use crate::state::{HostRecord, HostState};
use crate::topology::Topology;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use halab_protocol::{AgentMsg, Role};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The smallest terminal the dashboard draws in.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// The whole dashboard.
pub struct App {
    pub hosts: HostsPanel,
    pub chart: ThroughputChart,
    pub failovers: FailoverTable,
    pub log: EventLog,
    pub status: StatusBar,
    pub help: HelpOverlay,
    pub prompt: Option<Prompt>,
    /// Experiment files `e` offers (listed before the loop starts).
    pub experiments: Vec<PathBuf>,
    /// Client run in progress per client host, with the bytes it reported last.
    runs: BTreeMap<String, (u64, u64)>,
    /// The testbed is down: the loop ends.
    pub finished: Option<Result<String, String>>,
    pub now_ns: u64,
}

fn heartbeat_text(topo: &Topology) -> String {
    match (topo.run.heartbeat_ms, topo.run.missed_heartbeats) {
        (Some(ms), Some(n)) => format!("heartbeat {ms} ms × {n}"),
        (Some(ms), None) => format!("heartbeat {ms} ms"),
        _ => "no heartbeat".into(),
    }
}

/// What the workload of `topo` is, in a few words.
pub fn workload_text(topo: &Topology) -> String {
    let s = &topo.run;
    match (s.workload.has_size(), s.size) {
        (true, Some(n)) => format!("{} {}", s.workload, super::components::bytes(n)),
        _ => s.workload.to_string(),
    }
}

impl App {
    /// A dashboard for `topo` whose hosts are `hosts`, started at `start_ns` (console clock).
    pub fn new(
        topo: &Topology,
        hosts: Vec<HostRecord>,
        experiments: Vec<PathBuf>,
        start_ns: u64,
    ) -> App {
        let clients: Vec<String> = topo
            .hosts_with(Role::Client)
            .map(|h| h.name.clone())
            .collect();
        App {
            hosts: HostsPanel::new(hosts),
            chart: ThroughputChart::new(start_ns, clients),
            failovers: FailoverTable::for_mode(topo.run.mode),
            log: EventLog::new(start_ns),
            status: StatusBar {
                testbed: topo.name.clone(),
                mode: ModeView {
                    current: topo.run.mode,
                    switching: None,
                    note: None,
                },
                heartbeat: heartbeat_text(topo),
                workload_running: false,
                workload: format!("{} stopped", workload_text(topo)),
                experiment: None,
                quitting: false,
            },
            help: HelpOverlay::default(),
            prompt: None,
            experiments,
            runs: BTreeMap::new(),
            finished: None,
            now_ns: start_ns,
        }
    }

    pub fn tick(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
        self.hosts.now_ns = now_ns;
        self.chart.now_ns = now_ns;
    }

    fn info(&mut self, level: Level, text: impl Into<String>) {
        self.log.push(self.now_ns, level, text);
    }

    /// An agent's monotonic reading on the console's clock.
    fn console_ns(&self, host: &str, agent_ns: u64) -> u64 {
        let offset = self
            .hosts
            .record(host)
            .and_then(|h| h.clock_offset_ns)
            .unwrap_or(0);
        (agent_ns as i128 - offset as i128).max(0) as u64
    }

    /// The client hosts running the workload now.
    fn loaded_clients(&self) -> BTreeSet<String> {
        self.runs.keys().cloned().collect()
    }

    /// Takes in what the orchestrator reports, at `now_ns`.
    pub fn apply(&mut self, update: Update, now_ns: u64) {
        self.tick(now_ns);
        match update {
            Update::Hosts(records) => {
                for r in &records {
                    let before = self.hosts.record(&r.name).map(|h| h.state);
                    if before.is_some() && before != Some(r.state) {
                        let why = r
                            .reason
                            .as_ref()
                            .map(|w| format!(": {w}"))
                            .unwrap_or_default();
                        let level = if r.state == HostState::Connected {
                            Level::Info
                        } else {
                            Level::Warn
                        };
                        self.info(level, format!("{} is {}{why}", r.name, r.state));
                    }
                }
                self.hosts.set_records(records);
            }
            Update::Agent { host, msg } => self.agent(host, msg),
            Update::FaultSent {
                id,
                host,
                kind,
                label,
                lease_ms,
            } => {
                self.info(Level::Info, format!("{label} on {host}: sent"));
                self.hosts.faults.push(ActiveFault {
                    id,
                    host,
                    kind,
                    label,
                    pending: true,
                    since_ns: now_ns,
                    lease_ms,
                });
            }
            Update::PoweredOff { id, host, at_ns } => {
                self.info(
                    Level::Warn,
                    format!("{host} powered off: links down, every process killed"),
                );
                // The agent died with its host: what it held on the host is gone with it.
                self.hosts.faults.retain(|f| f.host != host);
                self.hosts.faults.push(ActiveFault {
                    id,
                    host: host.clone(),
                    kind: crate::experiment::FaultKind::PowerOff,
                    label: "power-off".into(),
                    pending: false,
                    since_ns: at_ns,
                    lease_ms: None,
                });
                // A client host that is off reports nothing more.
                if self.runs.remove(&host).is_some() {
                    self.failovers.client_gone(&host);
                }
                let clients = self.loaded_clients();
                self.failovers
                    .fault(id, format!("power-off {host}"), at_ns, clients);
                self.chart.markers = self.failovers.markers();
            }
            Update::PoweredOn { host } => {
                self.info(
                    Level::Info,
                    format!("{host} powered on: agent and roles started"),
                );
                self.hosts
                    .faults
                    .retain(|f| !(f.host == host && f.label == "power-off"));
            }
            Update::RunStarted { host, run } => {
                self.runs.insert(host, (run, 0));
            }
            Update::Workload { running, detail } => {
                self.status.workload_running = running;
                self.status.workload = detail.clone();
                self.info(
                    if running { Level::Info } else { Level::Warn },
                    format!("workload: {detail}"),
                );
            }
            Update::Mode(m) => {
                // A refused switch (a note) was logged in full by the orchestrator.
                if m.note.is_none() {
                    if let Some(to) = m.switching {
                        self.info(
                            Level::Info,
                            format!("switching to mode {to}: redeploying roles"),
                        );
                    } else if self.status.mode.switching.is_some() {
                        self.info(Level::Info, format!("mode {} active", m.current));
                    }
                }
                self.failovers.columns = m.current.behaviour().failover_columns();
                self.status.mode = m;
            }
            Update::Experiment(e) => {
                self.status.experiment = Some(e);
            }
            Update::ExperimentRecord(r) => {
                self.info(
                    Level::Info,
                    format!(
                        "experiment run {}: {}",
                        r.run_index,
                        crate::run::one_line::summary(&r)
                    ),
                );
                self.failovers.record(&r);
            }
            Update::Log(level, text) => self.info(level, text),
            Update::Down(r) => {
                self.finished = Some(r);
            }
        }
    }

    fn agent(&mut self, host: String, msg: AgentMsg) {
        match msg {
            AgentMsg::HostStats {
                cpu_pct,
                mem_used_bytes,
                mem_total_bytes,
            } => {
                self.hosts
                    .set_stats(&host, (cpu_pct, mem_used_bytes, mem_total_bytes));
            }
            AgentMsg::ClientTelemetry {
                run,
                at_ns,
                bytes,
                mut events,
            } => {
                let at = self.console_ns(&host, at_ns);
                for e in &mut events {
                    e.at_ns = self.console_ns(&host, e.at_ns);
                }
                let Some((current, last)) = self.runs.get_mut(&host) else {
                    return;
                };
                if *current != run {
                    return;
                }
                let delta = bytes.saturating_sub(*last);
                *last = bytes;
                self.chart.add(&host, at, delta);
                self.failovers
                    .telemetry(&host, &events, (delta > 0).then_some(at));
                for e in &events {
                    if !matches!(e.event, halab_workload::ConnEvent::Connected) {
                        self.log.push(
                            self.now_ns,
                            Level::Info,
                            format!("{host} connection {}: {:?}", e.connection, e.event),
                        );
                    }
                }
                self.chart.markers = self.failovers.markers();
            }
            AgentMsg::ClientDone { run, result } => {
                let Some((current, last)) = self.runs.get(&host).copied() else {
                    return;
                };
                if current != run {
                    return;
                }
                self.runs.remove(&host);
                let offset = self
                    .hosts
                    .record(&host)
                    .and_then(|h| h.clock_offset_ns)
                    .unwrap_or(0);
                let shifted = crate::lab::clock::shift_result_by(*result, offset);
                let total: u64 = shifted.connections.iter().map(|c| c.meter.bytes).sum();
                self.chart
                    .add(&host, shifted.ended_ns, total.saturating_sub(last));
                if let Some(e) = shifted.connections.iter().find_map(|c| c.error.clone())
                    && e != halab_protocol::message::ConnError::Stopped
                {
                    self.info(Level::Warn, format!("{host} run {run}: {e}"));
                }
                self.failovers.client_done(&host, &shifted);
                self.chart.markers = self.failovers.markers();
            }
            AgentMsg::FaultApplied { id, at_ns, detail } => {
                let at = self.console_ns(&host, at_ns);
                let mut label = None;
                if let Some(f) = self.hosts.faults.iter_mut().find(|f| f.id == id) {
                    f.pending = false;
                    f.since_ns = at;
                    label = Some(f.label.clone());
                }
                self.info(Level::Warn, format!("{host}: {detail}"));
                if let Some(label) = label {
                    let clients = self.loaded_clients();
                    self.failovers
                        .fault(id, format!("{label} {host}"), at, clients);
                    self.chart.markers = self.failovers.markers();
                }
            }
            AgentMsg::FaultFailed { id, error } => {
                self.hosts.faults.retain(|f| f.id != id);
                self.info(Level::Error, format!("{host}: fault failed: {error}"));
            }
            AgentMsg::FaultReverted { id, reason, .. } => {
                if let Some(f) = self.hosts.faults.iter().find(|f| f.id == id) {
                    let text = format!("{} on {host} reverted ({reason})", f.label);
                    self.hosts.faults.retain(|f| f.id != id);
                    self.info(Level::Info, text);
                }
            }
            AgentMsg::RoleState {
                role,
                state,
                detail,
                ..
            } => {
                let d = detail.map(|d| format!(": {d}")).unwrap_or_default();
                let level = if state == halab_protocol::RoleState::Failed {
                    Level::Error
                } else {
                    Level::Info
                };
                self.info(level, format!("{host} {role} {state:?}{d}").to_lowercase());
            }
            AgentMsg::Mode { event } => {
                let at = self.console_ns(&host, event.at_ns());
                self.failovers.mode_event(event.kind(), at);
                self.chart.markers = self.failovers.markers();
            }
            AgentMsg::Error { message } => self.info(Level::Error, format!("{host}: {message}")),
            _ => {}
        }
    }

    /// What a key means now: the prompt first, then the help, then the global keys, then the
    /// hosts panel.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        if self.status.quitting {
            return None;
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Some(Action::RequestQuit);
        }
        if let Some(p) = &mut self.prompt {
            return p.handle_event(key);
        }
        if self.help.visible {
            return self.help.handle_event(key);
        }
        match key.code {
            KeyCode::Char('w') => Some(Action::ToggleWorkload),
            KeyCode::Char('m') => Some(Action::SwitchMode),
            KeyCode::Char('e') => Some(Action::PickExperiment),
            KeyCode::Char('?') => Some(Action::ToggleHelp),
            KeyCode::Char('q') => Some(Action::RequestQuit),
            _ => self.hosts.handle_event(key),
        }
    }

    /// Carries out `action`: state changes here, work for the orchestrator returned.
    pub fn dispatch(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::SelectPrev => self.hosts.select(-1),
            Action::SelectNext => self.hosts.select(1),
            Action::Fault { host, fault } => {
                self.prompt = None;
                return vec![Command::Fault { host, fault }];
            }
            Action::AskLoss { host } => {
                self.prompt = Some(Prompt::Loss {
                    host,
                    input: String::new(),
                    error: None,
                });
            }
            Action::AskDelay { host } => {
                self.prompt = Some(Prompt::Delay {
                    host,
                    input: String::new(),
                    error: None,
                });
            }
            Action::AskPartition { host } => {
                let peers = self
                    .hosts
                    .hosts
                    .iter()
                    .map(|h| h.record.name.clone())
                    .filter(|n| *n != host)
                    .collect();
                self.prompt = Some(Prompt::Partition {
                    host,
                    peers,
                    selected: 0,
                });
            }
            Action::ToggleWorkload => return vec![Command::ToggleWorkload],
            Action::SwitchMode => return vec![Command::SwitchMode],
            Action::PickExperiment => {
                self.prompt = Some(Prompt::Experiment {
                    files: self.experiments.clone(),
                    selected: 0,
                });
            }
            Action::RunExperiment(path) => {
                self.prompt = None;
                return vec![Command::RunExperiment(path)];
            }
            Action::ToggleHelp => self.help.visible = !self.help.visible,
            Action::Close => self.prompt = None,
            Action::RequestQuit => {
                let faults = self.hosts.active_faults();
                if faults > 0 && !matches!(self.prompt, Some(Prompt::ConfirmQuit { .. })) {
                    self.help.visible = false;
                    self.prompt = Some(Prompt::ConfirmQuit { faults });
                } else {
                    return self.dispatch(Action::Quit);
                }
            }
            Action::Quit => {
                self.prompt = None;
                self.help.visible = false;
                self.status.quitting = true;
                self.info(Level::Info, "quitting: tearing the testbed down");
                return vec![Command::Shutdown];
            }
        }
        Vec::new()
    }

    /// Draws the whole dashboard into `frame`.
    pub fn draw(&self, frame: &mut Frame) {
        let area = frame.area();
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            let msg = vec![
                Line::from("terminal too small").bold(),
                Line::from(format!(
                    "{}×{}, need {MIN_WIDTH}×{MIN_HEIGHT}",
                    area.width, area.height
                )),
                Line::from("q quits"),
            ];
            frame.render_widget(
                Paragraph::new(msg)
                    .style(Style::new().fg(Color::Yellow))
                    .centered()
                    .block(Block::new()),
                Rect {
                    y: area.y + area.height.saturating_sub(3) / 2,
                    height: area.height.min(3),
                    ..area
                },
            );
            return;
        }
        let host_rows = self.hosts.hosts.len() as u16 + 3;
        let fail_rows = (self.failovers.rows.len().max(1) as u16 + 3).min(8);
        let [top, middle, fail, bottom] = Layout::vertical([
            Constraint::Length(host_rows.min(area.height / 3).max(5)),
            Constraint::Min(7),
            Constraint::Length(fail_rows),
            Constraint::Length(2),
        ])
        .areas(area);
        self.hosts.draw(frame, top);
        if middle.width >= 120 {
            let [c, l] =
                Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                    .areas(middle);
            self.chart.draw(frame, c);
            self.log.draw(frame, l);
        } else {
            let [c, l] = Layout::vertical([Constraint::Fill(3), Constraint::Fill(2)]).areas(middle);
            self.chart.draw(frame, c);
            self.log.draw(frame, l);
        }
        self.failovers.draw(frame, fail);
        self.status.draw(frame, bottom);
        self.help.draw(frame, area);
        if let Some(p) = &self.prompt {
            p.draw(frame, area);
        }
    }
}

/// Keys for `FaultKey`s, for tests and the benchmark.
pub fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}
