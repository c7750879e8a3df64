//! Why an st-tcp role (primary, backup, logger) did not start.

use super::command::CommandError;
use crate::server_process::ServeError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("service address {vip}")]
    Vip {
        vip: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("st-tcp key")]
    Key(#[source] halab_protocol::sealed::SealError),
    #[error("heartbeat socket")]
    HeartbeatSocket(#[source] std::io::Error),
    #[error("tap on {iface}")]
    Tap {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("logger address {addr}")]
    LoggerAddr {
        addr: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("logger socket")]
    LoggerSocket(#[source] std::io::Error),
    #[error("logger query socket")]
    LoggerQuerySocket(#[source] std::io::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// `vip` (a config's service address) as an address, or the error naming it.
pub fn vip(vip: &str) -> Result<std::net::Ipv4Addr, StartError> {
    vip.parse().map_err(|source| StartError::Vip {
        vip: vip.to_string(),
        source,
    })
}
