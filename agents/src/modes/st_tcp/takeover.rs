//! Rebuilding a tapped connection as a local socket with TCP_REPAIR (DESIGN §5 st-tcp step 3):
//! socket → repair on → SO_REUSEADDR → bind(VIP:port) → send queue seq = client's last ACK →
//! receive queue seq = client's next byte → TCP_TIMESTAMP above the primary's last TSval →
//! connect (no SYN in repair mode) → repair options → repair off. What the client has not
//! acknowledged is then written as ordinary data and leaves at once.

use super::tracker::{Conn, ConnKey};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
/// Timestamp ticks (ms) the rebuilt socket's clock starts above the primary's last seen one.
const TS_MARGIN: u32 = 60_000;
const TCP_RECV_QUEUE: u32 = 1;
const TCP_SEND_QUEUE: u32 = 2;
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// What rebuilding one connection needs, taken from the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairParams {
    pub vip: Ipv4Addr,
    pub key: ConnKey,
    /// Sequence number of the first byte the client has not acknowledged.
    pub snd_seq: u32,
    /// Sequence number of the next byte expected from the client.
    pub rcv_seq: u32,
    /// The client's MSS.
    pub mss: u16,
    /// (client's scale = our send scale, primary's scale = our receive scale), if agreed.
    pub wscale: Option<(u8, u8)>,
    pub sack: bool,
    /// The timestamp value our clock must continue from, if timestamps are in use.
    pub tsval: Option<u32>,
    /// The client's window (scaled, bytes) and the one the primary advertised (scaled).
    pub snd_wnd: u32,
    pub rcv_wnd: u32,
}

/// What the takeover does with one tracked connection (sans-IO: the tracker's view and the
/// primary's last report in, a decision out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to take over; why, for the log.
    Skip(&'static str),
    /// Cannot be rebuilt: the error for the connection's takeover event.
    Fail(&'static str),
    /// Rebuild the socket with `params`; the replica resends from `from` (the client's ACK,
    /// the first byte it may lack) and `sent` is what the primary had sent (the rebuilt send
    /// queue holds `from..sent` as in flight).
    Rebuild {
        params: RepairParams,
        from: u64,
        sent: u64,
    },
}

/// The takeover's decision for `key`. `replica_ended`: the replica's output ended;
/// `reported_ack`: the client bytes the primary last said were acknowledged.
pub fn plan(
    vip: Ipv4Addr,
    key: ConnKey,
    c: &Conn,
    replica_ended: bool,
    reported_ack: u64,
    now_ns: u64,
) -> Plan {
    // A SYN the primary never answered (the primary failed first, or the tap missed the
    // answer): there is no connection on the primary to take over. The client's kernel sends
    // its SYN again, and this host's listener on the service address answers it.
    if c.server_isn.is_none() {
        return Plan::Skip(
            "handshake not answered by the primary: the client's SYN retransmission is served afresh",
        );
    }
    // Both sides closing (the client's FIN seen, the replica done): nothing to save.
    if c.client_fin.is_some() && replica_ended {
        return Plan::Skip("both sides closed");
    }
    // The client's ACK as the tap saw it, or as the primary last reported it if that is
    // further (a tap that fell behind). The client's real ACK may be further still (the tap
    // missed its last ACKs), up to what the primary sent: that range goes into the rebuilt
    // socket's send queue as in flight, so that every ACK the client can send falls within
    // what the socket sent (beyond it, the kernel would ignore it).
    let from = c.client_ack.unwrap_or(0).max(reported_ack);
    let sent = c.server_sent.max(from);
    match RepairParams::from_conn(vip, key, c, now_ns) {
        None => Plan::Fail("handshake not seen whole"),
        Some(mut params) => {
            if let Some(seq) = c.server_seq(from) {
                params.snd_seq = seq;
            }
            Plan::Rebuild { params, from, sent }
        }
    }
}

impl RepairParams {
    /// From the tracker's view of a connection at `now_ns`; `None` if the handshake was not
    /// seen whole.
    pub fn from_conn(vip: Ipv4Addr, key: ConnKey, c: &Conn, now_ns: u64) -> Option<RepairParams> {
        let acked = c.client_ack?;
        let snd_seq = c.server_seq(acked)?;
        let mut rcv = c.client_next;
        if c.client_fin.is_some_and(|f| f == c.client_next) {
            rcv += 1;
        }
        let wscale = match (c.client_opts.wscale, c.server_opts.wscale) {
            (Some(cs), Some(ss)) => Some((cs, ss)),
            _ => None,
        };
        let ts_on = c.client_opts.tsval.is_some() && c.server_opts.tsval.is_some();
        // The primary's clock ran on since its last segment (1 ms per tick on Linux): continue
        // above where it would be now, so the client's PAWS check accepts every segment. The
        // margin covers a tap that fell behind (the latest TSval it saw is older than the one
        // the client holds): PAWS drops what is older, never what is ahead.
        //
        // Since Linux 6.7 the value's low bit switches the socket to microsecond timestamps
        // (`tp->tcp_usec_ts = val & 1`): an odd value made the rebuilt socket's clock run in
        // other units than the primary's, and once the microsecond clock had wrapped past the
        // value (every 71.6 minutes, for half of that) its TSvals fell behind the client's
        // ts_recent and every segment was dropped by PAWS (RFC 7323 §5). The primary ticks in
        // ms; 1 ms less is well within the margin. So the value is always even.
        let tsval = if ts_on {
            c.server_tsval.map(|(v, at)| {
                let elapsed_ms = now_ns.saturating_sub(at) / 1_000_000;
                v.wrapping_add(elapsed_ms as u32).wrapping_add(TS_MARGIN) & !1
            })
        } else {
            None
        };
        let (cs, ss) = wscale.unwrap_or((0, 0));
        let snd_wnd = (c.client_window as u32) << cs;
        // Never advertise less than a segment, or a zero window would stall the client.
        let rcv_wnd = ((c.server_window as u32) << ss).max(65535);
        Some(RepairParams {
            vip,
            snd_wnd,
            rcv_wnd,
            key,
            snd_seq,
            rcv_seq: c.client_seq(rcv),
            mss: c.client_opts.mss.unwrap_or(536),
            wscale,
            sack: c.client_opts.sack_ok && c.server_opts.sack_ok,
            tsval,
        })
    }
}

fn set<T>(fd: &OwnedFd, level: i32, opt: i32, v: &T, what: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `v`, which lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of_val(v) as u32,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A connection rebuilt up to its queues, still in repair mode: [`InRepair::finish`] fills in
/// what the primary had sent and the client may not have received, and lets it go.
pub struct InRepair(OwnedFd);

/// Room for the in-flight bytes put in the send queue (the primary's send window, a few MB).
const SNDBUF: libc::c_int = 32 << 20;

/// Held while a rebuilt socket binds the service port, and while one leaves repair mode: leaving
/// it clears the socket's port reuse until SO_REUSEADDR is set again, and a bind of the next
/// connection in between (the replicas finish theirs concurrently) fails with EADDRINUSE.
static PORT_REUSE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn port_reuse() -> std::sync::MutexGuard<'static, ()> {
    // A panic while holding it leaves nothing half-done that later holders depend on.
    PORT_REUSE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rebuilds the connection up to its queues; the socket stays in repair mode. The service
/// address must be on an interface of this host already.
pub fn repair(p: &RepairParams) -> io::Result<InRepair> {
    let _reuse = port_reuse();
    // SAFETY: plain socket(2); owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    set(&fd, libc::IPPROTO_TCP, TCP_REPAIR, &one, "TCP_REPAIR on")?;
    set(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &one,
        "SO_REUSEADDR",
    )?;
    let local = sockaddr(p.vip, p.key.port);
    // SAFETY: pointer and length describe `local`.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &local as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    } != 0
    {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("bind {}:{}: {e}", p.vip, p.key.port),
        ));
    }
    set(
        &fd,
        libc::IPPROTO_TCP,
        TCP_REPAIR_QUEUE,
        &TCP_SEND_QUEUE,
        "queue send",
    )?;
    set(
        &fd,
        libc::IPPROTO_TCP,
        TCP_QUEUE_SEQ,
        &p.snd_seq,
        "send seq",
    )?;
    set(
        &fd,
        libc::IPPROTO_TCP,
        TCP_REPAIR_QUEUE,
        &TCP_RECV_QUEUE,
        "queue recv",
    )?;
    set(
        &fd,
        libc::IPPROTO_TCP,
        TCP_QUEUE_SEQ,
        &p.rcv_seq,
        "recv seq",
    )?;
    if let Some(ts) = p.tsval {
        // Even, as the planner makes it (see `RepairParams::from_conn`).
        set(&fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, &ts, "TCP_TIMESTAMP")?;
    }
    // The client's MSS before connect, so that the socket sizes its segments by it (set only
    // as a repair option after connect, it would stay at the 536-byte default until a path
    // MTU event).
    {
        let mss = p.mss as libc::c_int;
        set(&fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, &mss, "TCP_MAXSEG")?;
    }
    let peer = sockaddr(p.key.client, p.key.client_port);
    // SAFETY: pointer and length describe `peer`; in repair mode connect sends nothing.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &peer as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    } != 0
    {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("repair connect: {e}")));
    }
    // struct tcp_repair_opt { u32 opt_code; u32 opt_val; }
    let mut opts: Vec<[u32; 2]> = vec![[TCPOPT_MSS, p.mss as u32]];
    if let Some((snd, rcv)) = p.wscale {
        opts.push([TCPOPT_WINDOW, snd as u32 | ((rcv as u32) << 16)]);
    }
    if p.sack {
        opts.push([TCPOPT_SACK_PERM, 0]);
    }
    if p.tsval.is_some() {
        opts.push([TCPOPT_TIMESTAMP, 0]);
    }
    // SAFETY: `opts` is a contiguous array of tcp_repair_opt.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_REPAIR_OPTIONS,
            opts.as_ptr() as *const libc::c_void,
            (opts.len() * 8) as u32,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TCP_REPAIR_OPTIONS: {e}")));
    }
    // The windows: without them the socket starts from a zero send window and, worse, from a
    // window-update sequence (snd_wl1) that ignores the client's pure ACKs, so a client whose
    // window once closes never opens it again for us. struct tcp_repair_window { snd_wl1,
    // snd_wnd, max_window, rcv_wnd, rcv_wup }.
    let win: [u32; 5] = [
        p.rcv_seq.wrapping_sub(1),
        p.snd_wnd,
        p.snd_wnd.max(p.mss as u32),
        p.rcv_wnd,
        p.rcv_seq,
    ];
    set(
        &fd,
        libc::IPPROTO_TCP,
        TCP_REPAIR_WINDOW,
        &win,
        "TCP_REPAIR_WINDOW",
    )?;
    Ok(InRepair(fd))
}

impl InRepair {
    /// Puts `in_flight` (server bytes from the send sequence on: what the primary sent, which
    /// the client may or may not have received) in the send queue as sent and unacknowledged,
    /// as CRIU restores a send queue, then leaves repair mode. The socket's next sequence is
    /// then the primary's, so any ACK the client sends lies within what the socket sent: an
    /// ACK beyond it would be ignored by the kernel (RFC 9293 §3.10.7.4) and the connection
    /// would stall, with the client dropping our older bytes as duplicates. Bytes the client
    /// lacks are retransmitted by the kernel. Returns the socket, non-blocking and out of
    /// repair mode.
    pub fn finish(self, in_flight: &[&[u8]]) -> io::Result<std::net::TcpStream> {
        let fd = self.0;
        let total: usize = in_flight.iter().map(|b| b.len()).sum();
        if total > 0 {
            // Forced size needs CAP_NET_ADMIN (the agent has it); the capped one otherwise.
            if set(
                &fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                &SNDBUF,
                "SO_SNDBUFFORCE",
            )
            .is_err()
            {
                let _ = set(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &SNDBUF, "SO_SNDBUF");
            }
            set(
                &fd,
                libc::IPPROTO_TCP,
                TCP_REPAIR_QUEUE,
                &TCP_SEND_QUEUE,
                "queue send",
            )?;
            for b in in_flight {
                let mut rest = *b;
                while !rest.is_empty() {
                    // SAFETY: pointer and length describe `rest`; in repair mode with the send
                    // queue selected, the bytes are queued as already sent, nothing leaves.
                    let n = unsafe {
                        libc::send(
                            fd.as_raw_fd(),
                            rest.as_ptr() as *const libc::c_void,
                            rest.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if n <= 0 {
                        let e = io::Error::last_os_error();
                        return Err(io::Error::new(
                            e.kind(),
                            format!("{total} in-flight bytes into the send queue: {e}"),
                        ));
                    }
                    rest = &rest[n as usize..];
                }
            }
        }
        let _reuse = port_reuse();
        let zero: libc::c_int = 0;
        set(&fd, libc::IPPROTO_TCP, TCP_REPAIR, &zero, "TCP_REPAIR off")?;
        // Leaving repair mode drops the forced reuse of the port; without SO_REUSEADDR again
        // the next connection of the same service port could not be bound.
        let one: libc::c_int = 1;
        set(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one,
            "SO_REUSEADDR after repair",
        )?;
        let s = std::net::TcpStream::from(fd);
        s.set_nonblocking(true)?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::st_tcp::tracker::testing::*;
    use crate::modes::st_tcp::tracker::{ACK, SYN, Tracker};

    fn tracked(with_answer: bool) -> Tracker {
        let mut t = Tracker::new(VIP, vec![7070]);
        let mut out = Vec::new();
        if with_answer {
            handshake(&mut t, &mut out, 100, 5000);
        } else {
            t.on_segment(&c2s(100, 0, SYN, SYN_OPTS, b""), 1, &mut out);
        }
        t
    }

    #[test]
    fn a_syn_the_primary_never_answered_is_left_to_the_clients_retransmission() {
        let t = tracked(false);
        let plan = plan(VIP, KEY, t.get(&KEY).unwrap(), false, 0, 10);
        assert!(matches!(plan, Plan::Skip(_)), "{plan:?}");
    }

    #[test]
    fn the_rebuilt_timestamp_is_even_and_ahead_of_the_primarys() {
        // The SYN-ACK's TSval is 5000; take odd ones too: every elapsed time gives an even
        // value (an odd one switches Linux ≥ 6.7 to microsecond timestamps, and the client's
        // PAWS then drops every segment).
        let mut t = tracked(true);
        for tsval in [5000u32, 5001, u32::MAX] {
            let mut out = Vec::new();
            let opts: &'static [u8] = Box::leak(
                [&[1u8, 1, 8, 10][..], &tsval.to_be_bytes(), &[0, 0, 3, 0xe8]]
                    .concat()
                    .into_boxed_slice(),
            );
            t.on_segment(&s2c(5001, 101, ACK, opts), 2_000_000, &mut out);
            for now in [2_000_000u64, 3_000_000, 1_002_000_000] {
                let Plan::Rebuild { params, .. } =
                    plan(VIP, KEY, t.get(&KEY).unwrap(), false, 0, now)
                else {
                    panic!("no rebuild");
                };
                let ts = params.tsval.unwrap();
                assert_eq!(ts & 1, 0, "odd TSval {ts} from {tsval} at {now}");
                let ahead = ts.wrapping_sub(tsval);
                assert!(
                    (TS_MARGIN - 1..TS_MARGIN + 1001).contains(&ahead),
                    "{ahead}"
                );
            }
        }
    }

    #[test]
    fn the_resend_starts_at_the_furthest_ack_known() {
        let t = tracked(true);
        let c = t.get(&KEY).unwrap();
        let Plan::Rebuild { from, sent, params } = plan(VIP, KEY, c, false, 0, 10) else {
            panic!("no rebuild");
        };
        assert_eq!((from, sent), (0, 0));
        assert_eq!(params.snd_seq, 5001);
        assert_eq!(params.rcv_seq, 101);
        // The primary reported more acknowledged than the tap saw (a tap that fell behind).
        let Plan::Rebuild { from, sent, params } = plan(VIP, KEY, c, false, 1000, 10) else {
            panic!("no rebuild");
        };
        assert_eq!((from, sent), (1000, 1000));
        assert_eq!(params.snd_seq, 6001);
    }
}
