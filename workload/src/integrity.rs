//! Byte-exact integrity checking of a received stream (DESIGN §7: lost, duplicated and
//! corrupted bytes are "counted and located, never guessed").
//!
//! [`StreamChecker`] is a state machine fed with the bytes a client received, in order, in any
//! chunking. It knows what the stream must contain ([`crate::content`]) and where each
//! received byte really belongs, because the content is self-locating: every
//! [`BLOCK_LEN`]-byte block starts with a header that names its offset.
//!
//! # How a byte is placed
//!
//! The checker keeps `next`, the offset it believes the next received byte has, and compares
//! the received bytes with the content there (several GB/s, no copy on the clean path). At the
//! first byte that differs (received position `pos`) it looks for the first valid header in
//! the next [`WINDOW`] received bytes. A header at received position `p` claiming block offset
//! `H` says that the byte at `pos` really has offset `t = H - (p - pos)`:
//!
//! - `t == next`: the bytes are in place and some were damaged. Exactly the bytes between
//!   `pos` and the header that differ from the content are counted as corrupted.
//! - `t != next`: the stream jumped (bytes lost, or bytes delivered again). The checker moves
//!   `next` to `t` and carries on.
//!
//! If no header is found in the window (a long run of damage, or the stream ends first), the
//! window is compared in place: its differing bytes are corrupted.
//!
//! Received bytes are then accounted by the offsets they were placed at, with two sets of
//! offsets: those received since the client last (re)issued its request (the *epoch*) and
//! those ever received. A byte at an offset already received in this epoch is *duplicated*
//! (the client did not ask for it again); at an offset received only in an earlier epoch it is
//! *refetched* (the client asked again: a reconnect, [`StreamChecker::restart_at`]). Offsets
//! of `[0, expected_len)` never received by the end are *lost* — including a range skipped by
//! a jump, skipped by a resume, or the missing tail — and a range first skipped and later
//! delivered (reordering) is not lost. Bytes placed at or beyond `expected_len` are *excess*.
//!
//! These rules make the counters exact, and consistent by construction:
//! `bytes_received = (bytes_expected - bytes_lost) + bytes_refetched + bytes_duplicated +
//! bytes_excess`.
//!
//! # What the bytes cannot tell
//!
//! When a stream jumps from offset `a` to offset `b`, and the content happens to have the same
//! byte at `a` and at `b` (probability 1/256), the received stream is identical to one that
//! jumped from `a + 1` to `b + 1`: no checker can tell them apart. This one places the jump at
//! the first byte that does not fit (as late as the bytes allow); the counts are exact either
//! way, and the offsets are exact up to this inherent ambiguity.
//!
//! Two discontinuities closer than a block may be reported as one with some corrupted bytes:
//! between them there is no header to locate the bytes by.
//!
//! # Independence from chunking
//!
//! A decision at a mismatch is taken only once [`WINDOW`] + 15 bytes after it have arrived (or
//! at a stream boundary: [`StreamChecker::restart_at`] or [`StreamChecker::finish`]), so the
//! report depends only on the received bytes and the boundaries, never on how they were split
//! into [`StreamChecker::push`] calls. Memory is bounded by that window plus one push, and by
//! one entry per discontinuity in the offset sets.
//!
//! # No panics
//!
//! No input makes the checker panic: any bytes, any seed, any `expected_len`, any restart
//! offset (arithmetic on offsets saturates; the property is tested with arbitrary input).

use crate::content::{BLOCK_LEN, Content, HEADER_LEN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Received bytes searched for a header after a mismatch: two blocks, so a jump is always
/// located even when it lands just after a header.
pub const WINDOW: usize = 2 * BLOCK_LEN;
/// Bytes that must have arrived after a mismatch before it is decided: a header may start at
/// any of the [`WINDOW`] positions and needs its 16 bytes.
const NEED: usize = WINDOW + HEADER_LEN - 1;
/// Ranges kept per kind in a report; the counters stay exact beyond it.
pub const MAX_RANGES: usize = 64;

/// A range of stream offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ByteRange {
    /// First offset of the range.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

/// What a checker concluded about a whole stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// The stream's length: offsets `[0, bytes_expected)`.
    pub bytes_expected: u64,
    /// Every byte delivered to the client, duplicates, refetches and excess included.
    pub bytes_received: u64,
    /// Expected offsets never received.
    pub bytes_lost: u64,
    /// Bytes delivered again without the client asking (e.g. a takeover that resent from a
    /// wrong sequence number).
    pub bytes_duplicated: u64,
    /// Bytes received at an expected offset with a value other than the content's.
    pub bytes_corrupted: u64,
    /// Bytes delivered again because the client re-issued or resumed its request.
    pub bytes_refetched: u64,
    /// Bytes placed at or beyond `bytes_expected`: the server sent more than the stream.
    pub bytes_excess: u64,
    /// Where the lost bytes were (stream offsets), at most [`MAX_RANGES`].
    pub lost: Vec<ByteRange>,
    /// Where the duplicated bytes belong, at most [`MAX_RANGES`].
    pub duplicated: Vec<ByteRange>,
    /// Where the corrupted bytes were, at most [`MAX_RANGES`].
    pub corrupted: Vec<ByteRange>,
    /// Some list above was cut at [`MAX_RANGES`]; the counters are still exact.
    pub ranges_truncated: bool,
    /// No byte lost, duplicated, corrupted or in excess, and every expected byte received.
    pub integrity_ok: bool,
}

impl IntegrityReport {
    /// Several streams taken together (a run's connections): the counters add up, the ranges
    /// are listed together (each list cut at [`MAX_RANGES`]), and the whole is ok only when
    /// there is at least one stream and every one is.
    pub fn combine<'a>(parts: impl IntoIterator<Item = &'a IntegrityReport>) -> IntegrityReport {
        let mut all = IntegrityReport {
            integrity_ok: true,
            ..IntegrityReport::default()
        };
        let mut any = false;
        for p in parts {
            any = true;
            all.bytes_expected += p.bytes_expected;
            all.bytes_received += p.bytes_received;
            all.bytes_lost += p.bytes_lost;
            all.bytes_duplicated += p.bytes_duplicated;
            all.bytes_corrupted += p.bytes_corrupted;
            all.bytes_refetched += p.bytes_refetched;
            all.bytes_excess += p.bytes_excess;
            for (into, from) in [
                (&mut all.lost, &p.lost),
                (&mut all.duplicated, &p.duplicated),
                (&mut all.corrupted, &p.corrupted),
            ] {
                let room = MAX_RANGES.saturating_sub(into.len());
                all.ranges_truncated |= from.len() > room;
                into.extend(from.iter().take(room).cloned());
            }
            all.ranges_truncated |= p.ranges_truncated;
            all.integrity_ok &= p.integrity_ok;
        }
        all.integrity_ok &= any;
        all
    }
}

/// Running counters, cheap to take, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Every byte pushed so far.
    pub bytes_received: u64,
    /// Every offset below this one has been received (corrupted ones are counted as such).
    pub contiguous_through: u64,
    /// The offset the checker expects the next byte at.
    pub next_offset: u64,
    /// Offsets skipped below the highest one received: lost unless delivered later.
    pub bytes_missing: u64,
    /// Duplicated bytes so far.
    pub bytes_duplicated: u64,
    /// Corrupted bytes so far.
    pub bytes_corrupted: u64,
    /// Refetched bytes so far.
    pub bytes_refetched: u64,
    /// Excess bytes so far.
    pub bytes_excess: u64,
    /// Bytes received but not yet placed (at most a window after a mismatch).
    pub bytes_pending: u64,
}

/// A set of `u64` offsets as disjoint, non-adjacent half-open intervals.
#[derive(Debug, Clone, Default)]
struct IntervalSet {
    /// start → end.
    map: BTreeMap<u64, u64>,
    /// Number of offsets in the set.
    total: u64,
}

impl IntervalSet {
    fn insert(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (mut start, mut end) = (a, b);
        if let Some((&s, &e)) = self.map.range(..=a).next_back()
            && e >= a
        {
            start = s;
            end = end.max(e);
            self.map.remove(&s);
            self.total -= e - s;
        }
        while let Some((&s, &e)) = self.map.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.map.remove(&s);
            self.total -= e - s;
        }
        self.map.insert(start, end);
        self.total += end - start;
    }

    /// The parts of `[a, b)` in the set, in order.
    fn overlaps(&self, a: u64, b: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let before = self
            .map
            .range(..a)
            .next_back()
            .filter(|&(_, &e)| e > a)
            .map(|(_, &e)| (a, e.min(b)));
        let inside = self
            .map
            .range(a..b.max(a))
            .map(move |(&s, &e)| (s, e.min(b)));
        before.into_iter().chain(inside).filter(|(s, e)| s < e)
    }

    fn overlap_len(&self, a: u64, b: u64) -> u64 {
        self.overlaps(a, b).map(|(s, e)| e - s).sum()
    }

    /// The parts of `[0, hi)` not in the set, in order.
    fn gaps(&self, hi: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut at = 0u64;
        let mut done = false;
        let mut it = self.map.iter();
        std::iter::from_fn(move || {
            while !done {
                match it.next() {
                    Some((&s, &e)) => {
                        let gap = (at, s.min(hi));
                        at = at.max(e);
                        if gap.0 < gap.1 {
                            return Some(gap);
                        }
                        if at >= hi {
                            done = true;
                        }
                    }
                    None => {
                        done = true;
                        if at < hi {
                            return Some((at, hi));
                        }
                    }
                }
            }
            None
        })
    }

    /// End of the interval starting at 0, or 0.
    fn prefix_end(&self) -> u64 {
        self.map.get(&0).copied().unwrap_or(0)
    }

    fn last_end(&self) -> u64 {
        self.map.last_key_value().map_or(0, |(_, &e)| e)
    }
}

/// Up to [`MAX_RANGES`] ranges, adjacent ones merged (so chunking does not split them).
#[derive(Debug, Clone, Default)]
struct RangeList {
    ranges: Vec<ByteRange>,
    truncated: bool,
}

impl RangeList {
    fn add(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.ranges.last_mut()
            && last.offset.saturating_add(last.len) == offset
        {
            last.len += len;
            return;
        }
        if self.ranges.len() < MAX_RANGES {
            self.ranges.push(ByteRange { offset, len });
        } else {
            self.truncated = true;
        }
    }
}

/// Checks a received byte stream against `content(seed, ·)`; see the [module](self) docs.
#[derive(Debug, Clone)]
pub struct StreamChecker {
    content: Content,
    expected_len: u64,
    /// Offset of the next byte to place.
    next: u64,
    /// Received bytes not yet placed; starts at a mismatch when non-empty.
    pending: Vec<u8>,
    /// Offsets received since the last restart.
    epoch: IntervalSet,
    /// Offsets ever received (a superset of `epoch`).
    seen: IntervalSet,
    bytes_received: u64,
    bytes_duplicated: u64,
    bytes_corrupted: u64,
    bytes_refetched: u64,
    bytes_excess: u64,
    duplicated: RangeList,
    corrupted: RangeList,
}

impl StreamChecker {
    /// A checker for stream `seed` of `expected_len` bytes, expecting offset 0 first.
    #[must_use]
    pub fn new(seed: u64, expected_len: u64) -> Self {
        StreamChecker {
            content: Content::new(seed),
            expected_len,
            next: 0,
            pending: Vec::new(),
            epoch: IntervalSet::default(),
            seen: IntervalSet::default(),
            bytes_received: 0,
            bytes_duplicated: 0,
            bytes_corrupted: 0,
            bytes_refetched: 0,
            bytes_excess: 0,
            duplicated: RangeList::default(),
            corrupted: RangeList::default(),
        }
    }

    /// Bytes as received, in order, any chunking.
    pub fn push(&mut self, data: &[u8]) {
        self.bytes_received = self.bytes_received.saturating_add(data.len() as u64);
        if self.pending.is_empty() {
            let used = self.process(data, false);
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = self.process(&pending, false);
            pending.drain(..used);
            self.pending = pending;
        }
    }

    /// The client deliberately (re)started the stream at `offset`: a reconnect that re-issues
    /// its request from 0, or a resume at a byte offset. Bytes received before are decided
    /// first (the old connection's bytes end here). Bytes then received at offsets already
    /// received are refetched, not duplicated; offsets skipped by the resume and never
    /// received are lost.
    pub fn restart_at(&mut self, offset: u64) {
        self.flush();
        self.epoch = IntervalSet::default();
        self.next = offset;
    }

    /// Distinct stream offsets received so far, each counted once however often it came:
    /// how far the client has got through its stream (a refetch after a reconnect adds
    /// nothing until it passes what was already received). O(1).
    #[must_use]
    pub fn bytes_seen(&self) -> u64 {
        self.seen.total
    }

    /// Running counters for telemetry; O(log n), no allocation.
    #[must_use]
    pub fn progress(&self) -> Progress {
        Progress {
            bytes_received: self.bytes_received,
            contiguous_through: self.seen.prefix_end(),
            next_offset: self.next,
            bytes_missing: self.seen.last_end() - self.seen.total,
            bytes_duplicated: self.bytes_duplicated,
            bytes_corrupted: self.bytes_corrupted,
            bytes_refetched: self.bytes_refetched,
            bytes_excess: self.bytes_excess,
            bytes_pending: self.pending.len() as u64,
        }
    }

    /// End of stream: everything still buffered is decided, and expected offsets never
    /// received (a missing tail included) are lost.
    #[must_use]
    pub fn finish(mut self) -> IntegrityReport {
        self.flush();
        let mut lost = RangeList::default();
        let mut bytes_lost = 0u64;
        for (s, e) in self.seen.gaps(self.expected_len) {
            bytes_lost += e - s;
            lost.add(s, e - s);
        }
        let integrity_ok = bytes_lost == 0
            && self.bytes_duplicated == 0
            && self.bytes_corrupted == 0
            && self.bytes_excess == 0;
        IntegrityReport {
            bytes_expected: self.expected_len,
            bytes_received: self.bytes_received,
            bytes_lost,
            bytes_duplicated: self.bytes_duplicated,
            bytes_corrupted: self.bytes_corrupted,
            bytes_refetched: self.bytes_refetched,
            bytes_excess: self.bytes_excess,
            ranges_truncated: lost.truncated
                || self.duplicated.truncated
                || self.corrupted.truncated,
            lost: lost.ranges,
            duplicated: self.duplicated.ranges,
            corrupted: self.corrupted.ranges,
            integrity_ok,
        }
    }

    /// Decides every pending byte: a stream boundary.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let used = self.process(&pending, true);
        debug_assert_eq!(used, pending.len());
    }

    /// Places bytes from the front of `data`; returns how many. Without `boundary` it stops
    /// at a mismatch that has fewer than [`NEED`] bytes after it; with it, it places them all.
    fn process(&mut self, data: &[u8], boundary: bool) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            match self.content.first_mismatch(self.next, rest) {
                None => {
                    self.place_clean(rest.len() as u64);
                    return data.len();
                }
                Some(i) => {
                    self.place_clean(i as u64);
                    pos += i;
                    let win = &data[pos..];
                    if !boundary && win.len() < NEED {
                        return pos;
                    }
                    pos += self.resolve(win);
                }
            }
        }
        pos
    }

    /// `win[0]` differs from the content at `next`: locate it. Returns the bytes placed (≥ 1,
    /// so `process` always advances).
    fn resolve(&mut self, win: &[u8]) -> usize {
        let limit = win.len().saturating_sub(HEADER_LEN - 1).min(WINDOW);
        let mut expect = [0u8; WINDOW];
        for p in 0..limit {
            let Some(h) = self.content.header_at(&win[p..]) else {
                continue;
            };
            // The offset of win[0] if the bytes up to the header are contiguous.
            let Some(t) = h.checked_sub(p as u64) else {
                continue;
            };
            // Extend the header's alignment backwards: win[q0..p] all fit it.
            let exp = &mut expect[..p];
            self.content.fill(t, exp);
            let q0 = win[..p]
                .iter()
                .zip(exp.iter())
                .rposition(|(a, b)| a != b)
                .map_or(0, |i| i + 1);
            if t == self.next {
                // In place: the bytes before q0 include damaged ones (q0 ≥ 1 since win[0]
                // differs at this alignment).
                self.place_checked(&win[..q0]);
            } else {
                // A jump. Bytes that fit neither alignment are charged to the old one, where
                // they arrived; the jump is placed at q0.
                self.place_checked(&win[..q0]);
                self.next = t.saturating_add(q0 as u64);
            }
            // From q0 through the header the bytes fit by construction.
            self.place_clean((p + HEADER_LEN - q0) as u64);
            return p + HEADER_LEN;
        }
        let n = win.len().min(WINDOW);
        self.place_checked(&win[..n]);
        n
    }

    /// Places `n` bytes known to match the content at `next`.
    fn place_clean(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.account(self.next, n);
        self.next = self.next.saturating_add(n);
    }

    /// Places `bytes` at `next`, counting those that differ from the content as corrupted.
    /// Called with at most [`WINDOW`] bytes.
    fn place_checked(&mut self, bytes: &[u8]) {
        let mut expect = [0u8; WINDOW];
        for chunk in bytes.chunks(WINDOW) {
            let at = self.next;
            let exp = &mut expect[..chunk.len()];
            self.content.fill(at, exp);
            let mut run: Option<usize> = None;
            for (i, (a, b)) in chunk.iter().zip(exp.iter()).enumerate() {
                match (a != b, run) {
                    (true, None) => run = Some(i),
                    (false, Some(s)) => {
                        self.corrupt(at, s, i);
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = run {
                self.corrupt(at, s, chunk.len());
            }
            self.place_clean(chunk.len() as u64);
        }
    }

    /// Counts the bytes `[s, e)` of a chunk placed at `at` as corrupted, within the stream.
    fn corrupt(&mut self, at: u64, s: usize, e: usize) {
        let start = at.saturating_add(s as u64);
        let (inside, _) = self.split_at_end(start, (e - s) as u64);
        if inside > 0 {
            self.bytes_corrupted += inside;
            self.corrupted.add(start, inside);
        }
    }

    /// Of `n` bytes placed at `a`, how many fall inside the stream and how many beyond.
    fn split_at_end(&self, a: u64, n: u64) -> (u64, u64) {
        let inside = if a >= self.expected_len {
            0
        } else {
            n.min(self.expected_len - a)
        };
        (inside, n - inside)
    }

    /// Accounts `n` received bytes placed at offsets `[a, a + n)`.
    fn account(&mut self, a: u64, n: u64) {
        let (inside, excess) = self.split_at_end(a, n);
        self.bytes_excess = self.bytes_excess.saturating_add(excess);
        if inside == 0 {
            return;
        }
        // `a + inside <= expected_len`: no overflow.
        let b = a + inside;
        let mut dup = 0;
        for (s, e) in self.epoch.overlaps(a, b) {
            dup += e - s;
            self.duplicated.add(s, e - s);
        }
        self.bytes_duplicated = self.bytes_duplicated.saturating_add(dup);
        let again = self.seen.overlap_len(a, b);
        self.bytes_refetched = self
            .bytes_refetched
            .saturating_add(again.saturating_sub(dup));
        self.epoch.insert(a, b);
        self.seen.insert(a, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_set_merges_and_reports_gaps() {
        let mut s = IntervalSet::default();
        s.insert(10, 20);
        s.insert(30, 40);
        s.insert(20, 25);
        assert_eq!(s.total, 25);
        assert_eq!(
            s.overlaps(0, 100).collect::<Vec<_>>(),
            vec![(10, 25), (30, 40)]
        );
        assert_eq!(
            s.overlaps(12, 35).collect::<Vec<_>>(),
            vec![(12, 25), (30, 35)]
        );
        assert_eq!(
            s.gaps(50).collect::<Vec<_>>(),
            vec![(0, 10), (25, 30), (40, 50)]
        );
        assert_eq!(s.gaps(28).collect::<Vec<_>>(), vec![(0, 10), (25, 28)]);
        s.insert(5, 35);
        assert_eq!(s.map.len(), 1);
        assert_eq!(s.total, 35);
        assert_eq!(s.gaps(35).count(), 1);
        s.insert(0, 5);
        assert_eq!(s.prefix_end(), 40);
        assert_eq!(s.gaps(40).count(), 0);
    }
}
