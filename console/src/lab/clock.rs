//! Times across hosts (DESIGN §4, Clocks): every agent reports CLOCK_MONOTONIC readings of its
//! own host. On provider `local` all hosts share one clock; elsewhere each reading is moved
//! onto the console's clock with the offset estimated at hello before two hosts' times are
//! compared.

use crate::state::{HostRecord, TestbedState};
use halab_protocol::ClientResult;

fn host_record<'s>(snapshot: &'s TestbedState, host: &str) -> Option<&'s HostRecord> {
    snapshot.hosts.iter().find(|h| h.name == host)
}

/// An agent's monotonic reading as a console monotonic reading.
pub fn to_console_ns(snapshot: &TestbedState, host: &str, agent_ns: u64) -> u64 {
    let offset = host_record(snapshot, host)
        .and_then(|h| h.clock_offset_ns)
        .unwrap_or(0);
    (agent_ns as i128 - offset as i128).max(0) as u64
}

/// Milliseconds from `from_ns` to `to_ns` (negative when `to_ns` is earlier).
pub fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

/// Rewrites the client's readings onto the console clock.
pub fn shift_result(r: ClientResult, snapshot: &TestbedState, client: &str) -> ClientResult {
    let offset = host_record(snapshot, client)
        .and_then(|h| h.clock_offset_ns)
        .unwrap_or(0);
    shift_result_by(r, offset)
}

/// Rewrites a client's readings onto the console clock, given the client's clock offset.
pub fn shift_result_by(mut r: ClientResult, offset_ns: i64) -> ClientResult {
    let f = |t: u64| (t as i128 - offset_ns as i128).max(0) as u64;
    r.started_ns = f(r.started_ns);
    r.ended_ns = f(r.ended_ns);
    for c in &mut r.connections {
        c.detect_ns = c.detect_ns.map(f);
        c.reconnected_ns = c.reconnected_ns.map(f);
        c.resume_ns = c.resume_ns.map(f);
    }
    r
}
