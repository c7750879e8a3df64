//! Mode app-migration on the agent (DESIGN §5; papers 000, 002, 004).

use super::{RoleCtx, StartedRole};
use halab_protocol::modes::app_migration::AppMigrationConfig;

/// Starts `ctx.role` under app-migration.
pub async fn start_role(ctx: RoleCtx, cfg: &AppMigrationConfig) -> Result<StartedRole, String> {
    let _ = (ctx, cfg);
    Err("mode app-migration is not implemented in this agent yet".into())
}
