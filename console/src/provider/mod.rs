//! Providers: how a testbed's hosts come to exist and how their agents are reached
//! (DESIGN §4). `local`: network namespaces on this machine. `ssh`: VMs or bare metal.

pub mod local;
pub mod ssh;
