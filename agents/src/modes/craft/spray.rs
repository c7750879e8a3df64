//! Stateless spraying of packets over the live proxies (thesis §4.5.2 and §4.7.1; the nftables
//! wiki's netdev direct-routing recipe), sans-IO: the nftables table that does it, as text for
//! `nft -f`, one transaction, so a pool change is one atomic update.
//!
//! Per packet, not per flow: `numgen inc` turns over the live proxies in runs of
//! [`RUN_LENGTH`] packets (the thesis's balancer sent 40 packets to a proxy before the next),
//! so one spliced connection's packets cross every live proxy, and a proxy's failure costs
//! each connection at most the packets sprayed at it before the pool changes. A per-flow hash
//! (`jhash`) would keep each connection on one proxy: simpler for TCP's ordering, but then a
//! proxy's failure would stall every connection hashed to it until detection, which is what
//! the replicated splice exists to avoid. Runs of 40 keep reordering to the run boundaries.
//!
//! Only the destination MAC address changes (and the source, to the sprayer's own, so that a
//! learning switch does not take the client's address for the sprayer's port); the service
//! address sits on every proxy without ARP, as in LVS direct routing.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Packets sent to one proxy before the next.
pub const RUN_LENGTH: u32 = 40;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A string that is not a MAC address (six hex bytes separated by colons).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address")]
pub struct NotAMac(pub String);

impl std::str::FromStr for Mac {
    type Err = NotAMac;
    fn from_str(s: &str) -> Result<Mac, NotAMac> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(NotAMac(s.to_string()));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16).map_err(|_| NotAMac(s.to_string()))?;
        }
        Ok(Mac(m))
    }
}

/// Where a sprayer sits and what it sprays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sprayer {
    /// The nftables table (netdev family) it owns.
    pub table: String,
    /// The interface the packets arrive on (ingress) or leave by (egress).
    pub device: String,
    pub hook: Hook,
    /// Packets to this address (and port, if any) are sprayed.
    pub daddr: Ipv4Addr,
    pub dport: Option<u16>,
    /// The sprayer's own MAC address on `device` (the rewritten source).
    pub own_mac: Mac,
}

/// Where in the sprayer's path the packets are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// As they arrive on the device, sent back out of it (the balancer: the service address's
    /// packets come in and leave by its one interface).
    IngressHairpin,
    /// As the host's own routing sends them out of the device (a gateway: the return path
    /// from the backends to the proxies' source address).
    Egress,
}

impl Sprayer {
    /// The whole table for `live` (in order): `nft -f` input that replaces the table in one
    /// transaction. With no proxy alive, the sprayed packets are dropped (their senders try
    /// again; a reset would end their connections).
    pub fn table(&self, live: &[Mac]) -> String {
        let mut out = String::new();
        // `add` then `delete` makes the delete succeed whether or not the table exists; the
        // whole file is one transaction.
        let _ = writeln!(out, "add table netdev {}", self.table);
        let _ = writeln!(out, "delete table netdev {}", self.table);
        let _ = writeln!(out, "table netdev {} {{", self.table);
        let hook = match self.hook {
            Hook::IngressHairpin => "ingress",
            Hook::Egress => "egress",
        };
        let _ = writeln!(out, "  chain spray {{");
        let _ = writeln!(
            out,
            "    type filter hook {hook} device \"{}\" priority 0; policy accept;",
            self.device
        );
        let mut matched = format!("ip daddr {}", self.daddr);
        if let Some(p) = self.dport {
            let _ = write!(matched, " tcp dport {p}");
        }
        if live.is_empty() {
            let _ = writeln!(out, "    {matched} drop");
        } else {
            let n = live.len() as u32;
            let runs: Vec<String> = live
                .iter()
                .enumerate()
                .map(|(i, mac)| {
                    let lo = i as u32 * RUN_LENGTH;
                    format!("{}-{} : {mac}", lo, lo + RUN_LENGTH - 1)
                })
                .collect();
            let pick = format!(
                "ether daddr set numgen inc mod {} map {{ {} }}",
                n * RUN_LENGTH,
                runs.join(", ")
            );
            match self.hook {
                Hook::IngressHairpin => {
                    let _ = writeln!(
                        out,
                        "    {matched} ether saddr set {} {pick} fwd to \"{}\"",
                        self.own_mac, self.device
                    );
                }
                Hook::Egress => {
                    let _ = writeln!(out, "    {matched} ether saddr set {} {pick}", self.own_mac);
                }
            }
        }
        let _ = writeln!(out, "  }}");
        let _ = writeln!(out, "}}");
        out
    }

    /// `nft -f` input that removes the table.
    pub fn remove(&self) -> String {
        format!(
            "add table netdev {t}\ndelete table netdev {t}\n",
            t = self.table
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb() -> Sprayer {
        Sprayer {
            table: "halab_craft_lb".into(),
            device: "front".into(),
            hook: Hook::IngressHairpin,
            daddr: Ipv4Addr::new(10, 40, 0, 100),
            dport: Some(8080),
            own_mac: "02:68:6c:00:01:00".parse().unwrap(),
        }
    }

    #[test]
    fn two_live_proxies_get_runs_of_forty() {
        let macs = [
            "02:68:6c:00:02:00".parse().unwrap(),
            "02:68:6c:00:03:00".parse().unwrap(),
        ];
        let t = lb().table(&macs);
        assert!(
            t.contains(
                "ip daddr 10.40.0.100 tcp dport 8080 ether saddr set 02:68:6c:00:01:00 ether daddr \
             set numgen inc mod 80 map { 0-39 : 02:68:6c:00:02:00, 40-79 : 02:68:6c:00:03:00 } \
             fwd to \"front\""
            ),
            "{t}"
        );
        assert!(
            t.starts_with("add table netdev halab_craft_lb\ndelete table netdev halab_craft_lb\n")
        );
    }

    #[test]
    fn no_live_proxy_drops_instead_of_resetting() {
        let t = lb().table(&[]);
        assert!(
            t.contains("ip daddr 10.40.0.100 tcp dport 8080 drop"),
            "{t}"
        );
        assert!(!t.contains("numgen"));
    }

    #[test]
    fn macs_round_trip_and_refuse_junk() {
        let m: Mac = "02:ab:00:10:ff:09".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:00:10:ff:09");
        assert!("02:ab:00:10:ff".parse::<Mac>().is_err());
        assert!("zz:ab:00:10:ff:09".parse::<Mac>().is_err());
    }
}
