//! From a topology's links (rate, delay, jitter, loss per host per network) to what each
//! host's agent applies: its [`LinkPlan`]s (the meaning is in [`halab_protocol::link`]).
//!
//! Mininet's meaning: a packet from S to R on network N crosses S's link to N and R's, so it
//! waits d(S) + d(R), each ± its link's jitter, and each link drops its share. The agent of R
//! applies the whole delay on R's way in, by sender MAC address: one delay line per distinct
//! delay, the senders whose own link adds nothing falling to the line "for every other sender"
//! (R's delay alone). Loss stays on each host's own link, both ways: a packet crosses two
//! links, each dropping its share.

use super::model::{LinkShape, Topology};
use halab_protocol::link::{IngressDelay, LinkPlan};
use std::collections::BTreeMap;

/// The link plans of host `host_index` (its links that need the agent: delay, jitter or loss),
/// `mac(host_index, network_index)` naming each host's MAC address on each network. With
/// `delays` false the provider delays the links (netem) and the plans carry only the loss.
pub fn plans_of(
    topo: &Topology,
    host_index: usize,
    mac: impl Fn(usize, usize) -> String,
    delays: bool,
) -> Vec<LinkPlan> {
    let Some(receiver) = topo.hosts.get(host_index) else {
        return Vec::new();
    };
    let mut plans = Vec::new();
    for (ni, net) in topo.networks.iter().enumerate() {
        if !receiver.addresses.contains_key(&net.name) {
            continue;
        }
        let own = receiver.links.get(&net.name).copied().unwrap_or_default();
        let ingress = if delays {
            way_in(topo, host_index, ni, &own, &mac)
        } else {
            Vec::new()
        };
        let plan = LinkPlan {
            interface: net.name.clone(),
            loss_ppm: own.loss_ppm.unwrap_or(0),
            ingress,
        };
        if !plan.is_plain() {
            plans.push(plan);
        }
    }
    plans
}

/// What enters host `host_index` through its link to network `ni` (its own link `own`) waits,
/// by sender: the senders whose own link adds the same, together; every other sender, its own
/// link's delay alone.
fn way_in(
    topo: &Topology,
    host_index: usize,
    ni: usize,
    own: &LinkShape,
    mac: &impl Fn(usize, usize) -> String,
) -> Vec<IngressDelay> {
    let net = &topo.networks[ni].name;
    let (own_delay, own_jitter) = (own.delay_us.unwrap_or(0), own.jitter_us.unwrap_or(0));
    let mut by_added: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for (si, sender) in topo.hosts.iter().enumerate() {
        if si == host_index || !sender.addresses.contains_key(net) {
            continue;
        }
        let theirs = sender.links.get(net).copied().unwrap_or_default();
        let added = (theirs.delay_us.unwrap_or(0), theirs.jitter_us.unwrap_or(0));
        if added != (0, 0) {
            by_added.entry(added).or_default().push(mac(si, ni));
        }
    }
    let mut ingress: Vec<IngressDelay> = by_added
        .into_iter()
        .map(|((delay, jitter), macs)| IngressDelay {
            delay_us: delay + own_delay,
            jitter_us: [jitter, own_jitter]
                .into_iter()
                .filter(|j| *j > 0)
                .collect(),
            from_macs: macs,
        })
        .collect();
    if own.delays() {
        ingress.push(IngressDelay {
            delay_us: own_delay,
            jitter_us: [own_jitter].into_iter().filter(|j| *j > 0).collect(),
            from_macs: Vec::new(),
        });
    }
    ingress
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::parse_str;

    fn mac(h: usize, n: usize) -> String {
        format!("02:00:00:00:{h:02x}:{n:02x}")
    }

    fn topo(extra_net: &str, client_links: &str) -> Topology {
        let src = format!(
            r#"
name = "lp"
service_address = "10.0.0.100"
[run]
mode = "none"
[[networks]]
name = "lan"
subnet = "10.0.0.0/24"
{extra_net}
[[hosts]]
name = "client"
roles = ["client"]
addresses = {{ lan = "10.0.0.10" }}
{client_links}
[[hosts]]
name = "primary"
roles = ["primary"]
addresses = {{ lan = "10.0.0.1" }}
[[hosts]]
name = "backup"
roles = ["backup"]
addresses = {{ lan = "10.0.0.2" }}
"#
        );
        parse_str(&src, std::path::Path::new("lp.toml")).unwrap()
    }

    /// The issue's case: the client's link 20 ms ± 5, the servers' none. Each server delays
    /// what comes from the client by 20 ms ± 5 and nothing else; the client delays everything
    /// it receives by 20 ms ± 5 (its own link), whoever sent it.
    #[test]
    fn a_delayed_client_link_is_waited_once_each_way() {
        let t = topo(
            "",
            r#"links = { lan = { delay = "20ms", jitter = "5ms" } }"#,
        );
        let client = plans_of(&t, 0, mac, true);
        assert_eq!(
            client,
            vec![LinkPlan {
                interface: "lan".into(),
                loss_ppm: 0,
                ingress: vec![IngressDelay {
                    delay_us: 20_000,
                    jitter_us: vec![5_000],
                    from_macs: vec![],
                }],
            }]
        );
        let primary = plans_of(&t, 1, mac, true);
        assert_eq!(
            primary,
            vec![LinkPlan {
                interface: "lan".into(),
                loss_ppm: 0,
                ingress: vec![IngressDelay {
                    delay_us: 20_000,
                    jitter_us: vec![5_000],
                    from_macs: vec![mac(0, 0)],
                }],
            }]
        );
        assert!(t.hosts[0].links["lan"].delays());
    }

    /// Every link 10 ms (the network's setting): between any two hosts 20 ms each way, so a
    /// receiver's line "for every other sender" (10) would be wrong for its peers: each
    /// peer is named, with 20 ms and both jitters.
    #[test]
    fn a_network_wide_delay_adds_both_ends_and_loss_stays_per_link() {
        let t = topo(
            r#"delay = "10ms"
jitter = "1ms"
loss = "1%""#,
            "",
        );
        let p = plans_of(&t, 2, mac, true);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].loss_ppm, 10_000);
        // netem delays on the links themselves: the agent keeps only the loss.
        let by_netem = plans_of(&t, 2, mac, false);
        assert_eq!(by_netem.len(), 1);
        assert!(by_netem[0].ingress.is_empty() && by_netem[0].loss_ppm == 10_000);
        assert_eq!(
            p[0].ingress,
            vec![
                IngressDelay {
                    delay_us: 20_000,
                    jitter_us: vec![1_000, 1_000],
                    from_macs: vec![mac(0, 0), mac(1, 0)],
                },
                IngressDelay {
                    delay_us: 10_000,
                    jitter_us: vec![1_000],
                    from_macs: vec![],
                },
            ]
        );
    }

    #[test]
    fn rate_alone_needs_no_agent() {
        let t = topo(r#"rate = "100Mbit""#, "");
        assert!(
            t.hosts
                .iter()
                .all(|h| h.links.values().all(|l| !l.delays()))
        );
        assert!((0..3).all(|h| plans_of(&t, h, mac, true).is_empty()));
    }
}
