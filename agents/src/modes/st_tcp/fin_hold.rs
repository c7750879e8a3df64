//! The primary's FIN hold (thesis §3.7.4, MaxDelayFIN): an nftables table in the primary's
//! namespace drops every FIN or RST its service sends, except for connections the backup has
//! confirmed (its replica closed too). A crashing application's FIN therefore never reaches
//! the client before the backup has decided; a normal close is confirmed by the backup's
//! replica, which runs ahead of the primary, before the primary's application gets there.
//! The table goes when the hold is released (no backup: non-fault-tolerant mode) or dropped.

use std::net::Ipv4Addr;

const TABLE: &str = "halab_sttcp";

/// What the primary's loop asks of the FIN hold; the nft commands run in the hold's own task,
/// so that a slow `nft` never delays a heartbeat.
pub enum HoldCmd {
    Install,
    Allow(Vec<([u8; 4], u16, u16)>),
    Release,
}

/// The hold's state as the heartbeat sees it: whether it is on, and what it lets go.
#[derive(Debug, Default)]
pub struct HoldView {
    pub active: bool,
    pub allowed: std::collections::BTreeSet<([u8; 4], u16, u16)>,
}

/// Runs the hold until `rx` closes; the table goes with it.
pub async fn run(
    mut hold: FinHold,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<HoldCmd>,
    view: std::sync::Arc<std::sync::Mutex<HoldView>>,
) {
    while let Some(cmd) = rx.recv().await {
        let r = match cmd {
            HoldCmd::Install => hold.install().await,
            HoldCmd::Allow(keys) => hold.allow(&keys).await,
            HoldCmd::Release => hold.release().await,
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "st-tcp: FIN hold");
        }
        let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
        v.active = hold.active;
        v.allowed = hold.allowed.clone();
    }
    if let Err(e) = hold.release().await {
        tracing::warn!(error = %e, "st-tcp: FIN hold not removed");
    }
}

pub struct FinHold {
    active: bool,
    vip: Ipv4Addr,
    ports: Vec<u16>,
    /// Connections allowed to close (client, client port, port).
    allowed: std::collections::BTreeSet<([u8; 4], u16, u16)>,
}

impl FinHold {
    pub fn new(vip: Ipv4Addr, ports: Vec<u16>) -> FinHold {
        FinHold {
            active: false,
            vip,
            ports,
            allowed: Default::default(),
        }
    }

    /// Installs (or re-installs, empty) the table.
    pub async fn install(&mut self) -> Result<(), String> {
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
        super::command("nft", &["-f", "-"], Some(&script)).await?;
        self.active = true;
        self.allowed.clear();
        Ok(())
    }

    /// Lets the FIN/RST of these connections go.
    pub async fn allow(&mut self, keys: &[([u8; 4], u16, u16)]) -> Result<(), String> {
        let new: Vec<_> = keys
            .iter()
            .filter(|k| !self.allowed.contains(*k))
            .copied()
            .collect();
        if new.is_empty() || !self.active {
            return Ok(());
        }
        let elems = new
            .iter()
            .map(|(a, cp, p)| format!("{} . {cp} . {p}", Ipv4Addr::from(*a)))
            .collect::<Vec<_>>()
            .join(", ");
        super::command(
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
        .await?;
        self.allowed.extend(new);
        Ok(())
    }

    /// Removes the table: every FIN/RST goes again.
    pub async fn release(&mut self) -> Result<(), String> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        super::command("nft", &["delete", "table", "inet", TABLE], None).await
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
    pub async fn install(vip: Ipv4Addr, ports: &[u16]) -> Result<RstGuard, String> {
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
        super::command("nft", &["-f", "-"], Some(&script)).await?;
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
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "inet", TABLE])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
