//! Mode st-tcp: a tapping backup takes over live TCP connections (DESIGN §5; thesis chapter 3,
//! paper 003). The console's part is to tell primary, backup and logger about each other, and
//! to fence the primary when the backup asks.

use super::event_kind::EventKind;
use crate::Role;
use serde::{Deserialize, Serialize};

/// UDP port heartbeats travel on (primary → backup and backup → primary, both links).
pub const HEARTBEAT_PORT: u16 = 7400;
/// UDP port of the logger's segment ring (requests from the backup, answers to it).
pub const LOGGER_PORT: u16 = 7401;
/// Ports of the backup's replica server on its loopback (workload, http).
pub const REPLICA_PORTS: (u16, u16) = (17070, 18080);

/// A host of the st-tcp group and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StTcpPeer {
    pub host: String,
    /// Its address on the service network.
    pub service_addr: String,
    /// Its address on the dedicated heartbeat network, if it has one.
    pub heartbeat_addr: Option<String>,
}

/// What primary, backup and logger of an st-tcp run are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StTcpConfig {
    pub heartbeat_ms: u64,
    pub missed_heartbeats: u32,
    /// The service address (VIP) clients connect to, owned by the primary until takeover.
    pub vip: String,
    /// Prefix length of the service network (for adding the VIP on takeover).
    pub vip_prefix: u8,
    /// Interface name of the service network inside each host.
    pub service_iface: String,
    /// Interface name of the heartbeat network, if there is one.
    pub heartbeat_iface: Option<String>,
    pub primary: StTcpPeer,
    pub backup: StTcpPeer,
    pub logger: Option<StTcpPeer>,
    /// The service's TCP ports (workload protocol, http): the connections the backup tracks.
    pub service_ports: Vec<u16>,
    /// Thesis §3.7.3 AppMaxLagBytes: how far the primary's application may fall behind the
    /// replica (bytes) ...
    pub app_max_lag_bytes: u64,
    /// ... for how long (AppMaxLagTime, ms) before it counts as hung.
    pub app_max_lag_ms: u64,
    /// Thesis §3.7.4 MaxDelayFIN: how long the primary holds back a FIN or RST of its
    /// application while the backup has not confirmed that its replica closed too.
    pub max_delay_fin_ms: u64,
    /// The testbed's HMAC key (hex): heartbeats, the logger's requests and answers, and fence
    /// requests are sealed with it (a forged or replayed one is refused and counted).
    pub key_hex: String,
    /// Test knob: the backup's capture drops every n-th client data segment it sees (0: none),
    /// as a tap omission the logger must make good (thesis §3.4).
    #[serde(default)]
    pub tap_drop_every: u32,
}

impl StTcpConfig {
    /// The same pair after a takeover: the backup serves, and waits for the old primary to
    /// rejoin as its backup.
    pub fn promoted(&self) -> StTcpConfig {
        let mut c = self.clone();
        std::mem::swap(&mut c.primary, &mut c.backup);
        c
    }
}

/// What the primary reports of one connection in each heartbeat (thesis §3.6.1), read with
/// sock_diag from the kernel: offsets from the start of each direction's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnProgress {
    /// Client address and port, service port.
    pub client: [u8; 4],
    pub client_port: u16,
    pub port: u16,
    /// Client bytes the primary's kernel has received (tcpi_bytes_received).
    pub last_byte_received: u64,
    /// Server bytes the client has acknowledged (tcpi_bytes_acked).
    pub last_ack_received: u64,
    /// Server bytes the application has written (acked + send queue).
    pub last_app_byte_written: u64,
    /// Client bytes the application has read (received − receive queue).
    pub last_app_byte_read: u64,
}

/// The links a heartbeat travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Link {
    /// The service network (the hub the backup taps).
    Service = 0,
    /// The dedicated heartbeat network, if the pair shares one.
    Heartbeat = 1,
}

impl Link {
    pub fn name(self) -> &'static str {
        match self {
            Link::Service => "service",
            Link::Heartbeat => "heartbeat",
        }
    }
}

/// A heartbeat (UDP, JSON sealed with the testbed's key): from the primary with its
/// connections' progress, from the backup with the closes it confirms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub from: String,
    /// The sender's role start (wall clock ns): a larger one is a restarted sender, whose
    /// sequence numbers start again. (incarnation, seq) only grows: a beat that does not move
    /// it on is a replay.
    pub incarnation: u64,
    pub seq: u64,
    /// Which link it was sent on.
    pub link: Link,
    pub conns: Vec<ConnProgress>,
    /// Connections whose FIN/RST the primary holds back (client address, client port, port).
    #[serde(default)]
    pub held_fins: Vec<([u8; 4], u16, u16)>,
    /// From the backup: connections whose replica closed its output, and after how many
    /// bytes: the primary lets a FIN go only where its application closed at the same point
    /// (thesis §3.7.4).
    #[serde(default)]
    pub fin_ok: Vec<([u8; 4], u16, u16, u64)>,
    /// From the backup: the connections it tracks (it saw their SYN), so that a primary can
    /// name those it serves that this backup cannot take over.
    #[serde(default)]
    pub tracking: Vec<([u8; 4], u16, u16)>,
}

/// Console → agent requests of this mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    /// The console fenced `host` (the primary) as the backup asked; `error` when it could not.
    Fenced { host: String, error: Option<String> },
    /// End of a run: the backup gives the service address back, drops the connections it took
    /// over and taps afresh; the primary announces the service address again.
    Reset,
}

/// A connection to the service, as events name it: the client's address and port and the
/// service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnKey {
    pub client: std::net::Ipv4Addr,
    pub client_port: u16,
    pub port: u16,
}

impl std::fmt::Display for ConnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}->:{}", self.client, self.client_port, self.port)
    }
}

/// What became of a FIN or RST the primary's application sent and the primary held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinOutcome {
    /// The backup never confirmed its replica closed too: the backup took the connection over
    /// instead.
    NotConfirmedTakeover,
}

impl std::fmt::Display for FinOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FinOutcome::NotConfirmedTakeover => "not confirmed: takeover",
        })
    }
}

/// Agent → console events of this mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// The backup declared the primary failed (T_detect).
    Detect {
        at_ns: u64,
        reason: DetectReason,
        detail: String,
    },
    /// The backup asks the console to fence `host` before it takes over. `tag` is
    /// [`fence_tag`] under the testbed's key: a request without a valid one is refused.
    FenceRequest {
        at_ns: u64,
        host: String,
        why: String,
        tag: String,
    },
    /// What this host is in the st-tcp pair, as it says itself: at each role start and reset,
    /// and when a backup has taken over (it is the primary from then on). `service_address`:
    /// whether it holds the service address now.
    Serving {
        at_ns: u64,
        role: Role,
        service_address: bool,
    },
    /// The primary hears a backup (again) and is fault tolerant. `unprotected`: connections
    /// open now that this backup did not see from their SYN (it cannot take them over).
    FaultTolerant {
        at_ns: u64,
        backup: String,
        unprotected: Vec<ConnKey>,
    },
    /// Datagrams of this mode refused since the last such event: with a bad tag (forged, or
    /// another testbed's key) or replayed (an (incarnation, seq) already seen).
    Refused {
        at_ns: u64,
        channel: Channel,
        forged: u64,
        replayed: u64,
    },
    /// One connection taken over (T_takeover for it).
    Takeover {
        at_ns: u64,
        connection: ConnKey,
        /// Replica bytes sent at once (not yet acknowledged by the client).
        resent: u64,
        error: Option<String>,
    },
    /// Every connection has been taken over: how many, and how many failed.
    TakeoverDone {
        at_ns: u64,
        connections: u32,
        failed: u32,
    },
    /// The primary lost its backup and runs without fault tolerance (thesis table 3.3).
    NonFaultTolerant { at_ns: u64, reason: String },
    /// The backup's capture missed client bytes and fetched them from the logger.
    LoggerRecovered {
        at_ns: u64,
        connection: ConnKey,
        bytes: u64,
    },
    /// The primary held back a FIN/RST of its application, and what became of it.
    FinHeld {
        at_ns: u64,
        connection: ConnKey,
        outcome: FinOutcome,
    },
    /// Something the mode could not do.
    Error { at_ns: u64, message: String },
}

impl Event {
    /// The event's kind, as the record names it.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Detect { .. } => EventKind::Detect,
            Event::FenceRequest { .. } => EventKind::Fence,
            Event::Serving { .. } => EventKind::Serving,
            Event::FaultTolerant { .. } => EventKind::FaultTolerant,
            Event::Refused { .. } => EventKind::Refused,
            Event::Takeover { .. } => EventKind::Takeover,
            Event::TakeoverDone { .. } => EventKind::TakeoverDone,
            Event::NonFaultTolerant { .. } => EventKind::NonFaultTolerant,
            Event::LoggerRecovered { .. } => EventKind::LoggerRecovered,
            Event::FinHeld { .. } => EventKind::FinHeld,
            Event::Error { .. } => EventKind::Error,
        }
    }

    /// The host time the event names.
    pub fn at_ns(&self) -> u64 {
        match self {
            Event::Detect { at_ns, .. }
            | Event::FenceRequest { at_ns, .. }
            | Event::Serving { at_ns, .. }
            | Event::FaultTolerant { at_ns, .. }
            | Event::Refused { at_ns, .. }
            | Event::Takeover { at_ns, .. }
            | Event::TakeoverDone { at_ns, .. }
            | Event::NonFaultTolerant { at_ns, .. }
            | Event::LoggerRecovered { at_ns, .. }
            | Event::FinHeld { at_ns, .. }
            | Event::Error { at_ns, .. } => *at_ns,
        }
    }
}

/// Why the backup declared its primary failed (thesis §3.6, §3.7.3, §3.7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectReason {
    /// No beat on any link for `missed_heartbeats` intervals (or never one since the backup
    /// started watching, plus the start-up grace).
    HeartbeatsLost,
    /// Beats on the heartbeat link only, while the backup's own service link is up.
    ServiceLinkLost,
    /// The primary's application stopped making progress while its replica went on.
    AppLag,
    /// The primary closed a connection where its replica goes on, for MaxDelayFIN.
    FinHeld,
}

impl DetectReason {
    pub fn name(self) -> &'static str {
        match self {
            DetectReason::HeartbeatsLost => "heartbeats-lost",
            DetectReason::ServiceLinkLost => "service-link-lost",
            DetectReason::AppLag => "app-lag",
            DetectReason::FinHeld => "fin-held",
        }
    }
}

/// Which datagrams of this mode a [`Event::Refused`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    Heartbeat,
    Logger,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Heartbeat => "heartbeat",
            Channel::Logger => "logger",
        }
    }
}

/// Magic of sealed heartbeats.
pub const HEARTBEAT_MAGIC: &[u8; 4] = b"HST1";
/// Magic of the detached tag on fence requests.
pub const FENCE_MAGIC: &[u8; 4] = b"HSTF";

/// The tag a backup puts on its fence request for `host` at `at_ns` under the testbed's key,
/// and the console checks before it powers anything off.
pub fn fence_tag(key: &crate::sealed::Key, host: &str, at_ns: u64) -> String {
    key.tag_hex(FENCE_MAGIC, &[host.as_bytes(), &at_ns.to_be_bytes()])
}

/// Whether `tag` is the fence tag of (`host`, `at_ns`) under `key`.
pub fn fence_tag_ok(key: &crate::sealed::Key, host: &str, at_ns: u64, tag: &str) -> bool {
    key.verify_hex(FENCE_MAGIC, &[host.as_bytes(), &at_ns.to_be_bytes()], tag)
}
