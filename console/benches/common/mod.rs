//! What the console's benchmarks share: settings from the environment and the agent binary.

use std::path::PathBuf;

/// `$name` as a number, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The agent binary: `$HALAB_AGENT`, else `halab-agent` next to the benchmarked `halab`
/// (the release build); exits with instructions when it is missing.
pub fn agent_binary(bench: &str) -> PathBuf {
    let agent = std::env::var_os("HALAB_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_BIN_EXE_halab")).with_file_name("halab-agent")
        });
    if !agent.is_file() {
        eprintln!(
            "{bench}: {} missing; build it first: cargo build --release -p halab-agent",
            agent.display()
        );
        std::process::exit(1);
    }
    agent
}

/// Whether this process may create namespaces; prints why the benchmark skips when not.
pub fn root_or_skip(bench: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("{bench}: skipped, needs root (network namespaces)");
        return false;
    }
    true
}

/// A synthetic local testbed of `hosts` hosts named `name`, and how to bring it up with
/// `agent`, its state and logs kept in `tmp`.
pub fn synthetic_testbed(
    name: &str,
    hosts: usize,
    agent: PathBuf,
    tmp: &std::path::Path,
    probe: bool,
) -> (halab::topology::Topology, halab::testbed::UpOptions) {
    let text = halab::topology::synthetic::local_topology(name, hosts);
    let topo = halab::topology::parse_str(&text, std::path::Path::new("bench.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = halab::testbed::UpOptions {
        agent_binary: agent,
        state_dir: tmp.join("state"),
        run_id: name.to_string(),
        log_dir: tmp.join("logs"),
        probe,
        ssh: None,
    };
    (topo, opts)
}
