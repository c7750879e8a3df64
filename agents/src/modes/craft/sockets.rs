//! Reading the proxy's two sockets for a splice and retiring them (thesis §4.7.2; CRIU's
//! libsoccr reads the same state): `TCP_INFO` for the options the leg negotiated, `TCP_REPAIR`
//! for its sequence numbers, `TCP_TIMESTAMP` for its clock. A socket closed in repair mode
//! sends neither FIN nor RST (`tcp_disconnect` takes its repair branch): the connection lives
//! on in the data path.

use super::translation::{LegState, LegTimestamps};
use crate::sockopt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

const TCP_INFO: i32 = 11;
const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_TIMESTAMP: i32 = 24;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

/// Bytes a socket still holds: sent and not yet acknowledged, and received and not yet read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queues {
    pub unacked: u32,
    pub unread: u32,
}

impl Queues {
    pub fn quiet(&self) -> bool {
        self.unacked == 0 && self.unread == 0
    }
}

/// What socket `fd` holds in its queues (SIOCOUTQ, SIOCINQ).
pub fn queues(fd: &impl AsRawFd) -> io::Result<Queues> {
    let ioctl = |req: libc::c_ulong| -> io::Result<u32> {
        let mut v: libc::c_int = 0;
        // SAFETY: both requests write one int through the pointer.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v.max(0) as u32)
    };
    Ok(Queues {
        unacked: ioctl(libc::TIOCOUTQ)?,
        unread: ioctl(libc::FIONREAD)?,
    })
}

fn get_u32(fd: &impl AsRawFd, opt: i32) -> io::Result<u32> {
    let mut b = [0u8; 4];
    sockopt::get_bytes(fd, libc::IPPROTO_TCP, opt, &mut b)?;
    Ok(u32::from_ne_bytes(b))
}

fn set_int(fd: &impl AsRawFd, opt: i32, v: libc::c_int) -> io::Result<()> {
    sockopt::set_int(fd, libc::IPPROTO_TCP, opt, v)
}

fn v4(a: SocketAddr) -> io::Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{a}: only IPv4 connections are spliced"),
        )),
    }
}

/// Why a leg's state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the socket's {what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the peer uses TCP timestamps and the data path saw none of its values")]
    NoPeerTimestamp,
    #[error("the socket is not quiet ({unacked} bytes unacknowledged, {unread} unread)")]
    NotQuiet { unacked: u32, unread: u32 },
}

fn io(what: &'static str) -> impl FnOnce(io::Error) -> ReadError {
    move |source| ReadError::Io { what, source }
}

/// Reads a quiet socket's leg state and leaves it in repair mode, so that nothing it does from
/// here on reaches the wire. `peer_newest_tsval`: the newest timestamp the data path saw from
/// the peer (needed when the leg uses timestamps).
pub fn read_leg(
    sock: &std::net::TcpStream,
    peer_newest_tsval: Option<u32>,
) -> Result<LegState, ReadError> {
    let local = v4(sock.local_addr().map_err(io("address"))?).map_err(io("address"))?;
    let remote = v4(sock.peer_addr().map_err(io("peer address"))?).map_err(io("peer address"))?;
    let mut info = [0u8; 104];
    sockopt::get_bytes(sock, libc::IPPROTO_TCP, TCP_INFO, &mut info).map_err(io("TCP_INFO"))?;
    // struct tcp_info: byte 5 tcpi_options, byte 6 snd_wscale:4 (low bits), rcv_wscale:4.
    let options = info[5];
    let (peer_wscale, own_wscale) = if options & TCPI_OPT_WSCALE != 0 {
        (info[6] & 0x0f, info[6] >> 4)
    } else {
        (0, 0)
    };
    let q = queues(sock).map_err(io("queues"))?;
    if !q.quiet() {
        return Err(ReadError::NotQuiet {
            unacked: q.unacked,
            unread: q.unread,
        });
    }
    set_int(sock, TCP_REPAIR, 1).map_err(io("TCP_REPAIR"))?;
    set_int(sock, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE).map_err(io("send queue"))?;
    let snd_nxt = get_u32(sock, TCP_QUEUE_SEQ).map_err(io("send sequence"))?;
    set_int(sock, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE).map_err(io("receive queue"))?;
    let rcv_nxt = get_u32(sock, TCP_QUEUE_SEQ).map_err(io("receive sequence"))?;
    let timestamps = if options & TCPI_OPT_TIMESTAMPS != 0 {
        let own_now = get_u32(sock, TCP_TIMESTAMP).map_err(io("TCP_TIMESTAMP"))?;
        // The data path records every flow's timestamps from its first segment (the SYN), so
        // only a flow evicted from its table has none: its clock cannot be moved.
        let peer_newest = peer_newest_tsval.ok_or(ReadError::NoPeerTimestamp)?;
        Some(LegTimestamps {
            own_now,
            peer_newest,
        })
    } else {
        None
    };
    Ok(LegState {
        local,
        remote,
        snd_nxt,
        rcv_nxt,
        timestamps,
        peer_wscale,
        own_wscale,
        sack: options & TCPI_OPT_SACK != 0,
    })
}

/// Leaves repair mode again (a splice that was not made: the socket carries on).
pub fn unrepair(sock: &std::net::TcpStream) -> io::Result<()> {
    set_int(sock, TCP_REPAIR, 0)
}

/// Closes a socket in repair mode: no FIN, no RST.
pub fn retire(sock: std::net::TcpStream) -> io::Result<()> {
    // In case it is not in repair mode already (a second call is harmless).
    set_int(&sock, TCP_REPAIR, 1)?;
    drop(sock);
    Ok(())
}
