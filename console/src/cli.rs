//! The command line: argument definitions and dispatch. `main.rs` only calls [`main`].

use crate::commands;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "halab",
    version,
    about = "A terminal lab console for measuring how server failover behaves under real faults",
    long_about = "halab brings a multi-host testbed up from one topology file (network namespaces \
on this machine, or VMs and bare metal over SSH), deploys an agent to every host, and tears \
it all down again, leaving nothing behind.\n\n\
Examples:\n  halab check topologies/two-server.toml   validate and probe capabilities\n  \
halab up topologies/two-server.toml      testbed + agents + live dashboard; q tears down\n  \
halab status                             what is up, from any terminal\n  \
halab down topologies/two-server.toml    remove everything, also after a crash\n  \
halab run experiments/modes-compared.toml  headless experiment, then its report\n  \
halab run FILE --resume RUN_ID             continue an interrupted experiment\n  \
halab report runs/<id>/results.jsonl     re-render the report (--format json|csv)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Folder of testbed state files [default: /run/halab as root]
    #[arg(long, global = true, env = "HALAB_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Folder for run folders and their logs
    #[arg(
        long,
        global = true,
        env = "HALAB_RUNS_DIR",
        default_value = "runs",
        value_name = "DIR"
    )]
    pub runs_dir: PathBuf,

    /// Folder for reports (`halab run` writes one at its end; `halab report` by default)
    #[arg(
        long,
        global = true,
        env = "HALAB_REPORTS_DIR",
        default_value = "reports",
        value_name = "DIR"
    )]
    pub reports_dir: PathBuf,

    /// The halab-agent binary to deploy [default: next to the halab binary]
    #[arg(long, global = true, env = "HALAB_AGENT", value_name = "PATH")]
    pub agent: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring a testbed up with the live dashboard, and tear it all down on quit.
    ///
    /// Creates the provider's resources (for `local`: namespaces, bridges, veths, addresses
    /// and the service address), starts one agent per host and opens the dashboard, where
    /// keys break hosts (`?` lists them) and `q` tears everything down. With --no-tui, or when
    /// stdout is not a terminal, it prints every change of a host's state until Ctrl-C
    /// instead. Logs go to <runs-dir>/<testbed>-<time>/logs/.
    Up {
        /// Topology file (TOML)
        file: PathBuf,
        /// Print host states instead of opening the dashboard (also the case when stdout is not
        /// a terminal)
        #[arg(long)]
        no_tui: bool,
        /// Trust and record SSH host keys not yet in known_hosts (as OpenSSH's accept-new);
        /// a changed key is still refused
        #[arg(long)]
        accept_new_host_keys: bool,
    },
    /// Remove every namespace, link, rule and process of a testbed, also after a crash.
    ///
    /// A console still running the testbed is asked to stop first.
    Down {
        /// Topology file of the testbed
        #[arg(required_unless_present = "name")]
        file: Option<PathBuf>,
        /// Testbed name instead of its file (for a file that no longer parses)
        #[arg(long, conflicts_with = "file")]
        name: Option<String>,
    },
    /// Run an experiment headless: every run of its matrix, one JSON record per run.
    ///
    /// Brings the experiment's topology up, executes the runs in order (a progress bar on a
    /// terminal, one line per run start and end otherwise), appends each run's record to
    /// <runs-dir>/<experiment>-<time>/results.jsonl as it ends, tears the testbed down and
    /// writes the report to <reports-dir>/<experiment>-<date>.md. Ctrl-C stops after tearing
    /// down; finished runs stay, and --resume continues.
    Run {
        /// Experiment file (TOML)
        file: PathBuf,
        /// Continue the interrupted run RUN_ID (its folder name under the runs folder): runs
        /// that have a record are not run again; refused if the file's runs changed
        #[arg(long, value_name = "RUN_ID")]
        resume: Option<String>,
    },
    /// Write the report of a results.jsonl: Markdown with SVG plots beside it, or an export.
    ///
    /// Markdown goes to <reports-dir>/<experiment>-<date>.md unless -o names a file; the plots
    /// are written beside it (<stem>-throughput.svg, <stem>-failover.svg) and linked
    /// relatively. json and csv go to standard output unless -o names a file.
    Report {
        /// A results.jsonl (runs/<id>/results.jsonl)
        results: PathBuf,
        /// Output file (`-`: standard output, json and csv only)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Output format
        #[arg(long, value_enum, default_value = "md")]
        format: commands::report::Format,
    },
    /// Show the testbeds that are up and the state of every host's agent.
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Validate a topology or experiment file and probe host capabilities.
    ///
    /// Provider local probes this machine; provider ssh deploys the agent to every host and
    /// probes each. Capabilities: root, namespaces, AF_PACKET, TCP_REPAIR, nftables, netem.
    Check {
        /// Topology or experiment file (TOML); an experiment's runs are checked as `halab run`
        /// would, and its topology probed
        file: PathBuf,
        /// Trust and record SSH host keys not yet in known_hosts
        #[arg(long)]
        accept_new_host_keys: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

/// Entry point of the `halab` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Do not wait for blocking threads (a child's pipe read) that nobody will wake.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// Runs one command; errors are printed here, with their whole chain.
pub async fn run(cli: Cli) -> ExitCode {
    let ctx = commands::Context {
        state_dir: cli
            .state_dir
            .clone()
            .unwrap_or_else(crate::state::state_dir),
        runs_dir: cli.runs_dir.clone(),
        agent: cli.agent.clone(),
    };
    let result = match cli.command {
        Command::Up {
            file,
            no_tui,
            accept_new_host_keys,
        } => commands::up::run(&ctx, &file, no_tui, accept_new_host_keys).await,
        Command::Down { file, name } => commands::down::run(&ctx, file.as_deref(), name).await,
        Command::Run { file, resume } => {
            commands::run::run(&ctx, &file, resume.as_deref(), &cli.reports_dir).await
        }
        Command::Report {
            results,
            output,
            format,
        } => commands::report::run(&results, output.as_deref(), format, &cli.reports_dir),
        Command::Status { json } => commands::status::run(&ctx, json),
        Command::Check {
            file,
            accept_new_host_keys,
            json,
        } => commands::check::run(&ctx, &file, accept_new_host_keys, json).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
