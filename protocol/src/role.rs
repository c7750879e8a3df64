//! The roles a host can hold (a leaf: messages and every mode's config name them).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a host does in a testbed (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Backup,
    Logger,
    Lb,
    Proxy,
    Client,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Primary,
        Role::Backup,
        Role::Logger,
        Role::Lb,
        Role::Proxy,
        Role::Client,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Logger => "logger",
            Role::Lb => "lb",
            Role::Proxy => "proxy",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`"))
    }
}
