//! What every failover mode provides to the console: [`FailoverMode`]. A mode is one module
//! implementing it, listed once in the registry ([`crate::modes`]); validation, the provider,
//! the lab layer, the runner, the dashboard and the reports ask it instead of matching on
//! mode names. This module depends on nothing above it (the registry and the modes depend on
//! it), so that no module cycle runs through a mode.

use crate::lab::handle::Lab;
use crate::topology::{RunSettings, Topology};
use halab_protocol::{EventKind, ModeConfig, ModeEvent, Role};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// A boxed future borrowing for `'a`: the trait's async steps, kept object safe.
pub type ModeFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many hosts of a role a mode takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleCount {
    /// Exactly one host.
    One,
    /// One host or more.
    AtLeastOne,
    /// Any number, none included.
    Optional,
}

/// One role a mode uses, and how many hosts may hold it. Roles a mode does not list are not
/// used by it (hosts holding them idle, and validation says so where that is a mistake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRule {
    pub role: Role,
    pub count: RoleCount,
}

impl RoleRule {
    pub const fn one(role: Role) -> RoleRule {
        RoleRule {
            role,
            count: RoleCount::One,
        }
    }
    pub const fn at_least_one(role: Role) -> RoleRule {
        RoleRule {
            role,
            count: RoleCount::AtLeastOne,
        }
    }
    pub const fn optional(role: Role) -> RoleRule {
        RoleRule {
            role,
            count: RoleCount::Optional,
        }
    }
}

/// Which `[run]` keys beyond mode and workload a mode reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunKeys {
    /// `heartbeat_ms` and `missed_heartbeats`.
    pub heartbeat: bool,
    /// `trigger`.
    pub trigger: bool,
}

/// Where a run's detection, takeover and failover figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasuredBy {
    /// The client's own view: it detects, reconnects and resumes (none, app-migration).
    Client,
    /// The mode's events: the client sees no failover at all, so T_detect is the first
    /// `detect` event, T_takeover the last `takeover`, and T_resume the first bytes after it
    /// (st-tcp).
    ModeEvents,
}

/// Which servers the client is given, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerList {
    /// The service address only: the mode keeps it reachable.
    ServiceAddress,
    /// The service address, then each backup's own address on the service network: the
    /// server list of a traditional client that fails over by itself.
    ServiceAddressThenBackups,
}

/// The console's side of a mode's client behaviour (the agent's side is the protocol's
/// `ModeConfig`, which the client gets with its spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPolicy {
    pub servers: ServerList,
    /// The dashboard's next run starts with the server the client last got its bytes from, as
    /// a traditional client keeps to the server that answered.
    pub keep_last_server: bool,
}

/// `heartbeat_ms` and `missed_heartbeats` of `settings`, where given: the record's parameters
/// of a mode with a heartbeat.
pub fn heartbeat_params(settings: &RunSettings) -> BTreeMap<String, serde_json::Value> {
    let mut m = BTreeMap::new();
    if let Some(v) = settings.heartbeat_ms {
        m.insert("heartbeat_ms".into(), v.into());
    }
    if let Some(v) = settings.missed_heartbeats {
        m.insert("missed_heartbeats".into(), v.into());
    }
    m
}

/// One failover mechanism, console side (DESIGN §5).
pub trait FailoverMode: Sync {
    /// The name topology and experiment files, records and the dashboard use.
    fn name(&self) -> &'static str;

    /// The roles it uses, with how many hosts each; a listed role with
    /// [`RoleCount::One`] or [`RoleCount::AtLeastOne`] is required.
    fn roles(&self) -> &'static [RoleRule];

    /// The role whose host holds the service address when the mode starts.
    fn service_address_role(&self) -> Role {
        Role::Primary
    }

    /// Roles whose hosts must have an address on the service address's network besides the
    /// holder's: where the mode moves packets between them by MAC address (craft's balancer
    /// and proxies).
    fn service_network_roles(&self) -> &'static [Role] {
        &[]
    }

    /// The roles whose process a process fault hits, in the order a host holding several is
    /// tried: the roles that run the service's processes under this mode.
    fn process_roles(&self) -> &'static [Role] {
        &[Role::Primary, Role::Backup]
    }

    /// The `[run]` keys it reads.
    fn run_keys(&self) -> RunKeys;

    /// Whether this version can run it; the error says why not.
    fn runnable(&self) -> Result<(), String> {
        Ok(())
    }

    /// What its roles and clients are started with, for `settings` on `topo`; `key_hex` is the
    /// testbed's key for modes that authenticate their messages. An error says why the mode
    /// cannot run there.
    fn config(
        &self,
        topo: &Topology,
        settings: &RunSettings,
        key_hex: &str,
    ) -> Result<ModeConfig, String>;

    /// The console's side of its client behaviour.
    fn client_policy(&self) -> ClientPolicy;

    /// The record's and the dashboard's parameters of a run under `settings`, beyond the mode's
    /// name (`heartbeat_ms`, ...): the report groups runs by them.
    fn record_params(&self, settings: &RunSettings) -> BTreeMap<String, serde_json::Value> {
        if self.run_keys().heartbeat {
            heartbeat_params(settings)
        } else {
            BTreeMap::new()
        }
    }

    /// What one of its events says, for the record and the log (its kind is
    /// [`ModeEvent::kind`]).
    fn describe(&self, event: &ModeEvent) -> String;

    /// Acts on one of its events from `host` during a run or on the dashboard (a fence, a
    /// role that moved). An error is recorded with the event.
    fn on_event<'a, 't: 'a>(
        &'a self,
        lab: &'a mut Lab<'t>,
        host: &'a str,
        event: &'a ModeEvent,
    ) -> ModeFuture<'a, Result<(), String>> {
        let _ = (lab, host, event);
        Box::pin(async { Ok(()) })
    }

    /// Whether a run's accepted events, (host, kind) in order, leave nothing the mode started
    /// still to report (st-tcp: a fence without the end of its takeover).
    fn settled(&self, events: &[(&str, EventKind)]) -> bool {
        let _ = events;
        true
    }

    /// Brings the testbed back to the mode's starting state after a run (roles and service
    /// address as the topology has them). Faults are reverted already; hosts may still be
    /// powered off: the mode powers on those whose order matters to it, the caller the rest.
    fn after_run<'a, 't: 'a>(&'a self, lab: &'a mut Lab<'t>) -> ModeFuture<'a, Result<(), String>> {
        let _ = lab;
        Box::pin(async { Ok(()) })
    }

    /// Where its failover figures come from.
    fn measured_by(&self) -> MeasuredBy {
        MeasuredBy::Client
    }

    /// The failover table's three time columns on the dashboard (after T_fault).
    fn failover_columns(&self) -> [&'static str; 3] {
        ["detect", "takeover", "failover"]
    }

    /// Whether runs under it are the baseline other modes are compared with in reports.
    fn is_baseline(&self) -> bool {
        false
    }

    /// Its colour in plots (RGB).
    fn plot_color(&self) -> (u8, u8, u8);
}
