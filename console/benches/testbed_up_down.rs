//! Benchmark: bring a 20-host local testbed up (namespaces, bridges, veths, addresses, one
//! connected agent per host) and take it down again, several times; prints the times.
//! Targets (issue 2): up < 5 s, down < 3 s on a 2-core machine.
//!
//! Run as root: `cargo build --release -p halab-agent && cargo bench -p halab --bench testbed_up_down`
//! Environment: HALAB_BENCH_HOSTS (default 20), HALAB_BENCH_ROUNDS (default 5).

mod common;

use halab::testbed::Testbed;
use std::time::Duration;

fn stats(name: &str, v: &mut [Duration], target: Option<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let verdict = match target {
        Some(t) if v[v.len() / 2] < t => format!("  (target < {} ms: met)", ms(t)),
        Some(t) => format!("  (target < {} ms: MISSED)", ms(t)),
        None => String::new(),
    };
    println!(
        "  {name:<22} min {:>8.1} ms   median {:>8.1} ms   max {:>8.1} ms{verdict}",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    );
}

fn main() {
    if !common::root_or_skip("testbed_up_down") {
        return;
    }
    let hosts = common::env_u64("HALAB_BENCH_HOSTS", 20) as usize;
    let rounds = common::env_u64("HALAB_BENCH_ROUNDS", 5).max(1);
    let agent = common::agent_binary("testbed_up_down");
    let name = format!("bench-{}", std::process::id());
    let tmp = tempfile::tempdir().expect("tempdir");
    let (topo, opts) = common::synthetic_testbed(&name, hosts, agent, tmp.path(), true); // as `halab up` does
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "testbed_up_down: {hosts} hosts, {rounds} rounds, {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let (mut up, mut up_provider, mut up_agents, mut down) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let tb = rt
            .block_on(Testbed::up(topo.clone(), &opts))
            .unwrap_or_else(|e| panic!("up: {}", halab::error::chain(&e)));
        let connected = tb
            .snapshot()
            .hosts
            .iter()
            .filter(|h| h.state == halab::state::HostState::Connected)
            .count();
        assert_eq!(connected, hosts, "every agent connected");
        up.push(tb.up_timings.total);
        up_provider.push(tb.up_timings.provider);
        up_agents.push(tb.up_timings.agents);
        let t = rt
            .block_on(tb.down())
            .unwrap_or_else(|e| panic!("down: {}", halab::error::chain(&e)));
        down.push(t.total);
    }
    stats("up (total)", &mut up, Some(Duration::from_secs(5)));
    stats("  namespaces + links", &mut up_provider, None);
    stats("  agents connected", &mut up_agents, None);
    stats("down (total)", &mut down, Some(Duration::from_secs(3)));
    let left = halab::provider::local::list_namespaces(&name).unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
