//! The balancer's health checks of the proxies (thesis §4.5.2): every interval the balancer
//! sends each proxy a probe, the proxy's process answers it, and [`super::pool::Pool`] turns
//! the answers into pool changes. Probes and answers are sealed with the testbed's key, so a
//! host that is not a proxy cannot keep a dead one in the pool.
//!
//! The answer comes from the proxy's own process: a killed or hung proxy stops answering even
//! though its host's kernel (and the data path in it) still runs.

use super::pool::{Change, Pool};
use halab_protocol::sealed::Key;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const PROBE: &[u8; 4] = b"HCP1";
const ANSWER: &[u8; 4] = b"HCA1";

pub use halab_protocol::modes::craft::HEALTH_PORT;

/// How often the pool's verdict is taken (a check half an interval late would add up to that
/// much to every detection).
pub const CHECK_EVERY: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    from: String,
    seq: u64,
}

fn seal<T: Serialize>(key: &Key, magic: &[u8; 4], v: &T) -> Vec<u8> {
    // Plain structs always serialise.
    key.seal(magic, &serde_json::to_vec(v).unwrap_or_default())
}

fn open<T: for<'de> Deserialize<'de>>(key: &Key, magic: &[u8; 4], d: &[u8]) -> Option<T> {
    serde_json::from_slice(key.open(magic, d).ok()?).ok()
}

/// A proxy's side: answers every sealed probe on `sock` with its `name`, until `cancel`, while
/// every one of `links` is up: a proxy that cannot reach one side cannot carry the other
/// side's packets either, so it must leave both sprayers' pools.
pub async fn answer(
    sock: UdpSocket,
    key: Key,
    name: String,
    links: Vec<String>,
    cancel: CancellationToken,
) {
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let Some(p) = open::<Probe>(&key, PROBE, &buf[..n]) else { continue };
                if !links.iter().all(|l| crate::iface::link_up(l)) {
                    continue;
                }
                let a = Answer { from: name.clone(), seq: p.seq };
                let _ = sock.send_to(&seal(&key, ANSWER, &a), from).await;
            }
        }
    }
}

/// One proxy as the balancer probes it.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
}

/// A pool change with the pool after it, at `at_ns` (T_detect for a proxy that left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUpdate {
    pub change: Change,
    pub live: Vec<String>,
    pub at_ns: u64,
}

/// The balancer's side: probes `targets` every `interval`, and sends every pool change to
/// `updates`, until `cancel` (or until nobody listens).
pub async fn probe(
    sock: UdpSocket,
    key: Key,
    targets: Vec<Target>,
    interval: Duration,
    missed: u32,
    cancel: CancellationToken,
    updates: tokio::sync::mpsc::UnboundedSender<PoolUpdate>,
) {
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let mut pool = Pool::new(&names, interval.as_millis() as u64, missed);
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(CHECK_EVERY.min(interval));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {
                seq += 1;
                let p = seal(&key, PROBE, &Probe { seq });
                for t in &targets {
                    // A probe that cannot leave is a missed answer, nothing more.
                    let _ = sock.send_to(&p, t.addr).await;
                }
            }
            _ = check.tick() => {
                // Answers that arrived while the loop was busy count before the verdict.
                while let Ok((n, _)) = sock.try_recv_from(&mut buf) {
                    if let Some(c) = take_answer(&key, &mut pool, &buf[..n])
                        && !send(&updates, &pool, c)
                    {
                        return;
                    }
                }
                for c in pool.tick(halab_protocol::mono_ns()) {
                    if !send(&updates, &pool, c) {
                        return;
                    }
                }
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                if let Some(c) = take_answer(&key, &mut pool, &buf[..n])
                    && !send(&updates, &pool, c)
                {
                    return;
                }
            }
        }
    }
}

/// Hands a change on; false once nobody listens.
fn send(
    updates: &tokio::sync::mpsc::UnboundedSender<PoolUpdate>,
    pool: &Pool,
    change: Change,
) -> bool {
    let live = pool.live().iter().map(|s| s.to_string()).collect();
    updates
        .send(PoolUpdate {
            change,
            live,
            at_ns: halab_protocol::mono_ns(),
        })
        .is_ok()
}

fn take_answer(key: &Key, pool: &mut Pool, d: &[u8]) -> Option<Change> {
    let a = open::<Answer>(key, ANSWER, d)?;
    pool.on_answer(&a.from, halab_protocol::mono_ns())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sealed_and_probes_cannot_pass_for_answers() {
        let key = Key::from_hex("00112233445566778899aabbccddeeff").unwrap();
        let a = seal(
            &key,
            ANSWER,
            &Answer {
                from: "p1".into(),
                seq: 3,
            },
        );
        assert_eq!(
            open::<Answer>(&key, ANSWER, &a),
            Some(Answer {
                from: "p1".into(),
                seq: 3
            })
        );
        let p = seal(&key, PROBE, &Probe { seq: 3 });
        assert_eq!(open::<Answer>(&key, ANSWER, &p), None);
        let other = Key::from_hex("ffeeddccbbaa99887766554433221100").unwrap();
        assert_eq!(open::<Answer>(&other, ANSWER, &a), None);
    }
}
