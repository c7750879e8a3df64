//! Failover figures (DESIGN §7), for the run's record and the dashboard's failover table alike:
//! detection, takeover and failover after T_fault, the longest stall and the integrity, from
//! the client's result; and, for a mode measured by its events (`MeasuredBy::ModeEvents`), from
//! the first `detect` and the last `takeover` event, with T_resume the end of the first 10 ms
//! bucket with bytes at or after T_takeover. Pure functions: times in, figures out.

use halab_protocol::{ClientResult, ConnectionResult};

/// What a run's clients saw of a fault, the worst over its connections.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverFigures {
    /// T_resume − T_fault.
    pub failover_ms: Option<f64>,
    /// T_detect − T_fault.
    pub detect_ms: Option<f64>,
    /// T_takeover − T_fault (the client's reconnection, or the mode's takeover).
    pub takeover_ms: Option<f64>,
    /// The longest gap between received bytes (needs no clock alignment).
    pub stall_ms: Option<f64>,
    /// Every connection's report combined; not ok when a connection gave up.
    pub integrity: halab_workload::IntegrityReport,
}

/// The failover figures of `result` (times on the console clock) for a fault at `fault_ns`
/// (console clock, ns) as the client saw it; without a fault only the stall and the integrity
/// are known.
pub fn failover_figures(result: &ClientResult, fault_ns: Option<f64>) -> FailoverFigures {
    let since_fault = |t: Option<u64>| -> Option<f64> {
        let (t, f) = (t? as f64, fault_ns?);
        Some((t - f) / 1e6)
    };
    let worst = |v: Vec<Option<f64>>| -> Option<f64> { v.into_iter().flatten().reduce(f64::max) };
    let cs = &result.connections;
    let mut integrity = halab_workload::IntegrityReport::combine(cs.iter().map(|c| &c.integrity));
    // A connection that gave up did not get its bytes, whatever its checker saw.
    integrity.integrity_ok &= cs.iter().all(|c| c.error.is_none());
    FailoverFigures {
        failover_ms: worst(cs.iter().map(|c| since_fault(c.resume_ns)).collect()),
        detect_ms: worst(cs.iter().map(|c| since_fault(c.detect_ns)).collect()),
        takeover_ms: worst(cs.iter().map(|c| since_fault(c.reconnected_ns)).collect()),
        stall_ms: worst(cs.iter().map(|c| c.meter.stall_ms).collect()),
        integrity,
    }
}

/// T_resume after a takeover the client did not see, on the clock of `connections`' meters
/// (ns): the end of each connection's first 10 ms bucket with bytes that ends at or after
/// `takeover_ns`, the latest over the connections.
pub fn resume_after(takeover_ns: f64, connections: &[ConnectionResult]) -> Option<f64> {
    connections
        .iter()
        .filter_map(|c| {
            c.meter
                .buckets_10ms
                .iter()
                .enumerate()
                .map(|(k, b)| (c.meter.start_ns as f64 + (k + 1) as f64 * 10e6, *b))
                .find(|(end, b)| *b > 0 && *end >= takeover_ns)
                .map(|(end, _)| end)
        })
        .reduce(f64::max)
}

/// Detection, takeover and failover (ms after T_fault) of a mode measured by its events.
/// `detect_ms` and `takeover_ms` are the events' times, and `fault_ms` T_fault, all in ms after
/// `start_ns` (the console-clock ns the connections' meters are aligned with).
pub fn from_mode_events(
    detect_ms: impl IntoIterator<Item = f64>,
    takeover_ms: impl IntoIterator<Item = f64>,
    fault_ms: f64,
    start_ns: u64,
    connections: &[ConnectionResult],
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let detect = detect_ms.into_iter().reduce(f64::min).map(|t| t - fault_ms);
    let takeover = takeover_ms.into_iter().reduce(f64::max);
    let failover = takeover.and_then(|t| {
        resume_after(start_ns as f64 + t * 1e6, connections)
            .map(|end| (end - start_ns as f64) / 1e6 - fault_ms)
    });
    (detect, takeover.map(|t| t - fault_ms), failover)
}
