//! The delay line's benchmark (issue 15, "Must hold" 3): the highest rate it sustains at 20 ms
//! with under 0.1 % of the packets lost, and the latency error it adds.
//!
//! Three namespaces, `b` — `a` — `c`, joined by veth pairs, `a` forwarding between them; the
//! delay line (the agent's own code, `halab_agent::link_delay`) runs in namespace `a`, as a
//! delay fault's would. A UDP blast of 1500-byte IP packets, paced at a rate stepped up until
//! more than 0.1 % is lost or the line's releases run late, crosses it:
//! - `in`: from `b` through `a` to `c`, delayed as it enters `a` (PREROUTING, as for packets to
//!   `a` itself);
//! - `out`: from `a` to `b`, delayed as it leaves `a`;
//! - `none`: from `b` through `a` to `c` without a line: what the machine itself carries.
//!
//! Every packet carries its send time (CLOCK_REALTIME), and the receiver takes the kernel's
//! receive stamp (SO_TIMESTAMPNS), always behind the line (why `in` is measured through `a`
//! rather than to it: the kernel stamps a packet as its device hands it over, before
//! PREROUTING and so before an ingress line), so the receiving thread's own scheduling is not
//! counted. The latency error is the one-way time minus the 20 ms (the path's own few µs
//! included). The line's own release lateness (verdict sent minus release time) is shown
//! beside it. Then a TCP bulk transfer each way through the same 20 ms, to and from `a`.
//!
//! Run: `cargo bench -p halab-agent --bench delay_line` (root; namespaces are removed at the
//! end, on a panic too). `HALAB_BENCH_RT=1` runs the line's threads at real-time priority.
//! A step that cannot be set up panics (`expect`) with what failed: it is a benchmark.

#[path = "../tests/support/netns.rs"]
mod netns;

use halab_agent::link_delay::stats::DirectionStats;
use halab_agent::link_delay::{DelayLink, Spec, StopReport};
use netns::{in_ns, must, remove_namespace, run};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NS_A: &str = "hlb-dly-a";
const NS_B: &str = "hlb-dly-b";
const NS_C: &str = "hlb-dly-c";
const ADDR_A: &str = "10.203.77.1";
const ADDR_B: &str = "10.203.77.2";
/// `a`'s address towards `c`, and `c`'s.
const ADDR_AC: &str = "10.203.78.1";
const ADDR_C: &str = "10.203.78.2";
const DELAY_MS: u64 = 20;
/// UDP payload of a 1500-byte IP packet.
const PAYLOAD: usize = 1472;
const WIRE_BYTES: u64 = 1500;
const STEP: Duration = Duration::from_secs(2);
const RATES_MBIT: [u64; 10] = [100, 250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000];
const LOSS_LIMIT: f64 = 0.001;
/// A line that lets packets go later than this (p99 of its own release lateness) is not keeping
/// its delay at that rate, lost packets or not: the stepping stops there too.
const LATENESS_LIMIT_NS: u64 = 2_000_000;
/// The rate the targets are checked at.
const TARGET_MBIT: u64 = 1000;

fn main() {
    // HALAB_BENCH_RT=1: the line's threads at real-time priority (`Spec::realtime`).
    let realtime = std::env::var("HALAB_BENCH_RT").as_deref() == Ok("1");
    REALTIME.store(realtime, Ordering::SeqCst);
    if let Err(why) = can_run() {
        println!("delay_line: skipped: {why}");
        return;
    }
    let _guard = Namespaces::create();
    println!(
        "delay line benchmark: {DELAY_MS} ms, UDP packets of {WIRE_BYTES} bytes (IP), {} s per step, \
         {} cores, line threads at {} priority",
        STEP.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if realtime { "real-time" } else { "normal" }
    );
    println!(
        "{:<5} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "way",
        "target",
        "sent",
        "received",
        "lost %",
        "line",
        "kernel",
        "err p50",
        "err p99",
        "late p50",
        "late p99"
    );
    let mut best = Vec::new();
    for way in [Way::None, Way::In, Way::Out] {
        let mut top: Option<Step> = None;
        let mut first: Option<(f64, f64)> = None;
        let mut at_target: Option<(f64, f64)> = None;
        for mbit in RATES_MBIT {
            let s = udp_step(way, mbit * 1_000_000);
            s.print();
            // A sender that cannot reach the rate is the machine's limit, not the line's.
            let paced = s.sent_mbit() >= 0.95 * mbit as f64;
            let late = s.line_dir().map_or(0, |d| d.lateness.quantile_ns(0.99));
            if s.loss() >= LOSS_LIMIT || !paced || late > LATENESS_LIMIT_NS {
                let why = if !paced {
                    format!("the sender reached only {:.0} Mbit/s", s.sent_mbit())
                } else if late > LATENESS_LIMIT_NS {
                    format!(
                        "the line's releases were late by up to {:.3} ms (p99)",
                        late as f64 / 1e6
                    )
                } else {
                    format!("{:.3} % lost", s.loss() * 100.0)
                };
                println!("{:<5} at {mbit} Mbit/s {why}: stepping stops", way.name());
                break;
            }
            first.get_or_insert((s.error_ms(0.5), s.error_ms(0.99)));
            if mbit == TARGET_MBIT {
                at_target = Some((s.error_ms(0.5), s.error_ms(0.99)));
            }
            top = Some(s);
        }
        best.push((way, top, first, at_target));
    }
    println!();
    for (way, top, first, _) in &best {
        match top {
            Some(s) => println!(
                "{:<5} highest rate sustained (< 0.1 % lost, releases on time): {:.0} Mbit/s \
                 ({:.0} kpps); latency error there p50 {:.3} ms, p99 {:.3} ms; at {} Mbit/s p50 \
                 {:.3} ms, p99 {:.3} ms{}",
                way.name(),
                s.received_mbit(),
                s.received as f64 / s.seconds / 1e3,
                s.error_ms(0.5),
                s.error_ms(0.99),
                RATES_MBIT[0],
                first.map_or(f64::NAN, |f| f.0),
                first.map_or(f64::NAN, |f| f.1),
                match *way {
                    Way::None => " (no line: the path's own one-way time, minus nothing)",
                    _ => "",
                }
            ),
            None => println!(
                "{:<5} not even {} Mbit/s with < 0.1 % lost",
                way.name(),
                RATES_MBIT[0]
            ),
        }
    }
    for (way, top, _, at_target) in &best {
        if *way == Way::None {
            continue;
        }
        let rate = top.as_ref().map_or(0.0, |s| s.received_mbit());
        let (p50, p99) = at_target.unwrap_or((f64::NAN, f64::NAN));
        let (top50, top99) = top.as_ref().map_or((f64::NAN, f64::NAN), |s| {
            (s.error_ms(0.5), s.error_ms(0.99))
        });
        println!(
            "target {}: rate ≥ {TARGET_MBIT} Mbit/s {}; at {TARGET_MBIT} Mbit/s error p50 ≤ 0.5 ms \
             {} ({p50:.3}), p99 ≤ 2 ms {} ({p99:.3}); at the highest rate p50 ≤ 0.5 ms {} \
             ({top50:.3}), p99 ≤ 2 ms {} ({top99:.3})",
            way.name(),
            verdict(rate >= TARGET_MBIT as f64),
            verdict(p50 <= 0.5),
            verdict(p99 <= 2.0),
            verdict(top50 <= 0.5),
            verdict(top99 <= 2.0),
        );
    }
    println!();
    for way in [Way::In, Way::Out] {
        tcp_bulk(way);
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn can_run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces, iptables, NFQUEUE)".into());
    }
    run(&["ip", "netns", "list"]).map(|_| ())
}

/// The two namespaces and their veth pair; removed on drop (a panic included).
struct Namespaces;

impl Namespaces {
    fn create() -> Namespaces {
        for ns in [NS_A, NS_B, NS_C] {
            remove_namespace(ns);
        }
        let g = Namespaces;
        for ns in [NS_A, NS_B, NS_C] {
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for (la, peer_ns, lp, aa, ap) in [
            ("hbd-a", NS_B, "hbd-b", ADDR_A, ADDR_B),
            ("hbd-ac", NS_C, "hbd-c", ADDR_AC, ADDR_C),
        ] {
            must(&[
                "ip", "link", "add", la, "netns", NS_A, "type", "veth", "peer", "name", lp,
                "netns", peer_ns,
            ]);
            must(&[
                "ip",
                "-n",
                NS_A,
                "addr",
                "add",
                &format!("{aa}/24"),
                "dev",
                la,
            ]);
            must(&[
                "ip",
                "-n",
                peer_ns,
                "addr",
                "add",
                &format!("{ap}/24"),
                "dev",
                lp,
            ]);
            must(&["ip", "-n", NS_A, "link", "set", la, "up"]);
            must(&["ip", "-n", peer_ns, "link", "set", lp, "up"]);
        }
        must(&[
            "ip",
            "netns",
            "exec",
            NS_A,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        must(&["ip", "-n", NS_B, "route", "add", "default", "via", ADDR_A]);
        must(&["ip", "-n", NS_C, "route", "add", "default", "via", ADDR_AC]);
        // Wait for every link to carry traffic (and ARP to be resolved) before measuring.
        let start = Instant::now();
        while run(&[
            "ip", "netns", "exec", NS_B, "ping", "-c", "1", "-W", "1", ADDR_C,
        ])
        .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the path never came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [NS_A, NS_B, NS_C] {
            remove_namespace(ns);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    None,
    In,
    Out,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::None => "none",
            Way::In => "in",
            Way::Out => "out",
        }
    }

    /// The UDP blast's (sender's namespace and address, receiver's namespace and address).
    fn ends(self) -> ((&'static str, &'static str), (&'static str, &'static str)) {
        match self {
            Way::None | Way::In => ((NS_B, ADDR_B), (NS_C, ADDR_C)),
            Way::Out => ((NS_A, ADDR_A), (NS_B, ADDR_B)),
        }
    }

    /// The TCP transfer's ends: to and from `a` itself.
    fn tcp_ends(self) -> ((&'static str, &'static str), (&'static str, &'static str)) {
        match self {
            Way::None | Way::In => ((NS_B, ADDR_B), (NS_A, ADDR_A)),
            Way::Out => ((NS_A, ADDR_A), (NS_B, ADDR_B)),
        }
    }

    fn spec(self) -> Option<Spec> {
        let mut s = Spec::new(DELAY_MS * 1_000_000, 0);
        s.interface = Some("hbd-a".into());
        s.realtime = REALTIME.load(Ordering::SeqCst);
        match self {
            Way::None => return None,
            Way::In => {
                s.egress = false;
                s.ingress = true;
            }
            Way::Out => {}
        }
        Some(s)
    }
}

fn setsockopt(fd: i32, level: i32, name: i32, value: i32) {
    // SAFETY: setsockopt(2) with an int value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {name}: {}",
        std::io::Error::last_os_error()
    );
}

fn realtime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) into a timespec of this frame.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// One step: what was sent and received, and what the line says.
struct Step {
    way: Way,
    target_bps: u64,
    sent: u64,
    received: u64,
    seconds: f64,
    /// One-way time minus the delay, ns, sorted.
    errors: Vec<i64>,
    line: Option<StopReport>,
}

impl Step {
    fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - self.received as f64 / self.sent as f64
    }

    fn sent_mbit(&self) -> f64 {
        (self.sent * WIRE_BYTES * 8) as f64 / self.seconds / 1e6
    }

    fn received_mbit(&self) -> f64 {
        (self.received * WIRE_BYTES * 8) as f64 / self.seconds / 1e6
    }

    fn error_ms(&self, p: f64) -> f64 {
        if self.errors.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * self.errors.len() as f64).ceil() as usize).clamp(1, self.errors.len());
        self.errors[rank - 1] as f64 / 1e6
    }

    fn line_dir(&self) -> Option<&DirectionStats> {
        self.line.as_ref().and_then(|r| r.directions.first())
    }

    fn print(&self) {
        let d = self.line_dir();
        let ms = |ns: u64| ns as f64 / 1e6;
        println!(
            "{:<5} {:>9} {:>9.0} {:>9.0} {:>8.3} {:>7} {:>8} {:>10.3} {:>10.3} {:>10} {:>10}",
            self.way.name(),
            self.target_bps / 1_000_000,
            self.sent_mbit(),
            self.received_mbit(),
            self.loss() * 100.0,
            d.map_or("-".into(), |d| d.counters.dropped_packets.to_string()),
            d.map_or("-".into(), |d| d
                .kernel_dropped
                .map_or("?".into(), |k| k.to_string())),
            self.error_ms(0.5),
            self.error_ms(0.99),
            d.map_or("-".into(), |d| format!(
                "{:.3}",
                ms(d.lateness.quantile_ns(0.5))
            )),
            d.map_or("-".into(), |d| format!(
                "{:.3}",
                ms(d.lateness.quantile_ns(0.99))
            )),
        );
        if let Some(r) = &self.line
            && !r.problems.is_empty()
        {
            println!("      line problems: {}", r.problems.join("; "));
        }
    }
}

const BATCH: usize = 32;
static REALTIME: AtomicBool = AtomicBool::new(false);

fn udp_step(way: Way, target_bps: u64) -> Step {
    let ((tx_ns, tx_addr), (rx_ns, rx_addr)) = way.ends();
    let rx_bind: SocketAddr = format!("{rx_addr}:0").parse().expect("address");
    let rx = in_ns(rx_ns, move || {
        let s = UdpSocket::bind(rx_bind).expect("bind receiver");
        setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            256 << 20,
        );
        setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1);
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        s
    });
    let dest = rx.local_addr().expect("receiver address");
    let tx_bind: SocketAddr = format!("{tx_addr}:0").parse().expect("address");
    let tx = in_ns(tx_ns, move || {
        let s = UdpSocket::bind(tx_bind).expect("bind sender");
        // Room for everything in flight through the line: a packet the host sends stays
        // charged to its socket while it waits in the queue.
        setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            256 << 20,
        );
        s.connect(dest).expect("connect");
        s
    });
    let link = way.spec().map(|spec| {
        in_ns(NS_A, move || {
            DelayLink::start(&spec).unwrap_or_else(|e| panic!("delay line: {e:?}"))
        })
    });
    std::thread::sleep(Duration::from_millis(50));

    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || receive(rx, &done))
    };
    let (sent, seconds) = blast(&tx, target_bps);
    done.store(true, Ordering::SeqCst);
    let (received, mut errors) = receiver.join().expect("receiver");
    let line = link.map(|l| in_ns(NS_A, move || l.stop()));
    let delay = if way == Way::None {
        0
    } else {
        (DELAY_MS * 1_000_000) as i64
    };
    for e in &mut errors {
        *e -= delay;
    }
    errors.sort_unstable();
    Step {
        way,
        target_bps,
        sent,
        received,
        seconds,
        errors,
        line,
    }
}

/// Sends numbered, stamped datagrams at `bps` (counting 1500-byte IP packets) for [`STEP`];
/// returns how many and over how long.
fn blast(tx: &UdpSocket, bps: u64) -> (u64, f64) {
    let pps = bps as f64 / (WIRE_BYTES * 8) as f64;
    let interval = Duration::from_secs_f64(BATCH as f64 / pps);
    let total = (pps * STEP.as_secs_f64()) as u64;
    let mut bufs = vec![[0u8; PAYLOAD]; BATCH];
    let start = Instant::now();
    let mut seq = 0u64;
    let mut k = 0u32;
    while seq < total {
        let due = start + interval * k;
        let now = Instant::now();
        if now < due {
            if due - now > Duration::from_micros(200) {
                std::thread::sleep(due - now - Duration::from_micros(100));
            }
            continue;
        }
        let n = BATCH.min((total - seq) as usize);
        let stamp = realtime_ns();
        for (i, b) in bufs.iter_mut().take(n).enumerate() {
            b[..8].copy_from_slice(&(seq + i as u64).to_le_bytes());
            b[8..16].copy_from_slice(&stamp.to_le_bytes());
        }
        // SAFETY (for the zeroed values): iovec and mmsghdr are plain old data.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for ((v, h), b) in iov
            .iter_mut()
            .zip(hdrs.iter_mut())
            .zip(bufs.iter_mut())
            .take(n)
        {
            v.iov_base = b.as_mut_ptr() as *mut libc::c_void;
            v.iov_len = PAYLOAD;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut off = 0;
        while off < n {
            // SAFETY: the headers point at iovecs and buffers of this frame.
            let r = unsafe {
                libc::sendmmsg(
                    tx.as_raw_fd(),
                    hdrs[off..].as_mut_ptr(),
                    (n - off) as u32,
                    0,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                // ENOBUFS and the like: the datagram is lost, as on a wire; move on.
                if e.kind() != std::io::ErrorKind::Interrupted {
                    off += 1;
                }
                continue;
            }
            off += r as usize;
        }
        seq += n as u64;
        k += 1;
    }
    (seq, start.elapsed().as_secs_f64())
}

/// Receives until `done` and then 300 ms of quiet (the line's 20 ms, and more); returns the
/// number of distinct datagrams and each one's one-way time (ns), to the kernel's receive
/// stamp.
fn receive(rx: UdpSocket, done: &AtomicBool) -> (u64, Vec<i64>) {
    const N: usize = 64;
    let mut bufs = vec![[0u8; 64]; N];
    let mut ctrl = vec![[0u64; 16]; N];
    let mut seen: Vec<bool> = Vec::new();
    let mut distinct = 0u64;
    let mut times = Vec::new();
    let mut quiet_since: Option<Instant> = None;
    loop {
        // SAFETY (for the zeroed values): iovec and mmsghdr are plain old data.
        let mut iov: [libc::iovec; N] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
        for (((v, h), b), c) in iov
            .iter_mut()
            .zip(hdrs.iter_mut())
            .zip(bufs.iter_mut())
            .zip(ctrl.iter_mut())
        {
            v.iov_base = b.as_mut_ptr() as *mut libc::c_void;
            v.iov_len = b.len();
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = c.as_mut_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_controllen = std::mem::size_of_val(c);
        }
        // SAFETY: the headers point at iovecs, buffers and control buffers of this frame; the
        // socket's receive timeout bounds the wait.
        let n = unsafe {
            libc::recvmmsg(
                rx.as_raw_fd(),
                hdrs.as_mut_ptr(),
                N as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            if done.load(Ordering::SeqCst) {
                let q = *quiet_since.get_or_insert_with(Instant::now);
                if q.elapsed() > Duration::from_millis(300) {
                    break;
                }
            }
            continue;
        }
        quiet_since = None;
        for (i, h) in hdrs.iter().take(n as usize).enumerate() {
            let b = &bufs[i];
            let seq = u64::from_le_bytes(b[..8].try_into().unwrap_or_default()) as usize;
            let sent = i64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
            if seq >= seen.len() {
                seen.resize(seq + 1, false);
            }
            if !std::mem::replace(&mut seen[seq], true) {
                distinct += 1;
            }
            if let Some(at) = rx_stamp(&h.msg_hdr) {
                times.push(at - sent);
            }
        }
    }
    (distinct, times)
}

/// The kernel's receive stamp (SCM_TIMESTAMPNS, CLOCK_REALTIME) of a received message.
fn rx_stamp(msg: &libc::msghdr) -> Option<i64> {
    // SAFETY: the CMSG_* walk stays within the control buffer the kernel filled
    // (`msg_controllen`), and a timespec is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// A TCP bulk transfer through the 20 ms line for 5 s: its throughput and the line's drops.
fn tcp_bulk(way: Way) {
    let ((tx_ns, _), (rx_ns, rx_addr)) = way.tcp_ends();
    let bind: SocketAddr = format!("{rx_addr}:0").parse().expect("address");
    let listener = in_ns(rx_ns, move || TcpListener::bind(bind).expect("listen"));
    let dest = listener.local_addr().expect("listener address");
    let link = way.spec().map(|spec| {
        in_ns(NS_A, move || {
            DelayLink::start(&spec).unwrap_or_else(|e| panic!("delay line: {e:?}"))
        })
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut first = None;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    first.get_or_insert_with(Instant::now);
                    total += n as u64;
                }
            }
        }
        (total, first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
    });
    let mut client = in_ns(tx_ns, move || {
        TcpStream::connect_timeout(&dest, Duration::from_secs(5)).expect("connect")
    });
    let chunk = vec![0x5au8; 256 << 10];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if client.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(client);
    let (bytes, secs) = server.join().expect("server");
    let line = link.map(|l| in_ns(NS_A, move || l.stop()));
    let d = line.as_ref().and_then(|r| r.directions.first());
    println!(
        "TCP bulk {:<3} through {DELAY_MS} ms: {:.0} Mbit/s over {secs:.1} s; line: {}",
        way.name(),
        bytes as f64 * 8.0 / secs.max(1e-9) / 1e6,
        d.map_or("-".to_string(), |d| d.to_string())
    );
}
