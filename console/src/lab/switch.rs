//! Modes and roles as a whole: switching the testbed to another mode (the dashboard's `m`, an
//! experiment's run under another mode), and bringing the roles back to the topology's after
//! takeovers moved them.

use super::handle::Lab;
use super::roles::{ROLE_TIMEOUT, RolesError, start_and_wait};
use crate::modes;
use crate::state::HostState;
use crate::topology::RunSettings;
use halab_protocol::{ConsoleMsg, Role};

/// Why a switch did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The mode cannot run here; nothing was changed.
    #[error("{0}")]
    NotRunnable(String),
    /// The switch happened, but roles did not all come up.
    #[error(transparent)]
    Roles(#[from] RolesError),
}

/// Brings the testbed back to its mode's starting state after a run (through the mode's
/// `after_run`: st-tcp's backup gives the service address back before the primary announces
/// it).
pub async fn after_run(lab: &mut Lab<'_>) -> Result<(), String> {
    let mode = modes::of_config(lab.testbed.mode()).behaviour();
    mode.after_run(lab).await
}

/// Switches every host that is up to `settings.mode`: every role stopped (the ones it runs
/// now, which after a takeover are not the topology's, and the topology's), the service
/// address back on the host the new mode puts it on, then the topology's roles started under
/// the new mode; waits until the server roles run.
pub async fn switch_mode(lab: &mut Lab<'_>, settings: &RunSettings) -> Result<(), SwitchError> {
    let config = modes::config_for(&lab.testbed.topology, settings, lab.testbed.mode_key())
        .map_err(SwitchError::NotRunnable)?;
    lab.testbed.set_mode(config);
    lab.testbed
        .set_service_address_role(settings.mode.behaviour().service_address_role());
    let snap = lab.testbed.snapshot();
    let up = |name: &str| {
        snap.hosts
            .iter()
            .find(|r| r.name == name && r.state == HostState::Connected)
    };
    for h in lab.testbed.topology.hosts.clone() {
        let Some(record) = up(&h.name) else {
            continue;
        };
        let mut stop = record.roles.clone();
        stop.extend(h.roles.iter().filter(|r| !record.roles.contains(r)));
        for role in stop {
            // A host whose agent is gone meanwhile has nothing left to stop.
            let _ = lab.send(&h.name, ConsoleMsg::StopRole { role }).await;
        }
    }
    lab.testbed.reset_roles();
    if let Err(e) = lab.testbed.restore_service_address().await {
        tracing::warn!(error = %crate::error::chain(&e), "service address not moved back");
    }
    let starts: Vec<(String, Role)> = lab
        .testbed
        .topology
        .hosts
        .iter()
        .filter(|h| up(&h.name).is_some())
        .flat_map(|h| h.roles.iter().map(|&r| (h.name.clone(), r)))
        .collect();
    start_and_wait(
        lab,
        &starts,
        |r| matches!(r, Role::Primary | Role::Backup),
        ROLE_TIMEOUT,
    )
    .await?;
    Ok(())
}
