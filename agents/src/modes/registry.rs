//! The agent's one table of failover modes: for each mode, the start function of each role it
//! uses ([`start_role`]), the server process its server roles run ([`server_process`]) and
//! what its clients do ([`ClientPolicy`]). Nothing else in the agent matches on a mode.
//!
//! Adding a mode: its module under `modes/` (`pub mod` in `modes/mod.rs`), then here one arm
//! per role it uses in [`start_role`] and one [`StartError`] variant for its start errors; a
//! [`ClientPolicy`] variant if its clients behave differently from mode none's; an entry in
//! [`SERVER_PROCESSES`] if its server roles run a process of their own.

use super::{app_migration, craft, none, st_tcp};
use crate::role_ctx::{RoleCtx, StartedRole};
use crate::server_process::ServeError;
use crate::workload::connection::{Client, ClientError};
use halab_protocol::modes::app_migration::AppMigrationConfig;
use halab_protocol::{ClientSpec, ModeConfig, Role, Workload};
use std::borrow::Cow;

/// Why a role did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Server(#[from] ServeError),
    #[error(transparent)]
    AppMigration(#[from] app_migration::StartError),
    #[error(transparent)]
    StTcp(#[from] st_tcp::start_error::StartError),
    #[error(transparent)]
    Craft(#[from] craft::roles::StartError),
}

/// Starts `ctx.role` under `mode`: one arm per (mode, role) that has work to do. A role a mode
/// does not list runs as an idle task (see [`NotUsed`]).
pub async fn start_role(ctx: RoleCtx, mode: &ModeConfig) -> Result<StartedRole, StartError> {
    use ModeConfig as M;
    use Role::*;
    Ok(match (mode, ctx.role) {
        (M::None, Primary | Backup) => none::start_server(ctx).await?,
        (M::AppMigration(c), Primary | Backup) => app_migration::start_server(ctx, c).await?,
        (M::StTcp(c), Primary) => st_tcp::primary::start(ctx, (**c).clone()).await?,
        (M::StTcp(c), Backup) => st_tcp::backup::start(ctx, (**c).clone()).await?,
        (M::StTcp(c), Logger) => st_tcp::logger::start(ctx, (**c).clone()).await?,
        (M::Craft(c), Lb) => craft::roles::start_balancer(ctx, (**c).clone()).await?,
        (M::Craft(c), Proxy) => craft::roles::start_proxy(ctx, (**c).clone()).await?,
        (M::Craft(c), Logger) if c.gateway.is_some() => {
            craft::roles::start_gateway(ctx, (**c).clone()).await?
        }
        (M::Craft(c), Primary | Backup) => craft::roles::start_backend(ctx, (**c).clone()).await?,
        // Every mode's clients: their runs come with `StartClient`, under the spec's mode (see
        // `ClientPolicy`); the role itself has nothing to run.
        (_, Client) => idle(ctx, None),
        (mode, role) => {
            let why = NotUsed {
                role,
                mode: mode.name(),
            };
            idle(ctx, Some(why.to_string()))
        }
    })
}

/// A role the mode has no work for, a logger under mode none say. The console starts every
/// role of the topology under whatever mode the run has, so this is not a failure: the role
/// runs idle until it is stopped, with this as its detail.
#[derive(Debug, thiserror::Error)]
#[error("role {role} is not used by mode {mode}: nothing to run")]
pub struct NotUsed {
    pub role: Role,
    pub mode: &'static str,
}

/// A role with nothing to run: a task that waits for the role's end.
fn idle(ctx: RoleCtx, detail: Option<String>) -> StartedRole {
    let RoleCtx { role, cancel, .. } = ctx;
    StartedRole {
        task: tokio::spawn(async move {
            tracing::info!(%role, "role started (nothing to run)");
            cancel.cancelled().await;
            tracing::info!(%role, "role stopped");
        }),
        detail,
        commands: None,
    }
}

/// The `main` of a server process: its exit code.
pub type ServerMain = fn() -> i32;

/// The processes modes run for their server roles, `halab-agent serve FLAG`, by flag, with
/// their `main`. `halab-agent serve` without one of these flags is the plain workload server.
pub const SERVER_PROCESSES: &[(&str, ServerMain)] =
    &[(app_migration::SERVE_FLAG, app_migration::server::main)];

/// The `main` of the server process `halab-agent serve FLAG` names, if a mode runs one.
pub fn server_process(flag: &str) -> Option<ServerMain> {
    SERVER_PROCESSES
        .iter()
        .find(|(f, _)| *f == flag)
        .map(|(_, main)| *main)
}

/// What a mode does on the client side (DESIGN §5): how it changes the connections' spec, and
/// whether it has a client of its own for a workload. Chosen once per connection from the
/// spec's mode ([`ClientPolicy::of`]); the workload client asks it, never the mode.
pub enum ClientPolicy<'a> {
    /// Mode none: the client's own failover, the workload client's default: on a failure the
    /// next server of its list, and the request issued again.
    Reissue,
    /// app-migration: the group's download client ([`app_migration::client`]); other
    /// workloads as under none.
    AppMigration(&'a AppMigrationConfig),
    /// st-tcp: an unmodified client of the service address ([`st_tcp::client`]).
    StTcp,
}

impl<'a> ClientPolicy<'a> {
    /// The policy of `mode`.
    pub fn of(mode: &'a ModeConfig) -> ClientPolicy<'a> {
        match mode {
            ModeConfig::None => ClientPolicy::Reissue,
            ModeConfig::AppMigration(cfg) => ClientPolicy::AppMigration(cfg),
            // craft's clients are unmodified clients of the service address, as st-tcp's.
            ModeConfig::StTcp(_) | ModeConfig::Craft(_) => ClientPolicy::StTcp,
        }
    }

    /// The spec the connections run with: the run's, or the mode's version of it.
    pub fn spec<'s>(&self, spec: &'s ClientSpec) -> Cow<'s, ClientSpec> {
        match self {
            ClientPolicy::StTcp => Cow::Owned(st_tcp::client::spec(spec)),
            ClientPolicy::Reissue | ClientPolicy::AppMigration(_) => Cow::Borrowed(spec),
        }
    }

    /// Runs `c` with the mode's own client for its workload; `None` when the mode has none for
    /// it (the workload's plain client runs then).
    pub async fn run_own(&self, c: &mut Client<'_>) -> Option<Result<(), ClientError>> {
        match (self, c.spec.workload) {
            (ClientPolicy::AppMigration(cfg), Workload::Download) => {
                Some(app_migration::client::download(c, cfg).await)
            }
            _ => None,
        }
    }
}
