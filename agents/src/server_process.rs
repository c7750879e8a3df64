//! A server role's process: `halab-agent serve ...` started as a child, so that a process fault
//! hits the server and not the agent. Every mode starts its server roles through
//! [`serve_role`]: spawn, wait for `ready`, publish the pid for process faults, supervise. The
//! process is killed when its role stops (`kill_on_drop`).

use crate::role_ctx::RoleCtx;
use halab_protocol::{AgentMsg, Role, RoleState};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a workload server may take to start listening.
const SERVER_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a server process did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot find own binary")]
    OwnBinary(#[source] std::io::Error),
    #[error("cannot start the {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} has no stdout")]
    NoStdout { what: String },
    /// It ran but never said `ready`; `stderr` is what it printed meanwhile.
    #[error("{what} did not start ({why}): {stderr}")]
    NotReady {
        what: String,
        why: NotReady,
        stderr: String,
    },
}

/// What a server process did instead of saying `ready`.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("no answer within 5 s")]
    Timeout,
    #[error("said {0:?}")]
    Said(String),
    #[error("exited")]
    Exited,
    // Shown inside the parentheses of [`ServeError::NotReady`], so its text is part of that
    // message rather than a source of it.
    #[error("{0}")]
    Read(std::io::Error),
}

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
) -> Result<ServedRole, ServeError> {
    let exe = std::env::current_exe().map_err(ServeError::OwnBinary)?;
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ServeError::Spawn {
            what: what.to_string(),
            source,
        })?;
    let stdout = child.stdout.take().ok_or_else(|| ServeError::NoStdout {
        what: what.to_string(),
    })?;
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
            return Err(ServeError::NotReady {
                what: what.to_string(),
                why: match other {
                    Err(_) => NotReady::Timeout,
                    Ok(Ok(Some(l))) => NotReady::Said(l),
                    Ok(Ok(None)) => NotReady::Exited,
                    Ok(Err(e)) => NotReady::Read(e),
                },
                stderr: err.trim().to_string(),
            });
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
