//! `halab run FILE [--resume RUN_ID]`: bring the experiment's testbed up, execute every run of
//! its matrix headless (a progress bar on a terminal, one line per run start and end
//! otherwise), append each record to `runs/<id>/results.jsonl` as it ends, tear down, and
//! write the report to `reports/<experiment>-<date>.md`.
//!
//! Interruption: every record is one whole, fsync'd line, so a killed run loses at most the
//! run in progress. `--resume RUN_ID` continues in `runs/<RUN_ID>/`: a torn last line (a kill
//! in the middle of a write) is cut off, the runs that have a record (by matrix cell and
//! repetition) are skipped, and the rest are run. `plan.json` in the run folder holds a hash
//! of the experiment's run list: a file changed so that its runs differ is refused.

use super::{CommandError, Context, require_local_privileges};
use crate::experiment::{self, Experiment, RunPlan};
use crate::logging;
use crate::run::append_record;
use crate::run::record::parse_results;
use crate::run::runner::{Runner, check_capabilities, check_supported};
use crate::testbed::{Testbed, UpOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};

use crate::run::PLAN_FILE;
use crate::run::one_line::{describe, summary};
const RESULTS_FILE: &str = "results.jsonl";

/// `plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    pub experiment: String,
    pub source: PathBuf,
    pub plan_hash: String,
    /// Runs planned.
    pub runs: usize,
}

/// SHA-256 of what decides the runs: the experiment's name, run timeout and every run's cell,
/// repetition, settings, matrix values and faults. Comments, key order and the topology's
/// addresses do not change it; a different matrix, repetition count or fault does.
pub fn plan_hash(exp: &Experiment) -> String {
    let plan = serde_json::json!({
        "experiment": exp.name,
        "run_timeout_ms": exp.run_timeout.as_millis() as u64,
        "runs": exp.runs(),
    });
    hex::encode(Sha256::digest(plan.to_string().as_bytes()))
}

pub async fn run(
    ctx: &Context,
    file: &Path,
    resume: Option<&str>,
    reports_dir: &Path,
) -> Result<ExitCode, CommandError> {
    let exp = experiment::load(file)?;
    let hash = plan_hash(&exp);
    let plans = exp.runs();
    // Resuming: what is already done, checked before anything is brought up.
    let resumed = match resume {
        Some(id) => Some(prepare_resume(ctx, id, &exp, &hash, &plans).await?),
        None => None,
    };
    let todo: Vec<&RunPlan> = match &resumed {
        Some(r) => plans
            .iter()
            .filter(|p| !r.done.contains(&(p.cell, p.repetition)))
            .collect(),
        None => plans.iter().collect(),
    };
    if let Some(r) = &resumed
        && todo.is_empty()
    {
        eprintln!(
            "halab: every run of {} already has its record in {}; nothing left to run",
            exp.name,
            r.results.display()
        );
        write_report(&r.results, plans.len(), reports_dir);
        return Ok(ExitCode::SUCCESS);
    }
    check_supported(&exp).map_err(|e| CommandError::Message(e.to_string()))?;
    require_local_privileges(&exp.topology)?;
    if resumed.is_some() && exp.topology.provider == crate::topology::Provider::Local {
        clear_leftovers(ctx, &exp.topology.name).await?;
    }
    let agent_binary = ctx.agent_binary()?;
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return Err(CommandError::Message(
            "cannot install signal handlers".into(),
        ));
    };

    let folder_err = |e: std::io::Error| {
        CommandError::Message(format!(
            "cannot create the run folder in {}: {e}",
            ctx.runs_dir.display()
        ))
    };
    let logs = match &resumed {
        Some(r) => logging::resume(&r.run_dir).map_err(folder_err)?,
        None => logging::start(&ctx.runs_dir, &exp.name).map_err(folder_err)?,
    };
    let results = logs.run_dir.join(RESULTS_FILE);
    if resumed.is_none() {
        let plan = PlanFile {
            experiment: exp.name.clone(),
            source: exp.source.clone(),
            plan_hash: hash.clone(),
            runs: plans.len(),
        };
        write_synced(
            &logs.run_dir.join(PLAN_FILE),
            &serde_json::to_vec_pretty(&plan).unwrap_or_default(),
        )
        .map_err(folder_err)?;
    }
    eprintln!(
        "halab: experiment {} — {} runs ({} cells × {} repetitions) on testbed {}",
        exp.name,
        plans.len(),
        exp.cells(),
        exp.repetitions,
        exp.topology.name
    );
    if let Some(r) = &resumed {
        eprintln!(
            "  resuming run {}: {} runs done, {} to go",
            logs.run_id,
            r.done.len(),
            todo.len()
        );
    }
    eprintln!("  results: {}", results.display());
    eprintln!("  logs: {}", logs.log_dir.display());

    let opts = UpOptions {
        agent_binary,
        state_dir: ctx.state_dir.clone(),
        run_id: logs.run_id.clone(),
        log_dir: logs.log_dir.clone(),
        probe: true,
        ssh: super::check::ssh_options(&exp.topology, false),
    };
    let mut testbed = Testbed::up(exp.topology.clone(), &opts).await?;
    // Faults a host cannot do are refused now, before the first run, naming what is missing.
    if let Err(e) = check_capabilities(&exp, &testbed.snapshot()) {
        testbed.down().await?;
        return Err(CommandError::Message(e.to_string()));
    }
    let mut failed = 0usize;
    let mut interrupted = false;
    let mut progress = Progress::new(plans.len(), plans.len() - todo.len());
    {
        let mut runner =
            Runner::new(&mut testbed, &exp).map_err(|e| CommandError::Message(e.to_string()))?;
        for plan in &todo {
            let n = plan.index + 1;
            progress.start(n, &describe(plan));
            let mut record = tokio::select! {
                r = runner.execute(plan) => r,
                _ = sigint.recv() => { interrupted = true; break; }
                _ = sigterm.recv() => { interrupted = true; break; }
            };
            record.plan_hash = Some(hash.clone());
            if record.error.is_some() || !record.integrity.integrity_ok {
                failed += 1;
            }
            append_record(&results, &record).map_err(|e| {
                CommandError::Message(format!("cannot append to {}: {e}", results.display()))
            })?;
            progress.end(n, &summary(&record));
        }
    }
    progress.finish();
    if interrupted {
        eprintln!(
            "interrupted: tearing down; finished runs are in {}\n  continue with: halab run {} --resume {}",
            results.display(),
            file.display(),
            logs.run_id
        );
    }
    testbed.down().await?;
    eprintln!(
        "experiment {}: {} runs this time, {} with errors or integrity failures; results in {}",
        exp.name,
        progress.ran,
        failed,
        results.display()
    );
    write_report(&results, plans.len(), reports_dir);
    drop(logs);
    Ok(if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes the report of everything in `results` (earlier sessions' runs included); a report
/// that cannot be written is a warning, the results stay.
fn write_report(results: &Path, planned: usize, reports_dir: &Path) {
    let outcome = super::report::read_records(results).and_then(|records| {
        let md = reports_dir.join(format!("{}.md", crate::report::default_stem(&records)));
        super::report::write_markdown(&md, &records, &results.display().to_string(), Some(planned))
    });
    match outcome {
        Ok(files) => {
            if let Some(md) = files.first() {
                eprintln!("report: {}", md.display());
            }
        }
        Err(e) => eprintln!("warning: no report written: {e}"),
    }
}

/// A run folder being resumed.
struct Resumed {
    run_dir: PathBuf,
    results: PathBuf,
    /// (cell, repetition) of every run with a record.
    done: BTreeSet<(usize, u32)>,
}

async fn prepare_resume(
    ctx: &Context,
    id: &str,
    exp: &Experiment,
    hash: &str,
    plans: &[RunPlan],
) -> Result<Resumed, CommandError> {
    let msg = |s: String| CommandError::Message(s);
    let run_dir = ctx.runs_dir.join(id);
    if id.is_empty() || id.contains('/') || !run_dir.is_dir() {
        return Err(msg(format!(
            "--resume {id}: no run folder {} (give the run id, the folder name under {})",
            run_dir.display(),
            ctx.runs_dir.display()
        )));
    }
    let results = run_dir.join(RESULTS_FILE);
    let plan_path = run_dir.join(PLAN_FILE);
    let stored: Option<PlanFile> = match std::fs::read(&plan_path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| msg(format!("{} is damaged: {e}", plan_path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(msg(format!("cannot read {}: {e}", plan_path.display()))),
    };
    let bytes = match std::fs::read(&results) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(msg(format!("cannot read {}: {e}", results.display()))),
    };
    let parsed = parse_results(&bytes).map_err(|e| {
        msg(format!(
            "{}: {e}; the file is damaged beyond a torn last line, so it is left as it is",
            results.display()
        ))
    })?;
    // The plan must be the one the folder's runs belong to.
    let recorded_hash = stored
        .as_ref()
        .map(|p| p.plan_hash.clone())
        .or_else(|| parsed.records.iter().find_map(|r| r.plan_hash.clone()));
    match recorded_hash {
        Some(h) if h != hash => {
            return Err(msg(format!(
                "cannot resume {id}: {} now describes different runs than when {id} started \
                 (plan hash {} then, {} now: the matrix, repetitions, faults, settings or name \
                 changed); start a new run without --resume, or restore the file",
                exp.source.display(),
                short(&h),
                short(hash)
            )));
        }
        Some(_) => {}
        None if parsed.records.is_empty() => {}
        None => {
            // Records from before plan hashes: each must be a run of this plan.
            for r in &parsed.records {
                let matches = plans.iter().any(|p| {
                    p.cell == r.cell && p.repetition == r.repetition && p.params == r.params
                });
                if !matches || r.experiment != exp.name {
                    return Err(msg(format!(
                        "cannot resume {id}: its run {} (cell {}, repetition {}) is not a run \
                         of {}",
                        r.run_index,
                        r.cell,
                        r.repetition,
                        exp.source.display()
                    )));
                }
            }
        }
    }
    if let Some(n) = parsed.torn_tail {
        // A kill in the middle of a write: the line's run is not done; cut it off so the file
        // is whole lines again before anything is appended.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&results)
            .and_then(|f| {
                f.set_len(parsed.valid_len as u64)?;
                f.sync_all()
            });
        f.map_err(|e| msg(format!("cannot truncate {}: {e}", results.display())))?;
        eprintln!(
            "halab: {}: removed a torn last line ({n} bytes) left by the interrupted run; that \
             run will be run again",
            results.display()
        );
    }
    let done = parsed
        .records
        .iter()
        .map(|r| (r.cell, r.repetition))
        .collect();
    Ok(Resumed {
        run_dir,
        results,
        done,
    })
}

/// A testbed left up by a console that was killed (nobody holds its lock) is taken down, so
/// the resumed run can bring it up again. One that a live console runs is left alone.
async fn clear_leftovers(ctx: &Context, testbed: &str) -> Result<(), CommandError> {
    let lock = crate::state::TestbedLock::try_acquire(&ctx.state_dir, testbed)
        .map_err(|e| CommandError::Message(format!("cannot check testbed {testbed}: {e}")))?;
    if lock.is_none() {
        return Err(CommandError::Message(format!(
            "testbed `{testbed}` is in use by another console (see `halab status`)"
        )));
    }
    drop(lock);
    let leftovers = crate::provider::local::list_namespaces(testbed).unwrap_or_default();
    if leftovers.is_empty() {
        return Ok(());
    }
    let removed = crate::testbed::down_by_name(testbed, &ctx.state_dir).await?;
    eprintln!(
        "halab: testbed {testbed} was left up by the interrupted run: removed {} namespaces",
        removed.len()
    );
    Ok(())
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Progress on stderr: an indicatif bar (run n/N, the current parameters, ETA) on a
/// terminal; plain lines, one per run start and end, otherwise (logs, CI).
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    /// Runs executed in this session.
    ran: usize,
    done_before: usize,
    started: Instant,
    run_started: Instant,
}

impl Progress {
    fn new(total: usize, done_before: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            // The template is a constant that parses; fall back to the default style anyway.
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} done, ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_position(done_before as u64);
            // Runs finished in an earlier session took no time in this one.
            bar.reset_eta();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            total,
            ran: 0,
            done_before,
            started: Instant::now(),
            run_started: Instant::now(),
        }
    }

    fn start(&mut self, n: usize, label: &str) {
        self.run_started = Instant::now();
        match &self.bar {
            Some(bar) => bar.set_message(format!("run {n}/{}: {label}", self.total)),
            None => eprintln!("run {n}/{} start: {label}", self.total),
        }
    }

    fn end(&mut self, n: usize, summary: &str) {
        self.ran += 1;
        let took = self.run_started.elapsed().as_secs_f64();
        match &self.bar {
            Some(bar) => {
                bar.println(format!("run {n}/{} ({took:.1} s): {summary}", self.total));
                bar.inc(1);
            }
            None => {
                let left = self.total - self.done_before - self.ran;
                let per_run = self.started.elapsed().as_secs_f64() / self.ran as f64;
                eprintln!(
                    "run {n}/{} end ({took:.1} s, ETA {:.0} s): {summary}",
                    self.total,
                    per_run * left as f64
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Experiment {
        // Unit tests run in the crate folder; the fixture topology is found from there.
        let path = Path::new("tests/fixtures/experiments/plan-hash.toml");
        experiment::parse_str(text, path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_plan_hash_changes_with_the_runs_and_not_with_comments_or_key_order() {
        let base = "topology = \"topo.toml\"\nname = \"h\"\nrepetitions = 2\n[run]\n\
                    mode = \"none\"\nworkload = \"bulk\"\n[matrix]\nclients = [1, 2]\n";
        let h = plan_hash(&parse(base));
        assert_eq!(h.len(), 64);
        let commented = format!("# a comment\n{base}");
        assert_eq!(plan_hash(&parse(&commented)), h);
        let reordered = base.replace(
            "mode = \"none\"\nworkload = \"bulk\"",
            "workload = \"bulk\"\nmode = \"none\"",
        );
        assert_eq!(plan_hash(&parse(&reordered)), h);
        for changed in [
            base.replace("repetitions = 2", "repetitions = 3"),
            base.replace("clients = [1, 2]", "clients = [1, 3]"),
            base.replace("name = \"h\"", "name = \"g\""),
            base.replace(
                "repetitions = 2\n",
                "repetitions = 2\nrun_timeout = \"10s\"\n",
            ),
        ] {
            assert_ne!(plan_hash(&parse(&changed)), h, "{changed}");
        }
        let faulted = format!(
            "{base}[[faults]]\nat = \"1s\"\nkind = \"process-kill\"\ntarget = \"primary\"\n"
        );
        assert_ne!(plan_hash(&parse(&faulted)), h);
    }
}
