//! The agent's side of the control channel: answer the console's hello, serve requests, and
//! when the channel closes — console gone, killed, network cut — stop every role and revert
//! everything held before exiting (the dead-man switch of DESIGN §3).

use crate::capabilities;
use crate::error::chain;
use crate::faults::{self, FaultLedger, Reverted};
use crate::link_shape::LinkShape;
use crate::roles::RoleSet;
use crate::workload::client;
use halab_protocol::io::{FrameReader, write_frame};
use halab_protocol::{AGENT_SILENCE_LIMIT, AgentMsg, ConsoleMsg, HALAB_VERSION, mono_ns};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the agent waits for the console's hello before giving up.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the agent reports its host's CPU and memory.
const HOST_STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How long the final message may take to leave before the agent exits anyway.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the agent's session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The console asked for a shutdown.
    Shutdown,
    /// The control channel closed (end of stdin): the dead-man switch fired.
    ChannelClosed,
    /// Nothing arrived from the console for [`AGENT_SILENCE_LIMIT`]: the channel is taken as
    /// closed (a half-open connection never delivers an end of file).
    ConsoleSilent,
    /// A signal (SIGTERM, SIGINT, SIGHUP) asked the agent to stop.
    Signal,
    /// The console sent something that is not the protocol; the message says what.
    ProtocolError(String),
}

impl Exit {
    /// Process exit code: 0 for an orderly end, 2 for a protocol error.
    pub fn code(&self) -> i32 {
        match self {
            Exit::ProtocolError(_) => 2,
            _ => 0,
        }
    }
}

/// Serves one control channel until it ends. `outbound` is the queue every message to the
/// console goes through (the log layer holds another sender of it); `stop` is cancelled by
/// signal handlers.
///
/// This is the agent's one shutdown owner. Every way out (the console's `Shutdown`, end of
/// stdin, a silent console, a signal through `stop`, a protocol error, a channel that can no
/// longer be written) only breaks the loop below with its [`Exit`]; the one exit path after
/// it reverts the faults, stops the roles, cancels the root token of every role and client
/// run (`roles_token`, created and cancelled only here), says goodbye and returns. Nothing
/// else in the agent cancels that token or exits the process: `stop` is a request, and
/// `main` exits with the code this returns. The order matters (faults first, so the network
/// is whole at once; then the roles), which is why `stop` is not the roles' parent token.
pub async fn serve<R, W>(
    input: R,
    output: W,
    outbound: (mpsc::Sender<AgentMsg>, mpsc::Receiver<AgentMsg>),
    stop: CancellationToken,
) -> Exit
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = outbound;
    let writer = tokio::spawn(write_loop(output, rx));
    let roles_token = CancellationToken::new();
    let mut roles = RoleSet::new(tx.clone());
    // Every fault this agent holds; reverted on every way out of the loop below.
    let mut ledger = FaultLedger::new();
    // How the topology shapes this host's links; removed on every way out, after the faults.
    let mut shape = LinkShape::default();
    // Client runs in progress: their cancellation tokens, and the tasks (owned here).
    let mut client_runs: BTreeMap<u64, CancellationToken> = BTreeMap::new();
    let mut client_tasks = tokio::task::JoinSet::new();
    let mut frames = FrameReader::new(input);
    let mut host = String::from("?");
    let hello_deadline = tokio::time::sleep(HELLO_TIMEOUT);
    tokio::pin!(hello_deadline);
    let silence_limit = silence_limit();
    let silence = tokio::time::sleep(silence_limit);
    tokio::pin!(silence);
    let mut greeted = false;
    // The host's load for the dashboard, every second once greeted.
    let mut stats = crate::host_stats::Sampler::default();
    let mut stats_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + HOST_STATS_INTERVAL,
        HOST_STATS_INTERVAL,
    );
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let exit = loop {
        // The next lease to run out, if any (a far-away instant keeps the branch valid while it
        // is disabled).
        let expiry = ledger.next_expiry();
        let msg = tokio::select! {
            _ = stop.cancelled() => break Exit::Signal,
            _ = tokio::time::sleep_until(
                expiry.unwrap_or_else(|| tokio::time::Instant::now() + HELLO_TIMEOUT)
            ), if expiry.is_some() => {
                let mut gone = false;
                for id in ledger.expired(tokio::time::Instant::now()) {
                    if let Some(r) = ledger
                        .revert(id, faults::REVERT_LEASE_EXPIRED, &mut roles, Some(&roles_token))
                        .await
                        && !send_reverted(&tx, r, faults::REVERT_LEASE_EXPIRED).await
                    {
                        gone = true;
                    }
                }
                if gone {
                    break Exit::ChannelClosed;
                }
                continue;
            }
            _ = &mut hello_deadline, if !greeted => {
                break Exit::ProtocolError(format!("no hello from the console within {HELLO_TIMEOUT:?}"))
            }
            _ = &mut silence, if greeted => break Exit::ConsoleSilent,
            _ = stats_tick.tick(), if greeted => {
                // Reading /proc takes microseconds; a full queue skips this sample.
                if let Some(m) = stats.sample() {
                    let _ = tx.try_send(m);
                }
                continue;
            }
            r = frames.next::<ConsoleMsg>() => match r {
                Ok(Some(msg)) => {
                    silence.as_mut().reset(tokio::time::Instant::now() + silence_limit);
                    msg
                }
                Ok(None) => break Exit::ChannelClosed,
                Err(e) => break Exit::ProtocolError(e.to_string()),
            },
        };
        let reply = match msg {
            ConsoleMsg::Hello {
                host: h,
                probe,
                testbed,
                console_version,
            } => {
                if greeted {
                    break Exit::ProtocolError("second hello on one channel".into());
                }
                greeted = true;
                host = h;
                tracing::info!(%testbed, %console_version, "console connected");
                let caps = if probe {
                    tokio::task::spawn_blocking(capabilities::probe_all)
                        .await
                        .ok()
                        .map(Box::new)
                } else {
                    None
                };
                AgentMsg::Hello {
                    agent_version: HALAB_VERSION.to_string(),
                    host: host.clone(),
                    pid: std::process::id(),
                    kernel: capabilities::kernel_release(),
                    capabilities: caps,
                }
            }
            other if !greeted => {
                break Exit::ProtocolError(format!(
                    "expected hello as the first message, got {}",
                    kind(&other)
                ));
            }
            ConsoleMsg::ClockProbe { id } => AgentMsg::ClockReply {
                id,
                agent_mono_ns: mono_ns(),
            },
            ConsoleMsg::Ping { id } => AgentMsg::Pong { id },
            ConsoleMsg::Sync { id } => AgentMsg::Synced { id },
            ConsoleMsg::StartRole {
                role,
                mode,
                request,
            } => {
                let (state, detail) = roles.start(role, &mode, &roles_token).await;
                AgentMsg::RoleState {
                    role,
                    state,
                    detail,
                    request,
                }
            }
            ConsoleMsg::StopRole { role } => {
                let (state, detail) = roles.stop(role).await;
                AgentMsg::RoleState {
                    role,
                    state,
                    detail,
                    request: None,
                }
            }
            ConsoleMsg::StartClient { run, spec } => {
                let cancel = roles_token.child_token();
                client_runs.insert(run, cancel.clone());
                client_tasks.spawn(client_run(run, spec, cancel, tx.clone()));
                continue;
            }
            ConsoleMsg::StopClient { run } => {
                if let Some(c) = client_runs.remove(&run) {
                    c.cancel();
                }
                continue;
            }
            ConsoleMsg::InjectFault {
                id,
                action,
                lease_ms,
            } => {
                let lease = lease_ms.map(Duration::from_millis);
                match ledger.apply(id, action, lease, &roles).await {
                    Ok((at_ns, detail)) => AgentMsg::FaultApplied { id, at_ns, detail },
                    Err(e) => {
                        let error = chain(&e);
                        tracing::warn!(id, %error, "fault failed");
                        AgentMsg::FaultFailed { id, error }
                    }
                }
            }
            ConsoleMsg::ShapeLinks { id, links } => shape_links(&mut shape, id, &links).await,
            ConsoleMsg::LinkStats { id } => AgentMsg::LinkStats {
                id,
                lines: shape.counts(),
            },
            ConsoleMsg::RevertFault { id } => {
                // Nothing to answer for a fault this agent does not hold (any more).
                let Some(r) = ledger
                    .revert(id, faults::REVERT_REQUESTED, &mut roles, Some(&roles_token))
                    .await
                else {
                    continue;
                };
                if !send_reverted(&tx, r, faults::REVERT_REQUESTED).await {
                    break Exit::ChannelClosed;
                }
                continue;
            }
            ConsoleMsg::Mode { command } => {
                if roles.command(&command).await == 0 {
                    tracing::warn!(?command, "mode command for no running role");
                }
                continue;
            }
            ConsoleMsg::Shutdown => break Exit::Shutdown,
        };
        if tx.send(reply).await.is_err() {
            // The writer ended: stdout is gone, which is the channel closing too.
            break Exit::ChannelClosed;
        }
    };

    // The dead-man switch and orderly shutdown take the same path: stop every role and revert
    // what the agent holds, then say goodbye (if anyone still listens).
    tracing::info!(%host, reason = ?exit, "agent stopping");
    // Faults first, so the network is whole again at once (stopping roles can take a grace
    // period); killed roles are not restarted, as every role is stopped next. The console may be
    // gone: telling it is best effort.
    for r in ledger
        .revert_all(faults::REVERT_CHANNEL_CLOSED, &mut roles, None)
        .await
    {
        let msg = AgentMsg::FaultReverted {
            id: r.id,
            at_ns: r.at_ns,
            reason: faults::REVERT_CHANNEL_CLOSED.into(),
        };
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, tx.send(msg)).await;
    }
    let (removed, problems) = std::mem::take(&mut shape).remove().await;
    if !removed.is_empty() {
        tracing::info!(%removed, "link shape removed");
    }
    for p in problems {
        tracing::error!(problem = %p, "link shape not removed cleanly");
    }
    roles.stop_all().await;
    roles_token.cancel();
    // Client runs were cancelled with the roles' token; give them a moment to report.
    let _ = tokio::time::timeout(crate::roles::ROLE_STOP_GRACE, async {
        while client_tasks.join_next().await.is_some() {}
    })
    .await;
    client_tasks.abort_all();
    let last = match &exit {
        Exit::ProtocolError(message) => AgentMsg::Error {
            message: message.clone(),
        },
        Exit::Shutdown => AgentMsg::Bye {
            reason: "shutdown requested".into(),
        },
        Exit::Signal => AgentMsg::Bye {
            reason: "stopped by signal".into(),
        },
        Exit::ChannelClosed => AgentMsg::Bye {
            reason: "control channel closed".into(),
        },
        Exit::ConsoleSilent => AgentMsg::Bye {
            reason: format!("nothing from the console for {:?}", silence_limit),
        },
    };
    let _ = tx.send(last).await;
    drop(tx);
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, writer).await;
    exit
}

/// [`AGENT_SILENCE_LIMIT`], or `$HALAB_AGENT_SILENCE_MS` where a test or a very slow link needs
/// another value.
fn silence_limit() -> Duration {
    std::env::var("HALAB_AGENT_SILENCE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(AGENT_SILENCE_LIMIT)
}

/// Runs one client run, streaming telemetry every 100 ms and each progress mark the moment it
/// is reached, and reports its result.
async fn client_run(
    run: u64,
    spec: halab_protocol::ClientSpec,
    cancel: CancellationToken,
    tx: mpsc::Sender<AgentMsg>,
) {
    let live = Arc::new(client::Live::default());
    let total = client::expected_bytes(&spec);
    let mut marks: Vec<(u64, u32)> = spec
        .progress_marks_ppm
        .iter()
        .map(|&ppm| (client::mark_bytes(total, ppm), ppm))
        .collect();
    marks.sort_unstable();
    marks.dedup();
    let mut marks = marks.into_iter().peekable();
    live.arm_mark(marks.peek().map(|m| m.0));
    let work = client::run(spec, cancel, live.clone());
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = live.mark_reached.notified(), if marks.peek().is_some() => {
                let at_ns = mono_ns();
                let progress = live.progress.load(Ordering::SeqCst);
                while let Some((_, ppm)) = marks.next_if(|m| m.0 <= progress) {
                    // Awaited, not skipped like telemetry: a fault waits for this message.
                    // The connections run in their own tasks meanwhile.
                    if tx.send(AgentMsg::ClientMark { run, ppm, at_ns }).await.is_err() {
                        return;
                    }
                }
                live.arm_mark(marks.peek().map(|m| m.0));
            }
            _ = tick.tick() => {
                // Events are taken only when there is room to send them: a full queue skips
                // this sample, and its events go with the next.
                if let Ok(permit) = tx.try_reserve() {
                    permit.send(AgentMsg::ClientTelemetry {
                        run,
                        at_ns: mono_ns(),
                        bytes: live.bytes.load(Ordering::Relaxed),
                        events: live.take_events(),
                    });
                }
            }
        }
    };
    let _ = tx
        .send(AgentMsg::ClientDone {
            run,
            result: Box::new(result),
        })
        .await;
}

/// Tells the console that a fault was reverted (and, when the revert restarted a role, the
/// role's new state). False when the channel is gone.
async fn send_reverted(tx: &mpsc::Sender<AgentMsg>, r: Reverted, reason: &str) -> bool {
    let msg = AgentMsg::FaultReverted {
        id: r.id,
        at_ns: r.at_ns,
        reason: reason.to_string(),
    };
    if tx.send(msg).await.is_err() {
        return false;
    }
    match r.role_state {
        Some(state) => tx.send(state).await.is_ok(),
        None => true,
    }
}

/// Writes queued messages until a final one (Bye or Error) has been written or stdout fails.
async fn write_loop<W: AsyncWrite + Unpin>(mut output: W, mut rx: mpsc::Receiver<AgentMsg>) {
    while let Some(msg) = rx.recv().await {
        let last = matches!(msg, AgentMsg::Bye { .. } | AgentMsg::Error { .. });
        if write_frame(&mut output, &msg).await.is_err() || last {
            break;
        }
    }
}

/// Replaces the links' shape by `links`; the answer to [`ConsoleMsg::ShapeLinks`] `id`.
async fn shape_links(
    shape: &mut LinkShape,
    id: u64,
    links: &[halab_protocol::LinkPlan],
) -> AgentMsg {
    let (removed, problems) = std::mem::take(shape).remove().await;
    if !removed.is_empty() {
        tracing::info!(%removed, "earlier link shape removed");
    }
    // What the earlier shape did (each line's packets, drops and peak) goes into the answer.
    let before = if removed.is_empty() {
        String::new()
    } else {
        format!(" (the earlier shape removed: {removed})")
    };
    if !problems.is_empty() {
        return AgentMsg::LinksFailed {
            id,
            error: format!(
                "the earlier shape was not removed cleanly, so the links are left plain: {}",
                problems.join("; ")
            ),
        };
    }
    match LinkShape::apply(links, mono_ns() ^ id.rotate_left(17)).await {
        Ok((new, detail)) => {
            tracing::info!(%detail, "links shaped");
            *shape = new;
            AgentMsg::LinksShaped {
                id,
                detail: format!("{detail}{before}"),
            }
        }
        Err(e) => {
            let error = chain(&e);
            tracing::warn!(id, %error, "links not shaped");
            AgentMsg::LinksFailed { id, error }
        }
    }
}

fn kind(msg: &ConsoleMsg) -> &'static str {
    match msg {
        ConsoleMsg::Hello { .. } => "hello",
        ConsoleMsg::ClockProbe { .. } => "clock-probe",
        ConsoleMsg::Ping { .. } => "ping",
        ConsoleMsg::Sync { .. } => "sync",
        ConsoleMsg::StartRole { .. } => "start-role",
        ConsoleMsg::StopRole { .. } => "stop-role",
        ConsoleMsg::StartClient { .. } => "start-client",
        ConsoleMsg::StopClient { .. } => "stop-client",
        ConsoleMsg::InjectFault { .. } => "inject-fault",
        ConsoleMsg::RevertFault { .. } => "revert-fault",
        ConsoleMsg::Mode { .. } => "mode",
        ConsoleMsg::ShapeLinks { .. } => "shape-links",
        ConsoleMsg::LinkStats { .. } => "link-stats",
        ConsoleMsg::Shutdown => "shutdown",
    }
}
