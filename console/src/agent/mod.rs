//! The console's side of the agents: their control channels ([`link`]) and the conversation
//! held over them ([`session`]).

pub mod link;
pub mod session;

pub use link::{AgentLink, LinkError, LinkEvent};
pub use session::{AgentInfo, AgentSession, ClockEstimate};
