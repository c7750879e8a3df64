//! Mode app-migration on the agent (DESIGN §5; papers 000, 002, 004).
//!
//! - [`wire`]: the authenticated datagrams and the download exchange, without I/O;
//! - [`group`]: the server group as a state machine (heartbeats, soft state, takeover by load);
//! - [`server`]: the server process that runs the group member beside the downloads;
//! - [`client`]: the download client's side (failover list, end token, migration port).
//!
//! The server roles run `halab-agent serve --app-migration`; the agent only forwards the
//! process's events to the console and supervises it like the plain workload server. The
//! client role needs nothing running: the workload client takes the mode from its spec.

pub mod client;
pub mod group;
pub mod server;
pub mod wire;

use super::{RoleCtx, StartedRole};
use crate::roles::supervise_server;
use halab_protocol::modes::app_migration::{AppMigrationConfig, Event};
use halab_protocol::{AgentMsg, ModeEvent, Role};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// How long the server process may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts `ctx.role` under app-migration.
pub async fn start_role(ctx: RoleCtx, cfg: &AppMigrationConfig) -> Result<StartedRole, String> {
    wire::Key::from_hex(&cfg.key_hex).map_err(|e| format!("app-migration: {e}"))?;
    let RoleCtx {
        role,
        cancel,
        pid,
        outbound,
    } = ctx;
    if !matches!(role, Role::Primary | Role::Backup) {
        return Ok(StartedRole {
            task: tokio::spawn(async move { cancel.cancelled().await }),
            detail: None,
            commands: None,
        });
    }
    let json = serde_json::to_string(cfg).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut child = tokio::process::Command::new(exe)
        .args(["serve", "--app-migration"])
        .env(server::CONFIG_ENV, json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the app-migration server: {e}"))?;
    let stdout = child.stdout.take().ok_or("server has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(l))) if l.starts_with("ready ") => {}
        other => {
            let _ = child.kill().await;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut err).await;
            }
            return Err(format!(
                "app-migration server did not start ({}): {}",
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
    let p = child.id().unwrap_or(0);
    pid.store(p, Ordering::SeqCst);
    tracing::info!(%role, pid = p, trigger = ?cfg.trigger, "app-migration server listening");
    let forward = forward_events(lines, outbound.clone(), cancel.clone());
    let task = tokio::spawn(async move {
        // The forwarder ends when the process's stdout closes (it died or was stopped).
        tokio::join!(
            supervise_server(role, child, cancel, pid, outbound),
            forward
        );
    });
    Ok(StartedRole {
        task,
        detail: Some(format!("app-migration server pid {p}")),
        commands: None,
    })
}

/// Passes the server process's `event <json>` lines to the console.
async fn forward_events(
    mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    outbound: tokio::sync::mpsc::Sender<AgentMsg>,
    cancel: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            _ = cancel.cancelled() => return,
            l = lines.next_line() => match l {
                Ok(Some(l)) => l,
                _ => return,
            },
        };
        let Some(json) = line.strip_prefix("event ") else {
            continue;
        };
        match serde_json::from_str::<Event>(json) {
            Ok(event) => {
                tracing::info!(?event, "app-migration");
                let _ = outbound
                    .send(AgentMsg::Mode {
                        event: ModeEvent::AppMigration(event),
                    })
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "bad event line from the server: {line}"),
        }
    }
}
