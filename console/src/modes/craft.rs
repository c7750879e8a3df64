//! Mode craft (DESIGN §5 craft; thesis chapters 4 and 5): a stateless load balancer, proxies
//! that splice client and backend connections, and a logger that lets a connection be
//! re-spliced to an alternate backend. The agents' side of part 1 exists (splice, balancer,
//! replication, in `agents/src/modes/craft/`) and the console derives its configuration here;
//! the roles are not started on a testbed yet, so runs under it are still refused.

use super::contract::{ClientPolicy, FailoverMode, RoleRule, RunKeys, ServerList};
use crate::topology::{Host, Network, Provider, RunSettings, Topology};
use halab_protocol::modes::craft::{CraftConfig, Endpoint, Gateway, ProxyEndpoints};
use halab_protocol::{HTTP_PORT, ModeConfig, ModeEvent, Role};

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
        Err(
            "mode `craft` cannot be run yet: the agents' splice, proxies and balancer exist, \
             but this version does not start them on a testbed"
                .into(),
        )
    }

    fn config(
        &self,
        topo: &Topology,
        settings: &RunSettings,
        key_hex: &str,
    ) -> Result<ModeConfig, String> {
        config(topo, settings, key_hex).map(|c| ModeConfig::Craft(Box::new(c)))
    }

    fn client_policy(&self) -> ClientPolicy {
        ClientPolicy {
            servers: ServerList::ServiceAddress,
            keep_last_server: false,
        }
    }

    fn describe(&self, event: &ModeEvent) -> String {
        use halab_protocol::modes::craft::Event;
        match event {
            ModeEvent::Craft(Event::PoolDown {
                proxy,
                silent_ms,
                live,
                ..
            }) => format!(
                "{proxy} left the pool after {silent_ms} ms without an answer; live: {}",
                live.join(", ")
            ),
            ModeEvent::Craft(Event::PoolUp { proxy, live, .. }) => {
                format!("{proxy} in the pool; live: {}", live.join(", "))
            }
            ModeEvent::Craft(Event::Error { message, .. }) => message.clone(),
            other => format!("{other:?}"),
        }
    }

    fn plot_color(&self) -> (u8, u8, u8) {
        (44, 160, 44)
    }
}

/// The balancer's health checks when the run names none (thesis table 4.4's fastest).
pub const DEFAULT_HEARTBEAT_MS: u64 = 200;
pub const DEFAULT_MISSED: u32 = 3;
/// The proxies' source ports towards the backends: proxy i has `[20000 + 4000·i, +4000)`.
pub const PORT_BASE: u16 = 20000;
pub const PORT_SPAN: u16 = 4000;

/// Craft's configuration from the topology: the balancer and the proxies on the service
/// address's network, the proxies' other network (shared by all of them) towards the
/// backends, the backends (serving first) on it or behind a gateway (a logger host on both
/// networks), and the proxies' shared source address: the highest free address of their
/// backends-side network.
pub fn config(
    topo: &Topology,
    settings: &RunSettings,
    key_hex: &str,
) -> Result<CraftConfig, String> {
    if topo.provider != Provider::Local {
        return Err(
            "mode craft runs on provider local only in this version (its data paths \
                    address hosts by the MAC addresses the local provider fixes)"
                .into(),
        );
    }
    let service = topo.service_network();
    let endpoint = |h: &Host, n: &Network| -> Result<Endpoint, String> {
        let addr = h
            .addresses
            .get(&n.name)
            .ok_or_else(|| format!("host {} has no address on network {}", h.name, n.name))?;
        let hi = topo
            .hosts
            .iter()
            .position(|x| x.name == h.name)
            .unwrap_or(0);
        let ni = topo
            .networks
            .iter()
            .position(|x| x.name == n.name)
            .unwrap_or(0);
        Ok(Endpoint {
            host: h.name.clone(),
            device: n.name.clone(),
            addr: addr.to_string(),
            mac: crate::provider::local::host_mac(hi, ni),
        })
    };
    let balancer = topo
        .hosts_with(Role::Lb)
        .next()
        .ok_or("craft needs a host with role lb")?;
    let proxies: Vec<&Host> = topo.hosts_with(Role::Proxy).collect();
    if proxies.is_empty() {
        return Err("craft needs at least one host with role proxy".into());
    }
    if proxies.len() > 16 {
        return Err(format!(
            "craft takes at most 16 proxies, not {}",
            proxies.len()
        ));
    }
    // The proxies' backends-side network: the one other than the service network they all
    // share.
    let shared: Vec<&Network> = topo
        .networks
        .iter()
        .filter(|n| n.name != service.name)
        .filter(|n| proxies.iter().all(|p| p.addresses.contains_key(&n.name)))
        .collect();
    let back = match shared.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "craft's proxies need a network besides `{}` that all of them are on (towards \
                 the backends)",
                service.name
            ));
        }
        more => {
            return Err(format!(
                "craft's proxies share {} networks besides `{}`; which one leads to the \
                 backends is ambiguous",
                more.len(),
                service.name
            ));
        }
    };
    let backend_hosts: Vec<&Host> = topo
        .hosts_with(Role::Primary)
        .chain(topo.hosts_with(Role::Backup))
        .collect();
    let first = backend_hosts
        .first()
        .ok_or("craft needs a backend (a host with role primary)")?;
    // The backends' network: the proxies' own, or one a gateway (a logger) joins it to.
    let (backends_net, gateway) = if first.addresses.contains_key(&back.name) {
        (back, None)
    } else {
        let net = topo
            .networks
            .iter()
            .find(|n| first.addresses.contains_key(&n.name) && n.name != service.name)
            .ok_or_else(|| format!("backend {} has no network towards the proxies", first.name))?;
        let gw = topo
            .hosts_with(Role::Logger)
            .find(|h| h.addresses.contains_key(&back.name) && h.addresses.contains_key(&net.name))
            .ok_or_else(|| {
                format!(
                    "backend {} is not on the proxies' network `{}`: craft needs a logger on \
                     both `{}` and `{}` as the gateway",
                    first.name, back.name, back.name, net.name
                )
            })?;
        let g = Gateway {
            proxies_side: endpoint(gw, back)?,
            backends_side: endpoint(gw, net)?,
        };
        (net, Some(g))
    };
    let backends = backend_hosts
        .iter()
        .map(|h| endpoint(h, backends_net))
        .collect::<Result<Vec<_>, _>>()?;
    let source = free_address(topo, back).ok_or_else(|| {
        format!(
            "network `{}` has no free address for the proxies' source",
            back.name
        )
    })?;
    Ok(CraftConfig {
        heartbeat_ms: settings.heartbeat_ms.unwrap_or(DEFAULT_HEARTBEAT_MS),
        missed_heartbeats: settings.missed_heartbeats.unwrap_or(DEFAULT_MISSED),
        service_addr: topo.service_address.to_string(),
        service_port: HTTP_PORT,
        source_addr: source.to_string(),
        port_base: PORT_BASE,
        port_span: PORT_SPAN,
        balancer: endpoint(balancer, service)?,
        proxies: proxies
            .iter()
            .map(|p| {
                Ok(ProxyEndpoints {
                    front: endpoint(p, service)?,
                    back: endpoint(p, back)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
        backends,
        gateway,
        key_hex: key_hex.to_string(),
    })
}

/// The highest address of `net` that no host uses (and not the service address).
fn free_address(topo: &Topology, net: &Network) -> Option<std::net::Ipv4Addr> {
    let used: Vec<std::net::Ipv4Addr> = topo
        .hosts
        .iter()
        .filter_map(|h| h.addresses.get(&net.name).copied())
        .chain(std::iter::once(topo.service_address))
        .collect();
    net.subnet.hosts().rev().find(|a| !used.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Topology {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/craft.toml");
        crate::topology::load(&path).expect("craft.toml validates")
    }

    #[test]
    fn the_shipped_topology_gives_balancer_proxies_gateway_and_backends() {
        let topo = shipped();
        let c = config(&topo, &topo.run, "00").expect("a craft config");
        assert_eq!(c.service_addr, "10.40.0.100");
        assert_eq!(c.service_port, HTTP_PORT);
        assert_eq!((c.heartbeat_ms, c.missed_heartbeats), (200, 3));
        assert_eq!(c.balancer.host, "lb");
        assert_eq!(c.balancer.device, "front");
        let names: Vec<(&str, &str, &str)> = c
            .proxies
            .iter()
            .map(|p| {
                (
                    p.front.host.as_str(),
                    p.front.addr.as_str(),
                    p.back.addr.as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("proxy1", "10.40.0.11", "10.40.1.11"),
                ("proxy2", "10.40.0.12", "10.40.1.12")
            ]
        );
        assert_eq!(c.proxies[0].back.device, "mid");
        // The highest free address of the proxies' backends-side network.
        assert_eq!(c.source_addr, "10.40.1.254");
        let g = c.gateway.as_ref().expect("the logger is the gateway");
        assert_eq!(
            (g.proxies_side.host.as_str(), g.proxies_side.addr.as_str()),
            ("logger", "10.40.1.2")
        );
        assert_eq!(g.backends_side.addr, "10.40.2.2");
        let backends: Vec<&str> = c.backends.iter().map(|b| b.host.as_str()).collect();
        assert_eq!(
            backends,
            ["backend1", "backend2"],
            "the serving backend first"
        );
        // MAC addresses are the local provider's fixed ones: proxy1 is host 2, mid network 1.
        assert_eq!(
            c.proxies[0].back.mac,
            crate::provider::local::host_mac(2, 1)
        );
    }
}
