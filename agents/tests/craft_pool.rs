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

#[path = "support/netns.rs"]
mod netns;

use halab_agent::modes::craft::balancer::{self, BalancerConfig, Report};
use halab_agent::modes::craft::datapath::{
    Datapath, DatapathStats, FlowCounts, ProxyTable, ifindex,
};
use halab_agent::modes::craft::health::{self, HEALTH_PORT, Target};
use halab_agent::modes::craft::proxy::{self, ProxyConfig, Replication};
use halab_agent::modes::craft::replica::{self, Peers};
use halab_agent::modes::craft::splicer::Exits;
use halab_agent::modes::craft::spray::{Hook, Mac, Sprayer};
use halab_agent::modes::craft::translation::Flow;
use halab_protocol::sealed::Key;
use netns::{must, netns_allowed, remove_namespace, spawn_in_ns};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

const KEY: &str = "000102030405060708090a0b0c0d0e0f";
const PROXIES: [&str; 2] = ["p1", "p2"];
const INTERVAL_MS: u64 = 200;

struct Lab {
    test: String,
    net: u8,
    children: Vec<Child>,
    proxies: Vec<(CancellationToken, std::thread::JoinHandle<ProxyReport>)>,
    balancers: Vec<(CancellationToken, std::thread::JoinHandle<()>)>,
    /// Every balancer's reports, tagged with its host.
    reports: Arc<Mutex<Vec<(String, Report)>>>,
}

/// What a proxy's data path saw, read as it stops.
#[derive(Debug)]
struct ProxyReport {
    stats: DatapathStats,
    flows: Vec<(Flow, FlowCounts)>,
}

impl Lab {
    fn new(test: &str, net: u8) -> Lab {
        let lab = Lab {
            test: test.into(),
            net,
            children: Vec::new(),
            proxies: Vec::new(),
            balancers: Vec::new(),
            reports: Arc::new(Mutex::new(Vec::new())),
        };
        for h in ["sw", "client", "lb", "p1", "p2", "backend"] {
            let ns = lab.ns(h);
            remove_namespace(&ns);
            must(&["ip", "netns", "add", &ns]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let sw = lab.ns("sw");
        for br in ["front", "mid"] {
            must(&["ip", "-n", &sw, "link", "add", br, "type", "bridge"]);
            must(&["ip", "-n", &sw, "link", "set", br, "up"]);
        }
        lab.plug("client", "front", 10);
        lab.plug("lb", "front", 2);
        for (i, p) in PROXIES.iter().enumerate() {
            lab.plug(p, "front", 11 + i as u8);
            lab.plug(p, "mid", 11 + i as u8);
            let ns = lab.ns(p);
            for (addr, _) in [(lab.vip(), "front"), (lab.source(), "mid")] {
                must(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/32"),
                    "dev",
                    "lo",
                ]);
            }
            // The shared addresses sit on lo, unannounced: only the balancer answers ARP for
            // the service address, and the gateway knows the source address statically.
            for (k, v) in [
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
                ("net.ipv4.conf.all.rp_filter", "0"),
            ] {
                must(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    &format!("{k}={v}"),
                ]);
            }
        }
        lab.plug("backend", "mid", 20);
        let lb = lab.ns("lb");
        must(&[
            "ip",
            "-n",
            &lb,
            "addr",
            "add",
            &format!("{}/24", lab.vip()),
            "dev",
            "front",
        ]);
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("hp-{}-{host}", self.test)
    }

    fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 100)
    }

    fn source(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 1, 100)
    }

    fn addr(&self, net: &str, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, if net == "front" { 0 } else { 1 }, last)
    }

    /// A veth from `host` (device `net`, address .last) into bridge `net`.
    fn plug(&self, host: &str, net: &str, last: u8) {
        let (h, sw) = (self.ns(host), self.ns("sw"));
        let port = format!("{host}-{net}");
        must(&[
            "ip", "link", "add", net, "netns", &h, "type", "veth", "peer", "name", &port, "netns",
            &sw,
        ]);
        must(&["ip", "-n", &sw, "link", "set", &port, "master", net]);
        must(&["ip", "-n", &sw, "link", "set", &port, "up"]);
        let cidr = format!("{}/24", self.addr(net, last));
        must(&["ip", "-n", &h, "addr", "add", &cidr, "dev", net]);
        must(&["ip", "-n", &h, "link", "set", net, "up"]);
    }

    fn mac(&self, host: &str, dev: &str) -> Mac {
        let out = must(&[
            "ip",
            "netns",
            "exec",
            &self.ns(host),
            "cat",
            &format!("/sys/class/net/{dev}/address"),
        ]);
        out.trim().parse().expect("a MAC address")
    }

    /// The balancer (on `lb`, spraying the service address over the proxies' front MACs) and
    /// the return path's sprayer (on the backend's egress, standing in for the gateway,
    /// spraying the shared source address over their mid MACs), each with its own health
    /// checks; returns once both have both proxies in their pool.
    fn start_balancers(&mut self) {
        // The source address answers no ARP: the gateway's neighbour entry is static, and its
        // sprayer rewrites it per packet.
        let mids: Vec<Mac> = PROXIES.iter().map(|p| self.mac(p, "mid")).collect();
        must(&[
            "ip",
            "-n",
            &self.ns("backend"),
            "neigh",
            "replace",
            &self.source().to_string(),
            "lladdr",
            &mids[0].to_string(),
            "dev",
            "mid",
            "nud",
            "permanent",
        ]);
        for (host, net, hook, daddr, dport, table) in [
            (
                "lb",
                "front",
                Hook::IngressHairpin,
                self.vip(),
                Some(8080),
                "halab_craft_lb",
            ),
            (
                "backend",
                "mid",
                Hook::Egress,
                self.source(),
                None,
                "halab_craft_return",
            ),
        ] {
            let cfg = BalancerConfig {
                sprayer: Sprayer {
                    table: table.into(),
                    device: net.into(),
                    hook,
                    daddr,
                    dport,
                    own_mac: self.mac(host, net),
                },
                proxies: PROXIES
                    .iter()
                    .enumerate()
                    .map(|(i, p)| balancer::Proxy {
                        target: Target {
                            name: p.to_string(),
                            addr: SocketAddr::V4(SocketAddrV4::new(
                                self.addr(net, 11 + i as u8),
                                HEALTH_PORT,
                            )),
                        },
                        mac: self.mac(p, net),
                    })
                    .collect(),
                interval: std::time::Duration::from_millis(INTERVAL_MS),
                missed: 3,
            };
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            let reports = self.reports.clone();
            let host_name = host.to_string();
            let handle = spawn_in_ns(&self.ns(host), move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let key = Key::from_hex(KEY).expect("key");
                rt.block_on(balancer::run(cfg, key, stop, |r| {
                    reports
                        .lock()
                        .expect("reports")
                        .push((host_name.clone(), r));
                }))
                .expect("the balancer's table");
            });
            self.balancers.push((cancel, handle));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let full = |host: &str| {
                self.reports
                    .lock()
                    .expect("reports")
                    .iter()
                    .rev()
                    .find_map(|(h, r)| match r {
                        Report::Up { live, .. } if h == host => Some(live.len() == PROXIES.len()),
                        Report::Down { .. } if h == host => Some(false),
                        _ => None,
                    })
                    == Some(true)
            };
            if full("lb") && full("backend") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the pools did not fill: {:?}",
                self.reports.lock().expect("reports")
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn start_backend(&mut self) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns("backend")])
            .arg(env!("CARGO_BIN_EXE_halab-agent"))
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the backend's server");
        let out = child.stdout.take().expect("piped stdout");
        self.children.push(child);
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read ready");
        assert!(line.starts_with("ready "), "backend server said {line:?}");
    }

    fn start_proxies(&mut self) {
        let started = self.proxies_started();
        self.proxies.extend(started);
    }

    fn proxies_started(&self) -> Vec<(CancellationToken, std::thread::JoinHandle<ProxyReport>)> {
        let mut out = Vec::new();
        let table = |me: usize| ProxyTable {
            service: SocketAddrV4::new(self.vip(), 8080),
            source: self.source(),
            port_base: 20000,
            port_span: 10000,
            me,
            proxies: PROXIES
                .iter()
                .map(|p| (self.mac(p, "front").0, self.mac(p, "mid").0))
                .collect(),
        };
        let listener =
            |i: usize| SocketAddr::V4(SocketAddrV4::new(self.addr("mid", 11 + i as u8), 7171));
        for (i, p) in PROXIES.iter().enumerate() {
            let cfg = ProxyConfig {
                listen: SocketAddrV4::new(self.vip(), 8080),
                source: self.source(),
                backends: vec![SocketAddrV4::new(self.addr("mid", 20), 8080)],
                exits: Exits {
                    to_backend: 0,
                    to_client: 0,
                },
                source_ports: Some((20000 + 10000 * i as u16, 10000)),
            };
            let table = table(i);
            let me = listener(i);
            let name = p.to_string();
            let others: Vec<SocketAddr> = (0..PROXIES.len())
                .filter(|j| *j != i)
                .map(listener)
                .collect();
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let handle = spawn_in_ns(&self.ns(p), move || {
                let exits = Exits {
                    to_backend: ifindex("mid").expect("mid"),
                    to_client: ifindex("front").expect("front"),
                };
                let cfg = Arc::new(ProxyConfig { exits, ..cfg });
                let mut dp = Datapath::attach(&["front", "mid"]).expect("attach the data path");
                dp.set_proxies(&table).expect("the proxy table");
                let dp = Arc::new(Mutex::new(dp));
                let key = Arc::new(Key::from_hex(KEY).expect("key"));
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let splices = tokio::net::TcpListener::bind(me)
                        .await
                        .expect("splice listener");
                    let listener = proxy::listen(cfg.listen).expect("listen");
                    let rep = Arc::new(Replication {
                        peers: Peers::new(key.clone()),
                        live: Mutex::new(others),
                    });
                    ready_tx.send(()).expect("the test waits");
                    let health_sock = tokio::net::UdpSocket::bind(("0.0.0.0", HEALTH_PORT))
                        .await
                        .expect("health port");
                    let links = vec!["front".to_string(), "mid".to_string()];
                    tokio::join!(
                        replica::serve(splices, key.clone(), dp.clone(), exits, stop.clone()),
                        health::answer(health_sock, (*key).clone(), name, links, stop.clone()),
                        proxy::serve(listener, cfg, dp.clone(), Some(rep), stop),
                    );
                });
                let dp = dp.lock().expect("no panic holding it");
                ProxyReport {
                    stats: dp.stats().expect("stats"),
                    flows: dp.flows().expect("flows"),
                }
            });
            ready_rx.recv().expect("the proxy listens");
            out.push((cancel, handle));
        }
        out
    }

    fn stop_proxies(&mut self) -> Vec<ProxyReport> {
        let all: Vec<_> = self.proxies.drain(..).collect();
        for (c, _) in &all {
            c.cancel();
        }
        all.into_iter()
            .map(|(_, h)| h.join().expect("a proxy's thread"))
            .collect()
    }

    fn curl(&self, args: &[&str], url_path: &str) -> Child {
        let url = format!("http://{}:8080{url_path}", self.vip());
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("client"),
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "60",
            ])
            .args(args)
            .arg(&url)
            .spawn()
            .expect("spawn curl")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (c, h) in self.balancers.drain(..) {
            c.cancel();
            let _ = h.join();
        }
        for (c, _) in &self.proxies {
            c.cancel();
        }
        for (_, h) in self.proxies.drain(..) {
            let _ = h.join();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in ["client", "lb", "p1", "p2", "backend", "sw"] {
            remove_namespace(&self.ns(h));
        }
    }
}

#[test]
fn every_proxy_carries_packets_of_one_spliced_connection() {
    if !netns_allowed("every_proxy_carries_packets_of_one_spliced_connection") {
        return;
    }
    let mut lab = Lab::new("any", 63);
    lab.start_backend();
    lab.start_proxies();
    lab.start_balancers();
    let dir = std::env::temp_dir().join(format!("halab-craft-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut runs = Vec::new();
    for k in 0..4 {
        let name = format!("g{k}.bin");
        let out = dir.join(&name);
        let c = lab.curl(
            &["-o", out.to_str().expect("utf-8 path")],
            &format!("/{name}?size=30000000"),
        );
        runs.push((c, name, out, None));
    }
    for k in 0..4 {
        let name = format!("u{k}.bin");
        let file = dir.join(&name);
        let mut data = vec![0u8; 20_000_000];
        halab_workload::content::fill(
            halab_workload::content::name_seed(&format!("/{name}")),
            0,
            &mut data,
        );
        std::fs::write(&file, &data).expect("write the upload");
        let verdict = dir.join(format!("{name}.verdict"));
        let c = lab.curl(
            &[
                "-H",
                "Expect:",
                "-T",
                file.to_str().expect("utf-8 path"),
                "-o",
                verdict.to_str().expect("utf-8 path"),
            ],
            &format!("/{name}"),
        );
        runs.push((c, name, verdict, Some(20_000_000u64)));
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
                assert_eq!(data.len(), 30_000_000, "{name}");
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
    for (p, r) in PROXIES.iter().zip(&reports) {
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

/// Must hold 2 at the agents' level: during 100 concurrent uploads of 10 MB through two
/// proxies, one proxy's NIC goes down. 100 of 100 verify at the server, no client sees an
/// error (a reset would be one), and the balancer drops the proxy within 3 × interval + 50 ms.
#[test]
fn a_proxy_nic_down_during_100_uploads_loses_nothing() {
    if !netns_allowed("a_proxy_nic_down_during_100_uploads_loses_nothing") {
        return;
    }
    const UPLOADS: usize = 100;
    const SIZE: usize = 10_000_000;
    let mut lab = Lab::new("nic", 64);
    lab.start_backend();
    lab.start_proxies();
    lab.start_balancers();
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
