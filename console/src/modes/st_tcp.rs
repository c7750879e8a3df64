//! Mode st-tcp, console side (DESIGN §5; thesis chapter 3, paper 003).

use super::EventSummary;
use crate::testbed::Testbed;
use crate::topology::{RunSettings, Topology};
use halab_protocol::modes::st_tcp::{Event, StTcpConfig};

/// Whether this version runs st-tcp.
pub fn supported() -> Result<(), String> {
    Err("mode `st-tcp` cannot be run yet: it is not implemented".into())
}

/// What primary, backup and logger of an st-tcp run are told about each other.
pub fn config(topo: &Topology, settings: &RunSettings) -> Result<StTcpConfig, String> {
    let _ = (topo, settings);
    Err("mode `st-tcp` is not implemented in this version".into())
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
pub async fn after_run(testbed: &mut Testbed, cfg: &StTcpConfig) -> Result<(), String> {
    let _ = (testbed, cfg);
    Ok(())
}
