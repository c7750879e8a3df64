//! The primary's FIN hold (thesis §3.7.4, MaxDelayFIN): an nftables table in the primary's
//! namespace hands every FIN or RST its service sends to an NFQUEUE
//! ([`crate::netfilter_queue`]), where the packet waits until the backup has confirmed the
//! close (its replica closed at the same point). A crashing application's FIN therefore never
//! reaches the client before the backup has decided; a normal close is let go the moment the
//! confirmation arrives, not at the kernel's next retransmission.
//!
//! Where the queue cannot be bound (a kernel without nfnetlink_queue) the rule drops instead,
//! with a set of confirmed connections let through: the hold stays strict, and a confirmed FIN
//! leaves with the kernel's retransmission.
//!
//! The table goes when the hold is released (no backup: non-fault-tolerant mode, every held
//! packet let go) or dropped (the queue's packets die with its socket).

use super::command::{self, CommandError};
use crate::error::Chain;
use crate::netfilter_queue::{Message, Queue, Verdict};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const TABLE: &str = "halab_sttcp";
/// The iptables chain of the queue rules.
const CHAIN: &str = "HALAB_STTCP";
/// The queue number (queues are per network namespace). The delay line's queues
/// (`link_delay::queues`) start far above it.
const QUEUE: u16 = 7;
/// Enough of a packet for its IPv4 and TCP headers with options.
const COPY: u32 = 128;

/// A connection as the hold knows it: (client, client port, service port).
pub type HoldKey = ([u8; 4], u16, u16);

/// What the primary's loop asks of the FIN hold; the nft commands run in the hold's own task,
/// so that a slow `nft` never delays a heartbeat.
pub enum HoldCmd {
    Install,
    Allow(Vec<HoldKey>),
    Release,
}

/// The hold's state as the heartbeat sees it: whether it is on, and what it lets go.
#[derive(Debug, Default)]
pub struct HoldView {
    pub active: bool,
    pub allowed: BTreeSet<HoldKey>,
}

/// Runs the hold until `rx` closes; the table goes with it. `queued` is notified whenever a
/// FIN or RST is held, so that the primary looks at once whether it may go.
pub async fn run(
    mut hold: FinHold,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<HoldCmd>,
    view: Arc<Mutex<HoldView>>,
    queued: Arc<Notify>,
) {
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let r = match cmd {
                    HoldCmd::Install => hold.install().await,
                    HoldCmd::Allow(keys) => hold.allow(&keys).await,
                    HoldCmd::Release => hold.release().await,
                };
                if let Err(e) = r {
                    tracing::warn!(error = %Chain(&e), "st-tcp: FIN hold");
                }
                let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
                v.active = hold.active;
                v.allowed = hold.allowed.clone();
            }
            r = next_packets(&mut hold.queue) => match r {
                Ok(msgs) => {
                    if hold.on_packets(msgs).await {
                        queued.notify_one();
                    }
                }
                Err(e) => {
                    // Without the socket the rule drops what it would queue: still a hold.
                    tracing::warn!(error = %e, "st-tcp: FIN hold queue failed");
                    hold.queue = None;
                }
            },
        }
    }
    if let Err(e) = hold.release().await {
        tracing::warn!(error = %Chain(&e), "st-tcp: FIN hold not removed");
    }
}

async fn next_packets(q: &mut Option<Queue>) -> std::io::Result<Vec<Message>> {
    match q {
        Some(q) => q.recv().await,
        None => std::future::pending().await,
    }
}

/// The connection a queued IPv4 TCP packet from the service belongs to, if it parses.
fn packet_key(ip: &[u8]) -> Option<HoldKey> {
    let ihl = (*ip.first()? & 0x0f) as usize * 4;
    if ip.first()? >> 4 != 4 || ihl < 20 || ip.get(9) != Some(&6) {
        return None;
    }
    let daddr: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
    let tcp = ip.get(ihl..ihl + 4)?;
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    Some((daddr, dport, sport))
}

/// The primary's side of the close policy (thesis §3.7.4), sans-IO: the closes its backup
/// confirmed (the replica ended after `end` bytes), waiting until the primary's application
/// has written exactly that much. A connection whose application closed elsewhere (an early
/// close: a crash) is never let go by it.
#[derive(Debug, Default)]
pub struct Confirmations {
    pending: std::collections::HashMap<HoldKey, u64>,
}

impl Confirmations {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The backup confirmed `key`'s close after `end` bytes (again, possibly: the newest
    /// counts). Closes the hold already lets go are not kept.
    pub fn confirm(&mut self, key: HoldKey, end: u64, allowed: &BTreeSet<HoldKey>) {
        if !allowed.contains(&key) {
            self.pending.insert(key, end);
        }
    }

    /// The connections to let go now, given each open connection's bytes written by the
    /// application (`written`: `None` for a connection that is gone, which is forgotten).
    pub fn due(&mut self, written: impl Fn(&HoldKey) -> Option<u64>) -> Vec<HoldKey> {
        let mut allow = Vec::new();
        self.pending.retain(|key, end| match written(key) {
            None => false,
            Some(w) if w == *end => {
                allow.push(*key);
                false
            }
            Some(_) => true,
        });
        allow.sort();
        allow
    }
}

pub struct FinHold {
    active: bool,
    vip: Ipv4Addr,
    ports: Vec<u16>,
    /// Connections allowed to close.
    allowed: BTreeSet<HoldKey>,
    queue: Option<Queue>,
    /// Whether the installed hold queues (else it drops, with a set of confirmed connections).
    queued: bool,
    /// Packets waiting in the queue for a verdict.
    held: Vec<(HoldKey, u32)>,
}

impl FinHold {
    pub fn new(vip: Ipv4Addr, ports: Vec<u16>) -> FinHold {
        FinHold {
            active: false,
            vip,
            ports,
            allowed: Default::default(),
            queue: None,
            queued: false,
            held: Vec::new(),
        }
    }

    /// Installs (or re-installs, empty) the hold; binds the queue first, so that no FIN meets
    /// the rule before somebody listens. The queue rule goes through iptables (its NFQUEUE
    /// target): nft's own `queue` expression is missing from some kernels (this lab's among
    /// them), while the xtables target runs through nftables' compat layer.
    pub async fn install(&mut self) -> Result<(), CommandError> {
        self.remove_rules().await;
        if self.queue.is_none() {
            match Queue::bind(QUEUE, COPY).await {
                Ok(q) => self.queue = Some(q),
                Err(e) => tracing::warn!(
                    error = %e,
                    "st-tcp: no NFQUEUE; confirmed FINs leave with the kernel's retransmission"
                ),
            }
        }
        if self.queue.is_some() {
            match self.install_queue_rules().await {
                Ok(()) => {
                    self.queued = true;
                    self.active = true;
                    self.allowed.clear();
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(
                        error = %Chain(&e),
                        "st-tcp: no iptables NFQUEUE rule; confirmed FINs leave with the kernel's retransmission"
                    );
                    self.remove_rules().await;
                    self.queue = None;
                }
            }
        }
        let ports = self
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let vip = self.vip;
        let script = format!(
            "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n\
             \x20 set fin_ok {{ type ipv4_addr . inet_service . inet_service; flags timeout; timeout 10m; }}\n\
             \x20 chain output {{\n\
             \x20   type filter hook output priority 0; policy accept;\n\
             \x20   ip saddr {vip} tcp sport {{ {ports} }} tcp flags & (fin | rst) != 0 ip daddr . tcp dport . tcp sport @fin_ok accept\n\
             \x20   ip saddr {vip} tcp sport {{ {ports} }} tcp flags & (fin | rst) != 0 drop\n\
             \x20 }}\n}}\n"
        );
        command::run("nft", &["-f", "-"], Some(&script)).await?;
        self.queued = false;
        self.active = true;
        self.allowed.clear();
        Ok(())
    }

    /// The chain `HALAB_STTCP`, jumped to from OUTPUT: FIN or RST from the service → queue.
    async fn install_queue_rules(&self) -> Result<(), CommandError> {
        let vip = self.vip.to_string();
        let ports = self
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let queue = QUEUE.to_string();
        command::run("iptables", &["-w", "-N", CHAIN], None).await?;
        for flag in ["FIN", "RST"] {
            command::run(
                "iptables",
                &[
                    "-w",
                    "-A",
                    CHAIN,
                    "-s",
                    &vip,
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--sports",
                    &ports,
                    "--tcp-flags",
                    flag,
                    flag,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &queue,
                ],
                None,
            )
            .await?;
        }
        command::run("iptables", &["-w", "-I", "OUTPUT", "-j", CHAIN], None).await
    }

    /// Removes whatever hold is installed (queue rules or the nft table), quietly.
    async fn remove_rules(&self) {
        let _ = command::run("iptables", &["-w", "-D", "OUTPUT", "-j", CHAIN], None).await;
        let _ = command::run("iptables", &["-w", "-F", CHAIN], None).await;
        let _ = command::run("iptables", &["-w", "-X", CHAIN], None).await;
        let _ = command::run("nft", &["delete", "table", "inet", TABLE], None).await;
    }

    /// Judges newly queued packets; true if one of them is now held.
    async fn on_packets(&mut self, msgs: Vec<Message>) -> bool {
        let mut held_one = false;
        for m in msgs {
            let Message::Packet(p) = m else { continue };
            let key = packet_key(&p.payload);
            let go = !self.active || key.is_none_or(|k| self.allowed.contains(&k));
            match key {
                Some(k) if !go => {
                    self.held.push((k, p.id));
                    held_one = true;
                }
                _ => self.judge(p.id, Verdict::Accept).await,
            }
        }
        held_one
    }

    async fn judge(&self, id: u32, v: Verdict) {
        if let Some(q) = &self.queue
            && let Err(e) = q.verdict(id, v).await
        {
            tracing::warn!(error = %e, id, "st-tcp: NFQUEUE verdict");
        }
    }

    /// Lets the FIN/RST of these connections go: those held now, and those to come.
    pub async fn allow(&mut self, keys: &[HoldKey]) -> Result<(), CommandError> {
        let new: Vec<_> = keys
            .iter()
            .filter(|k| !self.allowed.contains(*k))
            .copied()
            .collect();
        if new.is_empty() || !self.active {
            return Ok(());
        }
        self.allowed.extend(new.iter().copied());
        let (go, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(k, _)| self.allowed.contains(k));
        self.held = stay;
        for (_, id) in go {
            self.judge(id, Verdict::Accept).await;
        }
        if self.queued {
            return Ok(());
        }
        let elems = new
            .iter()
            .map(|(a, cp, p)| format!("{} . {cp} . {p}", Ipv4Addr::from(*a)))
            .collect::<Vec<_>>()
            .join(", ");
        command::run(
            "nft",
            &[
                "add",
                "element",
                "inet",
                TABLE,
                "fin_ok",
                &format!("{{ {elems} }}"),
            ],
            None,
        )
        .await
    }

    /// Removes whatever rules of a hold are in this namespace, this hold's or ones an earlier
    /// agent left (a power-off kills it before it can remove them).
    pub async fn remove_leftovers(&mut self) {
        self.remove_rules().await;
    }

    /// Removes the table and lets every held packet go.
    pub async fn release(&mut self) -> Result<(), CommandError> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        for (_, id) in std::mem::take(&mut self.held) {
            self.judge(id, Verdict::Accept).await;
        }
        self.remove_rules().await;
        Ok(())
    }
}

/// The backup's guard against resetting connections it is about to rebuild: between adding the
/// service address and rebuilding a connection, a client segment would find no socket and
/// the kernel would answer with a RST. The backup drops every RST from the service address on
/// its service ports while it runs (before a takeover it never sends from that address).
pub struct RstGuard {
    active: bool,
}

const RST_TABLE: &str = "halab_sttcp_rst";

impl RstGuard {
    pub async fn install(vip: Ipv4Addr, ports: &[u16]) -> Result<RstGuard, CommandError> {
        let ports = ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let script = format!(
            "table inet {RST_TABLE}\ndelete table inet {RST_TABLE}\ntable inet {RST_TABLE} {{\n\
             \x20 chain output {{\n\
             \x20   type filter hook output priority 0; policy accept;\n\
             \x20   ip saddr {vip} tcp sport {{ {ports} }} tcp flags & rst != 0 drop\n\
             \x20 }}\n}}\n"
        );
        command::run("nft", &["-f", "-"], Some(&script)).await?;
        Ok(RstGuard { active: true })
    }
}

impl Drop for RstGuard {
    fn drop(&mut self) {
        if self.active {
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "inet", RST_TABLE])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for FinHold {
    fn drop(&mut self) {
        if self.active {
            // Synchronous: the role is going away and nothing may stay behind.
            let quiet = |program: &str, args: &[&str]| {
                let _ = std::process::Command::new(program)
                    .args(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            if self.queued {
                quiet("iptables", &["-w", "-D", "OUTPUT", "-j", CHAIN]);
                quiet("iptables", &["-w", "-F", CHAIN]);
                quiet("iptables", &["-w", "-X", CHAIN]);
            } else {
                quiet("nft", &["delete", "table", "inet", TABLE]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_close_goes_only_where_the_application_wrote_what_the_replica_did() {
        let (a, b, c): (HoldKey, HoldKey, HoldKey) = (
            ([10, 0, 0, 9], 1, 7070),
            ([10, 0, 0, 9], 2, 7070),
            ([10, 0, 0, 9], 3, 7070),
        );
        let mut conf = Confirmations::default();
        let allowed = BTreeSet::from([c]);
        conf.confirm(a, 100, &allowed);
        conf.confirm(b, 500, &allowed);
        conf.confirm(c, 7, &allowed); // let go already
        let written = |k: &HoldKey| match k.1 {
            1 => Some(100),
            2 => Some(300),
            _ => None,
        };
        assert_eq!(conf.due(written), vec![a]);
        // b's application has not caught up (or closed early): still waiting.
        assert!(!conf.is_empty());
        assert_eq!(conf.due(|_| Some(300)), Vec::<HoldKey>::new());
        assert_eq!(conf.due(|_| Some(500)), vec![b]);
        assert!(conf.is_empty());
        // A connection that is gone is forgotten.
        conf.confirm(a, 1, &BTreeSet::new());
        assert!(conf.due(|_| None).is_empty());
        assert!(conf.is_empty());
    }
}
