//! The iptables rules that hand a link's packets to a delay line's queue: `POSTROUTING` for
//! what leaves the host, `PREROUTING` for what enters it (before routing, so packets the host
//! forwards are delayed too), IPv4 and IPv6 each; in table `mangle` for a delay fault, `raw`
//! for a link's own delay ([`Stage`]).
//!
//! Why iptables: the xtables NFQUEUE target runs through nftables' compat layer, while nft's own
//! `queue` expression is missing from some kernels (this lab's among them). Why
//! `--queue-bypass`: should the agent die without removing the rule (SIGKILL), packets pass
//! undelayed instead of being dropped for want of a listener.

use super::error::LinkDelayError;
use super::stats::Way;
use std::process::{Command, Stdio};

/// The two families, one program each.
pub const PROGRAMS: [&str; 2] = ["iptables", "ip6tables"];

/// Which of the two places a line's rules go: a packet a queue lets go continues at the next
/// table of the hook, not at the next rule, so two lines in one table's chain would never both
/// see a packet. The link's own delay (the topology's) comes first, in `raw`; a delay fault
/// comes after it, in `mangle`, and the two add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Link,
    Fault,
}

impl Stage {
    pub fn table(self) -> &'static str {
        match self {
            Stage::Link => "raw",
            Stage::Fault => "mangle",
        }
    }
}

/// One rule of a delay line, as installed (and so as removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub program: &'static str,
    pub stage: Stage,
    pub way: Way,
    /// The link (checked by the caller to be an interface name); `None`: every link but `lo`.
    pub interface: Option<String>,
    /// Only packets whose last hop had this MAC address (checked by the caller); `None`: all.
    /// A link's delay by sender (ingress only: `-m mac` matches nothing on the way out).
    pub source_mac: Option<String>,
    pub queue: u16,
}

impl Rule {
    /// iptables' arguments, `op` being `-A` (append) or `-D` (delete the same rule).
    pub fn args(&self, op: &str) -> Vec<String> {
        let (chain, dev) = match self.way {
            Way::Egress => ("POSTROUTING", "-o"),
            Way::Ingress => ("PREROUTING", "-i"),
        };
        // `-w 5`: wait for the xtables lock at most 5 s (another rule being changed at the
        // same moment, by st-tcp's FIN hold say), not forever.
        let mut a: Vec<String> = ["-w", "5", "-t", self.stage.table(), op, chain]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match &self.interface {
            Some(name) => a.extend([dev.to_string(), name.clone()]),
            None => a.extend(["!".to_string(), dev.to_string(), "lo".to_string()]),
        }
        if let Some(mac) = &self.source_mac {
            a.extend(
                ["-m", "mac", "--mac-source", mac]
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        a.extend(
            [
                "-j",
                "NFQUEUE",
                "--queue-num",
                &self.queue.to_string(),
                "--queue-bypass",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        a
    }

    pub fn add(&self) -> Result<(), LinkDelayError> {
        run(self.program, &self.args("-A"))
    }

    pub fn delete(&self) -> Result<(), LinkDelayError> {
        run(self.program, &self.args("-D"))
    }
}

/// Runs `program args`; fails with its stderr when it exits non-zero. Blocking: the delay line
/// is set up and taken down on a thread of its own (never on the agent's runtime), and this
/// thread's network namespace is the one the rule goes into.
fn run(program: &str, args: &[String]) -> Result<(), LinkDelayError> {
    let line = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LinkDelayError::Spawn {
            line: line.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LinkDelayError::Rule {
            line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_hook_the_right_chain_and_device() {
        let r = Rule {
            program: "iptables",
            stage: Stage::Fault,
            way: Way::Egress,
            interface: Some("eth1".into()),
            source_mac: None,
            queue: 19000,
        };
        assert_eq!(
            r.args("-A").join(" "),
            "-w 5 -t mangle -A POSTROUTING -o eth1 -j NFQUEUE --queue-num 19000 --queue-bypass"
        );
        let r = Rule {
            program: "ip6tables",
            stage: Stage::Fault,
            way: Way::Ingress,
            interface: None,
            source_mac: None,
            queue: 19001,
        };
        assert_eq!(
            r.args("-D").join(" "),
            "-w 5 -t mangle -D PREROUTING ! -i lo -j NFQUEUE --queue-num 19001 --queue-bypass"
        );
        let r = Rule {
            program: "iptables",
            stage: Stage::Link,
            way: Way::Ingress,
            interface: Some("lan".into()),
            source_mac: Some("02:68:6c:00:01:00".into()),
            queue: 19002,
        };
        assert_eq!(
            r.args("-A").join(" "),
            "-w 5 -t raw -A PREROUTING -i lan -m mac --mac-source 02:68:6c:00:01:00 -j NFQUEUE \
             --queue-num 19002 --queue-bypass"
        );
    }
}
