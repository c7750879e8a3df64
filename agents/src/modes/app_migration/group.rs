//! The server group, sans I/O: membership by heartbeats, the soft state (which client downloads
//! what, from whom, and its migration port) shared as deltas and as periodic full state, and
//! the takeover of a dead member's downloads by the least loaded survivors.
//!
//! Paper 000 sent only deltas over TCP between two servers and broke when a server came back
//! or a third joined. Here every member is authoritative for the downloads it serves and says
//! so both as a delta the moment it changes and in a full state every [`FULL_EVERY`] beats, over
//! UDP; a restarted member (a larger incarnation) starts empty and has learnt the group's state
//! within one full-state period (peers also answer its first beat with their full state at
//! once). A claim carries the client's connection generation, so the latest connection wins
//! wherever stale claims arrive from.
//!
//! Takeover: when a member's beats stop for `heartbeat_ms × missed_heartbeats`, every survivor
//! computes the same assignment of its orphans — in id order, each to the live member serving
//! the fewest downloads (lowest index on a tie) — and each sends triggers only for the orphans
//! assigned to itself: a server never asks a client to move to it for a download it does not
//! own.

use super::wire::{Body, ConnInfo, GroupMsg, Key, TriggerMsg};
use halab_protocol::modes::app_migration::{AppMigrationConfig, Event, Trigger};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// A full state goes out every this many heartbeats.
pub const FULL_EVERY: u64 = 5;
/// Downloads per full-state datagram.
const FULL_CHUNK: usize = 150;
/// A download taken over whose client never reconnects is dropped after this long.
const PENDING_NS: u64 = 15_000_000_000;

/// What the I/O side has to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send to every peer, on each of its addresses.
    Broadcast(Vec<u8>),
    /// Send a migration request to a client's migration port.
    Trigger { to: SocketAddr, datagram: Vec<u8> },
    /// Report to the console.
    Event(Event),
}

#[derive(Debug, Clone)]
struct Entry {
    info: ConnInfo,
    /// When a claim last named it.
    seen_ns: u64,
    /// Taken over, waiting for the client to reconnect until then (own entries only).
    pending_until: Option<u64>,
}

#[derive(Debug, Default)]
struct Member {
    heard_ns: Option<u64>,
    alive: bool,
    incarnation: u64,
    conns: BTreeMap<u64, Entry>,
}

pub struct Group {
    cfg: AppMigrationConfig,
    key: Key,
    me: u32,
    incarnation: u64,
    interval_ns: u64,
    dead_after_ns: u64,
    /// Every address of each member (service and heartbeat), for source checks.
    addrs: Vec<Vec<IpAddr>>,
    members: Vec<Member>,
    next_beat_ns: u64,
    beats: u64,
    /// Wall clock at `mono_at_start`, for trigger times comparable across hosts.
    wall_at_start: u64,
    mono_at_start: u64,
}

impl Group {
    /// Member `me` of `cfg`'s group, started at `now_ns` (monotonic) and `wall_ns` (its
    /// incarnation).
    pub fn new(cfg: AppMigrationConfig, key: Key, me: u32, now_ns: u64, wall_ns: u64) -> Group {
        let addrs = cfg
            .group
            .iter()
            .map(|m| {
                std::iter::once(&m.service_addr)
                    .chain(&m.heartbeat_addrs)
                    .filter_map(|a| a.parse().ok())
                    .collect()
            })
            .collect();
        let mut members: Vec<Member> = cfg.group.iter().map(|_| Member::default()).collect();
        if let Some(m) = members.get_mut(me as usize) {
            m.alive = true;
            m.incarnation = wall_ns;
        }
        Group {
            interval_ns: cfg.heartbeat_ms.max(1) * 1_000_000,
            dead_after_ns: cfg.detect_after_ms() * 1_000_000,
            cfg,
            key,
            me,
            incarnation: wall_ns,
            addrs,
            members,
            next_beat_ns: now_ns,
            beats: 0,
            wall_at_start: wall_ns,
            mono_at_start: now_ns,
        }
    }

    pub fn me(&self) -> u32 {
        self.me
    }

    /// Downloads member `i` serves in this member's view.
    pub fn load(&self, i: u32) -> usize {
        self.members.get(i as usize).map_or(0, |m| m.conns.len())
    }

    pub fn is_alive(&self, i: u32) -> bool {
        self.members.get(i as usize).is_some_and(|m| m.alive)
    }

    /// Who serves download `id` in this member's view.
    pub fn owner_of(&self, id: u64) -> Option<u32> {
        self.members
            .iter()
            .position(|m| m.conns.contains_key(&id))
            .map(|i| i as u32)
    }

    /// When the next [`Group::tick`] is due.
    pub fn next_tick_ns(&self) -> u64 {
        let detect = self
            .members
            .iter()
            .filter(|m| m.alive)
            .filter_map(|m| m.heard_ns)
            .map(|h| h + self.dead_after_ns + 1)
            .min()
            .unwrap_or(u64::MAX);
        self.next_beat_ns.min(detect)
    }

    /// The failover list for download `id` (paper 004): the other live members, least loaded
    /// first, ties spread by a hash of the download, then the members believed dead (they may
    /// be back by then).
    pub fn failover_list(&self, id: u64) -> Vec<u32> {
        let mut others: Vec<u32> = (0..self.members.len() as u32)
            .filter(|&i| i != self.me)
            .collect();
        others.sort_by_key(|&i| (!self.is_alive(i), self.load(i), spread(id, i)));
        others
    }

    fn seal(&self, body: Body) -> Vec<u8> {
        self.key.seal(&GroupMsg {
            from: self.me,
            incarnation: self.incarnation,
            body,
        })
    }

    fn full_state(&self) -> Vec<Output> {
        let mine: Vec<ConnInfo> = self.members[self.me as usize]
            .conns
            .values()
            .map(|e| e.info.clone())
            .collect();
        if mine.is_empty() {
            return vec![Output::Broadcast(
                self.seal(Body::Full { conns: Vec::new() }),
            )];
        }
        mine.chunks(FULL_CHUNK)
            .map(|c| Output::Broadcast(self.seal(Body::Full { conns: c.to_vec() })))
            .collect()
    }

    /// Heartbeats, full state, detection and expiry due at `now`.
    pub fn tick(&mut self, now: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if now >= self.next_beat_ns {
            let load = self.load(self.me) as u32;
            out.push(Output::Broadcast(self.seal(Body::Heartbeat { load })));
            if self.beats.is_multiple_of(FULL_EVERY) {
                out.extend(self.full_state());
            }
            self.beats += 1;
            self.next_beat_ns = (self.next_beat_ns + self.interval_ns).max(now + 1);
        }
        for i in 0..self.members.len() as u32 {
            let m = &self.members[i as usize];
            if i != self.me && m.alive && m.heard_ns.is_some_and(|h| now > h + self.dead_after_ns) {
                out.extend(self.declare_dead(i, now));
            }
        }
        // Own takeovers whose client never came, and others' entries no claim has named for
        // three full-state periods (a lost Close), are forgotten.
        let stale = 3 * FULL_EVERY * self.interval_ns;
        let me = self.me as usize;
        let mut expired = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            m.conns.retain(|id, e| {
                let keep = if i == me {
                    e.pending_until.is_none_or(|t| now < t)
                } else {
                    !m.alive || now.saturating_sub(e.seen_ns) < stale
                };
                if !keep && i == me {
                    expired.push((*id, e.info.generation));
                }
                keep
            });
        }
        for (id, generation) in expired {
            out.push(Output::Broadcast(self.seal(Body::Close { id, generation })));
        }
        out
    }

    /// Member `dead`'s beats stopped (or it restarted): its downloads are orphans.
    fn declare_dead(&mut self, dead: u32, now: u64) -> Vec<Output> {
        let mut out = Vec::new();
        let peer = self.cfg.group[dead as usize].host.clone();
        let m = &mut self.members[dead as usize];
        m.alive = false;
        let orphans = std::mem::take(&mut m.conns);
        out.push(Output::Event(Event::Detect { peer, at_ns: now }));
        let live: Vec<u32> = (0..self.members.len() as u32)
            .filter(|&i| i != dead && self.is_alive(i))
            .collect();
        let mut load: BTreeMap<u32, usize> = live.iter().map(|&i| (i, self.load(i))).collect();
        for (id, entry) in orphans {
            let Some(taker) = live.iter().copied().min_by_key(|i| (load[i], *i)) else {
                break; // no live member: nothing can take over
            };
            *load.entry(taker).or_default() += 1;
            if taker == self.me {
                out.extend(self.take_over(entry.info.clone(), dead, now));
            }
            self.members[taker as usize].conns.insert(
                id,
                Entry {
                    info: entry.info,
                    seen_ns: now,
                    pending_until: (taker == self.me).then_some(now + PENDING_NS),
                },
            );
        }
        out
    }

    /// This member takes over `info`, orphaned by `dead`: tells the group and, when servers
    /// trigger, asks the client to come.
    fn take_over(&self, info: ConnInfo, dead: u32, now: u64) -> Vec<Output> {
        let mut out = vec![Output::Broadcast(
            self.seal(Body::Open { conn: info.clone() }),
        )];
        if self.cfg.trigger != Trigger::Server || info.mport == 0 {
            return out;
        }
        let Ok(ip) = info.client.parse::<IpAddr>() else {
            return out;
        };
        let to = SocketAddr::new(ip, info.mport);
        let trigger = TriggerMsg {
            conn: info.id,
            from: self.me,
            dead,
            sent: self.wall_at_start + now.saturating_sub(self.mono_at_start),
        };
        out.push(Output::Trigger {
            to,
            datagram: self.key.seal(&trigger),
        });
        out.push(Output::Event(Event::Trigger {
            conn: halab_protocol::modes::app_migration::DownloadId(info.id),
            client: to.to_string(),
            peer: self.cfg.group[dead as usize].host.clone(),
            at_ns: now,
        }));
        out
    }

    /// A datagram from `source` on the group port.
    pub fn on_datagram(&mut self, datagram: &[u8], source: IpAddr, now: u64) -> Vec<Output> {
        let ignored = |reason: String| {
            vec![Output::Event(Event::Ignored {
                source: source.to_string(),
                reason,
                at_ns: now,
            })]
        };
        let msg: GroupMsg = match self.key.open(datagram) {
            Ok(m) => m,
            Err(e) => return ignored(e.to_string()),
        };
        let from = msg.from;
        if from == self.me || from as usize >= self.members.len() {
            return ignored(format!("claims to be member {from}"));
        }
        if !self.addrs[from as usize].contains(&source) {
            return ignored(format!("member {from} does not have this address"));
        }
        let mut out = Vec::new();
        let known = self.members[from as usize].incarnation;
        if msg.incarnation < known {
            return out; // an earlier life of that member, delayed
        }
        if msg.incarnation > known && known != 0 && self.members[from as usize].alive {
            // Restarted faster than it could be found dead: its downloads are orphans all
            // the same (the new process has none of them).
            out.extend(self.declare_dead(from, now));
        }
        let m = &mut self.members[from as usize];
        let rejoined = !m.alive;
        let seen_before = m.heard_ns.is_some();
        m.alive = true;
        m.heard_ns = Some(now);
        m.incarnation = msg.incarnation;
        if rejoined {
            if seen_before {
                out.push(Output::Event(Event::Rejoin {
                    peer: self.cfg.group[from as usize].host.clone(),
                    at_ns: now,
                }));
            }
            // So a (re)joining member learns the group's state now, not a period later.
            out.extend(self.full_state());
        }
        match msg.body {
            Body::Heartbeat { .. } => {}
            Body::Open { conn } => self.claim(from, conn, now),
            Body::Full { conns } => {
                for c in conns {
                    self.claim(from, c, now);
                }
            }
            Body::Close { id, generation } => {
                let m = &mut self.members[from as usize];
                if m.conns
                    .get(&id)
                    .is_some_and(|e| e.info.generation <= generation)
                {
                    m.conns.remove(&id);
                }
            }
        }
        out
    }

    /// Member `owner` says it serves `info`.
    fn claim(&mut self, owner: u32, info: ConnInfo, now: u64) {
        let current = self.owner_of(info.id);
        if let Some(cur) = current {
            let e = &self.members[cur as usize].conns[&info.id];
            // An older connection's claim, or one that would take from this member a download
            // it serves in the same connection, loses.
            if e.info.generation > info.generation
                || (cur == self.me && cur != owner && e.info.generation == info.generation)
            {
                return;
            }
            self.members[cur as usize].conns.remove(&info.id);
        }
        self.members[owner as usize].conns.insert(
            info.id,
            Entry {
                info,
                seen_ns: now,
                pending_until: None,
            },
        );
    }

    /// This member now serves `info` (a client connected or reconnected here).
    pub fn local_open(&mut self, info: ConnInfo, now: u64) -> Vec<Output> {
        let me = self.me;
        if let Some(cur) = self.owner_of(info.id) {
            self.members[cur as usize].conns.remove(&info.id);
        }
        self.members[me as usize].conns.insert(
            info.id,
            Entry {
                info: info.clone(),
                seen_ns: now,
                pending_until: None,
            },
        );
        vec![Output::Broadcast(self.seal(Body::Open { conn: info }))]
    }

    /// The checkpoint of an own download: bytes sent up to `offset`.
    pub fn local_progress(&mut self, id: u64, offset: u64) {
        if let Some(e) = self.members[self.me as usize].conns.get_mut(&id) {
            e.info.offset = offset;
        }
    }

    /// This member no longer serves connection `generation` of download `id`.
    pub fn local_close(&mut self, id: u64, generation: u32) -> Vec<Output> {
        let mine = &mut self.members[self.me as usize].conns;
        if mine
            .get(&id)
            .is_some_and(|e| e.info.generation == generation)
        {
            mine.remove(&id);
            return vec![Output::Broadcast(self.seal(Body::Close { id, generation }))];
        }
        Vec::new()
    }
}

/// A hash of (download, member) that orders members differently per download.
fn spread(id: u64, member: u32) -> u64 {
    mix(id ^ mix(member as u64 + 1))
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use halab_protocol::modes::app_migration::GroupMember;

    const MS: u64 = 1_000_000;

    fn cfg(n: usize, trigger: Trigger) -> AppMigrationConfig {
        AppMigrationConfig {
            trigger,
            heartbeat_ms: 50,
            missed_heartbeats: 3,
            group: (0..n)
                .map(|i| GroupMember {
                    host: format!("server{}", i + 1),
                    service_addr: format!("10.0.0.{}", i + 1),
                    heartbeat_addrs: vec![format!("10.0.1.{}", i + 1)],
                })
                .collect(),
            key_hex: "0123456789abcdef".into(),
        }
    }

    fn key() -> Key {
        Key::from_hex("0123456789abcdef").unwrap()
    }

    fn ip(i: u32) -> IpAddr {
        format!("10.0.1.{}", i + 1).parse().unwrap()
    }

    fn conn(id: u64, mport: u16) -> ConnInfo {
        ConnInfo {
            id,
            client: "10.0.0.10".into(),
            mport,
            name: format!("f{id}"),
            size: 1000,
            generation: 1,
            offset: 0,
        }
    }

    /// A group of `n` members on a lossless network, driven by one clock.
    struct Net {
        members: Vec<Option<Group>>,
        now: u64,
        triggers: Vec<(u32, TriggerMsg)>,
        events: Vec<(u32, Event)>,
    }

    impl Net {
        fn new(n: usize, trigger: Trigger) -> Net {
            let members = (0..n as u32)
                .map(|i| Some(Group::new(cfg(n, trigger), key(), i, 0, 1000 + i as u64)))
                .collect();
            Net {
                members,
                now: 0,
                triggers: Vec::new(),
                events: Vec::new(),
            }
        }

        fn deliver(&mut self, from: u32, outs: Vec<Output>) {
            let mut queue: Vec<(u32, Output)> = outs.into_iter().map(|o| (from, o)).collect();
            while let Some((src, o)) = queue.pop() {
                match o {
                    Output::Broadcast(d) => {
                        for j in 0..self.members.len() as u32 {
                            if j == src {
                                continue;
                            }
                            let now = self.now;
                            if let Some(g) = self.members[j as usize].as_mut() {
                                for o in g.on_datagram(&d, ip(src), now) {
                                    queue.push((j, o));
                                }
                            }
                        }
                    }
                    Output::Trigger { datagram, .. } => {
                        self.triggers.push((src, key().open(&datagram).unwrap()));
                    }
                    Output::Event(e) => self.events.push((src, e)),
                }
            }
        }

        fn run_until(&mut self, t: u64) {
            while self.now < t {
                self.now += MS;
                for i in 0..self.members.len() as u32 {
                    let now = self.now;
                    if let Some(g) = self.members[i as usize].as_mut() {
                        let outs = g.tick(now);
                        self.deliver(i, outs);
                    }
                }
            }
        }

        fn open(&mut self, at: u32, info: ConnInfo) {
            let now = self.now;
            let outs = self.members[at as usize]
                .as_mut()
                .unwrap()
                .local_open(info, now);
            self.deliver(at, outs);
        }

        fn g(&self, i: u32) -> &Group {
            self.members[i as usize].as_ref().unwrap()
        }
    }

    #[test]
    fn deltas_spread_and_a_dead_members_orphans_go_to_the_least_loaded_survivors() {
        let mut net = Net::new(3, Trigger::Server);
        net.run_until(100 * MS);
        for id in 1..=10 {
            net.open(0, conn(id, 4000 + id as u16));
        }
        assert_eq!(net.g(1).load(0), 10);
        assert_eq!(net.g(2).load(0), 10);
        net.members[0] = None; // power-off: silence
        net.run_until(400 * MS);
        // Both survivors detected it, within interval × misses + a beat.
        let detects: Vec<_> = net
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Detect { peer, .. } if peer == "server1"))
            .collect();
        assert_eq!(detects.len(), 2);
        for (_, d) in detects {
            assert!(d.at_ns() <= 100 * MS + 150 * MS + 2 * MS, "{d:?}");
        }
        // Every orphan triggered once, by the member the shared assignment gives it to,
        // spread evenly.
        assert_eq!(net.triggers.len(), 10);
        let mut ids: Vec<u64> = net.triggers.iter().map(|(_, t)| t.conn).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10);
        for (sender, t) in &net.triggers {
            assert_eq!(t.from, *sender);
            assert_eq!(t.dead, 0);
            assert_eq!(net.g(1).owner_of(t.conn), Some(*sender));
            assert_eq!(net.g(2).owner_of(t.conn), Some(*sender));
        }
        assert_eq!((net.g(1).load(1), net.g(1).load(2)), (5, 5));
    }

    #[test]
    fn a_member_never_heard_is_not_alive_and_is_given_no_orphans() {
        // Member 2 dies before its first beat (issue 13's audit: st-tcp's detector once waited
        // forever for such a peer). Here a member never heard counts as not alive from the
        // start: nobody waits for it, and no orphan is handed to it.
        let mut net = Net::new(3, Trigger::Server);
        net.members[2] = None;
        net.run_until(100 * MS);
        assert!(!net.g(0).is_alive(2) && !net.g(1).is_alive(2));
        for id in 1..=4 {
            net.open(0, conn(id, 4000 + id as u16));
        }
        net.members[0] = None;
        net.run_until(400 * MS);
        assert_eq!(net.triggers.len(), 4, "{:?}", net.triggers);
        assert!(net.triggers.iter().all(|(sender, _)| *sender == 1));
    }

    #[test]
    fn a_member_sends_no_trigger_for_a_download_it_does_not_own() {
        let mut net = Net::new(3, Trigger::Server);
        net.run_until(100 * MS);
        // Download 7 is served by member 2: when member 0 dies, nobody may trigger it.
        net.open(2, conn(7, 4007));
        net.open(0, conn(8, 4008));
        net.members[0] = None;
        net.run_until(400 * MS);
        assert!(
            net.triggers.iter().all(|(_, t)| t.conn != 7),
            "{:?}",
            net.triggers
        );
        assert_eq!(net.triggers.len(), 1);
        // Member 2 serves one already: the orphan goes to member 1.
        assert_eq!(net.triggers[0].0, 1);
    }

    #[test]
    fn client_triggered_groups_send_no_triggers_but_hand_out_failover_lists() {
        let mut net = Net::new(3, Trigger::Client);
        net.run_until(100 * MS);
        net.open(0, conn(1, 0));
        let list = net.g(0).failover_list(1);
        assert_eq!(list.len(), 2);
        assert!(!list.contains(&0));
        // Lists differ between downloads, so orphans spread.
        let firsts: std::collections::BTreeSet<u32> =
            (0..64).map(|id| net.g(0).failover_list(id)[0]).collect();
        assert_eq!(firsts.len(), 2);
        net.members[0] = None;
        net.run_until(400 * MS);
        assert!(net.triggers.is_empty());
    }

    #[test]
    fn a_restarted_member_rejoins_and_learns_the_state_and_can_take_over_again() {
        let mut net = Net::new(3, Trigger::Server);
        net.run_until(100 * MS);
        net.open(1, conn(1, 4001));
        net.members[0] = None;
        net.run_until(400 * MS);
        // Member 0 comes back (a new incarnation) with an empty table.
        net.members[0] = Some(Group::new(cfg(3, Trigger::Server), key(), 0, net.now, 5000));
        net.run_until(500 * MS);
        assert!(
            net.events
                .iter()
                .any(|(_, e)| matches!(e, Event::Rejoin { peer, .. } if peer == "server1"))
        );
        assert!(net.g(1).is_alive(0) && net.g(2).is_alive(0));
        assert_eq!(net.g(0).owner_of(1), Some(1), "learnt from the full state");
        // Member 2 serves one too, so when member 1 dies its download goes to member 0.
        net.open(2, conn(2, 4002));
        net.triggers.clear();
        net.members[1] = None;
        net.run_until(900 * MS);
        assert_eq!(net.triggers.len(), 1);
        assert_eq!(net.triggers[0].0, 0);
        assert_eq!(net.triggers[0].1.conn, 1);
    }

    #[test]
    fn a_member_restarted_before_detection_orphans_its_old_downloads() {
        let mut net = Net::new(2, Trigger::Server);
        net.run_until(100 * MS);
        net.open(0, conn(1, 4001));
        net.members[0] = Some(Group::new(cfg(2, Trigger::Server), key(), 0, net.now, 9999));
        net.run_until(110 * MS);
        assert_eq!(net.triggers.len(), 1);
        assert_eq!(net.triggers[0].0, 1);
    }

    #[test]
    fn forged_and_misaddressed_datagrams_are_ignored() {
        let mut g = Group::new(cfg(3, Trigger::Server), key(), 1, 0, 1);
        let other = Key::from_hex("ff00").unwrap();
        let forged = other.seal(&GroupMsg {
            from: 0,
            incarnation: 5,
            body: Body::Open { conn: conn(1, 1) },
        });
        let outs = g.on_datagram(&forged, ip(0), MS);
        assert!(
            matches!(&outs[..], [Output::Event(Event::Ignored { reason, .. })] if reason.contains("HMAC"))
        );
        assert_eq!(g.owner_of(1), None);
        // Right key, wrong source address for member 0.
        let real = key().seal(&GroupMsg {
            from: 0,
            incarnation: 5,
            body: Body::Open { conn: conn(1, 1) },
        });
        let outs = g.on_datagram(&real, "10.9.9.9".parse().unwrap(), MS);
        assert!(matches!(&outs[..], [Output::Event(Event::Ignored { .. })]));
        assert_eq!(g.owner_of(1), None);
        assert!(!g.on_datagram(&real, ip(0), MS).is_empty());
        assert_eq!(g.owner_of(1), Some(0));
    }

    #[test]
    fn stale_claims_lose_to_newer_connections() {
        let mut g = Group::new(cfg(3, Trigger::Server), key(), 2, 0, 1);
        let mut c = conn(1, 1);
        c.generation = 2;
        let claim = |from: u32, c: &ConnInfo| {
            key().seal(&GroupMsg {
                from,
                incarnation: 5,
                body: Body::Full {
                    conns: vec![c.clone()],
                },
            })
        };
        g.on_datagram(&claim(1, &c), ip(1), MS);
        let mut old = c.clone();
        old.generation = 1;
        g.on_datagram(&claim(0, &old), ip(0), MS);
        assert_eq!(g.owner_of(1), Some(1));
    }
}
