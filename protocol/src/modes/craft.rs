//! Mode craft (DESIGN §5 craft; thesis chapters 4–5): what the balancer, the proxies, the
//! gateway (the logger) and the backends of a craft run are told about each other. The
//! console derives it from the topology (`console/src/modes/craft.rs`).

use serde::{Deserialize, Serialize};

/// One host's link on one network, as craft's data paths address it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub host: String,
    /// The interface inside the host (named after the network).
    pub device: String,
    pub addr: String,
    /// Its MAC address (the balancer and the gateway rewrite frames to it).
    pub mac: String,
}

/// A proxy: its link on the clients' side and on the backends' side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyEndpoints {
    pub front: Endpoint,
    pub back: Endpoint,
}

/// The host between the proxies' network and the backends' (thesis chapter 5: the logger),
/// which also sprays the backends' packets to the proxies' shared source address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Its link on the proxies' side.
    pub proxies_side: Endpoint,
    /// Its link on the backends' side.
    pub backends_side: Endpoint,
}

/// What every host of a craft run is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CraftConfig {
    /// The balancer's health checks: every `heartbeat_ms`, out after `missed_heartbeats`.
    pub heartbeat_ms: u64,
    pub missed_heartbeats: u32,
    /// The service address clients connect to (on the balancer; unannounced on every proxy).
    pub service_addr: String,
    /// The service's port (HTTP: the proxies read the first request to route it).
    pub service_port: u16,
    /// The proxies' shared source address towards the backends (unannounced on every proxy;
    /// the gateway sprays the backends' packets to it over the live proxies).
    pub source_addr: String,
    /// Proxy i connects to the backends from ports `[port_base + i·port_span, + port_span)`.
    pub port_base: u16,
    pub port_span: u16,
    pub balancer: Endpoint,
    /// In a fixed order: a proxy's index here is its index in every data path's table.
    pub proxies: Vec<ProxyEndpoints>,
    /// The serving backend first (role primary), then its alternates (role backup).
    pub backends: Vec<Endpoint>,
    /// None when the backends share the proxies' network.
    pub gateway: Option<Gateway>,
    /// The testbed's HMAC key (hex): health checks and splice replication are sealed with it.
    pub key_hex: String,
}

/// The health checks' port on every proxy (UDP; the balancer, the gateway and the other proxies
/// probe it).
pub const HEALTH_PORT: u16 = 7172;
/// The splice listener's port on every proxy's backends-side address (TCP).
pub const SPLICE_PORT: u16 = 7171;

/// Agent → console events of this mode; times are the reporting host's CLOCK_MONOTONIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// T_detect: a sprayer (the balancer, or the gateway's return path) dropped `proxy` from
    /// its pool after `silent_ms` without an answer; its table took the change at
    /// `applied_ns`.
    PoolDown {
        proxy: String,
        silent_ms: u64,
        live: Vec<String>,
        at_ns: u64,
        applied_ns: u64,
    },
    /// `proxy` answered and is in a sprayer's pool (again).
    PoolUp {
        proxy: String,
        live: Vec<String>,
        at_ns: u64,
        applied_ns: u64,
    },
    /// Something the mode could not do.
    Error { message: String, at_ns: u64 },
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> super::EventKind {
        match self {
            Event::PoolDown { .. } => super::EventKind::Detect,
            Event::PoolUp { .. } => super::EventKind::Rejoin,
            Event::Error { .. } => super::EventKind::Error,
        }
    }

    /// The host time the event names.
    pub fn at_ns(&self) -> u64 {
        match self {
            Event::PoolDown { at_ns, .. }
            | Event::PoolUp { at_ns, .. }
            | Event::Error { at_ns, .. } => *at_ns,
        }
    }
}
