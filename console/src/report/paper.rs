//! The papers' published numbers, printed beside ours in the reports of the experiments that
//! reproduce them (`experiments/*.toml`). Keyed by experiment name: an experiment named
//! `sttcp-table-3-2` gets thesis table 3.2 beside its results, whatever file it came from.
//!
//! Each table is laid out as the paper lays it out (rows × columns); each of its cells says
//! which of our runs it compares with (a selection on the run's mode, parameters, workload,
//! size and whether it had a fault) and which figure, so the report can put our mean in the
//! same place as the paper's number.

use crate::run::record::RunRecord;

/// A figure of a run, as a paper's table means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Client start to the end of its last connection (the papers' "total time").
    Duration,
    /// T_resume − T_fault.
    Failover,
    /// T_detect − T_fault.
    Detect,
    /// T_takeover − T_fault (paper 003's "recovery": detection plus takeover).
    Takeover,
    /// T_takeover − T_detect (paper 003's "takeover latency").
    TakeoverAfterDetect,
}

impl Metric {
    /// The figure in ms, `None` when the run did not measure it.
    pub fn of(self, r: &RunRecord) -> Option<f64> {
        match self {
            Metric::Duration => (r.error.is_none()).then_some(r.duration_ms),
            Metric::Failover => r.failover_ms,
            Metric::Detect => r.detect_ms,
            Metric::Takeover => r.takeover_ms,
            Metric::TakeoverAfterDetect => Some(r.takeover_ms? - r.detect_ms?),
        }
    }
}

/// The unit a paper's table is in; our figures (ms) are converted to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
}

impl Unit {
    pub fn from_ms(self, ms: f64) -> f64 {
        match self {
            Unit::Seconds => ms / 1000.0,
            Unit::Millis => ms,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Millis => "ms",
        }
    }
}

/// Which runs a row or column stands for: every (key, value) must hold. Keys: `mode`,
/// `workload`, `size` (bytes), `heartbeat_ms`, `faulted` (`true`/`false`).
pub type Selection = &'static [(&'static str, &'static str)];

#[derive(Debug)]
pub struct Column {
    pub label: &'static str,
    pub select: Selection,
    pub metric: Metric,
}

#[derive(Debug)]
pub struct Row {
    pub label: &'static str,
    pub select: Selection,
    /// The paper's number per column, in the table's unit.
    pub paper: &'static [f64],
}

#[derive(Debug)]
pub struct PaperTable {
    /// The experiment name whose reports print it.
    pub experiment: &'static str,
    pub title: &'static str,
    pub unit: Unit,
    pub columns: &'static [Column],
    pub rows: &'static [Row],
    /// How our figures relate to the paper's, and anything odd about the paper's numbers.
    pub note: &'static str,
}

impl PaperTable {
    /// Whether run `r` belongs in the cell (row, column).
    pub fn selects(row: &Row, column: &Column, r: &RunRecord) -> bool {
        row.select
            .iter()
            .chain(column.select)
            .all(|(k, v)| facet(r, k).as_deref() == Some(*v))
    }
}

/// A run's value for a selection key.
fn facet(r: &RunRecord, key: &str) -> Option<String> {
    match key {
        "mode" => Some(r.mode.clone()),
        "workload" => Some(r.workload.clone()),
        "size" => r.size.map(|s| s.to_string()),
        "faulted" => Some((!r.faults.is_empty()).to_string()),
        other => r.mode_params.get(other).map(|v| match v.as_str() {
            Some(s) => s.to_string(),
            None => v.to_string(),
        }),
    }
}

/// The table printed beside the reports of experiment `name`, if any.
pub fn table_for(name: &str) -> Option<&'static PaperTable> {
    TABLES.iter().find(|t| t.experiment == name)
}

/// The thesis' columns: echo, interactive, bulk 1, 5, 20 and 100 MB, of the runs with
/// (`"true"`) or without (`"false"`) a fault.
macro_rules! sttcp_columns {
    ($metric:expr, $faulted:literal) => {
        &[
            Column {
                label: "Echo",
                select: &[("workload", "echo"), ("faulted", $faulted)],
                metric: $metric,
            },
            Column {
                label: "Interactive",
                select: &[("workload", "interactive"), ("faulted", $faulted)],
                metric: $metric,
            },
            Column {
                label: "Bulk 1 MB",
                select: &[
                    ("workload", "bulk"),
                    ("size", "1000000"),
                    ("faulted", $faulted),
                ],
                metric: $metric,
            },
            Column {
                label: "Bulk 5 MB",
                select: &[
                    ("workload", "bulk"),
                    ("size", "5000000"),
                    ("faulted", $faulted),
                ],
                metric: $metric,
            },
            Column {
                label: "Bulk 20 MB",
                select: &[
                    ("workload", "bulk"),
                    ("size", "20000000"),
                    ("faulted", $faulted),
                ],
                metric: $metric,
            },
            Column {
                label: "Bulk 100 MB",
                select: &[
                    ("workload", "bulk"),
                    ("size", "100000000"),
                    ("faulted", $faulted),
                ],
                metric: $metric,
            },
        ]
    };
}

/// Every built-in table.
pub static TABLES: &[PaperTable] = &[
    PaperTable {
        experiment: "sttcp-table-3-1",
        title: "Thesis (Marwah 2008) table 3.1: average total time without failure",
        unit: Unit::Seconds,
        columns: sttcp_columns!(Metric::Duration, "false"),
        rows: &[
            Row {
                label: "Standard TCP",
                select: &[("mode", "none")],
                paper: &[0.892, 2.000, 0.640, 3.199, 12.788, 63.952],
            },
            Row {
                label: "ST-TCP 5s HB",
                select: &[("mode", "st-tcp"), ("heartbeat_ms", "5000")],
                paper: &[0.889, 2.000, 0.639, 3.196, 12.791, 63.950],
            },
            Row {
                label: "ST-TCP 1s HB",
                select: &[("mode", "st-tcp"), ("heartbeat_ms", "1000")],
                paper: &[0.890, 1.998, 0.641, 3.200, 12.824, 63.883],
            },
            Row {
                label: "ST-TCP 200ms HB",
                select: &[("mode", "st-tcp"), ("heartbeat_ms", "200")],
                paper: &[0.898, 2.000, 0.640, 3.203, 12.794, 63.964],
            },
            Row {
                label: "ST-TCP 50ms HB",
                select: &[("mode", "st-tcp"), ("heartbeat_ms", "50")],
                paper: &[0.896, 1.998, 0.658, 3.201, 12.897, 63.883],
            },
        ],
        note: "The thesis ran on 2001 hardware over a 10/100 Mbit hub; its absolute times are not \
               ours to match, the comparison is between rows: ST-TCP against standard TCP.",
    },
    PaperTable {
        experiment: "sttcp-table-3-2",
        title: "Thesis (Marwah 2008) table 3.2: ST-TCP failover time",
        unit: Unit::Seconds,
        columns: sttcp_columns!(Metric::Failover, "true"),
        rows: &[
            Row {
                label: "ST-TCP 5s HB",
                select: &[("mode", "st-tcp"), ("heartbeat_ms", "5000")],
                paper: &[22.309, 23.832, 22.580, 24.013, 20.805, 21.764],
            },
            Row {
                label: "ST-TCP 1s HB",
                select: &[("mode", "st-tcp"), ("heartbeat_ms", "1000")],
                paper: &[5.524, 6.187, 5.723, 4.667, 2.067, 5.022],
            },
            Row {
                label: "ST-TCP 200ms HB",
                select: &[("mode", "st-tcp"), ("heartbeat_ms", "200")],
                paper: &[0.953, 1.468, 1.245, 1.255, 1.036, 0.485],
            },
            Row {
                label: "ST-TCP 50ms HB",
                select: &[("mode", "st-tcp"), ("heartbeat_ms", "50")],
                paper: &[0.219, 0.412, 0.417, 0.627, 0.676, 0.422],
            },
        ],
        note: "The thesis' failover time is the total time with a crash minus the total time \
               without; ours is failover_ms, T_resume − T_fault, measured per run. The thesis \
               declared the primary dead after 3 missed heartbeats, as the experiment does.",
    },
    PaperTable {
        experiment: "app-migration-file-sizes",
        title: "Paper 000: transfer time for file sizes",
        unit: Unit::Millis,
        columns: &[
            Column {
                label: "223MB mp4",
                select: &[("size", "223000000")],
                metric: Metric::Duration,
            },
            Column {
                label: "12MB mov",
                select: &[("size", "12000000")],
                metric: Metric::Duration,
            },
            Column {
                label: "49KB txt",
                select: &[("size", "49000")],
                metric: Metric::Duration,
            },
            Column {
                label: "6.6KB txt",
                select: &[("size", "6600")],
                metric: Metric::Duration,
            },
        ],
        rows: &[
            Row {
                label: "Without failure",
                select: &[("mode", "app-migration"), ("faulted", "false")],
                paper: &[1228.8, 69.051, 1.767, 1.291],
            },
            Row {
                label: "With failure",
                select: &[("mode", "app-migration"), ("faulted", "true")],
                paper: &[144.3, 124.53, 4.940, 2.117],
            },
        ],
        note: "As published: the paper's 223 MB time with a failure (144.3 ms) is below its \
               time without (1228.8 ms); the paper ran client and servers in Docker on one \
               machine with an artificial transfer delay.",
    },
    PaperTable {
        experiment: "detection-vs-interval",
        title: "Paper 003 (Ayari et al.) table 1: average failure detection and takeover latencies",
        unit: Unit::Seconds,
        columns: &[
            Column {
                label: "Detection",
                select: &[],
                metric: Metric::Detect,
            },
            Column {
                label: "Takeover",
                select: &[],
                metric: Metric::TakeoverAfterDetect,
            },
            Column {
                label: "Recovery",
                select: &[],
                metric: Metric::Takeover,
            },
        ],
        rows: &[
            Row {
                label: "FDTI 1 s",
                select: &[("heartbeat_ms", "1000"), ("faulted", "true")],
                paper: &[2.153039, 0.359052, 2.512091],
            },
            Row {
                label: "FDTI 3 s",
                select: &[("heartbeat_ms", "3000"), ("faulted", "true")],
                paper: &[3.655465, 0.371398, 4.026863],
            },
            Row {
                label: "FDTI 5 s",
                select: &[("heartbeat_ms", "5000"), ("faulted", "true")],
                paper: &[5.141020, 0.374115, 5.515135],
            },
        ],
        note: "The paper gives µs; here in seconds. Detection = detect_ms, takeover = \
               takeover_ms − detect_ms, recovery = takeover_ms (detection plus takeover).",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_one_paper_number_per_column() {
        for t in TABLES {
            for r in t.rows {
                assert_eq!(
                    r.paper.len(),
                    t.columns.len(),
                    "{} {}",
                    t.experiment,
                    r.label
                );
            }
        }
        assert!(table_for("sttcp-table-3-2").is_some());
        assert!(table_for("modes-compared").is_none());
    }
}
