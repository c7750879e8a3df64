//! The validated topology: what a topology file describes once it has been parsed and checked.
//! Everything downstream (providers, the orchestrator, experiments) works on these types and
//! may rely on the invariants documented on each field; the checks live in `validate.rs`.

use halab_protocol::Role;
pub use halab_protocol::Workload;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A validated topology file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    /// The file it was read from.
    pub source: PathBuf,
    /// Testbed name: 1–20 characters of `[a-z0-9-]`, starting with a letter. Names the
    /// namespaces and the state file, so two testbeds with different names never collide.
    pub name: String,
    pub provider: Provider,
    /// The service address (VIP) clients connect to. Inside the subnet of exactly one network
    /// (see [`Topology::service_network`]), distinct from every host address, and that network
    /// is one the `primary` host has an address on.
    pub service_address: Ipv4Addr,
    /// The default run: mode, its parameters and the workload.
    pub run: RunSettings,
    /// The role whose host holds the service address when the testbed comes up: the one the
    /// default run's mode puts it on.
    pub service_address_role: Role,
    /// At least one; names unique, subnets unique and non-overlapping.
    pub networks: Vec<Network>,
    /// At least one; names unique; every address unique across the testbed.
    pub hosts: Vec<Host>,
    /// known_hosts file for provider `ssh` (absolute; `~` expanded and relative paths resolved
    /// against the topology file's folder). `None` means `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
}

impl Topology {
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The network whose subnet holds the service address.
    pub fn service_network(&self) -> &Network {
        // Validation guarantees exactly one network contains the service address; fall back to
        // the first network (never empty after validation) rather than panic.
        self.networks
            .iter()
            .find(|n| n.subnet.contains(&self.service_address))
            .unwrap_or(&self.networks[0])
    }

    /// Hosts holding `role`, in file order.
    pub fn hosts_with(&self, role: Role) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.roles.contains(&role))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// Network namespaces on this machine.
    Local,
    /// VMs or bare metal reached over SSH.
    Ssh,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Local => "local",
            Provider::Ssh => "ssh",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// 1–12 characters of `[a-z0-9-]`, starting with a letter: it becomes the interface name
    /// inside every host attached to it (Linux allows 15) and `br-<name>` on the switch.
    pub name: String,
    /// An IPv4 subnet with prefix length 8–30, given in canonical form (no host bits set).
    pub subnet: Ipv4Net,
    /// Hub mode: the bridge floods every frame to every port (ageing_time 0), so a backup sees
    /// the primary's traffic, as the hub in the ST-TCP testbed (DESIGN §4).
    pub hub: bool,
    /// What every host's link to this network does to its traffic, unless the host's own
    /// `links` says otherwise.
    pub shape: LinkShape,
}

/// What a host's link to a network does to the packets crossing it, in each direction
/// (Mininet's `TCLink` meaning: two hosts whose links both have 10 ms see a 40 ms RTT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct LinkShape {
    /// Cap on each direction, bits per second.
    pub rate_bps: Option<u64>,
    /// Added to every packet crossing the link, in each direction, microseconds.
    pub delay_us: Option<u64>,
    /// Spread of that delay (at most the delay), microseconds.
    pub jitter_us: Option<u64>,
    /// Packets dropped at random in each direction, millionths (`"0.5%"` is 5000): exact,
    /// unlike a float percentage.
    pub loss_ppm: Option<u32>,
}

impl LinkShape {
    /// Whether the link is left as it is (a memory-speed LAN).
    pub fn is_plain(&self) -> bool {
        *self == LinkShape::default()
    }

    /// Whether packets crossing the link wait (a delay or a jitter above zero).
    pub fn delays(&self) -> bool {
        self.delay_us.is_some_and(|d| d > 0) || self.jitter_us.is_some_and(|j| j > 0)
    }

    /// `over`'s settings where it has them, this one's elsewhere.
    pub fn overlaid(self, over: LinkShape) -> LinkShape {
        LinkShape {
            rate_bps: over.rate_bps.or(self.rate_bps),
            delay_us: over.delay_us.or(self.delay_us),
            jitter_us: over.jitter_us.or(self.jitter_us),
            loss_ppm: over.loss_ppm.or(self.loss_ppm),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// 1–15 characters of `[a-z0-9-]`, starting with a letter.
    pub name: String,
    /// At least one, no duplicates, each usable by the topology's mode.
    pub roles: Vec<Role>,
    /// Network name → address. Every key names a network of the topology; every address lies
    /// inside that network's subnet and is neither its network nor its broadcast address.
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// Network name → what the host's link to it does, for the links that are not plain: the
    /// network's settings with the host's `links` over them.
    pub links: BTreeMap<String, LinkShape>,
    /// Present exactly when the provider is `ssh`.
    pub ssh: Option<SshHost>,
}

/// How to reach a host over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshHost {
    /// Address or DNS name to connect to (`ssh_address`; default: the host's address on the
    /// first network it lists, in file order of the networks).
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key file (absolute path; `~` expanded, relative resolved as for known_hosts).
    pub key: PathBuf,
    /// Command run on the console machine to power the host off, with `{name}` replaced by
    /// the host name, e.g. `virsh destroy {name}`.
    pub power_command: Option<String>,
    /// Command run on the console machine to power the host on again, with `{name}`
    /// replaced, e.g. `virsh start {name}`; the console then waits for the host's SSH to
    /// come back and starts a new agent.
    pub power_on_command: Option<String>,
}

/// Mode, mode parameters and workload of a run. The same table is the `[run]` of a topology
/// (the default run of `halab up`) and of an experiment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSettings {
    pub mode: Mode,
    /// Heartbeat interval, milliseconds (modes app-migration, st-tcp, craft). 1..=60000.
    pub heartbeat_ms: Option<u64>,
    /// Missed heartbeats before a peer is declared dead. 1..=100.
    pub missed_heartbeats: Option<u32>,
    /// app-migration only.
    pub trigger: Option<Trigger>,
    pub workload: Workload,
    /// Bytes to transfer (bulk, download, http). Accepts an integer or a string with a
    /// decimal unit, e.g. `"100MB"` = 100_000_000, `"64KiB"` = 65_536.
    pub size: Option<u64>,
    /// Concurrent client connections. 1..=1000.
    pub clients: Option<u32>,
}

/// A failover mode, as files name it. Only the identity lives here: what each mode is and
/// does (its name, roles, config, events) is in its module under `crate::modes`, listed once
/// in that module's registry, which also implements `Display`, `Serialize` and the lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    None,
    AppMigration,
    StTcp,
    Craft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Server,
    Client,
}
