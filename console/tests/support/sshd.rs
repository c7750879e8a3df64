//! A real OpenSSH server in a test network namespace, for the SSH transport's tests.
//!
//! Each fixture owns a server namespace running `sshd` and a client namespace joined to it by
//! a veth pair, plus a temporary directory holding the server's config, keys and log, the
//! client keys, known_hosts files and the "remote" agent directory. Everything goes on drop,
//! in field order: sshd (and every process it started, with its namespace), then the
//! namespaces, then the directory.

use super::{NetnsGuard, connect};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server's address in its namespace; it listens on port 22 and on [`ALT_PORT`].
pub const SERVER_ADDR: &str = "10.98.0.1";
/// A second port, for known_hosts entries of the form `[host]:port`.
pub const ALT_PORT: u16 = 2222;
const SERVER_CIDR: &str = "10.98.0.1/24";
const CLIENT_CIDR: &str = "10.98.0.2/24";
const SSHD: &str = "/usr/sbin/sshd";

/// Whether OpenSSH's server and ssh-keygen are installed. When not, prints why and returns
/// false, unless `HALAB_REQUIRE_NETNS=1`, which turns the skip into a failure.
pub fn sshd_available(test: &str) -> bool {
    let keygen = Command::new("ssh-keygen")
        .arg("-?")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let why = if !Path::new(SSHD).exists() {
        Some(format!("{SSHD} is missing"))
    } else if !keygen {
        Some("ssh-keygen is missing".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            if std::env::var("HALAB_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("{test}: needs openssh-server, but {why} (HALAB_REQUIRE_NETNS=1)");
            }
            eprintln!("SKIPPED {test}: needs openssh-server, but {why}");
            false
        }
    }
}

/// Pids of the live processes named `halab-agent` (the uploaded file's name, whatever program
/// it holds) in namespace `ns`.
pub fn agent_pids(ns: &str) -> Vec<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "halab-agent")
        })
        // A zombie is dead: it waits only for a parent (gone with the power cut) to reap it.
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                let state = st.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                !matches!(state.and_then(|r| r.chars().next()), Some('Z' | 'X'))
            })
        })
        .collect()
}

/// Kills and reaps the sshd process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running sshd reachable from a client namespace.
pub struct Sshd {
    child: ChildGuard,
    pub client_ns: NetnsGuard,
    pub server_ns: NetnsGuard,
    pub dir: tempfile::TempDir,
    /// The server's host public key line, `ssh-ed25519 AAAA... comment`.
    pub host_pub: String,
    /// A client key in the server's authorized_keys.
    pub client_key: PathBuf,
}

/// Generates an unencrypted ed25519 key at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    keygen_with_passphrase(path, "");
}

/// Generates an ed25519 key at `path`, encrypted with `passphrase` unless it is empty.
pub fn keygen_with_passphrase(path: &Path, passphrase: &str) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "halab-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The text of `path.pub`.
pub fn public_key(path: &Path) -> String {
    let p = PathBuf::from(format!("{}.pub", path.display()));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The `SHA256:...` fingerprint ssh-keygen shows for a public key file.
pub fn fingerprint(pub_file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_file)
        .output()
        .expect("ssh-keygen -lf");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint in ssh-keygen -l output")
        .to_string()
}

impl Sshd {
    /// Starts sshd in namespace `hlt-ssh-<tag>-srv`, reachable from `hlt-ssh-<tag>-cli`.
    /// `tag` is at most 10 characters and unique per test, so tests run in parallel.
    pub fn start(tag: &str) -> Sshd {
        assert!(tag.len() <= 10, "tag {tag:?} too long for interface names");
        let server_ns = NetnsGuard::new(&format!("hlt-ssh-{tag}-srv"));
        let client_ns = NetnsGuard::new(&format!("hlt-ssh-{tag}-cli"));
        connect(
            &server_ns,
            &format!("hs-{tag}-s"),
            SERVER_CIDR,
            &client_ns,
            &format!("hs-{tag}-c"),
            CLIENT_CIDR,
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("halab-sshd-{tag}-"))
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let host_key = d.join("host_ed25519");
        keygen(&host_key);
        let client_key = d.join("client_ed25519");
        keygen(&client_key);
        std::fs::write(d.join("authorized_keys"), public_key(&client_key) + "\n").unwrap();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {SERVER_ADDR}\n\
                 Port 22\n\
                 Port {ALT_PORT}\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized}\n\
                 PidFile {pid}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                authorized = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &server_ns.name, SSHD, "-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let host_pub = public_key(&host_key);
        let mut sshd = Sshd {
            child: ChildGuard(child),
            client_ns,
            server_ns,
            dir,
            host_pub,
            client_key,
        };
        sshd.wait_listening();
        sshd
    }

    /// Waits until sshd accepts connections from the client namespace.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("sshd exited ({status}): {}", self.log());
            }
            let ns = format!("/run/netns/{}", self.client_ns.name);
            let reachable = std::thread::spawn(move || {
                use std::os::fd::AsRawFd;
                let f = std::fs::File::open(&ns).expect("netns file");
                // SAFETY: setns on this fresh thread only; the fd is valid for the call.
                assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
                let addr = format!("{SERVER_ADDR}:22").parse().unwrap();
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .join()
            .unwrap();
            if reachable {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sshd not listening after 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `power_command` for the machine this sshd stands for: its link down first, then
    /// every process in its namespace killed (sshd, the agent), as a power cut would.
    pub fn power_off_command(&self) -> String {
        let ns = &self.server_ns.name;
        format!(
            "ip -n {ns} link set dev {link} down && ip netns pids {ns} | xargs -r kill -9",
            link = self.server_link()
        )
    }

    /// A `power_on_command` bringing the machine back: its link up, and sshd started again
    /// (as a daemon; the namespace guard kills it at the end).
    pub fn power_on_command(&self) -> String {
        let ns = &self.server_ns.name;
        format!(
            "ip -n {ns} link set dev {link} up && ip netns exec {ns} {SSHD} -f {config} -E {log}",
            link = self.server_link(),
            config = self.dir.path().join("sshd_config").display(),
            log = self.dir.path().join("sshd-after-power-on.log").display(),
        )
    }

    /// The server's end of the link to the client namespace.
    fn server_link(&self) -> String {
        let tag = self
            .server_ns
            .name
            .trim_start_matches("hlt-ssh-")
            .trim_end_matches("-srv");
        format!("hs-{tag}-s")
    }

    /// sshd's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A path inside the fixture's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The known_hosts line that trusts this server.
    pub fn known_hosts_line(&self) -> String {
        format!("{SERVER_ADDR} {}", self.host_pub)
    }

    /// Writes a known_hosts file `name` with `content` and returns its path.
    pub fn write_known_hosts(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// The fingerprint of the server's host key.
    pub fn host_fingerprint(&self) -> String {
        fingerprint(&self.path("host_ed25519.pub"))
    }

    /// A directory on the "remote" host (this machine's filesystem, seen by sshd) to install
    /// the agent in, so tests never touch `/root/.halab` and leave nothing behind.
    pub fn remote_dir(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Waits until no `halab-agent` runs in the server namespace; panics after `timeout`.
    pub fn wait_no_agent(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = agent_pids(&self.server_ns.name);
            if pids.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent processes {pids:?} still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
