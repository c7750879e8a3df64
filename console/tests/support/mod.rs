//! Shared helpers for the console's integration tests: root/namespace gating, namespace guards
//! that clean up on drop, and the paths of the built binaries.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether tests that need root and network namespaces can run here. When they cannot, prints
/// why and returns false, unless `HALAB_REQUIRE_NETNS=1`, which turns the skip into a failure.
pub fn netns_available(test: &str) -> bool {
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root".to_string())
    } else {
        match Command::new("ip").args(["netns", "list"]).output() {
            Err(e) => Some(format!("cannot run `ip`: {e}")),
            Ok(o) if !o.status.success() => Some(format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Ok(_) => None,
        }
    };
    match why {
        None => true,
        Some(why) => {
            if std::env::var("HALAB_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!(
                    "{test}: needs root and network namespaces, but {why} (HALAB_REQUIRE_NETNS=1)"
                );
            }
            eprintln!("SKIPPED {test}: needs root and network namespaces, but {why}");
            false
        }
    }
}

/// Path of the `halab` binary under test.
pub fn halab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_halab"))
}

/// Path of the `halab-agent` binary, built beside `halab` by `cargo test --workspace`.
pub fn agent_bin() -> PathBuf {
    let p = halab_bin().with_file_name("halab-agent");
    assert!(
        p.exists(),
        "{} not found: run the tests with `cargo test --workspace` so the agent is built too",
        p.display()
    );
    p
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills every process in a namespace and deletes it (and its links) — on drop, so also when
/// the test fails.
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    /// Creates namespace `name` (prefix it per test so tests can run in parallel) with `lo` up.
    pub fn new(name: &str) -> NetnsGuard {
        // A namespace left by an earlier, killed run of this test would make `add` fail.
        if Path::new("/run/netns").join(name).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
        run("ip", &["netns", "add", name]);
        let g = NetnsGuard {
            name: name.to_string(),
        };
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
        g
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, cmd];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        kill_netns_pids(&self.name);
        // Delete links explicitly: namespace deletion is lazy while sockets linger.
        if let Ok(o) = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show"])
            .output()
        {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some(name) = line.split(':').nth(1) {
                    let name = name.trim().split('@').next().unwrap_or("");
                    if !name.is_empty() && name != "lo" {
                        let _ = Command::new("ip")
                            .args(["-n", &self.name, "link", "del", name])
                            .status();
                    }
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// SIGKILLs every process in namespace `ns`.
pub fn kill_netns_pids(ns: &str) {
    if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A veth pair joining two namespaces, with addresses; the pair goes when either namespace is
/// deleted, and the guard deletes it explicitly first.
pub fn connect(a: &NetnsGuard, a_if: &str, a_addr: &str, b: &NetnsGuard, b_if: &str, b_addr: &str) {
    run(
        "ip",
        &[
            "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    );
    run("ip", &["-n", &a.name, "addr", "add", a_addr, "dev", a_if]);
    run("ip", &["-n", &b.name, "addr", "add", b_addr, "dev", b_if]);
    run("ip", &["-n", &a.name, "link", "set", a_if, "up"]);
    run("ip", &["-n", &b.name, "link", "set", b_if, "up"]);
}

/// Runs `f` on a fresh thread that has entered namespace `ns`, inside a current-thread tokio
/// runtime, so sockets it opens live in that namespace. The test process itself stays put.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::fd::AsRawFd;
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
    .join()
    .expect("test thread panicked")
}

pub mod capture;
pub mod cli_lab;
pub mod fixtures;
pub mod forger;
pub mod service_address;
pub mod sshd;
pub mod toml_gen;
pub mod topology;
