//! Topology files generated for tests, each with its own testbed name so tests run in parallel.

use std::path::{Path, PathBuf};

/// Writes the library's synthetic local topology (`h1` primary, `h2` backup, the rest clients)
/// named `name` with `hosts` hosts into `dir`, and returns its path.
pub fn write_local(dir: &Path, name: &str, hosts: usize) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        halab::topology::synthetic::local_topology(name, hosts),
    )
    .expect("write topology");
    path
}
