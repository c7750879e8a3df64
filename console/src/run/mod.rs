//! Running experiments headless (`halab run`): the [`runner`] executes runs on a testbed and
//! each becomes a [`record::RunRecord`], appended to `runs/<id>/results.jsonl` as it ends.

pub mod one_line;
pub mod record;
pub mod runner;

/// The file beside an experiment run's `results.jsonl` that holds its plan (how many runs, and
/// what each is), for `--resume` and for the report's count of planned runs.
pub const PLAN_FILE: &str = "plan.json";

use std::io::Write;
use std::path::Path;

/// Appends one record as one line and syncs it to disk, so a killed run never leaves half a
/// line behind and a finished run is never lost.
pub fn append_record(path: &Path, record: &record::RunRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write(2) of the whole line: O_APPEND keeps concurrent appends whole too.
    f.write_all(&line)?;
    f.sync_data()
}
