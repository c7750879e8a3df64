//! The st-tcp backup: tap, tracker and replicas in failure-free operation; failure detection
//! from heartbeats over two links, the primary's progress against the replica's (application
//! hang, thesis §3.7.3) and held FINs (§3.7.4); on failure the fence request, then the
//! takeover of every connection.

use super::command::{self, CommandError};
use super::events::emit;
use super::heartbeat::{self, DETECT_CHECK, Link, Wire};
use super::logger;
use super::monitor::{Check, Failure, FinKey, Monitor, ReplicaView, fin_key};
use super::primary::{self, Exit, Primary};
use super::replica::{self, Note, Replica, ToReplica};
use super::start_error::{self, StartError};
use super::takeover::{Plan, plan, repair};
use super::tap::{self, Tap};
use super::tracker::{ConnKey, Output, Tracker, parse_frame, unwrap};
use crate::error::{Chain, chain};
use crate::role_ctx::{RoleCtx, StartedRole};
use crate::server_process::serve_role;
use halab_protocol::modes::st_tcp::{
    Channel, Command, Event, Heartbeat, REPLICA_PORTS, StTcpConfig, fence_tag,
};
use halab_protocol::sealed::Key;
use halab_protocol::{AgentMsg, ModeCommand, Role, mono_ns};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a confirmed close stays in the backup's beats.
const FIN_OK_KEEP_NS: u64 = 10_000_000_000;

pub async fn start(ctx: RoleCtx, cfg: StTcpConfig) -> Result<StartedRole, StartError> {
    let vip = start_error::vip(&cfg.vip)?;
    let key = Key::from_hex(&cfg.key_hex).map_err(StartError::Key)?;
    // A backup never holds the service address: a host powered on after it was fenced still
    // has it on its interface, and must not answer for it.
    let mut vip_guard = VipGuard {
        iface: cfg.service_iface.clone(),
        cidr: format!("{vip}/{}", cfg.vip_prefix),
        added: true,
    };
    vip_guard.remove().await;
    let tap = Tap::open(&cfg.service_iface, vip).map_err(|source| StartError::Tap {
        iface: cfg.service_iface.clone(),
        source,
    })?;
    let sock = Arc::new(
        heartbeat::socket()
            .await
            .map_err(StartError::HeartbeatSocket)?,
    );
    let (port, http_port) = (REPLICA_PORTS.0.to_string(), REPLICA_PORTS.1.to_string());
    let served = serve_role(
        &ctx,
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--http-port",
            &http_port,
        ],
        &[],
        "replica server",
    )
    .await?;
    let p = served.pid;
    let (cmd_tx, mut cmd_rx) = mpsc::channel(16);
    let RoleCtx {
        cancel, outbound, ..
    } = ctx;
    let server = served.supervisor;
    let (notes_tx, mut notes_rx) = mpsc::unbounded_channel();
    let rst_guard = match super::fin_hold::RstGuard::install(vip, &cfg.service_ports).await {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "st-tcp: no RST guard; a takeover may reset connections");
            None
        }
    };
    let logger = match &cfg.logger {
        None => None,
        Some(l) => {
            let addr: std::net::IpAddr =
                l.service_addr
                    .parse()
                    .map_err(|source| StartError::LoggerAddr {
                        addr: l.service_addr.clone(),
                        source,
                    })?;
            let sock = tokio::net::UdpSocket::bind(("0.0.0.0", 0))
                .await
                .map_err(StartError::LoggerQuerySocket)?;
            Some((
                sock,
                std::net::SocketAddr::new(addr, halab_protocol::modes::st_tcp::LOGGER_PORT),
            ))
        }
    };
    let task = tokio::spawn(async move {
        let _rst_guard = rst_guard;
        let mut b = Backup {
            monitor: Monitor::new(&cfg, mono_ns()),
            tracker: Tracker::new(vip, cfg.service_ports.clone()),
            vip_guard,
            wire: Wire::new(key.clone()),
            key,
            cfg,
            vip,
            sock,
            outbound,
            replicas: HashMap::new(),
            tasks: JoinSet::new(),
            notes_tx,
            state: State::Tapping,
            fin_ok: Vec::new(),
            ended: HashMap::new(),
            seq: 0,
            incarnation: primary::wall_ns(),
            last_primary_beat: (0, 0),
            logger,
            recovered: HashMap::new(),
            logger_forged: 0,
            client_segments: 0,
            service: None,
            service_cancel: cancel.child_token(),
            cancel: cancel.clone(),
        };
        b.announce().await;
        let mut tap = Some(tap);
        loop {
            if b.run(&mut tap, &mut notes_rx, &mut cmd_rx).await == Tapped::Stopped {
                break;
            }
            // Taken over: this host is the primary now, with the old primary as the backup
            // it waits for. What its watch over the old primary refused is told first.
            b.report_refused().await;
            let mut serving = Primary::new(
                b.cfg.promoted(),
                b.vip,
                b.sock.clone(),
                Wire::new(b.key.clone()),
                b.outbound.clone(),
                true,
            )
            .await;
            let cancel = b.cancel.clone();
            let exit = {
                let run = serving.run(&cancel, &mut cmd_rx);
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        e = &mut run => break e,
                        Some(n) = notes_rx.recv() => b.on_note(n, &[]).await,
                    }
                }
            };
            serving.shutdown().await;
            if exit == Exit::Stopped {
                break;
            }
            b.reset().await;
            tap = b.reopen_tap();
            b.announce().await;
        }
        b.reset().await;
        b.tasks.shutdown().await;
        let _ = server.await;
    });
    Ok(StartedRole {
        task,
        detail: Some(format!("replica server pid {p}; st-tcp backup tapping")),
        commands: Some(cmd_tx),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Tapping,
    /// The console was asked to fence the primary.
    Fencing,
    TakenOver,
}

/// The service address added to the backup's interface, removed on drop.
struct VipGuard {
    iface: String,
    cidr: String,
    added: bool,
}

impl VipGuard {
    async fn add(&mut self) -> Result<(), CommandError> {
        match command::run("ip", &["addr", "add", &self.cidr, "dev", &self.iface], None).await {
            Ok(()) => {
                self.added = true;
                Ok(())
            }
            Err(CommandError::Failed { stderr, .. }) if stderr.contains("exists") => {
                self.added = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn remove(&mut self) {
        if self.added {
            self.added = false;
            if let Err(e) =
                command::run("ip", &["addr", "del", &self.cidr, "dev", &self.iface], None).await
            {
                tracing::warn!(error = %Chain(&e), "st-tcp: service address not removed");
            }
        }
    }
}

impl Drop for VipGuard {
    fn drop(&mut self) {
        if self.added {
            let _ = std::process::Command::new("ip")
                .args(["addr", "del", &self.cidr, "dev", &self.iface])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

struct Backup {
    cfg: StTcpConfig,
    vip: Ipv4Addr,
    sock: Arc<tokio::net::UdpSocket>,
    /// Seals and checks beats (and guards against replays).
    wire: Wire,
    key: Key,
    outbound: mpsc::Sender<AgentMsg>,
    /// The watch over the primary: beats, lag, held FINs.
    monitor: Monitor,
    tracker: Tracker,
    replicas: HashMap<ConnKey, (Replica, CancellationToken)>,
    tasks: JoinSet<()>,
    notes_tx: mpsc::UnboundedSender<Note>,
    state: State,
    vip_guard: VipGuard,
    /// Closes confirmed to the primary, with when.
    fin_ok: Vec<(FinKey, u64, u64)>,
    /// Replicas whose output ended, and where.
    ended: HashMap<ConnKey, u64>,
    seq: u64,
    incarnation: u64,
    /// The latest primary beat taken, (incarnation, seq): each comes once per link.
    last_primary_beat: (u64, u64),
    /// Where missed client bytes are asked for (the logger), if there is a logger.
    logger: Option<(tokio::net::UdpSocket, std::net::SocketAddr)>,
    /// Logger answers refused (bad tag) since the last report.
    logger_forged: u64,
    /// Client bytes recovered from the logger since the last report, per connection.
    recovered: HashMap<ConnKey, u64>,
    /// Client data segments seen, for the test knob `tap_drop_every`.
    client_segments: u64,
    cancel: CancellationToken,
    /// After a takeover: the listeners serving new connections on the service address.
    service: Option<JoinSet<()>>,
    /// Stops those listeners and their connections (a reset, the role's end).
    service_cancel: CancellationToken,
}

/// The backup's own server port standing in for the `i`-th service port (the workload port
/// first, then the http port).
fn replica_port(i: usize) -> u16 {
    if i == 0 {
        REPLICA_PORTS.0
    } else {
        REPLICA_PORTS.1
    }
}

/// Why the backup cannot serve new connections on the service address after a takeover.
#[derive(Debug, thiserror::Error)]
#[error("listening on {vip}:{port}")]
struct ListenError {
    vip: Ipv4Addr,
    port: u16,
    #[source]
    source: std::io::Error,
}

/// Why one connection was not taken over (its takeover event's error).
#[derive(Debug, thiserror::Error)]
enum TakeoverError {
    #[error("{0}")]
    Plan(&'static str),
    /// TCP_REPAIR refused the rebuilt socket.
    #[error(transparent)]
    Repair(std::io::Error),
    #[error("replica gone")]
    ReplicaGone,
    /// The replica could not finish the rebuilt socket.
    #[error(transparent)]
    Finish(std::io::Error),
    #[error("replica ended")]
    ReplicaEnded,
    #[error("replica did not answer within 5 s")]
    NoAnswer,
}

/// After a takeover the backup is the service: new connections to the service address are
/// accepted and relayed to its own server, so that clients that connect afresh (a new curl, a
/// client whose connection was never taken over) are served too.
async fn serve_service_address(
    vip: Ipv4Addr,
    ports: Vec<u16>,
    cancel: CancellationToken,
) -> Result<JoinSet<()>, ListenError> {
    let mut set = JoinSet::new();
    for (i, port) in ports.into_iter().enumerate() {
        let listener = tokio::net::TcpListener::bind((vip, port))
            .await
            .map_err(|source| ListenError { vip, port, source })?;
        let to = replica_port(i);
        let cancel = cancel.clone();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    a = listener.accept() => {
                        let Ok((mut client, _)) = a else { continue };
                        let cancel = cancel.clone();
                        conns.spawn(async move {
                            let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                                return;
                            };
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            tokio::select! {
                                _ = cancel.cancelled() => {}
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            conns.shutdown().await;
        });
    }
    Ok(set)
}

/// Why [`Backup::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tapped {
    /// The role stops.
    Stopped,
    /// The primary was fenced and this host took its connections over: it serves now.
    TookOver,
}

impl Backup {
    /// Tells the console what this host is now: the backup, without the service address.
    async fn announce(&self) {
        emit(
            &self.outbound,
            Event::Serving {
                at_ns: mono_ns(),
                role: Role::Backup,
                service_address: false,
            },
        )
        .await;
    }

    fn reopen_tap(&self) -> Option<Tap> {
        match Tap::open(&self.cfg.service_iface, self.vip) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "st-tcp: tap not reopened");
                None
            }
        }
    }

    /// Datagrams refused since the last report: beats, and answers claiming to be the
    /// logger's.
    async fn report_refused(&mut self) {
        primary::report_refused(&mut self.wire, &self.outbound).await;
        if self.logger_forged > 0 {
            emit(
                &self.outbound,
                Event::Refused {
                    at_ns: mono_ns(),
                    channel: Channel::Logger,
                    forged: std::mem::take(&mut self.logger_forged),
                    replayed: 0,
                },
            )
            .await;
        }
    }

    /// A replica's news.
    async fn on_note(&mut self, n: Note, peer: &[(Link, String)]) {
        match n {
            Note::OutputEnded { key, at } => {
                self.ended.insert(key, at);
                self.fin_ok.push((fin_key(&key), at, mono_ns()));
                if !peer.is_empty() {
                    self.beat(peer).await;
                }
            }
            Note::Finished { key, detail } => {
                tracing::debug!(%key, %detail, "replica finished");
            }
            Note::Stalled { key, detail } => {
                tracing::warn!(%key, %detail, "st-tcp: rebuilt connection stalled");
                emit(
                    &self.outbound,
                    Event::Error {
                        at_ns: mono_ns(),
                        message: format!("{key}: rebuilt connection stalled: {detail}"),
                    },
                )
                .await;
            }
        }
    }

    async fn run(
        &mut self,
        tap: &mut Option<Tap>,
        notes: &mut mpsc::UnboundedReceiver<Note>,
        commands: &mut mpsc::Receiver<ModeCommand>,
    ) -> Tapped {
        let mut tick =
            tokio::time::interval(Duration::from_millis((self.cfg.heartbeat_ms / 2).max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The failure detector is looked at every few ms, not every half interval: a check
        // half an interval late would add up to that much to every failover.
        let mut detect_tick = tokio::time::interval(
            DETECT_CHECK.min(Duration::from_millis((self.cfg.heartbeat_ms / 2).max(1))),
        );
        detect_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat_every = 0u32;
        let mut buf = vec![0u8; 64 * 1024];
        let mut lbuf = vec![0u8; 64 * 1024];
        let peer = super::primary::peers(&self.cfg.primary);
        let mut outs = Vec::new();
        let mut refused_tick = tokio::time::interval(Duration::from_secs(1));
        let sock = self.sock.clone();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Tapped::Stopped,
                _ = refused_tick.tick() => self.report_refused().await,
                r = recv_answer(&self.logger, &mut lbuf) => {
                    if let Some(n) = r {
                        self.on_answer(&lbuf[..n], &mut outs);
                        self.route(&mut outs);
                    }
                }
                r = next_frames(
                    tap,
                    &mut self.tracker,
                    &mut outs,
                    (self.cfg.tap_drop_every, &mut self.client_segments),
                ), if tap.is_some() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "st-tcp: tap failed");
                        *tap = None;
                    }
                    self.route(&mut outs);
                }
                _ = tick.tick() => {
                    // Beats go out every interval; the logger is asked twice as often.
                    beat_every += 1;
                    if beat_every.is_multiple_of(2) {
                        self.beat(&peer).await;
                    }
                    self.ask_logger().await;
                    self.report_recovered().await;
                }
                _ = detect_tick.tick() => {
                    self.drain_beats(&mut buf, &peer).await;
                    self.check().await;
                }
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, _)) = r else { continue };
                    self.on_datagram(&buf[..n], &peer).await;
                }
                Some(n) = notes.recv() => self.on_note(n, &peer).await,
                c = commands.recv() => match c {
                    None => return Tapped::Stopped,
                    Some(ModeCommand::StTcp(Command::Fenced { host, error })) => {
                        if self.state != State::Fencing {
                            continue;
                        }
                        match error {
                            None => {
                                if let Some(t) = tap.as_mut() {
                                    t.drain(|f| {
                                        if let Some(seg) = parse_frame(f) {
                                            self.tracker.on_segment(&seg, mono_ns(), &mut outs);
                                        }
                                    });
                                }
                                self.route(&mut outs);
                                *tap = None;
                                self.fetch_gaps_now(&mut lbuf, &mut outs).await;
                                if self.takeover().await {
                                    return Tapped::TookOver;
                                }
                            }
                            Some(e) => {
                                // Never take over from a primary that may still be alive.
                                emit(&self.outbound, Event::Error {
                                    at_ns: mono_ns(),
                                    message: format!("fencing {host} failed: {e}; no takeover"),
                                }).await;
                                self.state = State::Tapping;
                                self.monitor.reset(mono_ns());
                            }
                        }
                    }
                    Some(ModeCommand::StTcp(Command::Reset)) => {
                        self.reset().await;
                        *tap = self.reopen_tap();
                        self.announce().await;
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// Asks the logger for every gap in the client streams the tap left.
    async fn ask_logger(&mut self) {
        let Some((sock, addr)) = &self.logger else {
            return;
        };
        for (key, c) in self.tracker.conns() {
            for (from, to) in c.gaps() {
                let req = logger::Request {
                    key: *key,
                    seq: c.client_seq(from),
                    len: (to - from).min(1 << 20) as u32,
                };
                let _ = sock.send_to(&req.encode(&self.key), addr).await;
            }
        }
    }

    /// Fills a gap with the logger's answer.
    fn on_answer(&mut self, b: &[u8], outs: &mut Vec<Output>) {
        let Some((key, seq, bytes)) = logger::decode_answer(&self.key, b) else {
            self.logger_forged += 1;
            return;
        };
        let Some(c) = self.tracker.get(&key) else {
            return;
        };
        let Some(at) = unwrap(seq, c.client_isn.wrapping_add(1), c.client_next) else {
            return;
        };
        let before = c.client_next;
        self.tracker.fill(key, at, bytes, outs);
        let after = self.tracker.get(&key).map_or(before, |c| c.client_next);
        // Only the answer's own bytes that closed a gap count (the bytes behind the gap that
        // it released came from the tap).
        let new = (at + bytes.len() as u64)
            .min(after)
            .saturating_sub(at.max(before));
        if new > 0 {
            *self.recovered.entry(key).or_default() += new;
        }
    }

    async fn report_recovered(&mut self) {
        for (key, bytes) in std::mem::take(&mut self.recovered) {
            emit(
                &self.outbound,
                Event::LoggerRecovered {
                    at_ns: mono_ns(),
                    connection: key,
                    bytes,
                },
            )
            .await;
        }
    }

    /// Before a takeover: every gap filled from the logger if it can be, within 300 ms.
    async fn fetch_gaps_now(&mut self, lbuf: &mut [u8], outs: &mut Vec<Output>) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while self.tracker.conns().any(|(_, c)| !c.gaps().is_empty()) && self.logger.is_some() {
            self.ask_logger().await;
            let until = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            while let Ok(Some(n)) =
                tokio::time::timeout_at(until, recv_answer(&self.logger, lbuf)).await
            {
                self.on_answer(&lbuf[..n], outs);
                self.route(outs);
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        self.report_recovered().await;
    }

    /// Hands the tracker's news to the replicas.
    fn route(&mut self, outs: &mut Vec<Output>) {
        for o in outs.drain(..) {
            match o {
                Output::Opened(key) => {
                    let Some(i) = self.cfg.service_ports.iter().position(|p| *p == key.port) else {
                        continue;
                    };
                    let port = replica_port(i);
                    let cancel = self.cancel.child_token();
                    let r = replica::spawn(
                        key,
                        port,
                        cancel.clone(),
                        self.notes_tx.clone(),
                        &mut self.tasks,
                    );
                    if let Some((_, old)) = self.replicas.insert(key, (r, cancel)) {
                        old.cancel();
                    }
                }
                Output::ClientBytes { key, bytes, .. } => {
                    if let Some((r, _)) = self.replicas.get(&key) {
                        let _ = r.tx.send(ToReplica::Bytes(bytes));
                    }
                }
                Output::Acked { key, upto } => {
                    if let Some((r, _)) = self.replicas.get(&key) {
                        let _ = r.tx.send(ToReplica::Acked(upto));
                    }
                }
                Output::ClientFin(key) => {
                    if let Some((r, _)) = self.replicas.get(&key) {
                        let _ = r.tx.send(ToReplica::ClientFin);
                    }
                }
                Output::Closed(key) => {
                    if let Some((_, c)) = self.replicas.remove(&key) {
                        c.cancel();
                    }
                    self.ended.remove(&key);
                    self.monitor.forget(&key);
                }
            }
        }
    }

    /// The backup's own beat: alive, and which closes it confirms.
    async fn beat(&mut self, peer: &[(Link, String)]) {
        self.seq += 1;
        let now = mono_ns();
        self.fin_ok
            .retain(|(_, _, t)| now.saturating_sub(*t) < FIN_OK_KEEP_NS);
        let mut hb = Heartbeat {
            from: self.cfg.backup.host.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            link: Link::Service,
            conns: Vec::new(),
            held_fins: Vec::new(),
            fin_ok: self
                .fin_ok
                .iter()
                .map(|(k, end, _)| (k.0, k.1, k.2, *end))
                .collect(),
            tracking: self.tracker.conns().map(|(k, _)| fin_key(k)).collect(),
        };
        heartbeat::send(&self.sock, &self.wire, &mut hb, peer).await;
    }

    /// Progress and held FINs from a primary beat (thesis §3.6.1, §3.7.3, §3.7.4).
    /// Takes a datagram from the heartbeat socket: a beat of the primary's, or nothing.
    async fn on_datagram(&mut self, datagram: &[u8], peer: &[(Link, String)]) {
        let Ok(hb) = self.wire.open(datagram) else {
            return;
        };
        if hb.from == self.cfg.primary.host {
            self.monitor.on_beat(hb.link, mono_ns());
            let at = (hb.incarnation, hb.seq);
            if at > self.last_primary_beat {
                self.last_primary_beat = at;
                self.on_primary_beat(hb, peer).await;
            }
        }
    }

    /// Takes every datagram already waiting on the heartbeat socket. Called before each
    /// verdict: a loop kept busy by the tap (a bulk run on a loaded host) may not have read
    /// beats that did arrive, and the verdict must not count them as missed.
    async fn drain_beats(&mut self, buf: &mut [u8], peer: &[(Link, String)]) {
        let sock = self.sock.clone();
        while let Ok((n, _)) = sock.try_recv_from(buf) {
            self.on_datagram(&buf[..n], peer).await;
        }
    }

    async fn on_primary_beat(&mut self, hb: Heartbeat, peer: &[(Link, String)]) {
        if self.state != State::Tapping {
            return;
        }
        let now = mono_ns();
        let replicas: HashMap<ConnKey, ReplicaView> = self
            .replicas
            .iter()
            .map(|(k, (r, _))| {
                (
                    *k,
                    ReplicaView {
                        produced: r.progress.produced.load(Ordering::Relaxed),
                        ended: self.ended.get(k).copied(),
                    },
                )
            })
            .collect();
        let confirmed: Vec<FinKey> = self.fin_ok.iter().map(|(k, _, _)| *k).collect();
        let out = self.monitor.on_progress(&hb, &replicas, &confirmed, now);
        if let Some(key) = out.fin_held {
            emit(
                &self.outbound,
                Event::FinHeld {
                    at_ns: now,
                    connection: key,
                    outcome: halab_protocol::modes::st_tcp::FinOutcome::NotConfirmedTakeover,
                },
            )
            .await;
        }
        if !out.confirm.is_empty() {
            for (k, end) in out.confirm {
                self.fin_ok.push((k, end, now));
            }
            self.beat(peer).await;
        }
        if let Some(f) = out.failure {
            self.fail(f).await;
        }
    }

    /// Heartbeat verdict, every [`DETECT_CHECK`].
    async fn check(&mut self) {
        if self.state != State::Tapping {
            return;
        }
        let now = mono_ns();
        let iface = self.cfg.service_iface.clone();
        match self.monitor.check(now, || crate::iface::link_up(&iface)) {
            Check::Fine => {}
            Check::Failed(f) => self.fail(f).await,
            Check::OwnServiceLinkDown => {
                emit(
                    &self.outbound,
                    Event::Error {
                        at_ns: now,
                        message: "the backup's service link is down: no takeover".into(),
                    },
                )
                .await;
            }
        }
    }

    /// Declares the primary failed and asks the console to fence it.
    async fn fail(&mut self, f: Failure) {
        self.state = State::Fencing;
        let now = mono_ns();
        emit(
            &self.outbound,
            Event::Detect {
                at_ns: now,
                reason: f.reason,
                detail: f.detail.clone(),
            },
        )
        .await;
        let at_ns = mono_ns();
        let host = self.cfg.primary.host.clone();
        let tag = fence_tag(&self.key, &host, at_ns);
        emit(
            &self.outbound,
            Event::FenceRequest {
                at_ns,
                host,
                why: format!("{}: {}", f.reason.name(), f.detail),
                tag,
            },
        )
        .await;
    }

    /// Service address, gratuitous ARP, then every connection rebuilt and its held output
    /// sent.
    /// True when this host serves now (the service address is its own).
    async fn takeover(&mut self) -> bool {
        self.state = State::TakenOver;
        if let Err(e) = self.vip_guard.add().await {
            emit(
                &self.outbound,
                Event::Error {
                    at_ns: mono_ns(),
                    message: format!("cannot add the service address: {}", Chain(&e)),
                },
            )
            .await;
            return false;
        }
        if let Err(e) = tap::send_garp(&self.cfg.service_iface, self.vip, 3) {
            tracing::warn!(error = %e, "st-tcp: gratuitous ARP");
        }
        let mut waiting: Vec<(ConnKey, oneshot::Receiver<std::io::Result<u64>>)> = Vec::new();
        let mut failed = 0u32;
        let now = mono_ns();
        let keys: Vec<ConnKey> = self.tracker.conns().map(|(k, _)| *k).collect();
        for key in keys {
            let Some(conn) = self.tracker.get(&key) else {
                continue;
            };
            let Some((r, _)) = self.replicas.get(&key) else {
                continue;
            };
            let reported = self.monitor.last_ack_reported(&key);
            let ended = self.ended.contains_key(&key);
            let result = match plan(self.vip, key, conn, ended, reported, now) {
                Plan::Skip(why) => {
                    tracing::info!(%key, why, "st-tcp: not taken over");
                    continue;
                }
                Plan::Fail(e) => Err(TakeoverError::Plan(e)),
                Plan::Rebuild { params, from, sent } => repair(&params)
                    .map_err(TakeoverError::Repair)
                    .and_then(|sock| {
                        let (done, rx) = oneshot::channel();
                        r.tx.send(ToReplica::TakeOver {
                            sock,
                            from,
                            sent,
                            done,
                        })
                        .map_err(|_| TakeoverError::ReplicaGone)
                        .map(|()| rx)
                    }),
            };
            match result {
                Ok(rx) => waiting.push((key, rx)),
                Err(e) => {
                    failed += 1;
                    emit(
                        &self.outbound,
                        Event::Takeover {
                            at_ns: mono_ns(),
                            connection: key,
                            resent: 0,
                            error: Some(chain(&e)),
                        },
                    )
                    .await;
                }
            }
        }
        let total = waiting.len() as u32 + failed;
        for (key, rx) in waiting {
            let (resent, error) = match tokio::time::timeout(Duration::from_secs(5), rx).await {
                Ok(Ok(Ok(n))) => (n, None),
                Ok(Ok(Err(e))) => (0, Some(TakeoverError::Finish(e))),
                Ok(Err(_)) => (0, Some(TakeoverError::ReplicaEnded)),
                Err(_) => (0, Some(TakeoverError::NoAnswer)),
            };
            let error = error.map(|e| chain(&e));
            if error.is_some() {
                failed += 1;
            }
            emit(
                &self.outbound,
                Event::Takeover {
                    at_ns: mono_ns(),
                    connection: key,
                    resent,
                    error,
                },
            )
            .await;
        }
        emit(
            &self.outbound,
            Event::TakeoverDone {
                at_ns: mono_ns(),
                connections: total,
                failed,
            },
        )
        .await;
        // Listening only now: a listener on the service port before the rebuild would take
        // the client's segments for connection attempts of its own.
        match serve_service_address(
            self.vip,
            self.cfg.service_ports.clone(),
            self.service_cancel.child_token(),
        )
        .await
        {
            Ok(set) => self.service = Some(set),
            Err(e) => {
                emit(
                    &self.outbound,
                    Event::Error {
                        at_ns: mono_ns(),
                        message: format!("new connections to the service address: {}", Chain(&e)),
                    },
                )
                .await
            }
        }
        true
    }

    /// Back to tapping with nothing: connections dropped, service address given back.
    async fn reset(&mut self) {
        self.service_cancel.cancel();
        self.service_cancel = self.cancel.child_token();
        if let Some(mut set) = self.service.take() {
            set.shutdown().await;
        }
        for (_, (_, c)) in self.replicas.drain() {
            c.cancel();
        }
        self.tracker.clear();
        self.vip_guard.remove().await;
        self.monitor.reset(mono_ns());
        self.state = State::Tapping;
        self.fin_ok.clear();
        self.ended.clear();
        // The newest primary beat stays: an old one replayed after the reset is still old.
    }
}

/// Waits for the next frames and feeds them to the tracker; `drop` = (every n-th client data
/// segment is dropped, 0: none; the count so far), the test knob of a lossy tap.
async fn next_frames(
    tap: &mut Option<Tap>,
    tracker: &mut Tracker,
    outs: &mut Vec<Output>,
    drop: (u32, &mut u64),
) -> std::io::Result<()> {
    let Some(t) = tap.as_mut() else {
        return std::future::pending().await;
    };
    let (every, seen) = drop;
    t.next_batch(|f| {
        if let Some(seg) = parse_frame(f) {
            if every > 0 && !seg.payload.is_empty() && tracker.is_to_service(&seg) {
                *seen += 1;
                if (*seen).is_multiple_of(every as u64) {
                    return;
                }
            }
            tracker.on_segment(&seg, mono_ns(), outs);
        }
    })
    .await
}

/// The next answer of the logger, if there is a logger (else never).
async fn recv_answer(
    logger: &Option<(tokio::net::UdpSocket, std::net::SocketAddr)>,
    buf: &mut [u8],
) -> Option<usize> {
    match logger {
        None => std::future::pending().await,
        Some((sock, _)) => sock.recv_from(buf).await.ok().map(|(n, _)| n),
    }
}
