//! The validated experiment: what an experiment file describes once it has been parsed and
//! checked against its topology, and its expansion into runs. The checks live in
//! `validate.rs`; everything here may rely on the invariants documented on the fields.

use super::links::{LinkPath, LinkSetting};
use crate::topology::{LinkShape, Mode, RunSettings, Topology, Trigger, Workload};
use halab_protocol::Role;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// A validated experiment file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    /// The file it was read from, as the caller named it.
    pub source: PathBuf,
    /// 1–40 characters of `[a-z0-9-]`, starting with a letter: the file's `name`, or else the
    /// file name without its extension.
    pub name: String,
    /// The topology the runs use, loaded and validated (its `source` is the `topology` path
    /// joined to the experiment's folder).
    pub topology: Topology,
    /// How often each matrix cell is run, 1..=1000.
    pub repetitions: u32,
    /// Limit of one run; more than 0 and at most 24 h. Every fault given as a time fires
    /// within it.
    #[serde(rename = "run_timeout_ms", serialize_with = "millis")]
    pub run_timeout: Duration,
    /// The topology's `[run]` with the experiment's `[run]` over it: the settings of a run
    /// before the matrix. Values inherited from the topology that the experiment's mode or
    /// workload cannot use are left out (e.g. the topology's `heartbeat_ms` under mode `none`).
    pub base: RunSettings,
    /// The experiment's own `[run]` values, as written (the topology's are in
    /// `topology.run`). Kept apart from `base` because a matrix cell may bring back a
    /// topology value `base` had to leave out (a cell with mode `st-tcp` uses the topology's
    /// `heartbeat_ms` even when `[run]` says `mode = "none"`).
    pub run: RunOverrides,
    /// In file order; the same for every run, except the runs of a cell with matrix value
    /// `faults = false`, which have none.
    pub faults: Vec<FaultSpec>,
    /// `[matrix]` keys in file order, each one of [`MATRIX_KEYS`] with a non-empty
    /// list of distinct values of that key's kind. Every cell of the product is a valid run.
    pub matrix: Vec<(String, Vec<MatrixValue>)>,
    /// `[links]`, in file order: each link path's settings, for every run (issue 15).
    pub links: Vec<(LinkPath, LinkShape)>,
}

/// The keys of a `[run]` table, which are also the keys a `[matrix]` may vary.
pub const RUN_KEYS: [&str; 7] = [
    "mode",
    "heartbeat_ms",
    "missed_heartbeats",
    "trigger",
    "workload",
    "size",
    "clients",
];

/// The keys a `[matrix]` may vary: every `[run]` key, and `faults` (`[false, true]`: each cell
/// runs without and with the experiment's `[[faults]]`, for failure-free figures beside
/// faulted ones in one experiment).
pub const MATRIX_KEYS: [&str; 8] = [
    "mode",
    "heartbeat_ms",
    "missed_heartbeats",
    "trigger",
    "workload",
    "size",
    "clients",
    "faults",
];

/// One value of a `[run]` key (or of the matrix-only key `faults`), as a `[matrix]` list holds
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixValue {
    Mode(Mode),
    HeartbeatMs(u64),
    MissedHeartbeats(u32),
    Trigger(Trigger),
    Workload(Workload),
    /// Bytes.
    Size(u64),
    Clients(u32),
    /// Matrix only: whether the run has the experiment's `[[faults]]` (false: none).
    Faults(bool),
    /// Matrix only: a link setting, in its unit (bits per second, µs, millionths); the link is
    /// named by the matrix key (`<network>.<setting>` or `<host>.<network>.<setting>`).
    Link(LinkSetting, u64),
}

impl MatrixValue {
    /// The `[run]` key this is a value of.
    pub fn key(&self) -> &'static str {
        match self {
            MatrixValue::Mode(_) => "mode",
            MatrixValue::HeartbeatMs(_) => "heartbeat_ms",
            MatrixValue::MissedHeartbeats(_) => "missed_heartbeats",
            MatrixValue::Trigger(_) => "trigger",
            MatrixValue::Workload(_) => "workload",
            MatrixValue::Size(_) => "size",
            MatrixValue::Clients(_) => "clients",
            MatrixValue::Faults(_) => "faults",
            MatrixValue::Link(setting, _) => setting.as_str(),
        }
    }

    /// Sets this value in `settings`, whatever else `settings` holds (`faults` is no setting:
    /// it chooses the run's faults, see [`Experiment::runs`]).
    pub fn apply(&self, settings: &mut RunSettings) {
        match *self {
            MatrixValue::Faults(_) | MatrixValue::Link(..) => {}
            MatrixValue::Mode(m) => settings.mode = m,
            MatrixValue::HeartbeatMs(h) => settings.heartbeat_ms = Some(h),
            MatrixValue::MissedHeartbeats(m) => settings.missed_heartbeats = Some(m),
            MatrixValue::Trigger(t) => settings.trigger = Some(t),
            MatrixValue::Workload(w) => settings.workload = w,
            MatrixValue::Size(s) => settings.size = Some(s),
            MatrixValue::Clients(c) => settings.clients = Some(c),
        }
    }
}

/// The value as text, as a record shows it: words as written, numbers in their unit (sizes in
/// bytes).
impl fmt::Display for MatrixValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatrixValue::Mode(m) => f.write_str(m.as_str()),
            MatrixValue::HeartbeatMs(n) | MatrixValue::Size(n) => write!(f, "{n}"),
            MatrixValue::MissedHeartbeats(n) | MatrixValue::Clients(n) => write!(f, "{n}"),
            MatrixValue::Trigger(t) => f.write_str(trigger_str(*t)),
            MatrixValue::Workload(w) => f.write_str(w.as_str()),
            MatrixValue::Faults(b) => write!(f, "{b}"),
            MatrixValue::Link(setting, amount) => f.write_str(&setting.show(*amount)),
        }
    }
}

/// As the plain value: a string for words, a number for numbers.
impl Serialize for MatrixValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MatrixValue::HeartbeatMs(n) | MatrixValue::Size(n) => s.serialize_u64(*n),
            MatrixValue::MissedHeartbeats(n) | MatrixValue::Clients(n) => s.serialize_u32(*n),
            MatrixValue::Faults(b) => s.serialize_bool(*b),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

pub(crate) fn trigger_str(t: Trigger) -> &'static str {
    match t {
        Trigger::Server => "server",
        Trigger::Client => "client",
    }
}

/// An experiment's `[run]`: every key optional; an unset key takes the topology's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunOverrides {
    pub mode: Option<Mode>,
    pub heartbeat_ms: Option<u64>,
    pub missed_heartbeats: Option<u32>,
    pub trigger: Option<Trigger>,
    pub workload: Option<Workload>,
    pub size: Option<u64>,
    pub clients: Option<u32>,
}

impl RunOverrides {
    /// The values that are set, in the order of [`RUN_KEYS`].
    pub fn values(&self) -> Vec<MatrixValue> {
        [
            self.mode.map(MatrixValue::Mode),
            self.heartbeat_ms.map(MatrixValue::HeartbeatMs),
            self.missed_heartbeats.map(MatrixValue::MissedHeartbeats),
            self.trigger.map(MatrixValue::Trigger),
            self.workload.map(MatrixValue::Workload),
            self.size.map(MatrixValue::Size),
            self.clients.map(MatrixValue::Clients),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    pub(crate) fn set(&mut self, value: MatrixValue) {
        match value {
            MatrixValue::Mode(m) => self.mode = Some(m),
            MatrixValue::HeartbeatMs(h) => self.heartbeat_ms = Some(h),
            MatrixValue::MissedHeartbeats(m) => self.missed_heartbeats = Some(m),
            MatrixValue::Trigger(t) => self.trigger = Some(t),
            MatrixValue::Workload(w) => self.workload = Some(w),
            MatrixValue::Size(s) => self.size = Some(s),
            MatrixValue::Clients(c) => self.clients = Some(c),
            // Matrix only: never a `[run]` value.
            MatrixValue::Faults(_) | MatrixValue::Link(..) => {}
        }
    }
}

/// One `[[faults]]` entry. Kind parameters are present exactly for their kind: `interface`
/// only for `nic-down` (absent: every interface of the host); `percent` (0 < p <= 100) and
/// `direction` (default both) always for `loss`; `peer` always for `partition` (a host name,
/// a role some host holds, or a network name, not the target itself); `delay_ms` (1..=10000)
/// always for `delay`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSpec {
    pub at: FaultAt,
    pub kind: FaultKind,
    pub target: FaultTarget,
    /// The lease: the fault is reverted this long after it fired. `None`: it lasts until the
    /// run ends.
    #[serde(rename = "duration_ms", serialize_with = "millis_opt")]
    pub duration: Option<Duration>,
    /// A network of the topology that every host the target names has an address on.
    pub interface: Option<String>,
    pub percent: Option<f64>,
    pub direction: Option<Direction>,
    pub peer: Option<String>,
    pub delay_ms: Option<u64>,
}

/// When a fault fires, counted from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultAt {
    /// A time after the run starts: more than 0 and at most the experiment's `run_timeout`.
    After(Duration),
    /// A fraction of the run, strictly between 0 and 1 (`"40%"` is 0.4): the fault fires when
    /// the client has that fraction of the bytes its connections expect, which is where a
    /// failure-free run stands after that fraction of its duration.
    Fraction(f64),
}

/// `{"after_ms": 2500}` or `{"fraction": 0.4}`.
impl Serialize for FaultAt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self {
            FaultAt::After(d) => map.serialize_entry("after_ms", &Millis(*d))?,
            FaultAt::Fraction(f) => map.serialize_entry("fraction", f)?,
        }
        map.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of the role's process: the kernel sends FIN/RST.
    ProcessKill,
    /// SIGSTOP: no FIN, the socket stays open.
    ProcessHang,
    /// SIGTERM / clean close (FIN).
    ProcessCrash,
    /// Links down: one interface, or all.
    NicDown,
    /// Random drops, per direction.
    Loss,
    /// Traffic between target and peer dropped.
    Partition,
    /// Added latency (netem).
    Delay,
    /// Links down first, then every process killed: nothing leaves the host.
    PowerOff,
    PowerOn,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::ProcessKill,
        FaultKind::ProcessHang,
        FaultKind::ProcessCrash,
        FaultKind::NicDown,
        FaultKind::Loss,
        FaultKind::Partition,
        FaultKind::Delay,
        FaultKind::PowerOff,
        FaultKind::PowerOn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::ProcessKill => "process-kill",
            FaultKind::ProcessHang => "process-hang",
            FaultKind::ProcessCrash => "process-crash",
            FaultKind::NicDown => "nic-down",
            FaultKind::Loss => "loss",
            FaultKind::Partition => "partition",
            FaultKind::Delay => "delay",
            FaultKind::PowerOff => "power-off",
            FaultKind::PowerOn => "power-on",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a fault hits. A role word (`primary`, ...) is always a role, even where a host has
/// that name: a role means the host holding it when the fault fires, so `primary` after a
/// failover is the new primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultTarget {
    /// A host of the topology.
    Host(String),
    /// A role at least one host of the topology holds.
    Role(Role),
}

impl FaultTarget {
    /// The word as written in the file.
    pub fn as_str(&self) -> &str {
        match self {
            FaultTarget::Host(h) => h,
            FaultTarget::Role(r) => r.as_str(),
        }
    }
}

impl fmt::Display for FaultTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which traffic of the target a `loss` fault drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunPlan {
    /// 0-based position among all runs of the experiment.
    pub index: usize,
    /// 0-based matrix cell.
    pub cell: usize,
    /// 1-based repetition of that cell.
    pub repetition: u32,
    /// topology `[run]` ← experiment `[run]` ← this cell's values, valid as a topology's
    /// `[run]` would be.
    pub settings: RunSettings,
    /// This cell's matrix values as text ([`MatrixValue`]'s `Display`), for the record.
    pub params: BTreeMap<String, String>,
    pub faults: Vec<FaultSpec>,
    /// Every host's links for this run (host → network → shape; only links that are not
    /// plain): the topology's with the experiment's `[links]` and this cell's link values over
    /// them.
    pub links: BTreeMap<String, BTreeMap<String, LinkShape>>,
}

impl Experiment {
    /// Matrix cells: the product of the lengths of the matrix lists (1 without a matrix).
    pub fn cells(&self) -> usize {
        self.matrix
            .iter()
            .fold(1usize, |n, (_, values)| n.saturating_mul(values.len()))
    }

    /// Every run, cell-major (all repetitions of cell 0, then of cell 1, ...), the cells in
    /// odometer order with the last matrix key varying fastest.
    pub fn runs(&self) -> Vec<RunPlan> {
        let mut runs = Vec::new();
        for cell in 0..self.cells() {
            let values = self.cell_values(cell);
            let settings = self.settings_of(&values);
            let faulted = !values.iter().any(|(_, v)| *v == MatrixValue::Faults(false));
            let faults = if faulted {
                self.faults.clone()
            } else {
                Vec::new()
            };
            let params: BTreeMap<String, String> = values
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect();
            let links = self.links_of(&values);
            for repetition in 1..=self.repetitions {
                runs.push(RunPlan {
                    index: runs.len(),
                    cell,
                    repetition,
                    settings: settings.clone(),
                    params: params.clone(),
                    faults: faults.clone(),
                    links: links.clone(),
                });
            }
        }
        runs
    }

    /// The matrix values of cell `cell` (0-based, odometer order), in the matrix's key order.
    pub fn cell_values(&self, cell: usize) -> Vec<(&str, MatrixValue)> {
        let indices = odometer(&self.matrix_lengths(), cell);
        self.matrix
            .iter()
            .zip(indices)
            .filter_map(|((key, values), i)| values.get(i).map(|v| (key.as_str(), *v)))
            .collect()
    }

    /// Every host's links under a cell's values (see [`super::links::resolve`]).
    pub fn links_of(
        &self,
        cell: &[(&str, MatrixValue)],
    ) -> BTreeMap<String, BTreeMap<String, LinkShape>> {
        let values: Vec<(LinkPath, LinkSetting, u64)> = cell
            .iter()
            .filter_map(|(key, value)| match value {
                MatrixValue::Link(setting, amount) => {
                    // Validation checked every link key against the topology.
                    let (path, _) = super::links::split_matrix_key(key)?;
                    let path = LinkPath::parse(path, &self.topology).ok()?;
                    Some((path, *setting, *amount))
                }
                _ => None,
            })
            .collect();
        super::links::resolve(&self.topology, &self.links, &values)
    }

    fn matrix_lengths(&self) -> Vec<usize> {
        self.matrix.iter().map(|(_, v)| v.len()).collect()
    }

    /// topology `[run]` ← experiment `[run]` ← `cell`, without the topology's values the result
    /// cannot use.
    fn settings_of(&self, cell: &[(&str, MatrixValue)]) -> RunSettings {
        let mut layered = Layered::new(&self.topology.run);
        for value in self.run.values() {
            layered.set(value, Origin::Run(0..0));
        }
        for (_, value) in cell {
            layered.set(*value, Origin::Matrix(0..0));
        }
        layered.settings()
    }
}

/// The indices into each list of cell `cell`, the last list varying fastest.
pub(crate) fn odometer(lengths: &[usize], mut cell: usize) -> Vec<usize> {
    let mut indices = vec![0; lengths.len()];
    for (i, len) in lengths.iter().enumerate().rev() {
        if *len == 0 {
            continue;
        }
        indices[i] = cell % len;
        cell /= len;
    }
    indices
}

/// Where a setting of a run came from, for errors and for which values may be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The topology's `[run]`: dropped where the run cannot use it.
    Topology,
    /// The experiment's `[run]`, at this span.
    Run(Range<usize>),
    /// A `[matrix]` element, at this span.
    Matrix(Range<usize>),
}

impl Origin {
    /// Later layers win, and are the ones that introduced a conflict.
    pub fn rank(&self) -> u8 {
        match self {
            Origin::Topology => 0,
            Origin::Run(_) => 1,
            Origin::Matrix(_) => 2,
        }
    }

    pub fn span(&self) -> Option<Range<usize>> {
        match self {
            Origin::Topology => None,
            Origin::Run(s) | Origin::Matrix(s) => Some(s.clone()),
        }
    }
}

/// A run's settings, each with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Layered {
    pub mode: (Mode, Origin),
    pub heartbeat_ms: Option<(u64, Origin)>,
    pub missed_heartbeats: Option<(u32, Origin)>,
    pub trigger: Option<(Trigger, Origin)>,
    pub workload: (Workload, Origin),
    pub size: Option<(u64, Origin)>,
    pub clients: Option<(u32, Origin)>,
}

impl Layered {
    pub fn new(run: &RunSettings) -> Self {
        Layered {
            mode: (run.mode, Origin::Topology),
            heartbeat_ms: run.heartbeat_ms.map(|v| (v, Origin::Topology)),
            missed_heartbeats: run.missed_heartbeats.map(|v| (v, Origin::Topology)),
            trigger: run.trigger.map(|v| (v, Origin::Topology)),
            workload: (run.workload, Origin::Topology),
            size: run.size.map(|v| (v, Origin::Topology)),
            clients: run.clients.map(|v| (v, Origin::Topology)),
        }
    }

    pub fn set(&mut self, value: MatrixValue, origin: Origin) {
        match value {
            MatrixValue::Mode(m) => self.mode = (m, origin),
            MatrixValue::HeartbeatMs(h) => self.heartbeat_ms = Some((h, origin)),
            MatrixValue::MissedHeartbeats(m) => self.missed_heartbeats = Some((m, origin)),
            MatrixValue::Trigger(t) => self.trigger = Some((t, origin)),
            MatrixValue::Workload(w) => self.workload = (w, origin),
            MatrixValue::Size(s) => self.size = Some((s, origin)),
            MatrixValue::Clients(c) => self.clients = Some((c, origin)),
            MatrixValue::Faults(_) | MatrixValue::Link(..) => {}
        }
    }

    /// The settings, leaving out the values the mode or workload cannot use. Validation
    /// rejects such values unless they come from the topology, so only those are ever left out
    /// of a validated experiment's runs.
    pub fn settings(&self) -> RunSettings {
        let mode = self.mode.0;
        let workload = self.workload.0;
        RunSettings {
            mode,
            heartbeat_ms: self
                .heartbeat_ms
                .as_ref()
                .filter(|_| has_heartbeat(mode))
                .map(|v| v.0),
            missed_heartbeats: self
                .missed_heartbeats
                .as_ref()
                .filter(|_| has_heartbeat(mode))
                .map(|v| v.0),
            trigger: self
                .trigger
                .as_ref()
                .filter(|_| has_trigger(mode))
                .map(|v| v.0),
            workload,
            size: self
                .size
                .as_ref()
                .filter(|_| has_size(workload))
                .map(|v| v.0),
            clients: self.clients.as_ref().map(|v| v.0),
        }
    }
}

/// The rules of a topology's `[run]` (`topology/validate.rs`): which values go together.
pub(crate) fn has_heartbeat(mode: Mode) -> bool {
    mode.behaviour().run_keys().heartbeat
}

pub(crate) fn has_trigger(mode: Mode) -> bool {
    mode.behaviour().run_keys().trigger
}

pub(crate) fn has_size(workload: Workload) -> bool {
    matches!(
        workload,
        Workload::Bulk | Workload::Download | Workload::Http
    )
}

/// A duration as whole milliseconds when it is one, else fractional milliseconds.
#[derive(Debug, Clone, Copy)]
struct Millis(Duration);

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        } else {
            s.serialize_f64(d.as_secs_f64() * 1000.0)
        }
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    Millis(*d).serialize(s)
}

fn millis_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(Millis).serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odometer_turns_the_last_list_fastest() {
        let cells: Vec<Vec<usize>> = (0..6).map(|c| odometer(&[2, 3], c)).collect();
        assert_eq!(
            cells,
            [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]].map(|c| c.to_vec())
        );
        assert_eq!(odometer(&[], 0), Vec::<usize>::new());
    }

    #[test]
    fn layered_settings_leave_out_what_the_run_cannot_use() {
        let topology_run = RunSettings {
            mode: Mode::StTcp,
            heartbeat_ms: Some(200),
            missed_heartbeats: Some(3),
            trigger: None,
            workload: Workload::Bulk,
            size: Some(20_000_000),
            clients: None,
        };
        let mut l = Layered::new(&topology_run);
        l.set(MatrixValue::Mode(Mode::None), Origin::Run(0..0));
        l.set(MatrixValue::Workload(Workload::Echo), Origin::Matrix(0..0));
        let s = l.settings();
        assert_eq!(s.mode, Mode::None);
        assert_eq!(
            (s.heartbeat_ms, s.missed_heartbeats, s.size),
            (None, None, None)
        );
        // A later layer bringing back a mode that uses them gets the topology's values.
        l.set(MatrixValue::Mode(Mode::StTcp), Origin::Matrix(0..0));
        l.set(MatrixValue::Workload(Workload::Http), Origin::Matrix(0..0));
        let s = l.settings();
        assert_eq!(
            (s.heartbeat_ms, s.missed_heartbeats, s.size),
            (Some(200), Some(3), Some(20_000_000))
        );
    }

    #[test]
    fn faults_serialize_in_the_record_format() {
        let f = FaultSpec {
            at: FaultAt::After(Duration::from_millis(2500)),
            kind: FaultKind::Loss,
            target: FaultTarget::Role(Role::Primary),
            duration: Some(Duration::from_micros(1500)),
            interface: None,
            percent: Some(30.0),
            direction: Some(Direction::Both),
            peer: None,
            delay_ms: None,
        };
        let json = serde_json::to_value(&f).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "at": {"after_ms": 2500}, "kind": "loss", "target": {"role": "primary"},
                "duration_ms": 1.5, "interface": null, "percent": 30.0, "direction": "both",
                "peer": null, "delay_ms": null
            })
        );
        let at = serde_json::to_value(FaultAt::Fraction(0.4)).expect("json");
        assert_eq!(at, serde_json::json!({"fraction": 0.4}));
    }
}
