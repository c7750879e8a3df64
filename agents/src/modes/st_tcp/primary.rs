//! The st-tcp primary: the workload server, heartbeats with per-connection progress, the FIN
//! hold, and non-fault-tolerant mode when the backup is gone (thesis table 3.3).
//!
//! [`Primary`] is also what a backup becomes after its takeover ([`super::backup`]): the same
//! beats, hold and backup watch, serving through its relays instead of its own server process,
//! with the old primary as the backup it waits for.

use super::command;
use super::events::emit;
use super::fin_hold::{self, Confirmations, FinHold, HoldCmd, HoldKey, HoldView};
use super::heartbeat::{self, Detector, Link, Verdict, Wire};
use super::start_error::{self, StartError};
use super::{sockdiag, tap};
use crate::error::Chain;
use crate::role_ctx::{RoleCtx, StartedRole};
use crate::server_process::serve_role;
use halab_protocol::modes::st_tcp::{
    Channel, Command, ConnProgress, Event, Heartbeat, StTcpConfig, StTcpPeer,
};
use halab_protocol::sealed::Key;
use halab_protocol::{ModeCommand, Role, mono_ns};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub async fn start(ctx: RoleCtx, cfg: StTcpConfig) -> Result<StartedRole, StartError> {
    let vip = start_error::vip(&cfg.vip)?;
    let key = Key::from_hex(&cfg.key_hex).map_err(StartError::Key)?;
    let sock = Arc::new(
        heartbeat::socket()
            .await
            .map_err(StartError::HeartbeatSocket)?,
    );
    // The primary holds the service address. A host that served as backup before (it took
    // over, or rejoined) may lack it.
    let cidr = format!("{vip}/{}", cfg.vip_prefix);
    command::run(
        "ip",
        &["addr", "replace", &cidr, "dev", &cfg.service_iface],
        None,
    )
    .await?;
    let served = serve_role(&ctx, &[], &[], "workload server").await?;
    let p = served.pid;
    // The service address is announced again: after a takeover and a reset, the clients'
    // neighbour entries still name the backup.
    if let Err(e) = tap::send_garp(&cfg.service_iface, vip, 2) {
        tracing::warn!(error = %e, "st-tcp: gratuitous ARP");
    }
    let (cmd_tx, mut cmd_rx) = mpsc::channel(16);
    let RoleCtx {
        cancel, outbound, ..
    } = ctx;
    let server = served.supervisor;
    let mut primary = Primary::new(cfg, vip, sock, Wire::new(key), outbound, false).await;
    let task = tokio::spawn(async move {
        primary.run(&cancel, &mut cmd_rx).await;
        let _ = server.await;
        primary.shutdown().await;
    });
    Ok(StartedRole {
        task,
        detail: Some(format!("workload server pid {p}; st-tcp primary")),
        commands: Some(cmd_tx),
    })
}

/// Why [`Primary::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The role stops (cancelled, or its command channel closed).
    Stopped,
    /// A promoted backup was told to reset: it goes back to tapping.
    Reset,
}

pub struct Primary {
    cfg: StTcpConfig,
    vip: Ipv4Addr,
    sock: Arc<tokio::net::UdpSocket>,
    wire: Wire,
    hold: mpsc::UnboundedSender<HoldCmd>,
    hold_task: JoinHandle<()>,
    view: Arc<Mutex<HoldView>>,
    outbound: mpsc::Sender<halab_protocol::AgentMsg>,
    fault_tolerant: bool,
    /// A backup that took over: a reset sends it back to tapping.
    promoted: bool,
    incarnation: u64,
    seq: u64,
    /// The backup's incarnation last heard: a new one is a backup (re)joining, which did not
    /// see the connections open now from their SYN.
    backup_incarnation: Option<u64>,
    /// A backup (re)joined or came back: the connections open then, to be judged against the
    /// backup's next beat (which lists what it tracks, and so also a connection opened just as
    /// its first beat left), and told in the `fault-tolerant` event.
    /// With the backup's beat (incarnation, seq) it was taken at.
    joined: Option<((u64, u64), Vec<HoldKey>)>,
    detector: Detector,
    /// Closes the backup confirmed (its replica closed after this many bytes) that the
    /// application has not yet reached.
    pending: Confirmations,
    /// Told when the hold queues a FIN or RST: a confirmed close may let it go at once.
    fin_queued: Arc<tokio::sync::Notify>,
}

/// How often sockets with a confirmed close pending are looked at.
const FIN_POLL: Duration = Duration::from_millis(3);

/// Wall-clock nanoseconds: a role's incarnation, larger for every later start, on any host.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Primary {
    /// The primary of `cfg` on this host. `promoted`: a backup that has just taken over; it has
    /// no backup yet, so it starts without the FIN hold (non-fault-tolerant) until one beats.
    pub async fn new(
        cfg: StTcpConfig,
        vip: Ipv4Addr,
        sock: Arc<tokio::net::UdpSocket>,
        wire: Wire,
        outbound: mpsc::Sender<halab_protocol::AgentMsg>,
        promoted: bool,
    ) -> Primary {
        let mut hold = FinHold::new(vip, cfg.service_ports.clone());
        let made = if promoted {
            // No hold until a backup beats; and none left over from an earlier life of this
            // host as primary (a killed agent cannot remove its rules), whose queue nobody
            // reads now: it would swallow every FIN this host sends.
            hold.remove_leftovers().await;
            Ok(())
        } else {
            hold.install().await
        };
        if let Err(e) = made {
            // Without nftables the primary still serves; only the FIN hold is missing.
            tracing::warn!(error = %Chain(&e), "st-tcp: no FIN hold");
        }
        let view = Arc::new(Mutex::new(HoldView {
            active: !promoted,
            allowed: Default::default(),
        }));
        let (hold_tx, hold_rx) = mpsc::unbounded_channel();
        let fin_queued = Arc::new(tokio::sync::Notify::new());
        let hold_task = tokio::spawn(fin_hold::run(
            hold,
            hold_rx,
            view.clone(),
            fin_queued.clone(),
        ));
        let detector = Detector::new(
            cfg.heartbeat_ms,
            cfg.missed_heartbeats,
            cfg.backup.heartbeat_addr.is_some(),
            mono_ns(),
        );
        let p = Primary {
            cfg,
            vip,
            sock,
            wire,
            hold: hold_tx,
            hold_task,
            view,
            outbound,
            fault_tolerant: !promoted,
            promoted,
            incarnation: wall_ns(),
            seq: 0,
            backup_incarnation: None,
            joined: None,
            detector,
            pending: Default::default(),
            fin_queued,
        };
        p.announce().await;
        if promoted {
            emit(
                &p.outbound,
                Event::NonFaultTolerant {
                    at_ns: mono_ns(),
                    reason: format!(
                        "took over from {}: no backup until one joins",
                        p.cfg.backup.host
                    ),
                },
            )
            .await;
        }
        p
    }

    /// Tells the console what this host is now: the primary, holding the service address.
    async fn announce(&self) {
        emit(
            &self.outbound,
            Event::Serving {
                at_ns: mono_ns(),
                role: Role::Primary,
                service_address: true,
            },
        )
        .await;
    }

    /// Ends the hold (its table and queue go) and waits for it.
    pub async fn shutdown(self) {
        let Primary {
            hold, hold_task, ..
        } = self;
        drop(hold);
        let _ = hold_task.await;
    }

    pub async fn run(
        &mut self,
        cancel: &CancellationToken,
        commands: &mut mpsc::Receiver<ModeCommand>,
    ) -> Exit {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.heartbeat_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The backup's death is looked at every few ms, as the backup looks at the primary's.
        let mut detect_tick = tokio::time::interval(
            heartbeat::DETECT_CHECK.min(Duration::from_millis((self.cfg.heartbeat_ms / 2).max(1))),
        );
        detect_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // While the backup has confirmed closes the application has not reached, its sockets
        // are watched closely: the FIN must be let go before it leaves behind the last data.
        let mut fin_tick = tokio::time::interval(FIN_POLL);
        fin_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused_tick = tokio::time::interval(Duration::from_secs(1));
        let mut buf = vec![0u8; 64 * 1024];
        let peer: Vec<(Link, String)> = peers(&self.cfg.backup);
        let sock = self.sock.clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Exit::Stopped,
                _ = tick.tick() => self.beat(&peer).await,
                _ = detect_tick.tick() => {
                    // Beats that arrived while the loop was busy count (see the backup's
                    // drain_beats).
                    while let Ok((n, _)) = sock.try_recv_from(&mut buf) {
                        self.on_datagram(&buf[..n]).await;
                    }
                    self.check_backup().await;
                }
                _ = refused_tick.tick() => report_refused(&mut self.wire, &self.outbound).await,
                _ = fin_tick.tick(), if !self.pending.is_empty() => self.check_pending(),
                _ = self.fin_queued.notified() => self.check_pending(),
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, _)) = r else { continue };
                    self.on_datagram(&buf[..n]).await;
                }
                c = commands.recv() => match c {
                    None => return Exit::Stopped,
                    Some(ModeCommand::StTcp(Command::Reset)) => {
                        if self.promoted {
                            return Exit::Reset;
                        }
                        if let Err(e) = tap::send_garp(&self.cfg.service_iface, self.vip, 2) {
                            tracing::warn!(error = %e, "st-tcp: gratuitous ARP");
                        }
                        self.announce().await;
                        // A beat at once: the backup was reset too and is waiting for it.
                        self.beat(&peer).await;
                        tick.reset();
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// A beat of the backup: alive, new or rejoined, and which closes it confirms.
    /// Takes a datagram from the heartbeat socket: a beat of the backup's, or nothing.
    async fn on_datagram(&mut self, datagram: &[u8]) {
        if let Ok(hb) = self.wire.open(datagram)
            && hb.from == self.cfg.backup.host
        {
            self.on_backup_beat(hb).await;
        }
    }

    async fn on_backup_beat(&mut self, hb: Heartbeat) {
        let now = mono_ns();
        self.detector.on_beat(hb.link, now);
        let at = (hb.incarnation, hb.seq);
        // Not the same beat's copy on the other link: a later one.
        if let Some((_, open_then)) = self.joined.take_if(|(then, _)| at > *then) {
            // The beat after the (re)join: of the connections open then and still open now,
            // those this backup does not track were opened before it tapped.
            let open_now = self.open_connections();
            let unprotected = open_then
                .into_iter()
                .filter(|k| open_now.contains(k) && !hb.tracking.contains(k))
                .map(|(a, p, port)| super::tracker::ConnKey {
                    client: Ipv4Addr::from(a),
                    client_port: p,
                    port,
                })
                .collect();
            emit(
                &self.outbound,
                Event::FaultTolerant {
                    at_ns: now,
                    backup: self.cfg.backup.host.clone(),
                    unprotected,
                },
            )
            .await;
        }
        let rejoined = self.backup_incarnation != Some(hb.incarnation);
        let back = !self.fault_tolerant && self.detector.verdict(now) == Verdict::Alive;
        if rejoined || back {
            self.backup_incarnation = Some(hb.incarnation);
            if !self.fault_tolerant {
                self.fault_tolerant = true;
                let _ = self.hold.send(HoldCmd::Install);
            }
            self.joined = Some((at, self.open_connections()));
        }
        let v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        for &(a, cp, port, end) in &hb.fin_ok {
            self.pending.confirm((a, cp, port), end, &v.allowed);
        }
        drop(v);
        self.check_pending();
    }

    /// The connections on the service address whose application still has them (established,
    /// or closed by the client only): those a backup would have to take over.
    fn open_connections(&self) -> Vec<HoldKey> {
        const ESTABLISHED: u8 = 1;
        const CLOSE_WAIT: u8 = 8;
        self.service_sockets()
            .into_iter()
            .filter(|s| matches!(s.state, ESTABLISHED | CLOSE_WAIT))
            .map(|s| (s.remote.octets(), s.remote_port, s.local_port))
            .collect()
    }

    /// This host's TCP sockets on the service address and ports.
    fn service_sockets(&self) -> Vec<sockdiag::SockInfo> {
        let socks = sockdiag::tcp_sockets().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "st-tcp: sock_diag");
            Vec::new()
        });
        socks
            .into_iter()
            .filter(|s| s.local == self.vip && self.cfg.service_ports.contains(&s.local_port))
            .collect()
    }

    /// One heartbeat on each link, with the connections' progress from sock_diag.
    async fn beat(&mut self, peer: &[(Link, String)]) {
        self.seq += 1;
        let mut conns = Vec::new();
        let mut held_fins = Vec::new();
        for s in self.service_sockets() {
            let key = (s.remote.octets(), s.remote_port, s.local_port);
            let held = {
                let v = self.view.lock().unwrap_or_else(|p| p.into_inner());
                v.active && !v.allowed.contains(&key)
            };
            if s.app_closed() && held {
                held_fins.push(key);
            }
            conns.push(ConnProgress {
                client: s.remote.octets(),
                client_port: s.remote_port,
                port: s.local_port,
                last_byte_received: s.received(),
                last_ack_received: s.bytes_acked.min(s.written()),
                last_app_byte_written: s.written(),
                last_app_byte_read: s.read(),
            });
        }
        let mut hb = Heartbeat {
            from: self.cfg.primary.host.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            link: Link::Service,
            conns,
            held_fins,
            fin_ok: Vec::new(),
            tracking: Vec::new(),
        };
        heartbeat::send(&self.sock, &self.wire, &mut hb, peer).await;
    }

    /// Lets the FIN of each connection go whose application has written exactly what the
    /// replica wrote before closing: a close at the same point (an early close — a crash —
    /// stays held).
    fn check_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Ok(socks) = sockdiag::tcp_sockets() else {
            return;
        };
        let vip = self.vip;
        let allow = self.pending.due(|key| {
            socks
                .iter()
                .find(|s| {
                    s.local == vip && (s.remote.octets(), s.remote_port, s.local_port) == *key
                })
                .map(|s| s.written())
        });
        if !allow.is_empty() {
            let _ = self.hold.send(HoldCmd::Allow(allow));
        }
    }

    /// Thesis table 3.3, backup failure: the primary goes on alone and lets FINs go. A backup
    /// never heard since this primary started counts as failed after the start-up grace.
    async fn check_backup(&mut self) {
        if !self.fault_tolerant {
            return;
        }
        let reason = match self.detector.verdict(mono_ns()) {
            Verdict::Alive => return,
            Verdict::Dead if !self.detector.heard() => {
                "no backup heard since this primary started".to_string()
            }
            Verdict::Dead => "backup silent on every link".to_string(),
            Verdict::ServiceLinkLost => {
                "backup silent on the service link (its tap is blind)".to_string()
            }
        };
        self.fault_tolerant = false;
        // The event first: releasing the hold lets held FINs go, a client may finish at once,
        // and a run's record closes with its clients; the event must not arrive after that.
        emit(
            &self.outbound,
            Event::NonFaultTolerant {
                at_ns: mono_ns(),
                reason,
            },
        )
        .await;
        let _ = self.hold.send(HoldCmd::Release);
    }
}

/// Reports the datagrams the wire refused since the last report, if any.
pub async fn report_refused(wire: &mut Wire, outbound: &mpsc::Sender<halab_protocol::AgentMsg>) {
    if let Some((forged, replayed)) = wire.take_counts() {
        emit(
            outbound,
            Event::Refused {
                at_ns: mono_ns(),
                channel: Channel::Heartbeat,
                forged,
                replayed,
            },
        )
        .await;
    }
}

/// A peer's links, service first.
pub fn peers(p: &StTcpPeer) -> Vec<(Link, String)> {
    let mut v = vec![(Link::Service, p.service_addr.clone())];
    if let Some(a) = &p.heartbeat_addr {
        v.push((Link::Heartbeat, a.clone()));
    }
    v
}
