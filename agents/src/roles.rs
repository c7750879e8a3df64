//! The roles this agent runs (DESIGN §2: primary, backup, logger, lb, proxy, client).
//!
//! Each running role is a task with its own cancellation token, owned by [`RoleSet`]; stopping
//! a role cancels and joins it, aborting it after [`ROLE_STOP_GRACE`]. What a role does is its
//! mode's business: [`RoleSet::start`] hands it to the mode table
//! ([`crate::modes::registry::start_role`]). The server roles run the workload server as a
//! child process ([`crate::server_process`]), so that a process fault hits the server and not
//! the agent.

use crate::error::chain;
use crate::modes::registry;
use crate::role_ctx::{RoleCtx, StartedRole};
use halab_protocol::{AgentMsg, ModeCommand, ModeConfig, Role, RoleState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a process fault cannot act on a role.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("role {0} is not running on this host")]
    NotRunning(Role),
    #[error("role {0} has no process")]
    NoProcess(Role),
    #[error("role {role} has no process (pid {pid} ended)")]
    Ended { role: Role, pid: u32 },
    #[error("kill({pid}, {signal})")]
    Kill {
        pid: u32,
        signal: i32,
        #[source]
        source: std::io::Error,
    },
}

/// How long a role may take to stop once cancelled.
pub const ROLE_STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

struct RunningRole {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// Pid of the role's process, 0 while it has none.
    pid: Arc<AtomicU32>,
    /// The mode it was started under (a restart keeps it).
    mode: ModeConfig,
    /// Where the mode's commands for this role go, if it takes any.
    commands: Option<mpsc::Sender<ModeCommand>>,
}

/// The roles currently running on this agent.
pub struct RoleSet {
    running: BTreeMap<Role, RunningRole>,
    /// Where role tasks report a process that ended on its own.
    outbound: mpsc::Sender<AgentMsg>,
}

impl RoleSet {
    pub fn new(outbound: mpsc::Sender<AgentMsg>) -> Self {
        RoleSet {
            running: BTreeMap::new(),
            outbound,
        }
    }

    /// Starts `role` under `mode` unless it runs already; returns the state to report and a
    /// detail. A server role is reported running only once its workload server listens, so a
    /// client started right after never finds the port closed.
    pub async fn start(
        &mut self,
        role: Role,
        mode: &ModeConfig,
        parent: &CancellationToken,
    ) -> (RoleState, Option<String>) {
        if let Some(r) = self.running.get(&role)
            && !r.task.is_finished()
        {
            if r.mode == *mode {
                return (RoleState::Running, Some("already running".into()));
            }
            // Another mode: the role is redeployed under the new one.
            self.stop(role).await;
        }
        let cancel = parent.child_token();
        let pid = Arc::new(AtomicU32::new(0));
        let ctx = RoleCtx {
            role,
            cancel: cancel.clone(),
            pid: pid.clone(),
            outbound: self.outbound.clone(),
        };
        match registry::start_role(ctx, mode).await {
            Ok(StartedRole {
                task,
                detail,
                commands,
            }) => {
                self.running.insert(
                    role,
                    RunningRole {
                        cancel,
                        task,
                        pid,
                        mode: mode.clone(),
                        commands,
                    },
                );
                (RoleState::Running, detail)
            }
            Err(e) => (RoleState::Failed, Some(chain(&e))),
        }
    }

    /// Hands a mode command to every running role that takes commands; returns how many did.
    pub async fn command(&self, command: &ModeCommand) -> usize {
        // `mut` looks unused while no mode defines a command (the type is uninhabited).
        #[allow(unused_mut)]
        let mut taken = 0;
        for r in self.running.values() {
            if let Some(tx) = &r.commands
                && tx.send(command.clone()).await.is_ok()
            {
                taken += 1;
            }
        }
        taken
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

    /// Starts `role` again after a fault killed (or terminated) its process `pid`: waits, at
    /// most [`ROLE_STOP_GRACE`], for the role's task to see that process end, stops the role if
    /// it does not, then starts it. A role that runs another process already (the console
    /// started it again meanwhile) is left alone.
    pub async fn restart_after(
        &mut self,
        role: Role,
        pid: u32,
        parent: &CancellationToken,
    ) -> (RoleState, Option<String>) {
        let mut mode = ModeConfig::None;
        if let Some(r) = self.running.get_mut(&role) {
            mode = r.mode.clone();
            let current = r.pid.load(Ordering::SeqCst);
            if current != 0 && current != pid && !r.task.is_finished() {
                return (
                    RoleState::Running,
                    Some(format!("already running again (pid {current})")),
                );
            }
            if !r.task.is_finished()
                && tokio::time::timeout(ROLE_STOP_GRACE, &mut r.task)
                    .await
                    .is_err()
            {
                // The process outlived its signal (SIGTERM ignored, or a role with no
                // process): replace it.
                self.stop(role).await;
            }
        }
        self.start(role, &mode, parent).await
    }

    /// The running role a fault on `role` hits. The primary, where it does not run, stands for
    /// the backup role: an st-tcp backup that took over serves as the primary inside its backup
    /// role (the console knows the host as the primary from its own report), and a process
    /// fault on the primary must hit the server that serves. Never the other way round.
    fn target(&self, role: Role) -> Result<&RunningRole, RoleError> {
        self.running
            .get(&role)
            .or_else(|| {
                (role == Role::Primary)
                    .then(|| self.running.get(&Role::Backup))
                    .flatten()
            })
            .ok_or(RoleError::NotRunning(role))
    }

    /// Pid of `role`'s process, if it has one now.
    pub fn pid(&self, role: Role) -> Result<u32, RoleError> {
        let r = self.target(role)?;
        match r.pid.load(Ordering::SeqCst) {
            0 => Err(RoleError::NoProcess(role)),
            pid if r.task.is_finished() => Err(RoleError::Ended { role, pid }),
            pid => Ok(pid),
        }
    }

    /// Sends `signal` to the process of `role`; returns its pid.
    pub fn signal(&self, role: Role, signal: i32) -> Result<u32, RoleError> {
        let r = self.target(role)?;
        let pid = r.pid.load(Ordering::SeqCst);
        if pid == 0 || r.task.is_finished() {
            return Err(RoleError::NoProcess(role));
        }
        // SAFETY: kill(2) on the pid of a child this agent started and has not yet reaped
        // (the role task reaps it), so the pid cannot have been reused.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(RoleError::Kill {
                pid,
                signal,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(pid)
    }

    pub fn running(&self) -> impl Iterator<Item = Role> + '_ {
        self.running.keys().copied()
    }
}
