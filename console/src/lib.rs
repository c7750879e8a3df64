//! halab, the console: CLI, orchestrator, providers and the agents' control channels.

pub mod agent;
pub mod provider;
pub mod topology;
