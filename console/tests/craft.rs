//! Mode craft on a real local testbed (issue 16): `topologies/craft.toml` brought up by the
//! console with craft's roles started from the configuration the console derives (the
//! balancer spraying over two proxies, the logger as the gateway to the backends), and real
//! clients (curl) through the service address. Craft is not yet runnable by `halab run`; this
//! test starts its roles the way the runner will.

mod support;

use halab::provider::local;
use halab::testbed::{Testbed, UpOptions};
use halab_protocol::{AgentMsg, LogLevel, ModeEvent, Role, RoleState};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::netns_available;

struct Lab {
    name: String,
    rt: tokio::runtime::Runtime,
    tb: Option<Testbed>,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn up(
        name: &str,
    ) -> (
        Lab,
        tokio::sync::mpsc::UnboundedReceiver<(String, AgentMsg)>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/craft.toml");
        let text = std::fs::read_to_string(shipped)
            .unwrap()
            .replace("name = \"craft\"", &format!("name = \"{name}\""));
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
        let mut tb = rt
            .block_on(Testbed::up(topo, &opts))
            .unwrap_or_else(|e| panic!("up {name}: {}", halab::error::chain(&e)));
        let cfg = halab::modes::craft::config(&tb.topology, &tb.topology.run, tb.mode_key())
            .unwrap_or_else(|e| panic!("craft config: {e}"));
        tb.set_mode(halab_protocol::ModeConfig::Craft(Box::new(cfg)));
        let inbox = tb.take_inbox().expect("inbox");
        let lab = Lab {
            name: name.to_string(),
            rt,
            tb: Some(tb),
            _dir: dir,
        };
        lab.rt
            .block_on(lab.tb.as_ref().unwrap().start_roles())
            .expect("start roles");
        (lab, inbox)
    }

    fn ns(&self, host: &str) -> String {
        local::host_ns(&self.name, host)
    }

    fn curl(&self, args: &[&str], path: &str) -> Child {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("client"),
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "60",
            ])
            .args(args)
            .arg(format!("http://10.40.0.100:8080{path}"))
            .spawn()
            .expect("curl")
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

/// Must hold 1 through the console's testbed: with craft's roles started on craft.toml, 20
/// curl downloads and 20 `curl -T` uploads at once through the service address are
/// byte-exact and verified by the backend; both sprayers report both proxies in their pools.
#[test]
fn curl_through_the_service_address_of_a_craft_testbed() {
    if !netns_available("curl_through_the_service_address_of_a_craft_testbed") {
        return;
    }
    let (lab, mut inbox) = Lab::up("t-craft-curl");
    // Every role running, and both sprayers with both proxies in their pools.
    let mut running = 0;
    let mut full_pools = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    lab.rt.block_on(async {
        while running < 6 || full_pools.len() < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some((host, msg))) = tokio::time::timeout(left, inbox.recv()).await else {
                panic!("roles running {running} of 6, full pools {full_pools:?}");
            };
            match msg {
                AgentMsg::RoleState {
                    role,
                    state,
                    detail,
                    ..
                } => {
                    assert_ne!(state, RoleState::Failed, "{host} {role}: {detail:?}");
                    if state == RoleState::Running && role != Role::Client {
                        running += 1;
                    }
                }
                AgentMsg::Mode {
                    event: ModeEvent::Craft(e),
                } => {
                    eprintln!("  [{host}] {e:?}");
                    if let halab_protocol::modes::craft::Event::PoolUp { live, .. } = &e
                        && live.len() == 2
                    {
                        full_pools.insert(host.clone());
                    }
                }
                AgentMsg::Log {
                    level: LogLevel::Error | LogLevel::Warn,
                    message,
                    ..
                } => {
                    eprintln!("  [{host}] {message}")
                }
                _ => {}
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for k in 0..20 {
        let name = format!("g{k}.bin");
        let out = dir.path().join(&name);
        let c = lab.curl(
            &["-o", out.to_str().unwrap()],
            &format!("/{name}?size=5000000"),
        );
        runs.push((c, name, out, false));
    }
    for k in 0..20 {
        let name = format!("u{k}.bin");
        let file = dir.path().join(&name);
        let mut data = vec![0u8; 5_000_000];
        halab_workload::content::fill(
            halab_workload::content::name_seed(&format!("/{name}")),
            0,
            &mut data,
        );
        std::fs::write(&file, &data).unwrap();
        let verdict = dir.path().join(format!("{name}.verdict"));
        let c = lab.curl(
            &[
                "-H",
                "Expect:",
                "-T",
                file.to_str().unwrap(),
                "-o",
                verdict.to_str().unwrap(),
            ],
            &format!("/{name}"),
        );
        runs.push((c, name, verdict, true));
    }
    for (mut c, name, out, upload) in runs {
        let status = c.wait().unwrap();
        assert!(status.success(), "curl {name}: {status}");
        if upload {
            assert_eq!(
                std::fs::read_to_string(&out).unwrap(),
                "verified 5000000 bytes\n",
                "{name}"
            );
        } else {
            let data = std::fs::read(&out).unwrap();
            let seed = halab_workload::content::name_seed(&format!("/{name}"));
            assert_eq!(data.len(), 5_000_000, "{name}");
            assert_eq!(
                halab_workload::content::first_mismatch(seed, 0, &data),
                None,
                "{name}"
            );
        }
    }
    // The proxies hold no socket of the spliced connections.
    for p in ["proxy1", "proxy2"] {
        let ss = support::run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.ns(p),
                "ss",
                "-Htn",
                "state",
                "established",
                "( sport = :8080 )",
            ],
        );
        assert!(ss.trim().is_empty(), "{p} holds client sockets:\n{ss}");
    }
}
