//! Mode craft (DESIGN §5 craft; thesis chapters 4 and 5): a stateless load balancer, proxies
//! that splice client and backend connections, and a logger that lets a connection be
//! re-spliced to an alternate backend. Not implemented in this version: its roles and rules
//! are known (so topologies written for it validate), and runs under it are refused.

use super::contract::{ClientPolicy, FailoverMode, RoleRule, RunKeys, ServerList};
use crate::topology::{RunSettings, Topology};
use halab_protocol::{ModeConfig, ModeEvent, Role};

/// The splicing proxies' mode.
pub struct Craft;

const ROLES: [RoleRule; 6] = [
    RoleRule::one(Role::Primary),
    RoleRule::optional(Role::Backup),
    RoleRule::optional(Role::Logger),
    RoleRule::at_least_one(Role::Lb),
    RoleRule::at_least_one(Role::Proxy),
    RoleRule::at_least_one(Role::Client),
];

impl FailoverMode for Craft {
    fn name(&self) -> &'static str {
        "craft"
    }

    fn roles(&self) -> &'static [RoleRule] {
        &ROLES
    }

    /// The service address sits on the balancer's side (DESIGN §5 craft).
    fn service_address_role(&self) -> Role {
        Role::Lb
    }

    /// The balancer hands each client packet to a proxy by rewriting its destination MAC
    /// address, so the proxies share its network (the service address's).
    fn service_network_roles(&self) -> &'static [Role] {
        &[Role::Lb, Role::Proxy]
    }

    fn run_keys(&self) -> RunKeys {
        RunKeys {
            heartbeat: true,
            trigger: false,
        }
    }

    fn runnable(&self) -> Result<(), String> {
        Err("mode `craft` cannot be run yet: it is not implemented".into())
    }

    fn config(&self, _: &Topology, _: &RunSettings, _: &str) -> Result<ModeConfig, String> {
        Err("mode `craft` is not implemented in this version".into())
    }

    fn client_policy(&self) -> ClientPolicy {
        ClientPolicy {
            servers: ServerList::ServiceAddress,
            keep_last_server: false,
        }
    }

    fn describe(&self, event: &ModeEvent) -> String {
        format!("{event:?}")
    }

    fn plot_color(&self) -> (u8, u8, u8) {
        (44, 160, 44)
    }
}
