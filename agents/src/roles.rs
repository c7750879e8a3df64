//! The roles this agent runs (DESIGN §2: primary, backup, logger, lb, proxy, client).
//!
//! Each running role is a task with its own cancellation token, owned by [`RoleSet`]; stopping
//! a role cancels and joins it, aborting it after [`ROLE_STOP_GRACE`]. The server roles
//! (`primary`, `backup`) run the workload server as a child process — `halab-agent serve` —
//! so that a process fault hits the server and not the agent; the process is killed when its
//! role stops (`kill_on_drop`). Under a failover mode the role is started by that mode's module
//! ([`crate::modes`]), which may reuse the workload server process and adds the mode's own tasks.

use crate::modes::{self, RoleCtx, StartedRole};
use halab_protocol::{AgentMsg, ModeCommand, ModeConfig, Role, RoleState};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
        let started = match mode {
            ModeConfig::None => start_plain(ctx).await,
            ModeConfig::AppMigration(cfg) => modes::app_migration::start_role(ctx, cfg).await,
            ModeConfig::StTcp(cfg) => modes::st_tcp::start_role(ctx, cfg).await,
        };
        match started {
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
            Err(e) => (RoleState::Failed, Some(e)),
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
    fn target(&self, role: Role) -> Result<&RunningRole, String> {
        self.running
            .get(&role)
            .or_else(|| {
                (role == Role::Primary)
                    .then(|| self.running.get(&Role::Backup))
                    .flatten()
            })
            .ok_or_else(|| format!("role {role} is not running on this host"))
    }

    /// Pid of `role`'s process, if it has one now.
    pub fn pid(&self, role: Role) -> Result<u32, String> {
        let r = self.target(role)?;
        match r.pid.load(Ordering::SeqCst) {
            0 => Err(format!("role {role} has no process")),
            pid if r.task.is_finished() => {
                Err(format!("role {role} has no process (pid {pid} ended)"))
            }
            pid => Ok(pid),
        }
    }

    /// Sends `signal` to the process of `role`; returns its pid.
    pub fn signal(&self, role: Role, signal: i32) -> Result<u32, String> {
        let r = self.target(role)?;
        let pid = r.pid.load(Ordering::SeqCst);
        if pid == 0 || r.task.is_finished() {
            return Err(format!("role {role} has no process"));
        }
        // SAFETY: kill(2) on the pid of a child this agent started and has not yet reaped
        // (the role task reaps it), so the pid cannot have been reused.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(format!(
                "kill({pid}, {signal}): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(pid)
    }

    pub fn running(&self) -> impl Iterator<Item = Role> + '_ {
        self.running.keys().copied()
    }
}

/// Mode none: the server roles run the workload server; the other roles have nothing to do.
async fn start_plain(ctx: RoleCtx) -> Result<StartedRole, String> {
    match ctx.role {
        Role::Primary | Role::Backup => {
            let served = serve_role(&ctx, &[], &[], "workload server").await?;
            Ok(StartedRole {
                task: served.supervisor,
                detail: Some(format!("workload server pid {}", served.pid)),
                commands: None,
            })
        }
        role => Ok(StartedRole {
            task: tokio::spawn(async move {
                tracing::info!(role = %role, "role started");
                ctx.cancel.cancelled().await;
                tracing::info!(role = %role, "role stopped");
            }),
            detail: None,
            commands: None,
        }),
    }
}

/// How long a workload server may take to start listening.
const SERVER_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A role's `halab-agent serve` process once it listens: its pid (published in the role's pid
/// slot, for process faults), the task supervising it, and the rest of its stdout.
pub struct ServedRole {
    pub pid: u32,
    pub supervisor: JoinHandle<()>,
    pub stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

/// Starts `halab-agent serve ARGS` (with `env` added) for `ctx`'s role, waits until it says it
/// listens (its first stdout line), publishes its pid and spawns [`supervise_server`]. `what`
/// names it in errors and logs.
pub async fn serve_role(
    ctx: &RoleCtx,
    args: &[&str],
    env: &[(&str, &str)],
    what: &str,
) -> Result<ServedRole, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the {what}: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| format!("{what} has no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    match tokio::time::timeout(SERVER_READY_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) if line.starts_with("ready ") => {}
        other => {
            let _ = child.kill().await;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut err).await;
            }
            return Err(format!(
                "{what} did not start ({}): {}",
                match other {
                    Err(_) => "no answer within 5 s".to_string(),
                    Ok(Ok(Some(l))) => format!("said {l:?}"),
                    Ok(Ok(None)) => "exited".to_string(),
                    Ok(Err(e)) => e.to_string(),
                },
                err.trim()
            ));
        }
    }
    let pid = child.id().unwrap_or(0);
    ctx.pid.store(pid, Ordering::SeqCst);
    tracing::info!(role = %ctx.role, pid, "{what} listening");
    let supervisor = tokio::spawn(supervise_server(
        ctx.role,
        child,
        ctx.cancel.clone(),
        ctx.pid.clone(),
        ctx.outbound.clone(),
    ));
    Ok(ServedRole {
        pid,
        supervisor,
        stdout: lines,
    })
}

/// Watches a workload server until its role is cancelled or the process ends by itself
/// (killed by a fault), which is reported to the console as the role failing.
pub async fn supervise_server(
    role: Role,
    mut child: tokio::process::Child,
    cancel: CancellationToken,
    pid_slot: Arc<AtomicU32>,
    outbound: mpsc::Sender<AgentMsg>,
) {
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(role = %role, "server: {line}");
            }
        });
    }
    tokio::select! {
        _ = cancel.cancelled() => {
            let _ = child.kill().await;
            pid_slot.store(0, Ordering::SeqCst);
            tracing::info!(role = %role, "workload server stopped");
        }
        status = child.wait() => {
            pid_slot.store(0, Ordering::SeqCst);
            let detail = match status {
                Ok(s) => format!("workload server exited: {s}"),
                Err(e) => format!("workload server lost: {e}"),
            };
            tracing::warn!(role = %role, "{detail}");
            report(&outbound, role, RoleState::Failed, detail).await;
        }
    }
}

async fn report(outbound: &mpsc::Sender<AgentMsg>, role: Role, state: RoleState, detail: String) {
    let _ = outbound
        .send(AgentMsg::RoleState {
            role,
            state,
            detail: Some(detail),
            request: None,
        })
        .await;
}
