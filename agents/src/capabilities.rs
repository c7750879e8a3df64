//! Probes what this host can do (DESIGN §9): each probe tries the real thing — opens the
//! socket, sets the option, adds the qdisc in a throwaway namespace — rather than guessing from
//! version numbers, and says why when it fails.

use halab_protocol::{Capabilities, Probe};
use std::process::Command;

/// Runs every probe. Blocking (starts a few short processes): call from a blocking context.
pub fn probe_all() -> Capabilities {
    Capabilities {
        root: probe_root(),
        namespaces: probe_command(
            "unshare",
            &["--net", "true"],
            "can create network namespaces",
        ),
        af_packet: probe_af_packet(),
        tcp_repair: probe_tcp_repair(),
        nftables: probe_command("nft", &["list", "tables"], "nft works"),
        netem: probe_netem(),
        nfqueue: probe_nfqueue(),
    }
}

/// Whether the netem qdisc can be added: in a throwaway namespace, so the probe leaves nothing
/// behind even if it succeeds. Blocking.
pub fn probe_netem() -> Probe {
    probe_command(
        "unshare",
        &[
            "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
        "netem qdisc available",
    )
}

/// Whether the delay line can run: a queue of its range binds here (and is let go at once),
/// and iptables accepts an NFQUEUE rule (in a throwaway namespace). Blocking.
pub fn probe_nfqueue() -> Probe {
    use crate::netfilter_queue::{BlockingQueue, Config, CopyMode};
    let config = Config {
        copy: CopyMode::Packet(32),
        max_len: Some(1024),
        gso: true,
    };
    // The range's last queue: the first ones are where running lines bind.
    let queue = crate::link_delay::QUEUE_LAST;
    match BlockingQueue::bind(queue, &config, 1 << 20, std::time::Duration::from_secs(2)) {
        Ok(_) => {}
        // Bound by a running line: the queue works.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && probe_root().ok => {}
        Err(e) => return Probe::no(format!("binding NFQUEUE {queue}: {e}")),
    }
    let q = queue.to_string();
    probe_command(
        "unshare",
        &[
            "--net",
            "iptables",
            "-w",
            "5",
            "-t",
            "mangle",
            "-A",
            "POSTROUTING",
            "-o",
            "lo",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &q,
            "--queue-bypass",
        ],
        "queue bound, iptables NFQUEUE target accepted",
    )
}

/// `uname -r` of this host.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn probe_root() -> Probe {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Probe::no(format!("running as uid {euid}, not root"));
    }
    // CAP_NET_ADMIN is bit 12 of the effective capability set.
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    match cap_eff {
        Some(caps) if caps & (1 << 12) != 0 => Probe::yes("uid 0 with CAP_NET_ADMIN"),
        Some(_) => Probe::no("uid 0 but CAP_NET_ADMIN is not effective"),
        None => Probe::yes("uid 0 (capabilities unreadable)"),
    }
}

fn probe_af_packet() -> Probe {
    let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
    if fd < 0 {
        return Probe::no(format!(
            "socket(AF_PACKET): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a descriptor we own.
    unsafe { libc::close(fd) };
    Probe::yes("raw packet socket opened")
}

/// TCP_REPAIR from linux/tcp.h; not exported by every libc version.
const TCP_REPAIR: libc::c_int = 19;

fn probe_tcp_repair() -> Probe {
    // SAFETY: plain socket(2)/setsockopt(2) calls on a descriptor we own and close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Probe::no(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let on: libc::c_int = 1;
        let rc = libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            TCP_REPAIR,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc == 0 {
            Probe::yes("setsockopt(TCP_REPAIR) accepted")
        } else {
            Probe::no(format!("setsockopt(TCP_REPAIR): {err}"))
        }
    }
}

fn probe_command(cmd: &str, args: &[&str], ok_detail: &str) -> Probe {
    match Command::new(cmd).args(args).output() {
        Err(e) => Probe::no(format!("cannot run {cmd}: {e}")),
        Ok(o) if o.status.success() => Probe::yes(ok_detail),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().next().unwrap_or("").trim();
            Probe::no(format!("`{cmd} {}` failed: {first}", args.join(" ")))
        }
    }
}
