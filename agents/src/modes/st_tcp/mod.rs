//! Mode st-tcp on the agent (DESIGN §5; thesis chapter 3, paper 003).
//!
//! - primary: the workload server on the service address; heartbeats to the backup over both
//!   links every `heartbeat_ms`, carrying each connection's progress read with sock_diag
//!   ([`sockdiag`]); the FIN hold of thesis §3.7.4 ([`fin_hold`]); non-fault-tolerant mode
//!   when the backup goes silent.
//! - backup: the tap ([`tap`]) feeding the tracker ([`tracker`]), one replica per connection
//!   ([`replica`]) against its own workload server on the loopback, the failure detector
//!   ([`heartbeat`], lag and FIN checks in [`backup`]), and on failure: fence request to the
//!   console, service address, gratuitous ARP and TCP_REPAIR takeover ([`takeover`]).
//! - logger: a bounded ring of tapped client segments the backup fetches missed bytes from
//!   ([`logger`]).

mod backup;
mod fin_hold;
pub mod heartbeat;
pub mod logger;
mod monitor;
mod netlink;
mod nfqueue;
mod primary;
pub mod replica;
pub mod sockdiag;
pub mod takeover;
pub mod tap;
pub mod tracker;

use super::{RoleCtx, StartedRole};
use halab_protocol::modes::st_tcp::{Event, StTcpConfig};
use halab_protocol::{AgentMsg, ModeEvent, Role};
use tokio::sync::mpsc;

/// Starts `ctx.role` under st-tcp.
pub async fn start_role(ctx: RoleCtx, cfg: &StTcpConfig) -> Result<StartedRole, String> {
    match ctx.role {
        Role::Primary => primary::start(ctx, cfg.clone()).await,
        Role::Backup => backup::start(ctx, cfg.clone()).await,
        Role::Logger => logger::start(ctx, cfg.clone()).await,
        _ => {
            let RoleCtx { role, cancel, .. } = ctx;
            Ok(StartedRole {
                task: tokio::spawn(async move {
                    tracing::info!(%role, "st-tcp role started (nothing to do)");
                    cancel.cancelled().await;
                }),
                detail: None,
                commands: None,
            })
        }
    }
}

/// Sends an event of this mode to the console.
async fn emit(outbound: &mpsc::Sender<AgentMsg>, event: Event) {
    tracing::info!(?event, "st-tcp event");
    let _ = outbound
        .send(AgentMsg::Mode {
            event: ModeEvent::StTcp(event),
        })
        .await;
}

/// Runs a command (ip, nft) to completion; the error carries its stderr.
async fn command(program: &str, args: &[&str], input: Option<&str>) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let line = format!("{program} {}", args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{line}`: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("`{line}`: {e}"))?;
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait_with_output())
        .await
        .map_err(|_| format!("`{line}` did not finish within 5 s"))?
        .map_err(|e| format!("`{line}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
