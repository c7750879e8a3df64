//! A testbed's links set for a run (issue 15: an experiment's `[links]` and matrix values):
//! the provider's qdiscs at once, then every agent whose plan changed shapes its links anew,
//! and the run starts only when each has answered.

use super::handle::{Lab, WaitError};
use crate::testbed::TestbedError;
use crate::topology::LinkShape;
use halab_protocol::{AgentMsg, ConsoleMsg};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long the agents together may take to shape their links.
const SHAPE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    #[error("setting the links")]
    Testbed(#[from] TestbedError),
    #[error("host {host} could not shape its links: {error}")]
    Refused { host: String, error: String },
    #[error("waiting for host {host} to shape its links: {source}")]
    Wait {
        host: String,
        #[source]
        source: WaitError,
    },
}

/// Sets every host's links to `links`, unless they are so already. Messages that arrive
/// meanwhile are set aside for the owner. Returns each reshaped host's answer: how its links
/// are shaped now, and what its earlier shape did (each delay line's packets, drops, peak).
pub async fn set(
    lab: &mut Lab<'_>,
    links: &BTreeMap<String, BTreeMap<String, LinkShape>>,
) -> Result<Vec<(String, String)>, LinksError> {
    let mut answers = Vec::new();
    if lab.testbed.links() == *links {
        return Ok(answers);
    }
    let changed = lab.testbed.set_links(links).await?;
    // Ids far from the runner's fault ids; unique per request within this console.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
    let mut waiting: BTreeMap<u64, String> = BTreeMap::new();
    for (host, plans) in changed {
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lab.send(&host, ConsoleMsg::ShapeLinks { id, links: plans })
            .await?;
        waiting.insert(id, host);
    }
    let deadline = Instant::now() + SHAPE_TIMEOUT;
    while let Some((_, host)) = waiting.first_key_value() {
        let host = host.clone();
        let (from, msg) = lab
            .next_until(deadline)
            .await
            .map_err(|source| LinksError::Wait { host, source })?;
        match msg {
            AgentMsg::LinksShaped { id, detail } if waiting.contains_key(&id) => {
                tracing::info!(host = %from, %detail, "links shaped for the run");
                waiting.remove(&id);
                answers.push((from, detail));
            }
            AgentMsg::LinksFailed { id, error } if waiting.contains_key(&id) => {
                return Err(LinksError::Refused { host: from, error });
            }
            other => lab.set_aside(from, other),
        }
    }
    Ok(answers)
}
