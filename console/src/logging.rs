//! Run folders and log files. Every run gets `runs/<id>/`, and its log lines — the console's and,
//! tagged with their host, the agents' — go to `runs/<id>/logs/console.log` through
//! tracing-appender, never to the terminal, so a dashboard is never scribbled over.

use std::path::{Path, PathBuf};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// A run's folder and the guard that keeps its log writer alive: drop it last, after the last
/// log line, or buffered lines are lost.
pub struct RunLogs {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
    _guard: Option<WorkerGuard>,
}

/// Runs folder in force: `$HALAB_RUNS_DIR`, else `runs` in the current directory.
pub fn runs_dir() -> PathBuf {
    std::env::var_os("HALAB_RUNS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("runs"))
}

/// Creates `runs/<name>-<UTC time>/logs/` and routes tracing into `console.log` there
/// (level from `$HALAB_LOG`, default `info`). If a global subscriber is already installed
/// (a second testbed in one process, tests), the folder is still made but logging stays as it was.
pub fn start(runs: &Path, name: &str) -> std::io::Result<RunLogs> {
    let stamp = crate::state::compact_utc(crate::state::unix_ms());
    let mut run_id = format!("{name}-{stamp}");
    let mut n = 2;
    while runs.join(&run_id).exists() {
        run_id = format!("{name}-{stamp}-{n}");
        n += 1;
    }
    open(run_id.clone(), runs.join(&run_id))
}

/// Continues logging into the existing run folder `run_dir` (`halab run --resume`): its
/// `logs/console.log` is appended to.
pub fn resume(run_dir: &Path) -> std::io::Result<RunLogs> {
    let run_id = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    open(run_id, run_dir.to_path_buf())
}

fn open(run_id: String, run_dir: PathBuf) -> std::io::Result<RunLogs> {
    let log_dir = run_dir.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let appender = tracing_appender::rolling::never(&log_dir, "console.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_env("HALAB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .is_ok();
    Ok(RunLogs {
        run_id,
        run_dir,
        log_dir,
        _guard: installed.then_some(guard),
    })
}
