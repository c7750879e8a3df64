//! The failover mechanisms' console side (DESIGN §5): from a run's settings and the topology,
//! the [`ModeConfig`] every role and client of the run is started with, and whether this
//! version can run the mode at all.

pub mod app_migration;
pub mod st_tcp;

use crate::topology::{Mode, RunSettings, Topology};
use halab_protocol::ModeConfig;

/// The configuration the roles and clients of a run under `settings` get on `topo`; an error
/// says why the mode cannot run there.
pub fn mode_config(topo: &Topology, settings: &RunSettings) -> Result<ModeConfig, String> {
    match settings.mode {
        Mode::None => Ok(ModeConfig::None),
        Mode::AppMigration => {
            app_migration::config(topo, settings).map(|c| ModeConfig::AppMigration(Box::new(c)))
        }
        Mode::StTcp => st_tcp::config(topo, settings).map(|c| ModeConfig::StTcp(Box::new(c))),
        Mode::Craft => Err("mode `craft` is not implemented in this version".into()),
    }
}

/// Whether this version can run `mode`; the error says why not.
pub fn supported(mode: Mode) -> Result<(), String> {
    match mode {
        Mode::None => Ok(()),
        Mode::AppMigration => app_migration::supported(),
        Mode::StTcp => st_tcp::supported(),
        Mode::Craft => Err("mode `craft` cannot be run yet: it is not implemented".into()),
    }
}
