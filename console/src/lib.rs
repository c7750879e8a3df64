//! halab, the console: CLI, orchestrator, providers and the agents' control channels.
//!
//! Layout (see ARCHITECTURE.md): [`topology`] reads testbed files; [`provider`] makes hosts
//! exist (`local` namespaces, `ssh` machines); [`agent`] speaks to each host's agent;
//! [`testbed`] orchestrates a running testbed; [`state`] records it for other invocations;
//! [`commands`] and [`cli`] are the user's entry points.

pub mod agent;
pub mod cli;
pub mod commands;
pub mod error;
pub mod experiment;
pub mod lab;
pub mod logging;
pub mod modes;
pub mod provider;
pub mod report;
pub mod run;
pub mod state;
pub mod testbed;
pub mod topology;
pub mod tui;
