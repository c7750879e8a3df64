//! Mode st-tcp, console side (DESIGN §5; thesis chapter 3, paper 003): tells primary, backup
//! and logger about each other, fences the primary when the backup asks (then answers the
//! backup, which only takes over once the primary is surely dead), and after a run gives the
//! service address back to the primary.

use super::contract::{
    ClientPolicy, FailoverMode, MeasuredBy, ModeFuture, RoleRule, RunKeys, ServerList,
};
use crate::lab::handle::Lab;
use crate::state::HostState;
use crate::topology::{Host, RunSettings, Topology};
use halab_protocol::modes::st_tcp::{Command, Event, StTcpConfig, StTcpPeer, fence_tag_ok};
use halab_protocol::sealed::Key;
use halab_protocol::{
    ConsoleMsg, EventKind, HTTP_PORT, ModeCommand, ModeConfig, ModeEvent, Role, WORKLOAD_PORT,
};
use std::time::Duration;

/// Defaults of the mode's parameters the topology does not set.
const DEFAULT_HEARTBEAT_MS: u64 = 200;
const DEFAULT_MISSED: u32 = 3;
/// AppMaxLagTime (thesis §3.7.3) at least: the primary's application must make no progress
/// while the replica has for this long. Generous, as a busy primary (20 connections served by
/// one thread on a loaded machine) can leave one connection unserved for a second.
const MIN_APP_MAX_LAG_MS: u64 = 3000;
/// MaxDelayFIN (thesis §3.7.4) at least.
const MIN_MAX_DELAY_FIN_MS: u64 = 1000;

/// How long the backup may take to acknowledge a reset (it gives the service address back
/// and reports `serving` as the backup) before the primary announces the address again.
const RESET_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The tapping backup's mode.
pub struct StTcp;

const ROLES: [RoleRule; 4] = [
    RoleRule::one(Role::Primary),
    RoleRule::one(Role::Backup),
    RoleRule::optional(Role::Logger),
    RoleRule::at_least_one(Role::Client),
];

impl FailoverMode for StTcp {
    fn name(&self) -> &'static str {
        "st-tcp"
    }

    fn roles(&self) -> &'static [RoleRule] {
        &ROLES
    }

    fn run_keys(&self) -> RunKeys {
        RunKeys {
            heartbeat: true,
            trigger: false,
        }
    }

    fn config(
        &self,
        topo: &Topology,
        settings: &RunSettings,
        key_hex: &str,
    ) -> Result<ModeConfig, String> {
        config(topo, settings, key_hex).map(|c| ModeConfig::StTcp(Box::new(c)))
    }

    fn client_policy(&self) -> ClientPolicy {
        // The client is unmodified: it knows the service address only.
        ClientPolicy {
            servers: ServerList::ServiceAddressThenBackups,
            keep_last_server: false,
        }
    }

    fn describe(&self, event: &ModeEvent) -> String {
        match event {
            ModeEvent::StTcp(e) => describe(e),
            other => format!("{other:?}"),
        }
    }

    fn on_event<'a, 't: 'a>(
        &'a self,
        lab: &'a mut Lab<'t>,
        host: &'a str,
        event: &'a ModeEvent,
    ) -> ModeFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match event {
                ModeEvent::StTcp(e) => on_event(lab, host, e).await,
                _ => Ok(()),
            }
        })
    }

    fn settled(&self, events: &[(&str, EventKind)]) -> bool {
        settled(events)
    }

    fn after_run<'a, 't: 'a>(&'a self, lab: &'a mut Lab<'t>) -> ModeFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let ModeConfig::StTcp(cfg) = lab.testbed.mode().clone() else {
                return Ok(());
            };
            after_run(lab, &cfg).await
        })
    }

    fn measured_by(&self) -> MeasuredBy {
        MeasuredBy::ModeEvents
    }

    fn plot_color(&self) -> (u8, u8, u8) {
        (214, 39, 40)
    }
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

/// What an event of this mode says, for the run's record.
pub fn describe(event: &Event) -> String {
    match event {
        Event::Detect { reason, detail, .. } => format!("{}: {detail}", reason.name()),
        Event::FenceRequest { host, why, .. } => format!("{host}: {why}"),
        Event::Serving {
            role,
            service_address: true,
            ..
        } => format!("{role}, holds the service address"),
        Event::Serving { role, .. } => role.to_string(),
        Event::FaultTolerant {
            backup,
            unprotected,
            ..
        } => {
            if unprotected.is_empty() {
                format!("backup {backup}")
            } else {
                let keys: Vec<String> = unprotected.iter().map(|k| k.to_string()).collect();
                format!(
                    "backup {backup}; unprotected (opened before it joined): {}",
                    keys.join(", ")
                )
            }
        }
        Event::Refused {
            channel,
            forged,
            replayed,
            ..
        } => format!("{}: {forged} forged, {replayed} replayed", channel.name()),
        Event::Takeover {
            connection,
            resent,
            error: None,
            ..
        } => format!("{connection}: {resent} bytes sent at once"),
        Event::Takeover {
            connection,
            error: Some(e),
            ..
        } => format!("{connection}: failed: {e}"),
        Event::TakeoverDone {
            connections,
            failed,
            ..
        } => format!("{connections} connections, {failed} failed"),
        Event::NonFaultTolerant { reason, .. } => reason.clone(),
        Event::LoggerRecovered {
            connection, bytes, ..
        } => format!("{connection}: {bytes} bytes"),
        Event::FinHeld {
            connection,
            outcome,
            ..
        } => format!("{connection}: {outcome}"),
        Event::Error { message, .. } => message.clone(),
    }
}

/// Whether every fence request of a run, (host, kind) in order, was followed by the end of
/// its takeover (`takeover-done`) or an `error` from the same backup: the takeover's events
/// can come after the client has its bytes.
pub fn settled(events: &[(&str, EventKind)]) -> bool {
    let mut open: Vec<&str> = Vec::new();
    for &(host, kind) in events {
        match kind {
            EventKind::Fence => open.push(host),
            EventKind::TakeoverDone | EventKind::Error => open.retain(|h| *h != host),
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
async fn on_event(lab: &mut Lab<'_>, host: &str, event: &Event) -> Result<(), String> {
    let testbed = &mut *lab.testbed;
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
    testbed: &mut crate::testbed::Testbed,
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
async fn after_run(lab: &mut Lab<'_>, cfg: &StTcpConfig) -> Result<(), String> {
    let testbed = &mut *lab.testbed;
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
    let off = |testbed: &crate::testbed::Testbed, host: &str| {
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
        // The backup removes the address before the primary announces it: its `serving` as
        // the backup, without the address, is sent once it has.
        let acked = lab
            .wait_for_mode_event(&original.backup.host, RESET_ACK_TIMEOUT, |e| {
                matches!(
                    e,
                    ModeEvent::StTcp(Event::Serving {
                        role: Role::Backup,
                        service_address: false,
                        ..
                    })
                )
            })
            .await;
        if let Err(e) = acked {
            tracing::warn!(
                host = %original.backup.host,
                error = %e,
                "st-tcp reset not acknowledged within {RESET_ACK_TIMEOUT:?}"
            );
        }
    }
    let testbed = &mut *lab.testbed;
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
        use EventKind::*;
        assert!(settled(&[]));
        assert!(settled(&[("primary", NonFaultTolerant)]));
        let fenced = [("backup", Detect), ("backup", Fence)];
        assert!(!settled(&fenced));
        assert!(!settled(&[fenced[0], fenced[1], ("backup", Takeover)]));
        assert!(settled(&[fenced[0], fenced[1], ("backup", TakeoverDone)]));
        assert!(settled(&[fenced[0], fenced[1], ("backup", Error)]));
        // Another host's end does not close this fence.
        assert!(!settled(&[fenced[0], fenced[1], ("primary", TakeoverDone)]));
    }
}
