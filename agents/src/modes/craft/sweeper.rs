//! The sweeper: removes, every [`SWEEP_EVERY`], the splices whose connections ended
//! ([`super::ended`]) from this host's data path and tells the other proxies to remove them
//! too.

use super::ended::{SWEEP_EVERY, expired};
use std::time::Duration;

/// Sweeps this host's data path every [`SWEEP_EVERY`] until `cancel`: removes what
/// [`expired`] names and tells the live peers to remove it too (best effort: a peer that does
/// not answer sweeps it itself, by its own idle limit).
pub async fn sweep(
    datapath: std::sync::Arc<std::sync::Mutex<super::datapath::Datapath>>,
    replication: Option<std::sync::Arc<super::proxy::Replication>>,
    linger: Duration,
    idle_limit: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY.min(linger));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let gone = {
            let mut dp = datapath.lock().unwrap_or_else(|p| p.into_inner());
            let views = match dp.splices() {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %crate::error::chain(&e), "craft: sweeping");
                    continue;
                }
            };
            let gone = expired(&views, halab_protocol::mono_ns(), linger, idle_limit);
            for pair in &gone {
                for f in pair {
                    if let Err(e) = dp.remove(*f) {
                        tracing::warn!(error = %crate::error::chain(&e), "craft: removing a splice");
                    }
                }
            }
            gone
        };
        let Some(r) = replication.as_ref() else {
            continue;
        };
        let live = r.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for pair in gone {
            let m = super::replica::Message::Remove {
                flows: [pair[0].into(), pair[1].into()],
            };
            if let Err(e) = r.peers.everywhere(&live, &m).await {
                tracing::warn!(error = %crate::error::chain(&e), "craft: telling the peers a splice ended");
            }
        }
    }
}
