//! Sends the agent's tracing events to the console as [`AgentMsg::Log`] frames, so an agent's
//! log lines end up in the run's log files whatever transport carries the channel (DESIGN §3).
//! Never blocks: when the channel's queue is full a line is dropped and counted.

use halab_protocol::{AgentMsg, LogLevel};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Log lines dropped because the queue to the console was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// A tracing layer that forwards events into the agent's outbound queue.
pub struct ForwardLayer {
    tx: mpsc::Sender<AgentMsg>,
}

impl ForwardLayer {
    pub fn new(tx: mpsc::Sender<AgentMsg>) -> Self {
        ForwardLayer { tx }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        };
        let msg = AgentMsg::Log {
            level,
            target: event.metadata().target().to_string(),
            message: fields.message + &fields.rest,
        };
        if self.tx.try_send(msg).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}
