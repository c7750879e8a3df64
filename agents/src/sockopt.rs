//! setsockopt(2) and getsockopt(2) of plain values, for the options std and tokio do not
//! wrap (socket priority, TOS, free bind, TCP repair, ...).

use std::io;
use std::os::fd::AsRawFd;

/// Sets an int-valued option.
pub fn set_int(fd: &impl AsRawFd, level: i32, opt: i32, v: libc::c_int) -> io::Result<()> {
    // SAFETY: pointer and length describe `v`.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads an option into `buf`; returns how many bytes the kernel wrote.
pub fn get_bytes(fd: &impl AsRawFd, level: i32, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for `len` bytes, which the kernel does not exceed.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}
