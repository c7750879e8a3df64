//! The splice's arithmetic (thesis §4.7.2, `PRE_SPLICE` → `SPLICE`), sans-IO: from the state of
//! the proxy's two quiet sockets, how each direction of the spliced connection is rewritten.
//!
//! Names: the client leg is the proxy's accepted socket (client ↔ service address), the backend
//! leg its connected socket (proxy ↔ backend). Quiet means both send queues are acknowledged
//! and both receive queues read, so every byte the proxy took from one leg has been handed to
//! the other: the client's byte at the client leg's `rcv_nxt` is the backend's byte at the
//! backend leg's `snd_nxt`, and the backend's byte at its `rcv_nxt` is the client's at the
//! client leg's `snd_nxt`. All sequence arithmetic is modulo 2³².

use std::net::{Ipv4Addr, SocketAddrV4};

/// What a splice needs to know of one of the proxy's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegState {
    /// The proxy's end (for the client leg: the service address and port).
    pub local: SocketAddrV4,
    /// The peer's end.
    pub remote: SocketAddrV4,
    /// The next sequence number the proxy sends (its send queue is empty).
    pub snd_nxt: u32,
    /// The next sequence number the proxy expects from the peer.
    pub rcv_nxt: u32,
    /// TCP timestamps, when the leg negotiated them.
    pub timestamps: Option<LegTimestamps>,
    /// The peer's window scale (how the proxy reads the peer's window field).
    pub peer_wscale: u8,
    /// The proxy's own window scale on this leg (how the peer reads the proxy's).
    pub own_wscale: u8,
    /// Whether the leg negotiated SACK.
    pub sack: bool,
}

/// A leg's timestamp clocks at the moment of the splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegTimestamps {
    /// The proxy socket's own timestamp clock now (`TCP_TIMESTAMP`, its offset included).
    pub own_now: u32,
    /// The newest timestamp value the data path saw the peer send.
    pub peer_newest: u32,
}

/// How far ahead of the proxy's own clock a peer's moved timestamps start, in timestamp ticks
/// (1 ms on Linux). A receiver drops a segment whose timestamp is older than the newest it
/// took (PAWS); the peer's newest value seen may be a little old, so its clock is moved to a
/// little ahead of the proxy socket's, which the receiver last heard. Being ahead costs
/// nothing: an echo is moved back by the same amount, so both ends still measure exact RTTs.
pub const TS_MARGIN: u32 = 1000;

/// How one direction's packets are rewritten: the values of the data path's `struct splice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// The packet as it arrives at a proxy.
    pub from: Flow,
    /// The packet as it leaves.
    pub to: Flow,
    pub seq_add: u32,
    pub ack_add: u32,
    pub tsval_add: u32,
    pub tsecr_add: u32,
    pub win_shl: u8,
    pub win_shr: u8,
}

/// One direction of a TCP connection: source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

impl Flow {
    pub fn new(src: SocketAddrV4, dst: SocketAddrV4) -> Flow {
        Flow { src, dst }
    }
}

/// Both directions of a spliced connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Client → service address, rewritten into proxy → backend.
    pub to_backend: Rewrite,
    /// Backend → proxy, rewritten into service address → client.
    pub to_client: Rewrite,
}

/// Why two legs cannot be spliced: each names what the two ends would disagree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("one leg uses TCP timestamps and the other does not")]
    Timestamps,
    #[error("one leg uses SACK and the other does not")]
    Sack,
}

/// The translation that joins the two legs (both quiet).
pub fn translate(client: &LegState, backend: &LegState) -> Result<Translation, Mismatch> {
    if client.timestamps.is_some() != backend.timestamps.is_some() {
        return Err(Mismatch::Timestamps);
    }
    if client.sack != backend.sack {
        return Err(Mismatch::Sack);
    }
    // Client byte at client.rcv_nxt ↔ backend-leg byte at backend.snd_nxt.
    let up_seq = backend.snd_nxt.wrapping_sub(client.rcv_nxt);
    // The client acknowledges the proxy's client-leg stream; the backend expects its own.
    let up_ack = backend.rcv_nxt.wrapping_sub(client.snd_nxt);
    // The timestamps: the client's clock moved onto the backend leg's own clock, and the echoes
    // the client sends (of the backend's values moved onto the client leg's clock) moved back.
    let (up_tsval, down_tsval) = match (client.timestamps, backend.timestamps) {
        (Some(c), Some(b)) => (
            b.own_now
                .wrapping_add(TS_MARGIN)
                .wrapping_sub(c.peer_newest),
            c.own_now
                .wrapping_add(TS_MARGIN)
                .wrapping_sub(b.peer_newest),
        ),
        _ => (0, 0),
    };
    let to_backend = Rewrite {
        from: Flow::new(client.remote, client.local),
        to: Flow::new(backend.local, backend.remote),
        seq_add: up_seq,
        ack_add: up_ack,
        tsval_add: up_tsval,
        tsecr_add: down_tsval.wrapping_neg(),
        win_shl: client.peer_wscale,
        win_shr: backend.own_wscale,
    };
    let to_client = Rewrite {
        from: Flow::new(backend.remote, backend.local),
        to: Flow::new(client.local, client.remote),
        seq_add: up_ack.wrapping_neg(),
        ack_add: up_seq.wrapping_neg(),
        tsval_add: down_tsval,
        tsecr_add: up_tsval.wrapping_neg(),
        win_shl: backend.peer_wscale,
        win_shr: client.own_wscale,
    };
    Ok(Translation {
        to_backend,
        to_client,
    })
}

/// The addresses a proxy's rewrite touches, for logs and records.
pub fn describe(t: &Translation) -> String {
    let a = |s: SocketAddrV4| -> (Ipv4Addr, u16) { (*s.ip(), s.port()) };
    let (c, v) = (a(t.to_backend.from.src), a(t.to_backend.from.dst));
    let (p, b) = (a(t.to_backend.to.src), a(t.to_backend.to.dst));
    format!(
        "{}:{} → {}:{} spliced to {}:{} → {}:{}",
        c.0, c.1, v.0, v.1, p.0, p.1, b.0, b.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 40, 0, last), port)
    }

    fn legs(c: (u32, u32, u32, u32), b: (u32, u32, u32, u32)) -> (LegState, LegState) {
        let client = LegState {
            local: sa(100, 8080),
            remote: sa(10, 40000),
            snd_nxt: c.0,
            rcv_nxt: c.1,
            timestamps: Some(LegTimestamps {
                own_now: c.2,
                peer_newest: c.3,
            }),
            peer_wscale: 7,
            own_wscale: 7,
            sack: true,
        };
        let backend = LegState {
            local: sa(200, 20001),
            remote: sa(21, 8080),
            snd_nxt: b.0,
            rcv_nxt: b.1,
            timestamps: Some(LegTimestamps {
                own_now: b.2,
                peer_newest: b.3,
            }),
            peer_wscale: 9,
            own_wscale: 7,
            sack: true,
        };
        (client, backend)
    }

    proptest! {
        /// Whatever the four initial sequence numbers and clocks, a client byte at any offset
        /// after the splice lands at the same offset of the backend's stream, an ack of the
        /// proxy's client-leg stream acknowledges the same offset of the backend's, and the two
        /// directions undo each other.
        #[test]
        fn offsets_carry_across_and_back(
            c in any::<(u32, u32, u32, u32)>(),
            b in any::<(u32, u32, u32, u32)>(),
            k in 0u32..1 << 31,
        ) {
            let (client, backend) = legs(c, b);
            let t = translate(&client, &backend).unwrap();
            // The client's k-th byte after the splice.
            let seq = client.rcv_nxt.wrapping_add(k);
            prop_assert_eq!(seq.wrapping_add(t.to_backend.seq_add), backend.snd_nxt.wrapping_add(k));
            // The client acknowledging k bytes of the backend's response.
            let ack = client.snd_nxt.wrapping_add(k);
            prop_assert_eq!(ack.wrapping_add(t.to_backend.ack_add), backend.rcv_nxt.wrapping_add(k));
            // The backend's k-th response byte reaches the client at the client leg's offset k.
            let bseq = backend.rcv_nxt.wrapping_add(k);
            prop_assert_eq!(bseq.wrapping_add(t.to_client.seq_add), client.snd_nxt.wrapping_add(k));
            let back = ack.wrapping_add(t.to_backend.ack_add).wrapping_add(t.to_client.seq_add);
            prop_assert_eq!(back, ack);
            // A timestamp the client sends from now on arrives just ahead of the backend leg's
            // clock (which the backend last heard), and its echo returns to the client as the
            // client's own value; the same the other way.
            let cts = client.timestamps.unwrap();
            let bts = backend.timestamps.unwrap();
            let later = cts.peer_newest.wrapping_add(k);
            let at_backend = later.wrapping_add(t.to_backend.tsval_add);
            prop_assert_eq!(at_backend, bts.own_now.wrapping_add(TS_MARGIN).wrapping_add(k));
            prop_assert_eq!(at_backend.wrapping_add(t.to_client.tsecr_add), later);
            let later = bts.peer_newest.wrapping_add(k);
            let at_client = later.wrapping_add(t.to_client.tsval_add);
            prop_assert_eq!(at_client, cts.own_now.wrapping_add(TS_MARGIN).wrapping_add(k));
            prop_assert_eq!(at_client.wrapping_add(t.to_backend.tsecr_add), later);
        }
    }

    #[test]
    fn addresses_and_windows_follow_the_legs() {
        let (client, backend) = legs((1, 2, 3, 4), (5, 6, 7, 8));
        let t = translate(&client, &backend).unwrap();
        assert_eq!(t.to_backend.from, Flow::new(sa(10, 40000), sa(100, 8080)));
        assert_eq!(t.to_backend.to, Flow::new(sa(200, 20001), sa(21, 8080)));
        assert_eq!(t.to_client.from, Flow::new(sa(21, 8080), sa(200, 20001)));
        assert_eq!(t.to_client.to, Flow::new(sa(100, 8080), sa(10, 40000)));
        // The client's window field counts 2^7 bytes, the backend reads the proxy's as 2^7.
        assert_eq!((t.to_backend.win_shl, t.to_backend.win_shr), (7, 7));
        // The backend's counts 2^9, the client reads the proxy's as 2^7.
        assert_eq!((t.to_client.win_shl, t.to_client.win_shr), (9, 7));
    }

    #[test]
    fn legs_that_disagree_on_options_are_not_spliced() {
        let (client, mut backend) = legs((1, 2, 3, 4), (5, 6, 7, 8));
        backend.timestamps = None;
        assert_eq!(translate(&client, &backend), Err(Mismatch::Timestamps));
        let (client, mut backend) = legs((1, 2, 3, 4), (5, 6, 7, 8));
        backend.sack = false;
        assert_eq!(translate(&client, &backend), Err(Mismatch::Sack));
    }
}
