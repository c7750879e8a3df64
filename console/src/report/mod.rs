//! Reports (DESIGN §7–8): an experiment's run records turned into Markdown with tables laid out
//! like the papers', SVG plots to put beside it, and flat JSON/CSV exports.
//!
//! Everything here is pure: records in, strings out. No clock, no file: the same records give
//! the same report byte for byte (its dates are the records' own), so a report can be checked
//! against a snapshot. Writing the files is `commands::report`'s job.
//!
//! - [`group`] sorts runs into parameter sets (mode, its parameters, workload, fault);
//! - [`stats`] summarises a set's figures (nearest-rank p50/p95, max, mean);
//! - [`markdown`] lays the report out; [`paper`] holds the papers' published numbers that
//!   the report prints beside ours, keyed by experiment name;
//! - [`plot`] draws the SVGs; [`export`] writes the JSON and CSV.

pub mod export;
pub mod group;
pub mod input;
pub mod markdown;
pub mod paper;
pub mod plot;
pub mod stats;

pub use input::{Plot, ReportError, ReportInput};

use crate::run::record::RunRecord;

/// A rendered report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub markdown: String,
    /// The SVGs the Markdown links to, by file name.
    pub plots: Vec<Plot>,
}

/// Renders the Markdown report and its plots.
pub fn render(input: &ReportInput<'_>) -> Result<Report, ReportError> {
    let plots = plot::plots(input.records, input.plot_stem)?;
    let markdown = markdown::render(input, &plots);
    Ok(Report { markdown, plots })
}

/// `<experiment>-<UTC date and time of the first run>`: the report's default file stem, the
/// same for every report of one experiment run, so re-rendering (or a resumed run) replaces
/// the earlier report instead of piling up new ones.
pub fn default_stem(records: &[RunRecord]) -> String {
    match records.first() {
        Some(r) => format!(
            "{}-{}",
            r.experiment,
            crate::state::compact_utc(r.started_unix_ms)
        ),
        None => "empty-report".to_string(),
    }
}
