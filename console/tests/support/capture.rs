//! A packet capture for tests: an AF_PACKET raw socket in a testbed host's namespace that records
//! every IPv4 TCP packet to or from one port, with the moment it was seen on CLOCK_MONOTONIC (the
//! clock every agent on this machine stamps its events with), so a test can hold what happened on
//! the wire against the T_fault an agent or the console reported.
//!
//! The socket lives on a background thread that entered the namespace with `setns`; the test
//! process itself stays where it is. A classic BPF program cuts every packet to its headers
//! before it is queued (a bulk transfer would otherwise fill the queue with payload), and the
//! kernel's own drop counter is read at the end: a capture that lost packets cannot prove that
//! something was *not* sent, so [`Capture::stop`] refuses to return one.
//!
//! Two times per packet: [`Packet::kernel_ns`], the kernel's receive timestamp carried to
//! CLOCK_MONOTONIC, and [`Packet::recv_ns`], `mono_ns()` when this thread got the packet, which
//! is later by however long the thread took to be scheduled (it shares the CPUs with the
//! transfer it watches). [`Packet::at_ns`] is the kernel's when it has a plausible one.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes kept of each packet: Ethernet (14, 18 with a VLAN tag) + IPv4 (≤ 60) + TCP (≤ 60).
const SNAPLEN: u32 = 160;
/// Receive queue of the capture socket.
const RCVBUF: libc::c_int = 64 << 20;
/// How often the capture thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

// Linux ABI values (include/uapi/linux/if_packet.h, asm-generic/socket.h).
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_AUXDATA: libc::c_int = 8;
const SO_TIMESTAMPNS: libc::c_int = 35;
const PACKET_OUTGOING: u8 = 4;
const PACKET_OTHERHOST: u8 = 3;

#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// Which way a packet went, as the capturing host's kernel saw it (`sll_pkttype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received by this host (unicast to it, broadcast or multicast).
    Incoming,
    /// Sent by this host.
    Outgoing,
    /// Seen on the wire but addressed to another host's MAC (a hub floods those).
    OtherHost,
}

/// TCP flags of interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub ack: bool,
}

/// One captured IPv4 TCP packet.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The kernel's receive timestamp carried to CLOCK_MONOTONIC, when it had a plausible one;
    /// otherwise `recv_ns`.
    pub at_ns: u64,
    /// `halab_protocol::mono_ns()` when the capture thread received the packet.
    pub recv_ns: u64,
    /// The kernel's timestamp on CLOCK_MONOTONIC, if it gave one.
    pub kernel_ns: Option<u64>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub flags: Flags,
    /// TCP payload bytes (from the IP header; GSO/GRO packets carry many segments).
    pub payload_len: u32,
    pub direction: Direction,
    /// Interface index the packet was seen on.
    pub ifindex: i32,
}

impl Packet {
    pub fn fin_or_rst(&self) -> bool {
        self.flags.fin || self.flags.rst
    }

    /// Whether the packet's source address is one of `addrs`.
    pub fn sent_by_any(&self, addrs: &[Ipv4Addr]) -> bool {
        addrs.contains(&self.src)
    }

    /// Whether the packet's destination address is one of `addrs`.
    pub fn sent_to_any(&self, addrs: &[Ipv4Addr]) -> bool {
        addrs.contains(&self.dst)
    }

    /// A short line for failure messages and reports.
    pub fn describe(&self) -> String {
        let f = self.flags;
        let flags: String = [(f.syn, 'S'), (f.fin, 'F'), (f.rst, 'R'), (f.ack, '.')]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect();
        format!(
            "{} {}:{} > {}:{} [{flags}] seq {} len {} {:?}",
            self.at_ns,
            self.src,
            self.src_port,
            self.dst,
            self.dst_port,
            self.seq,
            self.payload_len,
            self.direction
        )
    }
}

/// A running capture; [`Capture::stop`] (or drop) ends it.
pub struct Capture {
    ns: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Vec<Packet>, u64)>>,
}

impl Capture {
    /// Starts capturing, in network namespace `ns` (a name under /run/netns), every IPv4 TCP
    /// packet whose source or destination port is `port`. Returns once the socket is open, so
    /// nothing sent after this returns is missed.
    pub fn start(ns: &str, port: u16) -> Capture {
        let path = format!("/run/netns/{ns}");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("capture-{ns}"))
            .spawn(move || {
                let sock = match open(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return (Vec::new(), 0);
                    }
                };
                let _ = ready_tx.send(Ok(()));
                capture_loop(&sock, port, &flag)
            })
            .expect("spawn capture thread");
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("capture in {ns}: {e}"),
            Err(_) => panic!("capture in {ns}: thread ended before its socket was open"),
        }
        Capture {
            ns: ns.to_string(),
            stop,
            thread: Some(thread),
        }
    }

    /// Ends the capture and returns its packets, in the order received. Panics if the kernel
    /// dropped any (its queue overflowed): such a capture cannot show that a packet was absent.
    pub fn stop(mut self) -> Vec<Packet> {
        let (packets, drops) = self.finish();
        assert_eq!(
            drops,
            0,
            "capture in {}: the kernel dropped {drops} packets (of {} kept), so the capture is \
             incomplete",
            self.ns,
            packets.len()
        );
        packets
    }

    /// Ends the capture; returns its packets and how many the kernel dropped.
    pub fn stop_lossy(mut self) -> (Vec<Packet>, u64) {
        self.finish()
    }

    fn finish(&mut self) -> (Vec<Packet>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| panic!("capture in {} panicked", self.ns)),
            None => (Vec::new(), 0),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.finish();
        }
    }
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> Result<(), String> {
    // SAFETY: `value` is a live `T` and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(os_err(&format!("setsockopt({level}, {name})")))
    }
}

/// Enters the namespace at `path` (this thread only) and opens the capture socket there.
fn open(path: &str) -> Result<OwnedFd, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns(2) on an open namespace file; it changes this thread's namespace only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(os_err(&format!("setns {path}")));
    }
    let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2); the fd is owned right below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if raw < 0 {
        return Err(os_err("socket(AF_PACKET, SOCK_RAW)"));
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // Keep only the headers of each packet: `ret #SNAPLEN` accepts it, cut to that length.
    let mut prog = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: SNAPLEN,
    }];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF)?;
    let on: libc::c_int = 1;
    setsockopt(&fd, libc::SOL_SOCKET, SO_TIMESTAMPNS, &on)?;
    setsockopt(&fd, libc::SOL_PACKET, PACKET_AUXDATA, &on)?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: POLL.as_micros() as libc::suseconds_t,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    // Packets queued before the filter was attached were not cut; they are read like any other.
    Ok(fd)
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Receives until `stop` is set; returns the matching packets and the kernel's drop count.
fn capture_loop(sock: &OwnedFd, port: u16, stop: &AtomicBool) -> (Vec<Packet>, u64) {
    let mut packets = Vec::with_capacity(1 << 16);
    let mut buf = [0u8; 256];
    // Room for SCM_TIMESTAMPNS and PACKET_AUXDATA, aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut drops = 0u64;
    loop {
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the pointers are set to live buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: recvmsg(2) into the buffers `msg` points at, all alive for the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    continue;
                }
                _ => panic!("capture recvmsg: {e}"),
            }
        }
        let recv_ns = halab_protocol::mono_ns();
        let real_now = clock(libc::CLOCK_REALTIME);
        let (kernel_real, aux) = control_data(&msg);
        // The kernel stamps CLOCK_REALTIME; carried over by the offset between the two clocks
        // now. A stamp in the future, or from long ago, is not a receive stamp: ignored.
        let kernel_ns = kernel_real
            .filter(|&k| k <= real_now && real_now - k < 10_000_000_000)
            .map(|k| recv_ns - (real_now - k));
        let direction = match addr.sll_pkttype {
            PACKET_OUTGOING => Direction::Outgoing,
            PACKET_OTHERHOST => Direction::OtherHost,
            _ => Direction::Incoming,
        };
        let data = &buf[..(n as usize).min(buf.len())];
        if let Some(p) = parse(data, aux, port) {
            packets.push(Packet {
                at_ns: kernel_ns.unwrap_or(recv_ns),
                recv_ns,
                kernel_ns,
                direction,
                ifindex: addr.sll_ifindex,
                ..p
            });
        }
        // Checked after every packet too, or a busy link would keep the thread here forever.
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    let mut stats = TpacketStats::default();
    let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `stats`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            &mut stats as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        drops += stats.tp_drops as u64;
    }
    (packets, drops)
}

/// The kernel timestamp (CLOCK_REALTIME ns) and auxdata of a received message.
fn control_data(msg: &libc::msghdr) -> (Option<u64>, Option<TpacketAuxdata>) {
    let mut ts = None;
    let mut aux = None;
    // SAFETY: the CMSG_* walk stays within msg_control/msg_controllen as the kernel set them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let h = &*c;
            let data = libc::CMSG_DATA(c);
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == SO_TIMESTAMPNS {
                let t = std::ptr::read_unaligned(data as *const libc::timespec);
                ts = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
            } else if h.cmsg_level == libc::SOL_PACKET && h.cmsg_type == PACKET_AUXDATA {
                aux = Some(std::ptr::read_unaligned(data as *const TpacketAuxdata));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    (ts.filter(|&t| t != 0), aux)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Ethernet → IPv4 → TCP, by hand. None for anything else, or for another port.
fn parse(data: &[u8], aux: Option<TpacketAuxdata>, port: u16) -> Option<Packet> {
    // Where the IP header starts: the kernel says so in the auxdata (VLAN tags already
    // accounted for); otherwise from the Ethernet header.
    let net = match aux {
        Some(a) if a.tp_net as usize >= 14 => a.tp_net as usize,
        _ => {
            let mut at = 12;
            let mut ethertype = be16(data, at)?;
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                at += 4;
                ethertype = be16(data, at)?;
            }
            if ethertype != 0x0800 {
                return None;
            }
            at + 2
        }
    };
    let ip = data.get(net..)?;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != libc::IPPROTO_TCP as u8 {
        return None;
    }
    // Only the first fragment carries the TCP header.
    if be16(ip, 6)? & 0x1fff != 0 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let total = be16(ip, 2)? as usize;
    let src = Ipv4Addr::from(be32(ip, 12)?);
    let dst = Ipv4Addr::from(be32(ip, 16)?);
    let tcp = ip.get(ihl..)?;
    let src_port = be16(tcp, 0)?;
    let dst_port = be16(tcp, 2)?;
    if src_port != port && dst_port != port {
        return None;
    }
    let seq = be32(tcp, 4)?;
    let doff = ((*tcp.get(12)? >> 4) as usize) * 4;
    let f = *tcp.get(13)?;
    // A GSO packet over 64 KiB (BIG TCP) has total length 0; its real length is in the auxdata.
    let ip_len = match (total, aux) {
        (0, Some(a)) => (a.tp_len as usize).saturating_sub(net),
        _ => total,
    };
    Some(Packet {
        at_ns: 0,
        recv_ns: 0,
        kernel_ns: None,
        src,
        dst,
        src_port,
        dst_port,
        seq,
        flags: Flags {
            fin: f & 0x01 != 0,
            syn: f & 0x02 != 0,
            rst: f & 0x04 != 0,
            ack: f & 0x10 != 0,
        },
        payload_len: ip_len.saturating_sub(ihl + doff) as u32,
        direction: Direction::Incoming,
        ifindex: 0,
    })
}

/// One change of a link, as rtnetlink announced it in the watched namespace.
#[derive(Debug, Clone)]
pub struct LinkEvent {
    /// `halab_protocol::mono_ns()` when the announcement was received.
    pub at_ns: u64,
    pub ifindex: i32,
    pub name: String,
    /// IFF_UP: administratively up.
    pub up: bool,
    /// IFF_LOWER_UP: carrier.
    pub lower_up: bool,
    /// RTM_DELLINK: the link was deleted.
    pub deleted: bool,
}

/// A watch on the links of a namespace (rtnetlink, group RTMGRP_LINK): when each went down or
/// up, for comparing a fault's reported time with the moment the kernel acted on it.
pub struct LinkWatch {
    ns: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<LinkEvent>>>,
}

impl LinkWatch {
    /// Starts watching namespace `ns`; returns once subscribed.
    pub fn start(ns: &str) -> LinkWatch {
        let path = format!("/run/netns/{ns}");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("links-{ns}"))
            .spawn(move || {
                let sock = match open_rtnetlink(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Vec::new();
                    }
                };
                // Announcements are stamped when read: at real-time priority the thread reads
                // them the moment they arrive, however busy the cores are.
                if let Err(e) = halab_protocol::sys::enter_realtime() {
                    let _ = ready_tx.send(Err(format!("real-time priority: {e}")));
                    return Vec::new();
                }
                let _ = ready_tx.send(Ok(()));
                link_loop(&sock, &flag)
            })
            .expect("spawn link watch thread");
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("link watch in {ns}: {e}"),
            Err(_) => panic!("link watch in {ns}: thread ended before it subscribed"),
        }
        LinkWatch {
            ns: ns.to_string(),
            stop,
            thread: Some(thread),
        }
    }

    /// Ends the watch; returns the events in the order received.
    pub fn stop(mut self) -> Vec<LinkEvent> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<LinkEvent> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| panic!("link watch in {} panicked", self.ns)),
            None => Vec::new(),
        }
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.finish();
        }
    }
}

const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_IFNAME: u16 = 3;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x10000;

fn open_rtnetlink(path: &str) -> Result<OwnedFd, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns(2) on an open namespace file; it changes this thread's namespace only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(os_err(&format!("setns {path}")));
    }
    // SAFETY: plain socket(2); the fd is owned right below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(os_err("socket(AF_NETLINK)"));
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl is valid; family and groups set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = RTMGRP_LINK;
    // SAFETY: bind(2) with a sockaddr_nl and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_err("bind(RTMGRP_LINK)"));
    }
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &(4 << 20))?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: POLL.as_micros() as libc::suseconds_t,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    Ok(fd)
}

fn ne16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn ne32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn link_loop(sock: &OwnedFd, stop: &AtomicBool) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: recv(2) into a live buffer of the given length.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                _ => panic!("link watch recv: {e}"),
            }
        }
        let at_ns = halab_protocol::mono_ns();
        let data = &buf[..n as usize];
        let mut off = 0;
        // nlmsghdr (16 bytes) + ifinfomsg (16 bytes) + rtattrs, each 4-byte aligned.
        while let (Some(len), Some(kind)) = (ne32(data, off), ne16(data, off + 4)) {
            let len = len as usize;
            if len < 16 || off + len > data.len() {
                break;
            }
            let msg = &data[off..off + len];
            if let (RTM_NEWLINK | RTM_DELLINK, Some(ifindex), Some(flags)) =
                (kind, ne32(msg, 20), ne32(msg, 24))
            {
                let mut name = String::new();
                let mut a = 32;
                while let (Some(alen), Some(atype)) = (ne16(msg, a), ne16(msg, a + 2)) {
                    let alen = alen as usize;
                    if alen < 4 || a + alen > msg.len() {
                        break;
                    }
                    if atype == IFLA_IFNAME {
                        name = String::from_utf8_lossy(&msg[a + 4..a + alen])
                            .trim_end_matches('\0')
                            .to_string();
                    }
                    a += (alen + 3) & !3;
                }
                events.push(LinkEvent {
                    at_ns,
                    ifindex: ifindex as i32,
                    name,
                    up: flags & IFF_UP != 0,
                    lower_up: flags & IFF_LOWER_UP != 0,
                    deleted: kind == RTM_DELLINK,
                });
            }
            off += (len + 3) & !3;
        }
    }
    events
}
