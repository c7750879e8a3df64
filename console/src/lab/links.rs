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
    let requests = changed
        .into_iter()
        .map(|(host, plans)| (host, move |id| ConsoleMsg::ShapeLinks { id, links: plans }))
        .collect();
    for (host, answer) in ask_each(lab, requests, SHAPE_TIMEOUT, |msg| match msg {
        AgentMsg::LinksShaped { id, detail } => Some((*id, Ok(detail.clone()))),
        AgentMsg::LinksFailed { id, error } => Some((*id, Err(error.clone()))),
        _ => None,
    })
    .await?
    {
        match answer {
            Ok(detail) => {
                tracing::info!(%host, %detail, "links shaped for the run");
                answers.push((host, detail));
            }
            Err(error) => return Err(LinksError::Refused { host, error }),
        }
    }
    Ok(answers)
}

/// What the delay lines of the links have done so far, each host's (hosts powered off, or whose
/// links no delay line shapes, answer nothing or nothing much). Messages that arrive meanwhile
/// are set aside for the owner.
pub async fn counts(
    lab: &mut Lab<'_>,
) -> Result<BTreeMap<String, Vec<halab_protocol::LineCount>>, LinksError> {
    let mut out = BTreeMap::new();
    let delayed = lab
        .testbed
        .links()
        .values()
        .flat_map(|nets| nets.values())
        .any(|l| l.delays());
    if !delayed {
        return Ok(out);
    }
    let requests = lab
        .testbed
        .snapshot()
        .hosts
        .into_iter()
        .filter(|h| h.state == crate::state::HostState::Connected)
        .map(|h| (h.name, |id| ConsoleMsg::LinkStats { id }))
        .collect();
    for (host, lines) in ask_each(lab, requests, COUNT_TIMEOUT, |msg| match msg {
        AgentMsg::LinkStats { id, lines } => Some((*id, lines.clone())),
        _ => None,
    })
    .await?
    {
        out.insert(host, lines);
    }
    Ok(out)
}

/// Sends each host its request (made from a fresh id) and waits, `timeout` at most in all, for
/// the answer `answer` recognises by that id; other messages are set aside for the owner.
/// The answers in arrival order.
async fn ask_each<T>(
    lab: &mut Lab<'_>,
    requests: Vec<(String, impl FnOnce(u64) -> ConsoleMsg)>,
    timeout: Duration,
    answer: impl Fn(&AgentMsg) -> Option<(u64, T)>,
) -> Result<Vec<(String, T)>, LinksError> {
    // Ids far from the runner's fault ids; unique per request within this console.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
    let mut waiting: BTreeMap<u64, String> = BTreeMap::new();
    for (host, request) in requests {
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lab.send(&host, request(id)).await?;
        waiting.insert(id, host);
    }
    let deadline = Instant::now() + timeout;
    let mut answers = Vec::new();
    while let Some((_, host)) = waiting.first_key_value() {
        let host = host.clone();
        let (from, msg) = lab
            .next_until(deadline)
            .await
            .map_err(|source| LinksError::Wait { host, source })?;
        match answer(&msg) {
            Some((id, t)) if waiting.remove(&id).is_some() => answers.push((from, t)),
            _ => lab.set_aside(from, msg),
        }
    }
    Ok(answers)
}

/// How long the agents together may take to say what their delay lines did.
const COUNT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the delay lines did between two [`counts`]: `host.interface from <senders>` →
/// (delayed, dropped). A line whose count went down belongs to an agent that restarted (a
/// power cycle) and counts from its start.
pub fn counted_between(
    before: &BTreeMap<String, Vec<halab_protocol::LineCount>>,
    after: &BTreeMap<String, Vec<halab_protocol::LineCount>>,
) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for (host, lines) in after {
        for l in lines {
            let was = before
                .get(host)
                .and_then(|b| {
                    b.iter()
                        .find(|x| x.interface == l.interface && x.from == l.from)
                })
                .filter(|b| b.delayed <= l.delayed && b.dropped <= l.dropped);
            let (d0, x0) = was.map_or((0, 0), |b| (b.delayed, b.dropped));
            out.insert(
                format!("{host}.{} from {}", l.interface, l.from),
                (l.delayed - d0, l.dropped - x0),
            );
        }
    }
    out
}
