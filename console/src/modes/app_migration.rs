//! Mode app-migration, console side (DESIGN §5; papers 000, 002, 004). The console tells every
//! server and client who is in the group (primary first, then the backups, in file order),
//! with the testbed's HMAC key; the servers do the rest among themselves and report
//! detections, triggers, accepted reconnects and rejoins, which go into the run's record.
//! Nothing to act on and nothing to reset: the servers and clients migrate by themselves (no
//! fencing: a client leaves a server only for another one), and servers restarted after a
//! power-on rejoin the group by themselves.

use super::contract::{
    ClientPolicy, FailoverMode, RoleRule, RunKeys, ServerList, heartbeat_params,
};
use crate::topology::{RunSettings, Topology, Trigger as TopoTrigger};
use halab_protocol::modes::app_migration::{AppMigrationConfig, Event, GroupMember, Trigger};
use halab_protocol::{ModeConfig, ModeEvent, Role};
use std::collections::BTreeMap;

/// Heartbeat interval when neither topology nor experiment gives one.
pub const DEFAULT_HEARTBEAT_MS: u64 = 200;
/// Missed heartbeats before a server is dead, when not given.
pub const DEFAULT_MISSED_HEARTBEATS: u32 = 3;

/// Application-layer connection migration.
pub struct AppMigration;

const ROLES: [RoleRule; 3] = [
    RoleRule::one(Role::Primary),
    RoleRule::at_least_one(Role::Backup),
    RoleRule::at_least_one(Role::Client),
];

impl FailoverMode for AppMigration {
    fn name(&self) -> &'static str {
        "app-migration"
    }

    fn roles(&self) -> &'static [RoleRule] {
        &ROLES
    }

    fn run_keys(&self) -> RunKeys {
        RunKeys {
            heartbeat: true,
            trigger: true,
        }
    }

    fn config(
        &self,
        topo: &Topology,
        settings: &RunSettings,
        key_hex: &str,
    ) -> Result<ModeConfig, String> {
        config(topo, settings, key_hex).map(|c| ModeConfig::AppMigration(Box::new(c)))
    }

    fn client_policy(&self) -> ClientPolicy {
        // The servers tell the client where to go; it starts at the service address.
        ClientPolicy {
            servers: ServerList::ServiceAddressThenBackups,
            keep_last_server: false,
        }
    }

    fn record_params(&self, settings: &RunSettings) -> BTreeMap<String, serde_json::Value> {
        let mut m = heartbeat_params(settings);
        if let Some(t) = settings.trigger {
            m.insert(
                "trigger".into(),
                serde_json::to_value(t).unwrap_or(serde_json::Value::Null),
            );
        }
        m
    }

    fn describe(&self, event: &ModeEvent) -> String {
        match event {
            ModeEvent::AppMigration(e) => describe(e),
            other => format!("{other:?}"),
        }
    }

    fn plot_color(&self) -> (u8, u8, u8) {
        (31, 119, 180)
    }
}

/// The group every server and client of an app-migration run is told about; `key_hex` is the
/// testbed's HMAC key.
pub fn config(
    topo: &Topology,
    settings: &RunSettings,
    key_hex: &str,
) -> Result<AppMigrationConfig, String> {
    let service = topo.service_network();
    let servers = topo
        .hosts_with(Role::Primary)
        .chain(topo.hosts_with(Role::Backup));
    let mut group = Vec::new();
    for h in servers {
        let Some(addr) = h.addresses.get(&service.name) else {
            return Err(format!(
                "server {} has no address on the service network {}",
                h.name, service.name
            ));
        };
        group.push(GroupMember {
            host: h.name.clone(),
            service_addr: addr.to_string(),
            heartbeat_addrs: h.addresses.values().map(|a| a.to_string()).collect(),
        });
    }
    if group.len() < 2 {
        return Err(format!(
            "needs at least two servers (a primary and a backup); the topology has {}",
            group.len()
        ));
    }
    Ok(AppMigrationConfig {
        trigger: match settings.trigger {
            Some(TopoTrigger::Client) => Trigger::Client,
            Some(TopoTrigger::Server) | None => Trigger::Server,
        },
        heartbeat_ms: settings.heartbeat_ms.unwrap_or(DEFAULT_HEARTBEAT_MS),
        missed_heartbeats: settings
            .missed_heartbeats
            .unwrap_or(DEFAULT_MISSED_HEARTBEATS),
        group,
        key_hex: key_hex.to_string(),
    })
}

/// What an event of this mode says, for the record: `detect` (who declared whom dead),
/// `takeover` (a trigger sent, or a reconnect accepted), `rejoin`, `ignored` (a datagram that
/// failed authentication).
pub fn describe(event: &Event) -> String {
    match event {
        Event::Detect { peer, .. } => format!("{peer} declared dead"),
        Event::Rejoin { peer, .. } => format!("{peer} rejoined the group"),
        Event::Trigger {
            conn, client, peer, ..
        } => format!("migration request for download {conn} (orphaned by {peer}) sent to {client}"),
        Event::Accepted {
            conn,
            client,
            offset,
            ..
        } => format!("reconnect of download {conn} from {client} accepted at byte {offset}"),
        Event::Ignored { source, reason, .. } => {
            format!("datagram from {source} ignored: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_server() -> Topology {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../topologies/three-server.toml");
        crate::topology::load(&path).unwrap()
    }

    #[test]
    fn the_group_is_primary_then_backups_with_every_address_and_the_key() {
        let topo = three_server();
        let cfg = config(&topo, &topo.run, "abcd").unwrap();
        assert_eq!(cfg.trigger, Trigger::Server);
        assert_eq!((cfg.heartbeat_ms, cfg.missed_heartbeats), (200, 3));
        assert_eq!(cfg.key_hex, "abcd");
        let hosts: Vec<&str> = cfg.group.iter().map(|m| m.host.as_str()).collect();
        assert_eq!(hosts, ["server1", "server2", "server3"]);
        assert_eq!(cfg.group[1].service_addr, "10.20.0.2");
        assert!(
            cfg.group[1]
                .heartbeat_addrs
                .contains(&"10.20.1.2".to_string())
        );
        let mut client = topo.run.clone();
        client.trigger = Some(TopoTrigger::Client);
        client.heartbeat_ms = Some(50);
        let cfg = config(&topo, &client, "abcd").unwrap();
        assert_eq!((cfg.trigger, cfg.heartbeat_ms), (Trigger::Client, 50));
    }

    #[test]
    fn events_are_described_for_the_record() {
        let e = Event::Detect {
            peer: "server1".into(),
            at_ns: 5,
        };
        let s = describe(&e);
        assert_eq!((e.kind().as_str(), e.at_ns()), ("detect", 5));
        assert!(s.contains("server1"));
    }
}
