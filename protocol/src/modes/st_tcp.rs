//! Mode st-tcp: a tapping backup takes over live TCP connections (DESIGN §5; thesis chapter 3,
//! paper 003). The console's part is to tell primary, backup and logger about each other, and
//! to fence the primary when the backup asks.

use serde::{Deserialize, Serialize};

/// A host of the st-tcp group and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StTcpPeer {
    pub host: String,
    /// Its address on the service network.
    pub service_addr: String,
    /// Its address on the dedicated heartbeat network, if it has one.
    pub heartbeat_addr: Option<String>,
}

/// What primary, backup and logger of an st-tcp run are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StTcpConfig {
    pub heartbeat_ms: u64,
    pub missed_heartbeats: u32,
    /// The service address (VIP) clients connect to, owned by the primary until takeover.
    pub vip: String,
    /// Prefix length of the service network (for adding the VIP on takeover).
    pub vip_prefix: u8,
    /// Interface name of the service network inside each host.
    pub service_iface: String,
    /// Interface name of the heartbeat network, if there is one.
    pub heartbeat_iface: Option<String>,
    pub primary: StTcpPeer,
    pub backup: StTcpPeer,
    pub logger: Option<StTcpPeer>,
}

/// Console → agent requests of this mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {}

/// Agent → console events of this mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {}
