//! The backup's watch over its primary (thesis §3.6, §3.7.3, §3.7.4), sans-IO: beats per link
//! through the [`Detector`], the primary's per-connection progress against the replicas'
//! (application lag), and the FINs the primary holds. It takes beats, the replicas' progress
//! and a timestamp, and returns decisions: closes to confirm, a FIN held too long, a failure
//! to declare. The backup's task carries them out.

use super::heartbeat::{Detector, Link, Verdict};
use super::tracker::ConnKey;
use halab_protocol::modes::st_tcp::{ConnProgress, DetectReason, Heartbeat, StTcpConfig};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// A connection as the FIN hold names it: (client, client port, service port).
pub type FinKey = ([u8; 4], u16, u16);

pub fn fin_key(k: &ConnKey) -> FinKey {
    (k.client.octets(), k.client_port, k.port)
}

fn conn_key(k: &FinKey) -> ConnKey {
    ConnKey {
        client: Ipv4Addr::from(k.0),
        client_port: k.1,
        port: k.2,
    }
}

/// What the backup's replica of a connection has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaView {
    /// Bytes the replica's server has produced.
    pub produced: u64,
    /// Where its output ended, if it did.
    pub ended: Option<u64>,
}

/// Why the primary is declared failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: DetectReason,
    pub detail: String,
}

/// What a primary beat's progress calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BeatOutcome {
    /// Closes to confirm to the primary now, with the offset its application must have
    /// written (connections the backup does not replicate: nothing to take over).
    pub confirm: Vec<(FinKey, u64)>,
    /// A connection whose FIN the primary has held for MaxDelayFIN while its replica went on.
    pub fin_held: Option<ConnKey>,
    pub failure: Option<Failure>,
}

/// The heartbeat verdict, taken every few milliseconds.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Fine,
    Failed(Failure),
    /// Beats come on the heartbeat link only, and the backup's own service link is down:
    /// the backup's NIC failed, it cannot take over anything (the detector starts afresh).
    OwnServiceLinkDown,
}

/// Per connection: the primary's last progress and since when it has lagged the replica.
#[derive(Debug, Clone, Copy)]
struct LagWatch {
    last: ConnProgress,
    since_ns: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Monitor {
    detector: Detector,
    interval_ms: u64,
    missed: u32,
    app_max_lag_bytes: u64,
    app_max_lag_ns: u64,
    max_delay_fin_ns: u64,
    lag: HashMap<ConnKey, LagWatch>,
    held_since: HashMap<FinKey, u64>,
}

impl Monitor {
    /// Watching `cfg`'s primary from `now_ns`.
    pub fn new(cfg: &StTcpConfig, now_ns: u64) -> Monitor {
        Monitor {
            detector: Detector::new(
                cfg.heartbeat_ms,
                cfg.missed_heartbeats,
                cfg.primary.heartbeat_addr.is_some() && cfg.backup.heartbeat_addr.is_some(),
                now_ns,
            ),
            interval_ms: cfg.heartbeat_ms,
            missed: cfg.missed_heartbeats,
            app_max_lag_bytes: cfg.app_max_lag_bytes,
            app_max_lag_ns: cfg.app_max_lag_ms * 1_000_000,
            max_delay_fin_ns: cfg.max_delay_fin_ms * 1_000_000,
            lag: HashMap::new(),
            held_since: HashMap::new(),
        }
    }

    /// Forgets everything and watches afresh from `now_ns`.
    pub fn reset(&mut self, now_ns: u64) {
        self.detector.reset(now_ns);
        self.lag.clear();
        self.held_since.clear();
    }

    /// A connection closed: nothing more to watch of it.
    pub fn forget(&mut self, key: &ConnKey) {
        self.lag.remove(key);
    }

    /// A beat arrived on `link` (a copy on each link: liveness only).
    pub fn on_beat(&mut self, link: Link, now_ns: u64) {
        self.detector.on_beat(link, now_ns);
    }

    /// The client bytes the primary last said were acknowledged on `key` (0 if none).
    pub fn last_ack_reported(&self, key: &ConnKey) -> u64 {
        self.lag.get(key).map_or(0, |w| w.last.last_ack_received)
    }

    /// A primary beat's progress (once per beat, not per link). `replicas`: what the backup
    /// replicates; `confirmed`: closes confirmed already.
    pub fn on_progress(
        &mut self,
        hb: &Heartbeat,
        replicas: &HashMap<ConnKey, ReplicaView>,
        confirmed: &[FinKey],
        now: u64,
    ) -> BeatOutcome {
        let mut out = BeatOutcome::default();
        let mut hung: Option<String> = None;
        for p in &hb.conns {
            let key = conn_key(&(p.client, p.client_port, p.port));
            let Some(r) = replicas.get(&key) else {
                continue;
            };
            let w = self.lag.entry(key).or_insert(LagWatch {
                last: *p,
                since_ns: None,
            });
            let still = w.last.last_app_byte_written == p.last_app_byte_written
                && w.last.last_app_byte_read == p.last_app_byte_read;
            // Hung: nothing written though all it wrote is acknowledged and the replica has
            // more; or client bytes received that the application does not read.
            let behind_out = p.last_app_byte_written == p.last_ack_received
                && r.produced > p.last_app_byte_written + self.app_max_lag_bytes;
            let unread = p.last_byte_received > p.last_app_byte_read + self.app_max_lag_bytes;
            if still && (behind_out || unread) {
                let since = *w.since_ns.get_or_insert(now);
                if now - since > self.app_max_lag_ns && hung.is_none() {
                    hung = Some(format!(
                        "{key}: application wrote {} and read {} of {} received; replica at {}, for {} ms",
                        p.last_app_byte_written,
                        p.last_app_byte_read,
                        p.last_byte_received,
                        r.produced,
                        (now - since) / 1_000_000
                    ));
                }
            } else if !still {
                w.since_ns = None;
            }
            w.last = *p;
        }
        // Held FINs: confirm those of connections the backup cannot replicate or whose
        // replica closed too; the others wait at most MaxDelayFIN.
        let mut held: Option<String> = None;
        self.held_since.retain(|k, _| hb.held_fins.contains(k));
        for k in &hb.held_fins {
            let key = conn_key(k);
            let written = hb
                .conns
                .iter()
                .find(|p| (p.client, p.client_port, p.port) == *k)
                .map(|p| p.last_app_byte_written);
            let Some(r) = replicas.get(&key) else {
                // Not replicated: nothing to take over, let it close.
                if let Some(w) = written
                    && !confirmed.contains(k)
                {
                    out.confirm.push((*k, w));
                }
                continue;
            };
            if r.ended.is_some() && r.ended == written {
                // Closed where the replica closed: confirmed already.
                continue;
            }
            // A replica behind the primary may still close where the primary did: only one
            // that has gone past what the primary wrote shows the primary closed early.
            if written.is_none_or(|w| r.produced <= w) {
                self.held_since.remove(k);
                continue;
            }
            let since = *self.held_since.entry(*k).or_insert(now);
            if now - since > self.max_delay_fin_ns && held.is_none() {
                held = Some(format!(
                    "{key}: the primary closed while its replica goes on, for {} ms (MaxDelayFIN)",
                    (now - since) / 1_000_000
                ));
                out.fin_held = Some(key);
            }
        }
        out.failure = match (hung, held) {
            (Some(detail), _) => Some(Failure {
                reason: DetectReason::AppLag,
                detail,
            }),
            (None, Some(detail)) => Some(Failure {
                reason: DetectReason::FinHeld,
                detail,
            }),
            (None, None) => None,
        };
        out
    }

    /// The heartbeat verdict at `now`; `own_service_link_up`: whether the backup's own service
    /// interface is up (asked only when the beats say the service link is lost).
    pub fn check(&mut self, now: u64, own_service_link_up: impl FnOnce() -> bool) -> Check {
        match self.detector.verdict(now) {
            Verdict::Alive => Check::Fine,
            Verdict::Dead => {
                let detail = match self.detector.last_any() {
                    Some(last) => format!(
                        "no heartbeat on any link for {} ms ({} × {} ms)",
                        (now - last) / 1_000_000,
                        self.missed,
                        self.interval_ms
                    ),
                    None => format!(
                        "no heartbeat at all in the {} ms since the backup started watching \
                         ({} × {} ms after a start-up grace of {} ms)",
                        (now - self.detector.armed_ns()) / 1_000_000,
                        self.missed,
                        self.interval_ms,
                        super::heartbeat::START_GRACE_NS / 1_000_000
                    ),
                };
                Check::Failed(Failure {
                    reason: DetectReason::HeartbeatsLost,
                    detail,
                })
            }
            Verdict::ServiceLinkLost => {
                if own_service_link_up() {
                    Check::Failed(Failure {
                        reason: DetectReason::ServiceLinkLost,
                        detail: "heartbeats on the heartbeat link only, and the backup's own \
                                 service link is up: the primary lost the service network"
                            .into(),
                    })
                } else {
                    self.detector.reset(now);
                    Check::OwnServiceLinkDown
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halab_protocol::modes::st_tcp::{Link, StTcpPeer};

    const MS: u64 = 1_000_000;

    fn cfg() -> StTcpConfig {
        let peer = |h: &str, a: &str, hb: &str| StTcpPeer {
            host: h.into(),
            service_addr: a.into(),
            heartbeat_addr: Some(hb.into()),
        };
        StTcpConfig {
            heartbeat_ms: 100,
            missed_heartbeats: 3,
            vip: "10.0.0.100".into(),
            vip_prefix: 24,
            service_iface: "service".into(),
            heartbeat_iface: Some("heartbeat".into()),
            primary: peer("p", "10.0.0.1", "10.0.1.1"),
            backup: peer("b", "10.0.0.2", "10.0.1.2"),
            logger: None,
            service_ports: vec![7070],
            app_max_lag_bytes: 0,
            app_max_lag_ms: 3000,
            max_delay_fin_ms: 1000,
            key_hex: "00".into(),
            tap_drop_every: 0,
        }
    }

    const K: ConnKey = ConnKey {
        client: Ipv4Addr::new(10, 0, 0, 10),
        client_port: 40000,
        port: 7070,
    };

    fn progress(written: u64, read: u64, received: u64, acked: u64) -> ConnProgress {
        ConnProgress {
            client: K.client.octets(),
            client_port: K.client_port,
            port: K.port,
            last_byte_received: received,
            last_ack_received: acked,
            last_app_byte_written: written,
            last_app_byte_read: read,
        }
    }

    fn beat(conns: Vec<ConnProgress>, held: Vec<FinKey>) -> Heartbeat {
        Heartbeat {
            from: "p".into(),
            incarnation: 1,
            seq: 1,
            link: Link::Service,
            conns,
            held_fins: held,
            fin_ok: vec![],
            tracking: vec![],
        }
    }

    fn replicas(produced: u64, ended: Option<u64>) -> HashMap<ConnKey, ReplicaView> {
        HashMap::from([(K, ReplicaView { produced, ended })])
    }

    #[test]
    fn a_primary_that_stops_writing_while_its_replica_goes_on_is_hung_after_app_max_lag_time() {
        let mut m = Monitor::new(&cfg(), 0);
        let hb = beat(vec![progress(1000, 150, 150, 1000)], vec![]);
        let r = replicas(5000, None);
        assert_eq!(m.on_progress(&hb, &r, &[], 0).failure, None);
        assert_eq!(m.on_progress(&hb, &r, &[], 3000 * MS).failure, None);
        let f = m.on_progress(&hb, &r, &[], 3001 * MS).failure.unwrap();
        assert_eq!(f.reason, DetectReason::AppLag);
        // Progress starts the watch again.
        let moving = beat(vec![progress(2000, 150, 150, 2000)], vec![]);
        assert_eq!(m.on_progress(&moving, &r, &[], 3002 * MS).failure, None);
        assert_eq!(m.on_progress(&moving, &r, &[], 3003 * MS).failure, None);
    }

    #[test]
    fn a_primary_ahead_of_its_replica_or_with_unacknowledged_output_is_not_hung() {
        let mut m = Monitor::new(&cfg(), 0);
        // Written but not all acknowledged: the client is slow, not the primary.
        let hb = beat(vec![progress(1000, 150, 150, 500)], vec![]);
        let r = replicas(5000, None);
        m.on_progress(&hb, &r, &[], 0);
        assert_eq!(m.on_progress(&hb, &r, &[], 10_000 * MS).failure, None);
    }

    #[test]
    fn held_fins_are_confirmed_for_unreplicated_connections_and_judged_for_replicated_ones() {
        let mut m = Monitor::new(&cfg(), 0);
        let k = fin_key(&K);
        let hb = beat(vec![progress(1000, 150, 150, 1000)], vec![k]);
        // Not replicated (a connection this backup never saw from its SYN): let it close.
        let out = m.on_progress(&hb, &HashMap::new(), &[], 0);
        assert_eq!(out.confirm, vec![(k, 1000)]);
        // Already confirmed: not again.
        assert!(
            m.on_progress(&hb, &HashMap::new(), &[k], 0)
                .confirm
                .is_empty()
        );
        // Replica ended at the same point: confirmed by the replica's own note, nothing here.
        let same = m.on_progress(&hb, &replicas(1000, Some(1000)), &[], 0);
        assert_eq!(same, BeatOutcome::default());
        // Replica behind: it may still end there, no clock runs.
        assert_eq!(
            m.on_progress(&hb, &replicas(900, None), &[], 5000 * MS),
            BeatOutcome::default()
        );
        // Replica past what the primary wrote: an early close, for MaxDelayFIN.
        let r = replicas(5000, None);
        assert_eq!(m.on_progress(&hb, &r, &[], 6000 * MS).failure, None);
        assert_eq!(m.on_progress(&hb, &r, &[], 7000 * MS).failure, None);
        let out = m.on_progress(&hb, &r, &[], 7001 * MS);
        assert_eq!(out.fin_held, Some(K));
        assert_eq!(out.failure.unwrap().reason, DetectReason::FinHeld);
    }

    #[test]
    fn a_primary_never_heard_is_declared_dead_after_the_grace() {
        let mut m = Monitor::new(&cfg(), 1000 * MS);
        let end = 1000 * MS + super::super::heartbeat::START_GRACE_NS + 300 * MS;
        assert_eq!(m.check(end, || true), Check::Fine);
        let Check::Failed(f) = m.check(end + 1, || true) else {
            panic!("not failed");
        };
        assert_eq!(f.reason, DetectReason::HeartbeatsLost);
        assert!(f.detail.contains("no heartbeat at all"), "{}", f.detail);
    }

    #[test]
    fn the_service_link_lost_is_told_from_the_backups_own_nic_failing() {
        let mut m = Monitor::new(&cfg(), 0);
        m.on_beat(Link::Service, 0);
        m.on_beat(Link::Heartbeat, 0);
        m.on_beat(Link::Heartbeat, 300 * MS);
        let Check::Failed(f) = m.check(301 * MS, || true) else {
            panic!("not failed");
        };
        assert_eq!(f.reason, DetectReason::ServiceLinkLost);
        assert_eq!(m.check(301 * MS, || false), Check::OwnServiceLinkDown);
        // Watched afresh: fine until the grace has passed.
        assert_eq!(m.check(400 * MS, || false), Check::Fine);
    }
}
