//! Mode app-migration: client-aware resumption by a server group (DESIGN §5; papers 000, 002,
//! 004). The console's part is to tell every server and client who is in the group.

use serde::{Deserialize, Serialize};

/// Who starts a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A surviving server contacts the orphaned client (paper 000).
    Server,
    /// The client detects the failure and resumes on the next server of its list (paper 004).
    Client,
}

/// One server of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    pub host: String,
    /// Address clients reach it on (service network).
    pub service_addr: String,
    /// Addresses it sends and receives heartbeats on (one per network it shares with others).
    pub heartbeat_addrs: Vec<String>,
}

/// What every server and client of an app-migration run is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppMigrationConfig {
    pub trigger: Trigger,
    pub heartbeat_ms: u64,
    pub missed_heartbeats: u32,
    /// The servers, primary first, in file order.
    pub group: Vec<GroupMember>,
    /// Per-testbed HMAC key, hex.
    pub key_hex: String,
}

/// Console → agent requests of this mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {}

/// Agent → console events of this mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {}
