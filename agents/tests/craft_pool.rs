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

use halab_agent::modes::craft::datapath::{
    Datapath, DatapathStats, FlowCounts, ProxyTable, ifindex,
};
use halab_agent::modes::craft::proxy::{self, ProxyConfig, Replication};
use halab_agent::modes::craft::replica::{self, Peers};
use halab_agent::modes::craft::splicer::Exits;
use halab_agent::modes::craft::spray::{Hook, Mac, Sprayer};
use halab_agent::modes::craft::translation::Flow;
use halab_protocol::sealed::Key;
use netns::{must, netns_allowed, remove_namespace, spawn_in_ns};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

const KEY: &str = "000102030405060708090a0b0c0d0e0f";
const PROXIES: [&str; 2] = ["p1", "p2"];

struct Lab {
    test: String,
    net: u8,
    children: Vec<Child>,
    proxies: Vec<(CancellationToken, std::thread::JoinHandle<ProxyReport>)>,
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

    fn nft(&self, host: &str, text: &str) {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write nft");
        assert!(c.wait().expect("nft runs").success(), "nft -f of\n{text}");
    }

    /// The balancer's sprayer over both proxies, and the gateway's (the backend's egress)
    /// towards the shared source address.
    fn spray(&self) {
        let lb = Sprayer {
            table: "halab_craft_lb".into(),
            device: "front".into(),
            hook: Hook::IngressHairpin,
            daddr: self.vip(),
            dport: Some(8080),
            own_mac: self.mac("lb", "front"),
        };
        let fronts: Vec<Mac> = PROXIES.iter().map(|p| self.mac(p, "front")).collect();
        self.nft("lb", &lb.table(&fronts));
        let back = Sprayer {
            table: "halab_craft_return".into(),
            device: "mid".into(),
            hook: Hook::Egress,
            daddr: self.source(),
            dport: None,
            own_mac: self.mac("backend", "mid"),
        };
        let mids: Vec<Mac> = PROXIES.iter().map(|p| self.mac(p, "mid")).collect();
        self.nft("backend", &back.table(&mids));
        // The source address answers no ARP: the gateway's neighbour entry is static, and
        // the sprayer rewrites it per packet.
        let ns = self.ns("backend");
        must(&[
            "ip",
            "-n",
            &ns,
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
                    tokio::join!(
                        replica::serve(splices, key, dp.clone(), exits, stop.clone()),
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
    lab.spray();
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
