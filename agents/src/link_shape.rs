//! The host's links shaped as its topology says (issue 15): each link's delay and jitter, by
//! sender, on the way in (delay lines, [`crate::link_delay`]), and its loss both ways (an
//! nftables table, the loss fault's mechanism). What the plan means is in
//! [`halab_protocol::link`]; the console computes it, this applies it.
//!
//! A [`LinkShape`] is held by the agent's session like a fault: replaced by the next
//! `shape-links` request and removed on every way out of the agent (the dead-man switch). An
//! agent killed with SIGKILL leaves its rules, which let packets pass undelayed
//! (`--queue-bypass`); a host powered on again has its firewall forgotten before its new agent
//! shapes it again.

use crate::error::chain;
use crate::faults::net::{self, NetError};
use crate::link_delay::{self, DelayLink, error::LinkDelayError, line::Jitter};
use halab_protocol::link::{IngressDelay, LineCount, LinkPlan, is_mac};
use std::collections::BTreeSet;
use thiserror::Error;

/// The nftables table of the links' loss (one per host: the faults' are `halab_fault_<id>`).
pub const LOSS_TABLE: &str = "halab_links";

#[derive(Debug, Error)]
pub enum ShapeError {
    #[error("link {0} is in the plan twice")]
    Twice(String),
    #[error("link {0} does not exist on this host")]
    NoSuchLink(String),
    #[error("link {interface}: `{mac}` is not a MAC address")]
    BadMac { interface: String, mac: String },
    #[error("link {0}: more than one delay for every other sender")]
    TwoDefaults(String),
    #[error("link {interface}: {count} jitters; a packet crosses two links, so at most two")]
    TooManyJitters { interface: String, count: usize },
    #[error(
        "link {interface}: jitter of ± {jitter_us} µs in all is more than the delay of {delay_us} µs"
    )]
    JitterOverDelay {
        interface: String,
        delay_us: u64,
        jitter_us: u64,
    },
    #[error("link {interface}: loss of {ppm} millionths is more than every packet")]
    LossOverAll { interface: String, ppm: u32 },
    #[error(
        "link {interface}: a delay fault (id {fault}) already delays its way in; revert it first"
    )]
    DelayFaultHeld { interface: String, fault: u64 },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("link {interface}: cannot start its delay line")]
    DelayLine {
        interface: String,
        #[source]
        source: LinkDelayError,
    },
    #[error("the thread shaping the links was lost")]
    ThreadLost,
}

/// One running delay line of the shape.
struct Line {
    interface: String,
    /// Whom it delays: MAC addresses, or every other sender.
    from: String,
    link: DelayLink,
}

/// How this agent has shaped its links: nothing, until a plan is applied.
#[derive(Default)]
pub struct LinkShape {
    lines: Vec<Line>,
    /// Whether [`LOSS_TABLE`] is loaded.
    loss_table: bool,
}

impl LinkShape {
    /// Shapes the links as `plans` says. Checks the whole plan first; on a failure half way,
    /// removes what it had set up, so that nothing of the plan stays.
    pub async fn apply(plans: &[LinkPlan], seed: u64) -> Result<(LinkShape, String), ShapeError> {
        check(plans)?;
        let existing = net::links().await?;
        if let Some(p) = plans
            .iter()
            .find(|p| !existing.iter().any(|l| l.name == p.interface))
        {
            return Err(ShapeError::NoSuchLink(p.interface.clone()));
        }
        let mut shape = LinkShape::default();
        match shape.set_up(plans, seed).await {
            Ok(detail) => Ok((shape, detail)),
            Err(e) => {
                let (_, problems) = shape.remove().await;
                for p in problems {
                    tracing::error!(problem = %p, "undoing a link shape that failed half way");
                }
                Err(e)
            }
        }
    }

    async fn set_up(&mut self, plans: &[LinkPlan], seed: u64) -> Result<String, ShapeError> {
        let mut details = Vec::new();
        let losses: Vec<(&str, u32)> = plans
            .iter()
            .filter(|p| p.loss_ppm > 0)
            .map(|p| (p.interface.as_str(), p.loss_ppm))
            .collect();
        if !losses.is_empty() {
            let script = net::link_loss_script(LOSS_TABLE, &losses)?;
            net::nft_load(LOSS_TABLE, &script).await?;
            self.loss_table = true;
            for (link, ppm) in &losses {
                details.push(format!(
                    "{link}: loss {} % each way (nftables table inet {LOSS_TABLE})",
                    f64::from(*ppm) / 10_000.0
                ));
            }
        }
        for (i, plan) in plans.iter().enumerate() {
            // Senders by name first: iptables takes a packet to the first queue whose rule
            // matches, so the rule for every other sender comes last.
            let mut delays: Vec<&IngressDelay> = plan
                .ingress
                .iter()
                .filter(|d| d.delay_us > 0 || d.jitter_us.iter().any(|j| *j > 0))
                .collect();
            delays.sort_by_key(|d| d.from_macs.is_empty());
            for (j, d) in delays.into_iter().enumerate() {
                let spec = link_delay::Spec {
                    interface: Some(plan.interface.clone()),
                    egress: false,
                    ingress: true,
                    stage: link_delay::Stage::Link,
                    source_macs: d.from_macs.clone(),
                    seed: seed ^ ((i as u64) << 40) ^ ((j as u64) << 20),
                    jitter: jitter_of(&d.jitter_us),
                    ..link_delay::Spec::new(d.delay_us.saturating_mul(1_000), 0)
                };
                let interface = plan.interface.clone();
                let link = tokio::task::spawn_blocking(move || DelayLink::start(&spec))
                    .await
                    .map_err(|_| ShapeError::ThreadLost)?
                    .map_err(|source| ShapeError::DelayLine {
                        interface: interface.clone(),
                        source,
                    })?;
                let from = if d.from_macs.is_empty() {
                    "every other sender".to_string()
                } else {
                    d.from_macs.join(", ")
                };
                let jitter: Vec<String> = d
                    .jitter_us
                    .iter()
                    .filter(|j| **j > 0)
                    .map(|j| format!(" ± {} ms", ms(*j)))
                    .collect();
                let queue = link
                    .queues()
                    .first()
                    .map(|(_, q)| q.to_string())
                    .unwrap_or_default();
                let detail = format!(
                    "{interface}: in from {from}: {} ms{} (delay line, NFQUEUE {queue})",
                    ms(d.delay_us),
                    jitter.concat()
                );
                self.lines.push(Line {
                    interface,
                    from,
                    link,
                });
                details.push(detail);
            }
        }
        Ok(if details.is_empty() {
            "links plain".to_string()
        } else {
            details.join("; ")
        })
    }

    /// Takes the shape down: the delay lines (each lets what it holds go), then the loss table.
    /// Returns what each line did and any problem.
    pub async fn remove(self) -> (String, Vec<String>) {
        let mut problems = Vec::new();
        let mut details = Vec::new();
        for line in self.lines {
            let Line {
                interface, link, ..
            } = line;
            match tokio::task::spawn_blocking(move || link.stop()).await {
                Ok(report) => {
                    problems.extend(report.problems);
                    details.extend(
                        report
                            .directions
                            .iter()
                            .map(|d| format!("{interface}: {d}")),
                    );
                }
                Err(e) => problems.push(format!("stopping the delay line on {interface}: {e}")),
            }
        }
        if self.loss_table {
            match net::nft_delete(LOSS_TABLE).await {
                Ok(()) => details.push(format!("nftables table inet {LOSS_TABLE} deleted")),
                Err(e) => problems.push(chain(&e)),
            }
        }
        (details.join("; "), problems)
    }

    /// What each line has done so far: its counters, and the kernel queue's own drops (read
    /// from `/proc/net/netfilter/nfnetlink_queue`, this process's namespace: the host's).
    pub fn counts(&self) -> Vec<LineCount> {
        let proc =
            std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").unwrap_or_default();
        self.lines
            .iter()
            .map(|l| {
                let (delayed, dropped) = l.link.live().iter().fold((0, 0), |(d, x), (_, c)| {
                    (d + c.released_packets, x + c.dropped_packets)
                });
                let kernel: u64 = l
                    .link
                    .queues()
                    .iter()
                    .filter_map(|(_, q)| crate::link_delay::stats::kernel_drops(&proc, *q))
                    .sum();
                LineCount {
                    interface: l.interface.clone(),
                    from: l.from.clone(),
                    delayed,
                    dropped: dropped + kernel,
                }
            })
            .collect()
    }
}

fn ms(us: u64) -> String {
    let s = format!("{:.3}", us as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn jitter_of(jitter_us: &[u64]) -> Jitter {
    let ns: Vec<u64> = jitter_us
        .iter()
        .filter(|j| **j > 0)
        .map(|j| j.saturating_mul(1_000))
        .collect();
    match ns.as_slice() {
        [] => Jitter::None,
        [one] => Jitter::Uniform { ns: *one },
        [a, b, ..] => Jitter::UniformSum { ns: [*a, *b] },
    }
}

/// The plan's own consistency, before anything is touched.
fn check(plans: &[LinkPlan]) -> Result<(), ShapeError> {
    let mut seen = BTreeSet::new();
    for p in plans {
        net::check_link_name(&p.interface)?;
        if !seen.insert(p.interface.as_str()) {
            return Err(ShapeError::Twice(p.interface.clone()));
        }
        if p.loss_ppm > 1_000_000 {
            return Err(ShapeError::LossOverAll {
                interface: p.interface.clone(),
                ppm: p.loss_ppm,
            });
        }
        if p.ingress.iter().filter(|d| d.from_macs.is_empty()).count() > 1 {
            return Err(ShapeError::TwoDefaults(p.interface.clone()));
        }
        for d in &p.ingress {
            if let Some(mac) = d.from_macs.iter().find(|m| !is_mac(m)) {
                return Err(ShapeError::BadMac {
                    interface: p.interface.clone(),
                    mac: mac.clone(),
                });
            }
            if d.jitter_us.len() > 2 {
                return Err(ShapeError::TooManyJitters {
                    interface: p.interface.clone(),
                    count: d.jitter_us.len(),
                });
            }
            let jitter_us: u64 = d.jitter_us.iter().sum();
            if jitter_us > d.delay_us {
                return Err(ShapeError::JitterOverDelay {
                    interface: p.interface.clone(),
                    delay_us: d.delay_us,
                    jitter_us,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(interface: &str, ingress: Vec<IngressDelay>) -> LinkPlan {
        LinkPlan {
            interface: interface.into(),
            loss_ppm: 0,
            ingress,
        }
    }

    fn delay(delay_us: u64, jitter_us: Vec<u64>, from: &[&str]) -> IngressDelay {
        IngressDelay {
            delay_us,
            jitter_us,
            from_macs: from.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn plans_are_checked_before_anything_is_touched() {
        let mac = "02:68:6c:00:01:00";
        assert!(check(&[plan("lan", vec![delay(20_000, vec![5_000], &[mac])])]).is_ok());
        let cases = [
            (vec![plan("lan", vec![]), plan("lan", vec![])], "twice"),
            (vec![plan("lan", vec![delay(1, vec![], &["zz"])])], "MAC"),
            (
                vec![plan(
                    "lan",
                    vec![delay(1, vec![], &[]), delay(2, vec![], &[])],
                )],
                "every other sender",
            ),
            (
                vec![plan("lan", vec![delay(10, vec![1, 2, 3], &[])])],
                "at most two",
            ),
            (
                vec![plan("lan", vec![delay(10_000, vec![6_000, 5_000], &[])])],
                "more than the delay",
            ),
            (vec![plan("-j", vec![])], "interface name"),
        ];
        for (plans, want) in cases {
            let e = check(&plans).unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let mut lossy = plan("lan", vec![]);
        lossy.loss_ppm = 1_000_001;
        assert!(check(&[lossy]).is_err());
    }

    #[test]
    fn jitters_become_the_lines_distribution() {
        assert_eq!(jitter_of(&[]), Jitter::None);
        assert_eq!(jitter_of(&[0, 0]), Jitter::None);
        assert_eq!(jitter_of(&[0, 5]), Jitter::Uniform { ns: 5_000 });
        assert_eq!(
            jitter_of(&[3, 4]),
            Jitter::UniformSum { ns: [3_000, 4_000] }
        );
        assert_eq!(ms(20_000), "20");
        assert_eq!(ms(1_500), "1.5");
    }
}
