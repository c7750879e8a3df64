//! The client's instructions for one run, shared by `halab run` and the dashboard's workload:
//! the workload and its size from the run's settings, the servers from the mode's
//! [`ClientPolicy`](crate::modes::ClientPolicy), the mode's config for the client's own part.

use crate::modes::ServerList;
use crate::topology::{RunSettings, Topology};
use halab_protocol::{ClientSpec, HTTP_PORT, ModeConfig, Role, WORKLOAD_PORT};
use std::time::Duration;

/// The client's own failure detector where it has one (mode none): no byte for this long while
/// one is due.
const IDLE_TIMEOUT_MS: u64 = 1000;
const CONNECT_TIMEOUT_MS: u64 = 1000;
const MAX_ATTEMPTS: u32 = 10;
/// Bulk size when neither topology nor experiment gives one.
pub const DEFAULT_SIZE: u64 = 20_000_000;

/// The client's instructions for one run of `settings` on `topo` under `mode`.
pub fn client_spec(
    topo: &Topology,
    settings: &RunSettings,
    seed: u64,
    run_timeout: Duration,
    mode: ModeConfig,
) -> ClientSpec {
    let service = topo.service_network();
    let mut servers = vec![topo.service_address.to_string()];
    match settings.mode.behaviour().client_policy().servers {
        ServerList::ServiceAddress => {}
        ServerList::ServiceAddressThenBackups => {
            for b in topo.hosts_with(Role::Backup) {
                if let Some(a) = b.addresses.get(&service.name) {
                    servers.push(a.to_string());
                }
            }
        }
    }
    let s = settings;
    ClientSpec {
        workload: s.workload,
        seed,
        size: if s.workload.has_size() {
            s.size.unwrap_or(DEFAULT_SIZE)
        } else {
            0
        },
        connections: s.clients.unwrap_or(1),
        servers,
        workload_port: WORKLOAD_PORT,
        http_port: HTTP_PORT,
        idle_timeout_ms: IDLE_TIMEOUT_MS,
        connect_timeout_ms: CONNECT_TIMEOUT_MS,
        max_attempts: MAX_ATTEMPTS,
        deadline_ms: run_timeout.as_millis() as u64,
        mode,
        progress_marks_ppm: Vec::new(),
    }
}

/// A per-run seed: different for every run, reproducible from the record.
pub fn seed_for(experiment: &str, index: usize, unix_ms: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in experiment
        .bytes()
        .chain(index.to_le_bytes())
        .chain(unix_ms.to_le_bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
