//! The checker against known truth: streams with chosen bytes dropped, duplicated or corrupted
//! must be reported with exactly those counts and offsets, whatever the chunking.

use halab_workload::content::{BLOCK_LEN, Content};
use halab_workload::integrity::{ByteRange, IntegrityReport, StreamChecker};
use proptest::prelude::*;

const B: usize = BLOCK_LEN;

fn stream(seed: u64, from: usize, to: usize) -> Vec<u8> {
    let mut v = vec![0u8; to - from];
    Content::new(seed).fill(from as u64, &mut v);
    v
}

/// Pushes `data` cut into pieces of the given sizes, cycled.
fn push_chunked(c: &mut StreamChecker, data: &[u8], chunks: &[usize]) {
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = chunks
            .get(i % chunks.len().max(1))
            .copied()
            .unwrap_or(data.len())
            .max(1);
        let end = (at + n).min(data.len());
        c.push(&data[at..end]);
        at = end;
        i += 1;
    }
}

fn check(seed: u64, len: usize, data: &[u8], chunks: &[usize]) -> IntegrityReport {
    let mut c = StreamChecker::new(seed, len as u64);
    push_chunked(&mut c, data, chunks);
    let r = c.finish();
    assert_accounting(&r);
    r
}

/// The counters partition the received bytes.
fn assert_accounting(r: &IntegrityReport) {
    assert_eq!(
        r.bytes_received,
        r.bytes_expected - r.bytes_lost + r.bytes_refetched + r.bytes_duplicated + r.bytes_excess,
        "{r:?}"
    );
}

/// How far a jump from offset `from` to offset `to` can be slid forward without changing the
/// received bytes: the stream cannot tell where in that slide the jump happened, and the
/// checker places it at the end.
fn slide(seed: u64, from: usize, to: usize, limit: usize) -> usize {
    let c = Content::new(seed);
    (0..)
        .take_while(|&k| to + k < limit && c.byte((from + k) as u64) == c.byte((to + k) as u64))
        .count()
}

fn range(offset: usize, len: usize) -> ByteRange {
    ByteRange {
        offset: offset as u64,
        len: len as u64,
    }
}

fn chunkings() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![usize::MAX]),
        Just(vec![1]),
        proptest::collection::vec(1usize..3000, 1..8),
        proptest::collection::vec(1usize..40, 1..8),
    ]
}

/// A stream length and a fault position `[at, at + n)` at least two blocks from either end.
fn fault() -> impl Strategy<Value = (usize, usize, usize)> {
    (8 * B..40 * B).prop_flat_map(|len| {
        (1usize..3 * B).prop_flat_map(move |n| {
            let hi = len - 2 * B - n;
            (Just(len), (2 * B..hi), Just(n))
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn clean_stream_is_ok_with_exact_counts(seed in any::<u64>(), len in 0usize..20 * B, chunks in chunkings()) {
        let data = stream(seed, 0, len);
        let r = check(seed, len, &data, &chunks);
        prop_assert!(r.integrity_ok, "{:?}", r);
        prop_assert_eq!(r.bytes_received, len as u64);
        prop_assert_eq!(r.bytes_expected, len as u64);
        prop_assert_eq!(r.bytes_lost + r.bytes_duplicated + r.bytes_corrupted + r.bytes_refetched + r.bytes_excess, 0);
        prop_assert!(r.lost.is_empty() && r.duplicated.is_empty() && r.corrupted.is_empty());
    }

    #[test]
    fn a_dropped_range_is_lost_exactly(seed in any::<u64>(), (len, at, n) in fault(), chunks in chunkings()) {
        let mut data = stream(seed, 0, at);
        data.extend(stream(seed, at + n, len));
        let r = check(seed, len, &data, &chunks);
        let k = slide(seed, at, at + n, len);
        prop_assert_eq!(r.bytes_lost, n as u64);
        prop_assert_eq!(&r.lost, &vec![range(at + k, n)]);
        prop_assert_eq!(r.bytes_duplicated + r.bytes_corrupted + r.bytes_refetched + r.bytes_excess, 0);
        prop_assert!(!r.integrity_ok);
    }

    #[test]
    fn a_duplicated_range_is_reported_exactly(seed in any::<u64>(), (len, at, n) in fault(), chunks in chunkings()) {
        // The server delivers [0, at + n), then resends from `at` (a takeover from a wrong
        // sequence number): [at, at + n) arrives twice.
        let end = at + n;
        let mut data = stream(seed, 0, end);
        data.extend(stream(seed, at, len));
        let r = check(seed, len, &data, &chunks);
        let k = slide(seed, end, at, len);
        prop_assert_eq!(r.bytes_duplicated, n as u64);
        prop_assert_eq!(&r.duplicated, &vec![range(at + k, n)]);
        prop_assert_eq!(r.bytes_lost + r.bytes_corrupted + r.bytes_refetched + r.bytes_excess, 0);
        prop_assert_eq!(r.bytes_received, (len + n) as u64);
        prop_assert!(!r.integrity_ok);
    }

    #[test]
    fn a_corrupted_range_is_reported_exactly(
        seed in any::<u64>(),
        (len, at, n) in fault(),
        xor in proptest::collection::vec(1u8.., 1..64),
        chunks in chunkings(),
    ) {
        let mut data = stream(seed, 0, len);
        for (i, b) in data[at..at + n].iter_mut().enumerate() {
            *b ^= xor[i % xor.len()];
        }
        let r = check(seed, len, &data, &chunks);
        prop_assert_eq!(r.bytes_corrupted, n as u64);
        prop_assert_eq!(&r.corrupted, &vec![range(at, n)]);
        prop_assert_eq!(r.bytes_lost + r.bytes_duplicated + r.bytes_refetched + r.bytes_excess, 0);
        prop_assert!(!r.integrity_ok);
    }

    #[test]
    fn all_three_faults_at_once_and_chunking_does_not_matter(
        seed in any::<u64>(),
        gaps in proptest::collection::vec(2 * B..6 * B, 4),
        lens in proptest::collection::vec(1usize..2 * B, 3),
        a in chunkings(),
        b in chunkings(),
    ) {
        // Clean, drop, clean, duplicate, clean, corrupt, clean: each two blocks or more apart.
        let drop_at = gaps[0];
        let dup_at = drop_at + lens[0] + gaps[1];
        let dup_end = dup_at + lens[1];
        let bad_at = dup_end + gaps[2];
        let len = bad_at + lens[2] + gaps[3];
        let mut data = stream(seed, 0, drop_at);
        data.extend(stream(seed, drop_at + lens[0], dup_end));
        data.extend(stream(seed, dup_at, len));
        let bad = bad_at + lens[1] - lens[0]; // position in `data` of offset bad_at
        for x in &mut data[bad..bad + lens[2]] {
            *x = !*x;
        }
        let r1 = check(seed, len, &data, &a);
        let r2 = check(seed, len, &data, &b);
        prop_assert_eq!(&r1, &r2);
        prop_assert_eq!(r1.bytes_lost, lens[0] as u64);
        prop_assert_eq!(r1.bytes_duplicated, lens[1] as u64);
        prop_assert_eq!(&r1.corrupted, &vec![range(bad_at, lens[2])]);
        prop_assert_eq!(r1.bytes_refetched + r1.bytes_excess, 0);
    }

    #[test]
    fn a_reissued_request_is_refetched_not_duplicated(seed in any::<u64>(), len in 1usize..30 * B, chunks in chunkings()) {
        let cut = len * 2 / 5;
        let mut c = StreamChecker::new(seed, len as u64);
        push_chunked(&mut c, &stream(seed, 0, cut), &chunks);
        prop_assert_eq!(c.bytes_seen(), cut as u64);
        c.restart_at(0);
        // The refetch moves the client no further through its stream.
        push_chunked(&mut c, &stream(seed, 0, cut), &chunks);
        prop_assert_eq!(c.bytes_seen(), cut as u64);
        push_chunked(&mut c, &stream(seed, cut, len), &chunks);
        prop_assert_eq!(c.bytes_seen(), len as u64);
        let r = c.finish();
        assert_accounting(&r);
        prop_assert!(r.integrity_ok, "{:?}", r);
        prop_assert_eq!(r.bytes_refetched, cut as u64);
        prop_assert_eq!(r.bytes_received, (cut + len) as u64);
    }

    #[test]
    fn a_truncated_stream_loses_exactly_its_tail(seed in any::<u64>(), len in 0usize..20 * B, cut in any::<prop::sample::Index>(), chunks in chunkings()) {
        let got = cut.index(len + 1);
        let r = check(seed, len, &stream(seed, 0, got), &chunks);
        prop_assert_eq!(r.bytes_lost, (len - got) as u64);
        let want = if got < len { vec![range(got, len - got)] } else { vec![] };
        prop_assert_eq!(&r.lost, &want);
        prop_assert_eq!(r.bytes_duplicated + r.bytes_corrupted + r.bytes_refetched + r.bytes_excess, 0);
        prop_assert_eq!(r.integrity_ok, got == len);
    }

    #[test]
    fn a_resume_beyond_what_was_received_loses_the_gap(
        seed in any::<u64>(),
        len in 8 * B..20 * B,
        got in 0usize..4 * B,
        skip in 0usize..2 * B,
        chunks in chunkings(),
    ) {
        let mut c = StreamChecker::new(seed, len as u64);
        push_chunked(&mut c, &stream(seed, 0, got), &chunks);
        c.restart_at((got + skip) as u64);
        push_chunked(&mut c, &stream(seed, got + skip, len), &chunks);
        let r = c.finish();
        assert_accounting(&r);
        prop_assert_eq!(r.bytes_lost, skip as u64);
        prop_assert_eq!(r.integrity_ok, skip == 0);
        prop_assert_eq!(r.bytes_refetched + r.bytes_duplicated + r.bytes_corrupted, 0);
    }

    /// Any bytes, any seed and length, any restarts: no panic, and the counters still
    /// partition what was received.
    #[test]
    fn arbitrary_input_never_panics(
        seed in any::<u64>(),
        len in prop_oneof![any::<u64>(), 0u64..100_000],
        ops in proptest::collection::vec(
            prop_oneof![
                3 => proptest::collection::vec(any::<u8>(), 0..5000).prop_map(Op::Push),
                2 => (any::<u64>(), 0usize..5000).prop_map(|(o, n)| Op::Content(o % 100_000, n)),
                1 => (any::<u64>(), 0usize..5000).prop_map(|(o, n)| Op::Content(o, n)),
                1 => any::<u64>().prop_map(Op::Restart),
                1 => (0u64..100_000).prop_map(Op::Restart),
            ],
            0..12,
        ),
    ) {
        let mut c = StreamChecker::new(seed, len);
        for op in ops {
            match op {
                Op::Push(d) => c.push(&d),
                Op::Content(o, n) => {
                    let mut d = vec![0u8; n];
                    Content::new(seed).fill(o, &mut d);
                    c.push(&d);
                }
                Op::Restart(o) => c.restart_at(o),
            }
            let _ = c.progress();
        }
        let r = c.finish();
        assert_accounting(&r);
        prop_assert!(r.lost.len() <= 64 && r.duplicated.len() <= 64 && r.corrupted.len() <= 64);
    }
}

proptest! {
    /// Chunking independence on messy input: segments of the stream at random offsets, random
    /// bytes and restarts, cut two different ways, give the same report.
    #[test]
    fn any_input_any_chunking_same_report(
        seed in any::<u64>(),
        len in 0u64..60_000,
        ops in proptest::collection::vec(
            prop_oneof![
                4 => (0u64..60_000, 0usize..6000).prop_map(|(o, n)| Op::Content(o, n)),
                1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Push),
                1 => (0u64..60_000).prop_map(Op::Restart),
            ],
            0..10,
        ),
        a in chunkings(),
        b in chunkings(),
    ) {
        let run = |chunks: &[usize]| {
            let mut c = StreamChecker::new(seed, len);
            for op in &ops {
                match op {
                    Op::Push(d) => push_chunked(&mut c, d, chunks),
                    Op::Content(o, n) => {
                        let mut d = vec![0u8; *n];
                        Content::new(seed).fill(*o, &mut d);
                        push_chunked(&mut c, &d, chunks);
                    }
                    Op::Restart(o) => c.restart_at(*o),
                }
            }
            c.finish()
        };
        let (r1, r2) = (run(&a), run(&b));
        assert_accounting(&r1);
        prop_assert_eq!(r1, r2);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(Vec<u8>),
    Content(u64, usize),
    Restart(u64),
}

#[test]
fn stream_shorter_than_a_block_with_damage() {
    let seed = 9;
    let mut data = stream(seed, 0, 100);
    data[10] ^= 1;
    data[11] ^= 2;
    data[50] ^= 4;
    let r = check(seed, 100, &data, &[7]);
    assert_eq!(r.bytes_corrupted, 3);
    assert_eq!(r.corrupted, vec![range(10, 2), range(50, 1)]);
    assert_eq!(r.bytes_lost, 0);
}

#[test]
fn bytes_beyond_the_end_are_excess() {
    let seed = 4;
    let data = stream(seed, 0, 3000);
    let r = check(seed, 2500, &data, &[1000]);
    assert_eq!(r.bytes_excess, 500);
    assert!(!r.integrity_ok);
    assert_eq!(r.bytes_lost + r.bytes_corrupted + r.bytes_duplicated, 0);
}

#[test]
fn stream_starting_at_the_wrong_offset_loses_the_head() {
    let seed = 5;
    let len = 10 * B;
    let r = check(seed, len, &stream(seed, 3000, len), &[4096]);
    assert_eq!(r.lost, vec![range(0, 3000)]);
    assert_eq!(r.bytes_corrupted + r.bytes_duplicated, 0);
}

#[test]
fn a_late_delivery_fills_its_gap() {
    // [0, 4000) then [6000, 9000) then [4000, 6000): reordered, nothing lost or duplicated.
    let seed = 6;
    let len = 9000;
    let mut data = stream(seed, 0, 4000);
    data.extend(stream(seed, 6000, 9000));
    data.extend(stream(seed, 4000, 6000));
    // Both jumps are located by a header: block 6 (offset 6144) and block 4 (offset 4096).
    let r = check(seed, len, &data, &[333]);
    assert_eq!(r.bytes_lost, 0, "{r:?}");
    assert_eq!(r.bytes_duplicated, 0);
    assert_eq!(r.bytes_corrupted, 0);
}

#[test]
fn progress_tracks_the_stream() {
    let seed = 8;
    let mut c = StreamChecker::new(seed, 10 * B as u64);
    c.push(&stream(seed, 0, 3 * B));
    let p = c.progress();
    assert_eq!(p.bytes_received, 3 * B as u64);
    assert_eq!(p.contiguous_through, 3 * B as u64);
    assert_eq!(p.next_offset, 3 * B as u64);
    c.push(&stream(seed, 5 * B + 7, 8 * B));
    let p = c.progress();
    assert_eq!(p.contiguous_through, 3 * B as u64);
    assert_eq!(p.bytes_missing, 2 * B as u64 + 7);
    assert_eq!(p.next_offset, 8 * B as u64);
}

#[test]
fn report_round_trips_through_json() {
    let seed = 3;
    let mut data = stream(seed, 0, 5000);
    data.truncate(4000);
    let r = check(seed, 5000, &data, &[1]);
    let json = serde_json::to_string(&r).unwrap();
    let back: IntegrityReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn combined_reports_add_up_and_are_ok_only_when_every_part_is() {
    let clean = |len: u64| {
        let mut c = StreamChecker::new(7, len);
        let mut buf = vec![0u8; len as usize];
        halab_workload::content::fill(7, 0, &mut buf);
        c.push(&buf);
        c.finish()
    };
    let a = clean(5000);
    let mut short = StreamChecker::new(9, 4000);
    let mut buf = vec![0u8; 3000];
    halab_workload::content::fill(9, 0, &mut buf);
    short.push(&buf);
    let b = short.finish();
    assert!(a.integrity_ok && !b.integrity_ok);

    let both = IntegrityReport::combine([&a, &b]);
    assert_eq!(both.bytes_expected, 9000);
    assert_eq!(both.bytes_received, 8000);
    assert_eq!(both.bytes_lost, 1000);
    assert_eq!(both.lost, b.lost);
    assert!(!both.integrity_ok);

    let one = IntegrityReport::combine([&a]);
    assert!(one.integrity_ok);
    assert_eq!(one.bytes_received, 5000);
    assert!(
        !IntegrityReport::combine([]).integrity_ok,
        "no stream is no proof"
    );
}
