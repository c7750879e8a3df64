//! The orchestrator task of the dashboard: it owns the [`Testbed`] and its inbox, carries out
//! the UI's [`Command`]s (faults, power, the workload, mode switches, experiments) and reports
//! everything back as [`Update`]s. All the dashboard's I/O happens here, never on the UI loop.

use super::action::{Command, ExperimentView, FaultKey, Level, ModeView, Update};
use super::app::workload_text;
use crate::experiment::{self, FaultKind};
use crate::lab::client::{client_spec, seed_for};
use crate::lab::faults::{self, FaultParams, Fired, process_role};
use crate::lab::handle::{Inbox, Lab};
use crate::lab::{mode_events, switch};
use crate::run::append_record;
use crate::run::runner::{Runner, check_capabilities, check_mode, check_supported};
use crate::state::HostState;
use crate::testbed::{StateView, Testbed, TestbedError, Timings};
use crate::topology::{Mode, RunSettings};
use halab_protocol::{AgentMsg, ConsoleMsg, Role};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Lease of a fault put on by a key: the agent reverts it by itself after this long, so a
/// forgotten fault does not outlive the session's attention (`r` reverts it sooner).
pub const FAULT_LEASE_MS: u64 = 300_000;
/// One client run of the dashboard's workload may last this long.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// A run that failed is followed by the next after this pause, so a testbed with every server
/// down is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long stopped client runs may take to report.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Orchestrator {
    testbed: Testbed,
    inbox: Inbox,
    updates: mpsc::UnboundedSender<Update>,
    changes: watch::Receiver<u64>,
    /// The testbed's state, readable while an experiment's runner holds the testbed.
    view: StateView,
    settings: RunSettings,
    /// Where experiment records go.
    results: PathBuf,
    next_id: u64,
    /// Agent faults applied or sent and not reverted: id → host.
    held: BTreeMap<u64, String>,
    workload: bool,
    /// Client run in progress per client host.
    runs: BTreeMap<String, u64>,
    /// Client hosts waiting for their next run.
    restart_at: BTreeMap<String, Instant>,
    /// Mode none: the server each client host last got its bytes from, tried first next time,
    /// as a traditional client keeps to the server that answered.
    preferred: BTreeMap<String, String>,
    /// The last mode `m` tried.
    mode_cursor: Mode,
}

impl Orchestrator {
    /// Takes the testbed's inbox; fails if it is already taken.
    pub fn new(
        mut testbed: Testbed,
        updates: mpsc::UnboundedSender<Update>,
        results: PathBuf,
    ) -> Result<Orchestrator, TestbedError> {
        let inbox = testbed
            .take_inbox()
            .ok_or_else(|| TestbedError::Internal("the testbed's inbox is taken".into()))?;
        let changes = testbed.subscribe();
        let view = testbed.state_view();
        let settings = testbed.topology.run.clone();
        Ok(Orchestrator {
            mode_cursor: settings.mode,
            testbed,
            inbox,
            updates,
            changes,
            view,
            settings,
            results,
            next_id: 1,
            held: BTreeMap::new(),
            workload: false,
            runs: BTreeMap::new(),
            restart_at: BTreeMap::new(),
            preferred: BTreeMap::new(),
        })
    }

    fn send(&self, u: Update) {
        // The UI is gone only when the dashboard is closing: nothing left to tell.
        let _ = self.updates.send(u);
    }

    fn log(&self, level: Level, text: impl Into<String>) {
        self.send(Update::Log(level, text.into()));
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send_hosts(&self) {
        self.send(Update::Hosts(self.view.snapshot().hosts));
    }

    fn lab(&mut self) -> Lab<'_> {
        Lab::new(&mut self.testbed, &mut self.inbox)
    }

    /// Messages the lab set aside while it waited, handled as if they had just arrived.
    async fn handle_set_aside(&mut self, aside: Vec<(String, AgentMsg)>) {
        for (host, msg) in aside {
            self.on_agent(host, msg).await;
        }
    }

    /// Serves commands until `Shutdown` (or the UI is gone), then takes the testbed down.
    pub async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> Result<Timings, TestbedError> {
        self.send_hosts();
        if let Err(e) = check_mode(self.settings.mode) {
            self.log(Level::Warn, format!("{e}; press m to switch mode"));
            self.send(Update::Mode(ModeView {
                current: self.settings.mode,
                switching: None,
                note: Some("not runnable yet, m switches".into()),
            }));
        }
        loop {
            let next_restart = self.restart_at.values().min().copied();
            tokio::select! {
                c = commands.recv() => match c {
                    None | Some(Command::Shutdown) => break,
                    Some(c) => if self.handle(c, &mut commands).await {
                        break;
                    },
                },
                m = self.inbox.recv() => match m {
                    Some((host, msg)) => self.on_agent(host, msg).await,
                    None => {
                        self.log(Level::Error, "every agent is gone");
                        // Nothing more will come; wait for the quit.
                        if let Some(Command::Shutdown) | None = commands.recv().await {
                            break;
                        }
                    }
                },
                r = self.changes.changed() => {
                    if r.is_ok() {
                        self.send_hosts();
                    }
                }
                _ = tokio::time::sleep_until(next_restart.unwrap_or_else(Instant::now)), if next_restart.is_some() => {
                    let now = Instant::now();
                    let due: Vec<String> = self.restart_at.iter().filter(|(_, t)| **t <= now).map(|(h, _)| h.clone()).collect();
                    for h in due {
                        self.restart_at.remove(&h);
                        if self.workload {
                            self.start_run(&h).await;
                        }
                    }
                }
            }
        }
        self.stop_workload(false).await;
        let name = self.testbed.topology.name.clone();
        let outcome = self.testbed.down().await;
        let _ = self.updates.send(Update::Down(match &outcome {
            Ok(t) => Ok(format!(
                "testbed {name} is down in {:.2} s",
                t.total.as_secs_f64()
            )),
            Err(e) => Err(crate::error::chain(e)),
        }));
        outcome
    }

    /// Carries out one command; true when a shutdown arrived meanwhile.
    async fn handle(
        &mut self,
        c: Command,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        match c {
            Command::Fault { host, fault } => self.fault(host, fault).await,
            Command::ToggleWorkload => {
                if self.workload {
                    self.stop_workload(true).await;
                } else {
                    self.start_workload().await;
                }
            }
            Command::SwitchMode => self.switch_mode().await,
            Command::RunExperiment(path) => return self.experiment(&path, commands).await,
            Command::Shutdown => return true,
        }
        false
    }

    /// A message from an agent: passed on to the UI, and the workload's next run started
    /// when one ends.
    async fn on_agent(&mut self, host: String, msg: AgentMsg) {
        let mut next = None;
        match &msg {
            AgentMsg::FaultReverted { id, .. } | AgentMsg::FaultFailed { id, .. } => {
                self.held.remove(id);
            }
            AgentMsg::Mode { event } => {
                // The mode's console side acts on it (a backup asking for its primary to be
                // fenced), as during a headless run; the event goes to the log.
                let handled = mode_events::handle(&mut self.lab(), &host, event).await;
                match handled.error {
                    None => self.log(
                        Level::Info,
                        format!("{host}: {} {}", handled.kind, handled.detail),
                    ),
                    Some(e) => self.log(
                        Level::Warn,
                        format!("{host}: {} {}: {e}", handled.kind, handled.detail),
                    ),
                }
                self.send_hosts();
            }
            AgentMsg::ClientDone { run, result } if self.runs.get(&host) == Some(run) => {
                self.runs.remove(&host);
                let failed = result.connections.iter().any(|c| c.error.is_some());
                if let Some(server) = result
                    .connections
                    .iter()
                    .filter(|c| c.error.is_none())
                    .find_map(|c| c.servers_used.last().cloned())
                {
                    self.preferred.insert(host.clone(), server);
                }
                if self.workload {
                    next = Some(failed);
                }
            }
            _ => {}
        }
        self.send(Update::Agent {
            host: host.clone(),
            msg,
        });
        match next {
            Some(false) => self.start_run(&host).await,
            Some(true) => {
                self.restart_at.insert(host, Instant::now() + RETRY_PAUSE);
            }
            None => {}
        }
    }

    fn client_hosts(&self) -> Vec<String> {
        let snap = self.testbed.snapshot();
        self.testbed
            .topology
            .hosts_with(Role::Client)
            .filter(|h| {
                snap.hosts
                    .iter()
                    .any(|r| r.name == h.name && r.state == HostState::Connected)
            })
            .map(|h| h.name.clone())
            .collect()
    }

    async fn start_workload(&mut self) {
        if let Err(e) = check_mode(self.settings.mode) {
            self.log(Level::Warn, format!("workload not started: {e}"));
            self.send(Update::Workload {
                running: false,
                detail: format!(
                    "{} stopped (mode {} not runnable yet, m switches)",
                    workload_text(&self.testbed.topology),
                    self.settings.mode
                ),
            });
            return;
        }
        let clients = self.client_hosts();
        if clients.is_empty() {
            self.send(Update::Workload {
                running: false,
                detail: "stopped: no client host is up".into(),
            });
            return;
        }
        self.workload = true;
        self.send(Update::Workload {
            running: true,
            detail: format!(
                "{} on {} client(s)",
                workload_text(&self.testbed.topology),
                clients.len()
            ),
        });
        for h in clients {
            self.start_run(&h).await;
        }
    }

    async fn start_run(&mut self, host: &str) {
        if self.runs.contains_key(host) {
            return;
        }
        let run = self.fresh_id();
        let seed = seed_for("dashboard", run as usize, crate::state::unix_ms());
        let mut spec = client_spec(
            &self.testbed.topology,
            &self.settings,
            seed,
            RUN_TIMEOUT,
            self.testbed.mode().clone(),
        );
        if self
            .settings
            .mode
            .behaviour()
            .client_policy()
            .keep_last_server
            && let Some(p) = self.preferred.get(host)
            && let Some(i) = spec.servers.iter().position(|s| s == p)
        {
            spec.servers.rotate_left(i);
        }
        match self
            .testbed
            .send(host, ConsoleMsg::StartClient { run, spec })
            .await
        {
            Ok(()) => {
                self.runs.insert(host.to_string(), run);
                self.send(Update::RunStarted {
                    host: host.to_string(),
                    run,
                });
            }
            Err(e) => self.log(
                Level::Error,
                format!(
                    "{host}: cannot start the client: {}",
                    crate::error::chain(&e)
                ),
            ),
        }
    }

    /// Stops every client run; with `wait`, waits (a bounded time) for their last reports.
    async fn stop_workload(&mut self, wait: bool) {
        let was = self.workload;
        self.workload = false;
        self.restart_at.clear();
        for (host, run) in self.runs.clone() {
            let _ = self
                .testbed
                .send(&host, ConsoleMsg::StopClient { run })
                .await;
        }
        if was {
            self.send(Update::Workload {
                running: false,
                detail: format!("{} stopped", workload_text(&self.testbed.topology)),
            });
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while wait && !self.runs.is_empty() {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some((host, msg))) => self.on_agent(host, msg).await,
                Ok(None) | Err(_) => break,
            }
        }
    }

    async fn fault(&mut self, host: String, fault: FaultKey) {
        if self.testbed.topology.host(&host).is_none() {
            return;
        }
        let state = self
            .testbed
            .snapshot()
            .hosts
            .iter()
            .find(|r| r.name == host)
            .map(|r| r.state);
        let mut params = FaultParams::default();
        let kind = match &fault {
            FaultKey::PowerOff => {
                if state == Some(HostState::PoweredOff) {
                    self.log(Level::Warn, format!("{host} is already powered off"));
                    return;
                }
                FaultKind::PowerOff
            }
            FaultKey::PowerOn => {
                self.power_on(&host, state).await;
                return;
            }
            FaultKey::RevertAll => {
                self.revert_all(&host, state).await;
                return;
            }
            FaultKey::Kill => FaultKind::ProcessKill,
            FaultKey::Hang => FaultKind::ProcessHang,
            FaultKey::Crash => FaultKind::ProcessCrash,
            FaultKey::NicDown => FaultKind::NicDown,
            FaultKey::Loss(p) => {
                params.percent = Some(*p);
                params.direction = Some(experiment::Direction::Both);
                FaultKind::Loss
            }
            FaultKey::Delay(ms) => {
                params.delay_ms = Some(*ms);
                params.direction = Some(experiment::Direction::In);
                FaultKind::Delay
            }
            FaultKey::Partition(peer) => {
                params.peer = Some(peer.clone());
                FaultKind::Partition
            }
        };
        let process = matches!(
            kind,
            FaultKind::ProcessKill | FaultKind::ProcessHang | FaultKind::ProcessCrash
        );
        if process && process_role(&self.lab(), &host).is_none() {
            self.log(
                Level::Warn,
                format!(
                    "{host} runs no server process: {} needs a primary or backup",
                    fault.label()
                ),
            );
            return;
        }
        if kind != FaultKind::PowerOff && state != Some(HostState::Connected) {
            self.log(
                Level::Warn,
                format!("{host} is not up: {} not sent", fault.label()),
            );
            return;
        }
        let id = self.fresh_id();
        // Power is the console's and ends with the session; agent faults carry a lease.
        let lease_ms = (kind != FaultKind::PowerOff).then_some(FAULT_LEASE_MS);
        let fired = faults::fire(&mut self.lab(), &host, kind, &params, id, lease_ms).await;
        match fired {
            Ok(Fired::Done { at_ns, .. }) => {
                // The agent died with the host; what it held went with it.
                self.held.retain(|_, h| *h != host);
                self.runs.remove(&host);
                self.send(Update::PoweredOff { id, host, at_ns });
            }
            Ok(Fired::Agent { .. }) => {
                self.held.insert(id, host.clone());
                self.send(Update::FaultSent {
                    id,
                    host,
                    kind,
                    label: fault.label(),
                    lease_ms,
                });
            }
            Err(e) if kind == FaultKind::PowerOff => {
                self.log(Level::Error, format!("power-off of {host}: {e}"))
            }
            Err(e) => self.log(Level::Error, format!("{} on {host}: {e}", fault.label())),
        }
    }

    /// `r`: every fault held on `host` reverted, and the host powered on if it is off.
    async fn revert_all(&mut self, host: &str, state: Option<HostState>) {
        let ids: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| *h == host)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Err(e) = faults::revert(&self.lab(), host, *id).await {
                self.log(Level::Error, format!("revert on {host}: {e}"));
            }
        }
        if state == Some(HostState::PoweredOff) {
            self.power_on(host, state).await;
        } else if ids.is_empty() {
            self.log(Level::Info, format!("nothing to revert on {host}"));
        }
    }

    async fn power_on(&mut self, host: &str, state: Option<HostState>) {
        if state != Some(HostState::PoweredOff) {
            self.log(Level::Warn, format!("{host} is not powered off"));
            return;
        }
        let id = self.fresh_id();
        let fired = faults::fire(
            &mut self.lab(),
            host,
            FaultKind::PowerOn,
            &FaultParams::default(),
            id,
            None,
        )
        .await;
        match fired {
            Ok(_) => self.send(Update::PoweredOn {
                host: host.to_string(),
            }),
            Err(e) => self.log(Level::Error, format!("power-on of {host}: {e}")),
        }
    }

    /// `m`: the next mode of the cycle; its roles redeployed if this version runs it, a note
    /// saying so if not.
    async fn switch_mode(&mut self) {
        let target = self.mode_cursor.next();
        self.mode_cursor = target;
        let settings = RunSettings {
            mode: target,
            ..self.settings.clone()
        };
        let topo = &self.testbed.topology;
        if let Err(e) = crate::modes::config_for(topo, &settings, self.testbed.mode_key()) {
            self.log(
                Level::Warn,
                format!("mode {target} not switched to: {e}; m tries the next"),
            );
            self.send(Update::Mode(ModeView {
                current: self.settings.mode,
                switching: None,
                note: Some(format!("{target}: not runnable yet")),
            }));
            return;
        }
        self.send(Update::Mode(ModeView {
            current: self.settings.mode,
            switching: Some(target),
            note: None,
        }));
        let was_running = self.workload;
        self.stop_workload(true).await;
        let mut lab = self.lab();
        let outcome = switch::switch_mode(&mut lab, &settings).await;
        let aside = lab.take_set_aside();
        self.handle_set_aside(aside).await;
        let note = outcome
            .err()
            .map(|e| format!("roles not running after the switch: {e}"));
        self.settings.mode = target;
        self.send(Update::Mode(ModeView {
            current: target,
            switching: None,
            note,
        }));
        if was_running {
            self.start_workload().await;
        }
    }

    /// `e`: runs an experiment on this testbed, its records appended to the session's
    /// results file; true when a shutdown arrived meanwhile.
    async fn experiment(
        &mut self,
        path: &Path,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        let exp = match experiment::load(path) {
            Ok(e) => e,
            Err(e) => {
                let text = e.to_string();
                self.log(
                    Level::Error,
                    format!(
                        "{}: {}",
                        path.display(),
                        text.lines().next().unwrap_or_default()
                    ),
                );
                return false;
            }
        };
        if exp.topology.name != self.testbed.topology.name {
            self.log(
                Level::Error,
                format!(
                    "experiment {} is for testbed {}, this is {}",
                    exp.name, exp.topology.name, self.testbed.topology.name
                ),
            );
            return false;
        }
        if let Err(e) =
            check_supported(&exp).and_then(|()| check_capabilities(&exp, &self.testbed.snapshot()))
        {
            self.log(Level::Error, format!("experiment {}: {e}", exp.name));
            return false;
        }
        self.stop_workload(true).await;
        let plans = exp.runs();
        let total = plans.len();
        let mut view = ExperimentView {
            name: exp.name.clone(),
            done: 0,
            total,
            current: "starting".into(),
            finished: false,
        };
        self.send(Update::Experiment(view.clone()));
        self.log(
            Level::Info,
            format!(
                "experiment {}: {total} runs, records to {}",
                exp.name,
                self.results.display()
            ),
        );
        let (tee, runner_inbox) = mpsc::unbounded_channel();
        let mut failed = 0;
        let mut shutdown = false;
        {
            let Orchestrator {
                testbed,
                inbox,
                updates,
                results,
                changes,
                view: state,
                ..
            } = self;
            let mut runner = Runner::with_inbox(testbed, &exp, runner_inbox);
            'plans: for plan in &plans {
                view.current = crate::run::one_line::describe(plan);
                let _ = updates.send(Update::Experiment(view.clone()));
                let fut = runner.execute(plan);
                tokio::pin!(fut);
                let record = loop {
                    tokio::select! {
                        r = &mut fut => break r,
                        m = inbox.recv() => if let Some((host, msg)) = m {
                            // Every message goes to the runner, and a copy to the screen.
                            let _ = tee.send((host.clone(), msg.clone()));
                            let _ = updates.send(Update::Agent { host, msg });
                        },
                        r = changes.changed() => if r.is_ok() {
                            let _ = updates.send(Update::Hosts(state.snapshot().hosts));
                        },
                        c = commands.recv() => match c {
                            None | Some(Command::Shutdown) => {
                                shutdown = true;
                                break 'plans;
                            }
                            Some(_) => {
                                let _ = updates.send(Update::Log(Level::Warn, "an experiment is running: keys wait until it ends (q quits)".into()));
                            }
                        },
                    }
                };
                if record.error.is_some() || !record.integrity.integrity_ok {
                    failed += 1;
                }
                if let Err(e) = append_record(results, &record) {
                    let _ = updates.send(Update::Log(
                        Level::Error,
                        format!("cannot append to {}: {e}", results.display()),
                    ));
                }
                view.done += 1;
                let _ = updates.send(Update::ExperimentRecord(Box::new(record)));
            }
            if !shutdown {
                // The runner waits for the agents' answers on its copy of the inbox.
                let fut = runner.restore_links();
                tokio::pin!(fut);
                let restored = loop {
                    tokio::select! {
                        r = &mut fut => break r,
                        m = inbox.recv() => if let Some((host, msg)) = m {
                            let _ = tee.send((host.clone(), msg.clone()));
                            let _ = updates.send(Update::Agent { host, msg });
                        },
                    }
                };
                if let Err(e) = restored {
                    let _ = updates.send(Update::Log(
                        Level::Error,
                        format!("the topology's links could not be restored: {e}"),
                    ));
                }
            }
        }
        view.finished = !shutdown;
        view.current = if shutdown {
            "interrupted".into()
        } else {
            format!("{failed} failed; {}", self.results.display())
        };
        self.send(Update::Experiment(view));
        self.send_hosts();
        shutdown
    }
}
