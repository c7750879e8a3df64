//! Heartbeats over two links (DESIGN §5 st-tcp step 2; thesis §3.6): the sans-IO detector
//! that turns beats per link into a verdict, and the UDP socket both sides use.

use halab_protocol::modes::st_tcp::{HEARTBEAT_PORT, Heartbeat};
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// The links a beat can come over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Service = 0,
    Heartbeat = 1,
}

impl Link {
    pub fn name(self) -> &'static str {
        match self {
            Link::Service => "service",
            Link::Heartbeat => "heartbeat",
        }
    }

    pub fn parse(s: &str) -> Option<Link> {
        match s {
            "service" => Some(Link::Service),
            "heartbeat" => Some(Link::Heartbeat),
            _ => None,
        }
    }
}

/// What the beats say about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not heard from yet (nothing is declared about a peer never seen), or alive.
    Alive,
    /// Silent on every link for `missed` intervals.
    Dead,
    /// Silent on the service link only: the heartbeat link still carries its beats.
    ServiceLinkLost,
}

/// Counts missed beats per link; `missed` intervals of silence on a link mean it is lost.
#[derive(Debug, Clone)]
pub struct Detector {
    limit_ns: u64,
    has_heartbeat_link: bool,
    /// When each link last carried a beat; both start at the first beat on any link.
    last: [Option<u64>; 2],
}

impl Detector {
    pub fn new(interval_ms: u64, missed: u32, has_heartbeat_link: bool) -> Detector {
        Detector {
            limit_ns: interval_ms.max(1) * 1_000_000 * missed.max(1) as u64,
            has_heartbeat_link,
            last: [None, None],
        }
    }

    /// Forgets the peer (it is declared again only after its next beat).
    pub fn reset(&mut self) {
        self.last = [None, None];
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

    pub fn verdict(&self, now_ns: u64) -> Verdict {
        let silent =
            |i: usize| self.last[i].is_some_and(|t| now_ns.saturating_sub(t) > self.limit_ns);
        if self.last[0].is_none() {
            return Verdict::Alive;
        }
        let service = silent(0);
        let heartbeat = !self.has_heartbeat_link || silent(1);
        match (service, heartbeat) {
            (true, true) => Verdict::Dead,
            (true, false) => Verdict::ServiceLinkLost,
            _ => Verdict::Alive,
        }
    }
}

/// The UDP socket beats go out of and come in on.
pub async fn socket() -> std::io::Result<UdpSocket> {
    UdpSocket::bind(("0.0.0.0", HEARTBEAT_PORT)).await
}

/// Sends `beat` to `peer` on each of its links (service address, heartbeat address).
pub async fn send(sock: &UdpSocket, beat: &mut Heartbeat, peer: &[(Link, String)]) {
    for (link, addr) in peer {
        beat.link = link.name().to_string();
        let Ok(bytes) = serde_json::to_vec(&*beat) else {
            continue;
        };
        let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
            continue;
        };
        // A beat that cannot leave (link down) is a missed beat, nothing more.
        let _ = sock
            .send_to(&bytes, SocketAddr::new(ip, HEARTBEAT_PORT))
            .await;
    }
}

/// Parses a beat; `None` for anything that is not one (never panics on input).
pub fn parse(bytes: &[u8]) -> Option<(Link, Heartbeat)> {
    let hb: Heartbeat = serde_json::from_slice(bytes).ok()?;
    Some((Link::parse(&hb.link)?, hb))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn dead_after_missed_beats_on_both_links_only() {
        let mut d = Detector::new(100, 3, true);
        assert_eq!(
            d.verdict(10_000 * MS),
            Verdict::Alive,
            "never heard: nothing declared"
        );
        d.on_beat(Link::Service, 0);
        d.on_beat(Link::Heartbeat, 0);
        assert_eq!(d.verdict(300 * MS), Verdict::Alive);
        d.on_beat(Link::Heartbeat, 300 * MS);
        assert_eq!(d.verdict(301 * MS), Verdict::ServiceLinkLost);
        assert_eq!(d.verdict(601 * MS), Verdict::Dead);
        d.on_beat(Link::Service, 602 * MS);
        assert_eq!(d.verdict(603 * MS), Verdict::Alive);
        d.reset();
        assert_eq!(d.verdict(10_000 * MS), Verdict::Alive);
    }

    #[test]
    fn without_a_heartbeat_link_the_service_link_decides() {
        let mut d = Detector::new(50, 2, false);
        d.on_beat(Link::Service, 0);
        assert_eq!(d.verdict(100 * MS), Verdict::Alive);
        assert_eq!(d.verdict(101 * MS), Verdict::Dead);
    }

    #[test]
    fn beats_round_trip_and_garbage_is_refused() {
        let hb = Heartbeat {
            from: "primary".into(),
            seq: 7,
            link: "heartbeat".into(),
            conns: vec![],
            held_fins: vec![],
            fin_ok: vec![([10, 0, 0, 1], 4000, 7070, 99)],
        };
        let (link, back) = parse(&serde_json::to_vec(&hb).unwrap()).unwrap();
        assert_eq!(link, Link::Heartbeat);
        assert_eq!(back, hb);
        assert!(parse(b"{\"from\":1}").is_none());
        assert!(parse(&[0xff, 0x00]).is_none());
    }
}
