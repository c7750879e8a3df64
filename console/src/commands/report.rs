//! `halab report RESULTS [-o FILE] [--format md|json|csv]`, and the report `halab run` writes
//! at its end: the file side of [`crate::report`] (read the records, write the Markdown and
//! its SVGs beside it, or the export).

use super::CommandError;
use crate::report::{self, ReportInput, export};
use crate::run::record::{RunRecord, parse_results};
use clap::ValueEnum;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Markdown with SVG plots beside it
    Md,
    /// Runs and per-parameter-set summaries
    Json,
    /// One row per run
    Csv,
}

pub fn run(
    results: &Path,
    output: Option<&Path>,
    format: Format,
    reports_dir: &Path,
) -> Result<ExitCode, CommandError> {
    let records = read_records(results)?;
    let planned = planned_runs(results);
    match format {
        Format::Md => {
            let md = match output {
                Some(p) if p != Path::new("-") => p.to_path_buf(),
                Some(_) => {
                    return Err(CommandError::Message(
                        "a Markdown report has SVG plots beside it: give a file with -o, not -"
                            .into(),
                    ));
                }
                None => reports_dir.join(format!("{}.md", report::default_stem(&records))),
            };
            let written = write_markdown(&md, &records, &results.display().to_string(), planned)?;
            for p in written {
                println!("{}", p.display());
            }
        }
        Format::Json | Format::Csv => {
            let text = if format == Format::Json {
                export::to_json(&records)
            } else {
                export::to_csv(&records)
            };
            match output {
                Some(p) if p != Path::new("-") => {
                    write_file(p, text.as_bytes())?;
                    println!("{}", p.display());
                }
                _ => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())
                        .and_then(|()| out.flush())
                        .map_err(|e| CommandError::Message(format!("cannot write: {e}")))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The records of a `results.jsonl`; a torn last line (a killed write) is left out with a
/// warning, any other damage is an error.
pub fn read_records(results: &Path) -> Result<Vec<RunRecord>, CommandError> {
    let bytes = std::fs::read(results)
        .map_err(|e| CommandError::Message(format!("cannot read {}: {e}", results.display())))?;
    let parsed = parse_results(&bytes)
        .map_err(|e| CommandError::Message(format!("{}: {e}", results.display())))?;
    if let Some(n) = parsed.torn_tail {
        eprintln!(
            "warning: {}: the last line ({n} bytes) is incomplete, from a run that was killed \
             while writing it; it is left out",
            results.display()
        );
    }
    Ok(parsed.records)
}

/// How many runs the experiment of `results` planned, from `plan.json` beside it.
pub fn planned_runs(results: &Path) -> Option<usize> {
    let plan = results.with_file_name(crate::run::PLAN_FILE);
    let text = std::fs::read_to_string(plan).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("runs")?.as_u64().map(|n| n as usize)
}

/// Renders the report of `records` to `md` and its plots beside it; returns the files written.
pub fn write_markdown(
    md: &Path,
    records: &[RunRecord],
    source: &str,
    planned_runs: Option<usize>,
) -> Result<Vec<PathBuf>, CommandError> {
    let stem = md
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| report::default_stem(records));
    let input = ReportInput {
        records,
        plot_stem: &stem,
        source,
        planned_runs,
    };
    let rendered = report::render(&input).map_err(|e| CommandError::Message(e.to_string()))?;
    let dir = md.parent().unwrap_or(Path::new(""));
    let mut written = vec![md.to_path_buf()];
    write_file(md, rendered.markdown.as_bytes())?;
    for p in &rendered.plots {
        let path = dir.join(&p.file_name);
        write_file(&path, p.svg.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CommandError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| CommandError::Message(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, bytes)
        .map_err(|e| CommandError::Message(format!("cannot write {}: {e}", path.display())))
}
