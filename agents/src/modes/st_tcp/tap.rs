//! The backup's tap (DESIGN §5 st-tcp step 1): an AF_PACKET socket in promiscuous mode on the
//! service interface, which on a hub sees every frame between the clients and the primary.
//! Also the raw-frame sender the takeover's gratuitous ARP uses.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_ARP: u16 = 0x0806;
/// Frames the host itself sent (after takeover, the backup's own segments).
const PACKET_OUTGOING: u8 = 4;
/// Receive buffer asked for: bursts of a fast download must not overflow it.
const RCVBUF: libc::c_int = 64 << 20;

fn htons(v: u16) -> u16 {
    v.to_be()
}

fn ifindex(iface: &str) -> io::Result<libc::c_uint> {
    let name = std::ffi::CString::new(iface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {iface}: {}", io::Error::last_os_error()),
        ));
    }
    Ok(i)
}

fn packet_socket(iface: &str, proto: u16) -> io::Result<(OwnedFd, libc::c_uint)> {
    let index = ifindex(iface)?;
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            htons(proto) as libc::c_int,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = htons(proto);
    sll.sll_ifindex = index as i32;
    // SAFETY: pointer and length describe `sll`.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fd, index))
}

/// A promiscuous capture of every frame on one interface.
pub struct Tap {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

/// Bytes kept of a frame the service sent: its headers (Ethernet, IPv4 and TCP with options
/// fit), as the tracker needs nothing of the server's payload.
const SERVER_SNAP: u32 = 160;

/// A classic BPF filter run by the kernel on every frame: IPv4 only; frames from `vip` cut to
/// their headers, the rest kept whole. The bulk of a download is the server's, so the capture
/// copies (and queues) a fraction of it.
fn attach_filter(fd: &OwnedFd, vip: Ipv4Addr) -> io::Result<()> {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let prog = [
        op(0x28, 0, 0, 12),             // ldh [12]: ethertype
        op(0x15, 0, 4, 0x0800),         // not IPv4 -> drop
        op(0x20, 0, 0, 26),             // ld [26]: IPv4 source
        op(0x15, 0, 1, u32::from(vip)), // from the service?
        op(0x06, 0, 0, SERVER_SNAP),    // yes: headers only
        op(0x06, 0, 0, 256 * 1024),     // no: whole
        op(0x06, 0, 0, 0),              // drop
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `prog`, which outlives the call (the kernel copies it).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Tap {
    /// Opens the capture on `iface`; frames from `vip` are cut to their headers.
    pub fn open(iface: &str, vip: Ipv4Addr) -> io::Result<Tap> {
        let (fd, index) = packet_socket(iface, ETH_P_ALL)?;
        attach_filter(&fd, vip)?;
        // SAFETY: packet_mreq is plain old data; zeroed is valid.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = index as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        // SAFETY: pointer and length describe `mreq`.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::packet_mreq>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Forced size needs CAP_NET_ADMIN (the agent has it); fall back to the capped one.
        if crate::sockopt::set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            let _ = crate::sockopt::set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF);
        }
        // SAFETY: an OwnedFd keeps its descriptor open and the same until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Tap {
            fd,
            // Room for a GSO super-packet as veths hand them over.
            buf: vec![0u8; 256 * 1024],
        })
    }

    /// Waits for frames and calls `f` with each (frames the host sent itself are skipped),
    /// until the socket has nothing more for now.
    pub async fn next_batch(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = 0;
            loop {
                // SAFETY: sockaddr_ll is plain old data.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: buf and from are valid for the lengths given.
                let n = unsafe {
                    libc::recvfrom(
                        guard.get_inner().as_raw_fd(),
                        self.buf.as_mut_ptr() as *mut libc::c_void,
                        self.buf.len(),
                        0,
                        &mut from as *mut _ as *mut libc::sockaddr,
                        &mut len,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        break;
                    }
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                got += 1;
                if from.sll_pkttype != PACKET_OUTGOING {
                    f(&self.buf[..n as usize]);
                }
                // Bounded batches: the backup's heartbeats and checks share its loop.
                if got >= 512 {
                    return Ok(());
                }
            }
            if got > 0 {
                return Ok(());
            }
        }
    }
}

/// The MAC address of `iface`.
pub fn mac_of(iface: &str) -> io::Result<[u8; 6]> {
    // SAFETY: plain socket(2) for an ioctl; owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl filled the hardware-address member of the union.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// A gratuitous ARP frame announcing `ip` at `mac` (an ARP request for itself, broadcast).
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// Sends gratuitous ARPs for `ip` on `iface`: every neighbour updates its entry for it.
pub fn send_garp(iface: &str, ip: Ipv4Addr, count: usize) -> io::Result<()> {
    let (fd, index) = packet_socket(iface, ETH_P_ARP)?;
    let mac = mac_of(iface)?;
    let frame = garp_frame(mac, ip);
    // SAFETY: sockaddr_ll is plain old data.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = htons(ETH_P_ARP);
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for _ in 0..count {
        // SAFETY: frame and `to` are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Tap {
    /// Takes every frame already queued, without waiting.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        loop {
            // SAFETY: sockaddr_ll is plain old data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and from are valid for the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.get_ref().as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n <= 0 {
                return;
            }
            if from.sll_pkttype != PACKET_OUTGOING {
                f(&self.buf[..n as usize]);
            }
        }
    }
}
