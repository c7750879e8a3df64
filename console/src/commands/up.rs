//! `halab up FILE`: bring the testbed up, print host states as they change, and tear it all
//! down on Ctrl-C, SIGTERM or SIGHUP. (The dashboard will take over the terminal here; until
//! then `up` behaves as `up --no-tui`.)

use super::{CommandError, Context, load_topology, require_local_privileges, status};
use crate::logging;
use crate::state::HostState;
use crate::testbed::{Testbed, UpOptions};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

pub async fn run(
    ctx: &Context,
    file: &Path,
    accept_new_host_keys: bool,
) -> Result<ExitCode, CommandError> {
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
    match crate::modes::supported(testbed.topology.run.mode).and_then(|()| {
        crate::modes::mode_config(&testbed.topology, &testbed.topology.run, testbed.mode_key())
    }) {
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
