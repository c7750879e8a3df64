//! The failover modes' registry (DESIGN §5). Each mode is one module implementing
//! [`FailoverMode`]; this file lists them once. Everything else asks a [`Mode`] for its
//! behaviour through [`Mode::behaviour`] and never matches on mode names.
//!
//! Adding a mode: its module here, a variant in [`Mode`] (`topology/model.rs`, the name files
//! use) and one line in [`REGISTRY`]; on the agent side one module and one line of its
//! (mode, role) table; in the protocol its `ModeConfig`/`ModeEvent` variants.

pub mod app_migration;
pub mod contract;
pub mod craft;
pub mod none;
pub mod st_tcp;

pub use contract::{
    ClientPolicy, FailoverMode, MeasuredBy, ModeFuture, RoleCount, RoleRule, RunKeys, ServerList,
};

use crate::topology::Mode;
use halab_protocol::Role;

/// Every mode, in the order the dashboard's `m` cycles through them.
pub const REGISTRY: [(Mode, &dyn FailoverMode); 4] = [
    (Mode::None, &none::NoFailover),
    (Mode::AppMigration, &app_migration::AppMigration),
    (Mode::StTcp, &st_tcp::StTcp),
    (Mode::Craft, &craft::Craft),
];

impl Mode {
    /// Every mode, in registry order.
    pub fn all() -> impl Iterator<Item = Mode> {
        REGISTRY.iter().map(|(m, _)| *m)
    }

    /// The mode's console side.
    pub fn behaviour(self) -> &'static dyn FailoverMode {
        REGISTRY
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, b)| *b)
            // Every variant is listed once in REGISTRY (the test below checks it).
            .unwrap_or(&none::NoFailover)
    }

    /// The name files and records use.
    pub fn as_str(self) -> &'static str {
        self.behaviour().name()
    }

    /// The mode named `name` as files spell it.
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::all().find(|m| m.as_str() == name)
    }

    /// The roles a host may hold under this mode.
    pub fn usable_roles(self) -> Vec<Role> {
        self.behaviour().roles().iter().map(|r| r.role).collect()
    }

    /// The next mode of the dashboard's `m` cycle.
    pub fn next(self) -> Mode {
        let i = REGISTRY.iter().position(|(m, _)| *m == self).unwrap_or(0);
        REGISTRY[(i + 1) % REGISTRY.len()].0
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What the roles and clients of a run under `settings` on `topo` are started with, if this
/// version runs its mode there; `key_hex` is the testbed's key.
pub fn config_for(
    topo: &crate::topology::Topology,
    settings: &crate::topology::RunSettings,
    key_hex: &str,
) -> Result<halab_protocol::ModeConfig, String> {
    let mode = settings.mode.behaviour();
    mode.runnable()?;
    mode.config(topo, settings, key_hex)
}

/// The mode whose events these are: the registry entry a `ModeConfig` was made by.
pub fn of_config(config: &halab_protocol::ModeConfig) -> Mode {
    Mode::from_name(config.name()).unwrap_or(Mode::None)
}

/// The mode that sent `event`.
pub fn of_event(event: &halab_protocol::ModeEvent) -> Mode {
    Mode::from_name(event.mode_name()).unwrap_or(Mode::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_is_registered_once_under_its_own_name() {
        let names: Vec<&str> = Mode::all().map(Mode::as_str).collect();
        // The modes of the design, first and in this order (the `m` cycle); a new one follows.
        assert_eq!(names[..4], ["none", "app-migration", "st-tcp", "craft"]);
        for m in Mode::all() {
            assert_eq!(Mode::from_name(m.as_str()), Some(m));
            assert_eq!(REGISTRY.iter().filter(|(r, _)| *r == m).count(), 1);
        }
    }

    fn topology(mode: &str, lb_net: &str) -> Result<crate::topology::Topology, String> {
        let text = format!(
            r#"
name = "reg"
service_address = "10.9.0.100"
[run]
mode = "{mode}"
[[networks]]
name = "svc"
subnet = "10.9.0.0/24"
[[networks]]
name = "back"
subnet = "10.9.1.0/24"
[[hosts]]
name = "lb"
roles = ["lb", "proxy"]
addresses = {{ {lb_net} = "10.9.{}.2" }}
[[hosts]]
name = "srv"
roles = ["primary"]
addresses = {{ back = "10.9.1.3" }}
[[hosts]]
name = "cl"
roles = ["client"]
addresses = {{ svc = "10.9.0.4" }}
"#,
            if lb_net == "svc" { 0 } else { 1 }
        );
        crate::topology::parse_str(&text, std::path::Path::new("reg.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn validation_asks_the_mode_where_the_service_address_goes() {
        // craft: on the balancer, so a primary off the service network is fine.
        let t = topology("craft", "svc").unwrap();
        assert_eq!(t.service_address_role, Role::Lb);
        let e = topology("craft", "back").unwrap_err();
        assert!(
            e.contains("the lb `lb` has no address on network `svc`"),
            "{e}"
        );
        // The same hosts under st-tcp: its rules, which have no balancer.
        let e = topology("st-tcp", "svc").unwrap_err();
        assert!(
            e.contains("role `lb` cannot be used with mode `st-tcp`"),
            "{e}"
        );
    }

    #[test]
    fn the_m_cycle_visits_every_mode() {
        let mut m = Mode::None;
        let mut seen = vec![];
        for _ in 0..REGISTRY.len() {
            seen.push(m);
            m = m.next();
        }
        assert_eq!(m, Mode::None);
        assert_eq!(seen.len(), Mode::all().count());
    }
}
