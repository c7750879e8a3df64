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
/// interface's network namespace): SIOCGIFFLAGS, then SIOCSIFFLAGS. The ioctl returns once the
/// kernel has stopped the device, so a stamp taken right after is within microseconds of the
/// link going down (an `ip` process would add its own exit and reaping).
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

/// Takes `links` of the calling thread's network namespace down, one SIOCSIFFLAGS each, and
/// returns CLOCK_MONOTONIC right after the last one went down. Stops at the first failure
/// (the error names the link).
pub fn links_down_stamped(links: &[String]) -> Result<u64, String> {
    // SAFETY: a plain datagram socket, closed below, used only for interface ioctls.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    let mut result = Ok(());
    for link in links {
        if let Err(e) = set_link_down(sock, link) {
            result = Err(format!("{link}: {e}"));
            break;
        }
    }
    let at = crate::mono_ns();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    result.map(|()| at)
}
