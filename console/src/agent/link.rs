//! An agent's control channel, whatever carries it: the pipes of a local `ip netns exec`
//! child, or an SSH exec channel. A transport turns its bytes into [`LinkEvent`]s and sends
//! [`ConsoleMsg`]s; everything above it (handshake, pings, roles) is transport-agnostic.
//!
//! Ownership: the transport's tasks end by themselves when the link is dropped. Dropping the
//! sender closes the agent's stdin, the agent's dead-man switch reverts what it holds and
//! exits, its stdout ends, and the reader task ends with it.

use halab_protocol::io::{ChannelError, FrameReader, write_frame};
use halab_protocol::{AgentMsg, ConsoleMsg, FrameError};
use std::process::Stdio;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;

/// Capacity of the event and command queues of one link.
const QUEUE: usize = 256;

/// Something that happened on an agent's channel.
#[derive(Debug)]
pub enum LinkEvent {
    Msg(AgentMsg),
    /// A line the agent, or whatever started it (`ip`, a shell, sudo), wrote to stderr.
    Stderr(String),
    /// The channel is gone; the last event of a link.
    Closed(Result<(), LinkError>),
}

/// Why an agent's channel failed.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("agent sent an invalid frame")]
    Frame(#[source] FrameError),
    #[error("agent reported an error: {0}")]
    Agent(String),
    #[error("control channel I/O failed")]
    Io(#[source] std::io::Error),
    #[error("could not start the agent: {0}")]
    Spawn(String),
    #[error("ssh: {0}")]
    Ssh(String),
    #[error("agent exited ({status}){}", stderr_suffix(.stderr))]
    ExitedEarly { status: String, stderr: String },
    #[error("timed out after {0:?} waiting for the agent")]
    Timeout(std::time::Duration),
    #[error("agent closed the channel")]
    Closed,
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.trim())
    }
}

impl From<ChannelError> for LinkError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Frame(f) => LinkError::Frame(f),
            ChannelError::Io(io) => LinkError::Io(io),
        }
    }
}

/// The console's end of one agent's control channel.
#[derive(Debug)]
pub struct AgentLink {
    pub(crate) tx: mpsc::Sender<ConsoleMsg>,
    pub(crate) events: mpsc::Receiver<LinkEvent>,
    /// Process id of the agent when it runs on this machine (provider `local`).
    pub local_pid: Option<u32>,
}

impl AgentLink {
    /// Builds a link from a transport's two queues. `tx` carries messages to the agent;
    /// `events` must end with exactly one [`LinkEvent::Closed`].
    pub fn new(
        tx: mpsc::Sender<ConsoleMsg>,
        events: mpsc::Receiver<LinkEvent>,
        local_pid: Option<u32>,
    ) -> Self {
        AgentLink {
            tx,
            events,
            local_pid,
        }
    }

    /// Queues for a transport implementation: returns the link and the transport's ends.
    pub fn channel(
        local_pid: Option<u32>,
    ) -> (
        AgentLink,
        mpsc::Receiver<ConsoleMsg>,
        mpsc::Sender<LinkEvent>,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (etx, erx) = mpsc::channel(QUEUE);
        (AgentLink::new(tx, erx, local_pid), rx, etx)
    }

    /// Sends a message; an error means the channel is closed.
    pub async fn send(&self, msg: ConsoleMsg) -> Result<(), LinkError> {
        self.tx.send(msg).await.map_err(|_| LinkError::Closed)
    }

    /// The next event; `None` after [`LinkEvent::Closed`] was returned.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// Splits into sender and event receiver, for a session task that owns both halves.
    pub fn into_parts(self) -> (mpsc::Sender<ConsoleMsg>, mpsc::Receiver<LinkEvent>) {
        (self.tx, self.events)
    }

    /// Serves a link over a pair of byte streams (an agent's stdout and stdin) and an optional
    /// stderr stream. Spawns the reader, writer and stderr tasks on the current runtime.
    pub fn over_streams<R, W, E>(
        reader: R,
        writer: W,
        stderr: Option<E>,
        local_pid: Option<u32>,
    ) -> AgentLink
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let (link, mut outbound, events) = AgentLink::channel(local_pid);

        // Writer: ends when the link's sender is dropped (closing the agent's stdin) or the
        // pipe breaks.
        let mut writer = writer;
        tokio::spawn(async move {
            while let Some(msg) = outbound.recv().await {
                if write_frame(&mut writer, &msg).await.is_err() {
                    break;
                }
            }
        });

        // Stderr lines are forwarded as events; a stderr that is never drained would block
        // the agent once the pipe buffer fills.
        let stderr_task = stderr.map(|e| {
            let events = events.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(e).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if events.send(LinkEvent::Stderr(line)).await.is_err() {
                        break;
                    }
                }
            })
        });

        // Reader: decodes frames until end of stream or the first invalid byte.
        tokio::spawn(async move {
            let mut frames = FrameReader::new(reader);
            let outcome = loop {
                match frames.next::<AgentMsg>().await {
                    Ok(Some(msg)) => {
                        if events.send(LinkEvent::Msg(msg)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(LinkError::from(e)),
                }
            };
            // Let the last stderr lines (often the reason the agent died) arrive before the
            // close, but never wait on a stderr held open by a stray grandchild for long.
            if let Some(t) = stderr_task {
                let _ = tokio::time::timeout(std::time::Duration::from_millis(500), t).await;
            }
            let _ = events.send(LinkEvent::Closed(outcome)).await;
        });

        link
    }
}

/// Starts `program args...` as a child process whose stdin/stdout is the control channel.
/// The child is not killed when the link is dropped: closing its stdin is what stops it, so
/// that it can revert what it holds first.
pub fn spawn_process_link(
    program: &std::path::Path,
    args: &[String],
) -> Result<(AgentLink, tokio::process::Child), LinkError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        // Its own process group: a Ctrl-C at the terminal reaches the console, which then stops
        // its agents in order, rather than every agent at once behind its back.
        .process_group(0)
        .spawn()
        .map_err(|e| LinkError::Spawn(format!("{}: {e}", program.display())))?;
    let pid = child.id();
    // All three are piped above, so each take() returns Some on this fresh child.
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(LinkError::Spawn("child pipes missing".into()));
    };
    Ok((
        AgentLink::over_streams(stdout, stdin, Some(stderr), pid),
        child,
    ))
}
