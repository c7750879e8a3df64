//! `halab run FILE`: bring the experiment's testbed up, execute every run of its matrix
//! headless, append each record to `runs/<id>/results.jsonl` as it ends, tear down.

use super::{CommandError, Context, require_local_privileges};
use crate::experiment;
use crate::logging;
use crate::run::runner::{Runner, check_capabilities, check_supported};
use crate::run::{append_record, record::RunRecord};
use crate::testbed::{Testbed, UpOptions};
use std::path::Path;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

pub async fn run(ctx: &Context, file: &Path) -> Result<ExitCode, CommandError> {
    let exp = experiment::load(file)?;
    check_supported(&exp).map_err(|e| CommandError::Message(e.to_string()))?;
    require_local_privileges(&exp.topology)?;
    let agent_binary = ctx.agent_binary()?;
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return Err(CommandError::Message(
            "cannot install signal handlers".into(),
        ));
    };

    let plans = exp.runs();
    let logs = logging::start(&ctx.runs_dir, &exp.name).map_err(|e| {
        CommandError::Message(format!(
            "cannot create the run folder in {}: {e}",
            ctx.runs_dir.display()
        ))
    })?;
    let results = logs.run_dir.join("results.jsonl");
    eprintln!(
        "halab: experiment {} — {} runs ({} cells × {} repetitions) on testbed {}",
        exp.name,
        plans.len(),
        exp.cells(),
        exp.repetitions,
        exp.topology.name
    );
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
    {
        let mut runner =
            Runner::new(&mut testbed, &exp).map_err(|e| CommandError::Message(e.to_string()))?;
        for (n, plan) in plans.iter().enumerate() {
            let label = describe(plan);
            eprintln!("run {}/{}: {label}", n + 1, plans.len());
            let record = tokio::select! {
                r = runner.execute(plan) => r,
                _ = sigint.recv() => { interrupted = true; break; }
                _ = sigterm.recv() => { interrupted = true; break; }
            };
            eprintln!("  {}", summary(&record));
            if record.error.is_some() || !record.integrity.integrity_ok {
                failed += 1;
            }
            append_record(&results, &record).map_err(|e| {
                CommandError::Message(format!("cannot append to {}: {e}", results.display()))
            })?;
        }
    }
    if interrupted {
        eprintln!(
            "interrupted: tearing down; finished runs are in {}",
            results.display()
        );
    }
    testbed.down().await?;
    eprintln!(
        "experiment {}: {} runs, {} with errors or integrity failures; results in {}",
        exp.name,
        plans.len(),
        failed,
        results.display()
    );
    drop(logs);
    Ok(if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn describe(plan: &experiment::RunPlan) -> String {
    let s = &plan.settings;
    let mut parts = vec![
        format!("mode={}", s.mode),
        format!("workload={}", s.workload),
    ];
    for (k, v) in &plan.params {
        if k != "mode" && k != "workload" {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.push(format!("rep {}", plan.repetition));
    parts.join(" ")
}

/// One line per finished run: the figures a user looks for first.
pub fn summary(r: &RunRecord) -> String {
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.1} ms")).unwrap_or("-".into());
    let mut s = format!(
        "{} in {:.0} ms; failover {}, detect {}, stall {}; {} of {} bytes, lost {}, duplicated {}, corrupted {}, refetched {}",
        if r.integrity.integrity_ok {
            "integrity ok"
        } else {
            "INTEGRITY FAILED"
        },
        r.duration_ms,
        ms(r.failover_ms),
        ms(r.detect_ms),
        ms(r.stall_ms),
        r.integrity.bytes_received,
        r.integrity.bytes_expected,
        r.integrity.bytes_lost,
        r.integrity.bytes_duplicated,
        r.integrity.bytes_corrupted,
        r.integrity.bytes_refetched
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("; error: {e}"));
    }
    s
}
