//! The three kinds of message of the dashboard: [`Action`]s (what a key means, returned by a
//! component's `handle_event`), [`Command`]s (what the orchestrator task is asked to do) and
//! [`Update`]s (what it reports back). The UI loop never waits on the network: commands go out
//! on a channel and their results come back as updates.

use crate::run::record::RunRecord;
use crate::state::HostRecord;
use crate::topology::Mode;
use halab_protocol::AgentMsg;
use std::path::PathBuf;

/// A fault or power operation the keys ask for on one host (DESIGN §6).
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKey {
    /// `k`: SIGKILL of the host's server process.
    Kill,
    /// `h`: SIGSTOP of it.
    Hang,
    /// `c`: SIGTERM, a clean close.
    Crash,
    /// `n`: every link of the host down.
    NicDown,
    /// `l`: random loss of this many percent, both directions.
    Loss(f64),
    /// `d`: this many milliseconds added to every packet on the host's way in.
    Delay(u64),
    /// `x`: every packet to and from this other host dropped.
    Partition(String),
    /// `p`: links down, then every process killed.
    PowerOff,
    /// `o`: links up, agent and roles started again.
    PowerOn,
    /// `r`: every fault on the host reverted, and powered on if it was off.
    RevertAll,
}

impl FaultKey {
    /// The fault's name as the failover table and the log show it.
    pub fn label(&self) -> String {
        match self {
            FaultKey::Kill => "process-kill".into(),
            FaultKey::Hang => "process-hang".into(),
            FaultKey::Crash => "process-crash".into(),
            FaultKey::NicDown => "nic-down".into(),
            FaultKey::Loss(p) => format!("loss {p}%"),
            FaultKey::Delay(ms) => format!("delay {ms}ms"),
            FaultKey::Partition(peer) => format!("partition/{peer}"),
            FaultKey::PowerOff => "power-off".into(),
            FaultKey::PowerOn => "power-on".into(),
            FaultKey::RevertAll => "revert".into(),
        }
    }
}

/// What a key means once a component has read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    SelectPrev,
    SelectNext,
    /// Break (or mend) `host`.
    Fault {
        host: String,
        fault: FaultKey,
    },
    /// Ask for the loss percent on `host`.
    AskLoss {
        host: String,
    },
    /// Ask for the delay on `host`, milliseconds.
    AskDelay {
        host: String,
    },
    /// Ask which host `host` is cut off from.
    AskPartition {
        host: String,
    },
    ToggleWorkload,
    SwitchMode,
    /// Open the list of experiments.
    PickExperiment,
    RunExperiment(PathBuf),
    ToggleHelp,
    /// Close the open prompt or overlay.
    Close,
    /// `q`: quit, asking first while faults are active.
    RequestQuit,
    /// Quit and tear down, confirmed.
    Quit,
}

/// Work for the orchestrator task.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Fault {
        host: String,
        fault: FaultKey,
    },
    /// Start the workload on every client host, or stop it.
    ToggleWorkload,
    /// Redeploy the roles under the next mode of the cycle none → app-migration → st-tcp.
    SwitchMode,
    RunExperiment(PathBuf),
    /// Stop everything and take the testbed down; the task ends after it.
    Shutdown,
}

/// Severity of an event-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// How the mode is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeView {
    pub current: Mode,
    /// Roles are being redeployed for this mode.
    pub switching: Option<Mode>,
    /// Why the last switch did not happen (e.g. a mode this version cannot run yet).
    pub note: Option<String>,
}

/// Progress of an experiment started with `e`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentView {
    pub name: String,
    /// Runs finished.
    pub done: usize,
    pub total: usize,
    /// The run in progress, or the outcome once all are done.
    pub current: String,
    pub finished: bool,
}

/// What the orchestrator task reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Every host's record, after any change.
    Hosts(Vec<HostRecord>),
    /// A message from `host`'s agent (telemetry, results, faults, roles, load).
    Agent {
        host: String,
        msg: AgentMsg,
    },
    /// Agent fault `id` was sent to `host`; its outcome comes as an agent message.
    FaultSent {
        id: u64,
        host: String,
        kind: crate::experiment::FaultKind,
        label: String,
        lease_ms: Option<u64>,
    },
    /// The console powered `host` off at `at_ns` (console clock); fault `id`.
    PoweredOff {
        id: u64,
        host: String,
        at_ns: u64,
    },
    PoweredOn {
        host: String,
    },
    /// Client run `run` started on `host`.
    RunStarted {
        host: String,
        run: u64,
    },
    /// The workload is running or not; `detail` says what or why.
    Workload {
        running: bool,
        detail: String,
    },
    Mode(ModeView),
    Experiment(ExperimentView),
    /// One run of the experiment finished.
    ExperimentRecord(Box<RunRecord>),
    Log(Level, String),
    /// The testbed is down (or failed to come down): the dashboard can close.
    Down(Result<String, String>),
}
