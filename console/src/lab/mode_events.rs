//! Mode events: each is acted on by the mode that sent it (through the registry: a fence, a role
//! that moved) and summarised for the record and the log.

use super::handle::Lab;
use crate::modes;
use halab_protocol::{EventKind, ModeEvent};

/// A mode event as handled: what it was, and whether the console could act on it.
#[derive(Debug, Clone, PartialEq)]
pub struct HandledEvent {
    pub kind: EventKind,
    /// The reporting host's clock.
    pub agent_ns: u64,
    pub detail: String,
    /// Why the console refused or failed to act on it (a forged fence request, ...).
    pub error: Option<String>,
}

/// Acts on `event` from `host` through its mode's console side and summarises it.
pub async fn handle(lab: &mut Lab<'_>, host: &str, event: &ModeEvent) -> HandledEvent {
    let mode = modes::of_event(event).behaviour();
    let error = mode.on_event(lab, host, event).await.err();
    HandledEvent {
        kind: event.kind(),
        agent_ns: event.at_ns(),
        detail: mode.describe(event),
        error,
    }
}

/// What `event` says, without acting on it (the dashboard's screen, which only shows).
pub fn describe(event: &ModeEvent) -> String {
    modes::of_event(event).behaviour().describe(event)
}
