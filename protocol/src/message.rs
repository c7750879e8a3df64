//! The messages of the control protocol. Every payload is one of these, as JSON with a `type`
//! tag. Unknown tags and unknown fields are errors: a peer that sends something this side does
//! not understand is a different protocol version, however it labelled itself.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a host does in a testbed (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Backup,
    Logger,
    Lb,
    Proxy,
    Client,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Primary,
        Role::Backup,
        Role::Logger,
        Role::Lb,
        Role::Proxy,
        Role::Client,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Logger => "logger",
            Role::Lb => "lb",
            Role::Proxy => "proxy",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`"))
    }
}

/// One probed capability of a host: whether it is there, and a short reason either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub ok: bool,
    pub detail: String,
}

impl Probe {
    pub fn yes(detail: impl Into<String>) -> Self {
        Probe {
            ok: true,
            detail: detail.into(),
        }
    }
    pub fn no(detail: impl Into<String>) -> Self {
        Probe {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// What a host can do, as probed by its agent (DESIGN §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Running as root with CAP_NET_ADMIN.
    pub root: Probe,
    /// Network namespaces can be created.
    pub namespaces: Probe,
    /// AF_PACKET raw sockets (the st-tcp tap).
    pub af_packet: Probe,
    /// TCP_REPAIR (st-tcp and craft takeover).
    pub tcp_repair: Probe,
    /// nftables (loss and partition faults, the craft balancer).
    pub nftables: Probe,
    /// The netem qdisc (delay faults).
    pub netem: Probe,
}

impl Capabilities {
    /// Name and probe of each capability, in table order.
    pub fn entries(&self) -> [(&'static str, &Probe); 6] {
        [
            ("root", &self.root),
            ("namespaces", &self.namespaces),
            ("af_packet", &self.af_packet),
            ("tcp_repair", &self.tcp_repair),
            ("nftables", &self.nftables),
            ("netem", &self.netem),
        ]
    }
}

/// Messages from the console to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ConsoleMsg {
    /// First message on a channel. The agent answers with [`AgentMsg::Hello`].
    Hello {
        console_version: String,
        testbed: String,
        host: String,
        /// Ask the agent to probe its capabilities and include them in its hello.
        probe: bool,
    },
    /// Clock probe: the agent answers with its monotonic clock reading.
    ClockProbe {
        id: u64,
    },
    Ping {
        id: u64,
    },
    StartRole {
        role: Role,
    },
    StopRole {
        role: Role,
    },
    /// Stop roles, revert everything held, answer [`AgentMsg::Bye`] and exit.
    Shutdown,
}

/// State of a role on an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleState {
    Running,
    Stopped,
    Failed,
}

/// Severity of a log line an agent forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Messages from an agent to the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AgentMsg {
    Hello {
        agent_version: String,
        host: String,
        pid: u32,
        /// `uname -r` of the host.
        kernel: String,
        /// Present when the console's hello asked for a probe (boxed: it is most of the size
        /// of this message, and every other message would pay for it).
        capabilities: Option<Box<Capabilities>>,
    },
    /// Answer to a clock probe: the agent's CLOCK_MONOTONIC in nanoseconds when it answered.
    ClockReply {
        id: u64,
        agent_mono_ns: u64,
    },
    Pong {
        id: u64,
    },
    RoleState {
        role: Role,
        state: RoleState,
        detail: Option<String>,
    },
    Log {
        level: LogLevel,
        target: String,
        message: String,
    },
    /// A fatal error: the agent closes the channel after sending it.
    Error {
        message: String,
    },
    /// The agent is exiting cleanly.
    Bye {
        reason: String,
    },
}
