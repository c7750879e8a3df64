//! The state file of a running testbed: what was made and how its hosts are doing. Written by
//! the console that brought the testbed up (atomically, on every change), read by `halab
//! status` and `halab down`, so they work from another terminal and after the console died.
//!
//! Location: `$HALAB_STATE_DIR`, else `/run/halab` as root (a tmpfs, cleared at boot together
//! with the namespaces it describes), else `$XDG_RUNTIME_DIR/halab`, else the temp dir.

use crate::provider::local::LocalResources;
use crate::topology::Provider;
use halab_protocol::Role;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The state directory in force.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HALAB_STATE_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/halab");
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("halab");
    }
    std::env::temp_dir().join("halab")
}

/// Path of testbed `name`'s state file.
pub fn state_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// How a host's agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// Agent starting, hello not answered yet.
    Starting,
    /// Hello answered and the last ping came back.
    Connected,
    /// The agent's channel closed or a ping timed out.
    Lost,
    /// Shut down by the console.
    Stopped,
    /// Powered off by a fault or a fence: links down, every process killed.
    PoweredOff,
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostState::Starting => "starting",
            HostState::Connected => "connected",
            HostState::Lost => "lost",
            HostState::Stopped => "stopped",
            HostState::PoweredOff => "powered-off",
        })
    }
}

/// One host as the console last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    /// The roles it runs now: the topology's at start, then as the hosts report them (after a
    /// takeover the backup is the primary, and the old primary rejoins as the backup).
    pub roles: Vec<Role>,
    /// Whether it holds the service address, as its roles last reported (the topology's
    /// primary at start).
    #[serde(default)]
    pub holds_service_address: bool,
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// Namespace (local) or `user@address:port` (ssh).
    pub location: String,
    pub state: HostState,
    /// Why the host is lost, when it is.
    pub reason: Option<String>,
    /// Agent's pid on its host.
    pub agent_pid: Option<u32>,
    pub agent_version: Option<String>,
    pub kernel: Option<String>,
    /// What the host's agent probed at hello (root, namespaces, AF_PACKET, TCP_REPAIR, …).
    pub capabilities: Option<halab_protocol::Capabilities>,
    /// Round trip of the last ping, microseconds.
    pub rtt_us: Option<u64>,
    /// When the agent last answered, Unix milliseconds.
    pub last_seen_unix_ms: Option<u64>,
    /// Agent clock − console clock (monotonic), nanoseconds, with its uncertainty.
    pub clock_offset_ns: Option<i64>,
    pub clock_uncertainty_ns: Option<u64>,
}

/// Everything `halab status` and `halab down` need to know about a testbed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestbedState {
    pub testbed: String,
    pub topology: PathBuf,
    pub provider: Provider,
    pub console_pid: u32,
    pub run_id: String,
    pub log_dir: PathBuf,
    pub started_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// What provider `local` made (None for ssh).
    pub local: Option<LocalResources>,
    pub hosts: Vec<HostRecord>,
}

impl TestbedState {
    /// Writes the state atomically (temp file + rename): a reader never sees half a file.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = state_path(dir, &self.testbed);
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn load(path: &Path) -> Result<TestbedState, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Every state file in `dir`, sorted by testbed name; unreadable ones are reported as errors.
    pub fn load_all(dir: &Path) -> Vec<Result<TestbedState, String>> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return vec![];
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths.iter().map(|p| TestbedState::load(p)).collect()
    }

    /// Whether the console that owns this testbed is still running: it holds the testbed's
    /// lock for as long as it lives.
    pub fn console_alive(&self, dir: &Path) -> bool {
        TestbedLock::held(dir, &self.testbed)
    }
}

/// The exclusive lock of a testbed (`<state dir>/<testbed>.lock`, flock(2)), held by the
/// console that runs it for its whole life. The kernel drops it when that process dies, however
/// it dies, so "is the console alive" never rests on a pid that may have been reused, and two
/// consoles can never build or tear down the same testbed at once.
#[derive(Debug)]
pub struct TestbedLock {
    _file: std::fs::File,
}

impl TestbedLock {
    /// Takes the lock, or `Ok(None)` when another process holds it.
    pub fn try_acquire(dir: &Path, name: &str) -> std::io::Result<Option<TestbedLock>> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(dir)?;
        // Rust opens files close-on-exec, so agents started by the console never inherit it.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{name}.lock")))?;
        // SAFETY: flock(2) on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(TestbedLock { _file: file }));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(err)
        }
    }

    /// Whether some process holds testbed `name`'s lock now.
    pub fn held(dir: &Path, name: &str) -> bool {
        if !dir.join(format!("{name}.lock")).exists() {
            return false;
        }
        matches!(TestbedLock::try_acquire(dir, name), Ok(None))
    }
}

/// Whether `pid` is a live process (a zombie counts as dead).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state letter follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A UTC timestamp `YYYYMMDDTHHMMSS` for run ids, from Unix milliseconds.
pub fn compact_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_utc_formats_known_instants() {
        assert_eq!(compact_utc(0), "19700101T000000");
        // 2026-11-22 16:49:52 UTC
        assert_eq!(compact_utc(1_795_366_192_000), "20261122T164952");
        // 2000-02-29 23:59:59 UTC
        assert_eq!(compact_utc(951_868_799_000), "20000229T235959");
    }

    #[test]
    fn a_held_lock_excludes_others_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!TestbedLock::held(dir.path(), "t"));
        let lock = TestbedLock::try_acquire(dir.path(), "t").unwrap().unwrap();
        assert!(TestbedLock::held(dir.path(), "t"));
        assert!(TestbedLock::try_acquire(dir.path(), "t").unwrap().is_none());
        drop(lock);
        // A process another test of this binary is spawning right now shares the lock's open
        // file until its exec closes it (close-on-exec): wait for that, briefly.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while TestbedLock::held(dir.path(), "t") && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        assert!(!TestbedLock::held(dir.path(), "t"));
    }

    #[test]
    fn own_process_is_alive_and_nonsense_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }
}
