//! `halab up FILE`: bring the testbed up, then open the live dashboard (when stdout is a
//! terminal and --no-tui is not given) or print host states as they change; tear it all down
//! on `q`, Ctrl-C, SIGTERM or SIGHUP.

use super::{CommandError, Context, load_topology, require_local_privileges, status};
use crate::logging;
use crate::state::HostState;
use crate::testbed::{Testbed, UpOptions};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

pub async fn run(
    ctx: &Context,
    file: &Path,
    no_tui: bool,
    accept_new_host_keys: bool,
) -> Result<ExitCode, CommandError> {
    let dashboard = !no_tui && std::io::stdout().is_terminal();
    let topo = load_topology(file)?;
    require_local_privileges(&topo)?;
    let agent_binary = ctx.agent_binary()?;
    let ssh = super::check::ssh_options(&topo, accept_new_host_keys);

    // Signal handlers go in before anything is created: from here on Ctrl-C means "tear down",
    // never "die and leave namespaces behind".
    let signals = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut sigint), Ok(mut sigterm), Ok(mut sighup)) = signals else {
        return Err(CommandError::Message(
            "cannot install signal handlers".into(),
        ));
    };

    let logs = logging::start(&ctx.runs_dir, &topo.name).map_err(|e| {
        CommandError::Message(format!(
            "cannot create the run folder in {}: {e}",
            ctx.runs_dir.display()
        ))
    })?;
    println!(
        "halab: bringing up testbed {} — provider {}, {} hosts, {} networks, mode {}",
        topo.name,
        topo.provider,
        topo.hosts.len(),
        topo.networks.len(),
        topo.run.mode
    );
    println!("  logs: {}", logs.log_dir.display());
    tracing::info!(testbed = %topo.name, file = %file.display(), "bringing testbed up");

    let opts = UpOptions {
        agent_binary,
        state_dir: ctx.state_dir.clone(),
        run_id: logs.run_id.clone(),
        log_dir: logs.log_dir.clone(),
        // Record what every host can do; later runs name these capabilities in their records.
        probe: true,
        ssh,
    };
    let mut testbed = Testbed::up(topo, &opts).await?;
    // The topology's mode, where this version runs it; otherwise the roles run as mode none,
    // and the user is told so.
    match crate::modes::config_for(&testbed.topology, &testbed.topology.run, testbed.mode_key()) {
        Ok(mode) => testbed.set_mode(mode),
        Err(e) => println!("{e}; the roles run as mode none"),
    }
    // Every host takes up its roles: the servers listen, so clients (and curl) can connect.
    testbed.start_roles().await?;
    let t = &testbed.up_timings;
    println!(
        "testbed {} is up in {:.2} s (provider {:.2} s, agents {:.2} s)",
        testbed.topology.name,
        t.total.as_secs_f64(),
        t.provider.as_secs_f64(),
        t.agents.as_secs_f64()
    );
    if dashboard {
        let file = file.to_path_buf();
        let results = logs.run_dir.join("results.jsonl");
        let outcome = dashboard::run(testbed, &file, results, (sigint, sigterm, sighup)).await;
        drop(logs);
        return outcome;
    }
    print!("{}", status::render(&testbed.snapshot(), &ctx.state_dir));
    println!("Ctrl-C tears it down.");

    let mut changes = testbed.subscribe();
    let mut last: BTreeMap<String, HostState> = testbed
        .snapshot()
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.state))
        .collect();
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
                for h in testbed.snapshot().hosts {
                    let before = last.insert(h.name.clone(), h.state);
                    if before != Some(h.state) {
                        let why = h.reason.map(|r| format!(": {r}")).unwrap_or_default();
                        println!("  {} {} → {}{why}", h.name,
                            before.map(|s| s.to_string()).unwrap_or_default(), h.state);
                    }
                }
            }
        }
    }

    println!("tearing down testbed {} ...", testbed.topology.name);
    let name = testbed.topology.name.clone();
    let t = testbed.down().await?;
    println!(
        "testbed {name} is down in {:.2} s: agents stopped, namespaces and links removed",
        t.total.as_secs_f64()
    );
    tracing::info!(testbed = %name, "testbed down");
    drop(logs);
    Ok(ExitCode::SUCCESS)
}

/// The dashboard path of `up`: the orchestrator task owns the testbed, the UI loop owns the
/// terminal, and the testbed comes down whichever way the loop ends.
mod dashboard {
    use super::CommandError;
    use crate::testbed::Testbed;
    use crate::tui::action::Command;
    use crate::tui::app::App;
    use crate::tui::orchestrator::Orchestrator;
    use crate::tui::{LoopIo, TICK, TerminalGuard, event_loop, experiment_files};
    use halab_protocol::mono_ns;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use tokio::signal::unix::Signal;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    pub async fn run(
        testbed: Testbed,
        file: &Path,
        results: PathBuf,
        signals: (Signal, Signal, Signal),
    ) -> Result<ExitCode, CommandError> {
        let topology = testbed.topology.clone();
        let hosts = testbed.snapshot().hosts;
        let name = topology.name.clone();
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let orchestrator = match Orchestrator::new(testbed, updates_tx, results) {
            Ok(o) => o,
            Err(e) => return Err(e.into()),
        };
        let worker = tokio::spawn(orchestrator.run(commands_rx));

        // Signals become a teardown the loop acts on; the watcher ends with the loop.
        let teardown = CancellationToken::new();
        let (mut sigint, mut sigterm, mut sighup) = signals;
        let watcher = {
            let teardown = teardown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                    _ = sighup.recv() => {}
                }
                teardown.cancel();
            })
        };

        let mut app = App::new(&topology, hosts, experiment_files(file), mono_ns());
        let ui = match TerminalGuard::enter() {
            Ok(mut guard) => {
                let io = LoopIo {
                    events: crossterm::event::EventStream::new(),
                    updates,
                    commands: commands.clone(),
                    teardown: teardown.clone(),
                    tick: TICK,
                };
                let r = event_loop(&mut guard.terminal, &mut app, io, mono_ns, |_, _| {}).await;
                drop(guard);
                r
            }
            Err(e) => Err(e),
        };
        watcher.abort();
        if let Err(e) = &ui {
            eprintln!("halab: the dashboard failed ({e}); tearing down testbed {name}");
        } else {
            println!("tearing down testbed {name} ...");
        }
        // Whatever ended the loop, the orchestrator tears the testbed down and ends.
        let _ = commands.send(Command::Shutdown);
        match worker.await {
            Ok(Ok(t)) => {
                println!(
                    "testbed {name} is down in {:.2} s: agents stopped, faults reverted, namespaces and links removed",
                    t.total.as_secs_f64()
                );
                tracing::info!(testbed = %name, "testbed down");
                Ok(if ui.is_ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(CommandError::Message(format!(
                "the orchestrator task failed ({e}); run `halab down --name {name}`"
            ))),
        }
    }
}
