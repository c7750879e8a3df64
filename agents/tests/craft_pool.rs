//! Mode craft with a balancer and two proxies on real namespaces (issue 16, must hold 3): the
//! balancer sprays the clients' packets over both proxies in runs of 40, a splice made by one
//! proxy is replicated to the other before it takes effect, the packet redirector sends a
//! connection's packets to the proxy that holds its sockets until then, and a spraying
//! gateway (here the backend's own egress) spreads the return path over both. Real clients
//! (curl) download and upload through the service address; afterwards each proxy's data path
//! shows packets of the same spliced connection.
//!
//! Namespaces `hp-<test>-{sw,client,lb,p1,p2,backend}`: `sw` holds the two bridges (front,
//! mid); every other host has a veth into it. Removed when the test ends, pass or fail.

#[path = "support/craft_lab.rs"]
mod craft_lab;
#[path = "support/netns.rs"]
mod netns;

use craft_lab::{INTERVAL_MS, Lab};
use halab_agent::modes::craft::balancer::Report;
use netns::{must, netns_allowed};

/// Must holds 1 and 3 at the agents' level: 20 curl downloads and 20 `curl -T` uploads at once
/// through the service address and two proxies, every byte checked (uploads by the server,
/// half of them sent without waiting for `100 Continue`, so splices are made while the client
/// sends), and each connection's client packets carried by both proxies.
#[test]
fn every_proxy_carries_packets_of_one_spliced_connection() {
    if !netns_allowed("every_proxy_carries_packets_of_one_spliced_connection") {
        return;
    }
    let mut lab = Lab::new("any", 63, 2);
    lab.start_backend();
    lab.start_proxies();
    lab.start_balancers();
    let dir = std::env::temp_dir().join(format!("halab-craft-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut runs = Vec::new();
    for k in 0..20 {
        let name = format!("g{k}.bin");
        let out = dir.join(&name);
        let c = lab.curl(
            &["-o", out.to_str().expect("utf-8 path")],
            &format!("/{name}?size=10000000"),
        );
        runs.push((c, name, out, None));
    }
    for k in 0..20 {
        let name = format!("u{k}.bin");
        let file = dir.join(&name);
        let mut data = vec![0u8; 10_000_000];
        halab_workload::content::fill(
            halab_workload::content::name_seed(&format!("/{name}")),
            0,
            &mut data,
        );
        std::fs::write(&file, &data).expect("write the upload");
        let verdict = dir.join(format!("{name}.verdict"));
        let mut args = vec![
            "-T",
            file.to_str().expect("utf-8 path"),
            "-o",
            verdict.to_str().expect("utf-8 path"),
        ];
        if k % 2 == 0 {
            args.extend(["-H", "Expect:"]);
        }
        let c = lab.curl(&args, &format!("/{name}"));
        runs.push((c, name, verdict, Some(10_000_000u64)));
    }
    for (mut c, name, out, upload) in runs {
        let status = c.wait().expect("curl runs");
        assert!(status.success(), "curl {name}: {status}");
        match upload {
            Some(size) => assert_eq!(
                std::fs::read_to_string(&out).expect("verdict"),
                format!("verified {size} bytes\n"),
                "{name}"
            ),
            None => {
                let data = std::fs::read(&out).expect("download");
                assert_eq!(data.len(), 10_000_000, "{name}");
                let seed = halab_workload::content::name_seed(&format!("/{name}"));
                assert_eq!(
                    halab_workload::content::first_mismatch(seed, 0, &data),
                    None,
                    "{name}"
                );
            }
        }
    }
    let reports = lab.stop_proxies();
    for (p, r) in lab.proxy_names.iter().zip(&reports) {
        eprintln!("{p}: {:?}, {} flows", r.stats, r.flows.len());
        assert_eq!(r.stats.malformed, 0, "{p}");
        assert!(r.stats.spliced > 0, "{p} carried spliced packets");
    }
    // A client's direction (to the service address) carried by both proxies.
    let both: Vec<_> = reports[0]
        .flows
        .iter()
        .filter(|(f, c)| f.dst.port() == 8080 && *f.dst.ip() == lab.vip() && c.packets > 0)
        .filter_map(|(f, c)| {
            reports[1]
                .flows
                .iter()
                .find(|(g, d)| g == f && d.packets > 0)
                .map(|(_, d)| (f, c.packets, d.packets))
        })
        .collect();
    eprintln!("connections whose client packets crossed both proxies: {both:?}");
    assert!(
        !both.is_empty(),
        "no spliced connection crossed both proxies"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes the backend's mid link has received so far.
fn backend_rx(lab: &Lab) -> u64 {
    must(&[
        "ip",
        "netns",
        "exec",
        &lab.ns("backend"),
        "cat",
        "/sys/class/net/mid/statistics/rx_bytes",
    ])
    .trim()
    .parse()
    .unwrap_or(0)
}

/// Must hold 2 at the agents' level: during 100 concurrent uploads of 5 MB through two proxies
/// (the client's link at 1 Gbit/s), one proxy's NIC goes down. 100 of 100 verify at the server, no client sees an
/// error (a reset would be one), and the balancer drops the proxy within 3 × interval + 50 ms.
#[test]
fn a_proxy_nic_down_during_100_uploads_loses_nothing() {
    if !netns_allowed("a_proxy_nic_down_during_100_uploads_loses_nothing") {
        return;
    }
    const UPLOADS: usize = 100;
    const SIZE: usize = 5_000_000;
    let mut lab = Lab::new("nic", 64, 2);
    lab.start_backend();
    lab.start_proxies();
    lab.start_balancers();
    // At link rate, as the thesis measured: at memory speed half the bytes would arrive while
    // the last clients are still connecting, and a connection still in its first request on
    // the failed proxy dies (its sockets were there).
    lab.limit_client(1_000_000_000);
    let dir = std::env::temp_dir().join(format!("halab-craft-nic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("up.bin");
    let mut data = vec![0u8; SIZE];
    halab_workload::content::fill(halab_workload::content::name_seed("/up.bin"), 0, &mut data);
    std::fs::write(&file, &data).expect("write the upload");
    let rx0 = backend_rx(&lab);
    let mut curls = Vec::new();
    for k in 0..UPLOADS {
        let verdict = dir.join(format!("{k}.verdict"));
        let c = lab.curl(
            &[
                "-H",
                "Expect:",
                "-T",
                file.to_str().expect("utf-8 path"),
                "-o",
                verdict.to_str().expect("utf-8 path"),
            ],
            "/up.bin",
        );
        curls.push((c, verdict));
    }
    // The fault when the backend has about half of all the bytes.
    let half = (UPLOADS * SIZE / 2) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while backend_rx(&lab) - rx0 < half {
        assert!(
            std::time::Instant::now() < deadline,
            "the uploads made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let t_fault = halab_protocol::mono_ns();
    must(&["ip", "-n", &lab.ns("p2"), "link", "set", "front", "down"]);
    let mut failed = Vec::new();
    for (k, (mut c, verdict)) in curls.into_iter().enumerate() {
        let status = c.wait().expect("curl runs");
        let said = std::fs::read_to_string(&verdict).unwrap_or_default();
        if !status.success() || said != format!("verified {SIZE} bytes\n") {
            failed.push(format!("upload {k}: {status}, {said:?}"));
        }
    }
    let reports = lab.reports.lock().expect("reports").clone();
    let down: Vec<_> = reports
        .iter()
        .filter_map(|(h, r)| match r {
            Report::Down {
                proxy,
                at_ns,
                applied_ns,
                ..
            } if proxy == "p2" => Some((
                h.clone(),
                (*at_ns as f64 - t_fault as f64) / 1e6,
                (*applied_ns as f64 - t_fault as f64) / 1e6,
            )),
            _ => None,
        })
        .collect();
    eprintln!("p2 left the pools (host, detect ms, applied ms after T_fault): {down:?}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failed.is_empty(),
        "{} of {UPLOADS} uploads failed: {failed:#?}",
        failed.len()
    );
    let lb = down
        .iter()
        .find(|(h, ..)| h == "lb")
        .expect("the balancer dropped p2");
    let bound = 3.0 * INTERVAL_MS as f64 + 50.0;
    assert!(
        lb.1 <= bound && lb.1 > 0.0,
        "detected {} ms after the fault (bound {bound})",
        lb.1
    );
}

/// Must hold 4 at the agents' level: with a split splice on the backend, its responses go
/// straight to the client: the proxies' links towards the backend receive a small fraction of
/// the response bytes (requests' ACKs and the exchanges before each splice), the backend's
/// data path carries the responses, and every byte arrives.
#[test]
fn split_splice_responses_do_not_cross_a_proxy() {
    if !netns_allowed("split_splice_responses_do_not_cross_a_proxy") {
        return;
    }
    const GETS: u64 = 4;
    const SIZE: u64 = 50_000_000;
    let mut lab = Lab::new("split", 65, 2);
    lab.start_backend();
    lab.start_split_backend();
    lab.start_proxies();
    lab.start_balancers();
    let before: Vec<u64> = lab
        .proxy_names
        .iter()
        .map(|p| lab.rx_bytes(p, "mid"))
        .collect();
    let dir = std::env::temp_dir().join(format!("halab-craft-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut runs = Vec::new();
    for k in 0..GETS {
        let name = format!("s{k}.bin");
        let out = dir.join(&name);
        let c = lab.curl(
            &["-o", out.to_str().expect("utf-8 path")],
            &format!("/{name}?size={SIZE}"),
        );
        runs.push((c, name, out));
    }
    for (mut c, name, out) in runs {
        let status = c.wait().expect("curl runs");
        assert!(status.success(), "curl {name}: {status}");
        let data = std::fs::read(&out).expect("download");
        assert_eq!(data.len() as u64, SIZE, "{name}");
        let seed = halab_workload::content::name_seed(&format!("/{name}"));
        assert_eq!(
            halab_workload::content::first_mismatch(seed, 0, &data),
            None,
            "{name}"
        );
    }
    let through_proxies: u64 = lab
        .proxy_names
        .iter()
        .zip(&before)
        .map(|(p, b)| lab.rx_bytes(p, "mid") - b)
        .sum();
    let backend = lab.stop_split_backend();
    let reports = lab.stop_proxies();
    let carried: u64 = backend.flows.iter().map(|(_, c)| c.bytes).sum();
    eprintln!(
        "split splice: {} response bytes, {through_proxies} received by the proxies from the \
         backends' side, {carried} carried by the backend's data path; backend {:?}; proxies {:?}",
        GETS * SIZE,
        backend.stats,
        reports.iter().map(|r| r.stats).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        through_proxies < GETS * SIZE / 100,
        "{through_proxies} bytes reached the proxies from the backend's side"
    );
    assert!(
        carried >= GETS * SIZE * 9 / 10,
        "the backend's data path carried {carried}"
    );
}

/// Splices end with their connections: once the connections of a run have closed, every
/// proxy's data path forgets their splices (the sweeper, within the linger and a sweep), so a
/// later connection on the same ports is not rewritten into an old one.
#[test]
fn splices_are_removed_when_their_connections_end() {
    if !netns_allowed("splices_are_removed_when_their_connections_end") {
        return;
    }
    let mut lab = Lab::new("gc", 66, 2);
    lab.linger = std::time::Duration::from_millis(300);
    lab.start_backend();
    lab.start_proxies();
    lab.start_balancers();
    let dir = std::env::temp_dir().join(format!("halab-craft-gc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut runs = Vec::new();
    for k in 0..6 {
        let out = dir.join(format!("{k}.bin"));
        let c = lab.curl(
            &["-o", out.to_str().expect("utf-8 path")],
            &format!("/gc{k}.bin?size=5000000"),
        );
        runs.push(c);
    }
    for mut c in runs {
        assert!(c.wait().expect("curl").success());
    }
    let count = |lab: &Lab| -> Vec<usize> {
        lab.datapaths
            .lock()
            .expect("datapaths")
            .iter()
            .map(|dp| {
                dp.lock()
                    .expect("datapath")
                    .splices()
                    .expect("splices")
                    .len()
            })
            .collect()
    };
    let after_run = count(&lab);
    let spliced: Vec<u64> = lab
        .datapaths
        .lock()
        .expect("datapaths")
        .iter()
        .map(|dp| dp.lock().expect("datapath").stats().expect("stats").spliced)
        .collect();
    assert!(
        spliced.iter().all(|n| *n > 0),
        "every proxy carried spliced packets: {spliced:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(&lab).iter().any(|n| *n > 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "splices left: {:?}",
            count(&lab)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("splices after the run {after_run:?}, then none");
    let _ = std::fs::remove_dir_all(&dir);
}

/// After a proxy fails, new connections are spliced by the live ones: the other proxies drop
/// it from their replication and their redirectors (their own checks of each other), so no
/// splice waits for a dead peer and no connection is handed to it. Every connection opened
/// after the failure is spliced (none relayed) and byte-exact.
#[test]
fn after_a_proxy_fails_new_connections_are_spliced_by_the_live_ones() {
    if !netns_allowed("after_a_proxy_fails_new_connections_are_spliced_by_the_live_ones") {
        return;
    }
    let mut lab = Lab::new("after", 67, 3);
    lab.start_backend();
    lab.start_proxies();
    lab.start_balancers();
    must(&["ip", "-n", &lab.ns("p3"), "link", "set", "front", "down"]);
    // Wait until the balancer has dropped p3 (the proxies check each other as often).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let dropped =
            lab.reports.lock().expect("reports").iter().any(|(h, r)| {
                h == "lb" && matches!(r, Report::Down { proxy, .. } if proxy == "p3")
            });
        if dropped {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "p3 never left the pool"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // And until the live proxies' own checks have dropped it from their redirectors.
    loop {
        let lives: Vec<Vec<usize>> = lab
            .datapaths
            .lock()
            .expect("datapaths")
            .iter()
            .map(|dp| dp.lock().expect("datapath").live().expect("live set"))
            .collect();
        // Proxy threads register their data paths in start order: p1, p2, p3.
        if lives[..2].iter().all(|l| l == &[0, 1]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxies' live sets: {lives:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let dir = std::env::temp_dir().join(format!("halab-craft-after-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    for k in 0..12 {
        let name = format!("a{k}.bin");
        let out = dir.join(&name);
        let c = lab.curl(
            &["-o", out.to_str().expect("utf-8 path")],
            &format!("/{name}?size=5000000"),
        );
        runs.push((c, name, out));
    }
    for (mut c, name, out) in runs {
        assert!(c.wait().expect("curl").success(), "{name}");
        let data = std::fs::read(&out).expect("download");
        let seed = halab_workload::content::name_seed(&format!("/{name}"));
        assert_eq!(data.len(), 5_000_000, "{name}");
        assert_eq!(
            halab_workload::content::first_mismatch(seed, 0, &data),
            None,
            "{name}"
        );
    }
    let took = started.elapsed();
    let reports = lab.stop_proxies();
    let live_flows: usize = reports[..2]
        .iter()
        .map(|r| {
            r.flows
                .iter()
                .filter(|(f, _)| *f.dst.ip() == lab.vip())
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "12 downloads after p3 failed in {took:?}; splices of client flows on p1/p2: {live_flows}; {:?}",
        reports.iter().map(|r| r.stats).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        live_flows, 12,
        "every connection spliced and replicated to both live proxies"
    );
    assert!(
        took < std::time::Duration::from_secs(2),
        "no splice waited for the dead proxy: {took:?}"
    );
}
