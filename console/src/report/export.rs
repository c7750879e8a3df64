//! Flat exports for people who plot in their own tools: one row per run (CSV, and the `runs`
//! of the JSON) with the figures of the report, plus the per-parameter-set summaries in the
//! JSON. A figure that was not measured is an empty CSV field or a JSON `null`, never 0.

use super::group::{self, Group};
use super::stats::Summary;
use crate::run::record::RunRecord;
use serde::Serialize;

/// One run, flat.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub experiment: String,
    pub run_index: usize,
    pub cell: usize,
    pub repetition: u32,
    pub mode: String,
    pub heartbeat_ms: Option<u64>,
    pub missed_heartbeats: Option<u64>,
    pub trigger: Option<String>,
    pub workload: String,
    pub size: Option<u64>,
    pub clients: u32,
    /// `kind of target`, joined with ` + `; empty when failure-free.
    pub faults: String,
    pub fault_at_ms: Option<f64>,
    pub failover_ms: Option<f64>,
    pub detect_ms: Option<f64>,
    pub takeover_ms: Option<f64>,
    pub stall_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub bytes_expected: u64,
    pub bytes_received: u64,
    pub bytes_lost: u64,
    pub bytes_duplicated: u64,
    pub bytes_corrupted: u64,
    pub bytes_refetched: u64,
    pub integrity_ok: bool,
    pub error: Option<String>,
    pub started_unix_ms: u64,
}

impl RunRow {
    pub fn of(r: &RunRecord) -> RunRow {
        let p = &r.mode_params;
        RunRow {
            experiment: r.experiment.clone(),
            run_index: r.run_index,
            cell: r.cell,
            repetition: r.repetition,
            mode: r.mode.clone(),
            heartbeat_ms: p.get("heartbeat_ms").and_then(|v| v.as_u64()),
            missed_heartbeats: p.get("missed_heartbeats").and_then(|v| v.as_u64()),
            trigger: p
                .get("trigger")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            workload: r.workload.clone(),
            size: r.size,
            clients: r.clients,
            faults: group::fault(r).unwrap_or_default(),
            fault_at_ms: r.faults.iter().filter_map(|f| f.at_ms).reduce(f64::min),
            failover_ms: r.failover_ms,
            detect_ms: r.detect_ms,
            takeover_ms: r.takeover_ms,
            stall_ms: r.stall_ms,
            // A run that failed before its client ran has no duration (the record holds 0).
            duration_ms: (r.duration_ms > 0.0).then_some(r.duration_ms),
            bytes_expected: r.integrity.bytes_expected,
            bytes_received: r.integrity.bytes_received,
            bytes_lost: r.integrity.bytes_lost,
            bytes_duplicated: r.integrity.bytes_duplicated,
            bytes_corrupted: r.integrity.bytes_corrupted,
            bytes_refetched: r.integrity.bytes_refetched,
            integrity_ok: r.integrity.integrity_ok,
            error: r.error.clone(),
            started_unix_ms: r.started_unix_ms,
        }
    }
}

/// One parameter set's summaries.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub mode: String,
    pub parameters: String,
    pub faulted: bool,
    pub runs: usize,
    pub failover_ms: Option<Summary>,
    pub detect_ms: Option<Summary>,
    pub takeover_ms: Option<Summary>,
    pub stall_ms: Option<Summary>,
    pub duration_ms: Option<Summary>,
    pub integrity_failures: usize,
    pub errors: usize,
}

impl GroupRow {
    pub fn of(g: &Group<'_>) -> GroupRow {
        GroupRow {
            mode: g.mode.clone(),
            parameters: g.parameters(),
            faulted: g.faulted(),
            runs: g.runs.len(),
            failover_ms: g.summary(|r| r.failover_ms),
            detect_ms: g.summary(|r| r.detect_ms),
            takeover_ms: g.summary(|r| r.takeover_ms),
            stall_ms: g.summary(|r| r.stall_ms),
            duration_ms: g.summary(|r| r.error.is_none().then_some(r.duration_ms)),
            integrity_failures: g.runs.iter().filter(|r| !r.integrity.integrity_ok).count(),
            errors: g.runs.iter().filter(|r| r.error.is_some()).count(),
        }
    }
}

#[derive(Serialize)]
struct JsonExport {
    experiment: Vec<String>,
    runs: Vec<RunRow>,
    groups: Vec<GroupRow>,
}

/// `{"experiment": [...], "runs": [...], "groups": [...]}`, pretty-printed.
pub fn to_json(records: &[RunRecord]) -> String {
    let mut experiment: Vec<String> = Vec::new();
    for r in records {
        if !experiment.contains(&r.experiment) {
            experiment.push(r.experiment.clone());
        }
    }
    let export = JsonExport {
        experiment,
        runs: records.iter().map(RunRow::of).collect(),
        groups: group::groups(records).iter().map(GroupRow::of).collect(),
    };
    // Serializing plain data (strings, numbers, options) into a String cannot fail.
    let mut s = serde_json::to_string_pretty(&export).unwrap_or_default();
    s.push('\n');
    s
}

/// The columns of the CSV, in order.
pub const CSV_COLUMNS: [&str; 27] = [
    "experiment",
    "run_index",
    "cell",
    "repetition",
    "mode",
    "heartbeat_ms",
    "missed_heartbeats",
    "trigger",
    "workload",
    "size",
    "clients",
    "faults",
    "fault_at_ms",
    "failover_ms",
    "detect_ms",
    "takeover_ms",
    "stall_ms",
    "duration_ms",
    "bytes_expected",
    "bytes_received",
    "bytes_lost",
    "bytes_duplicated",
    "bytes_corrupted",
    "bytes_refetched",
    "integrity_ok",
    "error",
    "started_unix_ms",
];

/// RFC 4180 CSV with a header line: one row per run.
pub fn to_csv(records: &[RunRecord]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for r in records {
        let row = RunRow::of(r);
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        let optu = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
        let fields: [String; 27] = [
            row.experiment,
            row.run_index.to_string(),
            row.cell.to_string(),
            row.repetition.to_string(),
            row.mode,
            optu(row.heartbeat_ms),
            optu(row.missed_heartbeats),
            row.trigger.unwrap_or_default(),
            row.workload,
            optu(row.size),
            row.clients.to_string(),
            row.faults,
            opt(row.fault_at_ms),
            opt(row.failover_ms),
            opt(row.detect_ms),
            opt(row.takeover_ms),
            opt(row.stall_ms),
            opt(row.duration_ms),
            row.bytes_expected.to_string(),
            row.bytes_received.to_string(),
            row.bytes_lost.to_string(),
            row.bytes_duplicated.to_string(),
            row.bytes_corrupted.to_string(),
            row.bytes_refetched.to_string(),
            row.integrity_ok.to_string(),
            row.error.unwrap_or_default(),
            row.started_unix_ms.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A field quoted when it holds a comma, quote or line break; quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
