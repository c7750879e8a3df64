//! A craft lab in namespaces, shared by the craft tests and the craft benchmark: a switch
//! namespace with two bridges (front: client, balancer, proxies; mid: proxies, backend), the
//! backend's workload server, proxies with their data paths, replication and health answers,
//! and two sprayers with their own health checks (the balancer's and, on the backend's egress,
//! the return path's). Everything is removed on drop, pass or fail.
#![allow(dead_code)] // each including target uses a subset

use super::netns::{must, remove_namespace, spawn_in_ns, start_workload_server};
use halab_agent::modes::craft::balancer::{self, BalancerConfig, Report};
use halab_agent::modes::craft::datapath::{
    Datapath, DatapathStats, FlowCounts, ProxyTable, ifindex,
};
use halab_agent::modes::craft::health::{self, HEALTH_PORT, Target};
use halab_agent::modes::craft::peers::{self, Peer};
use halab_agent::modes::craft::proxy::{self, ProxyConfig, Replication};
use halab_agent::modes::craft::replica::{self, Peers};
use halab_agent::modes::craft::splicer::Exits;
use halab_agent::modes::craft::spray::{Hook, Mac, Sprayer};
use halab_agent::modes::craft::translation::Flow;
use halab_agent::modes::craft::{ended, sweeper};
use halab_protocol::sealed::Key;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

pub const KEY: &str = "000102030405060708090a0b0c0d0e0f";
pub const INTERVAL_MS: u64 = 200;

pub struct Lab {
    test: String,
    net: u8,
    /// The proxies' host names, `p1`…`pN`.
    pub proxy_names: Vec<String>,
    children: Vec<Child>,
    proxies: Vec<(CancellationToken, std::thread::JoinHandle<ProxyReport>)>,
    balancers: Vec<(CancellationToken, std::thread::JoinHandle<()>)>,
    /// Every balancer's reports, tagged with its host.
    pub reports: Arc<Mutex<Vec<(String, Report)>>>,
    /// Splice listeners beyond the proxies' that every splice is replicated to (a backend
    /// with a split splice).
    extra_peers: Vec<SocketAddr>,
    split: Option<(CancellationToken, std::thread::JoinHandle<ProxyReport>)>,
    /// How long the proxies' sweepers keep an ended connection's splice.
    pub linger: std::time::Duration,
    /// The proxies' data paths, while they run.
    pub datapaths: Arc<Mutex<Vec<Arc<Mutex<Datapath>>>>>,
}

/// What a proxy's data path saw, read as it stops.
#[derive(Debug)]
pub struct ProxyReport {
    pub stats: DatapathStats,
    pub flows: Vec<(Flow, FlowCounts)>,
}

impl Lab {
    /// The namespaces and links of a lab with `proxies` proxies (at most 8).
    pub fn new(test: &str, net: u8, proxies: usize) -> Lab {
        let lab = Lab {
            test: test.into(),
            net,
            proxy_names: (1..=proxies).map(|i| format!("p{i}")).collect(),
            children: Vec::new(),
            proxies: Vec::new(),
            balancers: Vec::new(),
            reports: Arc::new(Mutex::new(Vec::new())),
            extra_peers: Vec::new(),
            split: None,
            linger: ended::LINGER,
            datapaths: Arc::new(Mutex::new(Vec::new())),
        };
        for h in lab.hosts() {
            let ns = lab.ns(&h);
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
        for (i, p) in lab.proxy_names.iter().enumerate() {
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

    /// Every host of the lab, the switch first.
    fn hosts(&self) -> Vec<String> {
        let mut h: Vec<String> = ["sw", "client", "lb", "backend"].map(String::from).to_vec();
        h.extend(self.proxy_names.iter().cloned());
        h
    }

    pub fn ns(&self, host: &str) -> String {
        format!("hp-{}-{host}", self.test)
    }

    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 100)
    }

    pub fn source(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 1, 100)
    }

    pub fn addr(&self, net: &str, last: u8) -> Ipv4Addr {
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

    pub fn mac(&self, host: &str, dev: &str) -> Mac {
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
    pub fn start_balancers(&mut self) {
        // The source address answers no ARP: the gateway's neighbour entry is static, and its
        // sprayer rewrites it per packet.
        let mids: Vec<Mac> = self
            .proxy_names
            .iter()
            .map(|p| self.mac(p, "mid"))
            .collect();
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
                proxies: self
                    .proxy_names
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
                        Report::Up { live, .. } if h == host => {
                            Some(live.len() == self.proxy_names.len())
                        }
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

    pub fn start_backend(&mut self) {
        let child = start_workload_server(&self.ns("backend"), env!("CARGO_BIN_EXE_halab-agent"));
        self.children.push(child);
    }

    pub fn start_proxies(&mut self) {
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
            proxies: self
                .proxy_names
                .iter()
                .map(|p| (self.mac(p, "front").0, self.mac(p, "mid").0))
                .collect(),
        };
        let listener =
            |i: usize| SocketAddr::V4(SocketAddrV4::new(self.addr("mid", 11 + i as u8), 7171));
        for (i, p) in self.proxy_names.iter().enumerate() {
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
            let datapaths = self.datapaths.clone();
            let linger = self.linger;
            let mut others: Vec<SocketAddr> = (0..self.proxy_names.len())
                .filter(|j| *j != i)
                .map(listener)
                .collect();
            let always = self.extra_peers.clone();
            others.extend(always.iter().copied());
            let peer_list: Vec<Peer> = (0..self.proxy_names.len())
                .filter(|j| *j != i)
                .map(|j| Peer {
                    index: j,
                    health: Target {
                        name: self.proxy_names[j].clone(),
                        addr: SocketAddr::V4(SocketAddrV4::new(
                            self.addr("mid", 11 + j as u8),
                            HEALTH_PORT,
                        )),
                    },
                    splices: listener(j),
                })
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
                datapaths.lock().expect("datapaths").push(dp.clone());
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
                        sweeper::sweep(
                            dp.clone(),
                            Some(rep.clone()),
                            linger,
                            ended::IDLE_LIMIT,
                            stop.clone()
                        ),
                        peers::watch(
                            i,
                            peer_list,
                            always,
                            dp.clone(),
                            rep.clone(),
                            (*key).clone(),
                            std::time::Duration::from_millis(INTERVAL_MS),
                            3,
                            stop.clone()
                        ),
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

    pub fn stop_proxies(&mut self) -> Vec<ProxyReport> {
        let all: Vec<_> = self.proxies.drain(..).collect();
        for (c, _) in &all {
            c.cancel();
        }
        all.into_iter()
            .map(|(_, h)| h.join().expect("a proxy's thread"))
            .collect()
    }

    pub fn curl(&self, args: &[&str], url_path: &str) -> Child {
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

impl Lab {
    /// Split splice on the backend (thesis §4.7.3): the backend joins the front network too,
    /// its data path takes its own responses on its egress and sends them rewritten straight
    /// to the client, and every splice is replicated to it. Before `start_proxies`.
    pub fn start_split_backend(&mut self) {
        self.plug("backend", "front", 20);
        let me = SocketAddr::V4(SocketAddrV4::new(self.addr("mid", 20), 7171));
        self.extra_peers.push(me);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = spawn_in_ns(&self.ns("backend"), move || {
            let exits = Exits {
                to_backend: ifindex("mid").expect("mid"),
                to_client: ifindex("front").expect("front"),
            };
            let dp = Datapath::attach_at(&[], &["mid"]).expect("attach the data path");
            let dp = Arc::new(Mutex::new(dp));
            let key = Arc::new(Key::from_hex(KEY).expect("key"));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let splices = tokio::net::TcpListener::bind(me)
                    .await
                    .expect("splice listener");
                ready_tx.send(()).expect("the test waits");
                replica::serve(splices, key, dp.clone(), exits, stop).await;
            });
            let dp = dp.lock().expect("no panic holding it");
            ProxyReport {
                stats: dp.stats().expect("stats"),
                flows: dp.flows().expect("flows"),
            }
        });
        ready_rx.recv().expect("the backend's splice listener");
        self.split = Some((cancel, handle));
    }

    /// Stops the backend's split splice; what its data path carried.
    pub fn stop_split_backend(&mut self) -> ProxyReport {
        let (c, h) = self.split.take().expect("a split splice runs");
        c.cancel();
        h.join().expect("the backend's thread")
    }

    /// Bytes `host`'s interface `dev` has received.
    pub fn rx_bytes(&self, host: &str, dev: &str) -> u64 {
        must(&[
            "ip",
            "netns",
            "exec",
            &self.ns(host),
            "cat",
            &format!("/sys/class/net/{dev}/statistics/rx_bytes"),
        ])
        .trim()
        .parse()
        .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some((c, h)) = self.split.take() {
            c.cancel();
            let _ = h.join();
        }
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
        for h in self.hosts() {
            remove_namespace(&self.ns(&h));
        }
    }
}

impl Lab {
    /// Makes proxy `p1` a plain router between the front and mid networks (no splice, no
    /// BPF): the client reaches the backend's own address through it. The direct path the
    /// benchmark compares against: the same hops, the kernel's forwarding instead of a splice.
    pub fn route_through_first_proxy(&self) {
        let p1 = self.ns(&self.proxy_names[0]);
        must(&[
            "ip",
            "netns",
            "exec",
            &p1,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let mid = format!("10.{}.1.0/24", self.net);
        let front = format!("10.{}.0.0/24", self.net);
        must(&[
            "ip",
            "-n",
            &self.ns("client"),
            "route",
            "replace",
            &mid,
            "via",
            &self.addr("front", 11).to_string(),
        ]);
        must(&[
            "ip",
            "-n",
            &self.ns("backend"),
            "route",
            "replace",
            &front,
            "via",
            &self.addr("mid", 11).to_string(),
        ]);
    }

    /// The backend's own address (for the direct path).
    pub fn backend_addr(&self) -> Ipv4Addr {
        self.addr("mid", 20)
    }

    /// Limits the client's link to `bits_per_s` both ways (tbf on the client's end and on the
    /// switch's port towards it).
    pub fn limit_client(&self, bits_per_s: u64) {
        let rate = format!("{bits_per_s}bit");
        // A bucket of 1 ms at the rate, at least 64 KiB (GSO packets), and 5 ms of queue.
        let burst = (bits_per_s / 8 / 1000).max(65_536).to_string();
        for (ns, dev) in [
            (self.ns("client"), "front".to_string()),
            (self.ns("sw"), "client-front".to_string()),
        ] {
            must(&[
                "ip", "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", &dev, "root", "tbf",
                "rate", &rate, "burst", &burst, "latency", "5ms",
            ]);
        }
    }
}
