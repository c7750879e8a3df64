//! The result record of one run: one JSON line in `runs/<id>/results.jsonl` (DESIGN §7).
//! A value that was not measured is `null`, never zero.

use halab_protocol::{Capabilities, ConnectionResult};
use halab_workload::{IntegrityReport, LatencySummary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One run's record. Field names are the product's interface (issue 3): keep them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub experiment: String,
    /// 0-based position in the experiment's run list, matrix cell, 1-based repetition.
    pub run_index: usize,
    pub cell: usize,
    pub repetition: u32,
    pub mode: String,
    /// heartbeat_ms, missed_heartbeats, trigger: those that are set.
    pub mode_params: BTreeMap<String, serde_json::Value>,
    /// This run's matrix values, as written.
    pub params: BTreeMap<String, String>,
    pub workload: String,
    /// Bytes per connection (bulk, download, http), else null.
    pub size: Option<u64>,
    pub clients: u32,
    pub faults: Vec<FaultRecord>,
    /// What the failover mode reported during the run (detections, fences, takeovers), in
    /// order; empty for mode none.
    #[serde(default)]
    pub mode_events: Vec<ModeEventRecord>,
    /// T_resume − T_fault of the first fault, worst over connections.
    pub failover_ms: Option<f64>,
    /// T_detect − T_fault.
    pub detect_ms: Option<f64>,
    /// T_takeover − T_fault (mode none: the client's new connection is established).
    pub takeover_ms: Option<f64>,
    /// The longest gap between received bytes, worst over connections.
    pub stall_ms: Option<f64>,
    /// What every connection received, taken together: `bytes_expected`, `bytes_received`,
    /// `bytes_lost`, `bytes_duplicated`, `bytes_corrupted`, `bytes_refetched` (fetched again
    /// because the client re-issued its request), `bytes_excess`, the `lost`, `duplicated`
    /// and `corrupted` ranges, `ranges_truncated` and `integrity_ok` (false too when a
    /// connection gave up), all at the top level of the record.
    #[serde(flatten)]
    pub integrity: IntegrityReport,
    /// Client start to the end of its last connection.
    pub duration_ms: f64,
    /// Bytes per 10 ms bucket, all connections summed, from the client's start.
    pub throughput_10ms: Vec<u64>,
    pub latency_us: Option<LatencySummary>,
    /// Per connection: what it saw, in full.
    pub connections: Vec<ConnectionResult>,
    /// Why the run did not complete, if it did not.
    pub error: Option<String>,
    pub halab_version: String,
    pub topology: String,
    pub kernel: Option<String>,
    pub capabilities: Option<Capabilities>,
    pub started_unix_ms: u64,
}

/// A fault as it happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: String,
    /// As written in the experiment (a host or a role).
    pub target: String,
    /// The host it hit.
    pub host: String,
    /// When it was scheduled, ms after the client started.
    pub scheduled_ms: f64,
    /// When it took effect, ms after the client started; null if it failed.
    pub at_ms: Option<f64>,
    /// When it was undone, ms after the client started; null if it was not (a kill that the
    /// run's end undid counts: the role restarted).
    pub reverted_ms: Option<f64>,
    /// Why it was undone: "lease expired", "requested" (end of run), "end of run",
    /// "channel closed".
    pub revert_reason: Option<String>,
    pub detail: String,
    pub error: Option<String>,
}

/// An event the failover mode reported during a run (DESIGN §7: T_detect, T_takeover, who
/// decided and why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeEventRecord {
    /// The host whose agent reported it.
    pub host: String,
    /// `detect`, `takeover`, `fence`, ... (the mode's words).
    pub kind: String,
    /// When it happened, ms after the client started; null if the event names no time.
    pub at_ms: Option<f64>,
    pub detail: String,
    /// Why acting on it failed, if it did.
    pub error: Option<String>,
}
