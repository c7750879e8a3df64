//! The result record of one run: one JSON line in `runs/<id>/results.jsonl` (DESIGN §7).
//! A value that was not measured is `null`, never zero.

use halab_protocol::{Capabilities, ConnectionResult};
use halab_workload::{IntegrityReport, LatencySummary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one delay line of the links did during a run: packets it delayed (let go) and packets
/// it dropped (its bounded queue full, or the kernel's queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayLineRecord {
    pub delayed: u64,
    pub dropped: u64,
}

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
    /// The links this run had that are not plain, `host.network` → `rate 10Mbit, delay 20ms`
    /// (the topology's, the experiment's `[links]` and the matrix cell's together).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
    /// What each delay line of the links did during the run, `host.interface from <senders>`
    /// → packets delayed and dropped (its queue full, or the kernel's); empty when no link was
    /// delayed by one (plain links, or netem).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub delay_lines: BTreeMap<String, DelayLineRecord>,
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
    /// The hash of the experiment's run list this run belongs to (see `commands::run`):
    /// `--resume` refuses to add runs of a different plan. Absent in records written before it
    /// existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_hash: Option<String>,
}

/// A fault as it happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: String,
    /// As written in the experiment (a host or a role).
    pub target: String,
    /// The host it hit.
    pub host: String,
    /// When it was due, ms after the client started: the time the experiment gives, or, for a
    /// fault timed as a fraction of the run, when the client reported having that fraction of
    /// its bytes; null when the run ended before that.
    pub scheduled_ms: Option<f64>,
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
    /// `detect`, `takeover`, `fence`, ... (the kinds every mode's events map onto).
    pub kind: halab_protocol::EventKind,
    /// When it happened, ms after the client started; null if the event names no time.
    pub at_ms: Option<f64>,
    pub detail: String,
    /// Why acting on it failed, if it did.
    pub error: Option<String>,
}

/// What a `results.jsonl` holds: its records, and a torn last line if a killed write left one.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedResults {
    pub records: Vec<RunRecord>,
    /// Where the valid lines end: the length to truncate the file to, to drop a torn line.
    pub valid_len: usize,
    /// A last line that is incomplete (no newline) or does not parse: its length in bytes.
    pub torn_tail: Option<usize>,
}

/// A line before the last that is not a record: the file was damaged otherwise than by a write
/// cut short, and nothing in it is dropped silently.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line} is not a run record: {reason}")]
pub struct ResultsError {
    pub line: usize,
    pub reason: String,
}

/// Parses the contents of a `results.jsonl`. Every line but the last must be a record; the
/// last may be torn (a process killed in the middle of its write, or a disk that lost the
/// unsynced end), which is reported in [`ParsedResults::torn_tail`], not an error. Empty lines
/// are skipped.
pub fn parse_results(bytes: &[u8]) -> Result<ParsedResults, ResultsError> {
    let mut records = Vec::new();
    let mut valid_len = 0usize;
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < bytes.len() {
        line_no += 1;
        let (end, complete) = match bytes[start..].iter().position(|b| *b == b'\n') {
            Some(i) => (start + i, true),
            None => (bytes.len(), false),
        };
        let line = &bytes[start..end];
        let next = if complete { end + 1 } else { end };
        let is_last = next >= bytes.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            if complete {
                valid_len = next;
            }
            start = next;
            continue;
        }
        match serde_json::from_slice::<RunRecord>(line) {
            Ok(r) if complete => {
                records.push(r);
                valid_len = next;
            }
            // A whole record without its newline: the write was cut just before it.
            Ok(_) => {
                return Ok(ParsedResults {
                    records,
                    valid_len,
                    torn_tail: Some(bytes.len() - valid_len),
                });
            }
            Err(_) if is_last => {
                return Ok(ParsedResults {
                    records,
                    valid_len,
                    torn_tail: Some(bytes.len() - valid_len),
                });
            }
            Err(e) => {
                return Err(ResultsError {
                    line: line_no,
                    reason: e.to_string(),
                });
            }
        }
        start = next;
    }
    Ok(ParsedResults {
        records,
        valid_len,
        torn_tail: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> String {
        // A minimal record, as the runner writes them (values irrelevant here).
        let r = serde_json::json!({
            "experiment": "e", "run_index": i, "cell": i, "repetition": 1, "mode": "none",
            "mode_params": {}, "params": {}, "workload": "echo", "size": null, "clients": 1,
            "faults": [], "failover_ms": null, "detect_ms": null, "takeover_ms": null,
            "stall_ms": null, "bytes_expected": 0, "bytes_received": 0, "bytes_lost": 0,
            "bytes_duplicated": 0, "bytes_corrupted": 0, "bytes_refetched": 0,
            "bytes_excess": 0, "lost": [], "duplicated": [], "corrupted": [],
            "ranges_truncated": false, "integrity_ok": true, "duration_ms": 1.0,
            "throughput_10ms": [], "latency_us": null, "connections": [], "error": null,
            "halab_version": "0", "topology": "t", "kernel": null, "capabilities": null,
            "started_unix_ms": 0
        });
        format!("{r}\n")
    }

    #[test]
    fn whole_lines_parse_and_a_torn_last_line_is_reported_with_where_to_cut() {
        let whole = format!("{}{}", line(0), line(1));
        let p = parse_results(whole.as_bytes()).unwrap();
        assert_eq!(
            (p.records.len(), p.valid_len, p.torn_tail),
            (2, whole.len(), None)
        );
        assert_eq!(p.records[1].plan_hash, None);

        let third = line(2);
        for cut in [1, third.len() / 2, third.len() - 1] {
            let text = format!("{whole}{}", &third[..cut]);
            let p = parse_results(text.as_bytes()).unwrap();
            assert_eq!(p.records.len(), 2, "cut at {cut}");
            assert_eq!(p.valid_len, whole.len());
            assert_eq!(p.torn_tail, Some(cut));
        }
        assert_eq!(parse_results(b"").unwrap().records.len(), 0);
    }

    #[test]
    fn a_damaged_line_before_the_last_is_an_error() {
        let text = format!("{}not json\n{}", line(0), line(2));
        let e = parse_results(text.as_bytes()).unwrap_err();
        assert_eq!(e.line, 2);
    }
}
