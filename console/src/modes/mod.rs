//! The failover mechanisms' console side (DESIGN §5): from a run's settings and the topology,
//! the [`ModeConfig`] every role and client of the run is started with, and whether this
//! version can run the mode at all.

pub mod app_migration;
pub mod st_tcp;

use crate::testbed::Testbed;
use crate::topology::{Mode, RunSettings, Topology};
use halab_protocol::{ModeConfig, ModeEvent};

/// The configuration the roles and clients of a run under `settings` get on `topo`; an error
/// says why the mode cannot run there. `key_hex` is the testbed's key for the modes that
/// authenticate their messages ([`Testbed::mode_key`]).
pub fn mode_config(
    topo: &Topology,
    settings: &RunSettings,
    key_hex: &str,
) -> Result<ModeConfig, String> {
    match settings.mode {
        Mode::None => Ok(ModeConfig::None),
        Mode::AppMigration => app_migration::config(topo, settings, key_hex)
            .map(|c| ModeConfig::AppMigration(Box::new(c))),
        Mode::StTcp => {
            st_tcp::config(topo, settings, key_hex).map(|c| ModeConfig::StTcp(Box::new(c)))
        }
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

/// What a mode event says, for the run's record: the agent's time of it (if it names one),
/// what kind of event it is (`detect`, `takeover`, `fence`, ...) and a detail.
pub struct EventSummary {
    pub agent_ns: Option<u64>,
    pub kind: &'static str,
    pub detail: String,
}

/// Summarises `event` for the record.
pub fn describe(event: &ModeEvent) -> EventSummary {
    match event {
        ModeEvent::AppMigration(e) => app_migration::describe(e),
        ModeEvent::StTcp(e) => st_tcp::describe(e),
    }
}

/// Acts on a mode event from `host` during a run (a backup asking for its primary to be
/// fenced, ...). An error is recorded with the event.
pub async fn on_event(testbed: &mut Testbed, host: &str, event: &ModeEvent) -> Result<(), String> {
    match event {
        ModeEvent::AppMigration(e) => app_migration::on_event(testbed, host, e).await,
        ModeEvent::StTcp(e) => st_tcp::on_event(testbed, host, e).await,
    }
}

/// Whether a run's mode events, (host, kind) in order, are complete: nothing the mode started
/// is still to report (st-tcp: every fence was followed by its takeover's end or an error).
pub fn settled(mode: &ModeConfig, events: &[(&str, &str)]) -> bool {
    match mode {
        ModeConfig::StTcp(_) => st_tcp::settled(events),
        ModeConfig::None | ModeConfig::AppMigration(_) => true,
    }
}

/// Brings the testbed back to the mode's starting state after a run: e.g. the service address
/// back on the primary. The faults agents hold are reverted already; hosts powered off (by a
/// fault or a fence) may still be off: the mode powers on those whose order matters to it, and
/// the runner the rest afterwards.
pub async fn after_run(testbed: &mut Testbed) -> Result<(), String> {
    match testbed.mode().clone() {
        ModeConfig::None => Ok(()),
        ModeConfig::AppMigration(c) => app_migration::after_run(testbed, &c).await,
        ModeConfig::StTcp(c) => st_tcp::after_run(testbed, &c).await,
    }
}
