//! Small Linux calls both binaries make where a fault's time is taken: the moment a fault took
//! effect is stamped by the thread that made the kernel act, so that thread must neither wait
//! for a child process to be reaped nor be preempted between the act and the stamp.

use std::io;

/// Real-time priority of threads that execute and stamp faults: above every ordinary task
/// (SCHED_OTHER), far below the kernel's own real-time threads.
pub const FAULT_RT_PRIORITY: libc::c_int = 20;

/// Moves the calling thread to SCHED_FIFO at [`FAULT_RT_PRIORITY`], so that on a loaded host
/// (a workload saturating every core) it runs the moment it is woken and is not preempted
/// between a fault's system call and its timestamp. Needs CAP_SYS_NICE (agents and consoles
/// run as root); callers go on at normal priority when it fails. Only for short-lived threads
/// that do a bounded amount of work.
pub fn enter_realtime() -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: FAULT_RT_PRIORITY,
    };
    // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears IFF_UP on interface `name` through `sock` (any AF_INET datagram socket of the
/// interface's network namespace): SIOCGIFFLAGS, then SIOCSIFFLAGS (no `ip` process, whose
/// start, exit and reaping would blur the moment).
pub fn set_link_down(sock: libc::c_int, name: &str) -> io::Result<()> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::other(format!("bad interface name {name:?}")));
    }
    for (d, b) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags member of the ifreq we own.
    unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
        if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Names of the interfaces of the calling thread's network namespace, `lo` included
/// (if_nameindex(3): one netlink dump, no `ip` process).
pub fn interface_names() -> io::Result<Vec<String>> {
    // SAFETY: if_nameindex returns an array ended by an entry with index 0 and a null name,
    // or null on failure; it is read before if_freenameindex frees it.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut names = Vec::new();
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
        Ok(names)
    }
}

/// When a set of links went down: [`LinksDown::at_ns`] is T_fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinksDown {
    /// CLOCK_MONOTONIC right before the first SIOCSIFFLAGS. The device stops sending at the
    /// start of that call (its transmit state is cleared and its qdisc swapped for one that
    /// drops before anything else happens); the call then waits for an RCU grace period and
    /// announces the change over rtnetlink, which on a loaded VM takes up to a few ms. The
    /// fault cannot take effect before this stamp, and takes effect microseconds after it.
    pub at_ns: u64,
    /// CLOCK_MONOTONIC right after the last call returned (the links announced down).
    pub done_ns: u64,
}

impl LinksDown {
    /// How long the calls took, in ms (for a fault's detail).
    pub fn call_ms(&self) -> f64 {
        self.done_ns.saturating_sub(self.at_ns) as f64 / 1e6
    }
}

/// Takes `links` of the calling thread's network namespace down, one SIOCSIFFLAGS each, stamped
/// as [`LinksDown`] says. Stops at the first failure (the error names the link).
pub fn links_down_stamped(links: &[String]) -> Result<LinksDown, String> {
    // SAFETY: a plain datagram socket, closed below, used only for interface ioctls.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    let mut result = Ok(());
    let at_ns = crate::mono_ns();
    for link in links {
        if let Err(e) = set_link_down(sock, link) {
            result = Err(format!("{link}: {e}"));
            break;
        }
    }
    let done_ns = crate::mono_ns();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    result.map(|()| LinksDown { at_ns, done_ns })
}

/// Removes IPv4 address `addr/prefix` from interface `name` of the calling thread's network
/// namespace with one RTM_DELADDR on a NETLINK_ROUTE socket (no `ip` process: a power-off
/// takes the service address away right after the links go down, and a fence must not wait
/// for a process). `Ok(false)` if the interface did not have it.
pub fn delete_ipv4_address(name: &str, addr: std::net::Ipv4Addr, prefix: u8) -> io::Result<bool> {
    const RTM_DELADDR: u16 = 21;
    const NLMSG_ERROR: u16 = 2;
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    const LEN: usize = 16 + 8 + 8 + 8;
    let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex(3) reads the NUL-terminated name we own.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut msg = [0u8; LEN];
    // nlmsghdr: length, type, flags (request, ack), sequence, port id (the kernel's: 0).
    msg[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_DELADDR.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifaddrmsg: family, prefix length, flags, scope, interface index.
    msg[16] = libc::AF_INET as u8;
    msg[17] = prefix;
    msg[20..24].copy_from_slice(&index.to_ne_bytes());
    // Two attributes: the local address and the address, both `addr`.
    for (at, kind) in [(24usize, IFA_LOCAL), (32, IFA_ADDRESS)] {
        msg[at..at + 2].copy_from_slice(&8u16.to_ne_bytes());
        msg[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
        msg[at + 4..at + 8].copy_from_slice(&addr.octets());
    }
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: send(2) of the buffer we own; the kernel is the default destination of a
    // netlink socket.
    if unsafe { libc::send(raw, msg.as_ptr().cast(), LEN, 0) } != LEN as isize {
        return Err(io::Error::last_os_error());
    }
    let mut answer = [0u8; 256];
    // SAFETY: recv(2) into the buffer we own, at most its length.
    let n = unsafe { libc::recv(raw, answer.as_mut_ptr().cast(), answer.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n < 20 || u16::from_ne_bytes([answer[4], answer[5]]) != NLMSG_ERROR {
        return Err(io::Error::other("unexpected netlink answer to RTM_DELADDR"));
    }
    match i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]) {
        0 => Ok(true),
        e if -e == libc::EADDRNOTAVAIL => Ok(false),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_of_this_namespace_include_loopback() {
        let names = interface_names().expect("if_nameindex");
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
        assert!(names.iter().all(|n| !n.is_empty()), "{names:?}");
    }
}
