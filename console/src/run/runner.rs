//! Executes an experiment's runs on a testbed that is up: servers started per mode, the
//! workload's clients started on the client host, faults fired on schedule, the client's
//! result collected and turned into a [`RunRecord`].
//!
//! Times: every agent reports CLOCK_MONOTONIC readings of its own host. On provider `local`
//! all hosts share one clock; elsewhere each reading is moved onto the console's clock with the
//! offset estimated at hello (DESIGN §4, Clocks) before two hosts' times are subtracted.

use super::record::{DelayLineRecord, FaultRecord, ModeEventRecord, RunRecord};
use crate::experiment::{Experiment, FaultAt, FaultKind, FaultSpec, FaultTarget, RunPlan};
use crate::lab::client::{DEFAULT_SIZE, client_spec, seed_for};
use crate::lab::clock::{ms_between, shift_result, to_console_ns};
use crate::lab::faults::{FaultParams, Fired, holder_of};
use crate::lab::figures::failover_figures;
use crate::lab::handle::{Inbox, Lab};
use crate::lab::{faults, figures, mode_events, roles, switch};
use crate::modes::MeasuredBy;
use crate::state::{HostRecord, TestbedState};
use crate::testbed::{Testbed, TestbedError};
use crate::topology::{Mode, Topology};
use halab_protocol::{
    AgentMsg, ClientResult, ClientSpec, ConsoleMsg, EventKind, HALAB_VERSION, Role, Workload,
};
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

/// How long an agent may take to answer a fault.
const FAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the end of a run waits for mode events still on their way (a takeover finishing
/// its last connections after the client got its bytes).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Failed(String),
}

/// Refuses, before anything is brought up, what this version cannot run.
pub fn check_supported(exp: &Experiment) -> Result<(), RunError> {
    for plan in exp.runs() {
        for f in &plan.faults {
            if !matches!(f.kind, FaultKind::PowerOff | FaultKind::PowerOn) {
                continue;
            }
            let Some(host) = resolve_target(&exp.topology, &f.target) else {
                continue;
            };
            let Some(ssh) = exp.topology.host(&host).and_then(|h| h.ssh.as_ref()) else {
                continue;
            };
            // A power-off is undone by a power-on at the end of the run: both commands.
            for (key, given) in [
                ("power_command", ssh.power_command.is_some()),
                ("power_on_command", ssh.power_on_command.is_some()),
            ] {
                if !given && (f.kind == FaultKind::PowerOff || key == "power_on_command") {
                    return Err(RunError::Unsupported(format!(
                        "fault `{}` on ssh host {host} needs `{key}` in the topology",
                        f.kind.as_str()
                    )));
                }
            }
        }
        check_mode(plan.settings.mode)?;
        // Checked with a stand-in key: the testbed's own is made when it comes up.
        crate::modes::config_for(&exp.topology, &plan.settings, "00")
            .map_err(|e| RunError::Unsupported(format!("mode `{}`: {e}", plan.settings.mode)))?;
    }
    Ok(())
}

/// Whether runs under `mode` can be executed by this version (the dashboard asks too, before
/// it switches modes or starts its workload).
pub fn check_mode(mode: Mode) -> Result<(), RunError> {
    mode.behaviour().runnable().map_err(RunError::Unsupported)
}

/// Refuses, once the testbed is up and its hosts probed, faults a target host cannot do:
/// before the first run starts, naming the missing capability (DESIGN §6, §9).
pub fn check_capabilities(exp: &Experiment, snapshot: &TestbedState) -> Result<(), RunError> {
    for plan in exp.runs() {
        for f in &plan.faults {
            let Some(host) = resolve_target(&exp.topology, &f.target) else {
                continue;
            };
            let Some(caps) = host_record(snapshot, &host).and_then(|h| h.capabilities.as_ref())
            else {
                continue;
            };
            let refusal = caps
                .fault_support()
                .into_iter()
                .find(|(kind, ok, _)| *kind == f.kind.as_str() && !ok);
            if let Some((kind, _, why)) = refusal {
                return Err(RunError::Unsupported(format!(
                    "fault `{kind}` cannot run on host {host}: it {why}; remove the fault or \
                     use a host that has it"
                )));
            }
        }
    }
    Ok(())
}

/// Runs plans one after another on one testbed: the schedule and the records are the
/// runner's; what it does to the testbed is the lab layer's ([`crate::lab`]).
pub struct Runner<'a> {
    testbed: &'a mut Testbed,
    inbox: Inbox,
    experiment: &'a Experiment,
    next_id: u64,
    /// What the links' delay lines did during the run in progress (for its record).
    delay_lines: BTreeMap<String, DelayLineRecord>,
}

impl<'a> Runner<'a> {
    pub fn new(
        testbed: &'a mut Testbed,
        experiment: &'a Experiment,
    ) -> Result<Runner<'a>, RunError> {
        let inbox = testbed
            .take_inbox()
            .ok_or_else(|| RunError::Failed("the testbed's inbox is taken".into()))?;
        Ok(Runner::with_inbox(testbed, experiment, inbox))
    }

    /// A runner fed by `inbox` instead of the testbed's own: the dashboard keeps the testbed's
    /// inbox and forwards a copy of every message here while an experiment runs.
    pub fn with_inbox(
        testbed: &'a mut Testbed,
        experiment: &'a Experiment,
        inbox: Inbox,
    ) -> Runner<'a> {
        Runner {
            testbed,
            inbox,
            experiment,
            next_id: 1,
            delay_lines: BTreeMap::new(),
        }
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn lab(&mut self) -> Lab<'_> {
        Lab::new(self.testbed, &mut self.inbox)
    }

    /// Gives every host back the topology's own links, after an experiment that changed them
    /// (its `[links]` or matrix link values), on a testbed that stays up.
    pub async fn restore_links(&mut self) -> Result<(), RunError> {
        let topology_links = crate::experiment::links::resolve(&self.experiment.topology, &[], &[]);
        let mut lab = self.lab();
        let set = crate::lab::links::set(&mut lab, &topology_links).await;
        lab.take_set_aside();
        set.map(drop)
            .map_err(|e| RunError::Failed(crate::error::chain(&e)))
    }

    /// Executes one plan and returns its record (a failed run is a record with `error` set).
    pub async fn execute(&mut self, plan: &RunPlan) -> RunRecord {
        let started_unix_ms = crate::state::unix_ms();
        let outcome = self.execute_inner(plan).await;
        let snapshot = self.testbed.snapshot();
        let mut record = match outcome {
            Ok((result, (faults, events))) => {
                compose(self.experiment, plan, &snapshot, result, faults, events)
            }
            Err(e) => failed_record(self.experiment, plan, &snapshot, crate::error::chain(&e)),
        };
        record.started_unix_ms = started_unix_ms;
        record.delay_lines = std::mem::take(&mut self.delay_lines);
        record
    }

    async fn execute_inner(
        &mut self,
        plan: &RunPlan,
    ) -> Result<(ClientResult, (Vec<FaultRecord>, Vec<ModeEventRecord>)), RunError> {
        // Every run starts from the topology's roles: a testbed whose roles moved before this
        // experiment (takeovers on the dashboard) is brought back first, as after a run.
        if self.testbed.roles_moved() {
            let mut lab = self.lab();
            if let Err(e) = switch::after_run(&mut lab).await {
                tracing::warn!(error = %e, "could not bring the roles back to the topology's");
            }
            // What arrived meanwhile belongs to no run.
            lab.take_set_aside();
        }
        let mode = crate::modes::config_for(
            &self.testbed.topology,
            &plan.settings,
            self.testbed.mode_key(),
        )
        .map_err(RunError::Unsupported)?;
        if *self.testbed.mode() != mode {
            // Roles started under another mode are redeployed by their agents.
            self.testbed.set_mode(mode.clone());
            self.testbed
                .set_service_address_role(plan.settings.mode.behaviour().service_address_role());
        }
        {
            // The run's links (the experiment's `[links]` and this cell's link values).
            let mut lab = self.lab();
            let set = crate::lab::links::set(&mut lab, &plan.links).await;
            // What arrived meanwhile belongs to no run.
            lab.take_set_aside();
            set.map_err(|e| RunError::Failed(crate::error::chain(&e)))?;
        }
        self.ensure_servers(None).await?;
        let mut spec = self.client_spec(plan);
        spec.mode = mode;
        let mut log = FaultLog::default();
        let before = self.line_counts(&mut log).await;
        let outcome = self.client_run(&spec, &plan.faults, &mut log).await;
        // The delay lines' counts before the revert: a power-on's new agent counts afresh.
        let after = self.line_counts(&mut log).await;
        self.delay_lines = crate::lab::links::counted_between(&before, &after)
            .into_iter()
            .map(|(line, (delayed, dropped))| (line, DelayLineRecord { delayed, dropped }))
            .collect();
        // Revert: every fault undone and every server role running for the next run,
        // whatever happened; the revert times go into the record.
        self.revert(&mut log).await;
        let result = outcome?;
        Ok((result.clone(), log.finish(result.started_ns)))
    }

    /// What the links' delay lines have done so far, by host (nothing when no link is delayed
    /// by one); a host that does not answer in time is left out, and said so in the log.
    async fn line_counts(
        &mut self,
        log: &mut FaultLog,
    ) -> BTreeMap<String, Vec<halab_protocol::LineCount>> {
        let snapshot = self.testbed.snapshot();
        let mut lab = self.lab();
        let counts = crate::lab::links::counts(&mut lab).await;
        for (host, msg) in lab.take_set_aside() {
            log.note(&snapshot, &host, msg);
        }
        counts.unwrap_or_else(|e| {
            tracing::warn!(error = %crate::error::chain(&e), "delay lines not counted");
            BTreeMap::new()
        })
    }

    /// Starts every role but the clients' that is not running under the testbed's mode (an
    /// agent redeploys a role that runs under another mode), and waits until each runs: a
    /// server role runs once it listens. Fault answers that arrive meanwhile go to `log`.
    async fn ensure_servers(&mut self, log: Option<&mut FaultLog>) -> Result<(), RunError> {
        let snapshot = self.testbed.snapshot();
        let mut lab = self.lab();
        let outcome = roles::ensure_servers(&mut lab).await;
        let aside = lab.take_set_aside();
        if let Some(log) = log {
            for (host, msg) in aside {
                log.note(&snapshot, &host, msg);
            }
        }
        outcome.map_err(|e| RunError::Failed(e.to_string()))
    }

    fn client_spec(&self, plan: &RunPlan) -> ClientSpec {
        let seed = seed_for(&self.experiment.name, plan.index, crate::state::unix_ms());
        client_spec(
            &self.testbed.topology,
            &plan.settings,
            seed,
            self.experiment.run_timeout,
            self.testbed.mode().clone(),
        )
    }

    /// Runs the clients once, firing `faults` on schedule: a time after the start, or a
    /// fraction of the run, taken as the moment the client reports that it has that fraction
    /// of the bytes its connections expect (the same point of a failure-free run, however fast
    /// this one goes).
    async fn client_run(
        &mut self,
        spec: &ClientSpec,
        faults: &[FaultSpec],
        log: &mut FaultLog,
    ) -> Result<ClientResult, RunError> {
        let snapshot = self.testbed.snapshot();
        let topo = self.testbed.topology.clone();
        let client_host = topo
            .hosts_with(Role::Client)
            .next()
            .map(|h| h.name.clone())
            .ok_or_else(|| RunError::Failed("no host holds the client role".into()))?;
        let run = self.fresh_id();
        // Faults timed as a fraction wait for the client's mark: (millionths, fault index).
        let mut at_mark: Vec<(u32, usize)> = faults
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f.at {
                FaultAt::Fraction(x) => Some((fraction_ppm(x), i)),
                FaultAt::After(_) => None,
            })
            .collect();
        let mut spec = spec.clone();
        spec.progress_marks_ppm = at_mark.iter().map(|m| m.0).collect();
        self.testbed
            .send(&client_host, ConsoleMsg::StartClient { run, spec })
            .await?;

        // Fault schedule, in console time: fire fault i, or power a host on again when a
        // power-off's lease ends. Faults on agents carry their lease themselves.
        enum Step {
            Fire(usize),
            PowerOn(String, usize),
        }
        let mut pending: Vec<(tokio::time::Instant, Step)> = Vec::new();
        let t0 = tokio::time::Instant::now();
        for (i, f) in faults.iter().enumerate() {
            let after = match f.at {
                FaultAt::After(d) => Some(d),
                FaultAt::Fraction(_) => None,
            };
            let host = resolve_target(&topo, &f.target);
            log.add(FaultRecord {
                kind: f.kind.as_str().to_string(),
                target: target_text(&f.target),
                host: host.clone().unwrap_or_default(),
                scheduled_ms: after.map(|d| d.as_secs_f64() * 1000.0),
                at_ms: None,
                reverted_ms: None,
                revert_reason: None,
                detail: String::new(),
                error: None,
            });
            match (host, after) {
                (Some(_), Some(after)) => pending.push((t0 + after, Step::Fire(i))),
                (Some(_), None) => {}
                (None, _) => {
                    at_mark.retain(|m| m.1 != i);
                    log.records[i].error = Some("no host holds that target now".into());
                }
            }
        }
        let deadline = t0 + self.experiment.run_timeout + Duration::from_secs(10);

        let result = loop {
            pending.sort_by_key(|(t, _)| *t);
            let next_step = pending.first().map(|(t, _)| *t);
            tokio::select! {
                _ = tokio::time::sleep_until(next_step.unwrap_or(deadline)), if next_step.is_some() => {
                    let (_, step) = pending.remove(0);
                    match step {
                        Step::PowerOn(host, i) => self.power_on(&host, i, "lease expired", log).await,
                        Step::Fire(i) => {
                            let f = &faults[i];
                            match self.fire(f).await {
                                Err(e) => log.records[i].error = Some(e),
                                Ok(Fired::Agent { host, id }) => log.sent(id, host, i),
                                Ok(Fired::Done { at_ns, detail, host }) => {
                                    log.applied_ns[i] = Some(at_ns);
                                    log.records[i].detail = detail;
                                    if f.kind == FaultKind::PowerOff {
                                        match f.duration {
                                            Some(lease) => pending.push((tokio::time::Instant::now() + lease, Step::PowerOn(host, i))),
                                            None => log.powered_off.push((host, i)),
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = self.testbed.send(&client_host, ConsoleMsg::StopClient { run }).await;
                    return Err(RunError::Failed(format!(
                        "the client did not finish within the run timeout of {:?}",
                        self.experiment.run_timeout
                    )));
                }
                msg = self.inbox.recv() => {
                    let Some((host, msg)) = msg else {
                        return Err(RunError::Failed("every agent is gone".into()));
                    };
                    match msg {
                        AgentMsg::ClientDone { run: r, result } if r == run && host == client_host => {
                            break *result;
                        }
                        AgentMsg::ClientMark { run: r, ppm, .. } if r == run && host == client_host => {
                            // Due now: the schedule's next turn fires it.
                            let now = tokio::time::Instant::now();
                            for (_, i) in at_mark.extract_if(.., |m| m.0 <= ppm) {
                                log.records[i].scheduled_ms = Some(now.duration_since(t0).as_secs_f64() * 1000.0);
                                pending.push((now, Step::Fire(i)));
                            }
                        }
                        AgentMsg::Mode { event } => self.on_mode_event(&snapshot, &host, &event, log).await,
                        other => log.note(&snapshot, &host, other),
                    }
                }
            }
        };
        // Faults whose time had not come when the client finished never fired: the record
        // says so rather than passing a failure-free run off as a faulted one. Power-offs
        // whose lease had not ended are undone in revert.
        let ended = t0.elapsed();
        for (ppm, i) in at_mark {
            log.records[i].error = Some(format!(
                "not fired: the run ended after {:.1} ms, before the client had {} of its bytes",
                ended.as_secs_f64() * 1000.0,
                ppm_text(ppm)
            ));
        }
        for (_, step) in pending {
            match step {
                Step::PowerOn(host, i) => log.powered_off.push((host, i)),
                Step::Fire(i) => {
                    log.records[i].error = Some(format!(
                        "not fired: the run ended after {:.1} ms, before the fault was due at \
                         {:.1} ms",
                        ended.as_secs_f64() * 1000.0,
                        log.records[i].scheduled_ms.unwrap_or_default()
                    ));
                }
            }
        }
        self.settle(&snapshot, log).await;
        // Faults still answering when the client finished.
        let wait_until = tokio::time::Instant::now() + FAULT_TIMEOUT;
        while log.awaiting_applied() {
            match tokio::time::timeout_at(wait_until, self.inbox.recv()).await {
                Ok(Some((host, msg))) => log.note(&snapshot, &host, msg),
                Ok(None) | Err(_) => break,
            }
        }
        // Move the client's times onto the console clock.
        Ok(shift_result(result, &snapshot, &client_host))
    }

    /// A mode event during a run: acted on (a fence, a role moved) and recorded.
    async fn on_mode_event(
        &mut self,
        snapshot: &TestbedState,
        host: &str,
        event: &halab_protocol::ModeEvent,
        log: &mut FaultLog,
    ) {
        let mut lab = self.lab();
        let handled = mode_events::handle(&mut lab, host, event).await;
        // Acting on a mode event waits for nothing: nothing is set aside.
        let aside = lab.take_set_aside();
        debug_assert!(aside.is_empty());
        if let Some(e) = &handled.error {
            tracing::warn!(%host, kind = %handled.kind, error = %e, "mode event");
        }
        log.mode_events.push(ModeEventLog {
            host: host.to_string(),
            console_ns: Some(to_console_ns(snapshot, host, handled.agent_ns)),
            kind: handled.kind,
            detail: handled.detail,
            error: handled.error,
        });
    }

    /// After the client finished: the run's mode events still on their way are collected
    /// before the record closes. The client's end races the other hosts' reports (a primary
    /// reports it lost its backup before it lets the held FIN go, but over another channel
    /// than the client's result), so every host that is up is asked for a barrier
    /// ([`ConsoleMsg::Sync`]), answered after all it sent before; and a mode with business
    /// left (st-tcp: a fence whose takeover has not reported its end) is waited for, at most
    /// [`SETTLE_TIMEOUT`].
    async fn settle(&mut self, snapshot: &TestbedState, log: &mut FaultLog) {
        let mut waiting: Vec<(String, u64)> = Vec::new();
        for (i, h) in self.testbed.snapshot().hosts.iter().enumerate() {
            if h.state != crate::state::HostState::Connected {
                continue;
            }
            let id = i as u64 + 1;
            if self
                .testbed
                .send(&h.name, ConsoleMsg::Sync { id })
                .await
                .is_ok()
            {
                waiting.push((h.name.clone(), id));
            }
        }
        let until = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            // Events the console refused (a forged fence request) started nothing.
            let kinds: Vec<(&str, EventKind)> = log
                .mode_events
                .iter()
                .filter(|e| e.error.is_none())
                .map(|e| (e.host.as_str(), e.kind))
                .collect();
            let mode = crate::modes::of_config(self.testbed.mode()).behaviour();
            if waiting.is_empty() && mode.settled(&kinds) {
                return;
            }
            match tokio::time::timeout_at(until, self.inbox.recv()).await {
                Ok(Some((host, AgentMsg::Synced { id }))) => {
                    waiting.retain(|(h, i)| !(*h == host && *i == id));
                }
                Ok(Some((host, AgentMsg::Mode { event }))) => {
                    self.on_mode_event(snapshot, &host, &event, log).await;
                }
                Ok(Some((host, other))) => log.note(snapshot, &host, other),
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(
                        ?waiting,
                        "the run's mode events did not settle within {SETTLE_TIMEOUT:?}"
                    );
                    return;
                }
            }
        }
    }

    /// Fires fault `f` at the host its target names now.
    async fn fire(&mut self, f: &FaultSpec) -> Result<Fired, String> {
        let id = self.fresh_id();
        let mut lab = self.lab();
        // A role names the host that holds it now: after a takeover, the one that took over.
        let host = match &f.target {
            FaultTarget::Role(role) => holder_of(&lab, *role),
            FaultTarget::Host(h) => lab.testbed.topology.host(h).map(|h| h.name.clone()),
        }
        .ok_or_else(|| "no host holds that target now".to_string())?;
        let params = FaultParams {
            interface: f.interface.clone(),
            percent: f.percent,
            direction: f.direction,
            peer: f.peer.clone(),
            delay_ms: f.delay_ms,
        };
        let lease_ms = f.duration.map(|d| d.as_millis() as u64);
        faults::fire(&mut lab, &host, f.kind, &params, id, lease_ms)
            .await
            .map_err(|e| e.to_string())
    }

    /// Undoes the run's faults: agents revert what they still hold (a killed server starts
    /// again, a hung one resumes, links come up, rules go), powered-off hosts come back, and
    /// every server role runs again for the next run. Revert times go into `log`.
    async fn revert(&mut self, log: &mut FaultLog) {
        let snapshot = self.testbed.snapshot();
        for (id, host) in log.held() {
            // A host whose agent is gone reverted what it held on its way out.
            let _ = faults::revert(&self.lab(), &host, id).await;
        }
        let wait_until = tokio::time::Instant::now() + FAULT_TIMEOUT;
        while !log.held().is_empty() {
            match tokio::time::timeout_at(wait_until, self.inbox.recv()).await {
                Ok(Some((host, msg))) => log.note(&snapshot, &host, msg),
                Ok(None) | Err(_) => break,
            }
        }
        // The mode before the power-ons: an st-tcp backup that took over must give the service
        // address back, and forget the old primary, before a primary powered on again
        // announces the address and sends its first beat (a backup that forgot that beat
        // could not detect the next run's failure). The mode powers on the hosts it needs in
        // that order; the rest come on here.
        let mut lab = self.lab();
        if let Err(e) = switch::after_run(&mut lab).await {
            tracing::warn!(error = %e, "could not reset the failover mode after the run");
        }
        for (host, msg) in lab.take_set_aside() {
            log.note(&snapshot, &host, msg);
        }
        for (host, i) in std::mem::take(&mut log.powered_off) {
            self.power_on(&host, i, "end of run", log).await;
        }
        if let Err(e) = self.ensure_servers(Some(log)).await {
            tracing::warn!(error = %crate::error::chain(&e), "could not restart the servers");
        }
    }

    /// Powers `host` on again, the revert of power-off fault `i`.
    async fn power_on(&mut self, host: &str, i: usize, reason: &str, log: &mut FaultLog) {
        match self.testbed.power_on(host).await {
            Ok(()) => {
                log.reverted_ns[i] = Some(halab_protocol::mono_ns());
                log.records[i].revert_reason = Some(reason.to_string());
            }
            Err(e) => {
                let e = crate::error::chain(&e);
                tracing::warn!(%host, error = %e, "power-on failed");
                log.records[i].error = Some(format!("power-on failed: {e}"));
            }
        }
    }
}

/// What happened to one run's faults, on the console's clock.
#[derive(Default)]
struct FaultLog {
    records: Vec<FaultRecord>,
    applied_ns: Vec<Option<u64>>,
    reverted_ns: Vec<Option<u64>>,
    /// Agent fault ids sent and not yet answered, by fault index.
    awaiting: BTreeMap<u64, usize>,
    /// Agent fault ids applied and not yet reverted: (host, fault index).
    holding: BTreeMap<u64, (String, usize)>,
    /// Hosts powered off and not yet on again: (host, fault index).
    powered_off: Vec<(String, usize)>,
    /// What the failover mode reported, in order.
    mode_events: Vec<ModeEventLog>,
}

/// A mode event as received, on the console's clock.
struct ModeEventLog {
    host: String,
    console_ns: Option<u64>,
    kind: EventKind,
    detail: String,
    error: Option<String>,
}

impl FaultLog {
    fn add(&mut self, record: FaultRecord) {
        self.records.push(record);
        self.applied_ns.push(None);
        self.reverted_ns.push(None);
    }

    /// Fault `i` was sent to `host`'s agent as `id`.
    fn sent(&mut self, id: u64, host: String, i: usize) {
        self.awaiting.insert(id, i);
        self.holding.insert(id, (host, i));
    }

    fn awaiting_applied(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// Agent faults still held: (id, host).
    fn held(&self) -> Vec<(u64, String)> {
        self.holding
            .iter()
            .map(|(id, (h, _))| (*id, h.clone()))
            .collect()
    }

    /// Takes note of an agent's answer about a fault (other messages are not a run's
    /// business and are dropped).
    fn note(&mut self, snapshot: &TestbedState, host: &str, msg: AgentMsg) {
        match msg {
            AgentMsg::FaultApplied { id, at_ns, detail } => {
                if let Some(i) = self.awaiting.remove(&id) {
                    self.applied_ns[i] = Some(to_console_ns(snapshot, host, at_ns));
                    tracing::info!(%host, %detail, "fault applied");
                    self.records[i].detail = detail;
                }
            }
            AgentMsg::FaultFailed { id, error } => {
                if let Some(i) = self.awaiting.remove(&id) {
                    tracing::warn!(%host, %error, "fault failed");
                    self.records[i].error = Some(error);
                    self.holding.remove(&id);
                }
            }
            AgentMsg::FaultReverted { id, at_ns, reason } => {
                if let Some((_, i)) = self.holding.remove(&id) {
                    tracing::info!(%host, %reason, "fault reverted");
                    self.reverted_ns[i] = Some(to_console_ns(snapshot, host, at_ns));
                    self.records[i].revert_reason = Some(reason);
                }
            }
            _ => {}
        }
    }

    /// The records, with times in ms after `start_ns` (the client's start).
    /// The faults and mode events, with their times as ms after `start_ns`.
    fn finish(self, start_ns: u64) -> (Vec<FaultRecord>, Vec<ModeEventRecord>) {
        let mut records = self.records;
        for (i, r) in records.iter_mut().enumerate() {
            r.at_ms = self.applied_ns[i].map(|t| ms_between(start_ns, t));
            r.reverted_ms = self.reverted_ns[i].map(|t| ms_between(start_ns, t));
        }
        let events = self
            .mode_events
            .into_iter()
            .map(|e| ModeEventRecord {
                host: e.host,
                kind: e.kind,
                at_ms: e.console_ns.map(|t| ms_between(start_ns, t)),
                detail: e.detail,
                error: e.error,
            })
            .collect();
        (records, events)
    }
}

/// Faults sent in time that took effect only after the client had finished (a fault at 40 %
/// of a 12 ms run that took 30 ms to land): the run saw none of them, and says so rather than
/// passing for a faulted run.
fn flag_late(faults: &mut [FaultRecord], duration_ms: f64) {
    for f in faults.iter_mut().filter(|f| f.error.is_none()) {
        if let Some(at) = f.at_ms.filter(|at| *at > duration_ms) {
            f.error = Some(format!(
                "took effect {at:.1} ms into the run, after the client had finished at \
                 {duration_ms:.1} ms: the run saw no fault"
            ));
        }
    }
}

/// A fraction of a run as the client's progress mark, in millionths (clamped to 0..=1).
fn fraction_ppm(x: f64) -> u32 {
    (x.clamp(0.0, 1.0) * 1e6).round() as u32
}

/// "40 %" for 400 000 millionths.
fn ppm_text(ppm: u32) -> String {
    format!("{} %", f64::from(ppm) / 1e4)
}

/// The host a fault target names in the topology.
fn resolve_target(topo: &Topology, target: &FaultTarget) -> Option<String> {
    match target {
        FaultTarget::Host(name) => topo.host(name),
        FaultTarget::Role(role) => topo.hosts_with(*role).next(),
    }
    .map(|h| h.name.clone())
}

fn target_text(t: &FaultTarget) -> String {
    match t {
        FaultTarget::Host(h) => h.clone(),
        FaultTarget::Role(r) => r.to_string(),
    }
}

fn host_record<'s>(snapshot: &'s TestbedState, host: &str) -> Option<&'s HostRecord> {
    snapshot.hosts.iter().find(|h| h.name == host)
}

fn base_record(exp: &Experiment, plan: &RunPlan, snapshot: &TestbedState) -> RunRecord {
    let s = &plan.settings;
    let client = snapshot
        .hosts
        .iter()
        .find(|h| h.roles.contains(&Role::Client));
    RunRecord {
        experiment: exp.name.clone(),
        run_index: plan.index,
        cell: plan.cell,
        repetition: plan.repetition,
        mode: s.mode.as_str().to_string(),
        mode_params: s.mode.behaviour().record_params(s),
        params: plan.params.clone(),
        links: crate::experiment::links::record_of(&plan.links),
        delay_lines: BTreeMap::new(),
        workload: s.workload.as_str().to_string(),
        size: s
            .workload
            .has_size()
            .then(|| s.size.unwrap_or(DEFAULT_SIZE)),
        clients: s.clients.unwrap_or(1),
        faults: Vec::new(),
        mode_events: Vec::new(),
        failover_ms: None,
        detect_ms: None,
        takeover_ms: None,
        stall_ms: None,
        integrity: halab_workload::IntegrityReport::default(),
        duration_ms: 0.0,
        throughput_10ms: Vec::new(),
        latency_us: None,
        connections: Vec::new(),
        error: None,
        halab_version: HALAB_VERSION.to_string(),
        topology: exp.topology.source.display().to_string(),
        kernel: client.and_then(|h| h.kernel.clone()),
        capabilities: client.and_then(|h| h.capabilities.clone()),
        started_unix_ms: 0,
        plan_hash: None,
    }
}

fn failed_record(
    exp: &Experiment,
    plan: &RunPlan,
    snapshot: &TestbedState,
    error: String,
) -> RunRecord {
    let mut r = base_record(exp, plan, snapshot);
    r.error = Some(error);
    r
}

/// Builds the record of a run from what the clients saw and when the faults struck.
pub fn compose(
    exp: &Experiment,
    plan: &RunPlan,
    snapshot: &TestbedState,
    result: ClientResult,
    faults: Vec<FaultRecord>,
    mode_events: Vec<ModeEventRecord>,
) -> RunRecord {
    let mut r = base_record(exp, plan, snapshot);
    let start = result.started_ns;
    // T_fault: the first fault that took effect, on the console clock.
    let fault_ns = faults
        .iter()
        .filter_map(|f| f.at_ms)
        .reduce(f64::min)
        .map(|ms| start as f64 + ms * 1e6);
    let cs = &result.connections;
    let figures = failover_figures(&result, fault_ns);
    r.failover_ms = figures.failover_ms;
    r.detect_ms = figures.detect_ms;
    r.takeover_ms = figures.takeover_ms;
    r.stall_ms = figures.stall_ms;
    r.integrity = figures.integrity;
    if plan.settings.mode.behaviour().measured_by() == MeasuredBy::ModeEvents
        && let Some(fault_ns) = fault_ns
    {
        // The client never reconnects: detection and takeover are the mode's (its events),
        // and the client resumes with the first bytes after the takeover.
        let at = |kind: EventKind| {
            mode_events
                .iter()
                .filter(move |e| e.kind == kind)
                .filter_map(|e| e.at_ms)
        };
        (r.detect_ms, r.takeover_ms, r.failover_ms) = figures::from_mode_events(
            at(EventKind::Detect),
            at(EventKind::Takeover),
            (fault_ns - start as f64) / 1e6,
            start,
            cs,
        );
    }
    for c in cs {
        // Buckets of every connection, aligned on the run's start.
        let shift = (c.meter.start_ns.saturating_sub(start) / 10_000_000) as usize;
        for (k, b) in c.meter.buckets_10ms.iter().enumerate() {
            if r.throughput_10ms.len() <= shift + k {
                r.throughput_10ms.resize(shift + k + 1, 0);
            }
            r.throughput_10ms[shift + k] += b;
        }
    }
    let mut faults = faults;
    flag_late(
        &mut faults,
        (result.ended_ns.saturating_sub(start)) as f64 / 1e6,
    );
    let fault_error = faults
        .iter()
        .find_map(|f| f.error.as_ref().map(|e| format!("fault {}: {e}", f.kind)));
    r.error = fault_error.or_else(|| {
        cs.iter().find_map(|c| {
            c.error
                .as_ref()
                .map(|e| format!("connection {}: {e}", c.index))
        })
    });
    r.duration_ms = (result.ended_ns.saturating_sub(start)) as f64 / 1e6;
    // One connection: its latencies. Several: per connection in `connections` only, as
    // percentiles do not add up.
    r.latency_us = match cs.as_slice() {
        [only] => only.meter.latency_us.clone(),
        _ => None,
    };
    r.faults = faults;
    r.mode_events = mode_events;
    r.connections = result.connections;
    if matches!(
        plan.settings.workload,
        Workload::Echo | Workload::Interactive
    ) {
        r.size = None;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_that_landed_after_the_client_finished_is_flagged() {
        let fault = |at_ms: Option<f64>| FaultRecord {
            kind: "nic-down".into(),
            target: "primary".into(),
            host: "primary".into(),
            scheduled_ms: Some(5.0),
            at_ms,
            reverted_ms: None,
            revert_reason: None,
            detail: String::new(),
            error: None,
        };
        let mut faults = vec![fault(Some(48.0)), fault(Some(6.0)), fault(None)];
        flag_late(&mut faults, 14.4);
        assert!(
            faults[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("after the client had finished at 14.4 ms")),
            "{faults:?}"
        );
        assert!(faults[1].error.is_none() && faults[2].error.is_none());
    }

    #[test]
    fn fractions_become_millionths_and_read_back_as_percent() {
        assert_eq!(fraction_ppm(0.4), 400_000);
        assert_eq!(fraction_ppm(0.000_000_4), 0);
        assert_eq!(fraction_ppm(1.5), 1_000_000);
        assert_eq!(ppm_text(400_000), "40 %");
        assert_eq!(ppm_text(125_000), "12.5 %");
    }
}
