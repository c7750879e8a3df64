//! Mode st-tcp on the agent (DESIGN §5; thesis chapter 3, paper 003).

use super::{RoleCtx, StartedRole};
use halab_protocol::modes::st_tcp::StTcpConfig;

/// Starts `ctx.role` under st-tcp.
pub async fn start_role(ctx: RoleCtx, cfg: &StTcpConfig) -> Result<StartedRole, String> {
    let _ = (ctx, cfg);
    Err("mode st-tcp is not implemented in this agent yet".into())
}
