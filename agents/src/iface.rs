//! Interface state, read in the caller's network namespace.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Whether `iface` is up and has carrier.
pub fn link_up(iface: &str) -> bool {
    // SAFETY: plain socket(2) for an ioctl.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return false;
    }
    // SAFETY: the ioctl filled the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags } as libc::c_int;
    flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
}
