//! What a report is made from and what it is made of (a leaf: the report's parts use it).

use crate::run::record::RunRecord;
use thiserror::Error;

/// What a report is made from.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    /// In the order they were run.
    pub records: &'a [RunRecord],
    /// The plots are named `<plot_stem>-throughput.svg` and `<plot_stem>-failover.svg` and
    /// linked by those names, relative to the report: write them beside it.
    pub plot_stem: &'a str,
    /// Where the records came from, as the report names it.
    pub source: &'a str,
    /// How many runs the experiment plans, when known (a resumed or interrupted run has fewer
    /// records).
    pub planned_runs: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// Relative to the report's folder.
    pub file_name: String,
    pub title: String,
    pub svg: String,
}

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("cannot draw the plot `{plot}`: {reason}")]
    Plot { plot: String, reason: String },
}
