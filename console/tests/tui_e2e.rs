//! The dashboard end to end: the real `halab up` binary in a real terminal (tmux), driven by
//! keys. `w` starts the workload, `p` on the primary powers it off, and the failover row must
//! show a failover time and integrity ok (read with `tmux capture-pane`); then `q` (confirmed)
//! tears down and nothing is left: no namespace of the testbed, no agent process, no state file.
//!
//! Needs root (namespaces) and tmux; skips without them unless HALAB_REQUIRE_NETNS=1.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{agent_bin, halab_bin, netns_available};

/// The tests take turns: each runs a bulk workload under st-tcp with 200 ms heartbeats, and
/// three at once on a 2-core machine (95 % CPU, seen in CI) can starve a primary's heartbeats
/// long enough for its backup to take over and fence it before the test's own `p` arrives.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The topology the test brings up, relative to the console crate.
const TOPOLOGY: &str = "../topologies/two-server.toml";
/// Testbed names of the copies (unique among the test suites).
const TESTBED: &str = "t-tui-e2e";
const TESTBED_DOWN: &str = "t-tui-down";
const TESTBED_REJOIN: &str = "t-tui-rejoin";

fn tmux_available(test: &str) -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("HALAB_REQUIRE_NETNS").as_deref() == Ok("1") {
            panic!("{test}: needs tmux (apt-get install tmux), and HALAB_REQUIRE_NETNS=1");
        }
        eprintln!("SKIPPED {test}: needs tmux, which is not installed");
    }
    ok
}

/// The shipped topology, renamed, with a long transfer, in its own mode (st-tcp: the backup
/// takes the connection over and the client never notices but for a stall).
fn topology_copy(dir: &Path, testbed: &str) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(TOPOLOGY);
    let mut text = std::fs::read_to_string(&shipped).expect("read the topology");
    let name_line = text
        .lines()
        .find(|l| l.starts_with("name = "))
        .expect("a name")
        .to_string();
    text = text.replace(&name_line, &format!("name = \"{testbed}\""));
    // A transfer long enough that `p` always lands in the middle of one (the shipped 20 MB
    // takes about 200 ms, and a power-off after its last byte left has nothing to take over).
    let size_line = text
        .lines()
        .find(|l| l.starts_with("size = "))
        .expect("a size")
        .to_string();
    text = text.replace(&size_line, "size = \"2GB\"");
    let path = dir.join("topology.toml");
    std::fs::write(&path, text).expect("write the topology copy");
    path
}

/// A tmux server of its own (its own socket) running `halab up`; killed, and the testbed
/// taken down, on drop.
struct Tmux {
    socket: String,
    dir: tempfile::TempDir,
    testbed: &'static str,
}

impl Tmux {
    /// Starts `halab up` on a copy of the topology named `testbed`, in a 100×30 terminal.
    fn start(testbed: &'static str) -> Tmux {
        let dir = tempfile::tempdir().expect("tempdir");
        let topology = topology_copy(dir.path(), testbed);
        let tmux = Tmux {
            socket: format!("halab-e2e-{}-{testbed}", std::process::id()),
            dir,
            testbed,
        };
        let script = format!(
            "env HALAB_STATE_DIR={state} HALAB_RUNS_DIR={runs} HALAB_AGENT={agent} {halab} up {topo}; \
             echo halab-exited-$?; sleep 600",
            state = tmux.dir.path().join("state").display(),
            runs = tmux.dir.path().join("runs").display(),
            agent = agent_bin().display(),
            halab = halab_bin().display(),
            topo = topology.display(),
        );
        let started = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "ui",
                "-x",
                "100",
                "-y",
                "30",
                &script,
            ])
            .status()
            .expect("tmux new-session");
        assert!(started.success());
        tmux
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "ui"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "ui", keys])
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }

    /// Waits until the screen satisfies `pred`; panics with the screen after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {limit:?}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn halab(&self) -> Command {
        let mut c = Command::new(halab_bin());
        c.env("HALAB_STATE_DIR", self.dir.path().join("state"))
            .env("HALAB_RUNS_DIR", self.dir.path().join("runs"));
        c
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
        let _ = self.halab().args(["down", "--name", self.testbed]).output();
    }
}

fn namespaces(testbed: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("hl.{testbed}.")))
        .map(str::to_string)
        .collect()
}

#[test]
fn dashboard_power_off_of_the_primary_shows_the_failover_and_quit_leaves_nothing() {
    let test = "dashboard_power_off_of_the_primary_shows_the_failover";
    if !netns_available(test) || !tmux_available(test) {
        return;
    }
    let _serial = serial();
    let tmux = Tmux::start(TESTBED);
    let hosts = 4;
    tmux.wait_for(
        "dashboard with every host up",
        Duration::from_secs(30),
        |s| s.contains(&format!("hosts {hosts}/{hosts} up")),
    );
    // The agents' pids, to check they are gone at the end.
    let status = tmux
        .halab()
        .args(["status", "--json"])
        .output()
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status --json");
    let agent_pids: Vec<u64> = status[0]["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| h["agent_pid"].as_u64())
        .collect();
    assert_eq!(agent_pids.len(), hosts, "{status}");

    tmux.keys("w");
    tmux.wait_for("the workload running", Duration::from_secs(10), |s| {
        s.contains("client(s)")
    });
    // Let bytes flow for a moment, then select the primary and power it off.
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..hosts {
        if tmux.screen().lines().any(|l| l.contains("▶ primary")) {
            break;
        }
        tmux.keys("Down");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        tmux.screen().lines().any(|l| l.contains("▶ primary")),
        "{}",
        tmux.screen()
    );
    tmux.keys("p");
    let screen = tmux.wait_for("the failover row settled", Duration::from_secs(30), |s| {
        s.lines().any(|l| {
            l.contains("power-off primary")
                && (l.contains(" ok ") || l.contains("FAILED") || l.contains("stopped"))
        })
    });
    let row = screen
        .lines()
        .find(|l| l.contains("power-off primary"))
        .expect("the row")
        .trim_matches(|c| c == '│' || c == ' ')
        .to_string();
    eprintln!("failover row: {row}");
    if !row.contains(" ok") {
        // What the console saw, for the failure message.
        for log in walk(&tmux.dir.path().join("runs")) {
            if log.ends_with("console.log") {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("{}:", log.display());
                for l in &lines[lines.len().saturating_sub(80)..] {
                    eprintln!("  {l}");
                }
            }
        }
    }
    // "power-off primary" | detect | takeover | failover | stall | lost | dup | integrity
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.len(), 9, "{row}");
    assert_eq!(cols[8], "ok", "integrity: {row}");
    let failover = cols[4];
    let ms: f64 = failover
        .strip_suffix("ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a failover time in ms, got {failover}: {row}"));
    assert!(ms > 0.0 && ms < 10_000.0, "{row}");
    assert_eq!(cols[6], "0", "no byte lost: {row}");
    assert_eq!(cols[7], "0", "no byte duplicated: {row}");

    // Quit: a powered-off host is an active fault, so the dashboard asks first.
    tmux.keys("q");
    tmux.wait_for("the quit confirmation", Duration::from_secs(5), |s| {
        s.contains("quit?")
    });
    tmux.keys("y");
    let end = tmux.wait_for("halab to exit", Duration::from_secs(30), |s| {
        s.contains("halab-exited-")
    });
    assert!(end.contains("halab-exited-0"), "{end}");
    assert!(end.contains(&format!("testbed {TESTBED} is down")), "{end}");

    assert_eq!(
        namespaces(TESTBED),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    for pid in agent_pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .contains("halab-agent"),
            "agent pid {pid} still runs"
        );
    }
    assert!(
        !tmux
            .dir
            .path()
            .join("state")
            .join(format!("{TESTBED}.json"))
            .exists(),
        "state file left behind"
    );
}

#[test]
fn halab_down_from_another_terminal_closes_the_dashboard_and_tears_down() {
    let test = "halab_down_from_another_terminal_closes_the_dashboard";
    if !netns_available(test) || !tmux_available(test) {
        return;
    }
    let _serial = serial();
    let tmux = Tmux::start(TESTBED_DOWN);
    let hosts = 4;
    tmux.wait_for(
        "dashboard with every host up",
        Duration::from_secs(30),
        |s| s.contains(&format!("hosts {hosts}/{hosts} up")),
    );
    // A fault active: SIGTERM from `halab down` must not wait for a confirmation.
    tmux.keys("n");
    tmux.wait_for("the NIC-down fault", Duration::from_secs(10), |s| {
        s.contains("nic-down")
    });
    let out = tmux
        .halab()
        .args(["down", "--name", TESTBED_DOWN])
        .output()
        .expect("halab down");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let end = tmux.wait_for("halab to exit", Duration::from_secs(30), |s| {
        s.contains("halab-exited-")
    });
    assert!(end.contains("halab-exited-0"), "{end}");
    assert!(
        end.contains(&format!("testbed {TESTBED_DOWN} is down")),
        "{end}"
    );
    assert_eq!(namespaces(TESTBED_DOWN), Vec::<String>::new());
}

/// The hosts panel's row of `host` as words: name, roles, state, then the `vip` marker if
/// the row has it, cpu, mem and faults.
fn host_row(screen: &str, host: &str) -> Option<Vec<String>> {
    let mut in_panel = false;
    for line in screen.lines() {
        if line.contains("┌ hosts") {
            in_panel = true;
            continue;
        }
        if !in_panel {
            continue;
        }
        if line.starts_with('└') {
            return None;
        }
        let words: Vec<String> = line
            .trim_matches(|c| c == '│' || c == ' ')
            .trim_start_matches('▶')
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if words.first().is_some_and(|w| w == host) {
            return Some(words);
        }
    }
    None
}

/// The hosts whose row carries the `vip` marker.
fn vip_hosts(screen: &str) -> Vec<String> {
    ["primary", "backup", "logger", "client"]
        .into_iter()
        .filter(|h| host_row(screen, h).is_some_and(|w| w.iter().any(|x| x == "VIP")))
        .map(str::to_string)
        .collect()
}

/// Whether `host`'s row shows `roles` and state `state`.
fn host_shows(screen: &str, host: &str, roles: &str, state: &str) -> bool {
    host_row(screen, host).is_some_and(|w| {
        w.get(1).map(String::as_str) == Some(roles) && w.get(2).map(String::as_str) == Some(state)
    })
}

/// Moves the selection to `host`'s row.
fn select(tmux: &Tmux, host: &str) {
    for _ in 0..8 {
        if tmux
            .screen()
            .lines()
            .any(|l| l.contains(&format!("▶ {host} ")))
        {
            return;
        }
        tmux.keys("Down");
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("cannot select {host}:\n{}", tmux.screen());
}

/// Waits for the failover row `label` to settle; returns it, trimmed.
fn settled_row(tmux: &Tmux, label: &str) -> String {
    let screen = tmux.wait_for(
        &format!("the failover row `{label}` settled"),
        Duration::from_secs(90),
        |s| {
            s.lines().any(|l| {
                l.contains(label)
                    && (l.contains(" ok ") || l.contains("FAILED") || l.contains("stopped"))
            })
        },
    );
    screen
        .lines()
        .find(|l| l.contains(label))
        .expect("the row")
        .trim_matches(|c| c == '│' || c == ' ')
        .to_string()
}

/// A settled failover row of a takeover: a failover time, nothing lost or duplicated,
/// integrity ok.
fn assert_takeover_row(row: &str) {
    // "power-off <host>" | detect | takeover | failover | stall | lost | dup | integrity
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.len(), 9, "{row}");
    assert_eq!(cols[8], "ok", "integrity: {row}");
    let ms: f64 = cols[4]
        .strip_suffix("ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a failover time in ms, got {}: {row}", cols[4]));
    assert!(ms > 0.0 && ms < 10_000.0, "{row}");
    assert_eq!(cols[6], "0", "no byte lost: {row}");
    assert_eq!(cols[7], "0", "no byte duplicated: {row}");
}

/// Must hold 3 of issue 13: fail, rejoin, fail again, on the real dashboard. `w`, `p` on the
/// primary: the backup takes over (row ok) and the `vip` marker moves to it. `o` on the
/// primary: it rejoins as the backup (its roles say so) and the marker stays on the backup.
/// `p` on the backup, now serving: the rejoined primary takes over (a second row, ok) and the
/// marker moves back. The workload is stopped (`w`) before the power-on and started again
/// (`w`) after the rejoin, so that the second fault hits a connection the rejoined host saw
/// from its SYN (a run left over from before the rejoin is not one it can take over).
#[test]
fn dashboard_fail_rejoin_fail_again_shows_both_takeovers_and_the_vip_moving() {
    let test = "dashboard_fail_rejoin_fail_again_shows_both_takeovers_and_the_vip_moving";
    if !netns_available(test) || !tmux_available(test) {
        return;
    }
    let _serial = serial();
    let tmux = Tmux::start(TESTBED_REJOIN);
    let hosts = 4;
    let up = format!("hosts {hosts}/{hosts} up");
    tmux.wait_for(
        "dashboard with every host up",
        Duration::from_secs(30),
        |s| s.contains(&up),
    );
    tmux.wait_for(
        "the vip marker on the primary",
        Duration::from_secs(10),
        |s| vip_hosts(s) == ["primary"],
    );
    let running = |s: &str| s.contains("client(s)");
    let stopped = |s: &str| {
        s.lines()
            .any(|l| l.contains("mode st-tcp") && l.contains("load ") && l.contains("stopped"))
    };

    // First failure: the primary.
    tmux.keys("w");
    tmux.wait_for("the workload running", Duration::from_secs(10), running);
    std::thread::sleep(Duration::from_millis(1500));
    select(&tmux, "primary");
    tmux.keys("p");
    let first = settled_row(&tmux, "power-off primary");
    eprintln!("first failover row: {first}");
    assert_takeover_row(&first);
    tmux.wait_for(
        "the vip marker on the backup after the takeover",
        Duration::from_secs(10),
        |s| vip_hosts(s) == ["backup"] && host_shows(s, "backup", "primary", "up"),
    );

    // Rejoin: the old primary powered on comes back as the backup.
    tmux.keys("w");
    tmux.wait_for("the workload stopped", Duration::from_secs(10), stopped);
    select(&tmux, "primary");
    tmux.keys("o");
    tmux.wait_for(
        "the primary rejoined as backup",
        Duration::from_secs(60),
        |s| {
            s.contains(&up)
                && host_shows(s, "primary", "backup", "up")
                && host_shows(s, "backup", "primary", "up")
        },
    );
    // It never takes the service address back.
    std::thread::sleep(Duration::from_secs(1));
    let screen = tmux.screen();
    assert_eq!(
        vip_hosts(&screen),
        ["backup"],
        "after the rejoin:\n{screen}"
    );

    // Second failure: the backup, serving now.
    tmux.keys("w");
    tmux.wait_for(
        "the workload running again",
        Duration::from_secs(10),
        running,
    );
    std::thread::sleep(Duration::from_millis(1500));
    select(&tmux, "backup");
    tmux.keys("p");
    let second = settled_row(&tmux, "power-off backup");
    eprintln!("second failover row: {second}");
    assert_takeover_row(&second);
    let screen = tmux.wait_for(
        "the vip marker back on the primary",
        Duration::from_secs(10),
        |s| vip_hosts(s) == ["primary"] && host_shows(s, "primary", "primary", "up"),
    );
    // Both takeovers on the screen, both ok.
    let first_again = screen
        .lines()
        .find(|l| l.contains("power-off primary"))
        .map(|l| l.trim_matches(|c| c == '│' || c == ' ').to_string())
        .unwrap_or_else(|| panic!("the first row is still shown:\n{screen}"));
    assert_takeover_row(&first_again);

    // Quit (a host is off: confirmed), and nothing is left.
    tmux.keys("q");
    tmux.wait_for("the quit confirmation", Duration::from_secs(5), |s| {
        s.contains("quit?")
    });
    tmux.keys("y");
    let end = tmux.wait_for("halab to exit", Duration::from_secs(30), |s| {
        s.contains("halab-exited-")
    });
    assert!(end.contains("halab-exited-0"), "{end}");
    assert_eq!(namespaces(TESTBED_REJOIN), Vec::<String>::new());
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
