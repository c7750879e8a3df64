//! Workloads (DESIGN §2, §7): the wire formats ([`request`]), the server process
//! ([`server`]) and the measuring clients ([`client`]), built from one connection's state and
//! primitives ([`connection`]) and reporting through [`live`].

pub mod client;
pub mod connection;
pub mod live;
pub mod request;
pub mod server;
