//! The control protocol between the halab console and its agents (DESIGN §3).
//!
//! The console starts one agent per host and talks to it over the agent's stdin/stdout, either
//! directly (`ip netns exec`, provider `local`) or through an SSH exec channel (provider `ssh`).
//! [`frame`] is the byte-level codec (no I/O), [`message`] the typed messages, [`io`] the tokio
//! adapters.

pub mod frame;
pub mod io;
pub mod link;
pub mod message;
pub mod modes;
pub mod role;
pub mod sealed;
pub mod sys;

pub use frame::{FrameDecoder, FrameError, MAX_PAYLOAD, PROTOCOL_VERSION};
pub use link::{IngressDelay, LineCount, LinkPlan};
pub use message::{
    AgentMsg, Capabilities, ClientEvent, ClientResult, ClientSpec, ConnectionResult, ConsoleMsg,
    Direction, FaultAction, LogLevel, Probe, Role, RoleState, Workload,
};
pub use modes::{EventKind, ModeCommand, ModeConfig, ModeEvent};

/// The version of halab this crate was built as; console and agent report it in their hellos.
pub const HALAB_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An agent that hears nothing from its console for this long treats the channel as closed and
/// fires its dead-man switch: a half-open SSH connection (console machine crashed, network cut)
/// never delivers an end of file. Consoles ping far more often than this.
pub const AGENT_SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// TCP port of the halab workload protocol on every server host.
pub const WORKLOAD_PORT: u16 = 7070;
/// TCP port of the http workload on every server host.
pub const HTTP_PORT: u16 = 8080;

/// CLOCK_MONOTONIC in nanoseconds. Every reading a console or agent exchanges is on this clock
/// (DESIGN §4, Clocks): shared by every host of a local testbed, and mapped between machines
/// with the offsets the console estimates.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
