//! Mode craft's splice on real namespaces (issue 16): a client, a proxy and a backend, each in
//! its own namespace. The proxy accepts the client's connection, reads its request, connects
//! to the backend, forwards the request and splices the two connections with the tc BPF data
//! path; real clients (curl) download through it, and every byte is checked against the
//! content generator.
//!
//! Each test builds `hc-<test>-{client,proxy,backend}` (client 10.<n>.0.10 — proxy .1 on
//! the front link; proxy 10.<n>.1.1 — backend .20 on the back link) and removes them, with
//! whatever runs in them, when it ends, pass or fail.

#[path = "support/netns.rs"]
mod netns;

use halab_agent::modes::craft::datapath::{Datapath, DatapathStats, ifindex};
use halab_agent::modes::craft::proxy::{self, ProxyConfig};
use halab_agent::modes::craft::splicer::Exits;
use netns::{must, netns_allowed, remove_namespace, spawn_in_ns, start_workload_server};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

struct Lab {
    names: Vec<String>,
    net: u8,
    children: Vec<Child>,
    proxy: Option<(CancellationToken, std::thread::JoinHandle<DatapathStats>)>,
}

impl Lab {
    fn new(test: &str, net: u8) -> Lab {
        let mut lab = Lab {
            names: Vec::new(),
            net,
            children: Vec::new(),
            proxy: None,
        };
        for h in ["client", "proxy", "backend"] {
            let ns = format!("hc-{test}-{h}");
            remove_namespace(&ns);
            must(&["ip", "netns", "add", &ns]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            lab.names.push(ns);
        }
        lab.link("client", "front", 0, 10, 1);
        lab.link("backend", "back", 1, 20, 1);
        lab
    }

    fn ns(&self, host: &str) -> String {
        let i = ["client", "proxy", "backend"]
            .iter()
            .position(|h| *h == host)
            .expect("a host of the lab");
        self.names[i].clone()
    }

    fn addr(&self, subnet: u8, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, subnet, last)
    }

    /// A veth `dev` from `host` (address .host_last) to the proxy (.proxy_last) on
    /// 10.<net>.<subnet>.0/24.
    fn link(&self, host: &str, dev: &str, subnet: u8, host_last: u8, proxy_last: u8) {
        let (h, p) = (self.ns(host), self.ns("proxy"));
        must(&[
            "ip", "link", "add", dev, "netns", &h, "type", "veth", "peer", "name", dev, "netns", &p,
        ]);
        let cidr = |last: u8| format!("{}/24", self.addr(subnet, last));
        must(&["ip", "-n", &h, "addr", "add", &cidr(host_last), "dev", dev]);
        must(&["ip", "-n", &p, "addr", "add", &cidr(proxy_last), "dev", dev]);
        must(&["ip", "-n", &h, "link", "set", dev, "up"]);
        must(&["ip", "-n", &p, "link", "set", dev, "up"]);
    }

    /// The halab workload server on the backend; waits for its `ready`.
    fn start_backend(&mut self) {
        let child = start_workload_server(&self.ns("backend"), env!("CARGO_BIN_EXE_halab-agent"));
        self.children.push(child);
    }

    /// The proxy with its data path, serving until the lab ends.
    fn start_proxy(&mut self) {
        let cfg = ProxyConfig {
            listen: SocketAddrV4::new(self.addr(0, 1), 8080),
            source: self.addr(1, 1),
            backends: vec![SocketAddrV4::new(self.addr(1, 20), 8080)],
            exits: Exits {
                to_backend: 0,
                to_client: 0,
            },
            source_ports: None,
        };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = spawn_in_ns(&self.ns("proxy"), move || {
            let exits = Exits {
                to_backend: ifindex("back").expect("back"),
                to_client: ifindex("front").expect("front"),
            };
            let cfg = Arc::new(ProxyConfig { exits, ..cfg });
            let dp = Arc::new(Mutex::new(
                Datapath::attach(&["front", "back"]).expect("attach the data path"),
            ));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let listener = proxy::listen(cfg.listen).expect("listen");
                ready_tx.send(()).expect("the test waits");
                proxy::serve(listener, cfg, dp.clone(), None, stop).await;
            });
            dp.lock()
                .expect("no panic holding it")
                .stats()
                .expect("stats")
        });
        ready_rx.recv().expect("the proxy listens");
        self.proxy = Some((cancel, handle));
    }

    /// Stops the proxy; its data path's counters.
    fn stop_proxy(&mut self) -> DatapathStats {
        let (cancel, handle) = self.proxy.take().expect("a proxy runs");
        cancel.cancel();
        handle.join().expect("the proxy's thread")
    }

    /// `curl` in the client's namespace, downloading `size` bytes of `/<name>` through the
    /// proxy into `out`.
    fn curl_get(&self, name: &str, size: u64, out: &std::path::Path) -> Child {
        let url = format!("http://{}:8080/{name}?size={size}", self.addr(0, 1));
        Command::new("ip")
            .args(["netns", "exec", &self.ns("client"), "curl", "-sS", "--fail"])
            .args(["--max-time", "60", "-o"])
            .arg(out)
            .arg(&url)
            .spawn()
            .expect("spawn curl")
    }

    /// `curl -T` in the client's namespace, uploading `file` as `/<name>` through the proxy;
    /// the server's verdict goes to `verdict`.
    /// `wait_continue`: false sends the body at once, without waiting for `100 Continue`
    /// (curl waits for uploads over 1 MB unless told not to), so that the client is sending
    /// while the splice is made.
    fn curl_put(
        &self,
        name: &str,
        file: &std::path::Path,
        verdict: &std::path::Path,
        wait_continue: bool,
    ) -> Child {
        let url = format!("http://{}:8080/{name}", self.addr(0, 1));
        let expect: &[&str] = if wait_continue {
            &[]
        } else {
            &["-H", "Expect:"]
        };
        Command::new("ip")
            .args(["netns", "exec", &self.ns("client"), "curl", "-sS", "--fail"])
            .args(expect)
            .args(["--max-time", "60", "-T"])
            .arg(file)
            .arg("-o")
            .arg(verdict)
            .arg(&url)
            .spawn()
            .expect("spawn curl")
    }

    /// TCP sockets the proxy holds, other than its listener.
    fn proxy_sockets(&self) -> String {
        must(&["ip", "netns", "exec", &self.ns("proxy"), "ss", "-Htn"])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some((cancel, handle)) = self.proxy.take() {
            cancel.cancel();
            let _ = handle.join();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.names {
            remove_namespace(ns);
        }
    }
}

fn check_file(path: &std::path::Path, name: &str, size: u64) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(data.len() as u64, size, "{name}: length");
    let seed = halab_workload::content::name_seed(&format!("/{name}"));
    assert_eq!(
        halab_workload::content::first_mismatch(seed, 0, &data),
        None,
        "{name}: content"
    );
}

#[test]
fn curl_downloads_through_a_splice_byte_exact_and_the_proxy_holds_no_socket() {
    if !netns_allowed("curl_downloads_through_a_splice") {
        return;
    }
    let mut lab = Lab::new("get", 61);
    lab.start_backend();
    lab.start_proxy();
    let dir = tempdir("get");
    let sizes = [1_000u64, 1_000_000, 50_000_000];
    let mut curls = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        for k in 0..4 {
            let name = format!("f{i}-{k}.bin");
            let out = dir.join(&name);
            curls.push((lab.curl_get(&name, *size, &out), name, *size, out));
        }
    }
    for (mut c, name, size, out) in curls {
        let status = c.wait().expect("curl runs");
        assert!(status.success(), "curl {name}: {status}");
        check_file(&out, &name, size);
    }
    let left = lab.proxy_sockets();
    let stats = lab.stop_proxy();
    eprintln!("data path: {stats:?}");
    assert!(
        left.trim().is_empty(),
        "the proxy still holds sockets after the splices:\n{left}"
    );
    assert_eq!(stats.malformed, 0, "{stats:?}");
    // Four 50 MB responses in packets of at most 64 KiB (GSO on veths), most of them carried
    // by the splice.
    assert!(stats.spliced > 4 * 50_000_000 / 65_536, "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Uploads (the thesis's PUTs) go through splices made while the client is still sending: the
/// holds drop its segments until the splice is in, and it sends them again.
#[test]
fn curl_uploads_through_a_splice_verify_at_the_server() {
    if !netns_allowed("curl_uploads_through_a_splice") {
        return;
    }
    let mut lab = Lab::new("put", 62);
    lab.start_backend();
    lab.start_proxy();
    let dir = tempdir("put");
    let mut curls = Vec::new();
    let sizes = [
        10_000u64, 2_000_000, 20_000_000, 20_000_000, 20_000_000, 20_000_000,
    ];
    for (k, size) in sizes.iter().enumerate() {
        let name = format!("up{k}.bin");
        let file = dir.join(&name);
        let mut data = vec![0u8; *size as usize];
        halab_workload::content::fill(
            halab_workload::content::name_seed(&format!("/{name}")),
            0,
            &mut data,
        );
        std::fs::write(&file, &data).expect("write the upload");
        let verdict = dir.join(format!("{name}.verdict"));
        let put = lab.curl_put(&name, &file, &verdict, k % 2 == 0);
        curls.push((put, name, *size, verdict));
    }
    for (mut c, name, size, verdict) in curls {
        let status = c.wait().expect("curl runs");
        assert!(status.success(), "curl -T {name}: {status}");
        let said = std::fs::read_to_string(&verdict).expect("the server's verdict");
        assert_eq!(said, format!("verified {size} bytes\n"), "{name}");
    }
    let left = lab.proxy_sockets();
    let stats = lab.stop_proxy();
    eprintln!("data path: {stats:?}");
    assert!(
        left.trim().is_empty(),
        "the proxy still holds sockets:\n{left}"
    );
    assert_eq!(stats.malformed, 0, "{stats:?}");
    assert!(stats.spliced > 2 * 20_000_000 / 65_536, "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(test: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("halab-craft-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
