//! The messages of the control protocol. Every payload is one of these, as JSON with a `type`
//! tag. Unknown tags and unknown fields are errors: a peer that sends something this side does
//! not understand is a different protocol version, however it labelled itself.

use crate::modes::{ModeCommand, ModeConfig, ModeEvent};
pub use crate::role::Role;
use halab_workload::{ConnEvent, IntegrityReport, MeterSummary};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The client/server traffic of a run (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 150-byte requests echoed back, 100 exchanges (thesis §3.5).
    Echo,
    /// 150-byte requests, 10 KB replies, 100 exchanges (thesis §3.5).
    Interactive,
    /// One request, `size` bytes back (thesis §3.5).
    Bulk,
    /// Name, size, client's byte offset, bytes from there (paper 000 §5.1).
    Download,
    /// HTTP/1.1 GET with Content-Length and keep-alive.
    Http,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Echo,
        Workload::Interactive,
        Workload::Bulk,
        Workload::Download,
        Workload::Http,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Echo => "echo",
            Workload::Interactive => "interactive",
            Workload::Bulk => "bulk",
            Workload::Download => "download",
            Workload::Http => "http",
        }
    }

    /// Whether the run's `size` applies to this workload.
    pub fn has_size(self) -> bool {
        matches!(self, Workload::Bulk | Workload::Download | Workload::Http)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client host's agent runs for one run: the workload's clients, measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub workload: Workload,
    /// Seed of connection 0's stream; connection `i` uses `seed + i`.
    pub seed: u64,
    /// Bytes to transfer (bulk, download, http).
    pub size: u64,
    /// Concurrent connections, each measured and checked on its own.
    pub connections: u32,
    /// Server addresses in failover order: the service address first, then the backups'.
    pub servers: Vec<String>,
    /// TCP port of the halab workload protocol on the servers.
    pub workload_port: u16,
    /// TCP port of the http workload on the servers.
    pub http_port: u16,
    /// No byte for this long while one is due counts as a failure (the client's own
    /// heartbeat, DESIGN §5 none).
    pub idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Connection attempts per client connection before it gives up.
    pub max_attempts: u32,
    /// The client gives up on the whole run after this long.
    pub deadline_ms: u64,
    /// The failover mechanism the client takes part in (none: reconnect to the next server).
    #[serde(default)]
    pub mode: ModeConfig,
    /// Points of the run, in millionths of all the bytes its connections expect, at which the
    /// client reports [`AgentMsg::ClientMark`] at once: the console fires a fault timed as a
    /// fraction when the client has got that far (DESIGN §8: fault timing).
    #[serde(default)]
    pub progress_marks_ppm: Vec<u32>,
}

/// A fault an agent executes on its own host (DESIGN §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultAction {
    /// SIGKILL of the role's process: the kernel closes its sockets (FIN/RST).
    ProcessKill { role: Role },
    /// SIGSTOP of the role's process: no FIN, sockets stay open.
    ProcessHang { role: Role },
    /// SIGCONT: the revert of a hang.
    ProcessResume { role: Role },
    /// SIGTERM: the process exits and closes its connections cleanly.
    ProcessCrash { role: Role },
    /// Link(s) down in the host's namespace: one interface, or every one but `lo`.
    NicDown { interface: Option<String> },
    /// Random loss of `percent` % of the host's packets in `direction` (nftables `numgen
    /// random`).
    Loss { percent: f64, direction: Direction },
    /// Every packet to and from these addresses dropped (nftables).
    Partition { peers: Vec<String> },
    /// Packets delayed by `delay_ms`, each ± `jitter_ms` (uniform, as netem's default; a
    /// packet drawing a shorter delay overtakes the one before it, as under netem), on
    /// `interface` (`None`: every link but `lo`), in `direction` (default: out, what leaves
    /// the host). By netem where the kernel has it and only egress is asked for; otherwise by
    /// the agent's own delay line (NFQUEUE). Each direction crossed adds the delay once.
    Delay {
        delay_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default)]
        interface: Option<String>,
        #[serde(default = "Direction::out")]
        direction: Direction,
    },
}

/// Which packets a loss or delay fault acts on, seen from the faulted host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    /// What leaves the host: a delay fault's direction when none is given.
    pub fn out() -> Direction {
        Direction::Out
    }

    pub fn has_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }

    pub fn has_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
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
    /// A probe an older agent did not make.
    pub fn not_probed() -> Self {
        Probe::no("not probed by this agent")
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
    /// The netem qdisc (delay faults, egress).
    pub netem: Probe,
    /// NFQUEUE usable: a queue binds and iptables' NFQUEUE target is accepted (the agent's own
    /// delay line: delay faults without netem, and ingress delay).
    #[serde(default = "Probe::not_probed")]
    pub nfqueue: Probe,
}

impl Capabilities {
    /// Each fault kind (DESIGN §6) and whether this host can suffer it, with the reason.
    /// Process faults signal the agent's own role processes and need no privilege; nic-down
    /// and power need root (CAP_NET_ADMIN; power is done by the console for provider local);
    /// loss and partition need root and nftables; delay needs root and either the agent's
    /// delay line (NFQUEUE) or the netem qdisc (which delays only what leaves the host).
    pub fn fault_support(&self) -> Vec<(&'static str, bool, String)> {
        let needs = |what: &[(&str, &Probe)]| -> (bool, String) {
            match what.iter().find(|(_, p)| !p.ok) {
                Some((name, p)) => (false, format!("needs {name}: {}", p.detail)),
                None => (
                    true,
                    what.iter()
                        .map(|(name, p)| format!("{name}: {}", p.detail))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            }
        };
        const KINDS: [&str; 9] = [
            "process-kill",
            "process-hang",
            "process-crash",
            "nic-down",
            "loss",
            "partition",
            "delay",
            "power-off",
            "power-on",
        ];
        KINDS
            .iter()
            .map(|&kind| {
                let (ok, why) = match kind {
                    "nic-down" | "power-off" | "power-on" => needs(&[("root", &self.root)]),
                    "loss" | "partition" => {
                        needs(&[("root", &self.root), ("nftables", &self.nftables)])
                    }
                    "delay" => match (self.netem.ok, self.nfqueue.ok) {
                        _ if !self.root.ok => needs(&[("root", &self.root)]),
                        (true, true) => (
                            true,
                            format!(
                                "egress by netem ({}); ingress by the delay line, NFQUEUE ({})",
                                self.netem.detail, self.nfqueue.detail
                            ),
                        ),
                        (false, true) => (
                            true,
                            format!(
                                "by the delay line, NFQUEUE ({}); no netem ({})",
                                self.nfqueue.detail, self.netem.detail
                            ),
                        ),
                        (true, false) => (
                            true,
                            format!(
                                "egress only, by netem ({}); ingress needs NFQUEUE ({})",
                                self.netem.detail, self.nfqueue.detail
                            ),
                        ),
                        (false, false) => (
                            false,
                            format!(
                                "needs netem ({}) or NFQUEUE ({})",
                                self.netem.detail, self.nfqueue.detail
                            ),
                        ),
                    },
                    _ => (
                        true,
                        "signals the agent's own role processes (no privilege needed)".to_string(),
                    ),
                };
                (kind, ok, why)
            })
            .collect()
    }

    /// Name and probe of each capability, in table order.
    pub fn entries(&self) -> [(&'static str, &Probe); 7] {
        [
            ("root", &self.root),
            ("namespaces", &self.namespaces),
            ("af_packet", &self.af_packet),
            ("tcp_repair", &self.tcp_repair),
            ("nftables", &self.nftables),
            ("netem", &self.netem),
            ("nfqueue", &self.nfqueue),
        ]
    }
}

/// Messages from the console to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// A barrier: the agent answers [`AgentMsg::Synced`] through the queue every message it
    /// sends goes through, so the answer comes after everything the agent sent before it (the
    /// mode events of a run that were still on their way when the client finished).
    Sync {
        id: u64,
    },
    /// Start `role` under `mode` (its peers and parameters); the agent answers with
    /// [`AgentMsg::RoleState`].
    StartRole {
        role: Role,
        #[serde(default)]
        mode: ModeConfig,
        /// Echoed in the [`AgentMsg::RoleState`] that answers this request, so that whoever
        /// waits for it can tell its answer from answers to earlier requests still on the way.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    StopRole {
        role: Role,
    },
    /// Run a workload's clients; the agent answers with telemetry and then
    /// [`AgentMsg::ClientDone`].
    StartClient {
        run: u64,
        spec: ClientSpec,
    },
    /// Abandon run `run`'s clients (they report what they had).
    StopClient {
        run: u64,
    },
    /// Execute a fault now; answered by [`AgentMsg::FaultApplied`] or [`AgentMsg::FaultFailed`].
    /// With a lease the agent reverts it by itself after `lease_ms` (answering
    /// [`AgentMsg::FaultReverted`]); every fault is also reverted when the channel closes.
    InjectFault {
        id: u64,
        action: FaultAction,
        lease_ms: Option<u64>,
    },
    /// Revert fault `id` now; answered by [`AgentMsg::FaultReverted`] (or nothing, if the
    /// agent holds no such fault).
    RevertFault {
        id: u64,
    },
    /// A mode-specific request (DESIGN §5).
    Mode {
        command: ModeCommand,
    },
    /// Shape the host's links as `links` says (their delay, jitter and loss), replacing how
    /// this agent shaped them before (an empty list: not at all); answered by
    /// [`AgentMsg::LinksShaped`] or [`AgentMsg::LinksFailed`]. Undone when the channel closes,
    /// like every fault.
    ShapeLinks {
        id: u64,
        links: Vec<crate::link::LinkPlan>,
    },
    /// What the links' delay lines have done so far; answered by [`AgentMsg::LinkStats`].
    LinkStats {
        id: u64,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Answer to [`ConsoleMsg::Sync`].
    Synced {
        id: u64,
    },
    RoleState {
        role: Role,
        state: RoleState,
        detail: Option<String>,
        /// The [`ConsoleMsg::StartRole`] request this answers; `None` for any other change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    Log {
        level: LogLevel,
        target: String,
        message: String,
    },
    /// Progress of a run's clients, every 100 ms: bytes received by all its connections.
    ClientTelemetry {
        run: u64,
        at_ns: u64,
        bytes: u64,
        /// Connection events (connected, reset, FIN, timeout, reconnect) since the last
        /// telemetry message.
        events: Vec<ClientEvent>,
    },
    /// The run's connections have together received `ppm` millionths of the bytes they
    /// expect (distinct stream offsets: a refetch does not count twice), at `at_ns`; one
    /// message per entry of [`ClientSpec::progress_marks_ppm`] reached, sent the moment it is.
    ClientMark {
        run: u64,
        ppm: u32,
        at_ns: u64,
    },
    /// A run's clients have finished (or given up).
    ClientDone {
        run: u64,
        result: Box<ClientResult>,
    },
    /// The fault took effect at `at_ns` (the agent's CLOCK_MONOTONIC).
    FaultApplied {
        id: u64,
        at_ns: u64,
        detail: String,
    },
    FaultFailed {
        id: u64,
        error: String,
    },
    /// Fault `id` was undone at `at_ns`: `reason` is "requested", "lease expired" or
    /// "channel closed".
    FaultReverted {
        id: u64,
        at_ns: u64,
        reason: String,
    },
    /// A mode-specific event: a detection, a takeover, a request to fence a peer.
    Mode {
        event: ModeEvent,
    },
    /// The links are shaped as [`ConsoleMsg::ShapeLinks`] `id` asked; `detail` says how (the
    /// mechanism, its queues and tables).
    LinksShaped {
        id: u64,
        detail: String,
    },
    /// They could not be: nothing of that request stays (the links are as before it, or plain
    /// if undoing the earlier shape failed too; `error` says which).
    LinksFailed {
        id: u64,
        error: String,
    },
    /// Answer to [`ConsoleMsg::LinkStats`]: each delay line of the links' shape (none when
    /// the links are plain or shaped by netem).
    LinkStats {
        id: u64,
        lines: Vec<crate::link::LineCount>,
    },
    /// The host's load, sent every second once greeted: CPU busy over the last interval
    /// (0–100 % of all CPUs) and memory in use, as the host's /proc shows them (on provider
    /// local every namespace shares the machine's /proc, so these are the machine's figures).
    HostStats {
        cpu_pct: f64,
        mem_used_bytes: u64,
        mem_total_bytes: u64,
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

/// A connection event of a run's client, as it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEvent {
    pub connection: u32,
    pub at_ns: u64,
    pub event: ConnEvent,
}

/// What one client connection saw over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionResult {
    pub index: u32,
    pub seed: u64,
    pub meter: MeterSummary,
    pub integrity: IntegrityReport,
    /// When the client first noticed a failure (TCP error, early FIN, its idle timeout).
    pub detect_ns: Option<u64>,
    pub detect_reason: Option<String>,
    /// When its connection to another server was established after that failure.
    pub reconnected_ns: Option<u64>,
    /// First payload byte received on that new connection.
    pub resume_ns: Option<u64>,
    /// Connections made, the first included.
    pub attempts: u32,
    /// Server address of each attempt, in order.
    pub servers_used: Vec<String>,
    /// Why the connection ended before its stream did, when it did.
    pub error: Option<ConnError>,
}

/// Why a client connection ended before its stream did.
///
/// On the wire it is the plain text it always was (`"stopped"`, or the failure's message), so
/// records written before it was typed read back the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ConnError {
    /// The console stopped the run (or the agent stopped) before the connection finished: not
    /// a failure of the system under test.
    Stopped,
    /// The connection gave up; the message says why, with its whole cause chain.
    Failed(String),
}

impl ConnError {
    const STOPPED: &'static str = "stopped";
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Stopped => f.write_str(Self::STOPPED),
            ConnError::Failed(message) => f.write_str(message),
        }
    }
}

impl From<String> for ConnError {
    fn from(text: String) -> ConnError {
        if text == ConnError::STOPPED {
            ConnError::Stopped
        } else {
            ConnError::Failed(text)
        }
    }
}

impl From<ConnError> for String {
    fn from(e: ConnError) -> String {
        e.to_string()
    }
}

/// What a run's clients saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientResult {
    pub started_ns: u64,
    pub ended_ns: u64,
    pub connections: Vec<ConnectionResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn caps(root: bool, nft: bool, netem: bool) -> Capabilities {
        caps_q(root, nft, netem, false)
    }

    fn caps_q(root: bool, nft: bool, netem: bool, nfqueue: bool) -> Capabilities {
        let p = |ok: bool, what: &str| {
            if ok {
                Probe::yes(format!("{what} ok"))
            } else {
                Probe::no(format!("{what} missing"))
            }
        };
        Capabilities {
            root: p(root, "root"),
            namespaces: p(true, "ns"),
            af_packet: p(true, "packet"),
            tcp_repair: p(true, "repair"),
            nftables: p(nft, "nft"),
            netem: p(netem, "netem"),
            nfqueue: p(nfqueue, "nfqueue"),
        }
    }

    #[test]
    fn fault_kinds_follow_the_probes() {
        let all: BTreeMap<&str, (bool, String)> = caps(true, true, false)
            .fault_support()
            .into_iter()
            .map(|(k, ok, w)| (k, (ok, w)))
            .collect();
        assert!(all["loss"].0 && all["partition"].0 && all["nic-down"].0);
        assert!(!all["delay"].0);
        assert!(all["delay"].1.contains("netem"), "{}", all["delay"].1);
        // The delay line stands in for netem; netem alone delays egress only.
        let delay = |netem, nfqueue| {
            caps_q(true, true, netem, nfqueue)
                .fault_support()
                .into_iter()
                .find(|(k, ..)| *k == "delay")
                .map(|(_, ok, why)| (ok, why))
                .unwrap()
        };
        let (ok, why) = delay(false, true);
        assert!(
            ok && why.contains("delay line") && why.contains("no netem"),
            "{why}"
        );
        let (ok, why) = delay(true, false);
        assert!(ok && why.contains("egress only"), "{why}");
        let (ok, why) = delay(true, true);
        assert!(ok && why.contains("egress by netem"), "{why}");
        assert!(
            !caps_q(false, true, true, true)
                .fault_support()
                .iter()
                .any(|(k, ok, _)| *k == "delay" && *ok)
        );
        for (kind, ok, why) in caps(false, false, false).fault_support() {
            if kind.starts_with("process-") {
                assert!(ok, "{kind}");
            } else {
                assert!(!ok, "{kind}");
                assert!(why.contains("root"), "{kind}: {why}");
            }
        }
        assert!(
            caps(true, false, true)
                .fault_support()
                .iter()
                .any(|(k, ok, why)| *k == "loss" && !ok && why.contains("nftables"))
        );
    }

    #[test]
    fn a_delay_fault_without_the_newer_fields_means_what_it_always_did() {
        let old: FaultAction = serde_json::from_str(r#"{"kind":"delay","delay_ms":50}"#).unwrap();
        assert_eq!(
            old,
            FaultAction::Delay {
                delay_ms: 50,
                jitter_ms: 0,
                interface: None,
                direction: Direction::Out,
            }
        );
        let full = FaultAction::Delay {
            delay_ms: 20,
            jitter_ms: 5,
            interface: Some("eth1".into()),
            direction: Direction::Both,
        };
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(serde_json::from_str::<FaultAction>(&json).unwrap(), full);
        assert!(
            serde_json::from_str::<FaultAction>(r#"{"kind":"delay","delay_ms":1,"rate":3}"#)
                .is_err()
        );
        // A hello from an agent that probed no NFQUEUE still reads.
        let caps = serde_json::to_value(caps(true, true, false)).unwrap();
        let mut older = caps.as_object().unwrap().clone();
        older.remove("nfqueue");
        let read: Capabilities = serde_json::from_value(older.into()).unwrap();
        assert!(!read.nfqueue.ok);
    }

    #[test]
    fn a_connection_error_is_its_text_on_the_wire() {
        for (e, json) in [
            (ConnError::Stopped, r#""stopped""#),
            (
                ConnError::Failed("deadline of 5 ms passed".into()),
                r#""deadline of 5 ms passed""#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&e).unwrap(), json);
            assert_eq!(serde_json::from_str::<ConnError>(json).unwrap(), e);
        }
        // A record written while the error was a plain string reads back typed.
        let old: Option<ConnError> = serde_json::from_str(r#""stopped""#).unwrap();
        assert_eq!(old, Some(ConnError::Stopped));
        assert_eq!(ConnError::Stopped.to_string(), "stopped");
    }
}
