//! A minimal NFQUEUE client (nfnetlink_queue): a rule (iptables' NFQUEUE target) hands packets to
//! a queue, and each waits in the kernel until its verdict is given here. Two users:
//! - st-tcp's FIN hold (`modes::st_tcp::fin_hold`): FINs and RSTs held until the backup has
//!   confirmed the close; holding instead of dropping matters, as a dropped FIN leaves only with
//!   the kernel's retransmission, at least 200 ms later;
//! - the delay line (`link_delay`): every packet of a link held until its release time.
//!
//! The message layout is the kernel's uapi (`linux/netfilter/nfnetlink_queue.h`,
//! `linux/netlink.h`). Building and parsing messages does no I/O ([`config_requests`],
//! [`verdict`], [`messages`], [`parse`]); [`Queue`] (tokio) and [`BlockingQueue`] (a thread of
//! its own that polls, batches receptions with recvmmsg(2) and verdicts into one send) are
//! thin sockets around them. Parsing never panics on any input: every length is checked
//! before it is used.
//!
//! A leaf: it uses nothing of the crate but the netlink helpers, so both users depend on it and
//! it on neither.

use crate::netlink::{NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HDRLEN, align4, u16_at, u32_at};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_SKB_INFO: u16 = 14;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
/// Queue flag: GSO packets are queued whole (one entry for a 64 KB super-packet) instead of
/// being segmented first, and their checksums are left for the device to fill in.
const NFQA_CFG_F_GSO: u32 = 1 << 2;
/// `NFQA_SKB_INFO` bit: the packet is a GSO super-packet.
const NFQA_SKB_GSO: u32 = 1 << 1;
const NFGENMSG_LEN: usize = 4;
/// Attribute types carry two flag bits (nested, net byte order) above the type.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `linux/netlink.h`: socket level and option that stop the kernel from reporting ENOBUFS.
const SOL_NETLINK: i32 = 270;
const NETLINK_NO_ENOBUFS: i32 = 5;
/// Length of one verdict message (header, nfgenmsg, one 8-byte attribute).
const VERDICT_LEN: usize = NLMSG_HDRLEN + NFGENMSG_LEN + 4 + 8;

/// What the kernel is told to do with a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// NF_DROP: the packet is freed (the delay line's tail drop when it is full).
    Drop = 0,
    /// NF_ACCEPT: the packet goes on through the rest of the stack.
    Accept = 1,
}

/// How much of each packet the kernel copies into its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Metadata only: no payload, and no length either (the kernel sends `NFQA_CAP_LEN` only
    /// when it cut a copied payload short).
    Meta,
    /// The first `n` bytes (and the packet's whole length when that is more).
    Packet(u32),
}

/// How a queue is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub copy: CopyMode,
    /// How many packets the kernel holds for this queue before it drops (its default: 1024).
    pub max_len: Option<u32>,
    /// GSO packets taken whole ([`NFQA_CFG_F_GSO`]).
    pub gso: bool,
}

impl Config {
    /// The first `copy` bytes of each packet, the kernel's defaults otherwise.
    pub fn packet(copy: u32) -> Config {
        Config {
            copy: CopyMode::Packet(copy),
            max_len: None,
            gso: false,
        }
    }
}

/// One queued packet: its id (for the verdict), its length and the first bytes of its IP
/// packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: u32,
    /// The whole packet's length in bytes (a GSO super-packet's total); in [`CopyMode::Meta`]
    /// the kernel says nothing of it and this is 0.
    pub len: u32,
    /// A GSO super-packet (several segments on the wire).
    pub gso: bool,
    pub payload: Vec<u8>,
}

/// A queued packet borrowed from the datagram it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRef<'a> {
    pub id: u32,
    pub len: u32,
    pub gso: bool,
    pub payload: &'a [u8],
}

/// What one netlink message from the queue socket said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Packet(Packet),
    /// An acknowledgement (0) or an error (a positive errno) for a request.
    Ack(i32),
    Other,
}

/// [`Message`], borrowing the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRef<'a> {
    Packet(PacketRef<'a>),
    Ack(i32),
    Other,
}

impl MessageRef<'_> {
    pub fn into_owned(self) -> Message {
        match self {
            MessageRef::Packet(p) => Message::Packet(Packet {
                id: p.id,
                len: p.len,
                gso: p.gso,
                payload: p.payload.to_vec(),
            }),
            MessageRef::Ack(e) => Message::Ack(e),
            MessageRef::Other => Message::Other,
        }
    }
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

/// Writes the length of the message that starts at `start` into its header.
fn finish_at(buf: &mut [u8], start: usize) {
    let len = ((buf.len() - start) as u32).to_ne_bytes();
    buf[start..start + 4].copy_from_slice(&len);
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    finish_at(&mut buf, 0);
    buf
}

/// The requests binding a socket to `queue` as `config` says, each asking for an
/// acknowledgement: the bind, then the parameters (copy mode, and the queue length and flags
/// when set, in the same message).
pub fn config_requests(queue: u16, config: &Config) -> [Vec<u8>; 2] {
    let mut bind = Vec::with_capacity(32);
    header(&mut bind, NFQNL_MSG_CONFIG, NLM_F_ACK, queue);
    // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf }
    attr(&mut bind, NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
    let mut params = Vec::with_capacity(64);
    header(&mut params, NFQNL_MSG_CONFIG, NLM_F_ACK, queue);
    // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode } (packed)
    let (range, mode) = match config.copy {
        CopyMode::Meta => (0, NFQNL_COPY_META),
        CopyMode::Packet(n) => (n, NFQNL_COPY_PACKET),
    };
    let mut p = range.to_be_bytes().to_vec();
    p.push(mode);
    attr(&mut params, NFQA_CFG_PARAMS, &p);
    if let Some(max) = config.max_len {
        attr(&mut params, NFQA_CFG_QUEUE_MAXLEN, &max.to_be_bytes());
    }
    if config.gso {
        // The kernel changes only the flags named in the mask.
        attr(&mut params, NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes());
        attr(&mut params, NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes());
    }
    [finish(bind), finish(params)]
}

/// The request binding this socket to `queue`, copying the first `copy` bytes of each packet.
pub fn config_bind(queue: u16, copy: u32) -> [Vec<u8>; 2] {
    config_requests(queue, &Config::packet(copy))
}

/// Appends the verdict message for packet `id` of `queue` to `buf` (several verdicts go to the
/// kernel in one datagram: it handles each message of a datagram in turn).
pub fn append_verdict(buf: &mut Vec<u8>, queue: u16, id: u32, v: Verdict) {
    let start = buf.len();
    header(buf, NFQNL_MSG_VERDICT, 0, queue);
    // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id }
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&(v as u32).to_be_bytes());
    h[4..].copy_from_slice(&id.to_be_bytes());
    attr(buf, NFQA_VERDICT_HDR, &h);
    finish_at(buf, start);
}

/// The verdict message for packet `id` of `queue`.
pub fn verdict(queue: u16, id: u32, v: Verdict) -> Vec<u8> {
    let mut buf = Vec::with_capacity(VERDICT_LEN);
    append_verdict(&mut buf, queue, id, v);
    buf
}

/// The messages of one datagram from the queue socket, borrowing it. A malformed message ends
/// the walk (what came before it is kept); nothing here panics.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = MessageRef<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = u32_at(datagram, at)? as usize;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            return None;
        }
        let msg = &datagram[at..at + len];
        at += align4(len);
        Some(parse_one(msg))
    })
}

/// Every message in one datagram from the queue socket (see [`messages`]).
pub fn parse(datagram: &[u8]) -> Vec<Message> {
    messages(datagram).map(MessageRef::into_owned).collect()
}

fn be32(value: &[u8]) -> Option<u32> {
    value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

fn parse_one(msg: &[u8]) -> MessageRef<'_> {
    let Some(kind) = u16_at(msg, 4) else {
        return MessageRef::Other;
    };
    if kind == NLMSG_ERROR {
        // struct nlmsgerr { int error; struct nlmsghdr msg; }: 0 is an acknowledgement.
        return match u32_at(msg, NLMSG_HDRLEN) {
            Some(e) => MessageRef::Ack((e as i32).saturating_abs()),
            None => MessageRef::Other,
        };
    }
    if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
        return MessageRef::Other;
    }
    let mut id = None;
    let mut payload: &[u8] = &[];
    let mut cap_len = None;
    let mut gso = false;
    let mut at = NLMSG_HDRLEN + NFGENMSG_LEN;
    while let (Some(len), Some(t)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > msg.len() {
            break;
        }
        let value = &msg[at + 4..at + len];
        match t & NLA_TYPE_MASK {
            // struct nfqnl_msg_packet_hdr { be32 packet_id; be16 hw_protocol; u8 hook }
            NFQA_PACKET_HDR => id = be32(value),
            NFQA_PAYLOAD => payload = value,
            NFQA_CAP_LEN => cap_len = be32(value),
            NFQA_SKB_INFO => gso = be32(value).is_some_and(|f| f & NFQA_SKB_GSO != 0),
            _ => {}
        }
        at += align4(len);
    }
    match id {
        Some(id) => MessageRef::Packet(PacketRef {
            id,
            len: cap_len.unwrap_or(payload.len() as u32),
            gso,
            payload,
        }),
        None => MessageRef::Other,
    }
}

/// A nonblocking NETLINK_NETFILTER socket of the current network namespace, bound.
fn open_socket() -> io::Result<OwnedFd> {
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
    Ok(fd)
}

/// One send(2) to the kernel (the socket's default peer, port id 0).
fn send_raw(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: pointer and length describe `msg`.
    let n = unsafe { libc::send(fd, msg.as_ptr() as *const libc::c_void, msg.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One recv(2) into `buf`.
fn recv_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: pointer and length describe `buf`.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn bind_error(queue: u16, errno: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("binding NFQUEUE {queue}: {e}"))
}

/// A socket bound to one queue of the current network namespace, for tokio tasks.
pub struct Queue {
    fd: AsyncFd<OwnedFd>,
    queue: u16,
    buf: Vec<u8>,
}

impl Queue {
    /// Binds queue `queue`, copying the first `copy` bytes of every packet.
    pub async fn bind(queue: u16, copy: u32) -> io::Result<Queue> {
        Self::bind_with(queue, &Config::packet(copy)).await
    }

    /// Binds queue `queue` as `config` says.
    pub async fn bind_with(queue: u16, config: &Config) -> io::Result<Queue> {
        let fd = open_socket()?;
        // SAFETY: an OwnedFd keeps its descriptor open and the same until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
        let mut q = Queue {
            fd,
            queue,
            buf: vec![0; 64 * 1024],
        };
        for req in config_requests(queue, config) {
            q.send(&req).await?;
            loop {
                let acked = q.recv().await?.into_iter().find_map(|m| match m {
                    Message::Ack(e) => Some(e),
                    _ => None,
                });
                match acked {
                    Some(0) => break,
                    Some(e) => return Err(bind_error(queue, e)),
                    None => continue,
                }
            }
        }
        Ok(q)
    }

    async fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| send_raw(fd.as_raw_fd(), msg)) {
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
            match guard.try_io(|fd| recv_raw(fd.as_raw_fd(), buf)) {
                Ok(Ok(n)) => return Ok(parse(&self.buf[..n])),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The kernel could not deliver a message (its queue to us overflowed):
                    // the packets stay queued and are judged on later ones.
                    tracing::warn!(queue = self.queue, "NFQUEUE receive buffer overflowed");
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

/// Datagrams taken per recvmmsg(2).
pub const RECV_BATCH: usize = 64;
/// Room for one datagram: a packet message is the headers, a few attributes and the copied
/// payload (see [`BlockingQueue::bind`], which makes room for the copy range).
const SLOT: usize = 2048;
/// Verdicts per send(2): well under the socket's send buffer (netlink refuses a datagram
/// larger than it).
const VERDICTS_PER_SEND: usize = 2048;

/// What one [`BlockingQueue::recv_batch`] took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Datagrams received (0: nothing was waiting).
    pub datagrams: usize,
    /// Datagrams cut short because they did not fit their slot: their packets could not be
    /// read, and stay queued in the kernel until the socket closes.
    pub truncated: usize,
}

/// A socket bound to one queue, for a thread of its own that waits with poll(2) ([`Self::fd`])
/// and takes many messages per system call: the delay line, whose packet rate is a link's.
pub struct BlockingQueue {
    fd: OwnedFd,
    queue: u16,
    slot: usize,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl BlockingQueue {
    /// Binds queue `queue` as `config` says, with a receive buffer of `rcvbuf` bytes (forced past
    /// `rmem_max`: root may) and without ENOBUFS reports (a message the kernel cannot deliver
    /// counts as a drop in its own statistics, `/proc/net/netfilter/nfnetlink_queue`). Waits
    /// at most `timeout` for each acknowledgement.
    pub fn bind(
        queue: u16,
        config: &Config,
        rcvbuf: usize,
        timeout: Duration,
    ) -> io::Result<BlockingQueue> {
        let fd = open_socket()?;
        let raw = fd.as_raw_fd();
        let size = i32::try_from(rcvbuf).unwrap_or(i32::MAX);
        crate::sockopt::set_int(&raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size)
            .or_else(|_| crate::sockopt::set_int(&raw, libc::SOL_SOCKET, libc::SO_RCVBUF, size))?;
        crate::sockopt::set_int(&raw, SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)?;
        let copied = match config.copy {
            CopyMode::Meta => 0,
            CopyMode::Packet(n) => n as usize,
        };
        let slot = SLOT.max(copied.saturating_add(512));
        let mut q = BlockingQueue {
            fd,
            queue,
            slot,
            buf: vec![0; slot * RECV_BATCH],
            out: Vec::with_capacity(VERDICT_LEN * VERDICTS_PER_SEND),
        };
        for req in config_requests(queue, config) {
            q.send(&req)?;
            q.wait_ack(timeout)?;
        }
        Ok(q)
    }

    fn wait_ack(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !poll_in(self.fd.as_raw_fd(), left)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "binding NFQUEUE {}: no answer within {timeout:?}",
                        self.queue
                    ),
                ));
            }
            let n = match recv_raw(self.fd.as_raw_fd(), &mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            let acked = messages(&self.buf[..n]).find_map(|m| match m {
                MessageRef::Ack(e) => Some(e),
                _ => None,
            });
            match acked {
                Some(0) => return Ok(()),
                // The bare errno: the caller tells a queue taken by another socket (EPERM)
                // from other failures, and names the queue itself.
                Some(e) => return Err(io::Error::from_raw_os_error(e)),
                None => continue,
            }
        }
    }

    /// The socket, for poll(2).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            match send_raw(self.fd.as_raw_fd(), msg) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The kernel takes netlink requests synchronously; a full send buffer
                    // clears as soon as it has.
                    poll_out(self.fd.as_raw_fd(), Duration::from_millis(10))?;
                }
                r => return r,
            }
        }
    }

    /// Takes every datagram waiting (at most [`RECV_BATCH`]) with one recvmmsg(2), without
    /// blocking, and hands each of their messages to `each`.
    pub fn recv_batch(&mut self, mut each: impl FnMut(MessageRef<'_>)) -> io::Result<Batch> {
        // SAFETY (for the zeroed values): iovec and mmsghdr are plain old data.
        let mut iov: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        for (i, (v, h)) in iov.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            v.iov_base = self.buf[i * self.slot..].as_mut_ptr() as *mut libc::c_void;
            v.iov_len = self.slot;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        let n = loop {
            // SAFETY: every header points at one iovec of this frame, each iovec at its own
            // slot of `self.buf`, which outlives the call.
            let n = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    RECV_BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(Batch::default()),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        };
        let mut batch = Batch {
            datagrams: n,
            truncated: 0,
        };
        for (i, h) in hdrs.iter().take(n).enumerate() {
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                batch.truncated += 1;
                continue;
            }
            let len = (h.msg_len as usize).min(self.slot);
            let start = i * self.slot;
            for m in messages(&self.buf[start..start + len]) {
                each(m);
            }
        }
        Ok(batch)
    }

    /// Sends `verdicts` for this queue, many per datagram.
    pub fn send_verdicts(&mut self, verdicts: &[(u32, Verdict)]) -> io::Result<()> {
        for chunk in verdicts.chunks(VERDICTS_PER_SEND) {
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            for &(id, v) in chunk {
                append_verdict(&mut out, self.queue, id, v);
            }
            let r = self.send(&out);
            self.out = out;
            r?;
        }
        Ok(())
    }
}

fn poll_one(fd: RawFd, events: i16, limit: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: poll(2) on one pollfd we own.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n == 1)
}

fn poll_in(fd: RawFd, limit: Duration) -> io::Result<bool> {
    poll_one(fd, libc::POLLIN, limit)
}

fn poll_out(fd: RawFd, limit: Duration) -> io::Result<bool> {
    poll_one(fd, libc::POLLOUT, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet_msg(id: u32, payload: &[u8], extra: &[(u16, u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET).to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&[2, 0, 0, 7]);
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 3]);
        attr(&mut b, NFQA_PACKET_HDR, &hdr);
        for &(kind, value) in extra {
            attr(&mut b, kind, &value.to_be_bytes());
        }
        attr(&mut b, NFQA_PAYLOAD, payload);
        finish(b)
    }

    #[test]
    fn a_queued_packet_is_parsed_with_its_id_and_payload() {
        let mut dgram = packet_msg(41, &[0x45, 1, 2], &[]);
        dgram.extend(packet_msg(42, &[9; 60], &[]));
        let msgs = parse(&dgram);
        assert_eq!(
            msgs,
            vec![
                Message::Packet(Packet {
                    id: 41,
                    len: 3,
                    gso: false,
                    payload: vec![0x45, 1, 2]
                }),
                Message::Packet(Packet {
                    id: 42,
                    len: 60,
                    gso: false,
                    payload: vec![9; 60]
                }),
            ]
        );
    }

    #[test]
    fn a_cut_copy_carries_the_whole_length_and_the_gso_flag() {
        let dgram = packet_msg(
            5,
            &[0x45; 32],
            &[(NFQA_CAP_LEN, 65_226), (NFQA_SKB_INFO, NFQA_SKB_GSO)],
        );
        let m: Vec<_> = messages(&dgram).collect();
        assert_eq!(
            m,
            vec![MessageRef::Packet(PacketRef {
                id: 5,
                len: 65_226,
                gso: true,
                payload: &[0x45; 32],
            })]
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
        assert_eq!(v.len(), VERDICT_LEN);
        assert_eq!(u32_at(&v, 0), Some(32));
        assert_eq!(u16_at(&v, 4), Some((3 << 8) | 1));
        assert_eq!(&v[18..20], &[0, 7]);
        assert_eq!(&v[24..32], &[0, 0, 0, 1, 1, 2, 3, 4]);
        // Appended verdicts are whole messages one after another.
        let mut many = Vec::new();
        append_verdict(&mut many, 9, 1, Verdict::Drop);
        append_verdict(&mut many, 9, 2, Verdict::Accept);
        assert_eq!(many.len(), 2 * VERDICT_LEN);
        assert_eq!(u32_at(&many, VERDICT_LEN), Some(32));
        assert_eq!(&many[24..32], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&many[56..64], &[0, 0, 0, 1, 0, 0, 0, 2]);
    }

    #[test]
    fn the_bind_requests_ask_for_an_acknowledgement() {
        let [bind, params] = config_bind(3, 128);
        for m in [&bind, &params] {
            assert_eq!(u32_at(m, 0).map(|l| l as usize), Some(m.len()));
            assert_eq!(u16_at(m, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        }
        assert_eq!(&params[24..29], &[0, 0, 0, 128, NFQNL_COPY_PACKET]);
        // st-tcp's parameters are the copy range alone.
        assert_eq!(params.len(), 20 + 12);
    }

    #[test]
    fn the_delay_lines_parameters_carry_the_length_and_gso_flag() {
        let [_, params] = config_requests(
            12,
            &Config {
                copy: CopyMode::Packet(32),
                max_len: Some(20_000),
                gso: true,
            },
        );
        assert_eq!(u32_at(&params, 0).map(|l| l as usize), Some(params.len()));
        // params (4 + 5, padded to 12), max length (8), mask (8), flags (8)
        assert_eq!(params.len(), 20 + 12 + 8 + 8 + 8);
        assert_eq!(u16_at(&params, 34), Some(NFQA_CFG_QUEUE_MAXLEN));
        assert_eq!(&params[36..40], &20_000u32.to_be_bytes());
        assert_eq!(u16_at(&params, 42), Some(NFQA_CFG_MASK));
        assert_eq!(u16_at(&params, 50), Some(NFQA_CFG_FLAGS));
        assert_eq!(&params[52..56], &NFQA_CFG_F_GSO.to_be_bytes());
        let [_, meta] = config_requests(
            12,
            &Config {
                copy: CopyMode::Meta,
                max_len: None,
                gso: false,
            },
        );
        assert_eq!(&meta[24..29], &[0, 0, 0, 0, NFQNL_COPY_META]);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn a_truncated_message_yields_only_what_came_whole(id in any::<u32>(), cut in 0usize..48) {
            let whole = packet_msg(id, &[0x45; 20], &[]);
            let mut dgram = whole.clone();
            dgram.extend_from_slice(&whole[..cut.min(whole.len() - 1)]);
            let msgs = parse(&dgram);
            prop_assert_eq!(msgs.len(), 1);
        }
    }
}
