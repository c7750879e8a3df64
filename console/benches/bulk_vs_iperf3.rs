//! Benchmark: is the measuring stick the bottleneck? Bulk throughput of halab's own workload
//! (server generating content, client checking every byte) against iperf3 (Debian package) on
//! the same testbed path, client host → bridge → primary host, one TCP stream each.
//! Target (issue 3): halab / iperf3 ≥ 0.8.
//!
//! Run as root: `cargo build --release -p halab-agent && cargo bench -p halab --bench bulk_vs_iperf3`
//! Environment: HALAB_BENCH_SECONDS (iperf3 duration, default 5), HALAB_BENCH_BYTES (halab bulk
//! size, default 4 GB), HALAB_BENCH_ROUNDS (default 3).

mod common;

use common::env_u64;
use halab::testbed::Testbed;
use halab_protocol::{AgentMsg, ClientSpec, ConsoleMsg, HTTP_PORT, WORKLOAD_PORT, Workload};
use std::process::Command;
use std::time::Duration;

/// One iperf3 run from `client_ns` to `server_addr` in `server_ns`; bits per second received.
fn iperf3(server_ns: &str, client_ns: &str, server_addr: &str, seconds: u64) -> f64 {
    let mut server = Command::new("ip")
        .args([
            "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", "5201",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 -s (apt-get install iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            client_ns,
            "iperf3",
            "-c",
            server_addr,
            "-p",
            "5201",
            "-J",
            "-t",
        ])
        .arg(seconds.to_string())
        .output()
        .expect("iperf3 -c");
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("iperf3 end.sum_received.bits_per_second")
}

fn main() {
    if !common::root_or_skip("bulk_vs_iperf3") {
        return;
    }
    if Command::new("iperf3").arg("--version").output().is_err() {
        eprintln!("bulk_vs_iperf3: iperf3 not found (apt-get install iperf3)");
        std::process::exit(1);
    }
    let seconds = env_u64("HALAB_BENCH_SECONDS", 5);
    let bytes = env_u64("HALAB_BENCH_BYTES", 4_000_000_000);
    let rounds = env_u64("HALAB_BENCH_ROUNDS", 3).max(1);
    let agent = common::agent_binary("bulk_vs_iperf3");
    let name = format!("bench-iperf-{}", std::process::id());
    let tmp = tempfile::tempdir().expect("tempdir");
    let (topo, opts) = common::synthetic_testbed(&name, 3, agent, tmp.path(), false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut tb = rt
        .block_on(Testbed::up(topo, &opts))
        .unwrap_or_else(|e| panic!("up: {}", halab::error::chain(&e)));
    let server_ns = halab::provider::local::host_ns(&name, "h1");
    let client_ns = halab::provider::local::host_ns(&name, "h3");
    let server_addr = "10.77.0.1";

    let mut inbox = tb.take_inbox().expect("inbox");
    rt.block_on(tb.start_roles()).expect("start roles");
    println!(
        "bulk_vs_iperf3: path {client_ns} → bridge → {server_ns}, one TCP stream, {rounds} rounds"
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let iperf_bps = iperf3(&server_ns, &client_ns, server_addr, seconds);
        let spec = ClientSpec {
            workload: Workload::Bulk,
            seed: round,
            size: bytes,
            connections: 1,
            servers: vec![server_addr.into()],
            workload_port: WORKLOAD_PORT,
            http_port: HTTP_PORT,
            idle_timeout_ms: 5000,
            connect_timeout_ms: 2000,
            max_attempts: 3,
            deadline_ms: 600_000,
            mode: Default::default(),
            progress_marks_ppm: Vec::new(),
        };
        let result = rt.block_on(async {
            // The server roles report running before the first run; skip those messages.
            tb.send("h3", ConsoleMsg::StartClient { run: round, spec })
                .await
                .expect("start client");
            loop {
                match inbox.recv().await {
                    Some((_, AgentMsg::ClientDone { run, result })) if run == round => {
                        break *result;
                    }
                    Some(_) => {}
                    None => panic!("agents gone"),
                }
            }
        });
        let c = &result.connections[0];
        assert!(
            c.integrity.integrity_ok,
            "halab bulk not exact: {:?} {:?}",
            c.integrity, c.error
        );
        let secs = (result.ended_ns - result.started_ns) as f64 / 1e9;
        let halab_bps = c.integrity.bytes_received as f64 * 8.0 / secs;
        let ratio = halab_bps / iperf_bps;
        ratios.push(ratio);
        println!(
            "  round {round}: iperf3 {:>6.2} Gbit/s   halab bulk {:>6.2} Gbit/s ({:.1} GB in {secs:.2} s, every byte checked)   ratio {ratio:.2}",
            iperf_bps / 1e9,
            halab_bps / 1e9,
            c.integrity.bytes_received as f64 / 1e9
        );
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    let median = ratios[ratios.len() / 2];
    println!(
        "  median ratio halab/iperf3 = {median:.2} (target ≥ 0.80: {})",
        if median >= 0.8 { "met" } else { "MISSED" }
    );
    rt.block_on(tb.down())
        .unwrap_or_else(|e| panic!("down: {}", halab::error::chain(&e)));
}
