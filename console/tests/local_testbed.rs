//! Provider local, end to end through the real `halab` binary: `up` builds the testbed and
//! connects every agent, `status` shows it, Ctrl-C tears it all down; `kill -9` of the console
//! makes every agent exit by itself and `halab down` removes what is left.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{halab_bin, netns_available};

/// A `halab up` console running in the background; killed (SIGKILL) and its testbed taken
/// down on drop if the test did not end it.
struct Console {
    child: Option<Child>,
    file: PathBuf,
    env: Env,
}

/// Per-test state and runs folders, so tests do not see each other's testbeds.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn runs_dir(&self) -> PathBuf {
        self.dir.path().join("runs")
    }
    fn halab(&self) -> Command {
        let mut c = Command::new(halab_bin());
        c.env("HALAB_STATE_DIR", self.state_dir())
            .env("HALAB_RUNS_DIR", self.runs_dir());
        c
    }
    fn status(&self) -> Value {
        let out = self.halab().args(["status", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }
}

impl Console {
    fn up(env: Env, file: &Path) -> Console {
        let child = env
            .halab()
            .args(["up", "--no-tui"])
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start halab up");
        Console {
            child: Some(child),
            file: file.to_path_buf(),
            env,
        }
    }

    /// Waits until `halab status` shows testbed `name` with every host connected.
    fn wait_connected(&mut self, name: &str, hosts: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let out = self.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "halab up exited with {status}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let st = self.env.status();
            if let Some(tb) = st.as_array().unwrap().iter().find(|t| t["testbed"] == name) {
                let hs = tb["hosts"].as_array().unwrap();
                if hs.len() == hosts && hs.iter().all(|h| h["state"] == "connected") {
                    assert_eq!(tb["console_alive"], true);
                    return tb.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "testbed {name} not connected in time: {st}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.env.halab().arg("down").arg(&self.file).output();
    }
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn root_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(String::from))
        .collect();
    v.sort();
    v
}

fn pid_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !matches!(
            s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()),
            Some('Z' | 'X')
        ),
    }
}

fn agent_pids(tb: &Value) -> Vec<u64> {
    tb["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["agent_pid"].as_u64().expect("agent pid"))
        .collect()
}

/// Connecting to a closed port of `addr` from namespace `ns` is refused (an RST came back), which
/// proves the address is reachable through the testbed's bridge.
fn reachable(ns: &str, addr: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "3", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{addr}/9"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).contains("Connection refused")
}

#[test]
fn quick_start_two_server_up_status_ctrl_c_leaves_nothing() {
    if !netns_available("quick_start_two_server_up_status_ctrl_c_leaves_nothing") {
        return;
    }
    let links_before = root_links();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/two-server.toml");
    let env = Env::new();
    let mut console = Console::up(env, &file);
    let tb = console.wait_connected("two-server", 4);

    // Everything the topology asks for exists, inside namespaces only.
    let mut ns = namespaces_with("hl.two-server.");
    ns.sort();
    assert_eq!(
        ns,
        [
            "hl.two-server._switch",
            "hl.two-server.backup",
            "hl.two-server.client",
            "hl.two-server.logger",
            "hl.two-server.primary"
        ]
    );
    let addrs = support::run("ip", &["-n", "hl.two-server.primary", "-o", "addr", "show"]);
    assert!(
        addrs.contains("10.10.0.1/24") && addrs.contains("10.10.1.1/24"),
        "{addrs}"
    );
    assert!(
        addrs.contains("10.10.0.100/24"),
        "VIP on the primary: {addrs}"
    );
    let bridge = support::run(
        "ip",
        &[
            "-n",
            "hl.two-server._switch",
            "-d",
            "link",
            "show",
            "br-service",
        ],
    );
    assert!(
        bridge.contains("ageing_time 0"),
        "service network in hub mode: {bridge}"
    );
    assert!(
        reachable("hl.two-server.client", "10.10.0.100"),
        "client reaches the VIP"
    );
    assert!(
        reachable("hl.two-server.backup", "10.10.1.1"),
        "heartbeat link works"
    );
    assert!(
        !reachable("hl.two-server.logger", "10.10.1.1"),
        "logger is not on the heartbeat network"
    );
    assert_eq!(
        root_links(),
        links_before,
        "nothing added to the machine's own namespace"
    );

    // The human-readable status names every host.
    let out = console.env.halab().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for h in ["primary", "backup", "logger", "client"] {
        assert!(text.contains(h), "{text}");
    }
    assert!(text.contains("connected"), "{text}");

    // The agents' own log lines reach the run's log file.
    let log_dir = PathBuf::from(tb["log_dir"].as_str().unwrap());
    let log = std::fs::read_to_string(log_dir.join("console.log")).unwrap();
    assert!(
        log.contains("console connected") && log.contains("host=primary"),
        "{log}"
    );

    // Ctrl-C tears it all down.
    let pids = agent_pids(&tb);
    let mut child = console.child.take().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "halab up did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("is down"), "{stdout}");
    assert!(namespaces_with("hl.two-server.").is_empty());
    assert_eq!(root_links(), links_before);
    assert!(pids.iter().all(|p| !pid_alive(*p)), "agents gone");
    assert_eq!(console.env.status(), serde_json::json!([]), "no state left");
}

#[test]
fn kill_9_console_agents_exit_within_2s_then_down_cleans_up() {
    if !netns_available("kill_9_console_agents_exit_within_2s_then_down_cleans_up") {
        return;
    }
    let env = Env::new();
    let file = support::topology::write_local(env.dir.path(), "t-kill9", 4);
    let mut console = Console::up(env, &file);
    let tb = console.wait_connected("t-kill9", 4);
    let pids = agent_pids(&tb);

    let mut child = console.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL: no cleanup code of the console runs
    child.wait().unwrap();
    let killed = Instant::now();
    while pids.iter().any(|p| pid_alive(*p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "agents still alive 2 s after the console died: {:?}",
            pids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "agents exited {:?} after the console was killed",
        killed.elapsed()
    );

    // The namespaces outlive the console; status says so, and down removes them.
    assert_eq!(namespaces_with("hl.t-kill9.").len(), 5);
    let out = console.env.halab().arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("STALE"));
    let out = console.env.halab().arg("down").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 5 namespaces"));
    assert!(namespaces_with("hl.t-kill9.").is_empty());
    assert_eq!(console.env.status(), serde_json::json!([]));
}

#[test]
fn down_from_another_terminal_stops_the_running_console() {
    if !netns_available("down_from_another_terminal_stops_the_running_console") {
        return;
    }
    let env = Env::new();
    let file = support::topology::write_local(env.dir.path(), "t-downrun", 3);
    let mut console = Console::up(env, &file);
    console.wait_connected("t-downrun", 3);
    let out = console.env.halab().arg("down").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = console.child.as_mut().unwrap().wait().unwrap();
    assert!(status.success(), "the console tore down and exited cleanly");
    assert!(namespaces_with("hl.t-downrun.").is_empty());
}

#[test]
fn a_second_up_of_the_same_testbed_is_refused_and_harms_nothing() {
    if !netns_available("a_second_up_of_the_same_testbed_is_refused_and_harms_nothing") {
        return;
    }
    let env = Env::new();
    let file = support::topology::write_local(env.dir.path(), "t-twice", 3);
    let mut console = Console::up(env, &file);
    console.wait_connected("t-twice", 3);
    let out = console
        .env
        .halab()
        .args(["up", "--no-tui"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already up"), "{err}");
    // The first testbed is untouched.
    console.wait_connected("t-twice", 3);
}
