//! Starting roles and waiting until they run. A role's answer carries the id of the request it
//! answers, which tells it apart from answers to earlier requests still in the inbox (a
//! power-on's, the last run's), which can say "already running" of a role this request
//! redeploys under another mode.

use super::handle::{Lab, WaitError};
use halab_protocol::{AgentMsg, Role, RoleState};
use std::time::Duration;
use tokio::time::Instant;

/// How long a server role may take to report that it listens.
pub const ROLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why roles did not all come up.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("{role} on {host} did not start: {detail}")]
    Failed {
        host: String,
        role: Role,
        detail: String,
    },
    #[error("roles not running after {timeout:?}: {waiting:?}")]
    TimedOut {
        timeout: Duration,
        waiting: Vec<(String, Role)>,
    },
    #[error("every agent is gone")]
    AgentsGone,
    #[error("{0}")]
    Testbed(String),
}

/// Asks each (host, role) of `starts` to start under the testbed's mode, then waits, at most
/// `timeout`, until those `wait_for` accepts report running. Other messages are set aside.
pub async fn start_and_wait(
    lab: &mut Lab<'_>,
    starts: &[(String, Role)],
    wait_for: impl Fn(Role) -> bool,
    timeout: Duration,
) -> Result<(), RolesError> {
    let mut waiting: Vec<(String, Role, u64)> = Vec::new();
    for (host, role) in starts {
        let mode = lab.testbed.mode().clone();
        let request = lab
            .testbed
            .start_role(host, *role, mode)
            .await
            .map_err(|e| RolesError::Testbed(crate::error::chain(&e)))?;
        if wait_for(*role) {
            waiting.push((host.clone(), *role, request));
        }
    }
    let deadline = Instant::now() + timeout;
    while !waiting.is_empty() {
        let (host, msg) = match lab.next_until(deadline).await {
            Ok(m) => m,
            Err(WaitError::TimedOut) => {
                return Err(RolesError::TimedOut {
                    timeout,
                    waiting: waiting.into_iter().map(|(h, r, _)| (h, r)).collect(),
                });
            }
            Err(WaitError::AgentsGone) => return Err(RolesError::AgentsGone),
        };
        if let AgentMsg::RoleState {
            role,
            state,
            detail,
            request: Some(request),
        } = &msg
            && let Some(i) = waiting
                .iter()
                .position(|(h, r, q)| *h == host && r == role && q == request)
        {
            if *state != RoleState::Running {
                return Err(RolesError::Failed {
                    host,
                    role: *role,
                    detail: detail.clone().unwrap_or_default(),
                });
            }
            waiting.swap_remove(i);
        }
        lab.set_aside(host, msg);
    }
    Ok(())
}

/// Every server-side role of the topology (all but the clients'), started under the testbed's
/// mode and running: what each run starts from.
pub async fn ensure_servers(lab: &mut Lab<'_>) -> Result<(), RolesError> {
    let starts: Vec<(String, Role)> = lab
        .testbed
        .topology
        .hosts
        .iter()
        .flat_map(|h| {
            h.roles
                .iter()
                .filter(|&&r| r != Role::Client)
                .map(|&r| (h.name.clone(), r))
        })
        .collect();
    start_and_wait(lab, &starts, |_| true, ROLE_TIMEOUT).await
}
