//! Mode app-migration, console side (DESIGN §5; papers 000, 002, 004).

use crate::topology::{RunSettings, Topology};
use halab_protocol::modes::app_migration::AppMigrationConfig;

/// Whether this version runs app-migration.
pub fn supported() -> Result<(), String> {
    Err("mode `app-migration` cannot be run yet: it is not implemented".into())
}

/// The group every server and client of an app-migration run is told about.
pub fn config(topo: &Topology, settings: &RunSettings) -> Result<AppMigrationConfig, String> {
    let _ = (topo, settings);
    Err("mode `app-migration` is not implemented in this version".into())
}
