//! Links with a rate (issue 15): the topology's `rate` caps each direction of a host's link,
//! measured with iperf3 between real namespaces made by the local provider.

mod support;

use halab::provider::local;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Removes the testbed's namespaces (and the iperf3 server) however the test ends.
struct Made {
    name: String,
    server: Option<Child>,
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = local::destroy(&self.name, None);
    }
}

fn topology(name: &str, client_link: &str) -> halab::topology::Topology {
    let text = format!(
        r#"
name = "{name}"
service_address = "10.31.0.100"
[run]
mode = "none"
[[networks]]
name = "service"
subnet = "10.31.0.0/24"
[[hosts]]
name = "primary"
roles = ["primary"]
addresses = {{ service = "10.31.0.1" }}
[[hosts]]
name = "backup"
roles = ["backup"]
addresses = {{ service = "10.31.0.2" }}
[[hosts]]
name = "client"
roles = ["client"]
addresses = {{ service = "10.31.0.10" }}
links = {{ service = {{ {client_link} }} }}
"#
    );
    halab::topology::parse_str(&text, Path::new("links.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// iperf3 from the client to the primary for 3 s (`reverse`: the primary sends); the
/// receiver's Mbit/s.
fn iperf(name: &str, reverse: bool) -> f64 {
    let ns = local::host_ns(name, "client");
    let mut args = vec![
        "netns",
        "exec",
        &ns,
        "iperf3",
        "-c",
        "10.31.0.1",
        "-t",
        "3",
        "-J",
    ];
    if reverse {
        args.push("-R");
    }
    let out = Command::new("ip")
        .args(&args)
        .output()
        .expect("iperf3 client");
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
        / 1e6
}

#[test]
fn a_100mbit_link_carries_90_to_100_mbit_each_way() {
    if !support::netns_available("a_100mbit_link_carries_90_to_100_mbit_each_way") {
        return;
    }
    if Command::new("iperf3").arg("--version").output().is_err() {
        if std::env::var("HALAB_REQUIRE_NETNS").as_deref() == Ok("1") {
            panic!("iperf3 is missing (HALAB_REQUIRE_NETNS=1)");
        }
        eprintln!("SKIPPED: iperf3 is missing");
        return;
    }
    let name = "t-links-rate";
    let _ = local::destroy(name, None);
    let topo = topology(name, r#"rate = "100Mbit""#);
    let mut made = Made {
        name: name.to_string(),
        server: None,
    };
    local::create(&topo).unwrap_or_else(|e| panic!("create: {e}"));
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &local::host_ns(name, "primary"),
            "iperf3",
            "-s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    made.server = Some(server);
    // The server listens once it answers; iperf3 -c retries nothing, so wait for its port.
    let ns = local::host_ns(name, "client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "bash",
            "-c",
            "exec 3<>/dev/tcp/10.31.0.1/5201",
        ])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "iperf3 server never listened"
        );
        std::thread::yield_now();
    }
    let up = iperf(name, false);
    let down = iperf(name, true);
    eprintln!("100Mbit link: client → primary {up:.1} Mbit/s, primary → client {down:.1} Mbit/s");
    for (dir, mbit) in [("client → primary", up), ("primary → client", down)] {
        assert!(
            (90.0..=100.5).contains(&mbit),
            "{dir}: {mbit:.1} Mbit/s through a 100Mbit link"
        );
    }
    drop(made);
    assert!(local::list_namespaces(name).unwrap_or_default().is_empty());
}
