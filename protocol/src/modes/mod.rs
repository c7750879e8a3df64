//! Per-mode configuration and messages (DESIGN §5). The console derives a [`ModeConfig`] from
//! the run's settings and the topology and hands it to every role it starts and every client it
//! runs; mode-specific traffic between console and agents travels as [`ModeCommand`] and
//! [`ModeEvent`], one variant per mode, each defined in that mode's module.

pub mod app_migration;
pub mod craft;
pub mod event_kind;
pub mod st_tcp;

pub use event_kind::EventKind;

use serde::{Deserialize, Serialize};

/// The failover mechanism a role or client runs under, with everything it needs to know about
/// its peers. `None` is the baseline (DESIGN §5 none).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum ModeConfig {
    #[default]
    None,
    AppMigration(Box<app_migration::AppMigrationConfig>),
    StTcp(Box<st_tcp::StTcpConfig>),
    Craft(Box<craft::CraftConfig>),
}

impl ModeConfig {
    /// The mode's name as topology and experiment files spell it.
    pub fn name(&self) -> &'static str {
        match self {
            ModeConfig::None => "none",
            ModeConfig::AppMigration(_) => "app-migration",
            ModeConfig::StTcp(_) => "st-tcp",
            ModeConfig::Craft(_) => "craft",
        }
    }
}

/// A mode-specific request from the console to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeCommand {
    AppMigration(app_migration::Command),
    StTcp(st_tcp::Command),
}

/// A mode-specific event from an agent to the console (detections, takeovers, fencing
/// requests): each carries the agent's CLOCK_MONOTONIC where it names a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeEvent {
    AppMigration(app_migration::Event),
    StTcp(st_tcp::Event),
    Craft(craft::Event),
}

impl ModeEvent {
    /// The name of the mode that sent it ([`ModeConfig::name`] of that mode).
    pub fn mode_name(&self) -> &'static str {
        match self {
            ModeEvent::AppMigration(_) => "app-migration",
            ModeEvent::StTcp(_) => "st-tcp",
            ModeEvent::Craft(_) => "craft",
        }
    }

    /// What kind of event it is, whatever its mode: the record's `kind`.
    pub fn kind(&self) -> EventKind {
        match self {
            ModeEvent::AppMigration(e) => e.kind(),
            ModeEvent::StTcp(e) => e.kind(),
            ModeEvent::Craft(e) => e.kind(),
        }
    }

    /// The reporting host's CLOCK_MONOTONIC reading the event names.
    pub fn at_ns(&self) -> u64 {
        match self {
            ModeEvent::AppMigration(e) => e.at_ns(),
            ModeEvent::StTcp(e) => e.at_ns(),
            ModeEvent::Craft(e) => e.at_ns(),
        }
    }
}
