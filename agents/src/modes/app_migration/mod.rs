//! Mode app-migration on the agent (DESIGN §5; papers 000, 002, 004).
//!
//! - [`wire`]: the authenticated datagrams and the download exchange, without I/O;
//! - [`group`]: the server group as a state machine (heartbeats, soft state, takeover by load);
//! - [`server`]: the server process that runs the group member beside the downloads;
//! - [`client`]: the download client's side (failover list, end token, migration port).
//!
//! The server roles run `halab-agent serve --app-migration` ([`SERVE_FLAG`]); the agent only
//! forwards the process's events to the console and supervises it like the plain workload
//! server. The client role needs nothing running: the workload client takes the mode from its
//! spec (`ClientPolicy` in `modes::registry`).

pub mod client;
pub mod group;
pub mod server;
pub mod wire;

use crate::role_ctx::{RoleCtx, StartedRole};
use crate::server_process::{ServeError, serve_role};
use halab_protocol::modes::app_migration::{AppMigrationConfig, Event};
use halab_protocol::{AgentMsg, ModeEvent};
use tokio::io::BufReader;
use tokio_util::sync::CancellationToken;

/// The flag of `halab-agent serve` that runs [`server::main`].
pub const SERVE_FLAG: &str = "--app-migration";

/// Why a server role of this mode did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("app-migration key")]
    Key(#[source] wire::WireError),
    #[error("app-migration config")]
    Config(#[source] serde_json::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A server role (primary or backup) under app-migration: the server process with the group
/// member, its events forwarded to the console.
pub async fn start_server(
    ctx: RoleCtx,
    cfg: &AppMigrationConfig,
) -> Result<StartedRole, StartError> {
    wire::Key::from_hex(&cfg.key_hex).map_err(StartError::Key)?;
    let json = serde_json::to_string(cfg).map_err(StartError::Config)?;
    let served = serve_role(
        &ctx,
        &[SERVE_FLAG],
        &[(server::CONFIG_ENV, &json)],
        "app-migration server",
    )
    .await?;
    let p = served.pid;
    tracing::info!(role = %ctx.role, trigger = ?cfg.trigger, "app-migration trigger");
    let forward = forward_events(served.stdout, ctx.outbound.clone(), ctx.cancel.clone());
    let supervisor = served.supervisor;
    let task = tokio::spawn(async move {
        // The forwarder ends when the process's stdout closes (it died or was stopped).
        let _ = tokio::join!(supervisor, forward);
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
