//! The balancer role's work on its host (thesis §4.5.2, §4.7.1): its health checks of the
//! proxies ([`super::health`]) and, on every pool change, the sprayer's nftables table
//! replaced in one transaction ([`super::spray`]). The table is removed when the balancer
//! stops.

use super::health::{self, Target};
use super::pool::Change;
use super::spray::{Mac, Sprayer};
use halab_protocol::sealed::Key;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// One proxy as the balancer knows it.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub target: Target,
    /// Its MAC address on the service network (where the sprayer sends its packets).
    pub mac: Mac,
}

/// What the balancer needs.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    pub sprayer: Sprayer,
    pub proxies: Vec<Proxy>,
    pub interval: Duration,
    pub missed: u32,
}

/// What the balancer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A proxy left the pool (T_detect: `at_ns`, after `silent_ns` without an answer); the
    /// sprayer took the change at `applied_ns`.
    Down {
        proxy: String,
        silent_ns: u64,
        at_ns: u64,
        applied_ns: u64,
        live: Vec<String>,
    },
    /// A proxy (re)joined the pool.
    Up {
        proxy: String,
        at_ns: u64,
        applied_ns: u64,
        live: Vec<String>,
    },
    /// The sprayer's table could not be changed.
    Failed { why: String, at_ns: u64 },
}

/// Why the sprayer's table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the table: {0}")]
    Refused(String),
}

/// Runs `nft -f -` with `text`: one transaction.
pub async fn nft(text: &str) -> Result<(), NftError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().await.map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Probes the proxies and keeps the sprayer's table to the live ones until `cancel`, then
/// removes the table. Every pool change goes to `report`.
pub async fn run(
    cfg: BalancerConfig,
    key: Key,
    cancel: CancellationToken,
    mut report: impl FnMut(Report),
) -> Result<(), NftError> {
    // Nobody is in the pool before answering: the service's packets are dropped until then.
    nft(&cfg.sprayer.table(&[])).await?;
    let sock = UdpSocket::bind(("0.0.0.0", 0))
        .await
        .map_err(NftError::Spawn)?;
    let targets: Vec<Target> = cfg.proxies.iter().map(|p| p.target.clone()).collect();
    let macs: Vec<(String, Mac)> = cfg
        .proxies
        .iter()
        .map(|p| (p.target.name.clone(), p.mac))
        .collect();
    let (tx, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let probing = health::probe(
        sock,
        key,
        targets,
        cfg.interval,
        cfg.missed,
        cancel.clone(),
        tx,
    );
    tokio::pin!(probing);
    loop {
        let u = tokio::select! {
            _ = &mut probing => break,
            u = updates.recv() => match u {
                Some(u) => u,
                None => break,
            },
        };
        let live_macs: Vec<Mac> = macs
            .iter()
            .filter(|(n, _)| u.live.contains(n))
            .map(|(_, m)| *m)
            .collect();
        if let Err(e) = nft(&cfg.sprayer.table(&live_macs)).await {
            report(Report::Failed {
                why: crate::error::chain(&e),
                at_ns: halab_protocol::mono_ns(),
            });
            continue;
        }
        let applied_ns = halab_protocol::mono_ns();
        report(match u.change {
            Change::Down { member, silent_ns } => Report::Down {
                proxy: member,
                silent_ns,
                at_ns: u.at_ns,
                applied_ns,
                live: u.live,
            },
            Change::Up { member } => Report::Up {
                proxy: member,
                at_ns: u.at_ns,
                applied_ns,
                live: u.live,
            },
        });
    }
    nft(&cfg.sprayer.remove()).await
}
