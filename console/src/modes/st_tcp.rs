//! Mode st-tcp, console side (DESIGN §5; thesis chapter 3, paper 003).

use crate::topology::{RunSettings, Topology};
use halab_protocol::modes::st_tcp::StTcpConfig;

/// Whether this version runs st-tcp.
pub fn supported() -> Result<(), String> {
    Err("mode `st-tcp` cannot be run yet: it is not implemented".into())
}

/// What primary, backup and logger of an st-tcp run are told about each other.
pub fn config(topo: &Topology, settings: &RunSettings) -> Result<StTcpConfig, String> {
    let _ = (topo, settings);
    Err("mode `st-tcp` is not implemented in this version".into())
}
