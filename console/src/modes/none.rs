//! Mode none, the baseline (DESIGN §5 none): no failover mechanism on the servers. The client
//! fails over by itself, as a traditional client does: its own idle timeout detects the
//! failure, and it reconnects to the next server of its list and re-issues its request.

use super::contract::{ClientPolicy, FailoverMode, RoleRule, RunKeys, ServerList};
use crate::topology::{RunSettings, Topology};
use halab_protocol::{ModeConfig, ModeEvent, Role};

/// The baseline.
pub struct NoFailover;

const ROLES: [RoleRule; 3] = [
    RoleRule::one(Role::Primary),
    RoleRule::at_least_one(Role::Backup),
    RoleRule::at_least_one(Role::Client),
];

impl FailoverMode for NoFailover {
    fn name(&self) -> &'static str {
        "none"
    }

    fn roles(&self) -> &'static [RoleRule] {
        &ROLES
    }

    fn run_keys(&self) -> RunKeys {
        RunKeys::default()
    }

    fn config(&self, _: &Topology, _: &RunSettings, _: &str) -> Result<ModeConfig, String> {
        Ok(ModeConfig::None)
    }

    fn client_policy(&self) -> ClientPolicy {
        ClientPolicy {
            servers: ServerList::ServiceAddressThenBackups,
            keep_last_server: true,
        }
    }

    fn describe(&self, event: &ModeEvent) -> String {
        // Mode none has no events of its own; another mode's, late, are shown as they are.
        format!("{event:?}")
    }

    fn is_baseline(&self) -> bool {
        true
    }

    fn plot_color(&self) -> (u8, u8, u8) {
        (90, 90, 90)
    }
}
