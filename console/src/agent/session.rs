//! The console's conversation with one agent, above any transport: hello, pings, clock
//! probes, role commands and shutdown. Log lines and stderr the agent sends in between are
//! written to the run's log with the host's name.

use super::link::{AgentLink, LinkError, LinkEvent};
use halab_protocol::{
    AgentMsg, Capabilities, ConsoleMsg, HALAB_VERSION, LogLevel, ModeConfig, Role, mono_ns,
};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many of the agent's last stderr lines are kept to explain a failure.
const STDERR_TAIL: usize = 20;

/// What an agent said about itself in its hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    pub agent_version: String,
    pub pid: u32,
    pub kernel: String,
    pub capabilities: Option<Capabilities>,
}

/// The agent's clock relative to the console's, from the probe with the smallest round trip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClockEstimate {
    /// agent monotonic clock − console monotonic clock, nanoseconds.
    pub offset_ns: i128,
    /// Half the round trip of the best probe: the true offset is within ± this.
    pub uncertainty_ns: u64,
    pub samples: u32,
}

/// A connected agent that has answered the hello.
#[derive(Debug)]
pub struct AgentSession {
    pub host: String,
    pub info: AgentInfo,
    /// The agent's clock relative to the console's, once estimated.
    pub clock: Option<ClockEstimate>,
    link: AgentLink,
    next_id: u64,
    stderr_tail: VecDeque<String>,
    /// Messages that arrived while a request waited for its answer, for `next_message`.
    unsolicited: VecDeque<AgentMsg>,
    closed: Option<String>,
}

impl AgentSession {
    /// Sends the console's hello and waits for the agent's. `probe` asks the agent to probe its
    /// capabilities (a few process starts, so `up` of a large testbed may skip it).
    pub async fn handshake(
        link: AgentLink,
        testbed: &str,
        host: &str,
        probe: bool,
        timeout: Duration,
    ) -> Result<AgentSession, LinkError> {
        let mut session = AgentSession {
            host: host.to_string(),
            info: AgentInfo {
                agent_version: String::new(),
                pid: 0,
                kernel: String::new(),
                capabilities: None,
            },
            clock: None,
            link,
            next_id: 1,
            stderr_tail: VecDeque::new(),
            unsolicited: VecDeque::new(),
            closed: None,
        };
        session
            .send(ConsoleMsg::Hello {
                console_version: HALAB_VERSION.to_string(),
                testbed: testbed.to_string(),
                host: host.to_string(),
                probe,
            })
            .await?;
        let info = session
            .wait_for(timeout, |msg| match msg {
                AgentMsg::Hello {
                    agent_version,
                    pid,
                    kernel,
                    capabilities,
                    ..
                } => Some(AgentInfo {
                    agent_version: agent_version.clone(),
                    pid: *pid,
                    kernel: kernel.clone(),
                    capabilities: capabilities.as_deref().cloned(),
                }),
                _ => None,
            })
            .await?;
        session.info = info;
        Ok(session)
    }

    /// Process id of the agent on this machine, when it runs here.
    pub fn local_pid(&self) -> Option<u32> {
        self.link.local_pid
    }

    pub async fn send(&self, msg: ConsoleMsg) -> Result<(), LinkError> {
        if self.closed.is_some() {
            return Err(LinkError::Closed);
        }
        self.link.send(msg).await
    }

    /// One ping; returns its round-trip time.
    pub async fn ping(&mut self, timeout: Duration) -> Result<Duration, LinkError> {
        let id = self.fresh_id();
        let start = Instant::now();
        self.send(ConsoleMsg::Ping { id }).await?;
        self.wait_for(timeout, |m| {
            matches!(m, AgentMsg::Pong { id: got } if *got == id).then_some(())
        })
        .await?;
        Ok(start.elapsed())
    }

    /// Sends a ping without waiting for its pong; returns the id the pong will carry (it
    /// arrives through [`AgentSession::next_message`]).
    pub async fn send_ping(&mut self) -> Result<u64, LinkError> {
        let id = self.fresh_id();
        self.send(ConsoleMsg::Ping { id }).await?;
        Ok(id)
    }

    /// Estimates the agent's clock offset from `samples` probes (DESIGN §4, Clocks).
    pub async fn clock_probe(
        &mut self,
        samples: u32,
        timeout: Duration,
    ) -> Result<ClockEstimate, LinkError> {
        let mut best: Option<(u64, i128)> = None;
        for _ in 0..samples.max(1) {
            let id = self.fresh_id();
            let t0 = mono_ns();
            self.send(ConsoleMsg::ClockProbe { id }).await?;
            let agent_ns = self
                .wait_for(timeout, |m| match m {
                    AgentMsg::ClockReply {
                        id: got,
                        agent_mono_ns,
                    } if *got == id => Some(*agent_mono_ns),
                    _ => None,
                })
                .await?;
            let t1 = mono_ns();
            let rtt = t1.saturating_sub(t0);
            let midpoint = (t0 as i128 + t1 as i128) / 2;
            let offset = agent_ns as i128 - midpoint;
            if best.is_none_or(|(r, _)| rtt < r) {
                best = Some((rtt, offset));
            }
        }
        // samples.max(1) guarantees at least one iteration set `best`.
        let (rtt, offset) = best.unwrap_or((0, 0));
        Ok(ClockEstimate {
            offset_ns: offset,
            uncertainty_ns: rtt / 2,
            samples: samples.max(1),
        })
    }

    /// Has the agent shape its host's links as `links` says and waits for its answer: the
    /// detail of how, or the agent's reason why not.
    pub async fn shape_links(
        &mut self,
        links: Vec<halab_protocol::LinkPlan>,
        timeout: Duration,
    ) -> Result<Result<String, String>, LinkError> {
        let id = self.fresh_id();
        self.send(ConsoleMsg::ShapeLinks { id, links }).await?;
        self.wait_for(timeout, |m| match m {
            AgentMsg::LinksShaped { id: got, detail } if *got == id => Some(Ok(detail.clone())),
            AgentMsg::LinksFailed { id: got, error } if *got == id => Some(Err(error.clone())),
            _ => None,
        })
        .await
    }

    pub async fn start_role(&mut self, role: Role, mode: ModeConfig) -> Result<(), LinkError> {
        self.send(ConsoleMsg::StartRole {
            role,
            mode,
            request: None,
        })
        .await
    }

    pub async fn stop_role(&mut self, role: Role) -> Result<(), LinkError> {
        self.send(ConsoleMsg::StopRole { role }).await
    }

    /// Asks the agent to stop and waits for it to close the channel.
    pub async fn shutdown(mut self, timeout: Duration) -> Result<(), LinkError> {
        if self.closed.is_some() {
            return Ok(());
        }
        self.send(ConsoleMsg::Shutdown).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.link.next_event()).await {
                Err(_) => return Err(LinkError::Timeout(timeout)),
                Ok(None) => return Ok(()),
                Ok(Some(LinkEvent::Closed(r))) => return r,
                Ok(Some(ev)) => {
                    let _ = self.absorb(ev);
                }
            }
        }
    }

    /// Waits for the next event that is not a log line, for a session task that watches the
    /// agent between requests. Returns `Err` once the channel has closed.
    pub async fn next_message(&mut self) -> Result<AgentMsg, LinkError> {
        if let Some(msg) = self.unsolicited.pop_front() {
            return Ok(msg);
        }
        loop {
            if self.closed.is_some() {
                return Err(LinkError::Closed);
            }
            let Some(ev) = self.link.next_event().await else {
                self.closed = Some("closed".into());
                return Err(LinkError::Closed);
            };
            if let Some(msg) = self.absorb(ev)? {
                return Ok(msg);
            }
        }
    }

    /// The agent's most recent stderr lines.
    pub fn stderr_tail(&self) -> impl Iterator<Item = &str> {
        self.stderr_tail.iter().map(String::as_str)
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Waits until `pick` accepts a message, logging everything else.
    async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&AgentMsg) -> Option<T>,
    ) -> Result<T, LinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = match tokio::time::timeout(left, self.link.next_event()).await {
                Err(_) => return Err(LinkError::Timeout(timeout)),
                Ok(None) => return Err(self.closed_error(Ok(()))),
                Ok(Some(ev)) => ev,
            };
            if let Some(msg) = self.absorb(ev)? {
                if let Some(t) = pick(&msg) {
                    return Ok(t);
                }
                self.unsolicited.push_back(msg);
            }
        }
    }

    /// Logs log lines and stderr; turns a close or an agent error into an error; passes other
    /// messages through.
    fn absorb(&mut self, ev: LinkEvent) -> Result<Option<AgentMsg>, LinkError> {
        match ev {
            LinkEvent::Stderr(line) => {
                tracing::info!(host = %self.host, stream = "stderr", "{line}");
                if self.stderr_tail.len() == STDERR_TAIL {
                    self.stderr_tail.pop_front();
                }
                self.stderr_tail.push_back(line);
                Ok(None)
            }
            LinkEvent::Msg(AgentMsg::Log {
                level,
                target,
                message,
            }) => {
                let host = &self.host;
                match level {
                    LogLevel::Error => tracing::error!(host, agent_target = target, "{message}"),
                    LogLevel::Warn => tracing::warn!(host, agent_target = target, "{message}"),
                    LogLevel::Info => tracing::info!(host, agent_target = target, "{message}"),
                    LogLevel::Debug => tracing::debug!(host, agent_target = target, "{message}"),
                    LogLevel::Trace => tracing::trace!(host, agent_target = target, "{message}"),
                }
                Ok(None)
            }
            LinkEvent::Msg(AgentMsg::Error { message }) => {
                self.closed = Some(message.clone());
                Err(LinkError::Agent(message))
            }
            LinkEvent::Msg(msg) => Ok(Some(msg)),
            LinkEvent::Closed(r) => Err(self.closed_error(r)),
        }
    }

    fn closed_error(&mut self, r: Result<(), LinkError>) -> LinkError {
        self.closed = Some("closed".into());
        match r {
            Err(e) => e,
            Ok(()) => LinkError::ExitedEarly {
                status: "channel closed".into(),
                stderr: self
                    .stderr_tail
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n"),
            },
        }
    }
}
