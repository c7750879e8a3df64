//! One direction of a delay line, sans-IO: packets come in with the time they arrived, their id
//! and length, and the line says when each is to go, or that it dropped it because it is full.
//! Time is always an argument, so every behaviour is tested without a clock or a socket.
//!
//! Without jitter every packet waits exactly the delay and leaves in the order it came (a FIFO,
//! like a long cable). With jitter each packet's delay is drawn on its own, and a packet that
//! draws a shorter delay than the one before it overtakes it: netem does the same (its tfifo
//! sorts by time to send), and so does a real path whose delay varies packet by packet.
//!
//! The line is bounded in packets and in bytes, as a link's queue is: a packet that does not fit
//! is dropped at the tail and counted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How each packet's delay varies around the line's delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    None,
    /// Uniform in delay ± `ns` (netem's default when it is given a jitter and no distribution).
    Uniform {
        ns: u64,
    },
    /// The sum of two independent uniform draws, in ± each: the jitters of the two links a
    /// packet crosses (the sender's and the receiver's), applied in one place.
    UniformSum {
        ns: [u64; 2],
    },
    /// Normal with standard deviation `sigma_ns`, clipped to delay ± `clip_ns` (netem's
    /// `distribution normal` is not clipped; clipping keeps a rare draw from holding a packet
    /// for seconds).
    Normal {
        sigma_ns: u64,
        clip_ns: u64,
    },
}

/// What a line does to its packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineConfig {
    pub delay_ns: u64,
    pub jitter: Jitter,
    /// At most this many packets held at once.
    pub max_packets: usize,
    /// At most this many bytes held at once.
    pub max_bytes: u64,
}

/// What the line did with an offered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Held until `release_ns`.
    Queued { release_ns: u64 },
    /// Dropped: the line was full (in packets or bytes).
    Dropped,
}

/// What a line has done since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub queued_packets: u64,
    pub queued_bytes: u64,
    pub released_packets: u64,
    pub released_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// The most held at once.
    pub peak_held_packets: u64,
    pub peak_held_bytes: u64,
}

impl Counters {
    /// Packets held now (queued, not yet released).
    pub fn held_packets(&self) -> u64 {
        self.queued_packets - self.released_packets
    }

    pub fn held_bytes(&self) -> u64 {
        self.queued_bytes - self.released_bytes
    }
}

/// A packet let go by [`DelayLine::due`]: its id and the time it was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub id: u32,
    pub release_ns: u64,
}

/// SplitMix64: a tiny, well-mixed generator; reproducible from its seed, which is all the line
/// needs (the draws are a link's noise, not secrets).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of a delay line.
#[derive(Debug, Clone)]
pub struct DelayLine {
    config: LineConfig,
    /// Held packets by (release time, arrival sequence): the earliest first, and among equal
    /// times the first to arrive.
    held: BinaryHeap<Reverse<(u64, u64, u32, u32)>>,
    seq: u64,
    /// Without jitter, the latest release time given: a clock read that went backwards cannot
    /// put a packet before an earlier one.
    last_release_ns: u64,
    counters: Counters,
    rng: SplitMix64,
}

impl DelayLine {
    /// A line drawing its jitter from `seed` (the same seed, the same draws).
    pub fn new(config: LineConfig, seed: u64) -> DelayLine {
        DelayLine {
            config,
            held: BinaryHeap::new(),
            seq: 0,
            last_release_ns: 0,
            counters: Counters::default(),
            rng: SplitMix64(seed),
        }
    }

    pub fn config(&self) -> &LineConfig {
        &self.config
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A draw uniform in ± `ns`.
    fn uniform(&mut self, ns: u64) -> i128 {
        let span = 2 * ns as u128 + 1;
        (self.rng.next() as u128 % span) as i128 - ns as i128
    }

    /// This packet's delay: the line's, moved by a draw of the jitter (never below zero).
    fn draw_delay(&mut self) -> u64 {
        let d = self.config.delay_ns as i128;
        let offset: i128 = match self.config.jitter {
            Jitter::None => 0,
            Jitter::Uniform { ns } => self.uniform(ns),
            Jitter::UniformSum { ns: [a, b] } => self.uniform(a) + self.uniform(b),
            Jitter::Normal { sigma_ns, clip_ns } => {
                // Box–Muller: one normal draw from two uniform ones.
                let u1 = 1.0 - self.rng.unit(); // in (0, 1]: ln is finite
                let u2 = self.rng.unit();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let x = (z * sigma_ns as f64).clamp(-(clip_ns as f64), clip_ns as f64);
                x.round() as i128
            }
        };
        (d + offset).max(0) as u64
    }

    /// Packet `id` of `len` bytes arrived at `now_ns`.
    pub fn offer(&mut self, now_ns: u64, id: u32, len: u32) -> Offer {
        let c = &mut self.counters;
        let full = c.held_packets() >= self.config.max_packets as u64
            || c.held_bytes() + u64::from(len) > self.config.max_bytes;
        if full {
            c.dropped_packets += 1;
            c.dropped_bytes += u64::from(len);
            return Offer::Dropped;
        }
        let mut release_ns = now_ns.saturating_add(self.draw_delay());
        if self.config.jitter == Jitter::None {
            release_ns = release_ns.max(self.last_release_ns);
            self.last_release_ns = release_ns;
        }
        self.held.push(Reverse((release_ns, self.seq, id, len)));
        self.seq += 1;
        let c = &mut self.counters;
        c.queued_packets += 1;
        c.queued_bytes += u64::from(len);
        c.peak_held_packets = c.peak_held_packets.max(c.held_packets());
        c.peak_held_bytes = c.peak_held_bytes.max(c.held_bytes());
        Offer::Queued { release_ns }
    }

    /// When the next packet is due, if any is held.
    pub fn next_release_ns(&self) -> Option<u64> {
        self.held.peek().map(|Reverse((t, ..))| *t)
    }

    /// Appends to `out` the packets due at `now_ns`, in the order they are to go.
    pub fn due_into(&mut self, now_ns: u64, out: &mut Vec<Released>) {
        while let Some(Reverse((t, ..))) = self.held.peek() {
            if *t > now_ns {
                break;
            }
            if let Some(Reverse((release_ns, _, id, len))) = self.held.pop() {
                self.counters.released_packets += 1;
                self.counters.released_bytes += u64::from(len);
                out.push(Released { id, release_ns });
            }
        }
    }

    /// The ids of the packets due at `now_ns`, in the order they are to go.
    pub fn due(&mut self, now_ns: u64) -> Vec<u32> {
        let mut out = Vec::new();
        self.due_into(now_ns, &mut out);
        out.into_iter().map(|r| r.id).collect()
    }

    /// Lets every held packet go now (the line is being taken down: nothing may be lost), in
    /// the order they were to go.
    pub fn drain(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        self.due_into(u64::MAX, &mut out);
        out.into_iter().map(|r| r.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn line(delay_ms: u64, jitter: Jitter) -> DelayLine {
        DelayLine::new(
            LineConfig {
                delay_ns: delay_ms * MS,
                jitter,
                max_packets: 1000,
                max_bytes: 1_000_000,
            },
            7,
        )
    }

    #[test]
    fn a_packet_waits_the_delay_and_no_longer() {
        let mut l = line(20, Jitter::None);
        assert_eq!(l.next_release_ns(), None);
        assert_eq!(
            l.offer(5 * MS, 1, 100),
            Offer::Queued {
                release_ns: 25 * MS
            }
        );
        assert_eq!(
            l.offer(6 * MS, 2, 100),
            Offer::Queued {
                release_ns: 26 * MS
            }
        );
        assert_eq!(l.next_release_ns(), Some(25 * MS));
        assert!(l.due(25 * MS - 1).is_empty());
        assert_eq!(l.due(25 * MS), vec![1]);
        assert_eq!(l.next_release_ns(), Some(26 * MS));
        assert_eq!(l.due(40 * MS), vec![2]);
        assert_eq!(l.next_release_ns(), None);
        let c = l.counters();
        assert_eq!(
            (c.queued_packets, c.released_packets, c.dropped_packets),
            (2, 2, 0)
        );
        assert_eq!((c.queued_bytes, c.released_bytes), (200, 200));
    }

    #[test]
    fn a_full_line_drops_at_the_tail_and_counts_in_packets_and_bytes() {
        let mut l = DelayLine::new(
            LineConfig {
                delay_ns: 10 * MS,
                jitter: Jitter::None,
                max_packets: 3,
                max_bytes: 2500,
            },
            1,
        );
        assert!(matches!(l.offer(0, 1, 1000), Offer::Queued { .. }));
        assert!(matches!(l.offer(0, 2, 1000), Offer::Queued { .. }));
        // 3000 bytes would not fit in 2500.
        assert_eq!(l.offer(0, 3, 1000), Offer::Dropped);
        assert!(matches!(l.offer(0, 4, 400), Offer::Queued { .. }));
        // Three packets held: the fourth does not fit, however small.
        assert_eq!(l.offer(0, 5, 1), Offer::Dropped);
        let c = l.counters();
        assert_eq!((c.dropped_packets, c.dropped_bytes), (2, 1001));
        assert_eq!((c.held_packets(), c.held_bytes()), (3, 2400));
        assert_eq!((c.peak_held_packets, c.peak_held_bytes), (3, 2400));
        // Room again once packets leave.
        assert_eq!(l.due(10 * MS), vec![1, 2, 4]);
        assert!(matches!(l.offer(10 * MS, 6, 1000), Offer::Queued { .. }));
    }

    #[test]
    fn a_clock_that_steps_back_does_not_reorder_a_line_without_jitter() {
        let mut l = line(10, Jitter::None);
        l.offer(5 * MS, 1, 1);
        // Read a little earlier than the first (two threads' clocks, say): it still goes after.
        assert_eq!(
            l.offer(4 * MS, 2, 1),
            Offer::Queued {
                release_ns: 15 * MS
            }
        );
        assert_eq!(l.due(15 * MS), vec![1, 2]);
    }

    #[test]
    fn uniform_jitter_stays_within_its_bounds_and_covers_them() {
        let mut l = line(20, Jitter::Uniform { ns: 5 * MS });
        let mut delays = Vec::new();
        for i in 0..20_000u32 {
            let now = u64::from(i) * 1000;
            let Offer::Queued { release_ns } = l.offer(now, i, 1) else {
                // A full line (1000 packets): let them go and carry on.
                l.drain();
                continue;
            };
            delays.push(release_ns - now);
        }
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min >= 15 * MS && max <= 25 * MS, "{min}..{max}");
        assert!(
            min < 15 * MS + MS / 10 && max > 25 * MS - MS / 10,
            "{min}..{max}"
        );
        let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
        assert!((mean - 20e6).abs() < 0.1e6, "{mean}");
    }

    /// Two links' jitters, 3 and 4 ms: a trapezoid on 20 ± 7 ms whose variance is the sum of
    /// the two uniforms' ((3² + 4²)/3 ms²), and whose flat top (± 1 ms) holds 2/8 of the draws.
    #[test]
    fn summed_jitter_is_the_two_links_draws_added() {
        let mut l = line(
            20,
            Jitter::UniformSum {
                ns: [3 * MS, 4 * MS],
            },
        );
        let mut delays = Vec::new();
        for i in 0..40_000u32 {
            let now = u64::from(i) * 1000;
            let Offer::Queued { release_ns } = l.offer(now, i, 1) else {
                l.drain();
                continue;
            };
            delays.push((release_ns - now) as f64 / 1e6);
        }
        let n = delays.len() as f64;
        let (min, max) = delays
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
        assert!(min >= 13.0 && max <= 27.0, "{min}..{max}");
        assert!(min < 13.3 && max > 26.7, "{min}..{max}");
        let mean = delays.iter().sum::<f64>() / n;
        let var = delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((mean - 20.0).abs() < 0.05, "{mean}");
        assert!((var - 25.0 / 3.0).abs() < 0.3, "{var}");
        let top = delays.iter().filter(|d| (**d - 20.0).abs() <= 1.0).count() as f64 / n;
        assert!((top - 0.25).abs() < 0.02, "{top}");
    }

    #[test]
    fn normal_jitter_has_its_deviation_and_is_clipped() {
        let mut l = line(
            50,
            Jitter::Normal {
                sigma_ns: 5 * MS,
                clip_ns: 10 * MS,
            },
        );
        let mut delays = Vec::new();
        for i in 0..20_000u32 {
            if let Offer::Queued { release_ns } = l.offer(0, i, 1) {
                delays.push(release_ns as f64);
            } else {
                l.drain();
            }
        }
        let n = delays.len() as f64;
        let mean = delays.iter().sum::<f64>() / n;
        let sd = (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - 50e6).abs() < 0.2e6, "{mean}");
        // Clipping at 2σ takes a little off the deviation (to about 0.96 σ).
        assert!(sd > 4.0e6 && sd < 5.1e6, "{sd}");
        assert!(delays.iter().all(|d| (40e6..=60e6).contains(d)));
    }

    #[test]
    fn jitter_reorders_as_netem_does_and_a_seed_repeats_it() {
        let run = |seed| {
            let mut l = DelayLine::new(
                LineConfig {
                    delay_ns: 20 * MS,
                    jitter: Jitter::Uniform { ns: 5 * MS },
                    max_packets: 1000,
                    max_bytes: 1 << 30,
                },
                seed,
            );
            for i in 0..100u32 {
                l.offer(u64::from(i) * MS / 10, i, 1);
            }
            l.due(u64::MAX)
        };
        let a = run(3);
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        assert_ne!(
            a,
            (0..100).collect::<Vec<_>>(),
            "packets 0.1 ms apart with ±5 ms reorder"
        );
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "every packet once");
    }

    #[test]
    fn drain_lets_everything_go_in_release_order() {
        let mut l = line(100, Jitter::None);
        for i in 0..5 {
            l.offer(u64::from(i), i, 10);
        }
        assert_eq!(l.drain(), vec![0, 1, 2, 3, 4]);
        assert_eq!(l.counters().held_packets(), 0);
        assert_eq!(l.next_release_ns(), None);
    }

    proptest! {
        /// Without jitter the line is a FIFO: what it lets go, it lets go in arrival order,
        /// each packet no earlier than its arrival plus the delay (and, checked at every step,
        /// never later than the first `due` call at or after that time).
        #[test]
        fn without_jitter_order_is_kept_and_no_packet_leaves_early(
            delay in 0u64..50_000_000,
            steps in proptest::collection::vec((0u64..5_000_000, 1u32..70_000, any::<bool>()), 1..300),
            max_packets in 1usize..100,
        ) {
            let mut l = DelayLine::new(
                LineConfig { delay_ns: delay, jitter: Jitter::None, max_packets, max_bytes: 2_000_000 },
                0,
            );
            let mut now = 0u64;
            let mut arrivals = std::collections::HashMap::new();
            let mut queued = Vec::new();
            let mut released = Vec::new();
            for (id, (gap, len, poll)) in steps.into_iter().enumerate() {
                now += gap;
                let id = id as u32;
                if poll {
                    let mut out = Vec::new();
                    l.due_into(now, &mut out);
                    for r in out {
                        prop_assert!(r.release_ns <= now);
                        prop_assert!(r.release_ns >= arrivals[&r.id] + delay);
                        released.push(r.id);
                    }
                }
                if let Offer::Queued { release_ns } = l.offer(now, id, len) {
                    prop_assert_eq!(release_ns, now + delay);
                    arrivals.insert(id, now);
                    queued.push(id);
                }
            }
            let mut out = Vec::new();
            l.due_into(u64::MAX, &mut out);
            for r in out {
                prop_assert!(r.release_ns >= arrivals[&r.id] + delay);
                released.push(r.id);
            }
            prop_assert_eq!(released, queued);
            let c = l.counters();
            prop_assert_eq!(c.queued_packets, c.released_packets);
        }

        /// With jitter every packet still leaves exactly once, within delay ± jitter.
        #[test]
        fn with_jitter_every_packet_leaves_once_within_its_bounds(
            jitter in 0u64..10_000_000,
            gaps in proptest::collection::vec(0u64..2_000_000, 1..300),
            seed in any::<u64>(),
        ) {
            let delay = 20_000_000u64;
            let mut l = DelayLine::new(
                LineConfig { delay_ns: delay, jitter: Jitter::Uniform { ns: jitter }, max_packets: 10_000, max_bytes: u64::MAX },
                seed,
            );
            let mut now = 0;
            let mut arrivals = Vec::new();
            for (i, g) in gaps.iter().enumerate() {
                now += g;
                let queued = matches!(l.offer(now, i as u32, 1), Offer::Queued { .. });
                prop_assert!(queued);
                arrivals.push(now);
            }
            let mut out = Vec::new();
            l.due_into(u64::MAX, &mut out);
            prop_assert_eq!(out.len(), arrivals.len());
            let mut seen = vec![false; arrivals.len()];
            for r in out {
                let a = arrivals[r.id as usize];
                prop_assert!(!seen[r.id as usize]);
                seen[r.id as usize] = true;
                prop_assert!(r.release_ns + jitter >= a + delay && r.release_ns <= a + delay + jitter);
            }
        }
    }
}
