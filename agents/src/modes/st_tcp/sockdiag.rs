//! The primary's view of its connections without touching its application (thesis §3.6.1):
//! a NETLINK_SOCK_DIAG dump of its TCP sockets with `tcp_info`, from which each heartbeat's
//! LastByteReceived / LastAckReceived / LastAppByteWritten / LastAppByteRead come.

use crate::netlink::{NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, u32_at, u64_at};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
const TCP_LISTEN: u8 = 10;
/// Offsets in struct tcp_info (include/uapi/linux/tcp.h).
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;

/// One TCP socket of the host, as sock_diag reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockInfo {
    pub state: u8,
    pub local: Ipv4Addr,
    pub local_port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
    /// Bytes received but not read by the application.
    pub rqueue: u32,
    /// Bytes written but not acknowledged by the peer.
    pub wqueue: u32,
    pub bytes_acked: u64,
    pub bytes_received: u64,
}

impl SockInfo {
    /// Whether the application has closed its side (FIN_WAIT1/2, CLOSING, LAST_ACK, TIME_WAIT).
    pub fn app_closed(&self) -> bool {
        matches!(self.state, 4 | 5 | 6 | 9 | 11)
    }

    /// Whether the peer's FIN arrived (CLOSE_WAIT, LAST_ACK, CLOSING, TIME_WAIT).
    pub fn peer_closed(&self) -> bool {
        matches!(self.state, 6 | 8 | 9 | 11)
    }

    /// Bytes the application wrote (LastAppByteWritten). The kernel's counters count a FIN
    /// as one byte of sequence space; it is taken out.
    pub fn written(&self) -> u64 {
        (self.bytes_acked + self.wqueue as u64).saturating_sub(self.app_closed() as u64)
    }

    /// Client bytes received (LastByteReceived), the peer's FIN taken out.
    pub fn received(&self) -> u64 {
        self.bytes_received
            .saturating_sub(self.peer_closed() as u64)
    }

    /// Client bytes the application read (LastAppByteRead).
    pub fn read(&self) -> u64 {
        self.bytes_received
            .saturating_sub(self.rqueue as u64)
            .min(self.received())
    }
}

/// Dumps every non-listening IPv4 TCP socket of this namespace.
pub fn tcp_sockets() -> io::Result<Vec<SockInfo>> {
    // SAFETY: plain socket(2); owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext (bit INET_DIAG_INFO-1), pad, states.
    req.extend_from_slice(&[
        libc::AF_INET as u8,
        libc::IPPROTO_TCP as u8,
        1 << (INET_DIAG_INFO - 1),
        0,
    ]);
    let states: u32 = 0xfff & !(1 << TCP_LISTEN);
    req.extend_from_slice(&states.to_ne_bytes());
    req.extend_from_slice(&[0u8; 48]);
    // SAFETY: sockaddr_nl is plain old data; zero is the kernel.
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: req and `to` are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
            &to as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if parse_dump(&buf[..n as usize], &mut out)? {
            return Ok(out);
        }
    }
}

/// Parses one datagram of the dump into `out`; true once the dump is done.
pub fn parse_dump(mut b: &[u8], out: &mut Vec<SockInfo>) -> io::Result<bool> {
    while b.len() >= 16 {
        let len = u32_at(b, 0).unwrap_or(0) as usize;
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        if len < 16 || len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad netlink length",
            ));
        }
        let msg = &b[16..len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(msg, 0).unwrap_or(0) as i32;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(s) = parse_msg(msg) {
                    out.push(s);
                }
            }
            _ => {}
        }
        b = &b[(len + 3) & !3..];
        if b.len() < 16 {
            break;
        }
    }
    Ok(false)
}

fn parse_msg(m: &[u8]) -> Option<SockInfo> {
    if m.len() < 72 {
        return None;
    }
    let id = &m[4..52];
    let mut s = SockInfo {
        state: m[1],
        local_port: u16::from_be_bytes([id[0], id[1]]),
        remote_port: u16::from_be_bytes([id[2], id[3]]),
        local: Ipv4Addr::new(id[4], id[5], id[6], id[7]),
        remote: Ipv4Addr::new(id[20], id[21], id[22], id[23]),
        rqueue: u32_at(m, 56)?,
        wqueue: u32_at(m, 60)?,
        bytes_acked: 0,
        bytes_received: 0,
    };
    let mut attrs = &m[72..];
    while attrs.len() >= 4 {
        let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let aty = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if alen < 4 || alen > attrs.len() {
            break;
        }
        if aty == INET_DIAG_INFO {
            let info = &attrs[4..alen];
            s.bytes_acked = u64_at(info, TCPI_BYTES_ACKED).unwrap_or(0);
            s.bytes_received = u64_at(info, TCPI_BYTES_RECEIVED).unwrap_or(0);
        }
        let next = (alen + 3) & !3;
        if next > attrs.len() {
            break;
        }
        attrs = &attrs[next..];
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_connection_shows_its_byte_counts() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        c.write_all(&[7u8; 1000]).unwrap();
        let mut b = [0u8; 400];
        s.read_exact(&mut b).unwrap();
        s.write_all(&[1u8; 3000]).unwrap();
        let mut r = vec![0u8; 3000];
        c.read_exact(&mut r).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let all = tcp_sockets().unwrap();
        let me = all
            .iter()
            .find(|x| x.local_port == port && x.state == 1)
            .expect("the server side of the connection");
        assert_eq!(me.bytes_received, 1000);
        assert_eq!(me.rqueue, 600, "600 bytes not read yet");
        assert_eq!(me.bytes_acked, 3000);
        assert_eq!(me.wqueue, 0);
        assert!(parse_dump(&[0xff; 20], &mut Vec::new()).is_err());
    }
}
