//! [`Lab`]: the testbed with the inbox of its agents' messages, as the lab layer and the modes
//! act on it. It knows no mode (the modes use it; the lab layer above asks the registry).
//!
//! Whoever waits here for one answer (a role's start, a mode's acknowledgement) must not lose
//! the other messages that arrive meanwhile: they are set aside, in order, and the owner (the
//! runner, the dashboard's orchestrator) takes them afterwards with [`Lab::take_set_aside`].

use crate::testbed::{Testbed, TestbedError};
use halab_protocol::{AgentMsg, ConsoleMsg, ModeEvent};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The agents' messages as the testbed delivers them: (host, message).
pub type Inbox = mpsc::UnboundedReceiver<(String, AgentMsg)>;

/// A testbed that is up, with the inbox of its agents' messages.
pub struct Lab<'t> {
    pub testbed: &'t mut Testbed,
    inbox: &'t mut Inbox,
    set_aside: Vec<(String, AgentMsg)>,
}

/// Why a wait ended without its answer.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("no answer in time")]
    TimedOut,
    #[error("every agent is gone")]
    AgentsGone,
}

impl<'t> Lab<'t> {
    pub fn new(testbed: &'t mut Testbed, inbox: &'t mut Inbox) -> Lab<'t> {
        Lab {
            testbed,
            inbox,
            set_aside: Vec::new(),
        }
    }

    /// Sends `msg` to `host`'s agent.
    pub async fn send(&self, host: &str, msg: ConsoleMsg) -> Result<(), TestbedError> {
        self.testbed.send(host, msg).await
    }

    /// The next message, unless `deadline` passes or every agent is gone first.
    pub async fn next_until(&mut self, deadline: Instant) -> Result<(String, AgentMsg), WaitError> {
        match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(WaitError::AgentsGone),
            Err(_) => Err(WaitError::TimedOut),
        }
    }

    /// Waits, at most `timeout`, for a mode event from `host` that `wanted` accepts; every
    /// message that arrives meanwhile, the accepted one included, is set aside for the owner.
    pub async fn wait_for_mode_event(
        &mut self,
        host: &str,
        timeout: Duration,
        wanted: impl Fn(&ModeEvent) -> bool,
    ) -> Result<(), WaitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let (from, msg) = self.next_until(deadline).await?;
            let found = from == host && matches!(&msg, AgentMsg::Mode { event } if wanted(event));
            self.set_aside.push((from, msg));
            if found {
                return Ok(());
            }
        }
    }

    /// Keeps a message for the owner.
    pub fn set_aside(&mut self, host: String, msg: AgentMsg) {
        self.set_aside.push((host, msg));
    }

    /// The messages set aside while waiting, in arrival order.
    pub fn take_set_aside(&mut self) -> Vec<(String, AgentMsg)> {
        std::mem::take(&mut self.set_aside)
    }
}
