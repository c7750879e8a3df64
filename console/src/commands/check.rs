//! `halab check FILE`: validate a topology and probe what its hosts can do.

use super::{CommandError, Context, load_topology, status::table};
use crate::agent::{AgentSession, link::spawn_process_link};
use crate::error::chain;
use crate::provider::ssh::{SshOptions, SshTarget, connect_agent};
use crate::topology::{Provider, Topology};
use halab_protocol::Capabilities;
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// SSH settings for a topology (None for provider local).
pub fn ssh_options(topo: &Topology, accept_new_host_keys: bool) -> Option<SshOptions> {
    (topo.provider == Provider::Ssh).then(|| {
        let known_hosts = topo.known_hosts.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/root".into())
                .join(".ssh/known_hosts")
        });
        SshOptions::new(known_hosts, accept_new_host_keys)
    })
}

#[derive(Serialize)]
struct CheckJson {
    file: String,
    testbed: String,
    valid: bool,
    /// Probe target (`this machine` or a host name) → capabilities, or the error probing it.
    probes: Vec<ProbeResult>,
}

#[derive(Serialize)]
struct ProbeResult {
    target: String,
    capabilities: Option<Capabilities>,
    kernel: Option<String>,
    error: Option<String>,
}

pub async fn run(
    ctx: &Context,
    file: &Path,
    accept_new_host_keys: bool,
    json: bool,
) -> Result<ExitCode, CommandError> {
    let mut matrix_links: Vec<String> = Vec::new();
    let topo = if is_experiment(file) {
        // An experiment: its runs are checked as `halab run` would before bringing anything
        // up, then its topology is probed.
        let mut exp = crate::experiment::load(file)?;
        crate::run::runner::check_supported(&exp)
            .map_err(|e| CommandError::Message(format!("{}: {e}", file.display())))?;
        if !json {
            let modes: std::collections::BTreeSet<&str> = exp
                .runs()
                .iter()
                .map(|p| p.settings.mode.as_str())
                .collect();
            println!(
                "{}: valid — experiment {}, {} runs, modes {}, topology {}",
                file.display(),
                exp.name,
                exp.runs().len(),
                modes.into_iter().collect::<Vec<_>>().join(", "),
                exp.topology.source.display()
            );
        }
        // The links as the experiment's `[links]` set them; what its matrix varies is said
        // beside the table.
        let fixed = crate::experiment::links::resolve(&exp.topology, &exp.links, &[]);
        for h in &mut exp.topology.hosts {
            h.links = fixed.get(&h.name).cloned().unwrap_or_default();
        }
        matrix_links = exp
            .matrix
            .iter()
            .filter(|(k, _)| crate::experiment::links::split_matrix_key(k).is_some())
            .map(|(k, values)| {
                let v: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                format!("{k} = [{}]", v.join(", "))
            })
            .collect();
        exp.topology
    } else {
        load_topology(file)?
    };
    let agent = ctx.agent_binary()?;
    if !json {
        println!(
            "{}: valid — testbed {}, provider {}, {} hosts, {} networks, mode {}, workload {}",
            file.display(),
            topo.name,
            topo.provider,
            topo.hosts.len(),
            topo.networks.len(),
            topo.run.mode,
            topo.run.workload.as_str()
        );
    }

    let mut probes = Vec::new();
    match topo.provider {
        Provider::Local => {
            // Every host of a local testbed is a namespace of this machine: probe it once.
            probes.push(probe_local(&agent).await);
        }
        Provider::Ssh => {
            let opts = ssh_options(&topo, accept_new_host_keys)
                .ok_or_else(|| CommandError::Message("no ssh settings".into()))?;
            let mut set = tokio::task::JoinSet::new();
            for (i, host) in topo.hosts.iter().enumerate() {
                let (host, opts, agent, testbed) =
                    (host.clone(), opts.clone(), agent.clone(), topo.name.clone());
                set.spawn(async move {
                    let r = async {
                        let target = SshTarget::from_host(&host)
                            .ok_or_else(|| "no ssh settings".to_string())?;
                        let (link, conn) = connect_agent(&target, &opts, &agent)
                            .await
                            .map_err(|e| chain(&e))?;
                        let s = AgentSession::handshake(
                            link,
                            &testbed,
                            &host.name,
                            true,
                            PROBE_TIMEOUT,
                        )
                        .await
                        .map_err(|e| chain(&e))?;
                        let info = s.info.clone();
                        let _ = s.shutdown(Duration::from_secs(3)).await;
                        conn.close().await;
                        Ok::<_, String>(info)
                    }
                    .await;
                    (i, result(host.name.clone(), r))
                });
            }
            let mut results: Vec<(usize, ProbeResult)> = Vec::new();
            while let Some(j) = set.join_next().await {
                if let Ok(r) = j {
                    results.push(r);
                }
            }
            results.sort_by_key(|(i, _)| *i);
            probes.extend(results.into_iter().map(|(_, r)| r));
        }
    }

    let failed = probes.iter().any(|p| p.error.is_some());
    let missing_required = topo.provider == Provider::Local
        && probes.iter().any(|p| {
            p.capabilities
                .as_ref()
                .is_some_and(|c| !c.root.ok || !c.namespaces.ok)
        });
    if json {
        let out = CheckJson {
            file: file.display().to_string(),
            testbed: topo.name.clone(),
            valid: true,
            probes,
        };
        let text =
            serde_json::to_string_pretty(&out).map_err(|e| CommandError::Message(e.to_string()))?;
        println!("{text}");
    } else {
        print_table(&probes);
        print_links(&topo, &probes);
        if !matrix_links.is_empty() {
            println!(
                "links the matrix varies (each run's are set before it starts): {}",
                matrix_links.join("; ")
            );
        }
        for p in &probes {
            if let Some(e) = &p.error {
                eprintln!("error: {}: {e}", p.target);
            }
        }
        if missing_required {
            eprintln!(
                "error: provider local needs root and network namespaces on this machine; `halab up` would fail"
            );
        }
    }
    Ok(if failed || missing_required {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn result(target: String, r: Result<crate::agent::AgentInfo, String>) -> ProbeResult {
    match r {
        Ok(info) => ProbeResult {
            target,
            capabilities: info.capabilities,
            kernel: Some(info.kernel),
            error: None,
        },
        Err(e) => ProbeResult {
            target,
            capabilities: None,
            kernel: None,
            error: Some(e),
        },
    }
}

/// Runs the agent on this machine (no namespace) and asks it to probe.
async fn probe_local(agent: &Path) -> ProbeResult {
    let r = async {
        let (link, _child) = spawn_process_link(agent, &[]).map_err(|e| chain(&e))?;
        let s = AgentSession::handshake(link, "check", "this-machine", true, PROBE_TIMEOUT)
            .await
            .map_err(|e| chain(&e))?;
        let info = s.info.clone();
        let _ = s.shutdown(Duration::from_secs(3)).await;
        Ok::<_, String>(info)
    }
    .await;
    result("this machine".into(), r)
}

fn print_table(probes: &[ProbeResult]) {
    let ok: Vec<&ProbeResult> = probes.iter().filter(|p| p.capabilities.is_some()).collect();
    if ok.is_empty() {
        return;
    }
    println!();
    for p in ok {
        let Some(caps) = &p.capabilities else {
            continue;
        };
        println!(
            "capabilities of {} (kernel {}):",
            p.target,
            p.kernel.as_deref().unwrap_or("?")
        );
        let rows: Vec<[String; 3]> = caps
            .entries()
            .iter()
            .map(|(name, probe)| {
                [
                    name.to_string(),
                    if probe.ok { "yes" } else { "no" }.to_string(),
                    probe.detail.clone(),
                ]
            })
            .collect();
        print!("{}", table(&["CAPABILITY", "OK", "DETAIL"], &rows));
        let faults: Vec<[String; 3]> = caps
            .fault_support()
            .into_iter()
            .map(|(kind, ok, why)| [kind.to_string(), if ok { "yes" } else { "no" }.into(), why])
            .collect();
        println!("fault kinds on {}:", p.target);
        print!("{}", table(&["FAULT", "OK", "WHY"], &faults));
    }
}

/// Each shaped link and what will shape it, with the reason (issue 15: `halab check` says
/// which mechanism each host will use and why).
fn print_links(topo: &Topology, probes: &[ProbeResult]) {
    use crate::provider::local::DelayMechanism;
    use crate::topology::link_units::{show_delay, show_rate};
    let shaped: Vec<(&str, &str, &crate::topology::LinkShape)> = topo
        .hosts
        .iter()
        .flat_map(|h| {
            h.links
                .iter()
                .map(|(n, l)| (h.name.as_str(), n.as_str(), l))
        })
        .collect();
    if shaped.is_empty() {
        return;
    }
    let netem = probes
        .first()
        .and_then(|p| p.capabilities.as_ref())
        .map(|c| (c.netem.ok, c.netem.detail.clone()));
    let (delays, why) = match (&topo.provider, &netem) {
        (Provider::Ssh, _) => {
            println!(
                "links: provider ssh does not apply link settings in this version; `halab up` \
                 refuses them"
            );
            return;
        }
        (_, Some((true, detail))) => (DelayMechanism::Netem, format!("netem: {detail}")),
        (_, Some((false, detail))) => (DelayMechanism::DelayLine, format!("no netem: {detail}")),
        (_, None) => (DelayMechanism::DelayLine, "netem not probed".to_string()),
    };
    println!("links (delays by {}; {why}):", delays.describe());
    let rows: Vec<[String; 3]> = shaped
        .into_iter()
        .map(|(host, net, l)| {
            let mut what = Vec::new();
            let mut how = Vec::new();
            if let Some(r) = l.rate_bps {
                what.push(format!("rate {}", show_rate(r)));
                if !(delays == DelayMechanism::Netem && l.delays()) {
                    how.push("tbf on both ends".to_string());
                }
            }
            if l.delay_us.is_some() || l.jitter_us.is_some() {
                let jitter = l
                    .jitter_us
                    .map(|j| format!(" ± {}", show_delay(j)))
                    .unwrap_or_default();
                what.push(format!(
                    "delay {}{jitter}",
                    show_delay(l.delay_us.unwrap_or(0))
                ));
                how.push(match delays {
                    DelayMechanism::Netem => "netem on both ends".to_string(),
                    DelayMechanism::DelayLine => "delay lines of the receivers".to_string(),
                });
            }
            if let Some(ppm) = l.loss_ppm {
                what.push(format!("loss {} %", f64::from(ppm) / 10_000.0));
                how.push("nftables on the host, both ways".to_string());
            }
            [format!("{host} → {net}"), what.join(", "), how.join("; ")]
        })
        .collect();
    print!("{}", table(&["LINK", "SETTINGS", "MECHANISM"], &rows));
}

/// Whether `file` is an experiment file (it names a `topology`) rather than a topology.
fn is_experiment(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("topology"))
}
