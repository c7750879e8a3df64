//! The failover mechanisms' agent side (DESIGN §5): what the server, logger and client roles do
//! under each mode. Each mode is one module here; [`registry`] is the one table that says which
//! of its functions runs for which role, which server process it runs and what its clients do.
//!
//! Every role starts from a [`crate::role_ctx::RoleCtx`] and answers with a
//! [`crate::role_ctx::StartedRole`]; the role's task owns everything the mode spawns and ends
//! when `cancel` fires. Server roles run their server through
//! [`crate::server_process::serve_role`]. Nothing in a mode's module uses this module or the
//! registry: the modes depend on the shared leaves, and the registry on the modes.

pub mod app_migration;
pub mod craft;
pub mod none;
pub mod registry;
pub mod st_tcp;
