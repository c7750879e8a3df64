//! The agent's fault ledger (DESIGN §6): every fault this agent executed and still holds, with
//! what it takes to undo it.
//!
//! The agent runs inside its host's network namespace (`ip netns exec <ns> halab-agent` on the
//! local provider, a login shell on the ssh provider), so every command it runs here (`ip`,
//! `nft`, `tc`) acts on its own host only.
//!
//! | kind | effect | revert |
//! |---|---|---|
//! | process-kill / process-crash | SIGKILL / SIGTERM to the role's process | start the role again |
//! | process-hang | SIGSTOP | SIGCONT |
//! | process-resume | SIGCONT | nothing |
//! | nic-down | `ip link set dev X down` (one link, or every link but `lo` that is up) | links up, then the addresses and routes the kernel dropped restored |
//! | loss | nftables table `inet halab_fault_<id>`, `numgen random mod 10000 < p·100 drop` on input and/or output | delete the table |
//! | partition | nftables table `inet halab_fault_<id>` dropping the peers on input, output and forward | delete the table |
//! | delay, egress only, kernel with netem | `tc qdisc add dev X root netem delay Nms [Jms]` on one link or every link but `lo` | `tc qdisc del dev X root` |
//! | delay, otherwise | the agent's delay line ([`crate::link_delay`]): iptables `mangle` rules queue the link's packets (`POSTROUTING -o` out, `PREROUTING -i` in) to threads that let each go when its time comes | the rules removed, then every held packet let go |
//!
//! A fault is undone when the console asks ([`REVERT_REQUESTED`]), when its lease runs out
//! ([`REVERT_LEASE_EXPIRED`]) and on every way out of the agent's session ([`REVERT_CHANNEL_CLOSED`]):
//! shutdown, end of stdin, a silent console, a signal, a protocol error.
//!
//! What cannot be covered: an agent killed with SIGKILL (or OOM-killed, or losing its host) runs
//! no code. Its process faults die with it (the role processes are its children, killed on its
//! exit), but links it took down stay down and its `halab_fault_*` nftables tables stay loaded.
//! On the local provider they live in the host's namespace and disappear with it at `halab down`
//! (which deletes the namespaces); on an ssh host, `halab down` must remove them. The agent
//! never leaves anything behind on any exit it gets to run code for.
//!
//! Why nic-down snapshots addresses and routes: on link down Linux drops every route through the
//! link and every IPv6 address on it (unless `keep_addr_on_down`), and on link up it restores
//! only the connected (prefix) routes of the IPv4 addresses that stayed and the IPv6 link-local
//! address. Gateway routes and static IPv6 addresses would be lost for good; the ledger saves them
//! (`ip addr save`, `ip route save`) before the link goes down and restores them after it is up.

pub(crate) mod net;

use crate::error::chain;
use crate::link_delay::{self, DelayLink};
use crate::roles::{RoleError, RoleSet};
use halab_protocol::{AgentMsg, Direction, FaultAction, Role, RoleState, mono_ns};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Revert reason: the console sent `RevertFault`.
pub const REVERT_REQUESTED: &str = "requested";
/// Revert reason: the fault's lease ran out.
pub const REVERT_LEASE_EXPIRED: &str = "lease expired";
/// Revert reason: the session ended (any way: the dead-man switch and orderly exits alike).
pub const REVERT_CHANNEL_CLOSED: &str = "channel closed";

/// How long the revert of a nic-down waits for its links to carry traffic again.
const LINK_UP_WAIT: Duration = Duration::from_secs(1);

/// The fault kinds this agent executes, as the console and the experiment files name them.
pub const KINDS: [&str; 8] = [
    "process-kill",
    "process-hang",
    "process-resume",
    "process-crash",
    "nic-down",
    "loss",
    "partition",
    "delay",
];

/// The kind name of `action` (one of [`KINDS`]).
pub fn kind_name(action: &FaultAction) -> &'static str {
    match action {
        FaultAction::ProcessKill { .. } => "process-kill",
        FaultAction::ProcessHang { .. } => "process-hang",
        FaultAction::ProcessResume { .. } => "process-resume",
        FaultAction::ProcessCrash { .. } => "process-crash",
        FaultAction::NicDown { .. } => "nic-down",
        FaultAction::Loss { .. } => "loss",
        FaultAction::Partition { .. } => "partition",
        FaultAction::Delay { .. } => "delay",
    }
}

/// Why a fault was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("fault {0} is already active on this host")]
    AlreadyActive(u64),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("pidfd_open({pid})")]
    PidfdOpen {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("signal {sig}")]
    Signal {
        sig: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the fault thread")]
    Thread(#[source] std::io::Error),
    #[error("the fault thread ended without an answer")]
    ThreadLost,
    #[error("no interface {0} on this host")]
    NoInterface(String),
    #[error("interface {0} is down already")]
    AlreadyDown(String),
    #[error("no interface but lo is up on this host")]
    NothingUp,
    /// Taking the links down (`halab_protocol::sys::links_down_stamped`, whose errors are text).
    #[error("{0}")]
    LinksDown(String),
    #[error("a jitter of {jitter_ms} ms is more than the delay of {delay_ms} ms")]
    JitterOverDelay { delay_ms: u64, jitter_ms: u64 },
    /// Two delays on one link and direction would not add up (a queued packet's verdict ends
    /// its pass through the chain; a second netem root qdisc is refused): refused instead.
    #[error("delay fault {0} already delays this link in this direction")]
    DelayOverlap(u64),
    #[error("cannot start the delay line")]
    DelayLine(#[source] link_delay::error::LinkDelayError),
}

/// One fault the agent holds.
struct ActiveFault {
    action: FaultAction,
    /// When it took effect (CLOCK_MONOTONIC, ns): the T_fault reported to the console.
    applied_ns: u64,
    /// When its lease runs out, if it has one.
    deadline: Option<Instant>,
    undo: Undo,
}

/// What it takes to revert one fault.
enum Undo {
    Nothing,
    /// SIGCONT to the role's process.
    Resume {
        role: Role,
    },
    /// The role's process `pid` was killed or terminated: start the role again.
    Restart {
        role: Role,
        pid: u32,
    },
    /// Links this fault holds down (see [`FaultLedger::links`]).
    Links(Vec<String>),
    /// An nftables table of this fault: `inet <name>`.
    NftTable(String),
    /// netem root qdiscs this fault added, by link.
    Qdiscs(Vec<String>),
    /// The delay line this fault runs (its threads and rules).
    DelayLine(Box<DelayLink>),
}

/// A link held down by one or more nic-down faults, and what to restore when the last lets go.
struct LinkHold {
    holders: BTreeSet<u64>,
    snapshot: net::LinkSnapshot,
}

/// The outcome of reverting one fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Reverted {
    pub id: u64,
    /// When the revert took effect (CLOCK_MONOTONIC, ns).
    pub at_ns: u64,
    /// What was done; problems met on the way (they are logged as errors too).
    pub detail: String,
    /// Whether every step of the revert succeeded.
    pub clean: bool,
    /// A role restarted by the revert: the `RoleState` message to send the console.
    pub role_state: Option<AgentMsg>,
}

/// The faults this agent holds, by id.
#[derive(Default)]
pub struct FaultLedger {
    active: BTreeMap<u64, ActiveFault>,
    /// Links taken down by nic-down faults, by name. A link is brought up again only when no
    /// fault holds it any more, so overlapping nic-down faults do not undo each other.
    links: BTreeMap<String, LinkHold>,
    /// Whether the kernel has netem, probed at the first delay fault.
    netem: Option<bool>,
}

impl FaultLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ids of the faults held, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.active.keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The action of fault `id`, and when it took effect, while it is held.
    pub fn get(&self, id: u64) -> Option<(&FaultAction, u64)> {
        self.active.get(&id).map(|f| (&f.action, f.applied_ns))
    }

    /// Executes `action` as fault `id` and holds it until it is reverted; with a lease, it is
    /// due for revert `lease` after it took effect. Returns the moment it took effect (the
    /// signal delivered, the last link down; after `nft`/`tc` returned) and a description.
    pub async fn apply(
        &mut self,
        id: u64,
        action: FaultAction,
        lease: Option<Duration>,
        roles: &RoleSet,
    ) -> Result<(u64, String), FaultError> {
        if self.active.contains_key(&id) {
            return Err(FaultError::AlreadyActive(id));
        }
        let (at_ns, detail, undo) = match &action {
            FaultAction::ProcessKill { role } => {
                signal_and_wait(roles, *role, libc::SIGKILL, "SIGKILL")
                    .await
                    .map(|(at, pid, d)| (at, d, Undo::Restart { role: *role, pid }))?
            }
            FaultAction::ProcessCrash { role } => {
                signal_and_wait(roles, *role, libc::SIGTERM, "SIGTERM")
                    .await
                    .map(|(at, pid, d)| (at, d, Undo::Restart { role: *role, pid }))?
            }
            FaultAction::ProcessHang { role } => signal(roles, *role, libc::SIGSTOP, "SIGSTOP")
                .await
                .map(|(at, _, d)| (at, d, Undo::Resume { role: *role }))?,
            FaultAction::ProcessResume { role } => signal(roles, *role, libc::SIGCONT, "SIGCONT")
                .await
                .map(|(at, _, d)| (at, d, Undo::Nothing))?,
            FaultAction::NicDown { interface } => self.nic_down(id, interface.as_deref()).await?,
            FaultAction::Loss { percent, direction } => {
                let table = table_name(id);
                let script = net::loss_script(&table, *percent, *direction)?;
                net::nft_load(&table, &script).await?;
                let at = mono_ns();
                (
                    at,
                    format!(
                        "nftables table inet {table}: {percent}% random drop, direction {}",
                        net::direction_name(*direction)
                    ),
                    Undo::NftTable(table),
                )
            }
            FaultAction::Partition { peers } => {
                let table = table_name(id);
                let (script, peers) = net::partition_script(&table, peers)?;
                net::nft_load(&table, &script).await?;
                let at = mono_ns();
                (
                    at,
                    format!(
                        "nftables table inet {table}: every packet to or from {} dropped",
                        peers.join(", ")
                    ),
                    Undo::NftTable(table),
                )
            }
            FaultAction::Delay {
                delay_ms,
                jitter_ms,
                interface,
                direction,
            } => {
                self.delay(id, *delay_ms, *jitter_ms, interface.as_deref(), *direction)
                    .await?
            }
        };
        tracing::info!(id, kind = kind_name(&action), %detail, "fault applied");
        self.active.insert(
            id,
            ActiveFault {
                action,
                applied_ns: at_ns,
                deadline: lease.map(|l| Instant::now() + l),
                undo,
            },
        );
        Ok((at_ns, detail))
    }

    /// Takes `interface` (or every link but `lo` that is up) down and records the hold.
    async fn nic_down(
        &mut self,
        id: u64,
        interface: Option<&str>,
    ) -> Result<(u64, String, Undo), FaultError> {
        let links = net::links().await?;
        let targets: Vec<&net::Link> = match interface {
            Some(name) => {
                net::check_link_name(name)?;
                let link = links
                    .iter()
                    .find(|l| l.name == name)
                    .ok_or_else(|| FaultError::NoInterface(name.to_string()))?;
                if !link.up && !self.links.contains_key(name) {
                    return Err(FaultError::AlreadyDown(name.to_string()));
                }
                vec![link]
            }
            None => {
                let all: Vec<&net::Link> = links
                    .iter()
                    .filter(|l| l.name != "lo" && (l.up || self.links.contains_key(&l.name)))
                    .collect();
                if all.is_empty() {
                    return Err(FaultError::NothingUp);
                }
                all
            }
        };
        // Links another nic-down fault holds down already are shared; the others go down now.
        let mut fresh = Vec::new();
        for link in &targets {
            if !self.links.contains_key(&link.name) {
                fresh.push((link.name.clone(), net::snapshot(&link.name).await?));
            }
        }
        let names: Vec<String> = fresh.iter().map(|(n, _)| n.clone()).collect();
        let down = {
            let names = names.clone();
            urgent(move || {
                halab_protocol::sys::links_down_stamped(&names).map_err(FaultError::LinksDown)
            })
            .await
        };
        let (at, call_ms) = match down {
            Ok(d) => (d.at_ns, d.call_ms()),
            Err(e) => {
                // Some may have gone down before the failure: undo those.
                let _ = net::set_links_each(&names, true).await;
                for (name, snap) in &fresh {
                    net::restore(name, snap).await;
                }
                return Err(e);
            }
        };
        let all: Vec<String> = targets.iter().map(|l| l.name.clone()).collect();
        let shared: Vec<&String> = all.iter().filter(|n| !names.contains(n)).collect();
        for (name, snapshot) in fresh {
            self.links.insert(
                name,
                LinkHold {
                    holders: BTreeSet::new(),
                    snapshot,
                },
            );
        }
        for name in &all {
            if let Some(h) = self.links.get_mut(name) {
                h.holders.insert(id);
            }
        }
        let mut detail = if names.is_empty() {
            String::from("no link taken down")
        } else {
            format!(
                "link down: {} (T_fault at the call's start; the kernel announced it down {call_ms:.3} ms later)",
                names.join(", ")
            )
        };
        if !shared.is_empty() {
            detail.push_str(&format!(
                " (held down already by another fault: {})",
                shared
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok((at, detail, Undo::Links(all)))
    }

    /// Delays `interface` (or every link but `lo`) in `direction`: by netem when only egress is
    /// asked for and the kernel has it, else by the agent's delay line.
    async fn delay(
        &mut self,
        id: u64,
        delay_ms: u64,
        jitter_ms: u64,
        interface: Option<&str>,
        direction: Direction,
    ) -> Result<(u64, String, Undo), FaultError> {
        if delay_ms == 0 {
            return Err(net::NetError::ZeroDelay.into());
        }
        if jitter_ms > delay_ms {
            return Err(FaultError::JitterOverDelay {
                delay_ms,
                jitter_ms,
            });
        }
        let targets = net::delay_targets(interface).await?;
        if let Some(other) = self.delay_overlapping(interface, direction) {
            return Err(FaultError::DelayOverlap(other));
        }
        let netem = match self.netem {
            Some(known) => known,
            None => {
                let probe = tokio::task::spawn_blocking(crate::capabilities::probe_netem)
                    .await
                    .map_err(|_| FaultError::ThreadLost)?;
                tracing::info!(netem = probe.ok, detail = %probe.detail, "probed netem for delay faults");
                self.netem = Some(probe.ok);
                probe.ok
            }
        };
        let jitter = if jitter_ms > 0 {
            format!(" ± {jitter_ms} ms (uniform)")
        } else {
            String::new()
        };
        let place = match interface {
            Some(name) => name.to_string(),
            None => format!("every link but lo ({})", targets.join(", ")),
        };
        if netem && direction == Direction::Out {
            net::delay_add(&targets, delay_ms, jitter_ms).await?;
            let at = mono_ns();
            return Ok((
                at,
                format!(
                    "netem delay {delay_ms} ms{jitter} on {}",
                    targets.join(", ")
                ),
                Undo::Qdiscs(targets),
            ));
        }
        let spec = link_delay::Spec {
            interface: interface.map(str::to_string),
            egress: direction.has_out(),
            ingress: direction.has_in(),
            seed: mono_ns() ^ id.rotate_left(32),
            ..link_delay::Spec::new(
                delay_ms.saturating_mul(1_000_000),
                jitter_ms.saturating_mul(1_000_000),
            )
        };
        let link = tokio::task::spawn_blocking(move || DelayLink::start(&spec))
            .await
            .map_err(|_| FaultError::ThreadLost)?
            .map_err(FaultError::DelayLine)?;
        let at = mono_ns();
        let why = if netem {
            "netem delays only what leaves the host"
        } else {
            "this kernel has no netem"
        };
        let queues = link
            .queues()
            .iter()
            .map(|(way, q)| format!("{} NFQUEUE {q}", way.name()))
            .collect::<Vec<_>>()
            .join(", ");
        // Said where the fault is recorded: on egress the line is not netem's equal for what
        // this host sends itself (see `link_delay`).
        let caveat = if direction.has_out() {
            "; caveat: packets this host sends stay charged to their sockets while they wait, so \
             a TCP sender here is throttled by its small-queue limit (a few packets per delay)"
        } else {
            ""
        };
        Ok((
            at,
            format!(
                "delay line ({why}; {queues}): {delay_ms} ms{jitter} per direction crossed, \
                 direction {}, on {place}{caveat}",
                net::direction_name(direction)
            ),
            Undo::DelayLine(Box::new(link)),
        ))
    }

    /// A delay fault held that acts on the same link in the same direction, if any.
    fn delay_overlapping(&self, interface: Option<&str>, direction: Direction) -> Option<u64> {
        self.active.iter().find_map(|(id, f)| match &f.action {
            FaultAction::Delay {
                interface: other,
                direction: d,
                ..
            } => {
                let same_link = match (interface, other.as_deref()) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                let same_way =
                    (direction.has_in() && d.has_in()) || (direction.has_out() && d.has_out());
                (same_link && same_way).then_some(*id)
            }
            _ => None,
        })
    }

    /// When the next lease runs out, if any fault has one.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.active.values().filter_map(|f| f.deadline).min()
    }

    /// The faults whose lease has run out at `now`, earliest deadline first.
    pub fn expired(&self, now: Instant) -> Vec<u64> {
        let mut due: Vec<(Instant, u64)> = self
            .active
            .iter()
            .filter_map(|(id, f)| f.deadline.filter(|d| *d <= now).map(|d| (d, *id)))
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Reverts fault `id`; `None` if the ledger does not hold it (reverting twice is harmless).
    /// `restart` is the token role restarts run under; `None` when the agent is stopping its
    /// roles anyway, so a killed role is not started again only to be stopped.
    pub async fn revert(
        &mut self,
        id: u64,
        reason: &str,
        roles: &mut RoleSet,
        restart: Option<&CancellationToken>,
    ) -> Option<Reverted> {
        let fault = self.active.remove(&id)?;
        let mut problems: Vec<String> = Vec::new();
        let mut role_state = None;
        let done = match fault.undo {
            Undo::Nothing => "nothing to undo".to_string(),
            Undo::Resume { role } => match roles.signal(role, libc::SIGCONT) {
                Ok(pid) => format!("SIGCONT to the {role} process (pid {pid})"),
                Err(e) => {
                    // A process that is gone is not hung any more: not a failed revert.
                    format!("nothing to resume: {}", chain(&e))
                }
            },
            Undo::Restart { role, pid } => match restart {
                None => format!("{role} not restarted: the agent is stopping its roles"),
                Some(token) => {
                    let (state, detail) = roles.restart_after(role, pid, token).await;
                    if state != RoleState::Running {
                        problems.push(format!(
                            "restarting {role}: {}",
                            detail.as_deref().unwrap_or("failed")
                        ));
                    }
                    let text = format!(
                        "{role} started again{}",
                        detail
                            .as_deref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    );
                    role_state = Some(AgentMsg::RoleState {
                        role,
                        state,
                        detail,
                        request: None,
                    });
                    text
                }
            },
            Undo::Links(names) => {
                let mut freed = Vec::new();
                for name in &names {
                    if let Some(h) = self.links.get_mut(name) {
                        h.holders.remove(&id);
                        if h.holders.is_empty()
                            && let Some(h) = self.links.remove(name)
                        {
                            freed.push((name.clone(), h.snapshot));
                        }
                    }
                }
                let up: Vec<String> = freed.iter().map(|(n, _)| n.clone()).collect();
                problems.extend(
                    net::set_links_each(&up, true)
                        .await
                        .iter()
                        .map(|e| chain(e)),
                );
                for (name, snap) in &freed {
                    problems.extend(net::restore(name, snap).await.iter().map(|e| chain(e)));
                }
                // Report the revert once the links carry traffic again, not when `ip` returned.
                let dark = net::wait_operational(&up, LINK_UP_WAIT).await;
                if up.is_empty() {
                    "links stay down: another fault holds them".to_string()
                } else if dark.is_empty() {
                    format!("link up: {}", up.join(", "))
                } else {
                    // Not the revert's failure: the link is up, the carrier is not there (yet).
                    tracing::warn!(links = %dark.join(", "), "link up but no carrier yet");
                    format!(
                        "link up: {}; no carrier within {LINK_UP_WAIT:?} on {}",
                        up.join(", "),
                        dark.join(", ")
                    )
                }
            }
            Undo::NftTable(table) => match net::nft_delete(&table).await {
                Ok(()) => format!("nftables table inet {table} deleted"),
                Err(e) => {
                    problems.push(chain(&e));
                    format!("nftables table inet {table} not deleted")
                }
            },
            Undo::Qdiscs(links) => {
                problems.extend(net::delay_del(&links).await.iter().map(|e| chain(e)));
                format!("netem removed from {}", links.join(", "))
            }
            Undo::DelayLine(link) => {
                let link = *link;
                match tokio::task::spawn_blocking(move || link.stop()).await {
                    Ok(report) => {
                        problems.extend(report.problems);
                        format!(
                            "delay line removed: {}",
                            report
                                .directions
                                .iter()
                                .map(|d| d.to_string())
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    }
                    Err(e) => {
                        problems.push(format!("stopping the delay line: {e}"));
                        "delay line not removed cleanly".to_string()
                    }
                }
            }
        };
        let at_ns = mono_ns();
        let clean = problems.is_empty();
        let detail = if clean {
            done
        } else {
            format!("{done}; problems: {}", problems.join("; "))
        };
        if clean {
            tracing::info!(id, kind = kind_name(&fault.action), reason, %detail, "fault reverted");
        } else {
            tracing::error!(id, kind = kind_name(&fault.action), reason, %detail, "fault revert incomplete");
        }
        Some(Reverted {
            id,
            at_ns,
            detail,
            clean,
            role_state,
        })
    }

    /// Reverts every fault held, newest first.
    pub async fn revert_all(
        &mut self,
        reason: &str,
        roles: &mut RoleSet,
        restart: Option<&CancellationToken>,
    ) -> Vec<Reverted> {
        let mut out = Vec::new();
        let ids: Vec<u64> = self.active.keys().rev().copied().collect();
        for id in ids {
            if let Some(r) = self.revert(id, reason, roles, restart).await {
                out.push(r);
            }
        }
        out
    }
}

/// The nftables table of fault `id` (family inet).
pub fn table_name(id: u64) -> String {
    format!("halab_fault_{id}")
}

/// How long a signalled process is watched for its end.
const EXIT_WAIT_MS: i32 = 2000;

/// Runs `f` on a thread of its own at real-time priority ([`halab_protocol::sys`]): the
/// system call that makes a fault happen and the stamp of that moment are then neither delayed
/// nor split by the host's workload, however busy its cores are.
async fn urgent<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FaultError> + Send + 'static,
) -> Result<T, FaultError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fault".into())
        .spawn(move || {
            if let Err(e) = halab_protocol::sys::enter_realtime() {
                tracing::debug!(error = %e, "fault thread stays at normal priority");
            }
            let _ = tx.send(f());
        })
        .map_err(FaultError::Thread)?;
    rx.await.map_err(|_| FaultError::ThreadLost)?
}

/// A pidfd of `role`'s process, taken before it is signalled so its pid cannot be reused in
/// between (the role task reaps the process the moment it ends).
fn role_pidfd(roles: &RoleSet, role: Role) -> Result<(u32, std::os::fd::OwnedFd), FaultError> {
    let pid = roles.pid(role)?;
    // SAFETY: pidfd_open(2) returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if raw < 0 {
        return Err(FaultError::PidfdOpen {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok((pid, unsafe {
        std::os::fd::OwnedFd::from_raw_fd(raw as i32)
    }))
}

/// pidfd_send_signal(2): signals exactly the process the pidfd names.
fn pidfd_signal(pidfd: &std::os::fd::OwnedFd, sig: i32) -> Result<(), FaultError> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        return Err(FaultError::Signal {
            sig,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Ends `role`'s process with `sig` (SIGKILL or SIGTERM). T_fault is the moment the signal was
/// delivered (pidfd_send_signal returned): from then on the process runs no more of its own
/// code, and everything the client sees — the FIN or RST its closing sockets send — follows
/// it. How long the kernel then took to tear the process down (unmap its memory, close its
/// files: the FIN leaves here, and report it gone) is measured on the same real-time thread
/// through the pidfd and given in the detail.
async fn signal_and_wait(
    roles: &RoleSet,
    role: Role,
    sig: i32,
    what: &str,
) -> Result<(u64, u32, String), FaultError> {
    let (pid, pidfd) = role_pidfd(roles, role)?;
    let (at_signal, gone) = urgent(move || {
        use std::os::fd::AsRawFd;
        pidfd_signal(&pidfd, sig)?;
        let at_signal = mono_ns();
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own; a pidfd becomes readable when the process exits.
        let n = unsafe { libc::poll(&mut p, 1, EXIT_WAIT_MS) };
        Ok((at_signal, (n == 1).then(mono_ns)))
    })
    .await?;
    let detail = match gone {
        Some(at) => format!(
            "{what} to the {role} process (pid {pid}); it was gone {:.3} ms later",
            at.saturating_sub(at_signal) as f64 / 1e6
        ),
        None => format!(
            "{what} to the {role} process (pid {pid}); still running {EXIT_WAIT_MS} ms later"
        ),
    };
    Ok((at_signal, pid, detail))
}

/// Signals `role`'s process (SIGSTOP, SIGCONT) from a real-time thread; (T_fault, pid, detail).
async fn signal(
    roles: &RoleSet,
    role: Role,
    sig: i32,
    what: &str,
) -> Result<(u64, u32, String), FaultError> {
    let (pid, pidfd) = role_pidfd(roles, role)?;
    let at = urgent(move || pidfd_signal(&pidfd, sig).map(|()| mono_ns())).await?;
    Ok((at, pid, format!("{what} to the {role} process (pid {pid})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_match_the_protocol() {
        let action = FaultAction::Loss {
            percent: 1.0,
            direction: halab_protocol::Direction::In,
        };
        let json = serde_json::to_value(&action).unwrap();
        assert_eq!(json["kind"], kind_name(&action));
        let action = FaultAction::NicDown { interface: None };
        assert_eq!(
            serde_json::to_value(&action).unwrap()["kind"],
            kind_name(&action)
        );
        assert!(KINDS.contains(&kind_name(&action)));
    }

    #[tokio::test]
    async fn leases_come_due_in_deadline_order() {
        let mut ledger = FaultLedger::new();
        let roles = RoleSet::new(tokio::sync::mpsc::channel(8).0);
        // Process faults on roles that are not running fail and leave nothing held.
        let err = ledger
            .apply(
                1,
                FaultAction::ProcessKill {
                    role: Role::Primary,
                },
                None,
                &roles,
            )
            .await
            .unwrap_err();
        let err = chain(&err);
        assert!(err.contains("not running"), "{err}");
        assert!(ledger.is_empty());
        assert_eq!(ledger.next_expiry(), None);

        let now = Instant::now();
        for (id, ms) in [(1u64, Some(300u64)), (2, Some(100)), (3, None)] {
            ledger.active.insert(
                id,
                ActiveFault {
                    action: FaultAction::ProcessResume { role: Role::Logger },
                    applied_ns: 0,
                    deadline: ms.map(|ms| now + Duration::from_millis(ms)),
                    undo: Undo::Nothing,
                },
            );
        }
        assert_eq!(ledger.next_expiry(), Some(now + Duration::from_millis(100)));
        assert!(ledger.expired(now).is_empty());
        assert_eq!(ledger.expired(now + Duration::from_millis(150)), vec![2]);
        assert_eq!(ledger.expired(now + Duration::from_secs(1)), vec![2, 1]);
        // Duplicate ids are refused.
        let err = ledger
            .apply(
                3,
                FaultAction::Delay {
                    delay_ms: 1,
                    jitter_ms: 0,
                    interface: None,
                    direction: Direction::Out,
                },
                None,
                &roles,
            )
            .await
            .unwrap_err();
        let err = chain(&err);
        assert!(err.contains("already active"), "{err}");

        let mut roles = roles;
        let r = ledger
            .revert(2, REVERT_LEASE_EXPIRED, &mut roles, None)
            .await
            .unwrap();
        assert!(r.clean && r.at_ns > 0);
        assert_eq!(
            ledger.revert(2, REVERT_REQUESTED, &mut roles, None).await,
            None
        );
        let rest = ledger
            .revert_all(REVERT_CHANNEL_CLOSED, &mut roles, None)
            .await;
        assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3, 1]);
        assert!(ledger.is_empty());
        assert_eq!(ledger.next_expiry(), None);
    }
}
