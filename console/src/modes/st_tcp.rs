//! Mode st-tcp, console side (DESIGN §5; thesis chapter 3, paper 003): tells primary, backup
//! and logger about each other, fences the primary when the backup asks (then answers the
//! backup, which only takes over once the primary is surely dead), and after a run gives the
//! service address back to the primary.

use super::EventSummary;
use crate::state::HostState;
use crate::testbed::Testbed;
use crate::topology::{Host, RunSettings, Topology};
use halab_protocol::modes::st_tcp::{Command, Event, StTcpConfig, StTcpPeer, fence_tag_ok};
use halab_protocol::sealed::Key;
use halab_protocol::{ConsoleMsg, HTTP_PORT, ModeCommand, ModeConfig, Role, WORKLOAD_PORT};

/// Defaults of the mode's parameters the topology does not set.
const DEFAULT_HEARTBEAT_MS: u64 = 200;
const DEFAULT_MISSED: u32 = 3;
/// AppMaxLagTime (thesis §3.7.3) at least: the primary's application must make no progress
/// while the replica has for this long. Generous, as a busy primary (20 connections served by
/// one thread on a loaded machine) can leave one connection unserved for a second.
const MIN_APP_MAX_LAG_MS: u64 = 3000;
/// MaxDelayFIN (thesis §3.7.4) at least.
const MIN_MAX_DELAY_FIN_MS: u64 = 1000;

/// Whether this version runs st-tcp.
pub fn supported() -> Result<(), String> {
    Ok(())
}

/// What primary, backup and logger of an st-tcp run are told about each other; `key_hex` is
/// the testbed's key their datagrams and fence requests are sealed with.
pub fn config(
    topo: &Topology,
    settings: &RunSettings,
    key_hex: &str,
) -> Result<StTcpConfig, String> {
    let service = topo.service_network();
    let one = |role: Role| -> Result<&Host, String> {
        let mut it = topo.hosts_with(role);
        let h = it
            .next()
            .ok_or_else(|| format!("st-tcp needs a host with role {role}"))?;
        if it.next().is_some() {
            return Err(format!("st-tcp takes exactly one {role} host"));
        }
        Ok(h)
    };
    let primary = one(Role::Primary)?;
    let backup = one(Role::Backup)?;
    // The dedicated heartbeat link: a network other than the service one that both share.
    let heartbeat = topo.networks.iter().find(|n| {
        n.name != service.name
            && primary.addresses.contains_key(&n.name)
            && backup.addresses.contains_key(&n.name)
    });
    let peer = |h: &Host| -> Result<StTcpPeer, String> {
        Ok(StTcpPeer {
            host: h.name.clone(),
            service_addr: h
                .addresses
                .get(&service.name)
                .ok_or_else(|| format!("host {} has no address on {}", h.name, service.name))?
                .to_string(),
            heartbeat_addr: heartbeat
                .and_then(|n| h.addresses.get(&n.name))
                .map(|a| a.to_string()),
        })
    };
    if !service.hub && topo.provider == crate::topology::Provider::Local {
        return Err(format!(
            "st-tcp needs the service network `{}` in hub mode (hub = true) so the backup sees \
             the primary's traffic",
            service.name
        ));
    }
    let heartbeat_ms = settings.heartbeat_ms.unwrap_or(DEFAULT_HEARTBEAT_MS);
    let missed = settings.missed_heartbeats.unwrap_or(DEFAULT_MISSED);
    Ok(StTcpConfig {
        heartbeat_ms,
        missed_heartbeats: missed,
        vip: topo.service_address.to_string(),
        vip_prefix: service.subnet.prefix_len(),
        service_iface: service.name.clone(),
        heartbeat_iface: heartbeat.map(|n| n.name.clone()),
        primary: peer(primary)?,
        backup: peer(backup)?,
        logger: topo.hosts_with(Role::Logger).next().map(peer).transpose()?,
        service_ports: vec![WORKLOAD_PORT, HTTP_PORT],
        app_max_lag_bytes: 0,
        app_max_lag_ms: (2 * heartbeat_ms * missed as u64).max(MIN_APP_MAX_LAG_MS),
        max_delay_fin_ms: (heartbeat_ms * missed as u64).max(MIN_MAX_DELAY_FIN_MS),
        key_hex: key_hex.to_string(),
        tap_drop_every: 0,
    })
}

/// Summarises an event of this mode for the run's record.
pub fn describe(event: &Event) -> EventSummary {
    let (at, kind, detail) = match event {
        Event::Detect {
            at_ns,
            reason,
            detail,
        } => (*at_ns, "detect", format!("{}: {detail}", reason.name())),
        Event::FenceRequest {
            at_ns, host, why, ..
        } => (*at_ns, "fence", format!("{host}: {why}")),
        Event::Serving {
            at_ns,
            role,
            service_address,
        } => (
            *at_ns,
            "serving",
            if *service_address {
                format!("{role}, holds the service address")
            } else {
                role.to_string()
            },
        ),
        Event::FaultTolerant {
            at_ns,
            backup,
            unprotected,
        } => (
            *at_ns,
            "fault-tolerant",
            if unprotected.is_empty() {
                format!("backup {backup}")
            } else {
                format!(
                    "backup {backup}; unprotected (opened before it joined): {}",
                    unprotected.join(", ")
                )
            },
        ),
        Event::Refused {
            at_ns,
            channel,
            forged,
            replayed,
        } => (
            *at_ns,
            "refused",
            format!("{}: {forged} forged, {replayed} replayed", channel.name()),
        ),
        Event::Takeover {
            at_ns,
            connection,
            resent,
            error,
        } => (
            *at_ns,
            "takeover",
            match error {
                None => format!("{connection}: {resent} bytes sent at once"),
                Some(e) => format!("{connection}: failed: {e}"),
            },
        ),
        Event::TakeoverDone {
            at_ns,
            connections,
            failed,
        } => (
            *at_ns,
            "takeover-done",
            format!("{connections} connections, {failed} failed"),
        ),
        Event::NonFaultTolerant { at_ns, reason } => (*at_ns, "non-fault-tolerant", reason.clone()),
        Event::LoggerRecovered {
            at_ns,
            connection,
            bytes,
        } => (
            *at_ns,
            "logger-recovered",
            format!("{connection}: {bytes} bytes"),
        ),
        Event::FinHeld {
            at_ns,
            connection,
            outcome,
        } => (*at_ns, "fin-held", format!("{connection}: {outcome}")),
        Event::Error { at_ns, message } => (*at_ns, "error", message.clone()),
    };
    EventSummary {
        agent_ns: Some(at),
        kind,
        detail,
    }
}

/// Whether every fence request of a run, (host, kind) in order, was followed by the end of
/// its takeover (`takeover-done`) or an `error` from the same backup: the takeover's events
/// can come after the client has its bytes.
pub fn settled(events: &[(&str, &str)]) -> bool {
    let mut open: Vec<&str> = Vec::new();
    for &(host, kind) in events {
        match kind {
            "fence" => open.push(host),
            "takeover-done" | "error" => open.retain(|h| *h != host),
            _ => {}
        }
    }
    open.is_empty()
}

/// Acts on an event of this mode from `host`: a fence request with a valid tag powers the
/// primary off (idempotent) and tells the backup whether that worked; a host's report of what
/// it serves as moves the roles and the service address in the testbed's records (and, when a
/// backup took over, swaps the pair in the mode's config, so that the old primary, powered on,
/// rejoins as the backup of the new one).
pub async fn on_event(testbed: &mut Testbed, host: &str, event: &Event) -> Result<(), String> {
    match event {
        Event::FenceRequest {
            at_ns,
            host: target,
            why,
            tag,
        } => fence(testbed, host, *at_ns, target, why, tag).await,
        Event::Serving {
            role,
            service_address,
            ..
        } => {
            let ModeConfig::StTcp(cfg) = testbed.mode().clone() else {
                return Ok(());
            };
            match role {
                Role::Primary => {
                    if cfg.backup.host == host {
                        // A takeover: the old primary is the backup to be.
                        testbed.note_role(&cfg.primary.host, Role::Primary, Role::Backup, false);
                        testbed.set_mode(ModeConfig::StTcp(Box::new(cfg.promoted())));
                    }
                    testbed.note_role(host, Role::Backup, Role::Primary, *service_address);
                }
                _ => testbed.note_role(host, Role::Primary, *role, *service_address),
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn fence(
    testbed: &mut Testbed,
    host: &str,
    at_ns: u64,
    target: &str,
    why: &str,
    tag: &str,
) -> Result<(), String> {
    let key = Key::from_hex(testbed.mode_key()).map_err(|e| format!("testbed key: {e}"))?;
    if !fence_tag_ok(&key, target, at_ns, tag) {
        // Nothing is powered off, and nobody is told it was.
        return Err(format!(
            "fence request for {target} from {host} refused: its tag does not verify (forged)"
        ));
    }
    let error = testbed
        .fence(target, why)
        .await
        .err()
        .map(|e| crate::error::chain(&e));
    let answer = ConsoleMsg::Mode {
        command: ModeCommand::StTcp(Command::Fenced {
            host: target.to_string(),
            error: error.clone(),
        }),
    };
    testbed
        .send(host, answer)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    match error {
        None => Ok(()),
        Some(e) => Err(format!("fencing {target}: {e}")),
    }
}

/// Brings the testbed back to this mode's starting state after a run (each run starts from the
/// topology's roles): the records and the config back to the topology's pair; the backup host
/// drops what it took over and gives the service address back (one that took over goes back
/// to tapping); then the primary host, if it served as a backup (it rejoined), stops that role
/// (the next run starts its primary role again), and a fenced one is powered on (its role
/// announces the service address) or, if it ran on, announces it again.
pub async fn after_run(testbed: &mut Testbed, cfg: &StTcpConfig) -> Result<(), String> {
    let topo_primary = testbed
        .topology
        .hosts_with(Role::Primary)
        .next()
        .map(|h| h.name.clone());
    let original = if topo_primary.as_deref() == Some(cfg.primary.host.as_str()) {
        cfg.clone()
    } else {
        cfg.promoted()
    };
    testbed.reset_roles();
    testbed.set_mode(ModeConfig::StTcp(Box::new(original.clone())));
    let reset = || ConsoleMsg::Mode {
        command: ModeCommand::StTcp(Command::Reset),
    };
    let off = |testbed: &Testbed, host: &str| {
        testbed
            .snapshot()
            .hosts
            .iter()
            .any(|h| h.name == host && h.state == HostState::PoweredOff)
    };
    let chain = |e: crate::testbed::TestbedError| crate::error::chain(&e);
    if !off(testbed, &original.backup.host) {
        testbed
            .send(&original.backup.host, reset())
            .await
            .map_err(chain)?;
        // The backup removes the address before the primary announces it.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let primary = original.primary.host.as_str();
    if off(testbed, primary) {
        testbed.power_on(primary).await.map_err(chain)?;
    } else {
        testbed
            .send(primary, ConsoleMsg::StopRole { role: Role::Backup })
            .await
            .map_err(chain)?;
        testbed.send(primary, reset()).await.map_err(chain)?;
    }
    if off(testbed, &original.backup.host) {
        testbed
            .power_on(&original.backup.host)
            .await
            .map_err(chain)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_settled_once_every_fence_has_its_takeovers_end() {
        assert!(settled(&[]));
        assert!(settled(&[("primary", "non-fault-tolerant")]));
        let fenced = [("backup", "detect"), ("backup", "fence")];
        assert!(!settled(&fenced));
        assert!(!settled(&[fenced[0], fenced[1], ("backup", "takeover")]));
        assert!(settled(&[
            fenced[0],
            fenced[1],
            ("backup", "takeover-done")
        ]));
        assert!(settled(&[fenced[0], fenced[1], ("backup", "error")]));
        // Another host's end does not close this fence.
        assert!(!settled(&[
            fenced[0],
            fenced[1],
            ("primary", "takeover-done")
        ]));
    }
}
