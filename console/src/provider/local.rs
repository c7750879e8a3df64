//! Provider `local`: every host is a network namespace on this machine, and one more namespace,
//! the testbed's "switch", holds a bridge per network; a veth per host per network joins them
//! (DESIGN §4). Nothing is added to the machine's own namespace.
//!
//! Names: host namespaces are `hl.<testbed>.<host>`, the switch `hl.<testbed>._switch`. Testbed
//! and host names cannot contain `.` or `_`, so the prefix `hl.<testbed>.` finds exactly one
//! testbed's namespaces, which is how `halab down` cleans up after a console killed with -9.
//! Inside a host the interface on network `n` is called `n`; on the switch the bridge is
//! `br-<n>` and the host's port `p<host index>-<network index>`.
//!
//! All changes go through `ip -batch`, one process per namespace, so bringing up 20 hosts costs
//! a few dozen process starts rather than hundreds.

use crate::topology::Topology;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use thiserror::Error;

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, Error)]
pub enum LocalError {
    #[error(
        "testbed `{testbed}` is already up: namespaces {existing} exist (run `halab down` on its topology first)"
    )]
    AlreadyUp { testbed: String, existing: String },
    /// `args` is the whole command line, `ip ...` or `tc ...`.
    #[error("`{args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run `ip` (Debian package iproute2)")]
    NoIp(#[source] std::io::Error),
    #[error("{0}")]
    Io(String),
}

/// Namespace name prefix of a testbed.
pub fn ns_prefix(testbed: &str) -> String {
    format!("hl.{testbed}.")
}

/// Namespace of host `host` in testbed `testbed`.
pub fn host_ns(testbed: &str, host: &str) -> String {
    format!("hl.{testbed}.{host}")
}

/// Namespace of the testbed's switch.
pub fn switch_ns(testbed: &str) -> String {
    format!("hl.{testbed}._switch")
}

/// What `create` made, recorded in the state file so `down` can undo it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalResources {
    pub switch_namespace: String,
    /// Host name → namespace.
    pub host_namespaces: BTreeMap<String, String>,
    /// Bridges in the switch namespace.
    pub bridges: Vec<String>,
    /// Switch-side ends of the veth pairs (deleting one end deletes the pair).
    pub switch_ports: Vec<String>,
    /// What delays the links that have a delay or jitter.
    #[serde(default)]
    pub link_delays: DelayMechanism,
}

/// What carries a topology's link delays and jitters (issue 15).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DelayMechanism {
    /// The agents' delay lines, each host delaying what it receives by sender
    /// (`topology::link_plan`): on kernels without netem, like this lab's.
    #[default]
    DelayLine,
    /// netem as the root qdisc of both ends of each delayed link (with its own `rate` when the
    /// link has one), as Mininet's `TCLink` does; loss stays the agents' (nftables).
    Netem,
}

impl DelayMechanism {
    /// Whether the agents delay the links (else the provider's qdiscs do).
    pub fn by_agents(self) -> bool {
        self == DelayMechanism::DelayLine
    }

    /// How it works, for `halab check` and the logs.
    pub fn describe(self) -> &'static str {
        match self {
            DelayMechanism::DelayLine => {
                "halab's delay line: each host's agent queues what enters it (NFQUEUE) and lets \
                 it go after its sender's link delay plus its own"
            }
            DelayMechanism::Netem => {
                "netem on both ends of each delayed link (the host's side for what it sends, the \
                 switch's port for what it receives)"
            }
        }
    }
}

impl LocalResources {
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.switch_namespace.as_str())
            .chain(self.host_namespaces.values().map(String::as_str))
    }
}

/// Builds the testbed's namespaces, bridges, veths, addresses and VIP. On failure, removes
/// whatever it had made before returning the error.
pub fn create(topo: &Topology) -> Result<LocalResources, LocalError> {
    let existing = list_namespaces(&topo.name)?;
    if !existing.is_empty() {
        return Err(LocalError::AlreadyUp {
            testbed: topo.name.clone(),
            existing: existing.join(", "),
        });
    }
    let mut res = plan(topo);
    let result = build(topo, &mut res);
    if result.is_err() {
        let _ = destroy(&topo.name, Some(&res));
    }
    result.map(|()| res)
}

/// Names of everything `create` will make, without making it.
fn plan(topo: &Topology) -> LocalResources {
    let mut res = LocalResources {
        switch_namespace: switch_ns(&topo.name),
        ..Default::default()
    };
    for n in &topo.networks {
        res.bridges.push(format!("br-{}", n.name));
    }
    for (hi, h) in topo.hosts.iter().enumerate() {
        res.host_namespaces
            .insert(h.name.clone(), host_ns(&topo.name, &h.name));
        for (ni, n) in topo.networks.iter().enumerate() {
            if h.addresses.contains_key(&n.name) {
                res.switch_ports.push(port_name(hi, ni));
            }
        }
    }
    res
}

fn port_name(host_index: usize, net_index: usize) -> String {
    format!("p{host_index}-{net_index}")
}

/// The MAC address of host `host_index`'s link to network `net_index`: fixed by the testbed's
/// shape rather than drawn by the kernel, so that the console knows each sender's address
/// before any agent runs (links delay by sender, `topology::link_plan`). Locally
/// administered (`02:`), `68:6c` ("hl"), then the host's index in two bytes and the
/// network's in one.
pub fn host_mac(host_index: usize, net_index: usize) -> String {
    format!(
        "02:68:6c:{:02x}:{:02x}:{:02x}",
        (host_index >> 8) & 0xff,
        host_index & 0xff,
        net_index & 0xff
    )
}

fn build(topo: &Topology, res: &mut LocalResources) -> Result<(), LocalError> {
    // 1. Namespaces.
    let adds: Vec<String> = res
        .namespaces()
        .map(|ns| format!("netns add {ns}"))
        .collect();
    ip_batch(None, &adds, false)?;

    // 2. The switch: bridges, then one veth per host per network, its peer moved straight into
    //    the host's namespace under the network's name.
    let mut sw = vec!["link set lo up".to_string()];
    for n in &topo.networks {
        // Hub mode: ageing_time 0 makes the bridge forget every MAC at once, so it floods
        // every frame to every port, like the hub of the ST-TCP testbed.
        let ageing = if n.hub { " ageing_time 0" } else { "" };
        sw.push(format!("link add br-{} type bridge{ageing}", n.name));
        sw.push(format!("link set br-{} up", n.name));
    }
    for (hi, h) in topo.hosts.iter().enumerate() {
        for (ni, n) in topo.networks.iter().enumerate() {
            if h.addresses.contains_key(&n.name) {
                let port = port_name(hi, ni);
                sw.push(format!(
                    "link add {port} type veth peer name {} address {} netns {}",
                    n.name,
                    host_mac(hi, ni),
                    res.host_namespaces[&h.name]
                ));
                sw.push(format!("link set {port} master br-{} up", n.name));
            }
        }
    }
    ip_batch(Some(&res.switch_namespace), &sw, false)?;

    // 3. Each host: loopback, addresses, links up, and the VIP on the host the mode puts it
    // on (the topology's validation asked the mode: `service_address_role`).
    let service_net = topo.service_network();
    let holder = topo.hosts_with(topo.service_address_role).next();
    for h in &topo.hosts {
        let mut cmds = vec!["link set lo up".to_string()];
        for (net, addr) in &h.addresses {
            let prefix = topo
                .network(net)
                .map(|n| n.subnet.prefix_len())
                .unwrap_or(24);
            cmds.push(format!("addr add {addr}/{prefix} dev {net}"));
            cmds.push(format!("link set {net} up"));
        }
        if holder.is_some_and(|p| p.name == h.name) {
            cmds.push(format!(
                "addr add {}/{} dev {}",
                topo.service_address,
                service_net.subnet.prefix_len(),
                service_net.name
            ));
        }
        ip_batch(Some(&res.host_namespaces[&h.name]), &cmds, false)?;
    }

    // 4. Link rates, and delays where netem does them: a qdisc on each direction of a host's
    //    link, the host's side for what it sends, the switch's port for what it receives.
    //    Loss, and delays where the kernel has no netem, are the host's agent's (they go with
    //    it: the dead-man switch; `topology::link_plan`).
    let delayed = topo
        .hosts
        .iter()
        .any(|h| h.links.values().any(|l| l.delays()));
    if delayed && has_netem(&res.switch_namespace) {
        res.link_delays = DelayMechanism::Netem;
    }
    let mut switch_tc = Vec::new();
    for (hi, h) in topo.hosts.iter().enumerate() {
        let mut host_tc = Vec::new();
        for (ni, n) in topo.networks.iter().enumerate() {
            let Some(qdisc) = h
                .links
                .get(&n.name)
                .and_then(|l| link_qdisc(l, res.link_delays))
            else {
                continue;
            };
            host_tc.push(format!("qdisc add dev {} root {qdisc}", n.name));
            switch_tc.push(format!("qdisc add dev {} root {qdisc}", port_name(hi, ni)));
        }
        if !host_tc.is_empty() {
            batch("tc", Some(&res.host_namespaces[&h.name]), &host_tc, false)?;
        }
    }
    if !switch_tc.is_empty() {
        batch("tc", Some(&res.switch_namespace), &switch_tc, false)?;
    }
    Ok(())
}

/// Changes the links' qdiscs from `old`'s settings to `new`'s (the same testbed: an
/// experiment's run with other link settings), on both ends of each link whose qdisc changes.
pub fn relink(old: &Topology, new: &Topology, res: &LocalResources) -> Result<(), LocalError> {
    let mut switch_tc = Vec::new();
    for (hi, (before, after)) in old.hosts.iter().zip(&new.hosts).enumerate() {
        let mut host_tc = Vec::new();
        for (ni, n) in new.networks.iter().enumerate() {
            if !after.addresses.contains_key(&n.name) {
                continue;
            }
            let qdisc = |h: &crate::topology::Host| {
                h.links
                    .get(&n.name)
                    .and_then(|l| link_qdisc(l, res.link_delays))
            };
            let (was, now) = (qdisc(before), qdisc(after));
            if was == now {
                continue;
            }
            let cmd = |dev: &str| match &now {
                Some(q) => format!("qdisc replace dev {dev} root {q}"),
                None => format!("qdisc del dev {dev} root"),
            };
            host_tc.push(cmd(&n.name));
            switch_tc.push(cmd(&port_name(hi, ni)));
        }
        if !host_tc.is_empty() {
            let ns = res
                .host_namespaces
                .get(&after.name)
                .ok_or_else(|| LocalError::Io(format!("no namespace for host {}", after.name)))?;
            batch("tc", Some(ns), &host_tc, false)?;
        }
    }
    if !switch_tc.is_empty() {
        batch("tc", Some(&res.switch_namespace), &switch_tc, false)?;
    }
    Ok(())
}

/// The root qdisc of each end of a link shaped `link`, if it needs one: netem when `delays` is
/// netem and the link has a delay or jitter (its rate then netem's own), else tbf for a rate.
fn link_qdisc(link: &crate::topology::LinkShape, delays: DelayMechanism) -> Option<String> {
    if delays == DelayMechanism::Netem && link.delays() {
        let (delay_us, jitter_us) = (link.delay_us.unwrap_or(0), link.jitter_us.unwrap_or(0));
        let jitter = if jitter_us > 0 {
            format!(" {jitter_us}us")
        } else {
            String::new()
        };
        let rate = link
            .rate_bps
            .map(|r| format!(" rate {r}bit"))
            .unwrap_or_default();
        // A limit in packets far above a 1.25 MB bandwidth-delay product (netem's default,
        // 1000, would drop a fast link's data in flight).
        return Some(format!(
            "netem delay {delay_us}us{jitter}{rate} limit 100000"
        ));
    }
    link.rate_bps.map(token_bucket)
}

/// Whether the kernel has netem: a netem qdisc is added to `ns`'s loopback and removed again.
fn has_netem(ns: &str) -> bool {
    let add = Command::new("tc")
        .args([
            "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if add {
        let _ = Command::new("tc")
            .args(["-n", ns, "qdisc", "del", "dev", "lo", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    add
}

/// tbf's arguments for `rate_bps`: a bucket of 1 ms at the rate, and at least one full frame
/// (1600 bytes), and a queue of 100 ms at the rate. A small bucket keeps a slow link slow from
/// its first byte (a 6.6 KB download over a 10 Mbit/s link takes its 5 ms, not a burst at
/// memory speed); tbf cuts a GSO packet larger than the bucket into frames.
pub fn token_bucket(rate_bps: u64) -> String {
    let burst = (rate_bps / 8 / 1000).max(1600);
    format!("tbf rate {rate_bps}bit burst {burst} latency 100ms")
}

/// Removes every namespace, link and process of testbed `testbed`: those recorded in `known`
/// and any other namespace carrying its prefix. Idempotent; returns what it removed.
pub fn destroy(testbed: &str, known: Option<&LocalResources>) -> Result<Vec<String>, LocalError> {
    let mut namespaces = list_namespaces(testbed)?;
    if let Some(k) = known {
        for ns in k.namespaces() {
            if !namespaces.iter().any(|n| n == ns) && netns_path(ns).exists() {
                namespaces.push(ns.to_string());
            }
        }
    }
    if namespaces.is_empty() {
        return Ok(namespaces);
    }

    // Processes first: nothing may keep running in a testbed that is going away.
    for pids in pids_in_namespaces(&namespaces).values() {
        for &pid in pids {
            // SAFETY: kill(2) with a pid we read from /proc; a pid that exited meanwhile
            // yields ESRCH, which is fine.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    // Links next, explicitly: deleting a namespace is lazy while kernel sockets in it linger,
    // and its veths would live on until then. Deleting every non-loopback link of the switch
    // takes the veth pairs (both ends) and the bridges; host namespaces are swept too in case
    // the switch namespace was already gone.
    for ns in &namespaces {
        let links = links_in(ns);
        if !links.is_empty() {
            let cmds: Vec<String> = links.iter().map(|l| format!("link del {l}")).collect();
            ip_batch(Some(ns), &cmds, true)?;
        }
    }

    let dels: Vec<String> = namespaces
        .iter()
        .map(|ns| format!("netns del {ns}"))
        .collect();
    ip_batch(None, &dels, true)?;
    let left = list_namespaces(testbed)?;
    if !left.is_empty() {
        return Err(LocalError::Io(format!(
            "namespaces still present after teardown: {}",
            left.join(", ")
        )));
    }
    Ok(namespaces)
}

/// Namespaces of testbed `testbed` that exist now.
pub fn list_namespaces(testbed: &str) -> Result<Vec<String>, LocalError> {
    let prefix = ns_prefix(testbed);
    Ok(all_namespaces()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect())
}

/// Every named namespace on the machine.
pub fn all_namespaces() -> Result<Vec<String>, LocalError> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(LocalError::Io(format!("{NETNS_DIR}: {e}"))),
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

fn netns_path(ns: &str) -> std::path::PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Processes in each of `namespaces`, found the way `ip netns pids` does: by comparing each
/// process's network namespace with the namespace file's inode, in one pass over /proc.
pub fn pids_in_namespaces(namespaces: &[String]) -> BTreeMap<String, Vec<i32>> {
    let mut by_inode: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for ns in namespaces {
        if let Ok(m) = std::fs::metadata(netns_path(ns)) {
            by_inode.insert((m.dev(), m.ino()), ns.clone());
        }
    }
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in proc_dir.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(m) = std::fs::metadata(entry.path().join("ns/net"))
            && let Some(ns) = by_inode.get(&(m.dev(), m.ino()))
        {
            out.entry(ns.clone()).or_default().push(pid);
        }
    }
    out
}

/// Power-off of a host (DESIGN §6): every link of its namespace down first, so that nothing —
/// not a FIN, not an RST — leaves it, then SIGKILL of every process in it. Returns when the
/// links went down (T_fault is its `at_ns`) and how many processes were killed.
///
/// Right after the links, from the same thread, `service_address` goes (address, prefix,
/// interface), if the host has it: a host that is off holds no address, and the power-on puts
/// it back only if the host still holds it by then. Removing it costs one netlink message, so a
/// fence (a mode's power-off) is not slowed down.
pub fn power_off(
    ns: &str,
    service_address: (Ipv4Addr, u8, &str),
) -> Result<(halab_protocol::sys::LinksDown, usize), LocalError> {
    let down = links_down_now(ns, service_address)?;
    let pids = pids_in_namespaces(&[ns.to_string()])
        .remove(ns)
        .unwrap_or_default();
    for &pid in &pids {
        // SAFETY: kill(2) on pids read from /proc as members of this namespace just now.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    Ok((down, pids.len()))
}

/// Puts `address` (`addr/prefix`, interface) on the host or takes it off, whichever it is not
/// already.
fn set_address(ns: &str, (cidr, dev): (&str, &str), present: bool) -> Result<(), LocalError> {
    let has = Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {cidr} ")))
        .unwrap_or(false);
    match (has, present) {
        (true, false) => ip_batch(Some(ns), &[format!("addr del {cidr} dev {dev}")], false),
        (false, true) => ip_batch(Some(ns), &[format!("addr add {cidr} dev {dev}")], false),
        _ => Ok(()),
    }
}

/// Takes every link of namespace `ns` but `lo` down with SIOCSIFFLAGS from a thread that
/// entered the namespace, stamped as [`halab_protocol::sys::LinksDown`] says. The links are
/// listed from that thread too: an `ip` process, to list them or take them down, would add its
/// start, exit and reaping (milliseconds on a loaded host) to the time a fault takes to land.
fn links_down_now(
    ns: &str,
    (addr, prefix, dev): (Ipv4Addr, u8, &str),
) -> Result<halab_protocol::sys::LinksDown, LocalError> {
    let path = netns_path(ns);
    let dev = dev.to_string();
    let thread = std::thread::spawn(move || -> Result<halab_protocol::sys::LinksDown, String> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: setns(2) on this thread only, with a namespace file we hold open; the thread
        // ends right after, so no other work runs in the testbed's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        // Not preempted between the last ioctl and the stamp (best effort: without the
        // privilege the stamp is only less sharp).
        let _ = halab_protocol::sys::enter_realtime();
        let links: Vec<String> = halab_protocol::sys::interface_names()
            .map_err(|e| format!("listing the links: {e}"))?
            .into_iter()
            .filter(|n| n != "lo")
            .collect();
        let down = halab_protocol::sys::links_down_stamped(&links)?;
        if links.contains(&dev)
            && let Err(e) = halab_protocol::sys::delete_ipv4_address(&dev, addr, prefix)
        {
            // The host is off all the same; the power-on sets the address right.
            tracing::warn!(error = %e, %addr, %dev, "service address not removed at power-off");
        }
        Ok(down)
    });
    thread
        .join()
        .map_err(|_| LocalError::Io("link-down thread panicked".into()))?
        .map_err(|e| LocalError::Io(format!("taking the links of {ns} down: {e}")))
}

/// Power-on of a host: its links up again (the agent is restarted by the orchestrator).
///
/// Before the links come up, `service_address` (`addr/prefix`, interface) is put on the host if
/// `holds` (it holds the service address by its roles now), and taken off if not: a fenced
/// primary whose backup took over must never answer for it again.
pub fn power_on(ns: &str, service_address: (&str, &str), holds: bool) -> Result<(), LocalError> {
    set_address(ns, service_address, holds)?;
    forget_sockets(ns);
    forget_firewall(ns);
    let cmds: Vec<String> = links_in(ns)
        .iter()
        .map(|l| format!("link set dev {l} up"))
        .collect();
    if cmds.is_empty() {
        return Ok(());
    }
    ip_batch(Some(ns), &cmds, false)
}

/// What a reboot forgets, first: every TCP socket of the namespace (SOCK_DESTROY through
/// `ss -K`). The processes killed at power-off leave their connections closing in the kernel;
/// with the links up again those would send their FINs (and a client would see a connection it
/// knows taken over by another host closed under it). Nothing leaves meanwhile: the links are
/// still down.
fn forget_sockets(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-K", "-t", "-a"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// What a reboot forgets, too: the packet filter rules the host's agent and roles had made (a fault's
/// nftables table, an st-tcp FIN hold's queue rule). A power-off kills the agent before it can
/// remove them, and the namespace keeps them; left there, a FIN hold's rule would queue the
/// host's FINs to a queue nobody reads once it serves again. Best effort: a host without nft or
/// iptables has no such rules.
fn forget_firewall(ns: &str) {
    // Every table the agents write to: filter, and the delay lines' mangle (faults) and raw
    // (the links' own delays). With iptables-nft `nft flush ruleset` takes them all; with
    // iptables-legacy only these do. A stale delay-line rule would pass every packet undelayed
    // (`--queue-bypass`) before the new agent's rule could see it.
    for (cmd, args) in [
        ("nft", &["flush", "ruleset"][..]),
        ("iptables", &["-w", "-F"][..]),
        ("iptables", &["-w", "-X"][..]),
        ("iptables", &["-w", "-t", "mangle", "-F"][..]),
        ("iptables", &["-w", "-t", "raw", "-F"][..]),
        ("ip6tables", &["-w", "-t", "mangle", "-F"][..]),
        ("ip6tables", &["-w", "-t", "raw", "-F"][..]),
    ] {
        let _ = Command::new("ip")
            .args(["netns", "exec", ns, cmd])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Non-loopback links in namespace `ns` (empty when it cannot be read).
fn links_in(ns: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .output()
    else {
        return vec![];
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|n| n != "lo")
        .collect()
}

/// Runs `ip [-n ns] [-force] -batch -` with `cmds` on stdin.
fn ip_batch(ns: Option<&str>, cmds: &[String], force: bool) -> Result<(), LocalError> {
    batch("ip", ns, cmds, force)
}

/// Runs `cmds` through `tool -batch -` (`ip` or `tc`, which share the batch syntax and the
/// "Command failed -:N" report) in namespace `ns`.
fn batch(tool: &str, ns: Option<&str>, cmds: &[String], force: bool) -> Result<(), LocalError> {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    if force {
        args.push("-force");
    }
    args.extend(["-batch", "-"]);
    let mut child = Command::new(tool)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(LocalError::NoIp)?;
    let input = cmds.join("\n") + "\n";
    // A write error (ip exited early: EPIPE) is not the story; ip's stderr is. Always reap ip
    // and report what it said.
    let write_result = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(input.as_bytes()),
        None => Ok(()),
    };
    let out = child
        .wait_with_output()
        .map_err(|e| LocalError::Io(format!("waiting for ip: {e}")))?;
    if let Err(e) = write_result
        && out.status.success()
    {
        return Err(LocalError::Io(format!("writing to ip: {e}")));
    }
    if !out.status.success() && !force {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // `ip -batch` names the failing input line as "Command failed -:N"; show that command.
        let failed = stderr
            .rsplit_once("Command failed -:")
            .and_then(|(_, n)| n.trim().parse::<usize>().ok())
            .and_then(|n| cmds.get(n.wrapping_sub(1)))
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        return Err(LocalError::Ip {
            args: format!("{tool} {}{failed}", args.join(" ")),
            stderr,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::LinkShape;

    #[test]
    fn each_link_end_gets_netem_or_tbf_as_the_kernel_allows() {
        let delayed = LinkShape {
            rate_bps: Some(100_000_000),
            delay_us: Some(20_000),
            jitter_us: Some(5_000),
            loss_ppm: Some(1_000),
        };
        assert_eq!(
            link_qdisc(&delayed, DelayMechanism::Netem).as_deref(),
            Some("netem delay 20000us 5000us rate 100000000bit limit 100000")
        );
        // Without netem the agents delay; the ends keep the rate's token bucket.
        assert_eq!(
            link_qdisc(&delayed, DelayMechanism::DelayLine),
            Some(token_bucket(100_000_000))
        );
        let lossy = LinkShape {
            loss_ppm: Some(1_000),
            ..LinkShape::default()
        };
        assert_eq!(link_qdisc(&lossy, DelayMechanism::Netem), None);
        assert_eq!(host_mac(0x1ab, 2), "02:68:6c:01:ab:02");
    }
}
