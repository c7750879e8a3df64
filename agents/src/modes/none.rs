//! Mode none (DESIGN §5, the baseline): the server roles run the plain workload server; the
//! failover is the client's own (next server, request issued again), which is the workload
//! client's default behaviour (`workload::client`).

use crate::role_ctx::{RoleCtx, StartedRole};
use crate::server_process::{ServeError, serve_role};

/// A server role (primary or backup): the workload server on every address of the host.
pub async fn start_server(ctx: RoleCtx) -> Result<StartedRole, ServeError> {
    let served = serve_role(&ctx, &[], &[], "workload server").await?;
    Ok(StartedRole {
        task: served.supervisor,
        detail: Some(format!("workload server pid {}", served.pid)),
        commands: None,
    })
}
