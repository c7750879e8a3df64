//! A heartbeat forger for st-tcp (issue 13, must hold 4): from a host namespace it sends HST1
//! datagrams that look like real heartbeats (right magic, a well-formed `Heartbeat`, the
//! claimed sender's name, its link and even its source address) but are sealed under a key
//! made up here, so their HMAC tag is wrong. The datagrams are built whole (IPv4 + UDP) on a
//! raw socket, so the source address can be the claimed sender's without the forging host
//! taking that address (no ARP answer of its own, nothing changes for the real hosts).
//!
//! Optionally gated on a link of another namespace: forging starts when that link goes down
//! (the primary powered off) and stops when it comes up again (the primary powered on).

use halab_protocol::modes::st_tcp::{
    ConnProgress, HEARTBEAT_MAGIC, HEARTBEAT_PORT, Heartbeat, Link,
};
use halab_protocol::sealed::Key;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A connection as the beats name it: client address, client port, service port.
pub type ConnKey = ([u8; 4], u16, u16);

/// A key nobody else has: what a forger without the testbed's key can do at best.
pub const FORGED_KEY: &str = "f0f0f0f0deadbeefcafebabe0badf00d";

/// One stream of forged beats.
#[derive(Debug, Clone)]
pub struct Target {
    /// Source address written into the datagram (the claimed sender's address on `link`).
    pub src: Ipv4Addr,
    /// Where it goes (the receiver's address on `link`), UDP port [`HEARTBEAT_PORT`].
    pub dst: Ipv4Addr,
    /// The `link` the beat claims.
    pub link: Link,
    /// The `from` the beat claims.
    pub from: String,
}

/// Where the forger learns the connections it writes into its beats (as the primary reports
/// them, or as the backup confirms their closes): the client namespace's established
/// connections to the service address.
#[derive(Debug, Clone)]
pub struct ConnSource {
    pub client_ns: String,
    pub vip: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub struct Spec {
    /// The namespace the datagrams leave from.
    pub ns: String,
    pub targets: Vec<Target>,
    /// Pause between two rounds (one datagram per target each).
    pub every: Duration,
    /// Forge only while this interface of this namespace is down.
    pub gate: Option<(String, String)>,
    /// Fill the beats with the live connections: stale progress (all zero) and a held FIN
    /// for each, from the "primary"; a confirmed close at byte 0, from the "backup". A receiver
    /// that believed them would see a hung application and a held FIN, or let a FIN go early.
    pub conns: Option<ConnSource>,
}

/// What the forger did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sent: u64,
    pub failed: u64,
    /// When the first forged datagram left (monotonic ns, the agents' and console's clock).
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Every datagram sent: its destination and when it left.
    pub sent_to: Vec<(Ipv4Addr, u64)>,
    pub error: Option<String>,
}

impl Report {
    /// The figures without the list of datagrams.
    pub fn brief(&self) -> String {
        format!(
            "{} forged datagrams sent ({} failed{}), first at {:?} ns, last at {:?} ns",
            self.sent,
            self.failed,
            self.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
            self.first_ns,
            self.last_ns
        )
    }

    /// Datagrams sent to any of `dst` in (`from_ns`, `to_ns`].
    pub fn sent_between(&self, dst: &[Ipv4Addr], from_ns: u64, to_ns: u64) -> u64 {
        self.sent_to
            .iter()
            .filter(|(d, t)| dst.contains(d) && *t > from_ns && *t <= to_ns)
            .count() as u64
    }
}

pub struct Forger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Report>>,
}

fn mono_ns() -> u64 {
    halab_protocol::mono_ns()
}

/// A socket created inside namespace `ns` (it stays in that namespace whoever uses it).
pub fn socket_in(ns: &str, domain: i32, ty: i32, proto: i32) -> OwnedFd {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this short-lived thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
        assert!(
            fd >= 0,
            "socket in {path}: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor we own.
        unsafe { OwnedFd::from_raw_fd(fd) }
    })
    .join()
    .expect("socket thread")
}

/// Whether interface `iface` is up, asked through `sock` (a socket of its namespace).
pub fn link_up(sock: &OwnedFd, iface: &str) -> Option<bool> {
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS with a valid ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the kernel filled the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Some(flags as i32 & libc::IFF_UP != 0)
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for c in chunks {
        for &b in *c {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 + UDP datagram from `src`:`port` to `dst`:`port` carrying `payload`.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let total = 20 + udp_len;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = libc::IPPROTO_UDP as u8;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&port.to_be_bytes());
    udp[2..4].copy_from_slice(&port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = libc::IPPROTO_UDP as u8;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let mut c = checksum(&[&pseudo, &udp, payload]);
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&udp);
    out.extend_from_slice(payload);
    out
}

/// The client namespace's established connections to `vip`: (client address, client port,
/// service port).
fn live_connections(src: &ConnSource) -> Vec<ConnKey> {
    let Ok(out) = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &src.client_ns,
            "ss",
            "-Htn",
            "state",
            "established",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let addrs: Vec<SocketAddrV4> = l
                .split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect();
            let (local, peer) = (addrs.first()?, addrs.get(1)?);
            (*peer.ip() == src.vip).then(|| (local.ip().octets(), local.port(), peer.port()))
        })
        .collect()
}

/// The forged beat of `t`, number `seq`.
pub fn forged_beat(
    key: &Key,
    t: &Target,
    incarnation: u64,
    seq: u64,
    conns: &[ConnKey],
) -> Vec<u8> {
    let from_backup = t.from.contains("backup");
    let beat = Heartbeat {
        from: t.from.clone(),
        incarnation,
        seq,
        link: t.link,
        conns: if from_backup {
            Vec::new()
        } else {
            conns
                .iter()
                .map(|&(client, client_port, port)| ConnProgress {
                    client,
                    client_port,
                    port,
                    last_byte_received: 0,
                    last_ack_received: 0,
                    last_app_byte_written: 0,
                    last_app_byte_read: 0,
                })
                .collect()
        },
        held_fins: if from_backup {
            Vec::new()
        } else {
            conns.to_vec()
        },
        fin_ok: if from_backup {
            conns.iter().map(|&(a, p, s)| (a, p, s, 0)).collect()
        } else {
            Vec::new()
        },
        tracking: Vec::new(),
    };
    let body = serde_json::to_vec(&beat).expect("a heartbeat serializes");
    key.seal(HEARTBEAT_MAGIC, &body)
}

impl Forger {
    pub fn start(spec: Spec) -> Forger {
        let stop = Arc::new(AtomicBool::new(false));
        let raw = socket_in(&spec.ns, libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        let gate = spec.gate.as_ref().map(|(ns, iface)| {
            (
                socket_in(ns, libc::AF_INET, libc::SOCK_DGRAM, 0),
                iface.clone(),
            )
        });
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || run(spec, raw, gate, &stop))
        };
        Forger {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops forging; what was sent.
    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("forger thread"))
            .unwrap_or_default()
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(spec: Spec, raw: OwnedFd, gate: Option<(OwnedFd, String)>, stop: &AtomicBool) -> Report {
    let key = Key::from_hex(FORGED_KEY).expect("hex key");
    let mut report = Report::default();
    // A restarted sender as far as a receiver could tell: a newer incarnation than any real
    // one, so a receiver that believed it would take it over the real beats.
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        + 1_000_000_000;
    // The live connections, read by a thread of their own so that the rounds keep their pace.
    let conns: Arc<Mutex<Vec<ConnKey>>> = Arc::default();
    let poll_stop = Arc::new(AtomicBool::new(false));
    let poller = spec.conns.clone().map(|src| {
        let (conns, poll_stop) = (conns.clone(), poll_stop.clone());
        std::thread::spawn(move || {
            while !poll_stop.load(Ordering::SeqCst) {
                let live = live_connections(&src);
                *conns.lock().unwrap_or_else(|p| p.into_inner()) = live;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let mut seq = 0u64;
    let mut was_down = false;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if let Some((sock, iface)) = &gate {
            match link_up(sock, iface) {
                Some(false) => {
                    if !was_down {
                        next = Instant::now();
                    }
                    was_down = true;
                }
                Some(true) if was_down => break, // powered on again: done
                _ => {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
            }
        }
        let live = conns.lock().unwrap_or_else(|p| p.into_inner()).clone();
        seq += 1;
        for t in &spec.targets {
            let payload = forged_beat(&key, t, incarnation, seq, &live);
            let packet = ipv4_udp(t.src, t.dst, HEARTBEAT_PORT, &payload);
            // SAFETY: sockaddr_in is plain data.
            let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            to.sin_family = libc::AF_INET as libc::sa_family_t;
            to.sin_addr.s_addr = u32::from_ne_bytes(t.dst.octets());
            // SAFETY: sendto with a buffer and address that outlive the call.
            let n = unsafe {
                libc::sendto(
                    raw.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n == packet.len() as isize {
                let now = mono_ns();
                report.sent += 1;
                report.first_ns.get_or_insert(now);
                report.last_ns = Some(now);
                report.sent_to.push((t.dst, now));
            } else {
                report.failed += 1;
                report.error = Some(std::io::Error::last_os_error().to_string());
            }
        }
        // A fixed pace: one round every `every`, a late round not made up for.
        next += spec.every;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        std::thread::sleep(next - now);
    }
    poll_stop.store(true, Ordering::SeqCst);
    if let Some(p) = poller {
        let _ = p.join();
    }
    report
}
