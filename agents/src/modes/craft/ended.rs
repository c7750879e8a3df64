//! Which splices' connections have ended, sans-IO (the sweeper, [`super::sweeper`], acts on
//! it). Removing splices whose connection ended is left out by the thesis: without it a splice
//! would outlive its connection, and a later connection on the same addresses and ports would
//! be rewritten into the old one's.
//!
//! Each proxy sees only the packets sprayed to it, so no proxy is sure to see both FINs. The
//! rule, per host: a connection this host saw end (a FIN or a RST in either direction) is
//! removed once it has been idle here for `linger` (its last ACKs and retransmissions pass
//! first); any connection idle here for `idle_limit` is removed too. The host that removes it
//! tells the other proxies (the replica `Remove`), so all forget it together. A SYN on a
//! spliced flow also drops that host's splice (in the data path itself).

use super::translation::Flow;
use std::time::Duration;

/// What the sweeper needs of one direction's splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceView {
    /// The direction as it arrives.
    pub from: Flow,
    /// As it leaves: the partner direction arrives as `to` reversed.
    pub to: Flow,
    /// CLOCK_MONOTONIC of its last packet here (or its install).
    pub last_ns: u64,
    /// This host saw a FIN or a RST of it.
    pub ended: bool,
}

/// How long an ended connection stays after its last packet here.
pub const LINGER: Duration = Duration::from_secs(5);
/// How long any connection stays without a packet here.
pub const IDLE_LIMIT: Duration = Duration::from_secs(600);
/// How often a proxy sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The connections to remove at `now_ns`: both directions' keys of each (a direction whose
/// partner is not on this host is removed with the partner's key derived from it).
pub fn expired(
    views: &[SpliceView],
    now_ns: u64,
    linger: Duration,
    idle_limit: Duration,
) -> Vec<[Flow; 2]> {
    let reverse = |f: Flow| Flow::new(f.dst, f.src);
    let mut out: Vec<[Flow; 2]> = Vec::new();
    for v in views {
        let partner_key = reverse(v.to);
        let partner = views.iter().find(|p| p.from == partner_key);
        let last = partner.map_or(v.last_ns, |p| p.last_ns.max(v.last_ns));
        let ended = v.ended || partner.is_some_and(|p| p.ended);
        let idle = now_ns.saturating_sub(last);
        let gone =
            (ended && idle > linger.as_nanos() as u64) || idle > idle_limit.as_nanos() as u64;
        if !gone {
            continue;
        }
        // One entry per connection, whichever direction comes first.
        let pair = if v.from.src < partner_key.src
            || (v.from.src == partner_key.src && v.from.dst <= partner_key.dst)
        {
            [v.from, partner_key]
        } else {
            [partner_key, v.from]
        };
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    const S: u64 = 1_000_000_000;

    fn sa(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, last), port)
    }

    /// Both directions of one spliced connection: client 10 → service 100, proxy source 200 →
    /// backend 20.
    fn conn(port: u16, last_up: u64, last_down: u64, ended: bool) -> [SpliceView; 2] {
        let c = sa(10, port);
        let v = sa(100, 8080);
        let p = sa(200, port);
        let b = sa(20, 8080);
        [
            SpliceView {
                from: Flow::new(c, v),
                to: Flow::new(p, b),
                last_ns: last_up,
                ended,
            },
            SpliceView {
                from: Flow::new(b, p),
                to: Flow::new(v, c),
                last_ns: last_down,
                ended: false,
            },
        ]
    }

    #[test]
    fn an_ended_connection_goes_after_the_linger_and_a_live_one_stays() {
        let mut views = conn(1000, 10 * S, 12 * S, true).to_vec();
        views.extend(conn(1001, 10 * S, 10 * S, false));
        let linger = Duration::from_secs(5);
        let limit = Duration::from_secs(600);
        assert!(
            expired(&views, 16 * S, linger, limit).is_empty(),
            "the partner was busy until 12 s"
        );
        let gone = expired(&views, 17 * S + 1, linger, limit);
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert!(gone[0].contains(&views[0].from) && gone[0].contains(&views[1].from));
        // The live one only after the idle limit.
        assert_eq!(expired(&views, 611 * S, linger, limit).len(), 2);
    }

    #[test]
    fn a_direction_alone_on_this_host_is_removed_with_its_partners_key() {
        let [up, down] = conn(1002, 0, 0, true);
        let gone = expired(
            &[up],
            6 * S,
            Duration::from_secs(5),
            Duration::from_secs(600),
        );
        assert_eq!(gone.len(), 1);
        assert!(gone[0].contains(&up.from) && gone[0].contains(&down.from));
    }
}
