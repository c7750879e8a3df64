//! The st-tcp primary: the workload server, heartbeats with per-connection progress, the FIN
//! hold, and non-fault-tolerant mode when the backup is gone (thesis table 3.3).

use super::fin_hold::{self, FinHold, HoldCmd, HoldView};
use super::heartbeat::{self, Detector, Link, Verdict};
use super::{emit, sockdiag, tap};
use crate::modes::{RoleCtx, StartedRole};
use crate::roles::serve_role;
use halab_protocol::modes::st_tcp::{Command, ConnProgress, Event, Heartbeat, StTcpConfig};
use halab_protocol::{ModeCommand, mono_ns};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub async fn start(ctx: RoleCtx, cfg: StTcpConfig) -> Result<StartedRole, String> {
    let vip: Ipv4Addr = cfg
        .vip
        .parse()
        .map_err(|e| format!("service address {}: {e}", cfg.vip))?;
    let sock = heartbeat::socket()
        .await
        .map_err(|e| format!("heartbeat socket: {e}"))?;
    let mut hold = FinHold::new(vip, cfg.service_ports.clone());
    if let Err(e) = hold.install().await {
        // Without nftables the primary still serves; only the FIN hold is missing.
        tracing::warn!(error = %e, "st-tcp: no FIN hold");
    }
    let view = Arc::new(Mutex::new(HoldView {
        active: true,
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
    let served = serve_role(&ctx, &[], &[], "workload server").await?;
    let p = served.pid;
    // The service address is announced again: after a takeover and a reset, the clients'
    // neighbour entries still name the backup.
    if let Err(e) = tap::send_garp(&cfg.service_iface, vip, 2) {
        tracing::warn!(error = %e, "st-tcp: gratuitous ARP");
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let RoleCtx {
        cancel, outbound, ..
    } = ctx;
    let server = served.supervisor;
    let task = tokio::spawn(async move {
        let mut p = Primary {
            cfg,
            vip,
            sock,
            hold: hold_tx,
            view,
            outbound,
            fault_tolerant: true,
            seq: 0,
            pending: Default::default(),
            fin_queued,
        };
        p.run(cancel, cmd_rx).await;
        let _ = server.await;
        // Closing the channel ends the hold's task, which removes the table.
        drop(p);
        let _ = hold_task.await;
    });
    Ok(StartedRole {
        task,
        detail: Some(format!("workload server pid {p}; st-tcp primary")),
        commands: Some(cmd_tx),
    })
}

struct Primary {
    cfg: StTcpConfig,
    vip: Ipv4Addr,
    sock: tokio::net::UdpSocket,
    hold: mpsc::UnboundedSender<HoldCmd>,
    view: Arc<Mutex<HoldView>>,
    outbound: mpsc::Sender<halab_protocol::AgentMsg>,
    fault_tolerant: bool,
    seq: u64,
    /// Closes the backup confirmed (its replica closed after this many bytes) that the
    /// application has not yet reached.
    pending: std::collections::HashMap<([u8; 4], u16, u16), u64>,
    /// Told when the hold queues a FIN or RST: a confirmed close may let it go at once.
    fin_queued: Arc<tokio::sync::Notify>,
}

/// How often sockets with a confirmed close pending are looked at.
const FIN_POLL: Duration = Duration::from_millis(3);

impl Primary {
    async fn run(
        &mut self,
        cancel: tokio_util::sync::CancellationToken,
        mut commands: mpsc::Receiver<ModeCommand>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.heartbeat_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // While the backup has confirmed closes the application has not reached, its sockets
        // are watched closely: the FIN must be let go before it leaves behind the last data.
        let mut fin_tick = tokio::time::interval(FIN_POLL);
        fin_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 64 * 1024];
        let peer: Vec<(Link, String)> = peers(&self.cfg.backup);
        let mut detector = Detector::new(
            self.cfg.heartbeat_ms,
            self.cfg.missed_heartbeats,
            self.cfg.backup.heartbeat_addr.is_some(),
        );
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    self.beat(&peer).await;
                    self.check_backup(&detector).await;
                }
                _ = fin_tick.tick(), if !self.pending.is_empty() => self.check_pending(),
                _ = self.fin_queued.notified() => self.check_pending(),
                r = self.sock.recv_from(&mut buf) => {
                    let Ok((n, _)) = r else { continue };
                    if let Some((link, hb)) = heartbeat::parse(&buf[..n])
                        && hb.from == self.cfg.backup.host
                    {
                        detector.on_beat(link, mono_ns());
                        if !self.fault_tolerant && detector.verdict(mono_ns()) == Verdict::Alive {
                            self.back_to_fault_tolerant().await;
                        }
                        let v = self.view.lock().unwrap_or_else(|p| p.into_inner());
                        for &(a, cp, port, end) in &hb.fin_ok {
                            if !v.allowed.contains(&(a, cp, port)) {
                                self.pending.insert((a, cp, port), end);
                            }
                        }
                        drop(v);
                        self.check_pending();
                    }
                }
                c = commands.recv() => match c {
                    None => return,
                    Some(halab_protocol::ModeCommand::StTcp(Command::Reset)) => {
                        if let Err(e) = tap::send_garp(&self.cfg.service_iface, self.vip, 2) {
                            tracing::warn!(error = %e, "st-tcp: gratuitous ARP");
                        }
                        // A beat at once: the backup was reset too and watches this primary
                        // only from its first beat on; a primary that failed before its next
                        // tick would otherwise never be declared dead.
                        self.beat(&peer).await;
                        tick.reset();
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// One heartbeat on each link, with the connections' progress from sock_diag.
    async fn beat(&mut self, peer: &[(Link, String)]) {
        self.seq += 1;
        let socks = sockdiag::tcp_sockets().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "st-tcp: sock_diag");
            Vec::new()
        });
        let mut conns = Vec::new();
        let mut held_fins = Vec::new();
        for s in socks {
            if s.local != self.vip || !self.cfg.service_ports.contains(&s.local_port) {
                continue;
            }
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
            seq: self.seq,
            link: String::new(),
            conns,
            held_fins,
            fin_ok: Vec::new(),
        };
        heartbeat::send(&self.sock, &mut hb, peer).await;
    }

    /// Lets the FIN of each connection go whose application has written exactly what the
    /// replica wrote before closing: a close at the same point (an early close — a crash —
    /// stays held).
    fn check_pending(&mut self) {
        let Ok(socks) = sockdiag::tcp_sockets() else {
            return;
        };
        let mut allow = Vec::new();
        self.pending.retain(|key, end| {
            let Some(s) = socks.iter().find(|s| {
                s.local == self.vip && (s.remote.octets(), s.remote_port, s.local_port) == *key
            }) else {
                return false;
            };
            if s.written() == *end {
                allow.push(*key);
                return false;
            }
            true
        });
        if !allow.is_empty() {
            let _ = self.hold.send(HoldCmd::Allow(allow));
        }
    }

    /// Thesis table 3.3, backup failure: the primary goes on alone and lets FINs go.
    async fn check_backup(&mut self, d: &Detector) {
        if !self.fault_tolerant {
            return;
        }
        let reason = match d.verdict(mono_ns()) {
            Verdict::Alive => return,
            Verdict::Dead => "backup silent on every link",
            Verdict::ServiceLinkLost => "backup silent on the service link (its tap is blind)",
        };
        self.fault_tolerant = false;
        // The event first: releasing the hold lets held FINs go, a client may finish at once,
        // and a run's record closes with its clients; the event must not arrive after that.
        emit(
            &self.outbound,
            Event::NonFaultTolerant {
                at_ns: mono_ns(),
                reason: reason.into(),
            },
        )
        .await;
        let _ = self.hold.send(HoldCmd::Release);
    }

    async fn back_to_fault_tolerant(&mut self) {
        self.fault_tolerant = true;
        let _ = self.hold.send(HoldCmd::Install);
    }
}

/// A peer's links, service first.
pub fn peers(p: &halab_protocol::modes::st_tcp::StTcpPeer) -> Vec<(Link, String)> {
    let mut v = vec![(Link::Service, p.service_addr.clone())];
    if let Some(a) = &p.heartbeat_addr {
        v.push((Link::Heartbeat, a.clone()));
    }
    v
}
