//! Heartbeats over two links (DESIGN §5 st-tcp step 2; thesis §3.6): the sans-IO detector
//! that turns beats per link into a verdict, the sealed wire format with its replay guard, and
//! the UDP socket both sides use.

pub use halab_protocol::modes::st_tcp::Link;
use halab_protocol::modes::st_tcp::{HEARTBEAT_MAGIC, HEARTBEAT_PORT, Heartbeat};
use halab_protocol::sealed::{Key, SealError};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// How long a detector waits for a peer it has never heard, beyond the usual limit: the two
/// roles of a pair start at about the same time, but not at once (a power-on brings the agent
/// up, probes its clock, then starts the role; a reset reaches the backup before the primary
/// beats again). Bounded, so a peer that dies before its first beat is declared dead after
/// `START_GRACE_NS` + `missed` intervals instead of never.
pub const START_GRACE_NS: u64 = 2_000_000_000;

/// How often a detector's verdict is taken, on both sides: a check half an interval late would
/// add up to that much to every failover.
pub const DETECT_CHECK: std::time::Duration = std::time::Duration::from_millis(5);

/// What the beats say about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Heard within the limit on the links that matter, or not heard yet within the start-up
    /// grace.
    Alive,
    /// Silent on every link for `missed` intervals (or never heard, for the grace and that).
    Dead,
    /// Silent on the service link only: the heartbeat link still carries its beats.
    ServiceLinkLost,
}

/// Counts missed beats per link; `missed` intervals of silence on a link mean it is lost. It is
/// armed from the moment it starts watching (creation or [`Detector::reset`]): nothing waits
/// forever.
#[derive(Debug, Clone)]
pub struct Detector {
    limit_ns: u64,
    has_heartbeat_link: bool,
    /// When watching started (the start-up grace counts from here).
    armed_ns: u64,
    /// When each link last carried a beat; both start at the first beat on any link.
    last: [Option<u64>; 2],
}

impl Detector {
    /// A detector watching from `now_ns`.
    pub fn new(interval_ms: u64, missed: u32, has_heartbeat_link: bool, now_ns: u64) -> Detector {
        Detector {
            limit_ns: interval_ms.max(1) * 1_000_000 * missed.max(1) as u64,
            has_heartbeat_link,
            armed_ns: now_ns,
            last: [None, None],
        }
    }

    /// Forgets the peer and watches it afresh from `now_ns` (start-up grace included).
    pub fn reset(&mut self, now_ns: u64) {
        self.last = [None, None];
        self.armed_ns = now_ns;
    }

    pub fn heard(&self) -> bool {
        self.last[0].is_some()
    }

    pub fn on_beat(&mut self, link: Link, now_ns: u64) {
        if self.last[0].is_none() {
            // The first beat arms both links at once.
            self.last = [Some(now_ns), Some(now_ns)];
        }
        self.last[link as usize] = Some(now_ns);
    }

    /// When the last beat on any link came.
    pub fn last_any(&self) -> Option<u64> {
        self.last.iter().flatten().copied().max()
    }

    /// When watching started.
    pub fn armed_ns(&self) -> u64 {
        self.armed_ns
    }

    pub fn verdict(&self, now_ns: u64) -> Verdict {
        if self.last[0].is_none() {
            let waited = now_ns.saturating_sub(self.armed_ns);
            return if waited > START_GRACE_NS + self.limit_ns {
                Verdict::Dead
            } else {
                Verdict::Alive
            };
        }
        let silent =
            |i: usize| self.last[i].is_some_and(|t| now_ns.saturating_sub(t) > self.limit_ns);
        let service = silent(0);
        let heartbeat = !self.has_heartbeat_link || silent(1);
        match (service, heartbeat) {
            (true, true) => Verdict::Dead,
            (true, false) => Verdict::ServiceLinkLost,
            _ => Verdict::Alive,
        }
    }
}

/// Why a datagram was not taken as a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not sealed with the testbed's key (forged, another testbed's, or not a beat at all).
    Forged,
    /// Sealed, but its (incarnation, seq) on its link is not newer than one already taken.
    Replayed,
}

/// The sealed beat format and its replay guard (sans-IO): `HST1` · JSON · HMAC-SHA256 under
/// the testbed's key. Per sender and link, a beat is taken only if its (incarnation, seq) is
/// above the last one taken there; the guard outlives resets of the detector, so an old beat
/// replayed after a reset is still refused. Refusals are counted until [`Wire::take_counts`].
#[derive(Debug)]
pub struct Wire {
    key: Key,
    newest: HashMap<(String, Link), (u64, u64)>,
    forged: u64,
    replayed: u64,
}

impl Wire {
    pub fn new(key: Key) -> Wire {
        Wire {
            key,
            newest: HashMap::new(),
            forged: 0,
            replayed: 0,
        }
    }

    /// `beat` as a datagram.
    pub fn seal(&self, beat: &Heartbeat) -> Vec<u8> {
        // Serialising a plain data struct to JSON cannot fail.
        let body = serde_json::to_vec(beat).unwrap_or_default();
        self.key.seal(HEARTBEAT_MAGIC, &body)
    }

    /// The beat in `datagram` if it is sealed with the key and new; never panics on input.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Heartbeat, Refusal> {
        let beat: Heartbeat = match self.key.open(HEARTBEAT_MAGIC, datagram) {
            Ok(body) => serde_json::from_slice(body).map_err(|_| Refusal::Forged),
            Err(SealError::BadTag | SealError::Magic | SealError::Length(_))
            | Err(SealError::BadKey) => Err(Refusal::Forged),
        }
        .inspect_err(|_| self.forged += 1)?;
        let at = (beat.incarnation, beat.seq);
        let slot = self
            .newest
            .entry((beat.from.clone(), beat.link))
            .or_insert((0, 0));
        if at <= *slot {
            self.replayed += 1;
            return Err(Refusal::Replayed);
        }
        *slot = at;
        Ok(beat)
    }

    /// (forged, replayed) refused since the last call, if any.
    pub fn take_counts(&mut self) -> Option<(u64, u64)> {
        let c = (self.forged, self.replayed);
        self.forged = 0;
        self.replayed = 0;
        (c != (0, 0)).then_some(c)
    }
}

/// DSCP CS6, network control (RFC 4594): what routers are configured to serve first.
const BEAT_TOS: libc::c_int = 0xc0;

/// The UDP socket beats go out of and come in on. Beats are marked as network control: IP
/// precedence 6 for the network and socket priority 6 (TC_PRIO_INTERACTIVE, band 0 of a
/// `prio` qdisc) for the host's own queues, so that a link kept full by bulk data does not
/// make the beats behind it late or drop them, which the peer would take for a failure.
pub async fn socket() -> std::io::Result<UdpSocket> {
    let sock = UdpSocket::bind(("0.0.0.0", HEARTBEAT_PORT)).await?;
    crate::sockopt::set_int(&sock, libc::IPPROTO_IP, libc::IP_TOS, BEAT_TOS)?;
    crate::sockopt::set_int(&sock, libc::SOL_SOCKET, libc::SO_PRIORITY, 6)?;
    Ok(sock)
}

/// Sends `beat` to `peer` on each of its links (service address, heartbeat address).
pub async fn send(sock: &UdpSocket, wire: &Wire, beat: &mut Heartbeat, peer: &[(Link, String)]) {
    for (link, addr) in peer {
        beat.link = *link;
        let bytes = wire.seal(beat);
        let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
            continue;
        };
        // A beat that cannot leave (link down) is a missed beat, nothing more.
        let _ = sock
            .send_to(&bytes, SocketAddr::new(ip, HEARTBEAT_PORT))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn dead_after_missed_beats_on_both_links_only() {
        let mut d = Detector::new(100, 3, true, 0);
        d.on_beat(Link::Service, 0);
        d.on_beat(Link::Heartbeat, 0);
        assert_eq!(d.verdict(300 * MS), Verdict::Alive);
        d.on_beat(Link::Heartbeat, 300 * MS);
        assert_eq!(d.verdict(301 * MS), Verdict::ServiceLinkLost);
        assert_eq!(d.verdict(601 * MS), Verdict::Dead);
        d.on_beat(Link::Service, 602 * MS);
        assert_eq!(d.verdict(603 * MS), Verdict::Alive);
    }

    #[test]
    fn a_peer_never_heard_is_dead_after_the_grace_and_the_limit() {
        let start = 5_000 * MS;
        let mut d = Detector::new(50, 3, true, start);
        let limit = 150 * MS;
        assert_eq!(d.verdict(start + START_GRACE_NS + limit), Verdict::Alive);
        assert_eq!(d.verdict(start + START_GRACE_NS + limit + 1), Verdict::Dead);
        // A reset watches afresh from then: the grace starts again, it does not wait forever.
        let later = start + 10 * START_GRACE_NS;
        d.reset(later);
        assert_eq!(d.verdict(later + START_GRACE_NS), Verdict::Alive);
        assert_eq!(d.verdict(later + START_GRACE_NS + limit + 1), Verdict::Dead);
        // Once heard, only the limit counts.
        d.on_beat(Link::Service, later + MS);
        assert_eq!(d.verdict(later + MS + limit + 1), Verdict::Dead);
    }

    #[test]
    fn without_a_heartbeat_link_the_service_link_decides() {
        let mut d = Detector::new(50, 2, false, 0);
        d.on_beat(Link::Service, 0);
        assert_eq!(d.verdict(100 * MS), Verdict::Alive);
        assert_eq!(d.verdict(101 * MS), Verdict::Dead);
    }

    fn beat(seq: u64, incarnation: u64, link: Link) -> Heartbeat {
        Heartbeat {
            from: "primary".into(),
            incarnation,
            seq,
            link,
            conns: vec![],
            held_fins: vec![],
            fin_ok: vec![([10, 0, 0, 1], 4000, 7070, 99)],
            tracking: vec![],
        }
    }

    #[test]
    fn beats_round_trip_and_forged_or_garbage_ones_are_refused_and_counted() {
        let mut w = Wire::new(Key::from_hex("0011").unwrap());
        let hb = beat(7, 1, Link::Heartbeat);
        assert_eq!(w.open(&w.seal(&hb)), Ok(hb.clone()));
        let forger = Wire::new(Key::from_hex("0012").unwrap());
        let mut later = hb.clone();
        later.seq = 8;
        assert_eq!(w.open(&forger.seal(&later)), Err(Refusal::Forged));
        assert_eq!(w.open(b"{\"from\":1}"), Err(Refusal::Forged));
        assert_eq!(w.open(&[0xff, 0x00]), Err(Refusal::Forged));
        // Sealed but not a beat.
        let not_a_beat = Key::from_hex("0011")
            .unwrap()
            .seal(HEARTBEAT_MAGIC, b"[1,2]");
        assert_eq!(w.open(&not_a_beat), Err(Refusal::Forged));
        assert_eq!(w.take_counts(), Some((4, 0)));
        assert_eq!(w.take_counts(), None);
    }

    #[test]
    fn replays_are_refused_per_link_and_a_restarted_sender_is_taken() {
        let mut w = Wire::new(Key::from_hex("0011").unwrap());
        let b5 = w.seal(&beat(5, 100, Link::Service));
        assert!(w.open(&b5).is_ok());
        assert_eq!(w.open(&b5), Err(Refusal::Replayed));
        // The same beat on the other link is not a replay.
        assert!(w.open(&w.seal(&beat(5, 100, Link::Heartbeat))).is_ok());
        // An older one is.
        assert_eq!(
            w.open(&w.seal(&beat(4, 100, Link::Service))),
            Err(Refusal::Replayed)
        );
        // A restarted sender (larger incarnation) counts from 1 again.
        assert!(w.open(&w.seal(&beat(1, 200, Link::Service))).is_ok());
        // And its earlier life's beats are old now.
        assert_eq!(w.open(&b5), Err(Refusal::Replayed));
        assert_eq!(w.take_counts(), Some((0, 3)));
    }
}
