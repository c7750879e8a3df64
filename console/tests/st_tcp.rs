//! Mode st-tcp end to end (issue 6): a tapping backup takes over live TCP connections of
//! unmodified kernel-TCP clients (curl, the built-in clients) when the primary fails, on the
//! same connection, byte-exact.
//!
//! Library-level tests drive a testbed of their own ([`Lab`]): they dispatch the backup's
//! mode events to the console's st-tcp module (fencing) as the runner does. The `halab run`
//! tests go through the real binary and its runner.
//!
//! Each test uses its own renamed copy of `topologies/two-server.toml`, so they can run in
//! parallel; the takeover tests take turns (one lock) as several 100 MB transfers at once on a
//! two-CPU machine would measure the scheduler.

mod support;

use halab::provider::local;
use halab::state::{HostRecord, HostState};
use halab::testbed::{Testbed, UpOptions};
use halab::tui::action::{Command as UiCommand, FaultKey, Level, Update};
use halab::tui::app::App;
use halab::tui::components::failover::RowState;
use halab::tui::orchestrator::Orchestrator;
use halab_protocol::{AgentMsg, ClientResult, LogLevel, ModeEvent, Role, RoleState};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{halab_bin, netns_available};
use tokio::sync::mpsc;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn topology_text(name: &str, heartbeat_ms: u64) -> String {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/two-server.toml");
    let text = std::fs::read_to_string(shipped).unwrap();
    let text = text
        .replace("name = \"two-server\"", &format!("name = \"{name}\""))
        .replace(
            "heartbeat_ms = 200",
            &format!("heartbeat_ms = {heartbeat_ms}"),
        );
    assert!(text.contains(name));
    text
}

/// A testbed of its own under st-tcp, roles running; taken down on drop.
struct Lab {
    name: String,
    rt: tokio::runtime::Runtime,
    tb: Option<Testbed>,
    inbox: mpsc::UnboundedReceiver<(String, AgentMsg)>,
    /// Mode events seen: (host, kind, detail, error of acting on it).
    events: Vec<(String, String, String, Option<String>)>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn up(name: &str) -> Lab {
        Lab::up_with(name, |_| {})
    }

    /// [`Lab::up`] with the st-tcp configuration changed by `tweak`.
    fn up_with(
        name: &str,
        tweak: impl FnOnce(&mut halab_protocol::modes::st_tcp::StTcpConfig),
    ) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let topo = halab::topology::parse_str(
            &topology_text(name, 200),
            &dir.path().join("topology.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let opts = UpOptions {
            agent_binary: support::agent_bin(),
            state_dir: dir.path().join("state"),
            run_id: name.to_string(),
            log_dir: dir.path().join("logs"),
            probe: false,
            ssh: None,
        };
        let _ = local::destroy(name, None);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut tb = rt
            .block_on(Testbed::up(topo, &opts))
            .unwrap_or_else(|e| panic!("up {name}: {}", halab::error::chain(&e)));
        // Under the testbed's own key, as `halab up` and the runner do: st-tcp seals its
        // heartbeats and fence requests with it, and the console checks fence requests with it.
        let mut mode = match halab::modes::config_for(&tb.topology, &tb.topology.run, tb.mode_key())
        {
            Ok(m) => m,
            Err(e) => {
                let _ = rt.block_on(tb.down());
                let _ = local::destroy(name, None);
                panic!("st-tcp config: {e}");
            }
        };
        if let halab_protocol::ModeConfig::StTcp(c) = &mut mode {
            tweak(c);
        }
        tb.set_mode(mode);
        let inbox = tb.take_inbox().expect("inbox");
        let mut lab = Lab {
            name: name.to_string(),
            rt,
            tb: Some(tb),
            inbox,
            events: Vec::new(),
            dir,
        };
        lab.rt
            .block_on(lab.tb.as_ref().unwrap().start_roles())
            .expect("start roles");
        let mut running = 0;
        let deadline = Instant::now() + Duration::from_secs(15);
        lab.pump(deadline, |_, m| {
            if let AgentMsg::RoleState {
                role: Role::Primary | Role::Backup | Role::Logger,
                state,
                detail,
                ..
            } = m
            {
                assert_eq!(*state, RoleState::Running, "{detail:?}");
                running += 1;
            }
            running == 3
        });
        lab
    }

    fn ns(&self, host: &str) -> String {
        local::host_ns(&self.name, host)
    }

    /// Takes agent messages until `f` says stop or `deadline` passes (false then); mode
    /// events are acted on as the runner does.
    fn pump(&mut self, deadline: Instant, mut f: impl FnMut(&str, &AgentMsg) -> bool) -> bool {
        let Lab {
            rt,
            tb,
            inbox,
            events,
            ..
        } = self;
        let tb = tb.as_mut().expect("testbed up");
        rt.block_on(async {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, inbox.recv()).await {
                    Err(_) | Ok(None) => return false,
                    Ok(Some((host, msg))) => {
                        match &msg {
                            AgentMsg::Mode { event } => {
                                let mut handle = halab::lab::handle::Lab::new(tb, inbox);
                                let s = halab::lab::mode_events::handle(&mut handle, &host, event)
                                    .await;
                                let err = s.error;
                                eprintln!("  [{host}] {}: {} {err:?}", s.kind, s.detail);
                                events.push((host.clone(), s.kind.to_string(), s.detail, err));
                                let ModeEvent::StTcp(_) = event else { continue };
                            }
                            AgentMsg::Log {
                                level: LogLevel::Error | LogLevel::Warn,
                                message,
                                ..
                            } => eprintln!("  [{host}] {message}"),
                            _ => {}
                        }
                        if f(&host, &msg) {
                            return true;
                        }
                    }
                }
            }
        })
    }

    /// Pumps for `d` whatever comes.
    fn idle(&mut self, d: Duration) {
        self.pump(Instant::now() + d, |_, _| false);
    }

    fn power_off(&mut self, host: &str) -> u64 {
        let tb = self.tb.as_ref().unwrap();
        self.rt.block_on(tb.power_off(host)).expect("power off")
    }

    fn kinds(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.1.as_str()).collect()
    }

    /// The takeover went through: detect, fence, every connection taken over without error.
    fn assert_taken_over(&self, connections: usize) {
        let k = self.kinds();
        assert!(k.contains(&"detect"), "no detect: {:?}", self.events);
        assert!(k.contains(&"fence"), "no fence: {:?}", self.events);
        let takeovers: Vec<_> = self.events.iter().filter(|e| e.1 == "takeover").collect();
        assert_eq!(takeovers.len(), connections, "{:?}", self.events);
        for t in &takeovers {
            assert!(!t.2.contains("failed"), "{t:?}");
        }
        assert!(
            self.events.iter().all(|e| e.3.is_none()),
            "{:?}",
            self.events
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(tb) = self.tb.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), tb.down()).await });
        }
        let _ = local::destroy(&self.name, None);
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn assert_content(path: &Path, url_path: &str, size: u64) {
    let got = std::fs::read(path).unwrap();
    assert_eq!(got.len() as u64, size, "length of curl's file");
    let mut want = vec![0u8; size as usize];
    halab_workload::content::fill(halab_workload::content::name_seed(url_path), 0, &mut want);
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("curl's file differs from the generator's bytes first at offset {i}");
    }
}

/// Must hold 1: curl downloading 100 MB from the VIP survives a power-off of the primary at
/// 40 %, byte-exact, on the same connection; afterwards a new curl is served by the backup.
#[test]
fn curl_survives_power_off_of_the_primary_byte_exact() {
    if !netns_available("curl_survives_power_off_of_the_primary_byte_exact") {
        return;
    }
    let _s = serial();
    let mut lab = Lab::up("t-st-curl");
    let size = 100_000_000u64;
    let out = lab.dir.path().join("curl.out");
    let url = format!("http://10.10.0.100:8080/big.bin?size={size}");
    let mut curl = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("client"),
            "curl",
            "-sS",
            "--fail",
            "-o",
        ])
        .arg(&out)
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while file_len(&out) < size * 4 / 10 {
        assert!(Instant::now() < deadline, "curl never reached 40 %");
        assert!(curl.try_wait().unwrap().is_none(), "curl ended before 40 %");
        lab.idle(Duration::from_millis(5));
    }
    let at = file_len(&out);
    lab.power_off("primary");
    eprintln!("primary powered off at {at} bytes");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = curl.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "curl did not finish: {} bytes after 180 s",
            file_len(&out)
        );
        lab.idle(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = curl.stderr.take().unwrap().read_to_string(&mut err);
    lab.idle(Duration::from_millis(300));
    assert!(status.success(), "curl failed: {status} {err}");
    assert_content(&out, "/big.bin", size);
    lab.assert_taken_over(1);

    // The backup is the service now: a new connection to the service address is served too.
    let small = 3_000_000u64;
    let out2 = lab.dir.path().join("curl2.out");
    let st = Command::new("ip")
        .args(["netns", "exec", &lab.ns("client"), "curl", "-sS", "--fail"])
        .args(["--max-time", "20", "-o"])
        .arg(&out2)
        .arg(format!("http://10.10.0.100:8080/after.bin?size={small}"))
        .status()
        .unwrap();
    assert!(st.success(), "a new curl after the takeover: {st}");
    assert_content(&out2, "/after.bin", small);
}

/// Runs `experiment` (its `topology` key is added) with the real `halab run` on a renamed copy
/// of two-server.toml; returns the records. `halab down` on the way out.
fn halab_run(name: &str, heartbeat_ms: u64, experiment: &str) -> Vec<Value> {
    struct Down<'a>(&'a Path, &'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Command::new(halab_bin())
                .env("HALAB_STATE_DIR", self.0.join("state"))
                .args(["down", "--name", self.1])
                .output();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let _down = Down(dir.path(), name);
    std::fs::write(
        dir.path().join("topology.toml"),
        topology_text(name, heartbeat_ms),
    )
    .unwrap();
    let file = dir.path().join("experiment.toml");
    std::fs::write(&file, format!("topology = \"topology.toml\"\n{experiment}")).unwrap();
    let out = Command::new(halab_bin())
        // `halab run` writes its report under `reports/` of the working directory.
        .current_dir(dir.path())
        .env("HALAB_STATE_DIR", dir.path().join("state"))
        .env("HALAB_RUNS_DIR", dir.path().join("runs"))
        .arg("run")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "halab run failed:\n{stderr}");
    let run_dir = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("results.jsonl").exists())
        .expect("a results.jsonl");
    std::fs::read_to_string(run_dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON record"))
        .collect()
}

fn assert_clean(r: &Value) {
    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(r["integrity_ok"], true, "{r}");
    for k in [
        "bytes_lost",
        "bytes_duplicated",
        "bytes_corrupted",
        "bytes_refetched",
    ] {
        assert_eq!(r[k], 0, "{k}: {r}");
    }
    assert_eq!(r["bytes_received"], r["bytes_expected"], "{r}");
}

/// Every connection kept its one TCP connection: one attempt, no reconnect.
fn assert_no_reconnect(r: &Value) {
    for c in r["connections"].as_array().unwrap() {
        assert_eq!(c["attempts"], 1, "{c}");
        assert_eq!(c["reconnected_ns"], Value::Null, "{c}");
        assert_eq!(
            c["detect_ns"],
            Value::Null,
            "the client noticed nothing: {c}"
        );
    }
}

fn mode_events<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["mode_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// Runs `experiment` through the console's own runner on a testbed of its own (a renamed
/// copy of two-server.toml), after `setup` ran on the testbed's name; returns the records.
fn run_lib(
    name: &str,
    heartbeat_ms: u64,
    experiment: &str,
    setup: impl FnOnce(&str),
) -> Vec<Value> {
    run_lib_with(name, heartbeat_ms, experiment, setup, |_, t| t).0
}

/// [`run_lib`], keeping what `setup` returned (a capture, say) alive through the runs, and
/// handing it to `before_down` once they are over, while the testbed is still up.
fn run_lib_with<T, U>(
    name: &str,
    heartbeat_ms: u64,
    experiment: &str,
    setup: impl FnOnce(&str) -> T,
    before_down: impl FnOnce(&str, T) -> U,
) -> (Vec<Value>, U) {
    run_lib_on(
        name,
        &topology_text(name, heartbeat_ms),
        experiment,
        setup,
        before_down,
    )
}

/// [`run_lib_with`] on the topology `topology` (a changed copy of two-server.toml).
fn run_lib_on<T, U>(
    name: &str,
    topology: &str,
    experiment: &str,
    setup: impl FnOnce(&str) -> T,
    before_down: impl FnOnce(&str, T) -> U,
) -> (Vec<Value>, U) {
    let dir = tempfile::tempdir().unwrap();
    // HALAB_KEEP_LOGS=1 keeps the agents' logs of every run for a look afterwards.
    let dir_path = if std::env::var("HALAB_KEEP_LOGS").is_ok() {
        let d = std::env::temp_dir().join(format!("halab-keep-{name}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        eprintln!("logs of {name}: {}", d.join("logs").display());
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("info")
            .try_init();
        d
    } else {
        dir.path().to_path_buf()
    };
    std::fs::write(dir_path.join("topology.toml"), topology).unwrap();
    let file = dir_path.join("experiment.toml");
    std::fs::write(&file, format!("topology = \"topology.toml\"\n{experiment}")).unwrap();
    let exp = halab::experiment::load(&file).unwrap_or_else(|e| panic!("{e}"));
    halab::run::runner::check_supported(&exp).expect("st-tcp supported");
    let opts = UpOptions {
        agent_binary: support::agent_bin(),
        state_dir: dir_path.join("state"),
        run_id: name.to_string(),
        log_dir: dir_path.join("logs"),
        probe: false,
        ssh: None,
    };
    let _ = local::destroy(name, None);
    struct Destroy<'a>(&'a str);
    impl Drop for Destroy<'_> {
        fn drop(&mut self) {
            let _ = local::destroy(self.0, None);
        }
    }
    let _destroy = Destroy(name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tb = Testbed::up(exp.topology.clone(), &opts)
            .await
            .unwrap_or_else(|e| panic!("up {name}: {}", halab::error::chain(&e)));
        let kept = setup(name);
        let mut records = Vec::new();
        {
            let mut runner = halab::run::runner::Runner::new(&mut tb, &exp).unwrap();
            for plan in exp.runs() {
                let r = runner.execute(&plan).await;
                records.push(serde_json::to_value(&r).unwrap());
            }
        }
        let out = before_down(name, kept);
        let _ = tb.down().await;
        (records, out)
    })
}

/// Rate-limits the primary's service link (tbf; the kernel has no netem) so that the short
/// echo and interactive runs last long enough for a fault in their middle: 100 exchanges
/// would otherwise be over before a power-off has finished.
fn shape_primary(rate_bps: u64) -> impl FnOnce(&str) {
    move |name: &str| shape_service(&local::host_ns(name, "primary"), rate_bps, 16_000, 300)
}

/// A tbf of `rate_bps` on namespace `ns`'s service link, with a `pfifo_fast` under it (the
/// kernel has no `prio`) whose three bands each hold about `queue_ms` at the rate. The agents
/// mark heartbeats priority 6, band 0, as a network serving heartbeats first would: behind one
/// shared queue kept full by bulk data, a beat is late by the queue's length or dropped at its
/// tail, three in a row now and then, and the peer rightly takes the link for lost.
/// Replaces what was there.
fn shape_service(ns: &str, rate_bps: u64, burst_bytes: u64, queue_ms: u64) {
    let ip = |args: &[&str]| {
        let mut all = vec!["netns", "exec", ns];
        all.extend_from_slice(args);
        support::run("ip", &all);
    };
    // pfifo_fast's bands hold txqueuelen packets each, taken when it is created.
    let packets = ((rate_bps / 8 * queue_ms / 1000 + burst_bytes) / 1500).max(4);
    let packets = packets.to_string();
    ip(&["ip", "link", "set", "service", "txqueuelen", &packets]);
    let rate = format!("{rate_bps}bit");
    let burst = burst_bytes.to_string();
    let latency = format!("{queue_ms}ms");
    let qdisc = ["tc", "qdisc", "replace", "dev", "service"];
    ip(&[
        &qdisc[..],
        &[
            "root", "handle", "1:", "tbf", "rate", &rate, "burst", &burst, "latency", &latency,
        ],
    ]
    .concat());
    ip(&[
        &qdisc[..],
        &["parent", "1:1", "handle", "10:", "pfifo_fast"],
    ]
    .concat());
}

const POWER_OFF_AT_40: &str =
    "[[faults]]\nat = \"40%\"\nkind = \"power-off\"\ntarget = \"primary\"\n";

/// Must hold 1 with the built-in clients: echo, interactive and bulk, the primary powered off
/// at 40 % of the failure-free run; byte-exact, no reconnect, one takeover each.
#[test]
fn builtin_clients_survive_power_off_of_the_primary() {
    if !netns_available("builtin_clients_survive_power_off_of_the_primary") {
        return;
    }
    let _s = serial();
    let one = |w: &str| {
        format!(
            "name = \"st-{w}\"\n[run]\nmode = \"st-tcp\"\nworkload = \"{w}\"\n{POWER_OFF_AT_40}"
        )
    };
    let mut records = run_lib("t-st-echo", 200, &one("echo"), shape_primary(100_000));
    records.extend(run_lib(
        "t-st-inter",
        200,
        &one("interactive"),
        shape_primary(2_000_000),
    ));
    records.extend(run_lib(
        "t-st-bulk",
        200,
        &one("bulk").replace("[[faults]]", "size = \"100MB\"\n[[faults]]"),
        |_| {},
    ));
    assert_eq!(records.len(), 3);
    for (r, w) in records.iter().zip(["echo", "interactive", "bulk"]) {
        eprintln!(
            "{w}: detect {} ms, takeover {} ms, failover {} ms, stall {} ms, duration {} ms",
            r["detect_ms"], r["takeover_ms"], r["failover_ms"], r["stall_ms"], r["duration_ms"]
        );
        assert_eq!(r["workload"], w);
        assert_clean(r);
        assert_no_reconnect(r);
        assert_eq!(
            mode_events(r, "takeover").len(),
            1,
            "{w}: {}",
            r["mode_events"]
        );
        assert_eq!(mode_events(r, "fence").len(), 1, "{w}");
        assert!(r["detect_ms"].as_f64().unwrap() > 0.0, "{w}: {r}");
        assert!(r["takeover_ms"].as_f64() >= r["detect_ms"].as_f64(), "{w}");
    }
}

/// Must hold 2: 20 concurrent connections taken over in one failover, all byte-exact. The
/// fault comes at 10 % so that no connection has finished yet (one thread serves them all on
/// the primary at uneven speeds; since a confirmed FIN leaves at once, the fastest could finish
/// before a fault at 20 %).
#[test]
fn twenty_connections_are_taken_over_in_one_failover() {
    if !netns_available("twenty_connections_are_taken_over_in_one_failover") {
        return;
    }
    let _s = serial();
    let records = run_lib(
        "t-st-20",
        200,
        "name = \"st-twenty\"\n[run]\nmode = \"st-tcp\"\nworkload = \"bulk\"\n\
         size = \"20MB\"\nclients = 20\n\
         [[faults]]\nat = \"10%\"\nkind = \"power-off\"\ntarget = \"primary\"\n",
        |_| {},
    );
    assert_eq!(records.len(), 1);
    let r = &records[0];
    eprintln!(
        "20 connections: detect {} ms, takeover {} ms, failover {} ms",
        r["detect_ms"], r["takeover_ms"], r["failover_ms"]
    );
    assert_clean(r);
    assert_no_reconnect(r);
    assert_eq!(r["connections"].as_array().unwrap().len(), 20);
    let done = mode_events(r, "takeover-done");
    assert_eq!(done.len(), 1, "one failover: {}", r["mode_events"]);
    assert_eq!(done[0]["detail"], "20 connections, 0 failed");
    assert_eq!(mode_events(r, "takeover").len(), 20);
}

fn details(r: &Value, kind: &str) -> Vec<String> {
    mode_events(r, kind)
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn one_run(name: &str, workload_and_size: &str, fault: &str) -> String {
    format!(
        "name = \"{name}\"\n[run]\nmode = \"st-tcp\"\n{workload_and_size}\n[[faults]]\nat = \"40%\"\n\
         target = \"primary\"\n{fault}\n"
    )
}

/// Retransmission timeouts the kernel of namespace `ns` has had (`/proc/net/netstat`, TcpExt
/// TCPTimeouts), and the packets its FIN hold queued (the iptables chain's counters).
fn timeouts_and_queued(ns: &str) -> (u64, u64) {
    let netstat = support::run("ip", &["netns", "exec", ns, "cat", "/proc/net/netstat"]);
    let mut ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (ext.next().unwrap(), ext.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "TCPTimeouts")
        .expect("TCPTimeouts");
    let timeouts = values.split_whitespace().nth(i).unwrap().parse().unwrap();
    let chain = support::run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "iptables",
            "-w",
            "-L",
            "HALAB_STTCP",
            "-v",
            "-x",
            "-n",
        ],
    );
    let queued = chain
        .lines()
        .filter(|l| l.contains("NFQUEUE"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    (timeouts, queued)
}

/// Thesis §3.7.4 without a failure: every close is confirmed by the backup's replica, and the
/// held FIN leaves as soon as the confirmation comes: it waits in an NFQUEUE, it is not
/// dropped, so the primary never needs a retransmission timeout (a dropped FIN would leave
/// only with the kernel's retransmission, 200 ms later). Needs iptables' NFQUEUE target (CI
/// installs it).
#[test]
fn a_confirmed_close_leaves_at_once_without_a_retransmission_timeout() {
    if !netns_available("a_confirmed_close_leaves_at_once_without_a_retransmission_timeout") {
        return;
    }
    let _s = serial();
    let exp = "name = \"st-close\"\nrepetitions = 3\n[run]\nmode = \"st-tcp\"\nworkload = \"bulk\"\nsize = \"20MB\"\n";
    let (records, (timeouts, queued)) = run_lib_with(
        "t-st-close",
        200,
        exp,
        |_| (),
        |name, ()| timeouts_and_queued(&local::host_ns(name, "primary")),
    );
    for r in &records {
        assert_clean(r);
        assert_no_reconnect(r);
    }
    let mut d: Vec<f64> = records
        .iter()
        .filter_map(|r| r["duration_ms"].as_f64())
        .collect();
    d.sort_by(|a, b| a.total_cmp(b));
    eprintln!(
        "confirmed close: 3 bulk runs of {:.1} ms (median); the hold queued {queued} packets, \
         the primary had {timeouts} retransmission timeouts",
        d[d.len() / 2]
    );
    assert!(
        queued >= 3,
        "every run's FIN went through the queue: {queued}"
    );
    assert_eq!(
        timeouts, 0,
        "a held FIN needed the kernel's retransmission timeout"
    );
}

/// Thesis table 3.3, backup HW crash: the primary goes on alone (non-fault-tolerant mode),
/// no takeover, and the client sees nothing.
#[test]
fn power_off_of_the_backup_leaves_the_primary_alone_and_the_client_unaffected() {
    if !netns_available("power_off_of_the_backup_leaves_the_primary_alone") {
        return;
    }
    let _s = serial();
    // The replica runs up to its hold (48 MB) ahead of the client: with 100 MB and the fault
    // at 40 %, it could confirm the primary's FIN before the backup went, and the run end
    // before the primary had missed three heartbeats. 300 MB with the fault at 20 % leaves
    // the replica far from the end and the run seconds after the fault.
    let exp = one_run(
        "st-backup-off",
        "workload = \"bulk\"\nsize = \"300MB\"",
        "kind = \"power-off\"",
    )
    .replace("target = \"primary\"", "target = \"backup\"")
    .replace("at = \"40%\"", "at = \"20%\"");
    // Through the real `halab run`: the CLI accepts st-tcp.
    let records = halab_run("t-st-boff", 200, &exp);
    let r = &records[0];
    eprintln!("backup off: events {}", r["mode_events"]);
    assert_clean(r);
    assert_no_reconnect(r);
    let nft = mode_events(r, "non-fault-tolerant");
    assert_eq!(nft.len(), 1, "{}", r["mode_events"]);
    assert_eq!(nft[0]["host"], "primary");
    assert!(mode_events(r, "takeover").is_empty());
    assert!(mode_events(r, "fence").is_empty());
}

/// Two runs back to back, each with the primary powered off: between them the backup gives
/// the connection and the service address back and is reset, and the primary is powered on
/// again. The backup watches the new primary from its first beat on; with beats 1 s apart the
/// second run's power-off comes long before the primary's second beat, so the first one must
/// reach a backup that has already been reset (else it is forgotten, and the second failure
/// is never detected: the client waits out its 30 s timeout).
#[test]
fn a_run_right_after_a_takeover_is_taken_over_too() {
    if !netns_available("a_run_right_after_a_takeover_is_taken_over_too") {
        return;
    }
    let _s = serial();
    let exp = format!(
        "repetitions = 2\n{}",
        one_run(
            "st-again",
            "workload = \"bulk\"\nsize = \"20MB\"",
            "kind = \"power-off\""
        )
    );
    let records = run_lib("t-st-again", 1000, &exp, |_| {});
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_clean(r);
        assert_no_reconnect(r);
        assert_eq!(mode_events(r, "takeover").len(), 1, "{}", r["mode_events"]);
        // Dead 3 s after the last beat, which came up to one interval before the fault.
        let detect = r["detect_ms"].as_f64().expect("detect_ms");
        assert!(
            (1950.0..3300.0).contains(&detect),
            "detected after {detect} ms"
        );
    }
}

/// One 100 MB bulk run on testbed `testbed` with `fault` at the primary at 40 %: the client is
/// byte-exact without a reconnect, the backup decided once, for `reason`, and took the
/// connection over. Returns the record.
fn one_takeover(testbed: &str, fault: &str, reason: &str) -> Value {
    let exp = one_run(testbed, "workload = \"bulk\"\nsize = \"100MB\"", fault);
    let mut records = run_lib(testbed, 200, &exp, |_| {});
    let r = records.remove(0);
    eprintln!(
        "{reason}: detect {} ms, takeover {} ms; {:?}",
        r["detect_ms"],
        r["takeover_ms"],
        details(&r, "detect")
    );
    assert_clean(&r);
    assert_no_reconnect(&r);
    let d = details(&r, "detect");
    assert_eq!(d.len(), 1);
    assert!(d[0].starts_with(reason), "{d:?}");
    assert_eq!(mode_events(&r, "takeover").len(), 1);
    r
}

/// Thesis §3.7.3: the primary's application hangs (SIGSTOP) while its agent beats on; the
/// backup sees its progress lag the replica's for AppMaxLagTime, fences it and takes over.
#[test]
fn application_hang_is_detected_by_lag_and_taken_over() {
    if !netns_available("application_hang_is_detected_by_lag_and_taken_over") {
        return;
    }
    let _s = serial();
    let r = one_takeover("t-st-hang", "kind = \"process-hang\"", "app-lag");
    // AppMaxLagTime is 3 s here: the decision waited for it, not for missed heartbeats.
    assert!(
        r["detect_ms"].as_f64().unwrap() >= 3000.0,
        "{}",
        r["detect_ms"]
    );
}

/// Thesis §3.7.4: the primary's application crashes with cleanup (SIGTERM); its kernel's FIN is
/// held back, the backup's replica has not closed there, and after MaxDelayFIN the backup
/// fences the primary and takes over. A capture on the client shows that no FIN from the
/// service reached it before the end of the stream.
#[test]
fn crash_with_cleanup_holds_the_fin_and_the_backup_takes_over() {
    if !netns_available("crash_with_cleanup_holds_the_fin_and_the_backup_takes_over") {
        return;
    }
    let _s = serial();
    let size: u64 = 30_000_000;
    let exp = one_run(
        "st-crash",
        &format!("workload = \"bulk\"\nsize = {size}"),
        "kind = \"process-crash\"",
    );
    // The primary's link rate-limited so that the fault lands mid-transfer (a 30 MB transfer
    // on the bare veths is over before the SIGTERM arrives).
    let (records, capture) = run_lib_with(
        "t-st-crash",
        200,
        &exp,
        |name| {
            shape_primary(200_000_000)(name);
            support::capture::Capture::start(&local::host_ns(name, "client"), 7070)
        },
        |_, c| c,
    );
    let packets = capture.stop();
    let r = &records[0];
    eprintln!("crash events: {}", r["mode_events"]);
    eprintln!(
        "crash: detect {} ms, takeover {} ms; {:?} {:?}",
        r["detect_ms"],
        r["takeover_ms"],
        details(r, "detect"),
        details(r, "fin-held")
    );
    assert_clean(r);
    assert_no_reconnect(r);
    let d = details(r, "detect");
    assert_eq!(d.len(), 1);
    assert!(d[0].starts_with("fin-held"), "{d:?}");
    assert_eq!(mode_events(r, "takeover").len(), 1);
    // Every FIN or RST from the service sits at the end of its connection's stream: none came
    // early (at the crashed primary's close).
    let vip = std::net::Ipv4Addr::new(10, 10, 0, 100);
    let mut checked = 0;
    // Only while the client still held the connection: the provider's power-off leaves the
    // primary's kernel sockets in its namespace, and after the power-on at the end of the run
    // the old socket's FIN goes out again to a connection the client has long closed (it
    // answers with a RST); a real power-off would have wiped that socket.
    let client_closed = |port: u16| {
        packets
            .iter()
            .find(|q| q.dst == vip && q.src_port == port && q.fin_or_rst())
            .map(|q| q.at_ns)
    };
    for p in packets.iter().filter(|p| {
        p.src == vip && p.fin_or_rst() && client_closed(p.dst_port).is_none_or(|t| p.at_ns < t)
    }) {
        let isn = packets
            .iter()
            .find(|q| q.src == vip && q.dst_port == p.dst_port && q.flags.syn && q.flags.ack)
            .map(|q| q.seq)
            .expect("the SYN-ACK of the connection");
        let at = p
            .seq
            .wrapping_add(p.payload_len)
            .wrapping_sub(isn.wrapping_add(1));
        if at as u64 != size {
            let i = packets.iter().position(|q| std::ptr::eq(q, p)).unwrap_or(0);
            for q in &packets[i.saturating_sub(3)..(i + 4).min(packets.len())] {
                eprintln!("  around the FIN: {}", q.describe());
            }
        }
        assert!(!p.flags.rst, "a RST reached the client: {}", p.describe());
        assert_eq!(
            at as u64,
            size,
            "a FIN before the end of the stream: {}",
            p.describe()
        );
        checked += 1;
    }
    assert!(checked >= 1, "the connections' final FINs were captured");
}

/// Thesis §3.7, NIC failure on the primary: its service link goes down while the heartbeat
/// link stays up. The backup hears it only on the heartbeat link, its own service link is up:
/// the primary lost the service network; fence and takeover.
#[test]
fn nic_down_on_the_primary_is_told_apart_and_taken_over() {
    if !netns_available("nic_down_on_the_primary_is_told_apart_and_taken_over") {
        return;
    }
    let _s = serial();
    one_takeover(
        "t-st-nic",
        "kind = \"nic-down\"\ninterface = \"service\"",
        "service-link-lost",
    );
}

/// Must hold 4: the backup's capture drops every 7th client data segment; the backup fetches
/// the missing bytes from the logger's ring, its replica stays in step, and a power-off of the
/// primary at 40 % is taken over byte-exact.
#[test]
fn tap_omissions_are_recovered_from_the_logger_and_the_takeover_is_exact() {
    if !netns_available("tap_omissions_are_recovered_from_the_logger") {
        return;
    }
    let _s = serial();
    let mut lab = Lab::up_with("t-st-log", |c| c.tap_drop_every = 7);
    shape_primary(2_000_000)(&lab.name);
    let mode = lab.tb.as_ref().unwrap().mode().clone();
    let spec = halab_protocol::ClientSpec {
        workload: halab_protocol::Workload::Interactive,
        seed: 42,
        size: 0,
        connections: 1,
        servers: vec!["10.10.0.100".into()],
        workload_port: halab_protocol::WORKLOAD_PORT,
        http_port: halab_protocol::HTTP_PORT,
        idle_timeout_ms: 1000,
        connect_timeout_ms: 1000,
        max_attempts: 1,
        deadline_ms: 120_000,
        mode,
        progress_marks_ppm: Vec::new(),
    };
    let expected = 100 * 10240u64;
    lab.rt
        .block_on(lab.tb.as_ref().unwrap().send(
            "client",
            halab_protocol::ConsoleMsg::StartClient { run: 1, spec },
        ))
        .unwrap();
    let reached = lab.pump(
        Instant::now() + Duration::from_secs(60),
        |_, m| matches!(m, AgentMsg::ClientTelemetry { bytes, .. } if *bytes >= expected * 4 / 10),
    );
    assert!(reached, "the client never reached 40 %");
    lab.power_off("primary");
    let mut result = None;
    lab.pump(Instant::now() + Duration::from_secs(60), |_, m| {
        if let AgentMsg::ClientDone { result: r, .. } = m {
            result = Some((**r).clone());
            true
        } else {
            false
        }
    });
    lab.idle(Duration::from_millis(300));
    let result = result.expect("the client finished");
    let c = &result.connections[0];
    eprintln!(
        "logger: {:?}",
        lab.events
            .iter()
            .filter(|e| e.1 == "logger-recovered")
            .collect::<Vec<_>>()
    );
    assert_eq!(c.error, None, "{c:?}");
    assert!(c.integrity.integrity_ok, "{:?}", c.integrity);
    assert_eq!(c.integrity.bytes_received, expected);
    assert_eq!(c.attempts, 1);
    assert_eq!(c.reconnected_ns, None);
    let recovered: u64 = lab
        .events
        .iter()
        .filter(|e| e.1 == "logger-recovered")
        .map(|e| {
            e.2.rsplit(": ")
                .next()
                .and_then(|b| b.trim_end_matches(" bytes").parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(
        recovered >= 150,
        "bytes recovered from the logger: {recovered}"
    );
    lab.assert_taken_over(1);
}

/// The shipped st-tcp experiment loads, and this version accepts it (st-tcp is supported).
#[test]
fn the_shipped_sttcp_experiment_is_accepted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/sttcp-heartbeat.toml");
    let exp = halab::experiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
    halab::run::runner::check_supported(&exp).expect("st-tcp runs");
    assert_eq!(exp.runs().len(), 9);
    let cfg = halab::modes::st_tcp::config(&exp.topology, &exp.runs()[0].settings, "00").unwrap();
    assert_eq!(cfg.vip, "10.10.0.100");
    assert_eq!(cfg.heartbeat_iface.as_deref(), Some("heartbeat"));
    assert_eq!(cfg.backup.heartbeat_addr.as_deref(), Some("10.10.1.2"));
    assert_eq!(cfg.logger.as_ref().map(|l| l.host.as_str()), Some("logger"));
    assert_eq!(cfg.heartbeat_ms, 50);
}

// Issue 13: st-tcp survives failures in any order.

/// Must hold 1 (issue 13): the primary powered off 1 ms after the client started, before any
/// beat of the run could arrive (and, in some runs, before the client's SYN left): echo,
/// interactive and bulk (the topology's 20 MB), 10 runs each, heartbeat 50 ms × 3. Every run
/// is taken over and byte-exact. Where the SYN was lost with the primary, the takeover has no
/// connection to rebuild ("0 connections, 0 failed") and the client's kernel retransmits its
/// SYN to the backup, which holds the service address by then.
#[test]
fn faults_at_the_very_start_are_taken_over() {
    if !netns_available("faults_at_the_very_start_are_taken_over") {
        return;
    }
    let _s = serial();
    let exp = "name = \"st-start\"\nrepetitions = 10\nrun_timeout = \"60s\"\n\
               [run]\nmode = \"st-tcp\"\nmissed_heartbeats = 3\n\
               [matrix]\nworkload = [\"echo\", \"interactive\", \"bulk\"]\n\
               [[faults]]\nat = \"1ms\"\nkind = \"power-off\"\ntarget = \"primary\"\n";
    let records = halab_run("t-st-start", 50, exp);
    assert_eq!(records.len(), 30, "3 workloads × 10 repetitions");
    let mut problems = Vec::new();
    for r in &records {
        let id = format!(
            "{} run {} (repetition {})",
            r["workload"].as_str().unwrap_or("?"),
            r["run_index"],
            r["repetition"]
        );
        eprintln!(
            "{id}: fault at {} ms, detect {} ms, takeover {} ms, failover {} ms, duration {} ms; \
             {:?}",
            r["faults"][0]["at_ms"],
            r["detect_ms"],
            r["takeover_ms"],
            r["failover_ms"],
            r["duration_ms"],
            details(r, "takeover-done")
        );
        let mut bad = |what: String| problems.push(format!("{id}: {what}"));
        if r["error"] != Value::Null {
            bad(format!("error {}", r["error"]));
        }
        if r["integrity_ok"] != true {
            bad(format!(
                "integrity: {} of {} bytes received, {} lost, {} duplicated, {} corrupted",
                r["bytes_received"],
                r["bytes_expected"],
                r["bytes_lost"],
                r["bytes_duplicated"],
                r["bytes_corrupted"]
            ));
        }
        if r["bytes_received"] != r["bytes_expected"] {
            bad(format!(
                "{} of {} bytes",
                r["bytes_received"], r["bytes_expected"]
            ));
        }
        if r["faults"][0]["at_ms"].is_null() {
            bad(format!("the power-off did not fire: {}", r["faults"]));
        }
        for kind in ["detect", "fence"] {
            if mode_events(r, kind).is_empty() {
                bad(format!("no {kind} event: {}", r["mode_events"]));
            }
        }
        let done = details(r, "takeover-done");
        if done.len() != 1 || !done[0].ends_with(", 0 failed") {
            bad(format!("takeover-done {done:?}: {}", r["mode_events"]));
        }
        for c in r["connections"].as_array().into_iter().flatten() {
            if c["error"] != Value::Null || c["attempts"] != 1 || c["reconnected_ns"] != Value::Null
            {
                bad(format!(
                    "connection {}: error {}, {} attempts, reconnected {}",
                    c["index"], c["error"], c["attempts"], c["reconnected_ns"]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in 30 runs:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// What the dashboard's orchestrator reported, taken in as the dashboard takes it (into an
/// [`App`], whose failover table is what the screen shows).
struct Seen {
    app: App,
    /// Mode events in order: (host, kind, detail).
    events: Vec<(String, String, String)>,
    /// The latest host records.
    hosts: Vec<HostRecord>,
    /// Client runs started: (client host, run).
    runs: Vec<(String, u64)>,
    /// Bytes each run had received at its last telemetry.
    bytes: BTreeMap<u64, u64>,
    /// Results of the runs that ended.
    done: BTreeMap<u64, ClientResult>,
    /// Power-offs the orchestrator did: (host, T_fault on the console clock).
    powered_off: Vec<(String, u64)>,
    powered_on: Vec<String>,
    /// The last workload state reported.
    workload: Option<bool>,
    logs: Vec<String>,
}

impl Seen {
    fn take(&mut self, u: Update) {
        match &u {
            Update::Hosts(h) => self.hosts = h.clone(),
            Update::Agent { host, msg } => match msg {
                AgentMsg::Mode { event } => {
                    let (kind, detail) = (event.kind(), halab::lab::mode_events::describe(event));
                    eprintln!("  [{host}] {kind}: {detail}");
                    self.events.push((host.clone(), kind.to_string(), detail));
                }
                AgentMsg::ClientTelemetry { run, bytes, .. } => {
                    self.bytes.insert(*run, *bytes);
                }
                AgentMsg::ClientDone { run, result } => {
                    self.done.insert(*run, (**result).clone());
                }
                AgentMsg::RoleState {
                    role,
                    state,
                    detail,
                    ..
                } => eprintln!("  [{host}] role {role}: {state:?} {detail:?}"),
                AgentMsg::Log {
                    level: LogLevel::Error | LogLevel::Warn,
                    message,
                    ..
                } => eprintln!("  [{host}] {message}"),
                _ => {}
            },
            Update::RunStarted { host, run } => {
                eprintln!("  run {run} started on {host}");
                self.runs.push((host.clone(), *run));
            }
            Update::PoweredOff { host, at_ns, .. } => {
                eprintln!("  {host} powered off");
                self.powered_off.push((host.clone(), *at_ns));
            }
            Update::PoweredOn { host } => {
                eprintln!("  {host} powered on");
                self.powered_on.push(host.clone());
            }
            Update::Workload { running, detail } => {
                eprintln!("  workload: {detail}");
                self.workload = Some(*running);
            }
            Update::Log(level, text) => {
                if *level != Level::Info {
                    eprintln!("  log {level:?}: {text}");
                }
                self.logs.push(text.clone());
            }
            _ => {}
        }
        self.app.apply(u, halab_protocol::mono_ns());
    }

    fn record(&self, host: &str) -> Option<&HostRecord> {
        self.hosts.iter().find(|h| h.name == host)
    }

    /// Whether `host` reported `kind` with a detail starting with `detail` since event
    /// number `since`.
    fn has(&self, since: usize, host: &str, kind: &str, detail: &str) -> bool {
        self.events[since.min(self.events.len())..]
            .iter()
            .any(|(h, k, d)| h == host && k == kind && d.starts_with(detail))
    }

    fn kinds_since(&self, since: usize, host: &str) -> Vec<&str> {
        self.events[since.min(self.events.len())..]
            .iter()
            .filter(|e| e.0 == host)
            .map(|e| e.1.as_str())
            .collect()
    }

    fn summary(&self) -> String {
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|h| {
                format!(
                    "{} {:?} {:?}{}",
                    h.name,
                    h.roles,
                    h.state,
                    if h.holds_service_address {
                        " (service address)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let events: Vec<String> = self
            .events
            .iter()
            .rev()
            .take(30)
            .rev()
            .map(|(h, k, d)| format!("  [{h}] {k}: {d}"))
            .collect();
        let rows: Vec<String> = self
            .app
            .failovers
            .rows
            .iter()
            .map(|r| {
                format!(
                    "  {} {:?} detect {:?} takeover {:?} failover {:?} ok {:?}",
                    r.label,
                    r.state,
                    r.detect_ms(),
                    r.takeover_ms(),
                    r.failover_ms(),
                    r.figures.as_ref().map(|f| f.integrity.integrity_ok)
                )
            })
            .collect();
        let logs: Vec<&String> = self.logs.iter().rev().take(15).collect();
        format!(
            "hosts: {}\nevents (last 30):\n{}\nfailover rows:\n{}\nlog (newest first): {logs:?}",
            hosts.join("; "),
            events.join("\n"),
            rows.join("\n")
        )
    }
}

/// The dashboard's orchestrator ([`Orchestrator`], the code path of `halab up`'s keys) on a
/// testbed of its own, driven with the dashboard's [`UiCommand`]s; its [`Update`]s go into a
/// [`Seen`]. Shut down (the testbed taken down) and its namespaces removed on drop.
struct Dash {
    name: String,
    rt: tokio::runtime::Runtime,
    commands: mpsc::UnboundedSender<UiCommand>,
    updates: mpsc::UnboundedReceiver<Update>,
    worker: Option<
        tokio::task::JoinHandle<Result<halab::testbed::Timings, halab::testbed::TestbedError>>,
    >,
    seen: Seen,
    _dir: tempfile::TempDir,
}

const HOSTS: [&str; 4] = ["primary", "backup", "logger", "client"];
const VIP: &str = "10.10.0.100";

impl Dash {
    /// `halab up` as the dashboard does it, on a renamed copy of two-server.toml with bulk of
    /// `size` bytes as its workload; both servers' service links rate-limited to 100 Mbit/s so
    /// that a run lasts seconds whichever host serves it. Returns once both servers say what
    /// they serve and the primary hears its backup.
    fn up(name: &str, heartbeat_ms: u64, size: u64) -> Dash {
        struct Destroy(String);
        impl Drop for Destroy {
            fn drop(&mut self) {
                let _ = local::destroy(&self.0, None);
            }
        }
        let destroy = Destroy(name.to_string());
        let dir = tempfile::tempdir().unwrap();
        let text =
            topology_text(name, heartbeat_ms).replace("size = \"20MB\"", &format!("size = {size}"));
        assert!(text.contains(&format!("size = {size}")), "{text}");
        let topo = halab::topology::parse_str(&text, &dir.path().join("topology.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let opts = UpOptions {
            agent_binary: support::agent_bin(),
            state_dir: dir.path().join("state"),
            run_id: name.to_string(),
            log_dir: dir.path().join("logs"),
            probe: false,
            ssh: None,
        };
        let _ = local::destroy(name, None);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // As `halab up` does: the topology's mode under the testbed's key, every role started.
        let tb = rt.block_on(async {
            let mut tb = Testbed::up(topo, &opts)
                .await
                .unwrap_or_else(|e| panic!("up {name}: {}", halab::error::chain(&e)));
            let mode = halab::modes::config_for(&tb.topology, &tb.topology.run, tb.mode_key())
                .unwrap_or_else(|e| panic!("st-tcp config: {e}"));
            tb.set_mode(mode);
            tb.start_roles().await.expect("start roles");
            tb
        });
        for h in ["primary", "backup"] {
            shape_service(&local::host_ns(name, h), 100_000_000, 32_000, 20);
        }
        let topology = tb.topology.clone();
        let hosts = tb.snapshot().hosts;
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let orchestrator = Orchestrator::new(tb, updates_tx, dir.path().join("results.jsonl"))
            .unwrap_or_else(|e| panic!("orchestrator: {}", halab::error::chain(&e)));
        let worker = rt.spawn(orchestrator.run(commands_rx));
        let app = App::new(
            &topology,
            hosts.clone(),
            Vec::new(),
            halab_protocol::mono_ns(),
        );
        std::mem::forget(destroy); // Dash's own drop destroys from here on
        let mut d = Dash {
            name: name.to_string(),
            rt,
            commands,
            updates,
            worker: Some(worker),
            seen: Seen {
                app,
                events: Vec::new(),
                hosts,
                runs: Vec::new(),
                bytes: BTreeMap::new(),
                done: BTreeMap::new(),
                powered_off: Vec::new(),
                powered_on: Vec::new(),
                workload: None,
                logs: Vec::new(),
            },
            _dir: dir,
        };
        d.wait(
            "both servers serving and the primary fault tolerant",
            Duration::from_secs(20),
            |s| {
                s.has(0, "primary", "serving", "primary")
                    && s.has(0, "backup", "serving", "backup")
                    && s.has(0, "primary", "fault-tolerant", "")
            },
        );
        d
    }

    fn send(&self, c: UiCommand) {
        self.commands.send(c).expect("the orchestrator listens");
    }

    /// Takes updates until `pred` holds; panics with what was seen after `limit`.
    fn wait(&mut self, what: &str, limit: Duration, mut pred: impl FnMut(&Seen) -> bool) {
        let deadline = Instant::now() + limit;
        let Dash {
            rt, updates, seen, ..
        } = self;
        loop {
            if pred(seen) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("no {what} within {limit:?}\n{}", seen.summary());
            }
            match rt.block_on(async { tokio::time::timeout(left, updates.recv()).await }) {
                Ok(Some(u)) => seen.take(u),
                Ok(None) => panic!(
                    "the orchestrator ended; waiting for {what}\n{}",
                    seen.summary()
                ),
                Err(_) => {}
            }
        }
    }

    /// Takes updates for `d`, whatever comes.
    fn idle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        let Dash {
            rt, updates, seen, ..
        } = self;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match rt.block_on(async { tokio::time::timeout(left, updates.recv()).await }) {
                Ok(Some(u)) => seen.take(u),
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn addresses_only_on(&self, host: &str, step: &str) {
        support::service_address::assert_only_on(&self.name, &HOSTS, VIP, host, step);
    }

    /// One cycle of must hold 2: a fresh workload run on a fault-tolerant pair, `serving`
    /// powered off in its middle, `other` takes over, the run ends byte-exact (its failover
    /// row says ok), the workload stops, `serving` is powered on and rejoins as the backup of
    /// `other`. The service address is read from every namespace after each step.
    fn cycle(&mut self, n: usize, serving: &str, other: &str, size: u64) {
        eprintln!("cycle {n}: {serving} serves, {other} is its backup");
        let step = |s: &str| format!("cycle {n}, {s}");
        // Rate limits survive power cycles; set again in case a host lost them.
        for h in ["primary", "backup"] {
            shape_service(&local::host_ns(&self.name, h), 100_000_000, 32_000, 20);
        }
        self.addresses_only_on(serving, &step("before the workload"));

        // A new workload run, opened while the pair is whole: the backup saw its SYN.
        let runs = self.seen.runs.len();
        self.seen.workload = None;
        self.send(UiCommand::ToggleWorkload);
        self.wait(&step("a client run"), Duration::from_secs(10), |s| {
            s.runs.len() > runs
        });
        let run = self.seen.runs.last().unwrap().1;
        self.wait(&step("10 % of the run"), Duration::from_secs(30), |s| {
            s.bytes.get(&run).copied().unwrap_or(0) >= size / 10 || s.done.contains_key(&run)
        });
        assert!(
            !self.seen.done.contains_key(&run),
            "{}: the run ended before its fault (is the rate limit in place?)",
            step("run")
        );

        // Power-off of the host serving, as `p` does.
        let ev = self.seen.events.len();
        let offs = self.seen.powered_off.len();
        self.send(UiCommand::Fault {
            host: serving.into(),
            fault: FaultKey::PowerOff,
        });
        self.wait(&step("the power-off"), Duration::from_secs(10), |s| {
            s.powered_off.len() > offs
        });
        let (off_host, t_fault) = self.seen.powered_off.last().unwrap().clone();
        assert_eq!(off_host, serving);

        // The takeover: detect, fence, every connection rebuilt, and the backup serves.
        self.wait(&step("the takeover"), Duration::from_secs(20), |s| {
            s.has(ev, other, "takeover-done", "") && s.has(ev, other, "serving", "primary")
        });
        let kinds = self.seen.kinds_since(ev, other);
        for k in ["detect", "fence", "takeover"] {
            assert!(
                kinds.contains(&k),
                "{}: no {k} from {other}: {kinds:?}",
                step("takeover")
            );
        }
        let done: Vec<&String> = self.seen.events[ev..]
            .iter()
            .filter(|e| e.0 == other && e.1 == "takeover-done")
            .map(|e| &e.2)
            .collect();
        assert_eq!(
            done,
            vec!["1 connections, 0 failed"],
            "{}",
            step("the takeover")
        );
        self.wait(
            &step("the host records after the takeover"),
            Duration::from_secs(10),
            |s| {
                s.record(other)
                    .is_some_and(|r| r.roles == vec![Role::Primary] && r.holds_service_address)
                    && s.record(serving).is_some_and(|r| {
                        r.state == HostState::PoweredOff && !r.holds_service_address
                    })
            },
        );
        self.addresses_only_on(other, &step("after the takeover"));

        // The run that was going ends byte-exact, on its one connection.
        self.wait(&step("the end of the run"), Duration::from_secs(60), |s| {
            s.done.contains_key(&run)
        });
        let result = &self.seen.done[&run];
        assert_eq!(result.connections.len(), 1, "{result:?}");
        for c in &result.connections {
            assert_eq!(c.error, None, "{}: {c:?}", step("run"));
            assert!(
                c.integrity.integrity_ok,
                "{}: {:?}",
                step("run"),
                c.integrity
            );
            assert_eq!(c.integrity.bytes_received, size, "{}", step("run"));
            assert_eq!(c.attempts, 1, "{}: {c:?}", step("run"));
            assert_eq!(c.reconnected_ns, None, "{}: {c:?}", step("run"));
        }
        // Its failover row, as the dashboard shows it.
        let label = format!("power-off {serving}");
        self.wait(
            &step("the failover row settled"),
            Duration::from_secs(10),
            |s| {
                s.app.failovers.rows.iter().any(|r| {
                    r.label == label
                        && r.fault_ns == t_fault
                        && !matches!(r.state, RowState::Measuring(_))
                })
            },
        );
        let row = self
            .seen
            .app
            .failovers
            .rows
            .iter()
            .find(|r| r.label == label && r.fault_ns == t_fault)
            .unwrap()
            .clone();
        eprintln!(
            "cycle {n}: {label}: detect {:?} ms, takeover {:?} ms, failover {:?} ms",
            row.detect_ms(),
            row.takeover_ms(),
            row.failover_ms()
        );
        assert_eq!(
            row.state,
            RowState::Done,
            "{}: {row:?}",
            step("failover row")
        );
        let f = row.figures.as_ref().expect("settled figures");
        assert!(
            f.integrity.integrity_ok,
            "{}: {row:?}",
            step("failover row")
        );
        assert_eq!(f.integrity.bytes_lost, 0);
        assert_eq!(f.integrity.bytes_duplicated, 0);
        assert!(
            row.takeover_ms().is_some(),
            "{}: {row:?}",
            step("failover row")
        );

        // The workload stops: the next run opens only once the pair is whole again.
        self.send(UiCommand::ToggleWorkload);
        self.wait(
            &step("the workload stopped"),
            Duration::from_secs(10),
            |s| s.workload == Some(false),
        );

        // Power-on, as `o` does: the old host rejoins as the backup and never takes the
        // service address back; the address is read all along.
        let ev = self.seen.events.len();
        let ons = self.seen.powered_on.len();
        let sampler = support::service_address::Sampler::start(&self.name, &HOSTS, VIP);
        self.send(UiCommand::Fault {
            host: serving.into(),
            fault: FaultKey::PowerOn,
        });
        self.wait(&step("the power-on"), Duration::from_secs(30), |s| {
            s.powered_on.len() > ons
        });
        self.wait(&step("the rejoin"), Duration::from_secs(30), |s| {
            s.has(ev, serving, "serving", "backup") && s.has(ev, other, "fault-tolerant", "")
        });
        self.wait(
            &step("the host records after the rejoin"),
            Duration::from_secs(10),
            |s| {
                s.record(serving).is_some_and(|r| {
                    r.roles == vec![Role::Backup]
                        && r.state == HostState::Connected
                        && !r.holds_service_address
                }) && s
                    .record(other)
                    .is_some_and(|r| r.roles == vec![Role::Primary] && r.holds_service_address)
            },
        );
        // A moment more: a host that wrongly came back as primary would show it by now.
        self.idle(Duration::from_millis(500));
        assert!(
            self.seen
                .record(serving)
                .is_some_and(|r| r.roles == vec![Role::Backup] && !r.holds_service_address),
            "{}: {}",
            step("after the rejoin"),
            self.seen.summary()
        );
        let (readings, two) = sampler.stop();
        assert!(
            two.is_empty(),
            "{}: the service address was on two live hosts in {} of {readings} readings: {:?}",
            step("power-on and rejoin"),
            two.len(),
            two.first()
        );
        self.addresses_only_on(other, &step("after the rejoin"));
        let kinds = self.seen.kinds_since(ev, serving);
        assert!(
            !kinds.contains(&"takeover") && !kinds.contains(&"fence") && !kinds.contains(&"detect"),
            "{}: the rejoining host acted: {kinds:?}",
            step("rejoin")
        );
        assert!(
            !self.seen.has(ev, serving, "serving", "primary"),
            "{}: {serving} came back as primary",
            step("rejoin")
        );
    }
}

impl Drop for Dash {
    fn drop(&mut self) {
        let _ = self.commands.send(UiCommand::Shutdown);
        if let Some(w) = self.worker.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(20), w).await });
        }
        let _ = local::destroy(&self.name, None);
    }
}

/// Must hold 2 (issue 13): the dashboard's own code path (its orchestrator, driven with the
/// commands its keys send, its updates taken in by its `App`) through three cycles of fail,
/// take over, rejoin: the primary powered off in the middle of a run → the backup takes the
/// connection over, byte-exact → the old primary powered on → it rejoins as the backup → a new
/// run → the new primary powered off → the rejoined host takes over; and once more. After
/// each step the service address is on exactly one live host, the serving one, as read from
/// the namespaces; during each power-on it is never on two.
#[test]
fn fail_rejoin_fail_again_three_times() {
    if !netns_available("fail_rejoin_fail_again_three_times") {
        return;
    }
    let _s = serial();
    // 40 MB at 100 Mbit/s: about 3.2 s a run, whichever host serves it.
    let size = 40_000_000;
    let mut d = Dash::up("t-st-rejoin", 200, size);
    let (mut serving, mut other) = ("primary", "backup");
    for n in 1..=3 {
        d.cycle(n, serving, other, size);
        std::mem::swap(&mut serving, &mut other);
    }
    // Three takeovers, each ok on the dashboard's failover table.
    let rows: Vec<_> = d
        .seen
        .app
        .failovers
        .rows
        .iter()
        .map(|r| (r.label.clone(), r.state.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("power-off primary".to_string(), RowState::Done),
            ("power-off backup".to_string(), RowState::Done),
            ("power-off primary".to_string(), RowState::Done),
        ]
    );
}

/// The forging tests' topology: two-server.toml with the client on the heartbeat network too
/// (10.10.1.10), so that forged beats reach the servers on both of their links.
fn topology_with_client_on_both_links(name: &str, heartbeat_ms: u64) -> String {
    let text = topology_text(name, heartbeat_ms);
    let old = "addresses = { service = \"10.10.0.10\" }";
    assert!(
        text.contains(old),
        "the client's addresses in two-server.toml"
    );
    text.replace(
        old,
        "addresses = { service = \"10.10.0.10\", heartbeat = \"10.10.1.10\" }",
    )
}

/// Forged beats from the client's namespace claiming to come from `from` (its name, its
/// addresses on each link as the source) to `to`'s addresses on both links.
fn forged_beats(from: &str, to: &str) -> Vec<support::forger::Target> {
    use halab_protocol::modes::st_tcp::Link;
    let addr = |host: &str, net: u8| -> std::net::Ipv4Addr {
        let last = match host {
            "primary" => 1,
            "backup" => 2,
            h => panic!("no address for {h}"),
        };
        std::net::Ipv4Addr::new(10, 10, net, last)
    };
    [(Link::Service, 0), (Link::Heartbeat, 1)]
        .into_iter()
        .map(|(link, net)| support::forger::Target {
            src: addr(from, net),
            dst: addr(to, net),
            link,
            from: from.to_string(),
        })
        .collect()
}

/// `host`'s `refused` events on the heartbeat channel (detail "heartbeat: N forged, M
/// replayed"), in order: (ms after the client started, N).
fn refused_events(r: &Value, host: &str) -> Vec<(f64, u64)> {
    mode_events(r, "refused")
        .iter()
        .filter(|e| e["host"] == host)
        .filter_map(|e| {
            let d = e["detail"].as_str()?;
            if !d.starts_with("heartbeat") {
                return None;
            }
            let words: Vec<&str> = d.split_whitespace().collect();
            let i = words.iter().position(|w| w.starts_with("forged"))?;
            Some((
                e["at_ms"].as_f64()?,
                words.get(i.checked_sub(1)?)?.parse::<u64>().ok()?,
            ))
        })
        .collect()
}

/// Forged datagrams `host` reported refusing on the heartbeat channel.
fn refused_forged(r: &Value, host: &str) -> u64 {
    refused_events(r, host).iter().map(|e| e.1).sum()
}

/// A time of the record (ms after the client started) on the monotonic clock the agents,
/// the console and the forger share on this machine (to within the client's connect time).
fn record_time_ns(r: &Value, at_ms: f64) -> u64 {
    let start = r["connections"][0]["meter"]["start_ns"]
        .as_u64()
        .expect("the connection's start");
    (start as f64 + at_ms * 1e6) as u64
}

/// The addresses of a server of two-server.toml on both links.
fn server_addrs(host: &str) -> Vec<std::net::Ipv4Addr> {
    let last = if host == "primary" { 1 } else { 2 };
    (0..2)
        .map(|net| std::net::Ipv4Addr::new(10, 10, net, last))
        .collect()
}

/// Every forged beat that reached `host` is counted in a `refused` event: what its events
/// after the first one say it refused is what the forger sent it between the first event and
/// the last (and, with `from_first_datagram`, what all its events say is what was sent from
/// the forger's first datagram on: no refused event of `host` can have come before it).
fn assert_every_forgery_counted(
    r: &Value,
    report: &support::forger::Report,
    host: &str,
    from_first_datagram: bool,
) {
    let events = refused_events(r, host);
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        panic!("no refused event from {host}: {}", r["mode_events"]);
    };
    let dst = server_addrs(host);
    let to = record_time_ns(r, last.0);
    let (sent, reported) = if from_first_datagram {
        (
            report.sent_between(&dst, 0, to),
            events.iter().map(|e| e.1).sum::<u64>(),
        )
    } else {
        (
            report.sent_between(&dst, record_time_ns(r, first.0), to),
            events[1..].iter().map(|e| e.1).sum::<u64>(),
        )
    };
    eprintln!("{host}: {sent} forged beats sent, {reported} reported refused ({events:?})");
    // Slack for the few datagrams in flight at an event and the clocks' alignment.
    let slack = 5 + sent / 20;
    assert!(
        reported + slack >= sent,
        "{host} reported {reported} forged beats refused, but {sent} reached it in that time: \
         refusals are not all counted in an event ({events:?}; {})",
        r["mode_events"]
    );
}

/// Must hold 4 (issue 13), heartbeats: during a bulk run the primary is powered off at 40 %;
/// from that moment a forger in the client's namespace sends the backup, every 5 ms on both
/// links, HST1 beats that claim to be the primary's (its name, its link, its source address,
/// a newer incarnation, the live connection with a held FIN) under a made-up key. They do not
/// keep the dead primary alive: detection within 3 × 50 ms + 50 ms of T_fault, the takeover
/// byte-exact, and the backup reports the datagrams it refused.
#[test]
fn forged_heartbeats_do_not_keep_a_dead_primary_alive() {
    if !netns_available("forged_heartbeats_do_not_keep_a_dead_primary_alive") {
        return;
    }
    let _s = serial();
    let name = "t-st-forge";
    // 30 MB at 100 Mbit/s (both servers): the fault after about a second, and more than a
    // second of the run left after the takeover for the backup to report what it refused.
    let exp = one_run(
        "st-forge",
        "workload = \"bulk\"\nsize = \"30MB\"",
        "kind = \"power-off\"",
    );
    let (records, report) = run_lib_on(
        name,
        &topology_with_client_on_both_links(name, 50),
        &exp,
        |name| {
            for h in ["primary", "backup"] {
                shape_service(&local::host_ns(name, h), 100_000_000, 32_000, 10);
            }
            support::forger::Forger::start(support::forger::Spec {
                ns: local::host_ns(name, "client"),
                targets: forged_beats("primary", "backup"),
                every: Duration::from_millis(5),
                gate: Some((local::host_ns(name, "primary"), "service".into())),
                conns: Some(support::forger::ConnSource {
                    client_ns: local::host_ns(name, "client"),
                    vip: std::net::Ipv4Addr::new(10, 10, 0, 100),
                }),
            })
        },
        |_, forger| forger.stop(),
    );
    let r = &records[0];
    eprintln!(
        "forged beats after the power-off: {}; detect {} ms, takeover {} ms, failover {} ms; \
         events {}",
        report.brief(),
        r["detect_ms"],
        r["takeover_ms"],
        r["failover_ms"],
        r["mode_events"]
    );
    assert!(
        report.sent >= 20 && report.failed == 0,
        "the forger sent its beats: {}",
        report.brief()
    );
    assert_clean(r);
    assert_no_reconnect(r);
    let detect = r["detect_ms"]
        .as_f64()
        .expect("the primary's death was detected");
    assert!(
        detect <= 3.0 * 50.0 + 50.0,
        "detected {detect} ms after T_fault, forged beats flowing"
    );
    assert_eq!(
        details(r, "takeover-done"),
        vec!["1 connections, 0 failed".to_string()]
    );
    let forged = refused_forged(r, "backup");
    assert!(
        forged > 0,
        "no refused event from the backup: {}",
        r["mode_events"]
    );
    // Including those that came while it still watched the dead primary, before it took
    // over: the forger began at the power-off, after the backup's last report before it.
    assert_every_forgery_counted(r, &report, "backup", true);
}

/// Must hold 4 (issue 13), the other way round: a failure-free bulk run (4 s at 100 Mbit/s,
/// longer than AppMaxLagTime and MaxDelayFIN) while the forger floods both servers on both
/// links with badly tagged beats: to the backup "from the primary" with the live connection's
/// progress stuck at zero and its FIN held (believed, that is a hung primary and a held FIN:
/// a takeover), to the primary "from the backup" with that connection's close confirmed at
/// byte 0. Nothing happens: no detection, no fence, no takeover, the primary stays fault
/// tolerant, the run is byte-exact, and both servers report what they refused.
#[test]
fn forged_heartbeats_trigger_nothing_in_a_failure_free_run() {
    if !netns_available("forged_heartbeats_trigger_nothing_in_a_failure_free_run") {
        return;
    }
    let _s = serial();
    let name = "t-st-forge0";
    let exp =
        "name = \"st-forge0\"\n[run]\nmode = \"st-tcp\"\nworkload = \"bulk\"\nsize = \"50MB\"\n";
    let (records, report) = run_lib_on(
        name,
        &topology_with_client_on_both_links(name, 50),
        exp,
        |name| {
            for h in ["primary", "backup"] {
                shape_service(&local::host_ns(name, h), 100_000_000, 32_000, 10);
            }
            let mut targets = forged_beats("primary", "backup");
            targets.extend(forged_beats("backup", "primary"));
            support::forger::Forger::start(support::forger::Spec {
                ns: local::host_ns(name, "client"),
                targets,
                every: Duration::from_millis(5),
                gate: None,
                conns: Some(support::forger::ConnSource {
                    client_ns: local::host_ns(name, "client"),
                    vip: std::net::Ipv4Addr::new(10, 10, 0, 100),
                }),
            })
        },
        |_, forger| forger.stop(),
    );
    let r = &records[0];
    eprintln!(
        "forged beats: {}; duration {} ms; events {}",
        report.brief(),
        r["duration_ms"],
        r["mode_events"]
    );
    assert!(
        report.sent >= 100 && report.failed == 0,
        "the forger sent its beats: {}",
        report.brief()
    );
    assert!(
        r["duration_ms"].as_f64().unwrap_or(0.0) > 3000.0,
        "the run must outlast AppMaxLagTime (3 s) for this to mean anything: {} ms",
        r["duration_ms"]
    );
    assert_clean(r);
    assert_no_reconnect(r);
    for kind in [
        "detect",
        "fence",
        "takeover",
        "takeover-done",
        "non-fault-tolerant",
        "fin-held",
        "error",
    ] {
        assert!(
            mode_events(r, kind).is_empty(),
            "forged beats triggered {kind}: {}",
            r["mode_events"]
        );
    }
    for host in ["backup", "primary"] {
        assert!(
            refused_forged(r, host) > 0,
            "no refused event from {host}: {}",
            r["mode_events"]
        );
        assert_every_forgery_counted(r, &report, host, false);
    }
}

/// Must hold 4 (issue 13), fence requests: a fence request whose tag was not made with the
/// testbed's key (a made-up tag on the backup's channel; one sealed under another key from a
/// host that is no backup) powers nothing off and starts no takeover; the primary serves on.
#[test]
fn forged_fence_requests_power_nothing_off() {
    if !netns_available("forged_fence_requests_power_nothing_off") {
        return;
    }
    let _s = serial();
    use halab_protocol::modes::st_tcp::{Event, fence_tag};
    let mut lab = Lab::up("t-st-fence");
    let other_key = halab_protocol::sealed::Key::from_hex(support::forger::FORGED_KEY).unwrap();
    let at = halab_protocol::mono_ns();
    for (from, tag) in [
        ("backup", "00".repeat(32)),
        ("client", fence_tag(&other_key, "primary", at)),
        ("backup", fence_tag(&other_key, "primary", at)),
    ] {
        let event = ModeEvent::StTcp(Event::FenceRequest {
            at_ns: at,
            host: "primary".into(),
            why: "forged".into(),
            tag,
        });
        let tb = lab.tb.as_mut().unwrap();
        let mut handle = halab::lab::handle::Lab::new(tb, &mut lab.inbox);
        let outcome = lab
            .rt
            .block_on(halab::lab::mode_events::handle(&mut handle, from, &event))
            .error
            .map_or(Ok(()), Err);
        eprintln!("forged fence request from {from}: {outcome:?}");
        assert!(
            outcome.is_err(),
            "a forged fence request from {from} was taken as valid"
        );
        let primary = lab
            .tb
            .as_ref()
            .unwrap()
            .snapshot()
            .hosts
            .into_iter()
            .find(|h| h.name == "primary")
            .unwrap();
        assert_eq!(
            primary.state,
            HostState::Connected,
            "the primary was fenced by a forged request from {from}: {primary:?}"
        );
    }
    lab.idle(Duration::from_secs(1));
    let k = lab.kinds();
    for kind in ["detect", "fence", "takeover", "takeover-done"] {
        assert!(
            !k.contains(&kind),
            "{kind} after forged fence requests: {:?}",
            lab.events
        );
    }
    // The primary still serves the service address.
    let out = lab.dir.path().join("after.bin");
    let st = Command::new("ip")
        .args(["netns", "exec", &lab.ns("client"), "curl", "-sS", "--fail"])
        .args(["--max-time", "20", "-o"])
        .arg(&out)
        .arg("http://10.10.0.100:8080/after.bin?size=1000000")
        .status()
        .unwrap();
    assert!(st.success(), "curl after the forged fence requests: {st}");
    assert_content(&out, "/after.bin", 1_000_000);
    support::service_address::assert_only_on(
        &lab.name,
        &HOSTS,
        VIP,
        "primary",
        "after forged fence requests",
    );
}
