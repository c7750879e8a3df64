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
use halab::testbed::{Testbed, UpOptions};
use halab_protocol::{AgentMsg, ConsoleMsg, LogLevel, ModeEvent, Role, RoleState};
use serde_json::Value;
use std::path::{Path, PathBuf};
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
        .replace("heartbeat_ms = 200", &format!("heartbeat_ms = {heartbeat_ms}"));
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
        let mode = halab::modes::mode_config(&topo, &topo.run).expect("st-tcp config");
        let mut tb = rt
            .block_on(Testbed::up(topo, &opts))
            .unwrap_or_else(|e| panic!("up {name}: {}", halab::error::chain(&e)));
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
                role: Role::Primary | Role::Backup,
                state,
                detail,
            } = m
            {
                assert_eq!(*state, RoleState::Running, "{detail:?}");
                running += 1;
            }
            running == 2
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
                                let s = halab::modes::describe(event);
                                let err = halab::modes::on_event(tb, &host, event).await.err();
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
        assert!(self.events.iter().all(|e| e.3.is_none()), "{:?}", self.events);
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
/// 40 %, byte-exact, on the same connection.
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
        .args(["netns", "exec", &lab.ns("client"), "curl", "-sS", "--fail", "-o"])
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = curl.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "curl did not finish");
        lab.idle(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = curl.stderr.take().unwrap().read_to_string(&mut err);
    lab.idle(Duration::from_millis(300));
    assert!(status.success(), "curl failed: {status} {err}");
    assert_content(&out, "/big.bin", size);
    lab.assert_taken_over(1);
}
