//! Mode craft's agent side (DESIGN §5 craft; thesis chapter 4): the proxies' splice.
//!
//! - [`translation`]: the splice's arithmetic, sans-IO;
//! - [`datapath`]: the tc BPF program (`agents/bpf/splice.bpf.c`) that rewrites spliced
//!   packets and redirects not-yet-spliced ones to their proxy, and its maps;
//! - [`sockets`]: reading the proxy's two sockets' state and retiring them silently;
//! - [`splicer`]: making one splice from an accepted and a connected socket;
//! - [`proxy`]: a proxy's connections (accept, first request, backend, splice);
//! - [`replica`]: replicating splices to the other proxies;
//! - [`spray`]: the balancer's (and the return path's) per-packet spraying over the live
//!   proxies, as an nftables table, sans-IO; [`balancer`] runs it;
//! - [`pool`] (sans-IO) and [`health`]: health checks of the proxies;
//! - [`peers`]: a proxy's checks of the other proxies;
//! - [`ended`] (sans-IO) and [`sweeper`]: removing the splices of ended connections;
//! - [`roles`]: the roles' start functions on a testbed host (the registry's rows).

pub mod balancer;
pub mod datapath;
pub mod ended;
pub mod health;
pub mod peers;
pub mod pool;
pub mod proxy;
pub mod replica;
pub mod roles;
pub mod sockets;
pub mod splicer;
pub mod spray;
pub mod sweeper;
pub mod translation;
