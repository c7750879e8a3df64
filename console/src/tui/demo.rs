//! Dashboard states built from data alone, no testbed: host records of a topology and client
//! results as an agent would report them. The snapshot tests and the render benchmark use
//! these, so what they draw is deterministic.

use crate::state::{HostRecord, HostState};
use crate::topology::Topology;
use halab_protocol::{ClientResult, ConnectionResult};
use halab_workload::{ConnEvent, IntegrityReport, MeterSummary};

/// Every host of `topo`, connected, as the orchestrator reports it after `up`.
pub fn host_records(topo: &Topology) -> Vec<HostRecord> {
    topo.hosts
        .iter()
        .map(|h| HostRecord {
            name: h.name.clone(),
            roles: h.roles.clone(),
            holds_service_address: h.roles.contains(&halab_protocol::Role::Primary),
            addresses: h.addresses.clone(),
            location: format!("hl.{}.{}", topo.name, h.name),
            state: HostState::Connected,
            reason: None,
            agent_pid: Some(1000),
            agent_version: Some(halab_protocol::HALAB_VERSION.into()),
            kernel: None,
            capabilities: None,
            rtt_us: Some(150),
            last_seen_unix_ms: None,
            clock_offset_ns: Some(0),
            clock_uncertainty_ns: Some(0),
        })
        .collect()
}

/// A one-connection bulk result of `size` bytes from `start_ns` to `end_ns`. With
/// `failover = Some((detect, reconnect, resume))` the connection failed over at those times,
/// re-fetching the bytes it had, and the longest gap was `resume − last byte before`.
pub fn bulk_result(
    seed: u64,
    size: u64,
    start_ns: u64,
    end_ns: u64,
    failover: Option<(u64, u64, u64)>,
    stall_ms: f64,
) -> ClientResult {
    let refetched = if failover.is_some() { size / 2 } else { 0 };
    let integrity = IntegrityReport {
        bytes_expected: size,
        bytes_received: size + refetched,
        bytes_refetched: refetched,
        integrity_ok: true,
        ..IntegrityReport::default()
    };
    let mut events = vec![(start_ns, ConnEvent::Connected)];
    if let Some((d, r, _)) = failover {
        events.push((d, ConnEvent::TimedOut));
        events.push((
            r,
            ConnEvent::Reconnect {
                to: "10.10.0.2".into(),
            },
        ));
    }
    ClientResult {
        started_ns: start_ns,
        ended_ns: end_ns,
        connections: vec![ConnectionResult {
            index: 0,
            seed,
            meter: MeterSummary {
                start_ns,
                end_ns: Some(end_ns),
                bytes: size + refetched,
                buckets_10ms: Vec::new(),
                stall_ms: Some(stall_ms),
                stall_at_ms: None,
                fault_ns: None,
                resume_ns: failover.map(|f| f.2),
                latency_us: None,
                events,
            },
            integrity,
            detect_ns: failover.map(|f| f.0),
            detect_reason: failover.map(|_| "no data for 1000 ms".into()),
            reconnected_ns: failover.map(|f| f.1),
            resume_ns: failover.map(|f| f.2),
            attempts: if failover.is_some() { 2 } else { 1 },
            servers_used: Vec::new(),
            error: None,
        }],
    }
}
