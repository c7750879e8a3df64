//! The roles this agent runs (DESIGN §2: primary, backup, logger, lb, proxy, client).
//!
//! Each running role is a task with its own cancellation token, owned by [`RoleSet`]; stopping
//! a role cancels and joins it. What a role does inside its task (serve a workload, tap, log,
//! balance) is added by the workload and mode layers; this layer gives every role the same
//! lifecycle: start, report, stop, and stop-all when the control channel closes.

use halab_protocol::{Role, RoleState};
use std::collections::BTreeMap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct RunningRole {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The roles currently running on this agent.
#[derive(Default)]
pub struct RoleSet {
    running: BTreeMap<Role, RunningRole>,
}

impl RoleSet {
    /// Starts `role` unless it runs already; returns the state to report and a detail.
    pub fn start(&mut self, role: Role, parent: &CancellationToken) -> (RoleState, Option<String>) {
        if let Some(r) = self.running.get(&role)
            && !r.task.is_finished()
        {
            return (RoleState::Running, Some("already running".into()));
        }
        let cancel = parent.child_token();
        let token = cancel.clone();
        let task = tokio::spawn(async move {
            tracing::info!(role = %role, "role started");
            token.cancelled().await;
            tracing::info!(role = %role, "role stopped");
        });
        self.running.insert(role, RunningRole { cancel, task });
        (RoleState::Running, None)
    }

    /// Stops `role` and waits for its task to end.
    pub async fn stop(&mut self, role: Role) -> (RoleState, Option<String>) {
        match self.running.remove(&role) {
            None => (RoleState::Stopped, Some("was not running".into())),
            Some(r) => {
                r.cancel.cancel();
                match r.task.await {
                    Ok(()) => (RoleState::Stopped, None),
                    Err(e) => (RoleState::Failed, Some(format!("role task failed: {e}"))),
                }
            }
        }
    }

    /// Stops every role.
    pub async fn stop_all(&mut self) {
        let roles: Vec<Role> = self.running.keys().copied().collect();
        for role in roles {
            self.stop(role).await;
        }
    }

    pub fn running(&self) -> impl Iterator<Item = Role> + '_ {
        self.running.keys().copied()
    }
}
