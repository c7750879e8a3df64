//! Firing and reverting faults (DESIGN §6), for experiments and dashboard keys alike: power
//! off and on are the console's (the provider's), every other kind is sent to the target
//! host's agent, which stamps T_fault, holds the fault under its lease and reverts it on
//! request, at lease end or when it exits.

use super::handle::Lab;
use crate::experiment::{Direction as ExpDirection, FaultKind};
use crate::topology::Topology;
use halab_protocol::{ConsoleMsg, Direction, FaultAction, Role};

/// A fault's parameters beyond its kind, as an experiment file or a key gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultParams {
    /// nic-down: one network's interface (default: all).
    pub interface: Option<String>,
    /// loss: percent dropped (default 100).
    pub percent: Option<f64>,
    /// loss: which traffic (default both).
    pub direction: Option<ExpDirection>,
    /// partition: a host, a role or a network.
    pub peer: Option<String>,
    /// delay: added latency.
    pub delay_ms: Option<u64>,
}

/// What firing a fault led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// An agent executes it as fault `id`; its `FaultApplied` will say when.
    Agent { host: String, id: u64 },
    /// The console executed it (power), at `at_ns` on the console's clock.
    Done {
        at_ns: u64,
        detail: String,
        host: String,
    },
}

/// Why a fault could not be fired.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("host {0} runs no server process")]
    NoServerProcess(String),
    #[error("{0}")]
    Testbed(String),
}

/// Fires fault `kind` with `params` at `host` (the host a target names now). Agent faults are
/// sent as `id` with their lease, if any.
pub async fn fire(
    lab: &mut Lab<'_>,
    host: &str,
    kind: FaultKind,
    params: &FaultParams,
    id: u64,
    lease_ms: Option<u64>,
) -> Result<Fired, FaultError> {
    let chain = |e: crate::testbed::TestbedError| FaultError::Testbed(crate::error::chain(&e));
    let role =
        || process_role(lab, host).ok_or_else(|| FaultError::NoServerProcess(host.to_string()));
    let action = match kind {
        FaultKind::PowerOff => {
            let at_ns = lab.testbed.power_off(host).await.map_err(chain)?;
            return Ok(Fired::Done {
                at_ns,
                detail: format!("{host} powered off: links down, then every process killed"),
                host: host.to_string(),
            });
        }
        FaultKind::PowerOn => {
            lab.testbed.power_on(host).await.map_err(chain)?;
            return Ok(Fired::Done {
                at_ns: halab_protocol::mono_ns(),
                detail: format!("{host} powered on"),
                host: host.to_string(),
            });
        }
        FaultKind::ProcessKill => FaultAction::ProcessKill { role: role()? },
        FaultKind::ProcessHang => FaultAction::ProcessHang { role: role()? },
        FaultKind::ProcessCrash => FaultAction::ProcessCrash { role: role()? },
        FaultKind::NicDown => FaultAction::NicDown {
            interface: params.interface.clone(),
        },
        FaultKind::Loss => FaultAction::Loss {
            percent: params.percent.unwrap_or(100.0),
            direction: match params.direction {
                Some(ExpDirection::In) => Direction::In,
                Some(ExpDirection::Out) => Direction::Out,
                _ => Direction::Both,
            },
        },
        FaultKind::Partition => FaultAction::Partition {
            peers: partition_peers(&lab.testbed.topology, params.peer.as_deref().unwrap_or("")),
        },
        FaultKind::Delay => FaultAction::Delay {
            delay_ms: params.delay_ms.unwrap_or(0),
            jitter_ms: 0,
            interface: None,
            direction: match params.direction {
                Some(ExpDirection::Out) => Direction::Out,
                Some(ExpDirection::Both) => Direction::Both,
                // The way in by default: see the experiment validation's reason.
                _ => Direction::In,
            },
        },
    };
    lab.send(
        host,
        ConsoleMsg::InjectFault {
            id,
            action,
            lease_ms,
        },
    )
    .await
    .map_err(chain)?;
    Ok(Fired::Agent {
        host: host.to_string(),
        id,
    })
}

/// Asks `host`'s agent to revert its fault `id` (its `FaultReverted` says when).
pub async fn revert(lab: &Lab<'_>, host: &str, id: u64) -> Result<(), FaultError> {
    lab.send(host, ConsoleMsg::RevertFault { id })
        .await
        .map_err(|e| FaultError::Testbed(crate::error::chain(&e)))
}

/// The host holding `role` now (after a takeover, the one that took over), else the first in
/// the topology that has it.
pub fn holder_of(lab: &Lab<'_>, role: Role) -> Option<String> {
    lab.testbed.host_with_role(role).or_else(|| {
        lab.testbed
            .topology
            .hosts_with(role)
            .next()
            .map(|h| h.name.clone())
    })
}

/// Addresses a partition cuts a host off from: every address of a host (named, or holding a
/// role), or a whole network's subnet.
pub fn partition_peers(topo: &Topology, peer: &str) -> Vec<String> {
    if let Some(n) = topo.network(peer) {
        return vec![n.subnet.to_string()];
    }
    let host = topo.host(peer).or_else(|| {
        peer.parse::<Role>()
            .ok()
            .and_then(|r| topo.hosts_with(r).next())
    });
    host.map(|h| h.addresses.values().map(|a| a.to_string()).collect())
        .unwrap_or_default()
}

/// The role whose process a process fault on `host` hits under the testbed's mode (the mode
/// says which roles run processes), among the roles the host has now.
pub fn process_role(lab: &Lab<'_>, host: &str) -> Option<Role> {
    let roles = lab.testbed.roles_of(host);
    crate::modes::of_config(lab.testbed.mode())
        .behaviour()
        .process_roles()
        .iter()
        .copied()
        .find(|r| roles.contains(r))
}
