//! Fault injection on the wire (issue 4, DESIGN §6–7): each fault fired at a primary in the
//! middle of a long bulk transfer, with a packet capture on the client's side (and, for the link
//! faults, a watch of the primary's rtnetlink announcements) held against the T_fault the
//! console or the agent reported.
//!
//! - power-off: not one FIN or RST leaves the primary, its processes are gone, the client times
//!   out and reconnects to the backup; the last packet from the primary precedes T_fault + 1 ms,
//!   and T_fault is close to the links going down. Power-on brings its agent and role back.
//! - process-kill: a FIN or RST from the primary not before T_fault − 1 ms (the signal
//!   delivered) and no later than the kernel's teardown of the process + 1 ms (or, when the
//!   socket still held data, behind that data).
//! - process-hang: the connection stays open with no data and no FIN/RST; the revert makes the
//!   data flow again on the same connection.
//! - nic-down: nothing from the primary after T_fault + 1 ms, nothing reaches it either; the client
//!   reconnects to the backup; the revert brings the links up and the primary reachable.
//! - lease: a hang with a 300 ms lease is reverted by the agent by itself.
//!
//! The 1 ms bar of issue 4 (must hold 5) is asserted where the kernel's side is a packet (no
//! packet from the primary later than T_fault + 1 ms). For the link faults (power-off,
//! nic-down) T_fault is stamped right before the first link-down call: the fault cannot take
//! effect before the call that makes it, so with the capture's bound the effect lies within
//! [T_fault, T_fault + 1 ms]. Packets carry the kernel's receive
//! stamps, and the user-space stamps (T_fault, taken by the agent's or console's fault thread;
//! the link watch; the test's process watch) are taken by threads at real-time priority, so a
//! bulk transfer saturating both cores cannot delay them; comparisons between two user-space
//! stamps are asserted with [`SLACK`] and whether the bar was met is printed.
//! For a killed process the wire's effect (the FIN) comes during the kernel's teardown of the
//! process, which follows T_fault by 0.1–5 ms on a loaded machine; it is held to that window.
//!
//! Not here: `kill -9` of the console reverting every fault within 2 s, which needs a real
//! console process to kill (`console/tests/run_experiments.rs`,
//! `kill_9_of_the_console_reverts_every_fault_within_2_s`); loss and partition, whose effect
//! is counted at packet level in `agents/tests/faults.rs`.
//!
//! Each test brings up its own copy of `topologies/two-server.toml` under its own name, at
//! library level ([`Testbed`]), so it can drive the agents directly. The tests take turns (one
//! lock): they measure timing at 1 ms resolution, and on a small machine several bulk
//! transfers at once would measure the scheduler instead. Measured figures are printed with
//! `eprintln!` (run with `--nocapture` to see them).

mod support;

use halab::provider::local;
use halab::testbed::{Testbed, UpOptions};
use halab_protocol::{
    AgentMsg, ClientResult, ClientSpec, ConsoleMsg, FaultAction, HTTP_PORT, LogLevel, Role,
    RoleState, WORKLOAD_PORT, Workload, mono_ns,
};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use support::capture::{Capture, LinkEvent, LinkWatch, Packet};
use support::netns_available;
use tokio::sync::mpsc;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);
const PRIMARY: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
const BACKUP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);
/// Every address the primary sends from on the service network.
const FROM_PRIMARY: [Ipv4Addr; 2] = [VIP, PRIMARY];
const MS: u64 = 1_000_000;
/// The bar of issue 4 (must hold 5): T_fault within 1 ms of the fault taking effect.
const ONE_MS: i64 = 1_000_000;
/// What a comparison of a user-space stamp with a user-space watcher is allowed beyond the
/// bar. Both are taken by real-time threads, which no workload on this machine delays; but
/// a virtual machine's vCPU can be descheduled by its host, and the link-down ioctl itself
/// waits for an RCU grace period (the device stops sending at its start, and announces the
/// change at its end): on the shared CI machine one run in several had them 1–2 ms apart.
/// Whether the 1 ms bar was met is printed with the figures; kernel-side facts (no packet
/// after T_fault + 1 ms) are asserted at the bar.
const SLACK: i64 = 5 * ONE_MS;

/// One test at a time: see the module comment.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A testbed of its own, up with its roles running; taken down on drop, also when the test
/// fails, and every leftover of its name removed.
struct Lab {
    name: String,
    rt: tokio::runtime::Runtime,
    tb: Option<Testbed>,
    inbox: mpsc::UnboundedReceiver<(String, AgentMsg)>,
    /// Bytes of the latest client telemetry.
    bytes: u64,
    /// Every client telemetry report: (at_ns, bytes).
    telemetry: Vec<(u64, u64)>,
    /// Connection events streamed with the telemetry, as they came.
    streamed_events: Vec<halab_protocol::ClientEvent>,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn up(name: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/two-server.toml");
        let text = std::fs::read_to_string(shipped).unwrap();
        let text = text.replace("name = \"two-server\"", &format!("name = \"{name}\""));
        assert!(text.contains(name));
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
        // Leftovers of an earlier run of this test that was killed.
        let _ = local::destroy(name, None);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut tb = rt
            .block_on(Testbed::up(topo, &opts))
            .unwrap_or_else(|e| panic!("up {name}: {}", halab::error::chain(&e)));
        let inbox = tb.take_inbox().expect("inbox");
        let mut lab = Lab {
            name: name.to_string(),
            rt,
            tb: Some(tb),
            inbox,
            bytes: 0,
            telemetry: Vec::new(),
            streamed_events: Vec::new(),
            _dir: dir,
        };
        lab.rt
            .block_on(lab.tb().start_roles())
            .expect("start roles");
        let mut running = Vec::new();
        while running.len() < 2 {
            let host = lab.wait(
                Duration::from_secs(10),
                "server roles running",
                |h, m| match m {
                    AgentMsg::RoleState {
                        role: Role::Primary | Role::Backup,
                        state,
                        detail,
                        ..
                    } => {
                        assert_eq!(*state, RoleState::Running, "{h}: {detail:?}");
                        Some(h.to_string())
                    }
                    _ => None,
                },
            );
            running.push(host);
        }
        lab
    }

    fn tb(&self) -> &Testbed {
        self.tb.as_ref().expect("testbed up")
    }

    fn ns(&self, host: &str) -> String {
        local::host_ns(&self.name, host)
    }

    fn send(&self, host: &str, msg: ConsoleMsg) {
        self.rt
            .block_on(self.tb().send(host, msg))
            .unwrap_or_else(|e| panic!("send to {host}: {}", halab::error::chain(&e)));
    }

    /// Takes messages from the agents until `f` picks one, for at most `within`.
    fn wait<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut f: impl FnMut(&str, &AgentMsg) -> Option<T>,
    ) -> T {
        let Lab {
            rt,
            inbox,
            bytes,
            telemetry,
            streamed_events,
            ..
        } = self;
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                match tokio::time::timeout_at(deadline, inbox.recv()).await {
                    Err(_) => panic!("{what}: not within {within:?}"),
                    Ok(None) => panic!("{what}: every agent is gone"),
                    Ok(Some((host, msg))) => {
                        match &msg {
                            AgentMsg::ClientTelemetry {
                                bytes: b,
                                at_ns,
                                events,
                                ..
                            } => {
                                *bytes = *b;
                                telemetry.push((*at_ns, *b));
                                streamed_events.extend(events.iter().cloned());
                            }
                            AgentMsg::Log {
                                level: LogLevel::Error | LogLevel::Warn,
                                message,
                                ..
                            } => eprintln!("  [{host}] {message}"),
                            AgentMsg::FaultFailed { id, error } => {
                                eprintln!("  [{host}] fault {id} failed: {error}")
                            }
                            _ => {}
                        }
                        if let Some(t) = f(&host, &msg) {
                            return t;
                        }
                    }
                }
            }
        })
    }

    /// Starts run `run`'s bulk client on the client host and waits until it streams.
    fn start_client(&mut self, run: u64, idle_timeout_ms: u64) {
        let spec = ClientSpec {
            workload: Workload::Bulk,
            seed: run,
            // Far more than a test lasts: the transfer is still running at every fault.
            size: 20_000_000_000,
            connections: 1,
            servers: vec![VIP.to_string(), BACKUP.to_string()],
            workload_port: WORKLOAD_PORT,
            http_port: HTTP_PORT,
            idle_timeout_ms,
            connect_timeout_ms: 1000,
            max_attempts: 5,
            deadline_ms: 120_000,
            mode: Default::default(),
            progress_marks_ppm: Vec::new(),
        };
        self.send("client", ConsoleMsg::StartClient { run, spec });
        self.wait_bytes_above(1_000_000, Duration::from_secs(10), "client streaming");
    }

    /// Waits for client telemetry showing more than `n` bytes; returns them.
    fn wait_bytes_above(&mut self, n: u64, within: Duration, what: &str) -> u64 {
        self.wait(within, what, |_, m| match m {
            AgentMsg::ClientTelemetry { bytes, .. } if *bytes > n => Some(*bytes),
            _ => None,
        })
    }

    /// Waits until two telemetry reports in a row show the same byte count (the transfer
    /// stalled); returns it.
    fn wait_stall(&mut self, within: Duration) -> u64 {
        let mut last = None;
        self.wait(within, "client stalled", |_, m| match m {
            AgentMsg::ClientTelemetry { bytes, .. } => {
                let stalled = last == Some(*bytes);
                last = Some(*bytes);
                stalled.then_some(*bytes)
            }
            _ => None,
        })
    }

    /// Stops run `run`'s client and returns what it saw.
    fn stop_client(&mut self, run: u64) -> ClientResult {
        self.send("client", ConsoleMsg::StopClient { run });
        self.wait(Duration::from_secs(10), "client done", |_, m| match m {
            AgentMsg::ClientDone { run: r, result } if *r == run => Some((**result).clone()),
            _ => None,
        })
    }

    /// Injects a fault on `host`; its T_fault, or the agent's refusal.
    fn inject(
        &mut self,
        host: &str,
        id: u64,
        action: FaultAction,
        lease_ms: Option<u64>,
    ) -> Result<u64, String> {
        self.send(
            host,
            ConsoleMsg::InjectFault {
                id,
                action,
                lease_ms,
            },
        );
        let host = host.to_string();
        self.wait(Duration::from_secs(5), "fault answer", |h, m| match m {
            AgentMsg::FaultApplied { id: i, at_ns, .. } if *i == id && h == host => {
                Some(Ok(*at_ns))
            }
            AgentMsg::FaultFailed { id: i, error } if *i == id && h == host => {
                Some(Err(error.clone()))
            }
            _ => None,
        })
    }

    /// Waits for fault `id` on `host` to be reverted, for at most `within`: (at_ns, reason).
    fn wait_reverted(&mut self, host: &str, id: u64, within: Duration) -> (u64, String) {
        let host = host.to_string();
        self.wait(within, &format!("fault {id} reverted"), |h, m| match m {
            AgentMsg::FaultReverted {
                id: i,
                at_ns,
                reason,
            } if *i == id && h == host => Some((*at_ns, reason.clone())),
            _ => None,
        })
    }

    fn revert(&mut self, host: &str, id: u64) -> (u64, String) {
        self.send(host, ConsoleMsg::RevertFault { id });
        self.wait_reverted(host, id, Duration::from_secs(5))
    }

    /// Processes in `host`'s namespace.
    fn pids(&self, host: &str) -> Vec<i32> {
        let ns = self.ns(host);
        local::pids_in_namespaces(std::slice::from_ref(&ns))
            .remove(&ns)
            .unwrap_or_default()
    }

    /// Takes the testbed down and checks that nothing of it is left.
    fn down(mut self) {
        let tb = self.tb.take().expect("testbed up");
        self.rt
            .block_on(tb.down())
            .unwrap_or_else(|e| panic!("down: {}", halab::error::chain(&e)));
        let prefix = format!("hl.{}.", self.name);
        let left: Vec<String> = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "namespaces left after down: {left:?}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(tb) = self.tb.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), tb.down()).await });
        }
        // Whatever a failed test or a failed down left behind.
        let _ = local::destroy(&self.name, None);
    }
}

/// Signed difference a − b in nanoseconds.
fn diff(a: u64, b: u64) -> i64 {
    a as i64 - b as i64
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// Packets from the primary, by the time they were seen.
fn from_primary(packets: &[Packet]) -> Vec<&Packet> {
    let mut v: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.sent_by_any(&FROM_PRIMARY))
        .collect();
    v.sort_by_key(|p| p.at_ns);
    v
}

fn show(packets: &[&Packet]) -> String {
    packets
        .iter()
        .take(20)
        .map(|p| format!("\n    {}", p.describe()))
        .collect()
}

/// A TCP connection from `from_ns` to `addr`:7070, retried for up to 5 s (neighbour entries
/// may need to be learnt again); the error of the last attempt if none succeeded.
fn connect_from(from_ns: &str, addr: Ipv4Addr) -> Result<(), String> {
    support::in_netns(from_ns, move || {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let attempt = tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect((addr, WORKLOAD_PORT)),
                )
                .await;
                let err = match attempt {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(err);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    })
}

/// Checks that the client detected the failure by its idle timeout and went on at the backup.
fn assert_failed_over_by_timeout(result: &ClientResult, idle_ms: u64) {
    let c = &result.connections[0];
    assert_eq!(
        c.detect_reason.as_deref(),
        Some(format!("no data for {idle_ms} ms").as_str()),
        "{c:?}"
    );
    assert_eq!(
        c.servers_used.first().map(String::as_str),
        Some("10.10.0.100")
    );
    assert!(
        c.servers_used.iter().skip(1).any(|s| s == "10.10.0.2"),
        "no reconnect to the backup: {:?}",
        c.servers_used
    );
    assert!(c.reconnected_ns.is_some() && c.resume_ns.is_some(), "{c:?}");
}

/// The client's idle timeout counts from its last byte, which came by T_fault: detection
/// `idle_ms` after T_fault, give or take what the client still had to read then.
fn assert_detected_after_idle(c: &halab_protocol::ConnectionResult, t_fault: u64, idle_ms: u64) {
    let d = diff(c.detect_ns.expect("detected"), t_fault);
    let idle = (idle_ms * MS) as i64;
    assert!(
        d >= idle - 10 * MS as i64 && d <= idle + 250 * MS as i64,
        "the client declared \"no data for {idle_ms} ms\" {:.1} ms after T_fault, its last byte \
         having come by then (the bulk client awaits `expect_fin` even after `receive` failed — \
         `r.and(expect_fin(..).await)` evaluates its argument — so its idle timeout runs twice)",
        ms(d)
    );
}

/// When the client's byte count stopped growing after `t`: the first telemetry report after
/// `t` that the next one equals (the client's last byte came at most 100 ms before it).
fn client_stalled_at(telemetry: &[(u64, u64)], t: u64) -> Option<u64> {
    telemetry
        .windows(2)
        .find(|w| w[0].0 >= t && w[0].1 == w[1].1)
        .map(|w| w[0].0)
}

/// Median gap between consecutive packets from the primary in the `window` ns before `t`: how
/// finely the packet stream can place the moment it stopped.
fn median_gap(primary: &[&Packet], t: u64, window: u64) -> Option<u64> {
    let times: Vec<u64> = primary
        .iter()
        .map(|p| p.at_ns)
        .filter(|&a| a < t && a + window >= t)
        .collect();
    let mut gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied()
}

/// The client's longest receive gap: (when it began relative to `t`, its length), both in ms.
fn client_stall(c: &halab_protocol::ConnectionResult, t: u64) -> (f64, f64) {
    let m = &c.meter;
    let began = m
        .stall_at_ms
        .map_or(f64::NAN, |a| (m.start_ns as f64 + a * 1e6 - t as f64) / 1e6);
    (began, m.stall_ms.unwrap_or(f64::NAN))
}

/// The first announcement of each link (but `lo`) going down at or after `since`.
fn first_downs(events: &[LinkEvent], since: u64) -> Vec<&LinkEvent> {
    let mut out: Vec<&LinkEvent> = Vec::new();
    for e in events {
        if e.at_ns >= since
            && !e.up
            && !e.deleted
            && e.name != "lo"
            && !out.iter().any(|o| o.ifindex == e.ifindex)
        {
            out.push(e);
        }
    }
    out
}

/// Watches process `pid` for its end (a pidfd turns readable when the whole process is gone):
/// the thread returns the moment it saw that, or None if not within 10 s.
fn watch_exit(pid: i32) -> std::thread::JoinHandle<Option<u64>> {
    // SAFETY: pidfd_open(2) returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(
        raw >= 0,
        "pidfd_open {pid}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    std::thread::spawn(move || {
        // Stamped the moment the kernel reports the process gone, however busy the cores are.
        halab_protocol::sys::enter_realtime().expect("real-time priority for the exit watch");
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one live pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, 10_000) };
        (rc == 1).then(mono_ns)
    })
}

/// The link announcements of a host whose links a fault took down: checks that every link but
/// `lo` went down, and returns when the first and the last did, relative to T_fault.
fn links_down(events: &[LinkEvent], since: u64, t_fault: u64, what: &str) -> (i64, i64) {
    let downs = first_downs(events, since);
    let names: Vec<&str> = downs.iter().map(|e| e.name.as_str()).collect();
    assert!(
        names.contains(&"service") && names.contains(&"heartbeat"),
        "{what}: links announced down: {names:?} ({events:?})"
    );
    let first = diff(downs.iter().map(|e| e.at_ns).min().unwrap(), t_fault);
    let last = diff(downs.iter().map(|e| e.at_ns).max().unwrap(), t_fault);
    (first, last)
}

/// T_fault is stamped right before the first link-down call, and the kernel announces each
/// link down at the end of its call: the last announcement comes after T_fault (never before:
/// the fault cannot have been announced before it was made), within the 1 ms bar plus
/// [`SLACK`] (the call's RCU wait and the watcher's wake-up on a loaded VM); whether the bar
/// was met is printed.
fn assert_t_fault_at(last_down: i64, what: &str) {
    eprintln!(
        "{what}: last link announced down within 1 ms after T_fault: {}",
        if (0..=ONE_MS).contains(&last_down) {
            "yes"
        } else {
            "no"
        }
    );
    assert!(
        last_down >= 0,
        "{what}: a link was announced down {:.3} ms before T_fault",
        ms(-last_down)
    );
    assert!(
        last_down <= ONE_MS + SLACK,
        "{what}: the last link was announced down {:.3} ms after T_fault (bar: 1 ms)",
        ms(last_down)
    );
}

/// (1) Power-off of the primary: the links go down before anything is killed, so not one FIN
/// or RST leaves it; its processes are gone; the client notices only by its idle timeout and
/// reconnects to the backup. No packet from the primary is seen after T_fault + 1 ms, and
/// T_fault is close to the links going down (rtnetlink). Power-on brings its agent and role
/// back.
#[test]
fn power_off_sends_nothing_and_kills_every_process() {
    if !netns_available("power_off_sends_nothing_and_kills_every_process") {
        return;
    }
    let _serial = serial();
    let mut lab = Lab::up("t-f-pwr");
    let before = lab.pids("primary");
    assert!(
        before.len() >= 2,
        "agent and server in the primary: {before:?}"
    );
    let agent_before = lab.tb().snapshot().hosts[0].agent_pid;
    let cap = Capture::start(&lab.ns("client"), WORKLOAD_PORT);
    let links = LinkWatch::start(&lab.ns("primary"));
    lab.start_client(1, 1000);

    let t_call = mono_ns();
    let t_fault = lab
        .rt
        .block_on(lab.tb().power_off("primary"))
        .unwrap_or_else(|e| panic!("power off: {}", halab::error::chain(&e)));
    let since = std::time::Instant::now();
    let gone_after = loop {
        let left = lab.pids("primary");
        if left.is_empty() {
            break since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(2),
            "processes left in the primary after power-off: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };

    // The transfer stalls, then resumes at the backup after the 1000 ms idle timeout.
    let stalled = lab.wait_stall(Duration::from_secs(3));
    lab.wait_bytes_above(
        stalled + 1_000_000,
        Duration::from_secs(10),
        "resumed at the backup",
    );
    let result = lab.stop_client(1);
    let packets = cap.stop();
    let events = links.stop();

    assert_failed_over_by_timeout(&result, 1000);
    let primary = from_primary(&packets);
    assert!(!primary.is_empty(), "the capture saw the primary's data");
    let closing: Vec<&Packet> = primary.iter().copied().filter(|p| p.fin_or_rst()).collect();
    let closing_after: Vec<&Packet> = closing
        .iter()
        .copied()
        .filter(|p| p.at_ns >= t_fault || p.recv_ns >= t_fault)
        .collect();
    assert!(
        closing_after.is_empty(),
        "FIN/RST from the powered-off primary:{}",
        show(&closing_after)
    );
    assert!(
        closing.is_empty(),
        "FIN/RST from the primary before the power-off:{}",
        show(&closing)
    );
    let last = primary.last().unwrap();
    let gap = diff(last.at_ns, t_fault);
    let (first_down, last_down) = links_down(&events, t_call, t_fault, "power-off");
    let c = &result.connections[0];
    eprintln!(
        "power-off: links announced down at T_fault {:+.3} / {:+.3} ms (first / last; \
         power_off called at T_fault {:+.3} ms); {} packets from the primary, 0 FIN/RST; the \
         last at T_fault {:+.3} ms (kernel stamp; {:+.3} ms by receipt; median gap between its \
         packets before the fault {:.3} ms); processes gone {:.1} ms after power_off returned",
        ms(first_down),
        ms(last_down),
        ms(diff(t_call, t_fault)),
        primary.len(),
        ms(gap),
        ms(diff(last.recv_ns, t_fault)),
        median_gap(&primary, t_fault, 200 * MS).map_or(f64::NAN, |g| ms(g as i64)),
        gone_after.as_secs_f64() * 1e3,
    );
    let (stall_began, stall_ms) = client_stall(c, t_fault);
    eprintln!(
        "power-off: client bytes stopped by T_fault {:+.1} ms (telemetry); its longest receive \
         gap began at T_fault {stall_began:+.3} ms and lasted {stall_ms:.1} ms; detected {:?} \
         at T_fault {:+.1} ms, reconnected {:+.1} ms, resumed {:+.1} ms, servers {:?}",
        client_stalled_at(&lab.telemetry, t_fault).map_or(f64::NAN, |t| ms(diff(t, t_fault))),
        c.detect_reason,
        ms(diff(c.detect_ns.unwrap(), t_fault)),
        ms(diff(c.reconnected_ns.unwrap(), t_fault)),
        ms(diff(c.resume_ns.unwrap(), t_fault)),
        c.servers_used,
    );
    assert!(
        gap < ONE_MS,
        "the primary's last packet came {:.3} ms after T_fault\n  {}",
        ms(gap),
        last.describe()
    );
    assert_t_fault_at(last_down, "power-off");

    // Fencing a host that is already off is a logged no-op: it stays off, nothing fails.
    lab.rt
        .block_on(lab.tb().fence("primary", "test: fence after power-off"))
        .unwrap_or_else(|e| panic!("fence: {}", halab::error::chain(&e)));
    assert_eq!(
        lab.tb().snapshot().hosts[0].state,
        halab::state::HostState::PoweredOff
    );

    // Power-on: links up, a new agent connected, its role running and reachable again.
    {
        let Lab { rt, tb, .. } = &mut lab;
        rt.block_on(tb.as_mut().unwrap().power_on("primary"))
            .unwrap_or_else(|e| panic!("power on: {}", halab::error::chain(&e)));
    }
    let snap = lab.tb().snapshot();
    let h = &snap.hosts[0];
    assert_eq!(h.name, "primary");
    assert_eq!(h.state, halab::state::HostState::Connected, "{h:?}");
    assert!(
        h.agent_pid.is_some() && h.agent_pid != agent_before,
        "{h:?}"
    );
    lab.wait(
        Duration::from_secs(10),
        "primary role after power-on",
        |host, m| {
            matches!(
                m,
                AgentMsg::RoleState {
                    role: Role::Primary,
                    state: RoleState::Running,
                    ..
                } if host == "primary"
            )
            .then_some(())
        },
    );
    connect_from(&lab.ns("client"), VIP).expect("the primary serves again after power-on");
    assert_detected_after_idle(&result.connections[0], t_fault, 1000);
    lab.down();
}

/// (2) Process kill: the kernel closes the dead server's sockets, so the client sees a FIN or
/// RST from the primary: not before the T_fault the agent reported, and no later than the
/// kernel's teardown of the process (pidfd) + 1 ms — or, when the socket still held data the
/// server had written, behind that data. Whether it came within 1 ms of T_fault is printed.
#[test]
fn process_kill_sends_fin_or_rst_at_t_fault() {
    if !netns_available("process_kill_sends_fin_or_rst_at_t_fault") {
        return;
    }
    process_end_sends_fin_or_rst(
        "t-f-kill",
        "process-kill",
        FaultAction::ProcessKill {
            role: Role::Primary,
        },
    );
}

/// Process crash with cleanup: SIGTERM ends the server, and the kernel closes its connections
/// with FIN/RST as for a kill (DESIGN §6: the fault ST-TCP must hold the FIN back for).
#[test]
fn process_crash_sends_fin_or_rst_at_t_fault() {
    if !netns_available("process_crash_sends_fin_or_rst_at_t_fault") {
        return;
    }
    process_end_sends_fin_or_rst(
        "t-f-crash",
        "process-crash",
        FaultAction::ProcessCrash {
            role: Role::Primary,
        },
    );
}

/// A fault that ends the primary's server process (`action`): FIN or RST on the wire at
/// T_fault, the client notices the close and moves to the backup.
fn process_end_sends_fin_or_rst(testbed: &str, what: &str, action: FaultAction) {
    let _serial = serial();
    let mut lab = Lab::up(testbed);
    let agent = lab.tb().snapshot().hosts[0].agent_pid.expect("agent pid") as i32;
    let server: Vec<i32> = lab
        .pids("primary")
        .into_iter()
        .filter(|&p| p != agent)
        .collect();
    assert_eq!(
        server.len(),
        1,
        "one server process in the primary: {server:?}"
    );
    let exited = watch_exit(server[0]);
    let cap = Capture::start(&lab.ns("client"), WORKLOAD_PORT);
    lab.start_client(1, 1000);
    let t_fault = lab.inject("primary", 1, action, None).expect(what);
    // The client sees the close and goes on at the backup at once.
    std::thread::sleep(Duration::from_millis(500));
    lab.wait_bytes_above(lab.bytes + 1_000_000, Duration::from_secs(5), "resumed");
    let result = lab.stop_client(1);
    let packets = cap.stop();
    let exited = exited.join().unwrap().expect("the server process ended");

    let primary = from_primary(&packets);
    let closing: Vec<&Packet> = primary.iter().copied().filter(|p| p.fin_or_rst()).collect();
    assert!(
        !closing.is_empty(),
        "{what}: no FIN or RST from the primary"
    );
    let first = closing[0];
    let delay = diff(first.at_ns, t_fault);
    let last_data = primary
        .iter()
        .rfind(|p| p.payload_len > 0 && p.at_ns <= first.at_ns);
    // What the dead server had written and the kernel still sent around its end, ahead of the
    // FIN.
    let drained: u64 = primary
        .iter()
        .filter(|p| p.at_ns >= t_fault && p.at_ns <= first.at_ns)
        .map(|p| p.payload_len as u64)
        .sum();
    let c = &result.connections[0];
    eprintln!(
        "{what}: first {} from the primary at T_fault {:+.3} ms (kernel stamp; {:+.3} ms \
         by receipt), after {drained} bytes of queued data sent since T_fault; the \
         server process gone at T_fault {:+.3} ms (the test's pidfd); {} FIN/RST in all; last data before it at \
         T_fault {:+.3} ms; client: {:?} at T_fault {:+.3} ms, servers {:?}; FIN within 1 ms \
         of T_fault: {}",
        if first.flags.rst { "RST" } else { "FIN" },
        ms(delay),
        ms(diff(first.recv_ns, t_fault)),
        ms(diff(exited, t_fault)),
        closing.len(),
        last_data.map_or(f64::NAN, |p| ms(diff(p.at_ns, t_fault))),
        c.detect_reason,
        c.detect_ns.map_or(f64::NAN, |d| ms(diff(d, t_fault))),
        c.servers_used,
        if delay.abs() <= ONE_MS { "yes" } else { "no" },
    );
    assert!(c.detect_ns.is_some(), "the client noticed the close: {c:?}");
    // The close and the reconnect were streamed live with the telemetry, not only recorded.
    assert!(
        lab.streamed_events.iter().any(|e| matches!(
            &e.event,
            halab_workload::ConnEvent::Reconnect { to } if to == "10.10.0.2"
        )),
        "no reconnect among the streamed events: {:?}",
        lab.streamed_events
    );
    assert!(
        c.servers_used.iter().skip(1).any(|s| s == "10.10.0.2"),
        "{:?}",
        c.servers_used
    );
    let reason = c.detect_reason.as_deref().unwrap_or("");
    assert!(
        reason.starts_with("FIN after") || reason.starts_with("TCP error"),
        "the client learnt of the kill from the close, not a timeout: {reason}"
    );
    // T_fault is the signal: the process was gone after it, and nothing closed the
    // connection before it.
    let gone = diff(exited, t_fault);
    assert!(
        gone >= -ONE_MS - SLACK,
        "{what}: the server process was gone {:.3} ms before T_fault",
        ms(-gone)
    );
    assert!(
        delay >= -ONE_MS - SLACK,
        "the first FIN/RST came {:.3} ms before T_fault:{}",
        ms(-delay),
        show(&closing)
    );
    if drained == 0 {
        // Nothing queued in the socket: the FIN left as the exiting process's files were
        // closed, during the kernel's teardown of the process, before it reported the process
        // gone. The teardown runs in the dying process's own context, at its priority: on a
        // loaded machine it took 0.1–5 ms here, so the FIN is held to that window, not to
        // T_fault + 1 ms (the report line gives both).
        assert!(
            delay <= gone + ONE_MS,
            "the FIN came {:.3} ms after T_fault ({:.3} ms after the process was gone) with \
             nothing queued ahead of it:{}",
            ms(delay),
            ms(delay - gone),
            show(&closing)
        );
    } else {
        // What the server wrote before it died is still delivered, and the FIN goes out
        // behind it (close(2) semantics): as fast as the client takes it, not within 1 ms.
        assert!(
            delay <= 100 * MS as i64,
            "the FIN came {:.3} ms after T_fault, behind {drained} queued bytes:{}",
            ms(delay),
            show(&closing)
        );
    }
    lab.down();
}

/// (3) Process hang: SIGSTOP leaves the connection open and silent, no FIN, no RST, no
/// reconnect; the revert (SIGCONT) makes the data flow again on the same connection.
#[test]
fn process_hang_keeps_the_connection_open_and_silent_until_reverted() {
    if !netns_available("process_hang_keeps_the_connection_open_and_silent_until_reverted") {
        return;
    }
    let _serial = serial();
    let mut lab = Lab::up("t-f-hang");
    let cap = Capture::start(&lab.ns("client"), WORKLOAD_PORT);
    lab.start_client(1, 5000);
    let t_fault = lab
        .inject(
            "primary",
            1,
            FaultAction::ProcessHang {
                role: Role::Primary,
            },
            None,
        )
        .expect("process hang");
    let window_end = t_fault + 1000 * MS;
    let now = mono_ns();
    if now < window_end {
        std::thread::sleep(Duration::from_nanos(window_end - now));
    }
    let stalled = lab.bytes;
    let (t_revert, reason) = lab.revert("primary", 1);
    assert_eq!(reason, "requested");
    lab.wait_bytes_above(
        stalled + 1_000_000,
        Duration::from_secs(5),
        "data after the revert",
    );
    let result = lab.stop_client(1);
    let packets = cap.stop();

    let primary = from_primary(&packets);
    let in_window: Vec<&Packet> = primary
        .iter()
        .copied()
        .filter(|p| p.at_ns >= t_fault && p.at_ns < window_end)
        .collect();
    let closing: Vec<&Packet> = in_window
        .iter()
        .copied()
        .filter(|p| p.fin_or_rst())
        .collect();
    assert!(
        closing.is_empty(),
        "FIN/RST from the hung primary:{}",
        show(&closing)
    );
    // What the kernel had queued in the socket when the process stopped still goes out (TCP
    // sends it, not the process); after that, nothing.
    let last_data = in_window
        .iter()
        .filter(|p| p.payload_len > 0)
        .map(|p| diff(p.at_ns, t_fault))
        .max();
    let data_after_revert = primary
        .iter()
        .find(|p| p.payload_len > 0 && p.at_ns >= t_revert)
        .map(|p| diff(p.at_ns, t_revert));
    let c = &result.connections[0];
    eprintln!(
        "process-hang: {} packets from the primary in the 1 s after T_fault, 0 FIN/RST; its \
         last data at T_fault {} (the socket's queue draining); data again {} after the \
         revert; client: attempts {}, detect {:?}",
        in_window.len(),
        last_data.map_or("(none)".into(), |d| format!("{:+.3} ms", ms(d))),
        data_after_revert.map_or("(none)".into(), |d| format!("{:+.3} ms", ms(d))),
        c.attempts,
        c.detect_reason,
    );
    let drain = 100 * MS as i64;
    assert!(
        last_data.is_none_or(|d| d < drain),
        "data from the hung primary {:.3} ms after T_fault:{}",
        ms(last_data.unwrap()),
        show(&in_window)
    );
    let client_syns: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.flags.syn && !p.flags.ack && p.at_ns >= t_fault && p.at_ns < window_end)
        .collect();
    assert!(
        client_syns.is_empty(),
        "the client reconnected:{}",
        show(&client_syns)
    );
    assert!(
        data_after_revert.is_some(),
        "no data from the primary after the revert"
    );
    assert_eq!(c.attempts, 1, "one connection throughout: {c:?}");
    assert_eq!(c.detect_reason, None, "{c:?}");
    lab.down();
}

/// (4) NIC down on the primary: nothing leaves it and nothing reaches it after T_fault + 1 ms; the
/// client reconnects to the backup; the revert brings its links up and makes it reachable.
#[test]
fn nic_down_stops_traffic_both_ways_and_revert_restores_it() {
    if !netns_available("nic_down_stops_traffic_both_ways_and_revert_restores_it") {
        return;
    }
    let _serial = serial();
    let mut lab = Lab::up("t-f-nic");
    let cap = Capture::start(&lab.ns("client"), WORKLOAD_PORT);
    let cap_primary = Capture::start(&lab.ns("primary"), WORKLOAD_PORT);
    let links = LinkWatch::start(&lab.ns("primary"));
    lab.start_client(1, 1000);
    let t_call = mono_ns();
    let t_fault = match lab.inject("primary", 1, FaultAction::NicDown { interface: None }, None) {
        Ok(t) => t,
        Err(e) => panic!("nic-down refused ({e}): needs the agent's fault ledger"),
    };
    let stalled = lab.wait_stall(Duration::from_secs(3));
    lab.wait_bytes_above(
        stalled + 1_000_000,
        Duration::from_secs(10),
        "resumed at the backup",
    );
    let result = lab.stop_client(1);
    let packets = cap.stop();
    let at_primary = cap_primary.stop();

    assert_failed_over_by_timeout(&result, 1000);
    let primary = from_primary(&packets);
    // T_fault is the start of the link-down call: a packet already on its way through the
    // bridge then may still arrive just after it, none 1 ms later.
    let after: Vec<&Packet> = primary
        .iter()
        .copied()
        .filter(|p| p.at_ns >= t_fault + ONE_MS as u64)
        .collect();
    let last = primary.last().expect("the primary's data was seen");
    let mut seen_there: Vec<&Packet> = at_primary.iter().collect();
    seen_there.sort_by_key(|p| p.at_ns);
    let last_there = seen_there
        .last()
        .expect("the primary's own capture saw the transfer");
    let c = &result.connections[0];
    eprintln!(
        "nic-down: last packet from the primary at T_fault {:+.3} ms (client side; median gap \
         between its packets before the fault {:.3} ms), last packet in the primary's \
         namespace at T_fault {:+.3} ms; {} from the primary after T_fault + 1 ms; client: {:?} at \
         T_fault {:+.1} ms, resumed {:+.1} ms, servers {:?}",
        ms(diff(last.at_ns, t_fault)),
        median_gap(&primary, t_fault, 200 * MS).map_or(f64::NAN, |g| ms(g as i64)),
        ms(diff(last_there.at_ns, t_fault)),
        after.len(),
        c.detect_reason,
        c.detect_ns.map_or(f64::NAN, |d| ms(diff(d, t_fault))),
        c.resume_ns.map_or(f64::NAN, |d| ms(diff(d, t_fault))),
        c.servers_used,
    );
    assert!(
        after.is_empty(),
        "packets from the primary later than T_fault + 1 ms after nic-down:{}",
        show(&after)
    );
    assert!(
        diff(last_there.at_ns, t_fault) < ONE_MS,
        "traffic in the primary's namespace {:.3} ms after nic-down:\n  {}",
        ms(diff(last_there.at_ns, t_fault)),
        last_there.describe()
    );

    let (t_revert, reason) = lab.revert("primary", 1);
    assert_eq!(reason, "requested");
    let events = links.stop();
    let (first_down, last_down) = links_down(&events, t_call, t_fault, "nic-down");
    let ups: Vec<&LinkEvent> = events
        .iter()
        .filter(|e| e.up && e.at_ns >= t_fault && e.name != "lo")
        .collect();
    eprintln!(
        "nic-down: links announced down at T_fault {:+.3} / {:+.3} ms (first / last; \
         InjectFault sent at T_fault {:+.3} ms); revert reported at T_revert, links announced \
         up at T_revert {}",
        ms(first_down),
        ms(last_down),
        ms(diff(t_call, t_fault)),
        ups.iter()
            .map(|e| format!("{} {:+.3} ms", e.name, ms(diff(e.at_ns, t_revert))))
            .collect::<Vec<_>>()
            .join(", "),
    );
    assert_t_fault_at(last_down, "nic-down");
    let links = support::run("ip", &["-n", &lab.ns("primary"), "-o", "link", "show"]);
    for line in links.lines().filter(|l| !l.contains(" lo:")) {
        assert!(
            line.contains("state UP"),
            "link not up after the revert: {line}"
        );
    }
    assert!(
        links.lines().count() >= 3,
        "lo, service and heartbeat: {links}"
    );
    for addr in [PRIMARY, VIP] {
        connect_from(&lab.ns("client"), addr)
            .unwrap_or_else(|e| panic!("{addr}:7070 unreachable after the revert: {e}"));
    }
    assert_detected_after_idle(&result.connections[0], t_fault, 1000);
    lab.down();
}

/// (5) A lease: a hang with a 300 ms lease is reverted by the agent by itself, and the data
/// flows again on the same connection.
#[test]
fn an_expired_lease_reverts_the_fault_by_itself() {
    if !netns_available("an_expired_lease_reverts_the_fault_by_itself") {
        return;
    }
    let _serial = serial();
    let mut lab = Lab::up("t-f-lease");
    lab.start_client(1, 5000);
    let t_fault = lab
        .inject(
            "primary",
            1,
            FaultAction::ProcessHang {
                role: Role::Primary,
            },
            Some(300),
        )
        .expect("process hang");
    let (t_revert, reason) = lab.wait_reverted("primary", 1, Duration::from_secs(3));
    let stalled = lab.bytes;
    lab.wait_bytes_above(
        stalled + 1_000_000,
        Duration::from_secs(5),
        "data after the lease",
    );
    let result = lab.stop_client(1);
    let held = diff(t_revert, t_fault);
    eprintln!(
        "lease: hang with lease 300 ms reverted by the agent after {:.3} ms ({reason:?})",
        ms(held)
    );
    assert!(reason.contains("lease"), "{reason}");
    assert!(
        (300 * MS as i64..400 * MS as i64).contains(&held),
        "reverted {:.3} ms after T_fault, lease 300 ms",
        ms(held)
    );
    let c = &result.connections[0];
    assert_eq!(c.attempts, 1, "one connection throughout: {c:?}");
    lab.down();
}
