//! Mode craft's agent side (DESIGN §5 craft; thesis chapter 4): the proxies' splice.
//!
//! - [`translation`]: the splice's arithmetic, sans-IO;
//! - [`datapath`]: the tc BPF program (`agents/bpf/splice.bpf.c`) that rewrites spliced
//!   packets, and its maps;
//! - [`sockets`]: reading the proxy's two sockets' state and retiring them silently;
//! - [`splicer`]: making one splice from an accepted and a connected socket.

pub mod datapath;
pub mod proxy;
pub mod sockets;
pub mod splicer;
pub mod translation;
