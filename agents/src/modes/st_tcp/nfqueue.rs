//! A minimal NFQUEUE client (nfnetlink_queue), for the primary's FIN hold: the hold's nftables
//! rule hands every FIN or RST of the service to this queue, and the packet waits in the kernel
//! until the agent gives its verdict. Holding instead of dropping matters: a dropped FIN leaves
//! only with the kernel's retransmission, at least 200 ms later (RFC 6298 §2.4's 1 s minimum,
//! Linux's 200 ms), which made every short transfer under st-tcp hundreds of ms slower.
//!
//! The message layout is the kernel's uapi (`linux/netfilter/nfnetlink_queue.h`,
//! `linux/netlink.h`). Building and parsing messages does no I/O ([`config_bind`],
//! [`verdict`], [`parse`]); [`Queue`] is the thin socket around them. Parsing never panics on any
//! input: every length is checked before it is used.

use super::netlink::{NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HDRLEN, align4, u16_at, u32_at};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFGENMSG_LEN: usize = 4;
/// Attribute types carry two flag bits (nested, net byte order) above the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// What the kernel is told to do with a queued packet. The hold only ever lets packets go:
/// what it never lets go dies with the queue (a fenced primary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept = 1,
}

/// One queued packet: its id (for the verdict) and the first bytes of its IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: u32,
    pub payload: Vec<u8>,
}

/// What one netlink message from the queue socket said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Packet(Packet),
    /// An acknowledgement (0) or an error (a positive errno) for a request.
    Ack(i32),
    Other,
}

fn header(buf: &mut Vec<u8>, msg_type: u16, flags: u16, queue: u16) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, filled in by `finish`
    buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg_type).to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, resource id = queue (big endian)
    buf.push(0);
    buf.push(0);
    buf.extend_from_slice(&queue.to_be_bytes());
}

fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = (buf.len() as u32).to_ne_bytes();
    buf[..4].copy_from_slice(&len);
    buf
}

/// The request binding this socket to `queue`, copying the first `copy` bytes of each packet.
pub fn config_bind(queue: u16, copy: u32) -> [Vec<u8>; 2] {
    let mut bind = Vec::with_capacity(32);
    header(&mut bind, NFQNL_MSG_CONFIG, NLM_F_ACK, queue);
    // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf }
    attr(&mut bind, NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
    let mut params = Vec::with_capacity(32);
    header(&mut params, NFQNL_MSG_CONFIG, NLM_F_ACK, queue);
    // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode } (packed)
    let mut p = copy.to_be_bytes().to_vec();
    p.push(NFQNL_COPY_PACKET);
    attr(&mut params, NFQA_CFG_PARAMS, &p);
    [finish(bind), finish(params)]
}

/// The verdict message for packet `id` of `queue`.
pub fn verdict(queue: u16, id: u32, v: Verdict) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32);
    header(&mut buf, NFQNL_MSG_VERDICT, 0, queue);
    // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id }
    let mut h = (v as u32).to_be_bytes().to_vec();
    h.extend_from_slice(&id.to_be_bytes());
    attr(&mut buf, NFQA_VERDICT_HDR, &h);
    finish(buf)
}

/// Every message in one datagram from the queue socket. Malformed messages end the parse (what
/// came before them is kept); nothing here panics.
pub fn parse(datagram: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(len) = u32_at(datagram, at).map(|l| l as usize) {
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            break;
        }
        let msg = &datagram[at..at + len];
        out.push(parse_one(msg));
        at += align4(len);
    }
    out
}

fn parse_one(msg: &[u8]) -> Message {
    let Some(kind) = u16_at(msg, 4) else {
        return Message::Other;
    };
    if kind == NLMSG_ERROR {
        // struct nlmsgerr { int error; struct nlmsghdr msg; }: 0 is an acknowledgement.
        return match u32_at(msg, NLMSG_HDRLEN) {
            Some(e) => Message::Ack((e as i32).saturating_abs()),
            None => Message::Other,
        };
    }
    if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
        return Message::Other;
    }
    let mut id = None;
    let mut payload = None;
    let mut at = NLMSG_HDRLEN + NFGENMSG_LEN;
    while let (Some(len), Some(t)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > msg.len() {
            break;
        }
        let value = &msg[at + 4..at + len];
        match t & NLA_TYPE_MASK {
            // struct nfqnl_msg_packet_hdr { be32 packet_id; be16 hw_protocol; u8 hook }
            NFQA_PACKET_HDR => {
                id = value
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
            }
            NFQA_PAYLOAD => payload = Some(value.to_vec()),
            _ => {}
        }
        at += align4(len);
    }
    match id {
        Some(id) => Message::Packet(Packet {
            id,
            payload: payload.unwrap_or_default(),
        }),
        None => Message::Other,
    }
}

/// A socket bound to one queue of the current network namespace.
pub struct Queue {
    fd: AsyncFd<OwnedFd>,
    queue: u16,
    buf: Vec<u8>,
}

impl Queue {
    /// Binds queue `queue`, copying the first `copy` bytes of every packet.
    pub async fn bind(queue: u16, copy: u32) -> io::Result<Queue> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; zeroed is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: pointer and length describe `addr`.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd keeps its descriptor open and the same until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
        let mut q = Queue {
            fd,
            queue,
            buf: vec![0; 64 * 1024],
        };
        for req in config_bind(queue, copy) {
            q.send(&req).await?;
            loop {
                let acked = q.recv().await?.into_iter().find_map(|m| match m {
                    Message::Ack(e) => Some(e),
                    _ => None,
                });
                match acked {
                    Some(0) => break,
                    Some(e) => {
                        let e = io::Error::from_raw_os_error(e);
                        return Err(io::Error::new(
                            e.kind(),
                            format!("binding NFQUEUE {queue}: {e}"),
                        ));
                    }
                    None => continue,
                }
            }
        }
        Ok(q)
    }

    async fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            // SAFETY: pointer and length describe `msg`; the kernel is the destination
            // (the socket's default peer, port id 0).
            let r = guard.try_io(|fd| {
                let n = unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        msg.as_ptr() as *const libc::c_void,
                        msg.len(),
                        0,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match r {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// The next datagram's messages.
    pub async fn recv(&mut self) -> io::Result<Vec<Message>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let buf = &mut self.buf;
            // SAFETY: pointer and length describe `buf`.
            let r = guard.try_io(|fd| {
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(n)) => return Ok(parse(&self.buf[..n])),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The kernel could not deliver a message (its queue to us overflowed):
                    // the packets stay queued and are judged on later ones.
                    tracing::warn!("st-tcp: NFQUEUE receive buffer overflowed");
                    continue;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn verdict(&self, id: u32, v: Verdict) -> io::Result<()> {
        self.send(&verdict(self.queue, id, v)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet_msg(id: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET).to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&[2, 0, 0, 7]);
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 3]);
        attr(&mut b, NFQA_PACKET_HDR, &hdr);
        attr(&mut b, NFQA_PAYLOAD, payload);
        finish(b)
    }

    #[test]
    fn a_queued_packet_is_parsed_with_its_id_and_payload() {
        let mut dgram = packet_msg(41, &[0x45, 1, 2]);
        dgram.extend(packet_msg(42, &[9; 60]));
        let msgs = parse(&dgram);
        assert_eq!(
            msgs,
            vec![
                Message::Packet(Packet {
                    id: 41,
                    payload: vec![0x45, 1, 2]
                }),
                Message::Packet(Packet {
                    id: 42,
                    payload: vec![9; 60]
                }),
            ]
        );
    }

    #[test]
    fn acknowledgements_and_errors_are_told_apart() {
        let mut ack = vec![0u8; 36];
        ack[..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse(&ack), vec![Message::Ack(0)]);
        ack[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(parse(&ack), vec![Message::Ack(1)]);
    }

    #[test]
    fn verdict_layout_is_the_kernels() {
        let v = verdict(7, 0x01020304, Verdict::Accept);
        assert_eq!(v.len(), 16 + 4 + 12);
        assert_eq!(u32_at(&v, 0), Some(32));
        assert_eq!(u16_at(&v, 4), Some((3 << 8) | 1));
        assert_eq!(&v[18..20], &[0, 7]);
        assert_eq!(&v[24..32], &[0, 0, 0, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn the_bind_requests_ask_for_an_acknowledgement() {
        let [bind, params] = config_bind(3, 128);
        for m in [&bind, &params] {
            assert_eq!(u32_at(m, 0).map(|l| l as usize), Some(m.len()));
            assert_eq!(u16_at(m, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        }
        assert_eq!(&params[24..29], &[0, 0, 0, 128, NFQNL_COPY_PACKET]);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn a_truncated_message_yields_only_what_came_whole(id in any::<u32>(), cut in 0usize..48) {
            let whole = packet_msg(id, &[0x45; 20]);
            let mut dgram = whole.clone();
            dgram.extend_from_slice(&whole[..cut.min(whole.len() - 1)]);
            let msgs = parse(&dgram);
            prop_assert_eq!(msgs.len(), 1);
        }
    }
}
