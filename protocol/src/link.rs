//! How the console asks an agent to shape its host's links beyond their rate (issue 15): the
//! delay, jitter and loss a topology gives them. The rate is the provider's (a token bucket on
//! each end of the link); these are the agent's, so that they go with it (the dead-man switch)
//! and come back with it (a host powered on is shaped again when its agent greets the console).
//!
//! Mininet's meaning: a link's delay is waited by every packet crossing that link, in each
//! direction. A packet from S to R crosses S's link and R's, so it waits d(S) + d(R). The agent
//! of R applies both on R's way in, matching the sender by its MAC address (the last hop's:
//! a router's for a packet it forwards), because a host's own outgoing packets held in user
//! space stay charged to their sockets and throttle its TCP (see the agent's `link_delay`).

use serde::{Deserialize, Serialize};

/// One of the host's links, shaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPlan {
    /// The host's interface on the network (provider local names it after the network).
    pub interface: String,
    /// Random loss in millionths, in each direction of this link (the loss fault's nftables
    /// mechanism, on the interface).
    #[serde(default)]
    pub loss_ppm: u32,
    /// What enters through the interface waits this, by sender. A sender no entry names waits
    /// the entry with no `from_macs`, if there is one, else nothing.
    #[serde(default)]
    pub ingress: Vec<IngressDelay>,
}

/// One delay on a link's way in: for the senders `from_macs` (none: every other sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressDelay {
    /// The sender's link's delay plus the receiver's, in µs.
    pub delay_us: u64,
    /// Each link's jitter on the way (the sender's, the receiver's; zeros left out), µs: the
    /// packet's delay moves by an independent uniform draw in ± each.
    #[serde(default)]
    pub jitter_us: Vec<u64>,
    /// Source MAC addresses (`aa:bb:cc:dd:ee:ff`) this delay is for; empty: any sender not
    /// named by another entry.
    #[serde(default)]
    pub from_macs: Vec<String>,
}

/// What one delay line of the host's links has done since the links were shaped: packets
/// delayed (let go) and dropped (the line full, or the kernel's queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineCount {
    pub interface: String,
    /// The senders it delays: their MAC addresses, or `every other sender`.
    pub from: String,
    pub delayed: u64,
    pub dropped: u64,
}

impl LinkPlan {
    /// Whether this plan changes nothing on its link.
    pub fn is_plain(&self) -> bool {
        self.loss_ppm == 0
            && self
                .ingress
                .iter()
                .all(|d| d.delay_us == 0 && d.jitter_us.iter().all(|j| *j == 0))
    }
}

/// Whether `s` is a MAC address as `ip link` prints one: six two-digit hex bytes and colons.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_and_refuse_unknown_fields() {
        let p = LinkPlan {
            interface: "lan".into(),
            loss_ppm: 5_000,
            ingress: vec![IngressDelay {
                delay_us: 20_000,
                jitter_us: vec![5_000],
                from_macs: vec!["02:68:6c:00:01:00".into()],
            }],
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<LinkPlan>(&json).unwrap(), p);
        assert!(serde_json::from_str::<LinkPlan>(r#"{"interface":"x","rate":1}"#).is_err());
        assert!(!p.is_plain());
        assert!(
            LinkPlan {
                interface: "x".into(),
                loss_ppm: 0,
                ingress: vec![]
            }
            .is_plain()
        );
    }

    #[test]
    fn macs_are_checked() {
        assert!(is_mac("02:68:6c:00:0a:ff"));
        for bad in [
            "02:68:6c:00:0a",
            "02:68:6c:00:0a:fg",
            "0268:6c:00:0a:ff:00",
            "",
            "-j ACCEPT",
        ] {
            assert!(!is_mac(bad), "{bad}");
        }
    }
}
