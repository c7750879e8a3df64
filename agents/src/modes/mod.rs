//! The failover mechanisms' agent side (DESIGN §5): what the server, logger and client roles do
//! under each mode. `none` needs nothing beyond the workload server (see [`crate::roles`]).
//! Each mode starts its roles through [`RoleCtx`] and answers with a [`StartedRole`]; the role's
//! task owns everything the mode spawns and ends when `cancel` fires.

pub mod app_migration;
pub mod st_tcp;

use halab_protocol::{AgentMsg, ModeCommand, Role};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a mode's role gets from the agent.
pub struct RoleCtx {
    pub role: Role,
    /// Cancelled when the role stops (or the agent exits); the role's task must then end.
    pub cancel: CancellationToken,
    /// Where the role publishes the pid of its server process (0 while it has none), which
    /// process faults act on.
    pub pid: Arc<AtomicU32>,
    /// Messages to the console.
    pub outbound: mpsc::Sender<AgentMsg>,
}

/// A started role of some mode.
pub struct StartedRole {
    pub task: JoinHandle<()>,
    /// Shown to the console with the role's state.
    pub detail: Option<String>,
    /// Where the agent forwards the mode's commands for this role, if it takes any.
    pub commands: Option<mpsc::Sender<ModeCommand>>,
}
