//! The balancer's view of the proxies (thesis §4.5.2: "a heart-beat mechanism exists between
//! the LB and each of the proxy machines"), sans-IO: who answered its health checks, who
//! missed `missed` in a row and left the pool, who came back. A proxy is in the pool only once
//! it has answered: before that, packets sprayed at it would find no listener.

/// One proxy as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: String,
    /// When it last answered.
    last: Option<u64>,
    live: bool,
}

/// A change of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `member` missed its checks for `silent_ns` (T_detect) and left the pool.
    Down { member: String, silent_ns: u64 },
    /// `member` answered and is in the pool (again).
    Up { member: String },
}

/// The pool: every proxy of the topology, in a fixed order (the sprayer's).
#[derive(Debug, Clone)]
pub struct Pool {
    members: Vec<Member>,
    limit_ns: u64,
}

impl Pool {
    /// Proxies `names`, none in the pool yet; a proxy silent for `interval_ms × missed` leaves.
    pub fn new(names: &[String], interval_ms: u64, missed: u32) -> Pool {
        Pool {
            members: names
                .iter()
                .map(|n| Member {
                    name: n.clone(),
                    last: None,
                    live: false,
                })
                .collect(),
            limit_ns: interval_ms.max(1) * 1_000_000 * u64::from(missed.max(1)),
        }
    }

    /// `name` answered at `now_ns`. An unknown name is ignored.
    pub fn on_answer(&mut self, name: &str, now_ns: u64) -> Option<Change> {
        let m = self.members.iter_mut().find(|m| m.name == name)?;
        m.last = Some(now_ns);
        if m.live {
            return None;
        }
        m.live = true;
        Some(Change::Up {
            member: m.name.clone(),
        })
    }

    /// The members silent past the limit at `now_ns` leave the pool.
    pub fn tick(&mut self, now_ns: u64) -> Vec<Change> {
        let mut out = Vec::new();
        for m in &mut self.members {
            if let (true, Some(last)) = (m.live, m.last) {
                let silent = now_ns.saturating_sub(last);
                if silent > self.limit_ns {
                    m.live = false;
                    out.push(Change::Down {
                        member: m.name.clone(),
                        silent_ns: silent,
                    });
                }
            }
        }
        out
    }

    /// The members in the pool, in order.
    pub fn live(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| m.live)
            .map(|m| m.name.as_str())
            .collect()
    }

    /// Whether `name` is in the pool.
    pub fn is_live(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.live && m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn pool() -> Pool {
        Pool::new(&["p1".to_string(), "p2".to_string()], 200, 3)
    }

    #[test]
    fn a_proxy_joins_when_it_answers_and_leaves_after_missed_checks() {
        let mut p = pool();
        assert!(p.live().is_empty(), "nobody before an answer");
        assert_eq!(
            p.on_answer("p1", 0),
            Some(Change::Up {
                member: "p1".into()
            })
        );
        assert_eq!(p.on_answer("p1", 200 * MS), None);
        p.on_answer("p2", 10 * MS);
        assert_eq!(p.live(), ["p1", "p2"]);
        // p1 answers at 200 ms, then never again: gone once 600 ms have passed without one.
        p.on_answer("p2", 400 * MS);
        p.on_answer("p2", 600 * MS);
        assert!(p.tick(800 * MS).is_empty());
        assert_eq!(
            p.tick(800 * MS + 1),
            vec![Change::Down {
                member: "p1".into(),
                silent_ns: 600 * MS + 1
            }]
        );
        assert_eq!(p.live(), ["p2"]);
        assert!(p.tick(900 * MS).is_empty(), "reported once");
        // Back when it answers again.
        assert_eq!(
            p.on_answer("p1", 1000 * MS),
            Some(Change::Up {
                member: "p1".into()
            })
        );
        assert!(p.is_live("p1"));
    }

    #[test]
    fn strangers_are_ignored() {
        let mut p = pool();
        assert_eq!(p.on_answer("mallory", 0), None);
        assert!(p.live().is_empty());
    }
}
