//! Helpers shared by the agent's namespace tests and its benchmarks (`#[path]`-included):
//! running commands, entering a namespace on a thread, removing a namespace with whatever
//! runs in it.
#![allow(dead_code)] // each including target uses a subset

use std::os::fd::AsRawFd;
use std::process::Command;

/// Runs a command; its stdout, or why it failed.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn must(args: &[&str]) -> String {
    run(args).unwrap_or_else(|e| panic!("{e}"))
}

pub fn remove_namespace(ns: &str) {
    if let Ok(pids) = run(&["ip", "netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) of a process inside the caller's own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = run(&["ip", "netns", "del", ns]);
}

/// Runs `f` on a thread that entered namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_ns(ns, f).join().expect("thread in namespace")
}

/// Whether this process may build namespaces; prints why not (or fails, when
/// `HALAB_REQUIRE_NETNS=1`).
pub fn netns_allowed(test: &str) -> bool {
    let required = std::env::var("HALAB_REQUIRE_NETNS").as_deref() == Ok("1");
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let why = if euid != 0 {
        format!("running as uid {euid}, not root")
    } else {
        match Command::new("ip").args(["netns", "list"]).output() {
            Ok(o) if o.status.success() => return true,
            Ok(o) => format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("cannot run ip: {e}"),
        }
    };
    assert!(!required, "{test}: HALAB_REQUIRE_NETNS=1 but {why}");
    eprintln!("skipping {test}: needs network namespaces ({why})");
    false
}

/// Starts `f` on a thread that entered namespace `ns`; the caller joins it.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) on this thread only, with a namespace file we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// The workload server (`agent serve`) in namespace `ns`, once it said `ready`.
pub fn start_workload_server(ns: &str, agent: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, agent, "serve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn the workload server");
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("read ready");
    assert!(
        line.starts_with("ready "),
        "the workload server said {line:?}"
    );
    child
}
