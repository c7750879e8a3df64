//! The subcommands. Each returns an exit code or a [`CommandError`] that `cli` prints.

pub mod check;
pub mod down;
pub mod report;
pub mod run;
pub mod status;
pub mod up;

use crate::error::chain;
use crate::testbed::TestbedError;
use crate::topology::{Provider, Topology, TopologyError};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Settings every command shares.
#[derive(Debug, Clone)]
pub struct Context {
    pub state_dir: PathBuf,
    pub runs_dir: PathBuf,
    /// `--agent` / `$HALAB_AGENT`.
    pub agent: Option<PathBuf>,
}

/// A command's failure, printed whole by the CLI.
#[derive(Debug, Error)]
pub enum CommandError {
    /// Already rendered with file, line, column and hint.
    #[error("{0}")]
    Topology(#[from] TopologyError),
    #[error("error: {}", chain(.0))]
    Testbed(#[from] TestbedError),
    /// Already rendered with file, line, column and hint.
    #[error("{0}")]
    Experiment(#[from] crate::experiment::ExperimentError),
    #[error("error: {0}")]
    Message(String),
}

impl Context {
    /// The agent binary to deploy: `--agent`, else `halab-agent` next to this executable.
    pub fn agent_binary(&self) -> Result<PathBuf, CommandError> {
        if let Some(p) = &self.agent {
            return if p.is_file() {
                Ok(p.clone())
            } else {
                Err(CommandError::Message(format!(
                    "agent binary {} (from --agent or HALAB_AGENT) does not exist",
                    p.display()
                )))
            };
        }
        let exe = std::env::current_exe()
            .map_err(|e| CommandError::Message(format!("cannot locate the halab binary: {e}")))?;
        let beside = exe.with_file_name("halab-agent");
        if beside.is_file() {
            Ok(beside)
        } else {
            Err(CommandError::Message(format!(
                "halab-agent not found next to {} (build both with `cargo build --workspace`, or pass --agent PATH)",
                exe.display()
            )))
        }
    }
}

/// Loads and validates a topology file.
pub fn load_topology(file: &Path) -> Result<Topology, CommandError> {
    Ok(crate::topology::load(file)?)
}

/// Provider local changes namespaces: refuse early, and clearly, without root.
pub fn require_local_privileges(topo: &Topology) -> Result<(), CommandError> {
    // SAFETY: geteuid has no preconditions.
    if topo.provider == Provider::Local && unsafe { libc::geteuid() } != 0 {
        return Err(CommandError::Message(format!(
            "testbed `{}` uses provider local, which creates network namespaces: run halab as root \
             (it needs CAP_NET_ADMIN and CAP_SYS_ADMIN)",
            topo.name
        )));
    }
    Ok(())
}
