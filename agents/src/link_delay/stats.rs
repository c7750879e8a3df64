//! What a delay line reports: per direction, its counters, how late its releases were, and the
//! kernel queue's own drops. Sans-IO (the kernel's statistics are parsed from their text).

use super::line::Counters;
use std::fmt;

/// Which way a direction's packets go, seen from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Way {
    /// Leaving the host (iptables `mangle POSTROUTING`).
    Egress,
    /// Entering the host (iptables `mangle PREROUTING`).
    Ingress,
}

impl Way {
    pub fn name(self) -> &'static str {
        match self {
            Way::Egress => "out",
            Way::Ingress => "in",
        }
    }
}

/// A histogram of durations in fixed buckets, with an overflow bucket: enough for the release
/// lateness of a delay line (tens of µs typically, a few ms at worst) without allocation per
/// sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    bucket_ns: u64,
    counts: Vec<u64>,
    overflow: u64,
    total: u64,
    max_ns: u64,
}

impl Histogram {
    /// Buckets of `bucket_ns`, `buckets` of them; later samples count in the overflow.
    pub fn new(bucket_ns: u64, buckets: usize) -> Histogram {
        Histogram {
            bucket_ns: bucket_ns.max(1),
            counts: vec![0; buckets],
            overflow: 0,
            total: 0,
            max_ns: 0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        let i = (ns / self.bucket_ns) as usize;
        match self.counts.get_mut(i) {
            Some(c) => *c += 1,
            None => self.overflow += 1,
        }
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The smallest bucket bound at or under which `p` (0..=1) of the samples lie (nearest
    /// rank, the bucket's upper edge); the largest sample when the rank falls in the overflow.
    pub fn quantile_ns(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return ((i as u64 + 1) * self.bucket_ns).min(self.max_ns);
            }
        }
        self.max_ns
    }
}

/// Release lateness buckets: 10 µs up to 50 ms.
pub fn lateness_histogram() -> Histogram {
    Histogram::new(10_000, 5_000)
}

/// One direction of a delay line, while it runs and after it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionStats {
    pub way: Way,
    pub queue: u16,
    pub counters: Counters,
    /// Packets let go at once while the line was being taken down (queued in the kernel after
    /// the line's last look, before its rules were gone).
    pub passed_at_stop: u64,
    /// How long after its release time each packet's verdict was sent.
    pub lateness: Histogram,
    /// Verdicts the kernel refused (an unknown packet id).
    pub verdict_errors: u64,
    /// Messages too long for their receive slot (their packets could not be read).
    pub truncated: u64,
    /// The kernel queue's own drops (`/proc/net/netfilter/nfnetlink_queue`): packets it could
    /// not queue (queue full) and messages it could not deliver (socket buffer full). Read when
    /// the line stops; `None` when that file could not be read, and then why.
    pub kernel_dropped: Option<u64>,
    pub kernel_dropped_unknown: Option<String>,
    /// Why the line's thread ended before it was asked to, if it did: from then on the rule
    /// let packets pass undelayed (`--queue-bypass`).
    pub failure: Option<String>,
}

impl DirectionStats {
    pub fn new(way: Way, queue: u16) -> DirectionStats {
        DirectionStats {
            way,
            queue,
            counters: Counters::default(),
            passed_at_stop: 0,
            lateness: lateness_histogram(),
            verdict_errors: 0,
            truncated: 0,
            kernel_dropped: None,
            kernel_dropped_unknown: None,
            failure: None,
        }
    }

    /// Every packet dropped: by the line (full) and by the kernel queue.
    pub fn dropped_packets(&self) -> u64 {
        self.counters.dropped_packets + self.kernel_dropped.unwrap_or(0)
    }
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        write!(
            f,
            "{} (NFQUEUE {}): {} packets ({} bytes) delayed, peak {} bytes held, {} dropped by \
             the full line",
            self.way.name(),
            self.queue,
            c.released_packets,
            c.released_bytes,
            c.peak_held_bytes,
            c.dropped_packets,
        )?;
        match self.kernel_dropped {
            Some(k) => write!(f, ", {k} by the kernel queue")?,
            None => write!(
                f,
                ", kernel queue drops unknown ({})",
                self.kernel_dropped_unknown.as_deref().unwrap_or("not read")
            )?,
        }
        if self.passed_at_stop > 0 {
            write!(f, ", {} let go at removal", self.passed_at_stop)?;
        }
        if self.lateness.count() > 0 {
            write!(
                f,
                ", release lateness p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
                self.lateness.quantile_ns(0.5) as f64 / 1e6,
                self.lateness.quantile_ns(0.99) as f64 / 1e6,
                self.lateness.max_ns() as f64 / 1e6,
            )?;
        }
        if self.verdict_errors > 0 {
            write!(f, ", {} verdicts refused", self.verdict_errors)?;
        }
        if self.truncated > 0 {
            write!(f, ", {} messages truncated", self.truncated)?;
        }
        if let Some(why) = &self.failure {
            write!(f, "; the line failed: {why}")?;
        }
        Ok(())
    }
}

/// Drops of `queue` from `/proc/net/netfilter/nfnetlink_queue`: each line is `queue_number
/// peer_portid queue_total copy_mode copy_range queue_dropped queue_user_dropped id_sequence 1`;
/// the sum of the two drop counts.
pub fn kernel_drops(proc_text: &str, queue: u16) -> Option<u64> {
    proc_text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first()?.parse::<u16>().ok()? != queue {
            return None;
        }
        let dropped: u64 = f.get(5)?.parse().ok()?;
        let user_dropped: u64 = f.get(6)?.parse().ok()?;
        Some(dropped + user_dropped)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_bucket_edges() {
        let mut h = Histogram::new(10, 10);
        assert_eq!(h.quantile_ns(0.5), 0);
        for ns in [1, 2, 3, 15, 95] {
            h.record(ns);
        }
        assert_eq!(h.quantile_ns(0.5), 10);
        assert_eq!(h.quantile_ns(0.8), 20);
        assert_eq!(h.quantile_ns(1.0), 95);
        h.record(5000);
        assert_eq!(h.quantile_ns(1.0), 5000);
        assert_eq!((h.count(), h.max_ns()), (6, 5000));
    }

    #[test]
    fn kernel_drops_are_read_for_the_right_queue() {
        let text = "    7  12345     0 2   128     0     0          9  1\n\
                    19000  -4000   230 2    32     3     4     100000  1\n";
        assert_eq!(kernel_drops(text, 19000), Some(7));
        assert_eq!(kernel_drops(text, 7), Some(0));
        assert_eq!(kernel_drops(text, 8), None);
        assert_eq!(kernel_drops("garbage", 7), None);
    }
}
