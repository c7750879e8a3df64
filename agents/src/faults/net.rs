//! The network side of faults: `ip`, `nft` and `tc`, run as child processes in the agent's own
//! network namespace.

use halab_protocol::Direction;
use std::io::{Seek, Write};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

/// How long one `ip`/`nft`/`tc` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a network step of a fault failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot prepare the input of `{line}`")]
    Input {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{line}`")]
    Spawn {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{line}` did not finish within {:?}", COMMAND_TIMEOUT)]
    Timeout { line: String },
    #[error("`{line}`")]
    Wait {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{line}` failed ({status}): {}", or_no_message(.stderr))]
    Failed {
        line: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{link}")]
    Restore {
        link: String,
        #[source]
        source: Box<NetError>,
    },
    #[error("{link}: ip {args}: {lines}")]
    RestoreWarnings {
        link: String,
        args: String,
        lines: String,
    },
    #[error("`{0}` is not an interface name")]
    BadLinkName(String),
    #[error("loss of {0}% is not a percentage (0 to 100)")]
    NotAPercentage(f64),
    #[error("a partition needs at least one peer address")]
    NoPeers,
    #[error("partition peer `{0}` is not an IP address or network")]
    BadPeer(String),
    #[error("cannot load nftables table {table}")]
    NftLoad {
        table: String,
        #[source]
        source: Box<NetError>,
    },
    #[error("a delay of 0 ms is no fault")]
    ZeroDelay,
    #[error("no interface but lo to delay")]
    NothingToDelay,
    #[error("no interface {0} on this host")]
    NoSuchLink(String),
    #[error("netem qdisc is not available in this kernel")]
    NoNetem(#[source] Box<NetError>),
}

fn or_no_message(stderr: &str) -> &str {
    if stderr.is_empty() {
        "no message"
    } else {
        stderr
    }
}

/// What a command that succeeded printed.
pub(super) struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `program args` with `input` as its stdin; fails with its stderr when it exits non-zero.
pub(super) async fn run(
    program: &str,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<Output, NetError> {
    let line = format!("{program} {}", args.join(" "));
    let stdin = match input {
        None => Stdio::null(),
        Some(bytes) => match seekable_input(bytes) {
            Ok(file) => Stdio::from(file),
            Err(source) => return Err(NetError::Input { line, source }),
        },
    };
    let child = match tokio::process::Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(source) => return Err(NetError::Spawn { line, source }),
    };
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Err(_) => return Err(NetError::Timeout { line }),
        Ok(Err(source)) => return Err(NetError::Wait { line, source }),
        Ok(Ok(out)) => out,
    };
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        Ok(Output {
            stdout: out.stdout,
            stderr,
        })
    } else {
        Err(NetError::Failed {
            line,
            status: out.status,
            stderr,
        })
    }
}

/// `bytes` in an anonymous memory file, positioned at its start: a stdin that can be seeked,
/// as `ip route restore` needs (it reads its input more than once), and that never blocks the
/// writer the way a pipe whose reader exits early would.
fn seekable_input(bytes: &[u8]) -> std::io::Result<std::fs::File> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(c"halab-fault-input".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file)
}

/// One network interface of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub name: String,
    /// Administratively up (the `UP` flag).
    pub up: bool,
    /// Up with a carrier (`LOWER_UP`): the link carries traffic. The operational state (`state
    /// UP`) is not waited for: Linux updates it from a deferred worker, rate-limited to one
    /// change per second, long after traffic flows again.
    pub operational: bool,
}

/// The interfaces of this host (`ip -o link show`).
pub(crate) async fn links() -> Result<Vec<Link>, NetError> {
    let out = run("ip", &["-o", "link", "show"], None).await?;
    Ok(parse_links(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `ip -o link show`: `2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 ...`.
fn parse_links(text: &str) -> Vec<Link> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ": ");
            let _index = fields.next()?;
            let name = fields.next()?.split('@').next()?.trim().to_string();
            let rest = fields.next()?;
            let flags = rest.strip_prefix('<')?.split('>').next()?;
            let up = flags.split(',').any(|f| f == "UP");
            let lower_up = flags.split(',').any(|f| f == "LOWER_UP");
            let operational = up && lower_up;
            (!name.is_empty()).then_some(Link {
                name,
                up,
                operational,
            })
        })
        .collect()
}

/// Refuses names that cannot be a Linux interface name (and could be taken for an option).
pub(crate) fn check_link_name(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(NetError::BadLinkName(name.to_string()))
    }
}

/// What the kernel forgets about a link when it goes down: its global addresses (IPv6 ones are
/// flushed on down) and its routes in every table, both families, as `ip … save` dumps.
pub(super) struct LinkSnapshot {
    addrs: Vec<u8>,
    routes4: Vec<u8>,
    routes6: Vec<u8>,
}

pub(super) async fn snapshot(link: &str) -> Result<LinkSnapshot, NetError> {
    let addrs = run(
        "ip",
        &["addr", "save", "dev", link, "scope", "global"],
        None,
    )
    .await?;
    let routes4 = run(
        "ip",
        &["-4", "route", "save", "table", "all", "dev", link],
        None,
    )
    .await?;
    let routes6 = run(
        "ip",
        &["-6", "route", "save", "table", "all", "dev", link],
        None,
    )
    .await?;
    Ok(LinkSnapshot {
        addrs: addrs.stdout,
        routes4: routes4.stdout,
        routes6: routes6.stdout,
    })
}

/// Puts back what `snapshot` saved, on a link that is up again: addresses first, then routes.
/// What still exists (the addresses Linux kept, the connected routes it recreated) is skipped
/// by `ip … restore`. Returns the problems met.
pub(super) async fn restore(link: &str, snap: &LinkSnapshot) -> Vec<NetError> {
    let mut problems = Vec::new();
    for (args, dump) in [
        (&["addr", "restore"][..], &snap.addrs),
        (&["-4", "route", "restore"][..], &snap.routes4),
        (&["-6", "route", "restore"][..], &snap.routes6),
    ] {
        // An empty dump has nothing to restore (and `ip … restore` refuses it).
        if dump.len() <= 4 {
            continue;
        }
        match run("ip", args, Some(dump)).await {
            Err(e) => problems.push(NetError::Restore {
                link: link.to_string(),
                source: Box::new(e),
            }),
            Ok(out) => {
                // `ip … restore` reports entries that exist already and carries on.
                let other: Vec<&str> = out
                    .stderr
                    .lines()
                    .filter(|l| !l.contains("File exists") && !l.contains("already assigned"))
                    .collect();
                if !other.is_empty() {
                    problems.push(NetError::RestoreWarnings {
                        link: link.to_string(),
                        args: args.join(" "),
                        lines: other.join("; "),
                    });
                }
            }
        }
    }
    problems
}

/// Waits, at most `limit`, until every one of `links` has its carrier again after being set up
/// (a veth at once, a physical NIC after autonegotiation). Returns those that still have none.
pub(super) async fn wait_operational(links: &[String], limit: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let waiting: Vec<String> = match self::links().await {
            Ok(now) => links
                .iter()
                .filter(|l| !now.iter().any(|n| &n.name == *l && n.operational))
                .cloned()
                .collect(),
            Err(_) => links.to_vec(),
        };
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
            return waiting;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sets each of `links` up or down on its own, so one failure does not stop the rest; returns
/// the failures.
pub(super) async fn set_links_each(links: &[String], up: bool) -> Vec<NetError> {
    let state = if up { "up" } else { "down" };
    let mut problems = Vec::new();
    for l in links {
        if let Err(e) = run("ip", &["link", "set", "dev", l, state], None).await {
            problems.push(e);
        }
    }
    problems
}

pub(super) fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
        Direction::Both => "both",
    }
}

/// The hooks at which drops happen: before conntrack and everything else (`raw` priority).
const PRIORITY: i32 = -300;

/// The nftables script of a loss fault: `percent` % (0 to 100, two decimals) of the packets
/// entering and/or leaving the host dropped at random. Loopback traffic is left alone: a lossy
/// NIC does not touch it.
pub(super) fn loss_script(
    table: &str,
    percent: f64,
    direction: Direction,
) -> Result<String, NetError> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(NetError::NotAPercentage(percent));
    }
    let threshold = (percent * 100.0).round() as u32;
    // `numgen random mod 10000` is 0..=9999: 100 % is every packet.
    let drop = if threshold >= 10000 {
        "drop".to_string()
    } else {
        format!("numgen random mod 10000 < {threshold} drop")
    };
    let rule = |lo: &str| format!("{lo} \"lo\" accept\n{drop}\n");
    let mut chains = String::new();
    if matches!(direction, Direction::In | Direction::Both) {
        chains.push_str(&chain("input", &rule("iif")));
    }
    if matches!(direction, Direction::Out | Direction::Both) {
        chains.push_str(&chain("output", &rule("oif")));
    }
    Ok(table_script(table, &chains))
}

/// The nftables script of the loss on a host's links (`halab_protocol::link`): each link's
/// share, in millionths, dropped in each direction, forwarded packets included (the
/// `prerouting` and `postrouting` hooks, where the loss fault's `input` and `output` see only
/// the host's own). Links with no loss are left out.
pub(crate) fn link_loss_script(table: &str, links: &[(&str, u32)]) -> Result<String, NetError> {
    let mut ins = String::new();
    let mut outs = String::new();
    for (link, ppm) in links.iter().filter(|(_, ppm)| *ppm > 0) {
        check_link_name(link)?;
        if *ppm > 1_000_000 {
            return Err(NetError::NotAPercentage(f64::from(*ppm) / 10_000.0));
        }
        // `numgen random mod 1000000` is 0..=999999: a million is every packet.
        let drop = if *ppm >= 1_000_000 {
            "drop".to_string()
        } else {
            format!("numgen random mod 1000000 < {ppm} drop")
        };
        ins.push_str(&format!("iifname \"{link}\" {drop}\n"));
        outs.push_str(&format!("oifname \"{link}\" {drop}\n"));
    }
    Ok(table_script(
        table,
        &format!(
            "{}{}",
            chain("prerouting", &ins),
            chain("postrouting", &outs)
        ),
    ))
}

/// The nftables script of a partition: every packet from or to `peers` (addresses or networks,
/// IPv4 or IPv6) dropped, including packets this host forwards. Returns the peers as written
/// into the rules.
pub(super) fn partition_script(
    table: &str,
    peers: &[String],
) -> Result<(String, Vec<String>), NetError> {
    if peers.is_empty() {
        return Err(NetError::NoPeers);
    }
    let peers: Vec<(bool, String)> = peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<_, _>>()?;
    let rules = |dirs: &[&str]| -> String {
        let mut s = String::new();
        for dir in dirs {
            for (v6, p) in &peers {
                let family = if *v6 { "ip6" } else { "ip" };
                s.push_str(&format!("    {family} {dir} {p} drop\n"));
            }
        }
        s
    };
    let chains = [
        chain("input", &rules(&["saddr"])),
        chain("output", &rules(&["daddr"])),
        chain("forward", &rules(&["saddr", "daddr"])),
    ]
    .concat();
    Ok((
        table_script(table, &chains),
        peers.into_iter().map(|(_, p)| p).collect(),
    ))
}

/// An address or a network (`addr/prefix`, host bits cleared) in nftables syntax; true for
/// IPv6.
fn parse_peer(peer: &str) -> Result<(bool, String), NetError> {
    let bad = || NetError::BadPeer(peer.to_string());
    let (addr, prefix) = match peer.trim().split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
        None => (peer.trim(), None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let (v6, max) = match addr {
        IpAddr::V4(_) => (false, 32u8),
        IpAddr::V6(_) => (true, 128u8),
    };
    match prefix {
        None => Ok((v6, addr.to_string())),
        Some(p) if p > max => Err(bad()),
        Some(p) => {
            let network = match addr {
                IpAddr::V4(a) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                    IpAddr::from((u32::from(a) & mask).to_be_bytes())
                }
                IpAddr::V6(a) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
                    IpAddr::from((u128::from(a) & mask).to_be_bytes())
                }
            };
            Ok((v6, format!("{network}/{p}")))
        }
    }
}

fn chain(hook: &str, rules: &str) -> String {
    format!(
        "  chain {hook} {{\n    type filter hook {hook} priority {PRIORITY}; policy accept;\n{}  }}\n",
        rules
            .lines()
            .map(|l| format!("    {}\n", l.trim()))
            .collect::<String>()
    )
}

/// A script that replaces table `inet <table>` atomically: a leftover of the same name (from an
/// agent killed with SIGKILL) is deleted in the same transaction instead of merged into.
fn table_script(table: &str, chains: &str) -> String {
    format!("table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n{chains}}}\n")
}

/// Loads `script` (one transaction: all of it or nothing).
pub(crate) async fn nft_load(table: &str, script: &str) -> Result<(), NetError> {
    run("nft", &["-f", "-"], Some(script.as_bytes()))
        .await
        .map(|_| ())
        .map_err(|e| NetError::NftLoad {
            table: table.to_string(),
            source: Box::new(e),
        })
}

pub(crate) async fn nft_delete(table: &str) -> Result<(), NetError> {
    run("nft", &["delete", "table", "inet", table], None)
        .await
        .map(|_| ())
}

/// The links a delay fault acts on: `interface` (which must exist), or every link but `lo`.
pub(super) async fn delay_targets(interface: Option<&str>) -> Result<Vec<String>, NetError> {
    let all = links().await?;
    let targets: Vec<String> = match interface {
        Some(name) => {
            check_link_name(name)?;
            if !all.iter().any(|l| l.name == name) {
                return Err(NetError::NoSuchLink(name.to_string()));
            }
            vec![name.to_string()]
        }
        None => all
            .into_iter()
            .filter(|l| l.name != "lo")
            .map(|l| l.name)
            .collect(),
    };
    if targets.is_empty() {
        return Err(NetError::NothingToDelay);
    }
    Ok(targets)
}

/// Adds a netem delay (± `jitter_ms`, netem's default uniform distribution) as the root qdisc
/// of each of `targets`; on any failure removes what it added.
pub(super) async fn delay_add(
    targets: &[String],
    delay_ms: u64,
    jitter_ms: u64,
) -> Result<(), NetError> {
    let delay = format!("{delay_ms}ms");
    let jitter = format!("{jitter_ms}ms");
    let mut added = Vec::new();
    for link in targets {
        let mut args = vec![
            "qdisc", "add", "dev", link, "root", "netem", "delay", &delay,
        ];
        if jitter_ms > 0 {
            args.push(&jitter);
        }
        let r = run("tc", &args, None).await;
        if let Err(e) = r {
            let _ = delay_del(&added).await;
            let text = e.to_string();
            return Err(
                if text.contains("qdisc kind is unknown") || text.contains("netem") {
                    NetError::NoNetem(Box::new(e))
                } else {
                    e
                },
            );
        }
        added.push(link.clone());
    }
    Ok(())
}

/// Removes the root qdiscs of `links`; returns the failures.
pub(super) async fn delay_del(links: &[String]) -> Vec<NetError> {
    let mut problems = Vec::new();
    for link in links {
        if let Err(e) = run("tc", &["qdisc", "del", "dev", link, "root"], None).await {
            problems.push(e);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_parsed_from_ip_o_link() {
        let text = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\\    link/loopback 00:00\n\
                    2: veth-a@if2: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN\\    link/ether ce:29\n\
                    3: eth0.10@eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP mode DEFAULT\n\
                    4: eth1: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 state DOWN\n";
        let link = |name: &str, up, operational| Link {
            name: name.into(),
            up,
            operational,
        };
        assert_eq!(
            parse_links(text),
            vec![
                link("lo", true, true),
                link("veth-a", false, false),
                link("eth0.10", true, true),
                link("eth1", true, false),
            ]
        );
    }

    #[test]
    fn loss_keeps_fractions_and_refuses_non_percentages() {
        let s = loss_script("halab_fault_3", 12.34, Direction::In).unwrap();
        assert!(s.contains("numgen random mod 10000 < 1234 drop"), "{s}");
        assert!(s.contains("hook input priority -300"), "{s}");
        assert!(!s.contains("hook output"), "{s}");
        assert!(s.starts_with("table inet halab_fault_3\ndelete table inet halab_fault_3\n"));
        let s = loss_script("t", 100.0, Direction::Both).unwrap();
        assert!(!s.contains("numgen") && s.contains("    drop\n"), "{s}");
        assert!(s.contains("hook output") && s.contains("hook input"));
        let s = loss_script("t", 30.0, Direction::Out).unwrap();
        assert!(
            s.contains("oif \"lo\" accept") && !s.contains("hook input"),
            "{s}"
        );
        for bad in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
            assert!(loss_script("t", bad, Direction::In).is_err(), "{bad}");
        }
    }

    #[test]
    fn link_loss_drops_each_links_share_both_ways() {
        let s = link_loss_script(
            "halab_links",
            &[("lan", 5_000), ("wan", 0), ("up", 1_000_000)],
        )
        .unwrap();
        assert!(
            s.starts_with("table inet halab_links\ndelete table inet halab_links\n"),
            "{s}"
        );
        assert!(
            s.contains("iifname \"lan\" numgen random mod 1000000 < 5000 drop"),
            "{s}"
        );
        assert!(
            s.contains("oifname \"lan\" numgen random mod 1000000 < 5000 drop"),
            "{s}"
        );
        assert!(
            s.contains("iifname \"up\" drop") && s.contains("oifname \"up\" drop"),
            "{s}"
        );
        assert!(!s.contains("wan"), "{s}");
        assert!(
            s.contains("hook prerouting") && s.contains("hook postrouting"),
            "{s}"
        );
        assert!(link_loss_script("t", &[("lan", 1_000_001)]).is_err());
        assert!(link_loss_script("t", &[("bad name", 5)]).is_err());
    }

    #[test]
    fn partition_peers_are_validated_and_normalised() {
        let (s, peers) = partition_script(
            "t",
            &["10.1.2.3".into(), "10.9.8.7/16".into(), "fd00::5/64".into()],
        )
        .unwrap();
        assert_eq!(peers, vec!["10.1.2.3", "10.9.0.0/16", "fd00::/64"]);
        assert!(s.contains("ip saddr 10.1.2.3 drop"), "{s}");
        assert!(s.contains("ip daddr 10.9.0.0/16 drop"), "{s}");
        assert!(s.contains("ip6 saddr fd00::/64 drop"), "{s}");
        assert!(s.contains("hook forward"), "{s}");
        for bad in [
            "",
            "host-b",
            "10.0.0.1/33",
            "10.0.0.1; flush ruleset",
            "fd00::/129",
        ] {
            assert!(partition_script("t", &[bad.into()]).is_err(), "{bad}");
        }
        assert!(partition_script("t", &[]).is_err());
        assert_eq!(parse_peer("10.0.0.1/0").unwrap().1, "0.0.0.0/0");
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_link_name("eth0").is_ok());
        assert!(check_link_name("veth-a.10").is_ok());
        for bad in ["", "-help", "a b", "waytoolonginterfacename", "x/y"] {
            assert!(check_link_name(bad).is_err(), "{bad}");
        }
    }
}
