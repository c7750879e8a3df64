//! craft's splice against the direct path (issue 16, must hold 5), in namespaces: the same
//! hops (client — switch — proxy host — switch — backend), once with the proxy host as a
//! plain router ("direct") and once as 1, 2 and 4 splicing proxies behind the balancer, and
//! once as 1 proxy with a split splice on the backend (responses straight to the client).
//! Prints, at memory speed and with the client's link at 1 Gbit/s: the throughput of one
//! 1 GB download (GET) and one 1 GB upload (PUT, checked by the server), median of 3, and
//! the round-trip time of 2000 small requests on one connection, p50 and p99, with the
//! splice's added latency (spliced − direct).
//!
//! Needs root, curl and clang (for the agent's build). Run with
//! `cargo bench -p halab-agent --bench craft_splice`.

#[path = "../tests/support/craft_lab.rs"]
mod craft_lab;
#[path = "../tests/support/netns.rs"]
mod netns;

use craft_lab::Lab;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::Instant;

const SIZE: u64 = 1_000_000_000;
const REQUESTS: usize = 2000;

fn main() {
    if !netns::netns_allowed("craft_splice bench") {
        return;
    }
    let upload = std::env::temp_dir().join(format!("halab-craft-bench-{}.bin", std::process::id()));
    let mut data = vec![0u8; SIZE as usize];
    halab_workload::content::fill(halab_workload::content::name_seed("/up.bin"), 0, &mut data);
    std::fs::write(&upload, &data).expect("write the upload file");
    drop(data);
    println!(
        "craft splice against the direct path: 1 GB GET and PUT (median of 3), {REQUESTS} small requests"
    );
    println!(
        "{:<12} {:<10} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "link", "path", "GET Mb/s", "PUT Mb/s", "RTT p50", "RTT p99", "added p50/p99"
    );
    for (label, rate) in [("memory", None), ("1 Gbit/s", Some(1_000_000_000u64))] {
        let mut direct_rtt = (0.0, 0.0);
        // (proxies, split splice on the backend); 0 proxies: the direct path.
        for (proxies, split) in [
            (0usize, false),
            (1, false),
            (2, false),
            (4, false),
            (1, true),
        ] {
            let n = proxies.max(1);
            let tag = format!("b{proxies}{}", if split { "s" } else { "" });
            let mut lab = Lab::new(&tag, 70 + proxies as u8 + if split { 10 } else { 0 }, n);
            lab.start_backend();
            if split {
                lab.start_split_backend();
            }
            let server = if proxies == 0 {
                lab.route_through_first_proxy();
                lab.backend_addr()
            } else {
                lab.start_proxies();
                lab.start_balancers();
                lab.vip()
            };
            if let Some(r) = rate {
                lab.limit_client(r);
            }
            let get = median3(|| {
                curl_rate(
                    &lab,
                    server,
                    &["-o", "/dev/null", "-w", "%{speed_download}"],
                    &format!("/down.bin?size={SIZE}"),
                )
            });
            let put = median3(|| {
                curl_rate(
                    &lab,
                    server,
                    &[
                        "-H",
                        "Expect:",
                        "-T",
                        upload.to_str().expect("utf-8"),
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{speed_upload}",
                    ],
                    "/up.bin",
                )
            });
            let rtt = rtts(&lab, server);
            let path = match (proxies, split) {
                (0, _) => "direct".to_string(),
                (n, false) => format!("{n} proxies"),
                (n, true) => format!("{n} + split"),
            };
            let added = if proxies == 0 {
                direct_rtt = rtt;
                String::new()
            } else {
                format!("{:+.3}/{:+.3}", rtt.0 - direct_rtt.0, rtt.1 - direct_rtt.1)
            };
            println!(
                "{label:<12} {path:<10} {:>10.0} {:>10.0} {:>9.3} {:>9.3} {added:>9}",
                get * 8.0 / 1e6,
                put * 8.0 / 1e6,
                rtt.0,
                rtt.1
            );
            drop(lab);
        }
    }
    let _ = std::fs::remove_file(&upload);
}

fn median3(mut f: impl FnMut() -> f64) -> f64 {
    let mut v = [f(), f(), f()];
    v.sort_by(|a, b| a.total_cmp(b));
    v[1]
}

/// Bytes per second curl reports for one transfer.
fn curl_rate(lab: &Lab, server: Ipv4Addr, args: &[&str], path: &str) -> f64 {
    let url = format!("http://{server}:8080{path}");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("client"),
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "120",
        ])
        .args(args)
        .arg(&url)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("curl's rate")
}

/// p50 and p99 round trips (ms) of small GETs on one keep-alive connection, from the client.
fn rtts(lab: &Lab, server: Ipv4Addr) -> (f64, f64) {
    let addr = SocketAddrV4::new(server, 8080);
    let mut v = netns::in_ns(&lab.ns("client"), move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let req = b"GET /rtt.bin?size=100 HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut out = Vec::with_capacity(REQUESTS);
        let mut buf = [0u8; 4096];
        for i in 0..REQUESTS + 1 {
            let t = Instant::now();
            s.write_all(req).expect("request");
            // The head ends with an empty line, then 100 bytes of body.
            let mut got = Vec::new();
            loop {
                let n = s.read(&mut buf).expect("response");
                assert!(n > 0, "closed");
                got.extend_from_slice(&buf[..n]);
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                    && got.len() >= end + 4 + 100
                {
                    break;
                }
            }
            // The first exchange is the proxy's own (before the splice).
            if i > 0 {
                out.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        out
    });
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() * 99 / 100])
}
