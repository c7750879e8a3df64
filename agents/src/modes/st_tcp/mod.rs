//! Mode st-tcp on the agent (DESIGN §5; thesis chapter 3, paper 003).
//!
//! - primary: the workload server on the service address; heartbeats to the backup over both
//!   links every `heartbeat_ms`, carrying each connection's progress read with sock_diag
//!   ([`sockdiag`]); the FIN hold of thesis §3.7.4 ([`fin_hold`]); non-fault-tolerant mode
//!   when the backup goes silent.
//! - backup: the tap ([`tap`]) feeding the tracker ([`tracker`]), one replica per connection
//!   ([`replica`]) against its own workload server on the loopback, the failure detector
//!   ([`heartbeat`], lag and FIN checks in [`backup`]), and on failure: fence request to the
//!   console, service address, gratuitous ARP and TCP_REPAIR takeover ([`takeover`]).
//! - logger: a bounded ring of tapped client segments the backup fetches missed bytes from
//!   ([`logger`]).
//! - client: an unmodified client of the service address ([`client`]).
//!
//! Each role's `start` is listed in the agent's mode table (`modes::registry`). What the roles
//! share sits in leaves of its own: [`events`] (events to the console), [`command`] (`ip`,
//! `nft`, `iptables`), [`start_error`].

pub mod backup;
pub mod client;
pub mod command;
pub mod events;
mod fin_hold;
pub mod heartbeat;
pub mod logger;
mod monitor;
pub mod primary;
pub mod replica;
pub mod sockdiag;
pub mod start_error;
pub mod takeover;
pub mod tap;
pub mod tracker;
