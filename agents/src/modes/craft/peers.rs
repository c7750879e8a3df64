//! A proxy's view of the other proxies: it probes them as the balancer does
//! ([`super::health`]) and keeps two things to the live ones: the splice listeners a new splice
//! is replicated to (a dead peer would hold every splice up for the replication's time limit)
//! and the packet redirector's live set (a connection not yet spliced must not be handed to a
//! dead proxy). Every proxy derives the same set from the same fixed order, so their
//! redirectors agree once their checks do.

use super::datapath::Datapath;
use super::health::{self, Target};
use super::proxy::Replication;
use halab_protocol::sealed::Key;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Another proxy, as this one reaches it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its index in the proxies' fixed order.
    pub index: usize,
    /// Where it answers health checks.
    pub health: Target,
    /// Its splice listener.
    pub splices: SocketAddr,
}

/// Probes `peers` until `cancel`; this proxy is `me` in the fixed order. `always`: splice
/// listeners that are replicated to whatever the checks say (a backend's split splice).
#[allow(clippy::too_many_arguments)] // one call site per proxy; a struct would only rename them
pub async fn watch(
    me: usize,
    peers: Vec<Peer>,
    always: Vec<SocketAddr>,
    datapath: Arc<Mutex<Datapath>>,
    replication: Arc<Replication>,
    key: Key,
    interval: Duration,
    missed: u32,
    cancel: CancellationToken,
) {
    let Ok(sock) = UdpSocket::bind(("0.0.0.0", 0)).await else {
        tracing::warn!("craft: no socket to probe the other proxies");
        return;
    };
    let targets: Vec<Target> = peers.iter().map(|p| p.health.clone()).collect();
    let (tx, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let probing = health::probe(sock, key, targets, interval, missed, cancel, tx);
    tokio::pin!(probing);
    loop {
        let u = tokio::select! {
            _ = &mut probing => return,
            u = updates.recv() => match u {
                Some(u) => u,
                None => return,
            },
        };
        let alive: Vec<&Peer> = peers
            .iter()
            .filter(|p| u.live.contains(&p.health.name))
            .collect();
        let mut listeners: Vec<SocketAddr> = alive.iter().map(|p| p.splices).collect();
        listeners.extend(always.iter().copied());
        *replication.live.lock().unwrap_or_else(|p| p.into_inner()) = listeners;
        let mut indexes: Vec<usize> = alive.iter().map(|p| p.index).collect();
        indexes.push(me);
        indexes.sort_unstable();
        let mut dp = datapath.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = dp.set_live(&indexes) {
            tracing::warn!(error = %crate::error::chain(&e), "craft: the redirector's live set");
        }
    }
}
