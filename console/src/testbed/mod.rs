//! The orchestrator's view of a running testbed: bring it up from a topology (provider
//! resources, then one agent per host), keep watching every agent, and take it all down again.
//!
//! Each host has a task that owns its agent session: it pings the agent every second, records
//! what it sees in the shared [`TestbedState`], and on cancellation shuts the agent down. A
//! writer task persists the state file whenever it changed, for `halab status` in another
//! terminal. Everything spawned here is owned by [`Testbed`] and ends in [`Testbed::down`].

use crate::agent::{AgentSession, LinkError, link::spawn_process_link};
use crate::error::chain;
use crate::provider::local::{self, LocalError, LocalResources};
use crate::state::{self, HostRecord, HostState, TestbedLock, TestbedState};
use crate::topology::{Host, LinkShape, Provider, Topology};
use halab_protocol::{AgentMsg, ConsoleMsg, ModeConfig, Role};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long an agent has to answer the hello (SSH connects and uploads come on top).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often every agent is pinged while the testbed is up.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A ping not answered within this marks the host lost.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an agent may take to stop cleanly on shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Queue of messages waiting to go to one agent.
const COMMAND_QUEUE: usize = 64;
/// How long an agent may take to shape its links: a few `iptables` and `nft` runs and a
/// thread per delay line.
const LINK_SHAPE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the state file is rewritten at most.
const STATE_WRITE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Error)]
pub enum TestbedError {
    #[error("provider local")]
    Local(#[from] LocalError),
    #[error("agent on host `{host}` did not come up{}", tail_suffix(.stderr))]
    Agent {
        host: String,
        #[source]
        source: LinkError,
        stderr: String,
    },
    #[error("host `{host}`: {message}")]
    Ssh { host: String, message: String },
    #[error("host `{host}`: its links could not be shaped as the topology says: {error}")]
    Links { host: String, error: String },
    #[error("state file in {dir}")]
    State {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("testbed `{0}` is already up, run by console pid {1} (see `halab status`)")]
    AlreadyUp(String, u32),
    #[error("internal: {0}")]
    Internal(String),
}

fn tail_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(" (agent stderr: {})", stderr.trim())
    }
}

/// How to bring a testbed up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub agent_binary: PathBuf,
    pub state_dir: PathBuf,
    pub run_id: String,
    pub log_dir: PathBuf,
    /// Ask every agent to probe its capabilities in its hello.
    pub probe: bool,
    /// SSH settings (provider ssh only).
    pub ssh: Option<crate::provider::ssh::SshOptions>,
}

/// Timings of bringing up or taking down, for the user and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub provider: Duration,
    pub agents: Duration,
    pub total: Duration,
}

/// State shared between the host tasks, the state writer and the console.
struct Shared {
    state: Mutex<TestbedState>,
    version: watch::Sender<u64>,
    /// Per host, how many agents it has had: a power-on starts a new one, and the watcher of
    /// the old one (an SSH link dying slowly) must not report on the new one's host.
    generations: Vec<std::sync::atomic::AtomicU64>,
    /// The next `StartRole` request id.
    role_requests: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn snapshot(&self) -> TestbedState {
        // A poisoned lock means a host task panicked mid-update; the record is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update_host(&self, index: usize, f: impl FnOnce(&mut HostRecord)) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = s.hosts.get_mut(index) {
                f(h);
            }
            s.updated_unix_ms = state::unix_ms();
        }
        self.version.send_modify(|v| *v += 1);
    }
}

/// 32 random bytes from the kernel, hex.
fn random_key_hex() -> Result<String, TestbedError> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| TestbedError::Internal(format!("cannot read /dev/urandom: {e}")))?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

/// See [`Testbed::state_view`].
#[derive(Clone)]
pub struct StateView(Arc<Shared>);

impl StateView {
    /// The testbed as it is now.
    pub fn snapshot(&self) -> TestbedState {
        self.0.snapshot()
    }
}

/// A testbed that is up: provider resources made and every agent connected.
pub struct Testbed {
    pub topology: Topology,
    shared: Arc<Shared>,
    state_dir: PathBuf,
    cancel: CancellationToken,
    host_tasks: JoinSet<()>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// Held until the testbed is down; see [`TestbedLock`].
    _lock: TestbedLock,
    /// Per host, in topology order: messages for its agent.
    commands: Vec<mpsc::Sender<ConsoleMsg>>,
    /// For the host tasks of agents started later (power-on).
    inbox_tx: mpsc::UnboundedSender<(String, AgentMsg)>,
    options: UpOptions,
    local: Option<LocalResources>,
    /// Messages from every agent that are not the host task's own business (client telemetry
    /// and results, fault outcomes, role changes), tagged with the host's name.
    inbox: Option<mpsc::UnboundedReceiver<(String, AgentMsg)>>,
    /// The mode roles are started under (by [`Testbed::start_roles`] and at power-on).
    mode: ModeConfig,
    /// Key the modes authenticate their messages with (hex): random, made once at `up`, so it
    /// is the same for every host and every run of this testbed.
    mode_key: String,
    /// The role whose host holds the service address when the mode starts (the mode's choice).
    service_address_role: Role,
    pub up_timings: Timings,
}

impl Testbed {
    /// Brings `topology` up. On any failure everything made so far is removed again.
    pub async fn up(topology: Topology, opts: &UpOptions) -> Result<Testbed, TestbedError> {
        let t0 = Instant::now();
        if topology.provider == Provider::Ssh
            && let Some(h) = topology.hosts.iter().find(|h| !h.links.is_empty())
        {
            // Refused rather than ignored: a run on plain links would pass for a shaped one.
            return Err(TestbedError::Ssh {
                host: h.name.clone(),
                message: "link settings (rate, delay, jitter, loss) are applied by provider \
                          local only in this version; remove them"
                    .into(),
            });
        }
        let mode_key = random_key_hex()?;
        let state_path = state::state_path(&opts.state_dir, &topology.name);
        // The lock makes this console the testbed's only owner until it exits.
        let lock = match TestbedLock::try_acquire(&opts.state_dir, &topology.name) {
            Err(source) => {
                return Err(TestbedError::State {
                    dir: opts.state_dir.clone(),
                    source,
                });
            }
            Ok(None) => {
                let pid = TestbedState::load(&state_path)
                    .map(|s| s.console_pid)
                    .unwrap_or(0);
                return Err(TestbedError::AlreadyUp(topology.name.clone(), pid));
            }
            Ok(Some(lock)) => lock,
        };

        // 1. Provider resources.
        let local_res = match topology.provider {
            Provider::Local => {
                let topo = topology.clone();
                Some(
                    tokio::task::spawn_blocking(move || local::create(&topo))
                        .await
                        .map_err(|e| TestbedError::Internal(e.to_string()))??,
                )
            }
            Provider::Ssh => None,
        };
        let provider_time = t0.elapsed();

        let now = state::unix_ms();
        let state = TestbedState {
            testbed: topology.name.clone(),
            topology: topology.source.clone(),
            provider: topology.provider,
            console_pid: std::process::id(),
            run_id: opts.run_id.clone(),
            log_dir: opts.log_dir.clone(),
            started_unix_ms: now,
            updated_unix_ms: now,
            local: local_res.clone(),
            hosts: topology
                .hosts
                .iter()
                .map(|h| HostRecord {
                    name: h.name.clone(),
                    roles: h.roles.clone(),
                    holds_service_address: h.roles.contains(&topology.service_address_role),
                    addresses: h.addresses.clone(),
                    location: location(&topology, h, local_res.as_ref()),
                    state: HostState::Starting,
                    reason: None,
                    agent_pid: None,
                    agent_version: None,
                    kernel: None,
                    capabilities: None,
                    rtt_us: None,
                    last_seen_unix_ms: None,
                    clock_offset_ns: None,
                    clock_uncertainty_ns: None,
                })
                .collect(),
        };
        if let Err(source) = state.save(&opts.state_dir) {
            if let Some(res) = &local_res {
                let _ = local::destroy(&topology.name, Some(res));
            }
            return Err(TestbedError::State {
                dir: opts.state_dir.clone(),
                source,
            });
        }
        let (version, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            version,
            generations: topology
                .hosts
                .iter()
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            role_requests: std::sync::atomic::AtomicU64::new(1),
        });

        // 2. One agent per host, all at once. Each host's watcher starts the moment its agent
        //    answers, so no agent's channel sits undrained while slower hosts connect.
        let t1 = Instant::now();
        let cancel = CancellationToken::new();
        let mut host_tasks = JoinSet::new();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let mut commands = Vec::with_capacity(topology.hosts.len());
        let mut command_rxs = Vec::with_capacity(topology.hosts.len());
        for _ in &topology.hosts {
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            commands.push(tx);
            command_rxs.push(Some(rx));
        }
        let mut starts = JoinSet::new();
        for (index, host) in topology.hosts.iter().enumerate() {
            let start = start_agent(&topology, host, local_res.as_ref(), opts);
            starts.spawn(async move { (index, start.await) });
        }
        let mut first_error = None;
        while let Some(joined) = starts.join_next().await {
            match joined {
                Ok((index, Ok((session, keep)))) => {
                    shared.update_host(index, |h| {
                        h.state = HostState::Connected;
                        h.agent_pid = Some(session.info.pid);
                        h.agent_version = Some(session.info.agent_version.clone());
                        h.kernel = Some(session.info.kernel.clone());
                        h.capabilities = session.info.capabilities.clone();
                        h.last_seen_unix_ms = Some(state::unix_ms());
                        h.clock_offset_ns = session.clock.map(|c| c.offset_ns as i64);
                        h.clock_uncertainty_ns = session.clock.map(|c| c.uncertainty_ns);
                    });
                    let Some(commands) = command_rxs.get_mut(index).and_then(Option::take) else {
                        continue; // unreachable: one session per host index
                    };
                    host_tasks.spawn(host_task(
                        session,
                        keep,
                        HostWiring {
                            shared: shared.clone(),
                            index,
                            generation: 0,
                            cancel: cancel.clone(),
                            commands,
                            inbox: inbox_tx.clone(),
                        },
                    ));
                }
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(TestbedError::Internal(e.to_string()));
                }
            }
        }
        if let Some(e) = first_error {
            // Stop the agents that did come up, then remove everything.
            cancel.cancel();
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT + Duration::from_secs(1), async {
                while host_tasks.join_next().await.is_some() {}
            })
            .await;
            host_tasks.abort_all();
            if let Some(res) = &local_res {
                let topo_name = topology.name.clone();
                let res = res.clone();
                let _ = tokio::task::spawn_blocking(move || local::destroy(&topo_name, Some(&res)))
                    .await;
            }
            let _ = std::fs::remove_file(&state_path);
            return Err(e);
        }

        // 3. Persist the state file for `halab status` whenever it changes.
        let writer = tokio::spawn(state_writer(
            shared.clone(),
            opts.state_dir.clone(),
            cancel.clone(),
        ));
        let agents_time = t1.elapsed();
        Ok(Testbed {
            service_address_role: topology.service_address_role,
            topology,
            shared,
            state_dir: opts.state_dir.clone(),
            cancel,
            host_tasks,
            writer: Some(writer),
            _lock: lock,
            commands,
            inbox_tx,
            options: opts.clone(),
            local: local_res,
            inbox: Some(inbox),
            mode: ModeConfig::default(),
            mode_key,
            up_timings: Timings {
                provider: provider_time,
                agents: agents_time,
                total: t0.elapsed(),
            },
        })
    }

    /// The testbed as it is now.
    pub fn snapshot(&self) -> TestbedState {
        self.shared.snapshot()
    }

    /// A read-only view of the testbed's state that does not borrow the testbed (the
    /// dashboard reads it while an experiment's runner holds the testbed).
    pub fn state_view(&self) -> StateView {
        StateView(self.shared.clone())
    }

    /// Sends `msg` to host `host`'s agent.
    pub async fn send(&self, host: &str, msg: ConsoleMsg) -> Result<(), TestbedError> {
        let index = self
            .topology
            .hosts
            .iter()
            .position(|h| h.name == host)
            .ok_or_else(|| TestbedError::Internal(format!("no host `{host}`")))?;
        self.commands[index].send(msg).await.map_err(|_| {
            // The host's watcher ended with its agent: say what became of the host (fenced by
            // a mode, powered off, lost), which is what the user needs to know.
            let h = &self.snapshot().hosts[index];
            TestbedError::Internal(format!(
                "host `{host}` has no agent any more (state {:?}{})",
                h.state,
                h.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ))
        })
    }

    /// Every host's links as they are now (host → network → shape, links that are not plain).
    pub fn links(&self) -> BTreeMap<String, BTreeMap<String, LinkShape>> {
        self.topology
            .hosts
            .iter()
            .filter(|h| !h.links.is_empty())
            .map(|h| (h.name.clone(), h.links.clone()))
            .collect()
    }

    /// Sets every host's links to `links` (an experiment's run): the provider's qdiscs at once;
    /// returns the hosts whose agents must shape their links anew, with their plans (a host
    /// powered off is left out: its next agent shapes its links from the topology).
    pub async fn set_links(
        &mut self,
        links: &BTreeMap<String, BTreeMap<String, LinkShape>>,
    ) -> Result<Vec<(String, Vec<halab_protocol::LinkPlan>)>, TestbedError> {
        let Some(res) = self.local.clone() else {
            return Err(TestbedError::Internal(
                "link settings are applied by provider local only in this version".into(),
            ));
        };
        let old = self.topology.clone();
        for h in &mut self.topology.hosts {
            h.links = links.get(&h.name).cloned().unwrap_or_default();
        }
        let new = self.topology.clone();
        let (before, after, r) = (old.clone(), new.clone(), res.clone());
        tokio::task::spawn_blocking(move || local::relink(&before, &after, &r))
            .await
            .map_err(|e| TestbedError::Internal(e.to_string()))??;
        let snapshot = self.snapshot();
        let by_agents = res.link_delays.by_agents();
        let plans = |t: &Topology, i: usize| {
            crate::topology::link_plan::plans_of(t, i, local::host_mac, by_agents)
        };
        Ok((0..new.hosts.len())
            .filter(|&i| snapshot.hosts[i].state != HostState::PoweredOff)
            .filter_map(|i| {
                let now = plans(&new, i);
                (plans(&old, i) != now).then(|| (new.hosts[i].name.clone(), now))
            })
            .collect())
    }

    fn host_index(&self, host: &str) -> Result<usize, TestbedError> {
        self.topology
            .hosts
            .iter()
            .position(|h| h.name == host)
            .ok_or_else(|| TestbedError::Internal(format!("no host `{host}`")))
    }

    /// Powers host `host` off (DESIGN §6): on provider local every link of its namespace goes
    /// down first — so not even a FIN leaves it — then every process in it is killed, its agent
    /// included; on provider ssh the topology's `power_command` runs on this machine. Returns
    /// T_fault on the console's clock. Idempotent: a host already off is left as it is.
    pub async fn power_off(&self, host: &str) -> Result<u64, TestbedError> {
        let index = self.host_index(host)?;
        if self.snapshot().hosts[index].state == HostState::PoweredOff {
            return Ok(halab_protocol::mono_ns());
        }
        // Marked first, so its watcher takes the agent's death for what it is.
        self.shared.update_host(index, |h| {
            h.state = HostState::PoweredOff;
            h.reason = Some("powered off".into());
        });
        let h = &self.topology.hosts[index];
        match &h.ssh {
            None => {
                let ns = local::host_ns(&self.topology.name, host);
                let service = self.topology.service_network();
                let (addr, prefix, dev) = (
                    self.topology.service_address,
                    service.subnet.prefix_len(),
                    service.name.clone(),
                );
                let (down, killed) = tokio::task::spawn_blocking(move || {
                    local::power_off(&ns, (addr, prefix, dev.as_str()))
                })
                .await
                .map_err(|e| TestbedError::Internal(e.to_string()))??;
                tracing::info!(
                    %host,
                    killed,
                    links_announced_down_ms = down.call_ms(),
                    "powered off: links down, processes killed"
                );
                Ok(down.at_ns)
            }
            Some(ssh) => {
                let cmd = ssh
                    .power_command
                    .as_ref()
                    .ok_or_else(|| TestbedError::Ssh {
                        host: host.into(),
                        message: "no power_command in the topology: cannot power it off".into(),
                    })?;
                let cmd = cmd.replace("{name}", host);
                if let Err(e) = run_power_command(host, &cmd).await {
                    // The host is presumably still on: its watcher goes on watching it.
                    self.shared.update_host(index, |h| {
                        h.state = HostState::Connected;
                        h.reason = Some("power-off failed".into());
                    });
                    return Err(e);
                }
                let at = halab_protocol::mono_ns();
                tracing::info!(%host, %cmd, "powered off");
                Ok(at)
            }
        }
    }

    /// The service address as it sits on a host (`addr/prefix`) and the interface it sits on.
    fn service_address_on_host(&self) -> (String, String) {
        let service = self.topology.service_network();
        (
            format!(
                "{}/{}",
                self.topology.service_address,
                service.subnet.prefix_len()
            ),
            service.name.clone(),
        )
    }

    /// Fences host `host` (a mode's guarantee that a presumed-dead primary is really dead):
    /// a power-off, idempotent, logged.
    pub async fn fence(&self, host: &str, why: &str) -> Result<u64, TestbedError> {
        tracing::warn!(%host, %why, "fencing");
        self.power_off(host).await
    }

    /// Powers host `host` on again and starts a new agent and its roles. Provider local: its
    /// links up. Provider ssh: the topology's `power_on_command` runs on this machine, then the
    /// console connects until the host's SSH answers (a machine boots), for at most
    /// [`SSH_BOOT_TIMEOUT`].
    pub async fn power_on(&mut self, host: &str) -> Result<(), TestbedError> {
        let index = self.host_index(host)?;
        if self.snapshot().hosts[index].state != HostState::PoweredOff {
            return Ok(());
        }
        let h = self.topology.hosts[index].clone();
        let (session, keep) = match &h.ssh {
            Some(ssh) => {
                let cmd = ssh
                    .power_on_command
                    .as_ref()
                    .ok_or_else(|| TestbedError::Ssh {
                        host: host.into(),
                        message: "no power_on_command in the topology: cannot power it on".into(),
                    })?
                    .replace("{name}", host);
                run_power_command(host, &cmd).await?;
                tracing::info!(%host, %cmd, "power-on command ran; waiting for the host's SSH");
                let deadline = tokio::time::Instant::now() + SSH_BOOT_TIMEOUT;
                loop {
                    match start_agent(&self.topology, &h, self.local.as_ref(), &self.options).await
                    {
                        Ok(started) => break started,
                        Err(e) if tokio::time::Instant::now() < deadline => {
                            tracing::debug!(%host, error = %chain(&e), "not up yet");
                            tokio::time::sleep(SSH_BOOT_RETRY).await;
                        }
                        Err(e) => {
                            return Err(TestbedError::Ssh {
                                host: host.into(),
                                message: format!(
                                    "no agent {SSH_BOOT_TIMEOUT:?} after `{cmd}`: {}",
                                    chain(&e)
                                ),
                            });
                        }
                    }
                }
            }
            None => {
                let ns = local::host_ns(&self.topology.name, host);
                let holds = self.snapshot().hosts[index].holds_service_address;
                let (cidr, dev) = self.service_address_on_host();
                tokio::task::spawn_blocking(move || {
                    local::power_on(&ns, (cidr.as_str(), dev.as_str()), holds)
                })
                .await
                .map_err(|e| TestbedError::Internal(e.to_string()))??;
                start_agent(&self.topology, &h, self.local.as_ref(), &self.options).await?
            }
        };
        self.shared.update_host(index, |r| {
            r.state = HostState::Connected;
            r.reason = None;
            r.agent_pid = Some(session.info.pid);
            r.last_seen_unix_ms = Some(state::unix_ms());
            r.clock_offset_ns = session.clock.map(|c| c.offset_ns as i64);
            r.clock_uncertainty_ns = session.clock.map(|c| c.uncertainty_ns);
        });
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        self.commands[index] = tx;
        let generation =
            self.shared.generations[index].fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.host_tasks.spawn(host_task(
            session,
            keep,
            HostWiring {
                shared: self.shared.clone(),
                index,
                generation,
                cancel: self.cancel.clone(),
                commands: rx,
                inbox: self.inbox_tx.clone(),
            },
        ));
        // The roles it has now, which after a takeover are not the topology's: a fenced
        // primary comes back as the backup of the host that took over.
        for role in self.roles_of(host) {
            self.start_role(host, role, self.mode.clone()).await?;
        }
        tracing::info!(%host, "powered on");
        Ok(())
    }

    /// The roles `host` runs now (empty for an unknown host).
    pub fn roles_of(&self, host: &str) -> Vec<Role> {
        self.snapshot()
            .hosts
            .into_iter()
            .find(|h| h.name == host)
            .map(|h| h.roles)
            .unwrap_or_default()
    }

    /// The host that runs `role` now, the first in file order if several do.
    pub fn host_with_role(&self, role: Role) -> Option<String> {
        self.snapshot()
            .hosts
            .into_iter()
            .find(|h| h.roles.contains(&role))
            .map(|h| h.name)
    }

    /// Records what a host reported of itself: it runs `role` where it ran `instead` (a backup
    /// that took over, a fenced primary that rejoined as backup), and whether it holds the
    /// service address now (one host at most: a host taking it is the only one).
    pub fn note_role(&self, host: &str, instead: Role, role: Role, holds_service_address: bool) {
        let Ok(index) = self.host_index(host) else {
            return;
        };
        self.shared.update_host(index, |h| {
            for r in h.roles.iter_mut() {
                if *r == instead {
                    *r = role;
                }
            }
            h.holds_service_address = holds_service_address;
        });
        if holds_service_address {
            for i in 0..self.topology.hosts.len() {
                if i != index {
                    self.shared
                        .update_host(i, |h| h.holds_service_address = false);
                }
            }
        }
    }

    /// Puts the service address back on the topology's primary and takes it off every other
    /// host (provider local; over ssh the roles of the next mode place it). For a mode switch
    /// after takeovers moved it.
    pub async fn restore_service_address(&self) -> Result<(), TestbedError> {
        if self.local.is_none() {
            return Ok(());
        }
        let (cidr, dev) = self.service_address_on_host();
        for h in &self.topology.hosts {
            if !h.addresses.contains_key(&dev) {
                continue;
            }
            let verb = if h.roles.contains(&self.service_address_role) {
                "replace"
            } else {
                "del"
            };
            let ns = local::host_ns(&self.topology.name, &h.name);
            let out = tokio::process::Command::new("ip")
                .args(["-n", &ns, "addr", verb, &cidr, "dev", &dev])
                .output()
                .await
                .map_err(|e| TestbedError::Internal(format!("ip addr {verb}: {e}")))?;
            // Deleting an address the host does not have is what most hosts answer.
            if !out.status.success() && verb == "replace" {
                return Err(TestbedError::Internal(format!(
                    "ip -n {ns} addr replace {cidr}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }

    /// Whether some host's roles or the service address are no longer where the topology put
    /// them (a takeover moved them).
    pub fn roles_moved(&self) -> bool {
        self.snapshot()
            .hosts
            .iter()
            .zip(&self.topology.hosts)
            .any(|(r, h)| {
                r.roles != h.roles
                    || r.holds_service_address != h.roles.contains(&self.service_address_role)
            })
    }

    /// Every host back to its topology roles, the service address on the topology's primary
    /// (between the runs of an experiment, which each start from the topology).
    pub fn reset_roles(&self) {
        let holder = self.service_address_role;
        for (i, h) in self.topology.hosts.iter().enumerate() {
            let roles = h.roles.clone();
            self.shared.update_host(i, |r| {
                r.holds_service_address = roles.contains(&holder);
                r.roles = roles;
            });
        }
    }

    /// The mode roles are started under.
    pub fn mode(&self) -> &ModeConfig {
        &self.mode
    }

    /// The role whose host holds the service address when the mode starts.
    pub fn service_address_role(&self) -> Role {
        self.service_address_role
    }

    /// Sets the role whose host holds the service address under the mode set next (a mode
    /// switch): [`Testbed::reset_roles`] and [`Testbed::restore_service_address`] put it there.
    pub fn set_service_address_role(&mut self, role: Role) {
        self.service_address_role = role;
    }

    /// The testbed's key for modes that authenticate their messages, hex.
    pub fn mode_key(&self) -> &str {
        &self.mode_key
    }

    /// Sets the mode later role starts use (running roles are not touched: start them again,
    /// and the agents redeploy those whose mode changed).
    pub fn set_mode(&mut self, mode: ModeConfig) {
        self.mode = mode;
    }

    /// Asks every host's agent to start each of the host's roles (the agents report back
    /// through the inbox and the log).
    pub async fn start_roles(&self) -> Result<(), TestbedError> {
        for h in &self.topology.hosts {
            for &role in &h.roles {
                self.start_role(&h.name, role, self.mode.clone()).await?;
            }
        }
        Ok(())
    }

    /// Asks `host`'s agent to start `role` under `mode` (an agent redeploys a role running
    /// under another mode). Returns the request's id: the agent's `RoleState` answer carries it,
    /// which tells it apart from answers to earlier requests still in the inbox.
    pub async fn start_role(
        &self,
        host: &str,
        role: Role,
        mode: ModeConfig,
    ) -> Result<u64, TestbedError> {
        let request = self
            .shared
            .role_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.send(
            host,
            ConsoleMsg::StartRole {
                role,
                mode,
                request: Some(request),
            },
        )
        .await?;
        Ok(request)
    }

    /// The messages agents send that concern runs (telemetry, results, faults, roles). There is
    /// one receiver; the first caller gets it.
    pub fn take_inbox(&mut self) -> Option<mpsc::UnboundedReceiver<(String, AgentMsg)>> {
        self.inbox.take()
    }

    /// A receiver that changes whenever a host's record changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// Stops every agent, removes the provider's resources and the state file.
    pub async fn down(mut self) -> Result<Timings, TestbedError> {
        let t0 = Instant::now();
        self.cancel.cancel();
        let joined = tokio::time::timeout(SHUTDOWN_TIMEOUT + Duration::from_secs(1), async {
            while self.host_tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            self.host_tasks.abort_all();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        let agents = t0.elapsed();
        let t1 = Instant::now();
        let snapshot = self.shared.snapshot();
        if self.topology.provider == Provider::Local {
            let name = self.topology.name.clone();
            tokio::task::spawn_blocking(move || local::destroy(&name, snapshot.local.as_ref()))
                .await
                .map_err(|e| TestbedError::Internal(e.to_string()))??;
        }
        let _ = std::fs::remove_file(state::state_path(&self.state_dir, &self.topology.name));
        Ok(Timings {
            agents,
            provider: t1.elapsed(),
            total: t0.elapsed(),
        })
    }
}

/// What keeps an agent's transport alive besides its link.
enum Keepalive {
    /// The local `ip netns exec` child; dropping it lets tokio reap it in the background.
    Child(#[allow(dead_code)] tokio::process::Child),
    Ssh(crate::provider::ssh::SshConnection),
}

fn location(topo: &Topology, host: &Host, local_res: Option<&LocalResources>) -> String {
    match (&host.ssh, local_res) {
        (Some(s), _) => format!("{}@{}:{}", s.user, s.address, s.port),
        (None, Some(res)) => res
            .host_namespaces
            .get(&host.name)
            .cloned()
            .unwrap_or_default(),
        (None, None) => local::host_ns(&topo.name, &host.name),
    }
}

/// How long a host powered on by its `power_on_command` may take to answer on SSH again.
pub const SSH_BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between connection attempts while it boots.
const SSH_BOOT_RETRY: Duration = Duration::from_secs(1);

/// Runs a topology's power command (`sh -c`) on this machine; an error names the command and
/// its exit status.
async fn run_power_command(host: &str, cmd: &str) -> Result<(), TestbedError> {
    let status = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| TestbedError::Internal(format!("{cmd}: {e}")))?;
    if !status.success() {
        return Err(TestbedError::Ssh {
            host: host.into(),
            message: format!("power command `{cmd}` failed: {status}"),
        });
    }
    Ok(())
}

/// Starts one host's agent and completes its hello.
fn start_agent(
    topo: &Topology,
    host: &Host,
    local_res: Option<&LocalResources>,
    opts: &UpOptions,
) -> impl std::future::Future<Output = Result<(AgentSession, Keepalive), TestbedError>> + Send + 'static
{
    let testbed = topo.name.clone();
    let host = host.clone();
    let ns = location(topo, &host, local_res);
    let agent = opts.agent_binary.clone();
    let ssh_opts = opts.ssh.clone();
    let probe = opts.probe;
    // What the host's agent applies to its links (delay, jitter, loss); the rates are the
    // provider's, already in place.
    let link_plans = match (
        topo.hosts.iter().position(|h| h.name == host.name),
        local_res,
    ) {
        (Some(index), Some(res)) => crate::topology::link_plan::plans_of(
            topo,
            index,
            local::host_mac,
            res.link_delays.by_agents(),
        ),
        _ => Vec::new(),
    };
    async move {
        let agent_err = |source: LinkError, stderr: String| TestbedError::Agent {
            host: host.name.clone(),
            source,
            stderr,
        };
        let (link, keep) = match (&host.ssh, &ssh_opts) {
            (Some(_), Some(ssh_opts)) => {
                let target =
                    crate::provider::ssh::SshTarget::from_host(&host).ok_or_else(|| {
                        TestbedError::Internal(format!("host {} has no ssh settings", host.name))
                    })?;
                let (link, conn) = crate::provider::ssh::connect_agent(&target, ssh_opts, &agent)
                    .await
                    .map_err(|e| TestbedError::Ssh {
                        host: host.name.clone(),
                        message: chain(&e),
                    })?;
                (link, Keepalive::Ssh(conn))
            }
            _ => {
                let args = vec![
                    "netns".to_string(),
                    "exec".to_string(),
                    ns,
                    agent.display().to_string(),
                ];
                let (link, child) = spawn_process_link(Path::new("ip"), &args)
                    .map_err(|e| agent_err(e, String::new()))?;
                (link, Keepalive::Child(child))
            }
        };
        let mut session = AgentSession::handshake(link, &testbed, &host.name, probe, HELLO_TIMEOUT)
            .await
            .map_err(|e| agent_err(e, String::new()))?;
        match session.clock_probe(5, HELLO_TIMEOUT).await {
            Ok(est) => {
                tracing::info!(
                    host = %host.name,
                    offset_ns = est.offset_ns as i64,
                    uncertainty_ns = est.uncertainty_ns,
                    "agent clock"
                );
                session.clock = Some(est);
            }
            Err(e) => {
                let tail = session.stderr_tail().collect::<Vec<_>>().join("\n");
                return Err(agent_err(e, tail));
            }
        }
        if !link_plans.is_empty() {
            match session.shape_links(link_plans, LINK_SHAPE_TIMEOUT).await {
                Ok(Ok(detail)) => tracing::info!(host = %host.name, %detail, "links shaped"),
                Ok(Err(error)) => {
                    return Err(TestbedError::Links {
                        host: host.name.clone(),
                        error,
                    });
                }
                Err(e) => {
                    let tail = session.stderr_tail().collect::<Vec<_>>().join("\n");
                    return Err(agent_err(e, tail));
                }
            }
        }
        tracing::info!(host = %host.name, pid = session.info.pid, "agent connected");
        Ok((session, keep))
    }
}

/// Watches one agent until cancelled or lost: a ping every [`PING_INTERVAL`], never more than
/// one outstanding, and lost when one is not answered within [`PING_TIMEOUT`]. Pings are sent
/// without waiting, so a cancellation is acted on at once.
/// What a host task is connected to.
struct HostWiring {
    shared: Arc<Shared>,
    index: usize,
    /// Which of the host's agents this is (see [`Shared::generations`]).
    generation: u64,
    cancel: CancellationToken,
    /// Messages for the agent, from the orchestrator.
    commands: mpsc::Receiver<ConsoleMsg>,
    /// Where messages for the orchestrator go.
    inbox: mpsc::UnboundedSender<(String, AgentMsg)>,
}

async fn host_task(mut session: AgentSession, keep: Keepalive, wiring: HostWiring) {
    let HostWiring {
        shared,
        index,
        generation,
        cancel,
        mut commands,
        inbox,
    } = wiring;
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outstanding: Option<(u64, Instant)> = None;
    let current =
        || shared.generations[index].load(std::sync::atomic::Ordering::SeqCst) == generation;
    let lost = |e: LinkError| {
        let reason = chain(&e);
        tracing::warn!(host = %session_host(&shared, index), %reason, "agent lost");
        if !current() {
            // A new agent runs on the host since (power-on): this one's end is old news.
            return;
        }
        shared.update_host(index, |h| {
            // A host powered off on purpose lost its agent as planned: it stays powered off.
            if h.state != HostState::PoweredOff {
                h.state = HostState::Lost;
                h.reason = Some(reason);
            }
        });
    };
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let host = session.host.clone();
                let outcome = session.shutdown(SHUTDOWN_TIMEOUT).await;
                if let Err(e) = &outcome {
                    tracing::warn!(%host, error = %chain(e), "agent did not stop cleanly");
                }
                shared.update_host(index, |h| {
                    h.state = HostState::Stopped;
                    h.reason = outcome.err().map(|e| chain(&e));
                });
                break;
            }
            Some(msg) = commands.recv() => {
                if let Err(e) = session.send(msg).await {
                    lost(e);
                    break;
                }
            }
            _ = tick.tick() => {
                if let Some((_, sent)) = outstanding {
                    if sent.elapsed() >= PING_TIMEOUT {
                        lost(LinkError::Timeout(PING_TIMEOUT));
                        break;
                    }
                    continue;
                }
                match session.send_ping().await {
                    Ok(id) => outstanding = Some((id, Instant::now())),
                    Err(e) => {
                        lost(e);
                        break;
                    }
                }
            }
            msg = session.next_message() => match msg {
                Ok(AgentMsg::Pong { id }) => {
                    if let Some((want, sent)) = outstanding
                        && want == id
                        && current()
                    {
                        outstanding = None;
                        let rtt = sent.elapsed();
                        shared.update_host(index, |h| {
                            // A pong that crossed a power-off does not power the host on.
                            if h.state != HostState::PoweredOff {
                                h.state = HostState::Connected;
                                h.reason = None;
                            }
                            h.rtt_us = Some(rtt.as_micros() as u64);
                            h.last_seen_unix_ms = Some(state::unix_ms());
                        });
                    }
                }
                Ok(msg) => {
                    if let AgentMsg::RoleState {
                        role,
                        state,
                        detail,
                        ..
                    } = &msg {
                        tracing::info!(host = %session.host, %role, ?state, ?detail, "role state");
                    }
                    // Nobody listening (no run in progress) is fine: the message is dropped.
                    let _ = inbox.send((session.host.clone(), msg));
                }
                Err(e) => {
                    lost(e);
                    break;
                }
            },
        }
    }
    if let Keepalive::Ssh(conn) = keep {
        conn.close().await;
    }
}

fn session_host(shared: &Shared, index: usize) -> String {
    shared
        .snapshot()
        .hosts
        .get(index)
        .map(|h| h.name.clone())
        .unwrap_or_default()
}

/// Persists the state file whenever it changed, at most every [`STATE_WRITE_INTERVAL`], and
/// once more when cancelled so the final states are on disk.
async fn state_writer(shared: Arc<Shared>, dir: PathBuf, cancel: CancellationToken) {
    let mut rx = shared.version.subscribe();
    loop {
        // Save first: changes made before this task subscribed are on disk at once.
        if let Err(e) = shared.snapshot().save(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write state file");
        }
        let stop = tokio::select! {
            _ = cancel.cancelled() => true,
            r = rx.changed() => r.is_err(),
        };
        if stop {
            // One last save, so the final states are on disk.
            let _ = shared.snapshot().save(&dir);
            break;
        }
        tokio::time::sleep(STATE_WRITE_INTERVAL).await;
    }
}

/// Takes down testbed `name` without a running [`Testbed`]: after a console crash, or from
/// another terminal. A console still running it (it holds the testbed's lock) is asked to stop
/// first (SIGTERM) and given time to tear down itself; then, holding the lock, every leftover
/// namespace, link and process is removed. Returns the namespaces removed here.
pub async fn down_by_name(name: &str, state_dir: &Path) -> Result<Vec<String>, TestbedError> {
    let path = state::state_path(state_dir, name);
    let state_err = |source| TestbedError::State {
        dir: state_dir.to_path_buf(),
        source,
    };
    let mut lock = TestbedLock::try_acquire(state_dir, name).map_err(state_err)?;
    if lock.is_none() {
        // The lock is held, so the state file was written by the console holding it.
        let pid = TestbedState::load(&path).map(|s| s.console_pid).ok();
        if let Some(pid) = pid.filter(|p| *p != 0 && *p != std::process::id()) {
            tracing::info!(pid, "asking the running console to tear down");
            // SAFETY: kill(2) on the pid of the process that holds the testbed's lock.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while lock.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            lock = TestbedLock::try_acquire(state_dir, name).map_err(state_err)?;
        }
        if lock.is_none() {
            return Err(TestbedError::Internal(format!(
                "the console running testbed `{name}` (pid {}) did not stop within 15 s; \
                 stop it, then run `halab down` again",
                pid.map(|p| p.to_string()).unwrap_or("unknown".into())
            )));
        }
    }
    let recorded = TestbedState::load(&path).ok();
    let local = recorded.as_ref().and_then(|s| s.local.clone());
    let name_owned = name.to_string();
    let removed = tokio::task::spawn_blocking(move || local::destroy(&name_owned, local.as_ref()))
        .await
        .map_err(|e| TestbedError::Internal(e.to_string()))??;
    let _ = std::fs::remove_file(&path);
    drop(lock);
    Ok(removed)
}
