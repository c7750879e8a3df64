//! Mode craft's agent side (DESIGN §5 craft; thesis chapter 4): the proxies' splice.
//!
//! - [`translation`]: the splice's arithmetic, sans-IO;
//! - [`datapath`]: the tc BPF program (`agents/bpf/splice.bpf.c`) that rewrites spliced
//!   packets, and its maps;
//! - [`sockets`]: reading the proxy's two sockets' state and retiring them silently;
//! - [`splicer`]: making one splice from an accepted and a connected socket;
//! - [`spray`]: the balancer's (and the return path's) per-packet spraying over the live
//!   proxies, as an nftables table;
//! - [`pool`]: the balancer's health checks of the proxies, sans-IO.

pub mod balancer;
pub mod datapath;
pub mod health;
pub mod peers;
pub mod pool;
pub mod proxy;
pub mod replica;
pub mod sockets;
pub mod splicer;
pub mod spray;
pub mod sweeper;
pub mod translation;
