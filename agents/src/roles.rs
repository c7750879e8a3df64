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

/// How long a role may take to stop once cancelled.
pub const ROLE_STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

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
            Some(mut r) => {
                r.cancel.cancel();
                // A role that ignores its cancellation must not keep the agent from exiting
                // (and reverting) in time: give it a bounded grace period, then abort it.
                match tokio::time::timeout(ROLE_STOP_GRACE, &mut r.task).await {
                    Ok(Ok(())) => (RoleState::Stopped, None),
                    Ok(Err(e)) => (RoleState::Failed, Some(format!("role task failed: {e}"))),
                    Err(_) => {
                        r.task.abort();
                        (
                            RoleState::Failed,
                            Some(format!("did not stop within {ROLE_STOP_GRACE:?}; aborted")),
                        )
                    }
                }
            }
        }
    }

    /// Stops every role: all are cancelled at once, then joined within one shared grace period.
    pub async fn stop_all(&mut self) {
        for r in self.running.values() {
            r.cancel.cancel();
        }
        let deadline = tokio::time::Instant::now() + ROLE_STOP_GRACE;
        for (role, mut r) in std::mem::take(&mut self.running) {
            if tokio::time::timeout_at(deadline, &mut r.task)
                .await
                .is_err()
            {
                tracing::warn!(%role, "role did not stop in time; aborted");
                r.task.abort();
            }
        }
    }

    pub fn running(&self) -> impl Iterator<Item = Role> + '_ {
        self.running.keys().copied()
    }
}
