//! Workloads (DESIGN §2, §7): the wire formats ([`request`]), the server process
//! ([`server`]) and the measuring clients ([`client`]).

pub mod client;
pub mod request;
pub mod server;
