//! What a role's start function gets from the agent ([`RoleCtx`]) and gives back
//! ([`StartedRole`]). Every mode's roles and `roles::RoleSet` share these; they
//! depend on nothing else of the agent, so neither side depends on the other through them.

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
