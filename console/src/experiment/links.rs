//! An experiment's link settings (issue 15): `[links]` fixes some for every run, and `[matrix]`
//! varies them, over the topology's.
//!
//! ```toml
//! [links]
//! service = { rate = "10Mbit" }          # every host's link to network `service`
//! "client.service" = { delay = "20ms" }   # host `client`'s link to it
//!
//! [matrix]
//! "client.service.delay" = ["0ms", "20ms", "150ms"]
//! ```
//!
//! A link's setting for a run is, from the weakest: the topology's network, the topology's
//! host `links`, the experiment's `[links]` for the network, then for the host's link, then
//! the matrix cell's for the network, then for the host's link.

use crate::topology::link_units::{self, show_delay, show_rate};
use crate::topology::{LinkShape, Topology};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Which link a setting is for: every host's link to `network`, or only `host`'s.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LinkPath {
    pub host: Option<String>,
    pub network: String,
}

impl LinkPath {
    /// `network` or `host.network`, checked against the topology.
    pub fn parse(text: &str, topo: &Topology) -> Result<LinkPath, (String, String)> {
        let networks = || {
            topo.networks
                .iter()
                .map(|n| format!("`{}`", n.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (host, network) = match text.split_once('.') {
            Some((h, n)) => (Some(h), n),
            None => (None, text),
        };
        if topo.network(network).is_none() {
            let what = if host.is_some() {
                format!("`{network}` in `{text}`")
            } else {
                format!("`{network}`")
            };
            return Err((
                format!("{what} is not a network of the topology"),
                format!(
                    "name a network ({}), or a host's link as `<host>.<network>`",
                    networks()
                ),
            ));
        }
        if let Some(h) = host {
            let Some(found) = topo.hosts.iter().find(|x| x.name == h) else {
                return Err((
                    format!("`{h}` in `{text}` is not a host of the topology"),
                    "a host's link is written `<host>.<network>`, e.g. `\"client.service\"`"
                        .to_string(),
                ));
            };
            if !found.addresses.contains_key(network) {
                return Err((
                    format!("host `{h}` has no link to network `{network}`"),
                    "name a network the host has an address on".to_string(),
                ));
            }
        }
        Ok(LinkPath {
            host: host.map(str::to_string),
            network: network.to_string(),
        })
    }

    fn covers(&self, host: &str, network: &str) -> bool {
        self.network == network && self.host.as_deref().is_none_or(|h| h == host)
    }
}

impl fmt::Display for LinkPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) => write!(f, "{h}.{}", self.network),
            None => f.write_str(&self.network),
        }
    }
}

/// One setting of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkSetting {
    Rate,
    Delay,
    Jitter,
    Loss,
}

impl LinkSetting {
    pub const ALL: [LinkSetting; 4] = [
        LinkSetting::Rate,
        LinkSetting::Delay,
        LinkSetting::Jitter,
        LinkSetting::Loss,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkSetting::Rate => "rate",
            LinkSetting::Delay => "delay",
            LinkSetting::Jitter => "jitter",
            LinkSetting::Loss => "loss",
        }
    }

    pub fn from_name(name: &str) -> Option<LinkSetting> {
        LinkSetting::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The setting as written (`"100Mbit"`, `"20ms"`, `"0.5%"`), in its unit: bits per second,
    /// microseconds, millionths.
    pub fn parse(self, text: &str) -> Result<u64, link_units::Refusal> {
        let key = self.as_str();
        match self {
            LinkSetting::Rate => link_units::parse_rate(key, text),
            LinkSetting::Delay | LinkSetting::Jitter => link_units::parse_delay(key, text),
            LinkSetting::Loss => {
                link_units::parse_loss(key, text).map(|p| (p * 10_000.0).round() as u64)
            }
        }
    }

    /// An amount in this setting's unit, as people write it.
    pub fn show(self, amount: u64) -> String {
        match self {
            LinkSetting::Rate => show_rate(amount),
            LinkSetting::Delay | LinkSetting::Jitter => show_delay(amount),
            LinkSetting::Loss => format!("{}%", amount as f64 / 10_000.0),
        }
    }

    fn set(self, shape: &mut LinkShape, amount: u64) {
        match self {
            LinkSetting::Rate => shape.rate_bps = Some(amount),
            LinkSetting::Delay => shape.delay_us = Some(amount),
            LinkSetting::Jitter => shape.jitter_us = Some(amount),
            LinkSetting::Loss => shape.loss_ppm = Some(u32::try_from(amount).unwrap_or(u32::MAX)),
        }
    }
}

/// A `[matrix]` key that varies a link setting: `<network>.<setting>` or
/// `<host>.<network>.<setting>`. `None`: not a link key (the setting is not one).
pub fn split_matrix_key(key: &str) -> Option<(&str, LinkSetting)> {
    let (path, setting) = key.rsplit_once('.')?;
    Some((path, LinkSetting::from_name(setting)?))
}

/// Every host's links for a run (host → network → shape, only links that are not plain):
/// the topology's, then `fixed` (the experiment's `[links]`, each path's settings), then
/// `cell` (the matrix cell's link values). Within each layer a network's setting comes before
/// a host link's, so the host's wins.
pub fn resolve(
    topo: &Topology,
    fixed: &[(LinkPath, LinkShape)],
    cell: &[(LinkPath, LinkSetting, u64)],
) -> BTreeMap<String, BTreeMap<String, LinkShape>> {
    let mut out = BTreeMap::new();
    for h in &topo.hosts {
        let mut links = BTreeMap::new();
        for net in h.addresses.keys() {
            let mut shape = h.links.get(net).copied().unwrap_or_default();
            for host_level in [false, true] {
                for (path, over) in fixed {
                    if path.host.is_some() == host_level && path.covers(&h.name, net) {
                        shape = shape.overlaid(*over);
                    }
                }
            }
            for host_level in [false, true] {
                for (path, setting, amount) in cell {
                    if path.host.is_some() == host_level && path.covers(&h.name, net) {
                        setting.set(&mut shape, *amount);
                    }
                }
            }
            if !shape.is_plain() {
                links.insert(net.clone(), shape);
            }
        }
        if !links.is_empty() {
            out.insert(h.name.clone(), links);
        }
    }
    out
}

/// The first link of `links` whose jitter exceeds its delay, as `(host, network, message)`.
pub fn jitter_over_delay(
    links: &BTreeMap<String, BTreeMap<String, LinkShape>>,
) -> Option<(String, String, String)> {
    links.iter().find_map(|(host, nets)| {
        nets.iter().find_map(|(net, l)| {
            let (d, j) = (l.delay_us.unwrap_or(0), l.jitter_us.unwrap_or(0));
            (j > d).then(|| {
                (
                    host.clone(),
                    net.clone(),
                    format!(
                        "host {host}'s link to {net} would have a jitter of {} over a delay of {}",
                        show_delay(j),
                        show_delay(d)
                    ),
                )
            })
        })
    })
}

/// A link's settings as a record and a report show them: `rate 10Mbit, delay 20ms ± 5ms,
/// loss 0.5%`.
pub fn describe(l: &LinkShape) -> String {
    let mut parts = Vec::new();
    if let Some(r) = l.rate_bps {
        parts.push(format!("rate {}", show_rate(r)));
    }
    if l.delay_us.is_some() || l.jitter_us.is_some() {
        let jitter = l
            .jitter_us
            .filter(|j| *j > 0)
            .map(|j| format!(" ± {}", show_delay(j)))
            .unwrap_or_default();
        parts.push(format!(
            "delay {}{jitter}",
            show_delay(l.delay_us.unwrap_or(0))
        ));
    }
    if let Some(p) = l.loss_ppm {
        parts.push(format!("loss {}", LinkSetting::Loss.show(u64::from(p))));
    }
    parts.join(", ")
}

/// Every shaped link of a run as `host.network → settings`, for its record.
pub fn record_of(
    links: &BTreeMap<String, BTreeMap<String, LinkShape>>,
) -> BTreeMap<String, String> {
    links
        .iter()
        .flat_map(|(h, nets)| {
            nets.iter()
                .map(move |(n, l)| (format!("{h}.{n}"), describe(l)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/two-server.toml"),
        )
        .unwrap();
        crate::topology::parse_str(&text, std::path::Path::new("two-server.toml")).unwrap()
    }

    #[test]
    fn paths_name_a_network_or_a_hosts_link() {
        let t = topo();
        assert_eq!(
            LinkPath::parse("service", &t).unwrap(),
            LinkPath {
                host: None,
                network: "service".into()
            }
        );
        assert_eq!(
            LinkPath::parse("client.service", &t).unwrap().to_string(),
            "client.service"
        );
        for (bad, want) in [
            ("wan", "not a network"),
            ("nobody.service", "not a host"),
            ("client.heartbeat", "no link to network"),
        ] {
            let (msg, _) = LinkPath::parse(bad, &t).unwrap_err();
            assert!(msg.contains(want), "{bad}: {msg}");
        }
        assert_eq!(
            split_matrix_key("client.service.delay"),
            Some(("client.service", LinkSetting::Delay))
        );
        assert_eq!(split_matrix_key("size"), None);
        assert_eq!(split_matrix_key("service.speed"), None);
    }

    #[test]
    fn the_cell_beats_the_experiment_which_beats_the_topology_and_hosts_beat_networks() {
        let t = topo();
        let service = LinkPath::parse("service", &t).unwrap();
        let client = LinkPath::parse("client.service", &t).unwrap();
        let fixed = vec![
            (
                client.clone(),
                LinkShape {
                    delay_us: Some(5_000),
                    ..LinkShape::default()
                },
            ),
            (
                service.clone(),
                LinkShape {
                    rate_bps: Some(10_000_000),
                    delay_us: Some(1_000),
                    ..LinkShape::default()
                },
            ),
        ];
        let cell = vec![(client.clone(), LinkSetting::Delay, 150_000)];
        let links = resolve(&t, &fixed, &cell);
        let c = links["client"]["service"];
        assert_eq!((c.rate_bps, c.delay_us), (Some(10_000_000), Some(150_000)));
        let p = links["primary"]["service"];
        assert_eq!((p.rate_bps, p.delay_us), (Some(10_000_000), Some(1_000)));
        assert!(!links["primary"].contains_key("heartbeat"));
        assert_eq!(
            record_of(&links)["client.service"],
            "rate 10Mbit, delay 150ms"
        );
        // Without the cell the experiment's host link wins over its network setting.
        assert_eq!(
            resolve(&t, &fixed, &[])["client"]["service"].delay_us,
            Some(5_000)
        );
        let bad = resolve(&t, &[], &[(service, LinkSetting::Jitter, 2_000)]);
        assert!(jitter_over_delay(&bad).is_some());
    }
}
