//! The task that owns a running agent's exec channel and turns it into an [`AgentLink`]'s
//! events and commands.
//!
//! One task both reads and writes, and it never stops reading: russh delivers every channel
//! message (data, window changes, the exit status) through the same bounded queue, and a queue
//! nobody drains stalls the whole SSH session, window adjustments included, so a console
//! blocked writing into a full window would wait forever on itself.
//!
//! [`AgentLink`]: crate::agent::AgentLink

use crate::agent::{LinkError, LinkEvent};
use halab_protocol::frame::{decode_payload, encode_frame};
use halab_protocol::{AgentMsg, ConsoleMsg, FrameDecoder, FrameError};
use russh::{Channel, ChannelMsg, client};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How many of the agent's last stderr lines explain a failed exit.
const STDERR_TAIL: usize = 20;
/// The longest stderr "line" kept before it is cut: a binary spewing bytes without newlines
/// must not grow the console's memory without bound.
const MAX_STDERR_LINE: usize = 16 * 1024;
/// How long the channel may stay open after the agent's exit status arrived. sshd closes it
/// once every copy of the agent's stdout and stderr is closed, which a stray grandchild can
/// delay indefinitely; the agent itself is gone, so the link is reported closed anyway.
const CLOSE_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Everything the pump needs; built by `connect_agent` once the agent's command is running.
pub(super) struct Pump {
    pub addr: String,
    pub command: String,
    pub channel: Channel<client::Msg>,
    pub outbound: mpsc::Receiver<ConsoleMsg>,
    pub events: mpsc::Sender<LinkEvent>,
    /// Send EOF now, as if the link had been dropped: the clean way to stop the agent.
    pub eof: CancellationToken,
    /// Report the link closed and release the channel at once.
    pub abort: CancellationToken,
}

/// Why reading stopped.
enum Ending {
    /// The server closed the channel, or the agent exited and the channel lingered.
    Closed,
    /// The channel vanished without a close: the connection is gone.
    Lost,
    Frame(FrameError),
    /// The server refused the exec request.
    Refused,
    Aborted,
}

enum Exit {
    Status(u32),
    Signal { name: String, core_dumped: bool },
}

/// The link's event queue. When the link is dropped, events are discarded but the channel
/// is still drained.
struct Events {
    tx: mpsc::Sender<LinkEvent>,
    open: bool,
}

impl Events {
    async fn send(&mut self, ev: LinkEvent) {
        if self.open && self.tx.send(ev).await.is_err() {
            self.open = false;
        }
    }
}

/// What arrived from the agent so far.
#[derive(Default)]
struct Inbound {
    decoder: FrameDecoder,
    stderr_partial: Vec<u8>,
    stderr_tail: VecDeque<String>,
    exit: Option<Exit>,
}

impl Inbound {
    /// Feeds stdout bytes, forwarding every complete message.
    async fn data(&mut self, data: &[u8], events: &mut Events) -> Result<(), FrameError> {
        self.decoder.feed(data);
        while let Some(payload) = self.decoder.next_frame()? {
            let msg: AgentMsg = decode_payload(&payload)?;
            events.send(LinkEvent::Msg(msg)).await;
        }
        Ok(())
    }

    /// Feeds stderr bytes; returns the lines they completed.
    fn stderr(&mut self, data: &[u8]) -> Vec<String> {
        self.stderr_partial.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(pos) = self.stderr_partial.iter().position(|&b| b == b'\n') {
            let rest = self.stderr_partial.split_off(pos + 1);
            let line = std::mem::replace(&mut self.stderr_partial, rest);
            lines.push(self.keep(&line));
        }
        if self.stderr_partial.len() > MAX_STDERR_LINE {
            let line = std::mem::take(&mut self.stderr_partial);
            lines.push(self.keep(&line));
        }
        lines
    }

    /// The unterminated last line, if any.
    fn stderr_rest(&mut self) -> Option<String> {
        if self.stderr_partial.is_empty() {
            return None;
        }
        let line = std::mem::take(&mut self.stderr_partial);
        Some(self.keep(&line))
    }

    fn keep(&mut self, raw: &[u8]) -> String {
        let line = String::from_utf8_lossy(raw)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        if self.stderr_tail.len() == STDERR_TAIL {
            self.stderr_tail.pop_front();
        }
        self.stderr_tail.push_back(line.clone());
        line
    }

    /// The link's final result.
    fn outcome(&self, ending: Ending, addr: &str, command: &str) -> Result<(), LinkError> {
        let stderr = || {
            self.stderr_tail
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        };
        match ending {
            Ending::Frame(e) => Err(LinkError::Frame(e)),
            Ending::Refused => Err(LinkError::Spawn(format!(
                "{addr} refused to run `{command}`"
            ))),
            Ending::Aborted => Err(LinkError::Ssh(format!(
                "connection to {addr} was closed by the console"
            ))),
            Ending::Closed | Ending::Lost => {
                // An exit status and the agent's last words explain more than the frame it
                // did not finish.
                match &self.exit {
                    Some(Exit::Status(0)) | None => {}
                    Some(Exit::Status(s)) => {
                        return Err(LinkError::ExitedEarly {
                            status: format!("exit status {s} on {addr}"),
                            stderr: stderr(),
                        });
                    }
                    Some(Exit::Signal { name, core_dumped }) => {
                        let core = if *core_dumped { ", core dumped" } else { "" };
                        return Err(LinkError::ExitedEarly {
                            status: format!("killed by signal {name}{core} on {addr}"),
                            stderr: stderr(),
                        });
                    }
                }
                self.decoder.finish().map_err(LinkError::Frame)?;
                if matches!(ending, Ending::Lost) && self.exit.is_none() {
                    return Err(LinkError::Ssh(format!(
                        "connection to {addr} lost while the agent was running"
                    )));
                }
                Ok(())
            }
        }
    }
}

impl Pump {
    /// Runs until the channel is gone or the connection is aborted. Sends exactly one
    /// [`LinkEvent::Closed`] (unless the link was dropped first).
    pub(super) async fn run(self) {
        let Pump {
            addr,
            command,
            channel,
            mut outbound,
            events,
            eof,
            abort,
        } = self;
        let (mut rd, wr) = channel.split();
        let mut events = Events {
            tx: events,
            open: true,
        };
        let mut inbound = Inbound::default();

        let ending = {
            let wr = &wr;
            let addr = addr.as_str();
            let writer = async {
                loop {
                    let msg = tokio::select! {
                        m = outbound.recv() => m,
                        () = eof.cancelled() => None,
                    };
                    let Some(msg) = msg else { break };
                    match encode_frame(&msg) {
                        Ok(bytes) => {
                            if let Err(e) = wr.data_bytes(bytes).await {
                                tracing::debug!(%addr, error = %e, "agent channel write failed");
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!(%addr, error = %e, "cannot encode a message for the agent; closing its input");
                            break;
                        }
                    }
                }
                // The link was dropped (or the connection is closing): closing the agent's
                // stdin makes it revert what it holds and exit by itself.
                let _ = wr.eof().await;
            };
            let reader = async {
                let mut deadline: Option<Instant> = None;
                loop {
                    let next = match deadline {
                        None => rd.wait().await,
                        Some(d) => match tokio::time::timeout_at(d, rd.wait()).await {
                            Ok(m) => m,
                            Err(_) => return Ending::Closed,
                        },
                    };
                    let Some(msg) = next else {
                        return Ending::Lost;
                    };
                    match msg {
                        ChannelMsg::Data { data } => {
                            if let Err(e) = inbound.data(&data, &mut events).await {
                                return Ending::Frame(e);
                            }
                        }
                        // Extended data type 1 is stderr (RFC 4254 §5.2).
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            for line in inbound.stderr(&data) {
                                events.send(LinkEvent::Stderr(line)).await;
                            }
                        }
                        ChannelMsg::ExitStatus { exit_status } => {
                            inbound.exit = Some(Exit::Status(exit_status));
                            deadline.get_or_insert(Instant::now() + CLOSE_AFTER_EXIT);
                        }
                        ChannelMsg::ExitSignal {
                            signal_name,
                            core_dumped,
                            ..
                        } => {
                            inbound.exit = Some(Exit::Signal {
                                name: format!("{signal_name:?}"),
                                core_dumped,
                            });
                            deadline.get_or_insert(Instant::now() + CLOSE_AFTER_EXIT);
                        }
                        ChannelMsg::Close => return Ending::Closed,
                        // The only request on this channel that wants a reply is the exec.
                        ChannelMsg::Failure => return Ending::Refused,
                        _ => {}
                    }
                }
            };
            tokio::pin!(writer, reader);
            let mut writing = true;
            loop {
                tokio::select! {
                    e = &mut reader => break e,
                    () = &mut writer, if writing => writing = false,
                    () = abort.cancelled() => break Ending::Aborted,
                }
            }
        };

        // Senders now see the link closed instead of queueing into a channel nobody writes.
        drop(outbound);
        let aborted = matches!(ending, Ending::Aborted);
        let close = matches!(ending, Ending::Frame(_) | Ending::Refused);
        let last_line = inbound.stderr_rest();
        let outcome = inbound.outcome(ending, &addr, &command);
        if let Err(e) = &outcome {
            tracing::debug!(%addr, error = %e, "agent channel closed");
        }
        if aborted {
            // The connection is being torn down: never wait on a link nobody reads, or the
            // channel (and with it the session) would outlive its connection.
            if events.open {
                if let Some(line) = last_line {
                    let _ = events.tx.try_send(LinkEvent::Stderr(line));
                }
                let _ = events.tx.try_send(LinkEvent::Closed(outcome));
            }
            return;
        }
        let closing = async {
            if close {
                // After garbage the stream cannot be resynchronised: close, which also closes
                // the agent's stdin, so its dead-man switch runs.
                let _ = wr.close().await;
            }
        };
        // Deliver the last events while draining until russh forgets the channel: neither a
        // slow reader of the link nor a lingering channel may block the other, or the session.
        let deliver = async move {
            if let Some(line) = last_line {
                events.send(LinkEvent::Stderr(line)).await;
            }
            events.send(LinkEvent::Closed(outcome)).await;
        };
        let drain = async { while rd.wait().await.is_some() {} };
        tokio::select! {
            _ = async { tokio::join!(closing, deliver, drain) } => {}
            () = abort.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_split_into_lines_across_chunks() {
        let mut i = Inbound::default();
        assert!(i.stderr(b"first par").is_empty());
        assert_eq!(i.stderr(b"t\r\nsecond\nthi"), vec!["first part", "second"]);
        assert_eq!(i.stderr_rest().as_deref(), Some("thi"));
        assert_eq!(i.stderr_rest(), None);
        assert_eq!(i.stderr_tail.len(), 3);
    }

    #[test]
    fn endless_stderr_line_is_cut() {
        let mut i = Inbound::default();
        let lines = i.stderr(&vec![b'x'; MAX_STDERR_LINE + 1]);
        assert_eq!(lines.len(), 1);
        assert!(i.stderr_partial.is_empty());
    }

    #[test]
    fn outcomes() {
        let mut i = Inbound::default();
        assert!(i.outcome(Ending::Closed, "h:22", "c").is_ok());
        assert!(
            i.outcome(Ending::Lost, "h:22", "c")
                .unwrap_err()
                .to_string()
                .contains("lost")
        );
        i.stderr(b"sudo: a password is required\n");
        i.exit = Some(Exit::Status(1));
        let e = i.outcome(Ending::Closed, "h:22", "c").unwrap_err();
        assert_eq!(
            e.to_string(),
            "agent exited (exit status 1 on h:22): sudo: a password is required"
        );
        let mut i = Inbound::default();
        i.decoder.feed(b"HL\x01\x00\x00\x00\x00\x10{");
        i.exit = Some(Exit::Status(0));
        assert!(matches!(
            i.outcome(Ending::Closed, "h:22", "c"),
            Err(LinkError::Frame(FrameError::Truncated { .. }))
        ));
    }
}
