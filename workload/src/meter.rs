//! What a client saw over time (DESIGN §7): throughput per 10 ms bucket, the longest stall,
//! T_resume after a fault, request latencies and connection events.
//!
//! [`Meter`] takes timestamps from its caller (CLOCK_MONOTONIC nanoseconds) and never reads a
//! clock, so it is deterministic and testable to the nanosecond. The stall is measured between
//! receipts on one host's clock, which is why it needs no clock alignment between hosts.
//!
//! # No panics
//!
//! No sequence of calls panics: timestamps before `start_ns` count as `start_ns`, timestamps
//! that go backwards give zero-length gaps, counters saturate, and the bucket series is capped
//! at [`MAX_BUCKETS`] (the last bucket collects anything later), so an absurd timestamp cannot
//! allocate without bound.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Width of a throughput bucket.
pub const BUCKET_NS: u64 = 10_000_000;
/// Buckets kept: one hour. Bytes received later are added to the last bucket, so the series
/// still sums to the byte count.
pub const MAX_BUCKETS: usize = 360_000;
/// Highest latency the histogram tracks, in µs (60 s); longer ones are recorded as 60 s and
/// counted in [`LatencySummary::clamped`].
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// Something that happened to the client's connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnEvent {
    /// A connection was established.
    Connected,
    /// The connection failed with an error (RST, broken pipe, ...).
    Reset,
    /// The peer closed the connection (possibly before the end of the stream).
    Fin,
    /// The client connected to another server after a failure.
    Reconnect {
        /// The server it connected to.
        to: String,
    },
    /// Nothing arrived within the client's timeout.
    TimedOut,
}

/// Request latencies, in µs, from an hdrhistogram with 3 significant digits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Latencies recorded.
    pub count: u64,
    /// Smallest (sub-µs latencies are 0).
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest (at most [`MAX_LATENCY_US`]).
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Latencies above [`MAX_LATENCY_US`], recorded as that.
    pub clamped: u64,
}

impl LatencySummary {
    /// Summarises a histogram of µs values; `None` if it is empty.
    #[must_use]
    pub fn from_histogram(h: &Histogram<u64>, clamped: u64) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: h.mean(),
            clamped,
        })
    }
}

/// What a meter recorded, for the run's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterSummary {
    /// The meter's start (CLOCK_MONOTONIC ns); buckets and `*_at_ms` count from here.
    pub start_ns: u64,
    /// When the last byte arrived; `None` if none did.
    pub end_ns: Option<u64>,
    /// Bytes received.
    pub bytes: u64,
    /// Bytes per 10 ms bucket from `start_ns`; sums to `bytes`.
    pub buckets_10ms: Vec<u64>,
    /// The longest gap between two consecutive receipts, in ms; `None` with fewer than two.
    pub stall_ms: Option<f64>,
    /// When that gap began (the receipt before it), ms from `start_ns`.
    pub stall_at_ms: Option<f64>,
    /// T_fault as given to [`Meter::mark_fault`].
    pub fault_ns: Option<u64>,
    /// T_resume: the first receipt at or after T_fault, after the fault was marked.
    pub resume_ns: Option<u64>,
    /// Request latencies; `None` if none was recorded.
    pub latency_us: Option<LatencySummary>,
    /// Connection events with their time (ns).
    pub events: Vec<(u64, ConnEvent)>,
}

/// Bytes received between two calls to [`Meter::sample`] (100 ms telemetry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When this sample was taken.
    pub now_ns: u64,
    /// Time since the previous sample (or the start).
    pub interval_ns: u64,
    /// Bytes received since the previous sample.
    pub bytes: u64,
    /// Bytes received since the start.
    pub total_bytes: u64,
}

/// Throughput, stall, T_resume, latency and event recorder of one client connection.
#[derive(Debug, Clone)]
pub struct Meter {
    start_ns: u64,
    bytes: u64,
    buckets: Vec<u64>,
    /// Time of the latest receipt.
    last_ns: Option<u64>,
    /// Longest gap so far and when it began.
    longest: Option<(u64, u64)>,
    fault_ns: Option<u64>,
    resume_ns: Option<u64>,
    latency: Histogram<u64>,
    clamped: u64,
    events: Vec<(u64, ConnEvent)>,
    sampled_bytes: u64,
    sampled_ns: u64,
}

impl Meter {
    /// A meter started at `start_ns` (CLOCK_MONOTONIC ns).
    #[must_use]
    pub fn new(start_ns: u64) -> Self {
        #[allow(clippy::expect_used)]
        // Constant, valid bounds (1 ≤ low, high ≥ 2·low, sigfig ≤ 5): creation cannot fail.
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("constant histogram bounds are valid");
        Meter {
            start_ns,
            bytes: 0,
            buckets: Vec::new(),
            last_ns: None,
            longest: None,
            fault_ns: None,
            resume_ns: None,
            latency,
            clamped: 0,
            events: Vec::new(),
            sampled_bytes: 0,
            sampled_ns: start_ns,
        }
    }

    /// `n` bytes received at `now_ns`. A call with `n == 0` is not a receipt (no data, no
    /// effect on stalls).
    pub fn on_bytes(&mut self, now_ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.bytes = self.bytes.saturating_add(n);
        let idx = usize::try_from(now_ns.saturating_sub(self.start_ns) / BUCKET_NS)
            .unwrap_or(usize::MAX)
            .min(MAX_BUCKETS - 1);
        if self.buckets.len() <= idx {
            self.buckets.resize(idx + 1, 0);
        }
        self.buckets[idx] = self.buckets[idx].saturating_add(n);
        if let Some(last) = self.last_ns {
            let gap = now_ns.saturating_sub(last);
            // Strictly longer: the first of equal gaps is reported.
            if self.longest.is_none_or(|(g, _)| gap > g) {
                self.longest = Some((gap, last));
            }
        }
        self.last_ns = Some(self.last_ns.map_or(now_ns, |l| l.max(now_ns)));
        if let Some(fault) = self.fault_ns
            && self.resume_ns.is_none()
            && now_ns >= fault
        {
            self.resume_ns = Some(now_ns);
        }
    }

    /// One request's latency, in ns. Recorded in µs (floored), clamped at 60 s.
    pub fn on_latency(&mut self, ns: u64) {
        let us = ns / 1000;
        if us > MAX_LATENCY_US {
            self.clamped = self.clamped.saturating_add(1);
        }
        self.latency.saturating_record(us.min(MAX_LATENCY_US));
    }

    /// A connection event at `now_ns`.
    pub fn on_event(&mut self, now_ns: u64, kind: ConnEvent) {
        self.events.push((now_ns, kind));
    }

    /// T_fault on this meter's clock. T_resume is the first receipt after this call at or
    /// after `now_ns`; marking again starts a new wait.
    pub fn mark_fault(&mut self, now_ns: u64) {
        self.fault_ns = Some(now_ns);
        self.resume_ns = None;
    }

    /// Bytes received since the previous sample (or the start), for 100 ms telemetry.
    pub fn sample(&mut self, now_ns: u64) -> Sample {
        let s = Sample {
            now_ns,
            interval_ns: now_ns.saturating_sub(self.sampled_ns),
            bytes: self.bytes - self.sampled_bytes,
            total_bytes: self.bytes,
        };
        self.sampled_bytes = self.bytes;
        self.sampled_ns = now_ns;
        s
    }

    /// Bytes received so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The latency histogram (µs), to merge several connections' latencies.
    #[must_use]
    pub fn latency_histogram(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// Everything recorded so far.
    #[must_use]
    pub fn summary(&self) -> MeterSummary {
        let ms = |ns: u64| ns as f64 / 1e6;
        MeterSummary {
            start_ns: self.start_ns,
            end_ns: self.last_ns,
            bytes: self.bytes,
            buckets_10ms: self.buckets.clone(),
            stall_ms: self.longest.map(|(g, _)| ms(g)),
            stall_at_ms: self
                .longest
                .map(|(_, at)| ms(at.saturating_sub(self.start_ns))),
            fault_ns: self.fault_ns,
            resume_ns: self.resume_ns,
            latency_us: LatencySummary::from_histogram(&self.latency, self.clamped),
            events: self.events.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_valid() {
        let mut m = Meter::new(0);
        m.on_latency(0);
        m.on_latency(u64::MAX);
        let l = m.summary().latency_us.unwrap();
        assert_eq!(l.count, 2);
        assert_eq!(l.min, 0);
        assert_eq!(l.clamped, 1);
        assert!(l.max >= MAX_LATENCY_US);
    }
}
