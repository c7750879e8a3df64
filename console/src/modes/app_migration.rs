//! Mode app-migration, console side (DESIGN §5; papers 000, 002, 004).

use super::EventSummary;
use crate::testbed::Testbed;
use crate::topology::{RunSettings, Topology};
use halab_protocol::modes::app_migration::{AppMigrationConfig, Event};

/// Whether this version runs app-migration.
pub fn supported() -> Result<(), String> {
    Err("mode `app-migration` cannot be run yet: it is not implemented".into())
}

/// The group every server and client of an app-migration run is told about.
pub fn config(topo: &Topology, settings: &RunSettings) -> Result<AppMigrationConfig, String> {
    let _ = (topo, settings);
    Err("mode `app-migration` is not implemented in this version".into())
}

/// Summarises an event of this mode for the run's record.
pub fn describe(event: &Event) -> EventSummary {
    match *event {}
}

/// Acts on an event of this mode from `host` during a run.
pub async fn on_event(testbed: &mut Testbed, host: &str, event: &Event) -> Result<(), String> {
    let _ = (testbed, host);
    match *event {}
}

/// Brings the testbed back to this mode's starting state after a run.
pub async fn after_run(testbed: &mut Testbed, cfg: &AppMigrationConfig) -> Result<(), String> {
    let _ = (testbed, cfg);
    Ok(())
}
