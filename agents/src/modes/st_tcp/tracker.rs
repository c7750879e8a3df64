//! Per-connection TCP state learned from tapped segments (DESIGN §5 st-tcp, step 1): sans-IO.
//! Frames go in with a timestamp; what the replica and the takeover need comes out: new
//! connections, the client's bytes reassembled in order, the client's ACKs, and per connection
//! the handshake options, both ISNs and the primary's latest timestamp value.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// TCP header flags.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Out-of-order client bytes kept per connection while a gap is open (beyond this, later
/// segments are dropped and must come from the logger or a retransmission).
const MAX_PENDING: usize = 8 << 20;

/// One TCP segment of an IPv4 frame, borrowed from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The advertised window, unscaled.
    pub window: u16,
    pub options: &'a [u8],
    /// The payload as captured (the tap may cut frames short).
    pub payload: &'a [u8],
    /// The payload's length on the wire (from the IP total length), at least `payload.len()`.
    pub wire_len: usize,
}

/// Parses an Ethernet II frame carrying IPv4/TCP; `None` for anything else or anything
/// malformed (never panics on input).
pub fn parse_frame(frame: &[u8]) -> Option<Segment<'_>> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let (ip, rest) = match ethertype {
        0x0800 => (14usize, frame.get(14..)?),
        0x8100 => {
            // One VLAN tag.
            if u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]) != 0x0800 {
                return None;
            }
            (18, frame.get(18..)?)
        }
        _ => return None,
    };
    let _ = ip;
    parse_ipv4(rest)
}

/// Parses an IPv4 packet carrying TCP.
pub fn parse_ipv4(p: &[u8]) -> Option<Segment<'_>> {
    let vihl = *p.first()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 || p.len() < ihl || p[9] != 6 {
        return None;
    }
    // Fragments are not reassembled (TCP with PMTU discovery does not fragment).
    let frag = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]);
    if frag & 0x3fff != 0 {
        return None;
    }
    let total = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]) as usize;
    // A GSO packet captured before segmentation may say 0; take what was captured then.
    let end = if total == 0 {
        p.len()
    } else {
        total.min(p.len())
    };
    // p.len() >= ihl >= 20: the addresses are there.
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let t = p.get(ihl..end)?;
    let off = ((*t.get(12)? >> 4) as usize) * 4;
    if off < 20 || off > t.len() || t.len() < 20 {
        return None;
    }
    let wire_len = total.saturating_sub(ihl + off).max(t.len() - off);
    Some(Segment {
        src,
        dst,
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags: t[13],
        window: u16::from_be_bytes([t[14], t[15]]),
        options: &t[20..off],
        payload: &t[off..],
        wire_len,
    })
}

/// Handshake options of one side (from its SYN or SYN-ACK).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_ok: bool,
    /// The timestamp value of the SYN, if timestamps were offered.
    pub tsval: Option<u32>,
}

/// Parses TCP options; unknown ones are skipped, a malformed list ends the parse.
pub fn parse_options(mut o: &[u8]) -> SynOptions {
    let mut s = SynOptions::default();
    while let Some(&kind) = o.first() {
        match kind {
            0 => break,
            1 => {
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = o.get(1) else { break };
        let len = len as usize;
        if len < 2 || len > o.len() {
            break;
        }
        let body = &o[2..len];
        match (kind, body.len()) {
            (2, 2) => s.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            (3, 1) => s.wscale = Some(body[0].min(14)),
            (4, 0) => s.sack_ok = true,
            (8, 8) => s.tsval = Some(u32::from_be_bytes([body[0], body[1], body[2], body[3]])),
            _ => {}
        }
        o = &o[len..];
    }
    s
}

/// The timestamp value of a segment's options, if any.
pub fn tsval(options: &[u8]) -> Option<u32> {
    parse_options(options).tsval
}

/// A connection to the service: the client's address and port and the service port (the
/// protocol's type, as the events name connections with it).
pub use halab_protocol::modes::st_tcp::ConnKey;

/// What the tap learned of one connection.
#[derive(Debug, Clone)]
pub struct Conn {
    pub client_isn: u32,
    pub client_opts: SynOptions,
    /// From the primary's SYN-ACK.
    pub server_isn: Option<u32>,
    pub server_opts: SynOptions,
    /// Offset of the next client byte in order (bytes before it were delivered).
    pub client_next: u64,
    /// Client bytes received out of order, by offset.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    /// Highest server-stream offset the client has acknowledged (None before its first ACK
    /// of the SYN-ACK).
    pub client_ack: Option<u64>,
    /// The primary's latest timestamp value and when it was seen.
    pub server_tsval: Option<(u32, u64)>,
    /// End of the server stream the primary has sent (offset after its highest byte seen on the
    /// tap): what the client can have acknowledged at most.
    pub server_sent: u64,
    /// The client's latest timestamp value (what the takeover echoes).
    pub client_tsval: Option<u32>,
    pub client_fin: Option<u64>,
    pub server_fin: bool,
    /// The latest windows each side advertised (unscaled, as on the wire).
    pub client_window: u16,
    pub server_window: u16,
    /// Last segment from either side.
    pub last_seen_ns: u64,
}

impl Conn {
    /// The 32-bit sequence number of client offset `off`.
    pub fn client_seq(&self, off: u64) -> u32 {
        self.client_isn.wrapping_add(1).wrapping_add(off as u32)
    }

    /// The 32-bit sequence number of server offset `off` (once the SYN-ACK was seen).
    pub fn server_seq(&self, off: u64) -> Option<u32> {
        Some(self.server_isn?.wrapping_add(1).wrapping_add(off as u32))
    }

    /// Gaps in the client's stream: (from, to) offsets missing before pending bytes.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = self.client_next;
        for (&o, b) in &self.pending {
            if o > at {
                out.push((at, o));
            }
            at = at.max(o + b.len() as u64);
        }
        out
    }
}

/// Unwraps 32-bit sequence number `seq` of a stream whose offset 0 is `base` into an offset
/// near `near` (within 2 GiB either side).
pub fn unwrap(seq: u32, base: u32, near: u64) -> Option<u64> {
    let near_seq = base.wrapping_add(near as u32);
    let delta = seq.wrapping_sub(near_seq) as i32 as i64;
    let off = near as i64 + delta;
    (off >= 0).then_some(off as u64)
}

/// What a segment told the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A client's SYN to the service: a new connection to replicate.
    Opened(ConnKey),
    /// Client bytes in order from offset `at`.
    ClientBytes {
        key: ConnKey,
        at: u64,
        bytes: Vec<u8>,
    },
    /// The client acknowledged the server's stream up to this offset.
    Acked { key: ConnKey, upto: u64 },
    /// The client finished sending (its FIN is next in order).
    ClientFin(ConnKey),
    /// The connection is gone (RST, or both FINs seen).
    Closed(ConnKey),
}

/// Every connection to `vip` on `ports` seen on the tap.
#[derive(Debug)]
pub struct Tracker {
    vip: Ipv4Addr,
    ports: Vec<u16>,
    conns: HashMap<ConnKey, Conn>,
}

impl Tracker {
    pub fn new(vip: Ipv4Addr, ports: Vec<u16>) -> Tracker {
        Tracker {
            vip,
            ports,
            conns: HashMap::new(),
        }
    }

    /// Whether `seg` goes from a client to the service.
    pub fn is_to_service(&self, seg: &Segment<'_>) -> bool {
        seg.dst == self.vip && self.ports.contains(&seg.dport)
    }

    pub fn get(&self, key: &ConnKey) -> Option<&Conn> {
        self.conns.get(key)
    }

    pub fn conns(&self) -> impl Iterator<Item = (&ConnKey, &Conn)> {
        self.conns.iter()
    }

    pub fn remove(&mut self, key: &ConnKey) -> Option<Conn> {
        self.conns.remove(key)
    }

    pub fn clear(&mut self) {
        self.conns.clear();
    }

    /// Takes one segment seen at `now_ns`; appends what it told to `out`.
    pub fn on_segment(&mut self, seg: &Segment<'_>, now_ns: u64, out: &mut Vec<Output>) {
        if seg.dst == self.vip && self.ports.contains(&seg.dport) {
            let key = ConnKey {
                client: seg.src,
                client_port: seg.sport,
                port: seg.dport,
            };
            self.on_client_segment(key, seg, now_ns, out);
        } else if seg.src == self.vip && self.ports.contains(&seg.sport) {
            let key = ConnKey {
                client: seg.dst,
                client_port: seg.dport,
                port: seg.sport,
            };
            self.on_server_segment(key, seg, now_ns, out);
        }
    }

    fn on_client_segment(
        &mut self,
        key: ConnKey,
        seg: &Segment<'_>,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        if seg.flags & SYN != 0 {
            if seg.flags & ACK != 0 {
                return;
            }
            // A retransmitted SYN of a connection we know changes nothing.
            if self
                .conns
                .get(&key)
                .is_some_and(|c| c.client_isn == seg.seq)
            {
                return;
            }
            if self.conns.remove(&key).is_some() {
                out.push(Output::Closed(key));
            }
            let opts = parse_options(seg.options);
            self.conns.insert(
                key,
                Conn {
                    client_isn: seg.seq,
                    client_opts: opts,
                    server_isn: None,
                    server_opts: SynOptions::default(),
                    client_next: 0,
                    pending: BTreeMap::new(),
                    pending_bytes: 0,
                    client_ack: None,
                    server_tsval: None,
                    server_sent: 0,
                    client_tsval: opts.tsval,
                    client_fin: None,
                    server_fin: false,
                    client_window: seg.window,
                    server_window: 0,
                    last_seen_ns: now,
                },
            );
            out.push(Output::Opened(key));
            return;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        c.last_seen_ns = now;
        if seg.flags & RST != 0 {
            self.conns.remove(&key);
            out.push(Output::Closed(key));
            return;
        }
        if let Some(ts) = tsval(seg.options) {
            c.client_tsval = Some(ts);
        }
        c.client_window = seg.window;
        // ACK of the server's stream (the SYN-ACK itself is offset −1: not a byte).
        if seg.flags & ACK != 0
            && let Some(isn) = c.server_isn
        {
            let near = c.client_ack.unwrap_or(0);
            if let Some(upto) = unwrap(seg.ack, isn.wrapping_add(1), near) {
                match c.client_ack {
                    None => {
                        c.client_ack = Some(upto);
                        if upto > 0 {
                            out.push(Output::Acked { key, upto });
                        }
                    }
                    Some(a) if upto > a => {
                        c.client_ack = Some(upto);
                        out.push(Output::Acked { key, upto });
                    }
                    Some(_) => {}
                }
            }
        }
        let Some(at) = unwrap(seg.seq, c.client_isn.wrapping_add(1), c.client_next) else {
            return;
        };
        if !seg.payload.is_empty() {
            deliver(c, key, at, seg.payload, out);
        }
        if seg.flags & FIN != 0 {
            c.client_fin = Some(at + seg.payload.len() as u64);
        }
        if let Some(f) = c.client_fin
            && f == c.client_next
        {
            out.push(Output::ClientFin(key));
            if c.server_fin {
                self.conns.remove(&key);
                out.push(Output::Closed(key));
            }
        }
    }

    fn on_server_segment(
        &mut self,
        key: ConnKey,
        seg: &Segment<'_>,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        c.last_seen_ns = now;
        if seg.flags & RST != 0 {
            self.conns.remove(&key);
            out.push(Output::Closed(key));
            return;
        }
        if seg.flags & SYN != 0 && seg.flags & ACK != 0 && seg.ack == c.client_isn.wrapping_add(1) {
            c.server_isn = Some(seg.seq);
            c.server_opts = parse_options(seg.options);
        }
        if let Some(ts) = tsval(seg.options) {
            c.server_tsval = Some((ts, now));
        }
        if seg.wire_len > 0
            && seg.flags & SYN == 0
            && let Some(isn) = c.server_isn
            && let Some(at) = unwrap(seg.seq, isn.wrapping_add(1), c.server_sent)
        {
            c.server_sent = c.server_sent.max(at + seg.wire_len as u64);
        }
        c.server_window = seg.window;
        if seg.flags & FIN != 0 {
            c.server_fin = true;
            if c.client_fin.is_some_and(|f| f == c.client_next) {
                self.conns.remove(&key);
                out.push(Output::Closed(key));
            }
        }
    }

    /// Client bytes that came from elsewhere (the logger) for a gap of the tap.
    pub fn fill(&mut self, key: ConnKey, at: u64, bytes: &[u8], out: &mut Vec<Output>) {
        if let Some(c) = self.conns.get_mut(&key) {
            deliver(c, key, at, bytes, out);
        }
    }
}

/// Delivers what of `[at, at+len)` is new and in order, keeps what is beyond a gap.
fn deliver(c: &mut Conn, key: ConnKey, at: u64, payload: &[u8], out: &mut Vec<Output>) {
    let end = at + payload.len() as u64;
    if end <= c.client_next {
        return;
    }
    if at > c.client_next {
        if c.pending_bytes + payload.len() <= MAX_PENDING && !c.pending.contains_key(&at) {
            c.pending_bytes += payload.len();
            c.pending.insert(at, payload.to_vec());
        }
        return;
    }
    let skip = (c.client_next - at) as usize;
    out.push(Output::ClientBytes {
        key,
        at: c.client_next,
        bytes: payload[skip..].to_vec(),
    });
    c.client_next = end;
    // What waited behind the gap.
    while let Some((&o, _)) = c.pending.first_key_value() {
        if o > c.client_next {
            break;
        }
        let (o, b) = c.pending.pop_first().unwrap_or_default();
        c.pending_bytes -= b.len();
        let e = o + b.len() as u64;
        if e > c.client_next {
            let skip = (c.client_next - o) as usize;
            out.push(Output::ClientBytes {
                key,
                at: c.client_next,
                bytes: b[skip..].to_vec(),
            });
            c.client_next = e;
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Segments of one connection for unit tests of the tracker and what uses it.
    use super::*;

    pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

    pub(crate) fn c2s(
        seq: u32,
        ack: u32,
        flags: u8,
        opts: &'static [u8],
        payload: &'static [u8],
    ) -> Segment<'static> {
        Segment {
            src: CLIENT,
            dst: VIP,
            sport: 40000,
            dport: 7070,
            seq,
            ack,
            flags,
            window: 512,
            options: opts,
            payload,
            wire_len: payload.len(),
        }
    }

    pub(crate) fn s2c(seq: u32, ack: u32, flags: u8, opts: &'static [u8]) -> Segment<'static> {
        Segment {
            src: VIP,
            dst: CLIENT,
            sport: 7070,
            dport: 40000,
            seq,
            ack,
            flags,
            window: 512,
            options: opts,
            payload: &[],
            wire_len: 0,
        }
    }

    pub(crate) const KEY: ConnKey = ConnKey {
        client: CLIENT,
        client_port: 40000,
        port: 7070,
    };

    // MSS 1460, SACK permitted, TS 1000/0, NOP, wscale 7.
    pub(crate) const SYN_OPTS: &[u8] = &[
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 3, 0xe8, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    pub(crate) const SYNACK_OPTS: &[u8] = &[
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x13, 0x88, 0, 0, 3, 0xe8, 1, 3, 3, 9,
    ];

    pub(crate) fn handshake(t: &mut Tracker, out: &mut Vec<Output>, cisn: u32, sisn: u32) {
        t.on_segment(&c2s(cisn, 0, SYN, SYN_OPTS, b""), 1, out);
        t.on_segment(
            &s2c(sisn, cisn.wrapping_add(1), SYN | ACK, SYNACK_OPTS),
            2,
            out,
        );
        t.on_segment(
            &c2s(cisn.wrapping_add(1), sisn.wrapping_add(1), ACK, &[], b""),
            3,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn what_the_primary_sent_is_counted_from_wire_lengths_of_cut_frames() {
        let mut t = Tracker::new(VIP, vec![7070]);
        let mut out = Vec::new();
        handshake(&mut t, &mut out, 100, 5000);
        // Two data segments whose frames the tap cut short: only their headers were captured.
        for (off, len) in [(0u32, 1448usize), (1448, 1448)] {
            let mut seg = s2c(5001 + off, 101, ACK, &[]);
            seg.wire_len = len;
            t.on_segment(&seg, 4, &mut out);
        }
        // A retransmission of the first changes nothing.
        let mut seg = s2c(5001, 101, ACK, &[]);
        seg.wire_len = 1448;
        t.on_segment(&seg, 5, &mut out);
        assert_eq!(t.get(&KEY).unwrap().server_sent, 2896);
    }

    #[test]
    fn handshake_options_and_isns_are_learned() {
        let mut t = Tracker::new(VIP, vec![7070]);
        let mut out = Vec::new();
        handshake(&mut t, &mut out, 100, 5000);
        assert_eq!(out, vec![Output::Opened(KEY)]);
        let c = t.get(&KEY).unwrap();
        assert_eq!(c.client_isn, 100);
        assert_eq!(c.server_isn, Some(5000));
        assert_eq!(c.client_opts.mss, Some(1460));
        assert_eq!(c.client_opts.wscale, Some(7));
        assert_eq!(c.server_opts.wscale, Some(9));
        assert!(c.client_opts.sack_ok && c.server_opts.sack_ok);
        assert_eq!(c.server_tsval.map(|t| t.0), Some(5000));
        assert_eq!(c.client_ack, Some(0));
    }

    #[test]
    fn client_bytes_come_out_in_order_across_wraparound_and_gaps() {
        let mut t = Tracker::new(VIP, vec![7070]);
        let mut out = Vec::new();
        let cisn = u32::MAX - 3; // the stream wraps after 3 bytes
        handshake(&mut t, &mut out, cisn, 9);
        out.clear();
        let s = cisn.wrapping_add(1);
        t.on_segment(&c2s(s.wrapping_add(5), 10, ACK, &[], b"fgh"), 4, &mut out);
        assert!(out.is_empty(), "beyond a gap: held");
        assert_eq!(t.get(&KEY).unwrap().gaps(), vec![(0, 5)]);
        t.on_segment(&c2s(s, 10, ACK, &[], b"abcde"), 5, &mut out);
        t.on_segment(&c2s(s, 10, ACK, &[], b"abc"), 6, &mut out); // duplicate
        let bytes: Vec<u8> = out
            .iter()
            .filter_map(|o| match o {
                Output::ClientBytes { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(bytes, b"abcdefgh");
        assert_eq!(t.get(&KEY).unwrap().client_next, 8);
        assert!(t.get(&KEY).unwrap().gaps().is_empty());
    }

    #[test]
    fn acks_advance_and_never_go_back() {
        let mut t = Tracker::new(VIP, vec![7070]);
        let mut out = Vec::new();
        handshake(&mut t, &mut out, 1, u32::MAX - 10);
        out.clear();
        let base = (u32::MAX - 10).wrapping_add(1);
        t.on_segment(&c2s(2, base.wrapping_add(100), ACK, &[], b""), 4, &mut out);
        t.on_segment(&c2s(2, base.wrapping_add(50), ACK, &[], b""), 5, &mut out);
        assert_eq!(
            out,
            vec![Output::Acked {
                key: KEY,
                upto: 100
            }]
        );
        assert_eq!(t.get(&KEY).unwrap().client_ack, Some(100));
        assert_eq!(
            t.get(&KEY).unwrap().server_seq(100),
            Some(base.wrapping_add(100))
        );
    }

    #[test]
    fn rst_and_both_fins_close() {
        let mut t = Tracker::new(VIP, vec![7070]);
        let mut out = Vec::new();
        handshake(&mut t, &mut out, 1, 1000);
        out.clear();
        t.on_segment(&s2c(1001, 2, FIN | ACK, &[]), 4, &mut out);
        t.on_segment(&c2s(2, 1002, FIN | ACK, &[], b""), 5, &mut out);
        assert_eq!(
            out,
            vec![
                Output::Acked { key: KEY, upto: 1 },
                Output::ClientFin(KEY),
                Output::Closed(KEY)
            ]
        );
        handshake(&mut t, &mut out, 77, 1000);
        out.clear();
        t.on_segment(&c2s(78, 0, RST, &[], b""), 6, &mut out);
        assert_eq!(out, vec![Output::Closed(KEY)]);
        assert!(t.get(&KEY).is_none());
    }

    #[test]
    fn frames_parse_and_garbage_does_not_panic() {
        // Ethernet + IPv4 + TCP with 4 bytes of payload.
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let mut ip = vec![
            0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 10, 10, 0, 0, 100,
        ];
        let tcp = [
            0x9c, 0x40, 0x1b, 0x9e, 0, 0, 0, 5, 0, 0, 0, 9, 0x50, ACK, 0xff, 0xff, 0, 0, 0, 0,
        ];
        ip.extend_from_slice(&tcp);
        ip.extend_from_slice(b"ping");
        f.extend_from_slice(&ip);
        let s = parse_frame(&f).unwrap();
        assert_eq!((s.sport, s.dport, s.seq, s.ack), (40000, 7070, 5, 9));
        assert_eq!(s.payload, b"ping");
        for n in 0..f.len() {
            let _ = parse_frame(&f[..n]);
        }
        let mut bad = f.clone();
        bad[14 + 20 + 12] = 0xf0; // data offset beyond the segment
        assert!(parse_frame(&bad).is_none());
        let _ = parse_options(&[3, 0, 2, 9, 8]);
        let _ = parse_options(&[2, 200]);
    }
}
