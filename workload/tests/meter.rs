//! The meter against known truth: a gap of known length is the stall, to the nanosecond, and
//! the buckets hold every byte.

use halab_workload::meter::{BUCKET_NS, ConnEvent, MAX_BUCKETS, Meter, MeterSummary};
use proptest::prelude::*;

const MS: u64 = 1_000_000;

#[test]
fn a_known_gap_is_the_stall() {
    let start = 5_000 * MS;
    let mut m = Meter::new(start);
    let mut t = start;
    for _ in 0..100 {
        t += MS;
        m.on_bytes(t, 1000);
    }
    let paused_at = t;
    t += 500 * MS + 123;
    m.on_bytes(t, 1000);
    m.on_bytes(t, 0); // not a receipt
    for _ in 0..100 {
        t += 2 * MS;
        m.on_bytes(t, 1000);
    }
    let s = m.summary();
    assert_eq!(s.stall_ms, Some(500.000123));
    assert_eq!(s.stall_at_ms, Some((paused_at - start) as f64 / 1e6));
    assert_eq!(s.bytes, 201_000);
    assert_eq!(s.buckets_10ms.iter().sum::<u64>(), s.bytes);
    assert_eq!(s.end_ns, Some(t));
    assert_eq!(s.buckets_10ms[0], 9_000); // receipts at 1..=9 ms
}

#[test]
fn resume_is_the_first_byte_after_the_fault() {
    let mut m = Meter::new(0);
    m.on_bytes(10, 5);
    assert_eq!(m.summary().resume_ns, None);
    m.mark_fault(100);
    m.on_event(150, ConnEvent::Reset);
    m.on_event(
        300,
        ConnEvent::Reconnect {
            to: "10.0.0.2".into(),
        },
    );
    m.on_bytes(400, 0);
    m.on_bytes(450, 7);
    m.on_bytes(460, 7);
    let s = m.summary();
    assert_eq!(s.fault_ns, Some(100));
    assert_eq!(s.resume_ns, Some(450));
    assert_eq!(s.events.len(), 2);
    assert_eq!(s.stall_ms, Some(440.0 / 1e6));
}

#[test]
fn no_receipts_no_stall() {
    let mut m = Meter::new(0);
    assert_eq!(m.summary().stall_ms, None);
    m.on_bytes(5, 1);
    let s = m.summary();
    assert_eq!(s.stall_ms, None);
    assert_eq!(s.stall_at_ms, None);
    assert_eq!(s.latency_us, None);
}

#[test]
fn latencies_are_summarised_in_microseconds() {
    let mut m = Meter::new(0);
    for i in 1..=1000u64 {
        m.on_latency(i * 1000); // 1..=1000 µs
    }
    let l = m.summary().latency_us.unwrap();
    assert_eq!(l.count, 1000);
    assert_eq!(l.min, 1);
    assert_eq!(l.max, 1000);
    assert_eq!(l.p50, 500);
    assert_eq!(l.p90, 900);
    assert_eq!(l.p99, 990);
    assert!((l.mean - 500.5).abs() < 0.5);
    assert_eq!(l.clamped, 0);
}

#[test]
fn samples_count_bytes_between_calls() {
    let mut m = Meter::new(1000);
    m.on_bytes(2000, 10);
    m.on_bytes(3000, 20);
    let s = m.sample(100 * MS);
    assert_eq!(
        (s.bytes, s.total_bytes, s.interval_ns),
        (30, 30, 100 * MS - 1000)
    );
    m.on_bytes(150 * MS, 5);
    let s = m.sample(200 * MS);
    assert_eq!((s.bytes, s.total_bytes, s.interval_ns), (5, 35, 100 * MS));
}

#[test]
fn summary_round_trips_through_json() {
    let mut m = Meter::new(0);
    m.on_bytes(1, 2);
    m.on_bytes(30 * MS, 2);
    m.on_latency(1234);
    m.on_event(3, ConnEvent::Connected);
    m.on_event(4, ConnEvent::Reconnect { to: "b".into() });
    let s = m.summary();
    let back: MeterSummary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

proptest! {
    #[test]
    fn buckets_sum_to_bytes_and_stall_is_the_longest_gap(
        start in any::<u64>(),
        steps in proptest::collection::vec((0u64..50 * MS, 0u64..100_000), 0..200),
    ) {
        let mut m = Meter::new(start);
        let mut t = start;
        let mut last: Option<u64> = None;
        let mut longest: Option<u64> = None;
        let mut total = 0u64;
        for (dt, n) in steps {
            t = t.saturating_add(dt);
            m.on_bytes(t, n);
            if n > 0 {
                total += n;
                if let Some(l) = last {
                    longest = Some(longest.map_or(t - l, |g: u64| g.max(t - l)));
                }
                last = Some(t);
            }
        }
        let s = m.summary();
        prop_assert_eq!(s.bytes, total);
        prop_assert_eq!(s.buckets_10ms.iter().sum::<u64>(), total);
        prop_assert!(s.buckets_10ms.len() <= MAX_BUCKETS);
        prop_assert_eq!(s.stall_ms, longest.map(|g| g as f64 / 1e6));
        if let Some(l) = last {
            prop_assert_eq!(s.buckets_10ms.len() as u64, ((l - start) / BUCKET_NS).min(MAX_BUCKETS as u64 - 1) + 1);
        }
    }

    #[test]
    fn arbitrary_calls_never_panic(calls in proptest::collection::vec((0u8..5, any::<u64>(), any::<u64>()), 0..50)) {
        let mut m = Meter::new(calls.first().map_or(0, |c| c.1));
        for (k, a, b) in calls {
            match k {
                0 => m.on_bytes(a, b),
                1 => m.on_latency(a),
                2 => m.on_event(a, ConnEvent::Fin),
                3 => m.mark_fault(a),
                _ => { let _ = m.sample(a); }
            }
        }
        let s = m.summary();
        prop_assert_eq!(s.buckets_10ms.iter().fold(0u64, |a, b| a.saturating_add(*b)), s.bytes);
    }
}
