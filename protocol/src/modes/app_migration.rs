//! Mode app-migration: client-aware resumption by a server group (DESIGN §5; papers 000, 002,
//! 004). The console's part is to tell every server and client who is in the group; the
//! servers report detections, takeovers and rejoins as [`Event`]s.

use super::event_kind::EventKind;
use serde::{Deserialize, Serialize};

/// TCP port of the app-migration download service on every server of the group.
pub const SERVICE_PORT: u16 = 7071;
/// UDP port of the group's heartbeats and soft state on every server.
pub const GROUP_PORT: u16 = 7072;

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

impl AppMigrationConfig {
    /// The detection bound: a peer silent this long is dead.
    pub fn detect_after_ms(&self) -> u64 {
        self.heartbeat_ms
            .max(1)
            .saturating_mul(self.missed_heartbeats.max(1) as u64)
    }
}

/// Console → agent requests of this mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {}

/// A download the group tracks: the id its client chose, shown in hex as the servers log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DownloadId(pub u64);

impl std::fmt::Display for DownloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Agent → console events of this mode; times are the reporting host's CLOCK_MONOTONIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// T_detect: this server declared `peer` dead after its heartbeats stopped.
    Detect { peer: String, at_ns: u64 },
    /// A peer that was dead (or restarted) is heard again and rejoins the group.
    Rejoin { peer: String, at_ns: u64 },
    /// T_takeover (server-triggered): this server, chosen by load, sent an authenticated
    /// migration request for connection `conn` (hex id) to `client`, orphaned by `peer`.
    Trigger {
        conn: DownloadId,
        client: String,
        peer: String,
        at_ns: u64,
    },
    /// T_takeover: a client's reconnect was accepted here, resuming at byte `offset`.
    Accepted {
        conn: DownloadId,
        client: String,
        offset: u64,
        at_ns: u64,
    },
    /// A datagram that failed authentication or named no member was dropped.
    Ignored {
        source: String,
        reason: String,
        at_ns: u64,
    },
}

impl Event {
    /// The event's kind (a trigger sent and a reconnect accepted are both takeovers).
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Detect { .. } => EventKind::Detect,
            Event::Rejoin { .. } => EventKind::Rejoin,
            Event::Trigger { .. } | Event::Accepted { .. } => EventKind::Takeover,
            Event::Ignored { .. } => EventKind::Ignored,
        }
    }

    /// The host time the event names.
    pub fn at_ns(&self) -> u64 {
        match self {
            Event::Detect { at_ns, .. }
            | Event::Rejoin { at_ns, .. }
            | Event::Trigger { at_ns, .. }
            | Event::Accepted { at_ns, .. }
            | Event::Ignored { at_ns, .. } => *at_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json() {
        let e = Event::Trigger {
            conn: DownloadId(0xab),
            client: "10.0.0.1:4000".into(),
            peer: "server1".into(),
            at_ns: 7,
        };
        let s = serde_json::to_string(&e).unwrap();
        assert!(s.contains("\"type\":\"trigger\""), "{s}");
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
        assert_eq!(e.at_ns(), 7);
    }
}
