//! Mode app-migration, console side (DESIGN §5; papers 000, 002, 004). The console tells every
//! server and client who is in the group (primary first, then the backups, in file order),
//! with the testbed's HMAC key; the servers do the rest among themselves and report
//! detections, triggers, accepted reconnects and rejoins, which go into the run's record.

use super::EventSummary;
use crate::testbed::Testbed;
use crate::topology::{RunSettings, Topology, Trigger as TopoTrigger};
use halab_protocol::Role;
use halab_protocol::modes::app_migration::{AppMigrationConfig, Event, GroupMember, Trigger};

/// Heartbeat interval when neither topology nor experiment gives one.
pub const DEFAULT_HEARTBEAT_MS: u64 = 200;
/// Missed heartbeats before a server is dead, when not given.
pub const DEFAULT_MISSED_HEARTBEATS: u32 = 3;

/// Whether this version runs app-migration.
pub fn supported() -> Result<(), String> {
    Ok(())
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

/// Summarises an event of this mode for the record: `detect` (who declared whom dead),
/// `takeover` (a trigger sent, or a reconnect accepted), `rejoin`, `ignored` (a datagram that
/// failed authentication).
pub fn describe(event: &Event) -> EventSummary {
    let (kind, detail) = match event {
        Event::Detect { peer, .. } => ("detect", format!("{peer} declared dead")),
        Event::Rejoin { peer, .. } => ("rejoin", format!("{peer} rejoined the group")),
        Event::Trigger {
            conn, client, peer, ..
        } => (
            "takeover",
            format!("migration request for download {conn} (orphaned by {peer}) sent to {client}"),
        ),
        Event::Accepted {
            conn,
            client,
            offset,
            ..
        } => (
            "takeover",
            format!("reconnect of download {conn} from {client} accepted at byte {offset}"),
        ),
        Event::Ignored { source, reason, .. } => (
            "ignored",
            format!("datagram from {source} ignored: {reason}"),
        ),
    };
    EventSummary {
        agent_ns: Some(event.at_ns()),
        kind,
        detail,
    }
}

/// Acts on an event of this mode from `host` during a run: nothing to do, the servers and
/// clients migrate by themselves (no fencing: a client leaves a server only for another one).
pub async fn on_event(testbed: &mut Testbed, host: &str, event: &Event) -> Result<(), String> {
    let _ = (testbed, host, event);
    Ok(())
}

/// Brings the testbed back to this mode's starting state after a run: the servers restarted
/// after power-on rejoin the group by themselves, so there is nothing to reset.
pub async fn after_run(testbed: &mut Testbed, cfg: &AppMigrationConfig) -> Result<(), String> {
    let _ = (testbed, cfg);
    Ok(())
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
        assert_eq!((s.kind, s.agent_ns), ("detect", Some(5)));
        assert!(s.detail.contains("server1"));
    }
}
