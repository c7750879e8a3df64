//! Topology files generated for tests, each with its own testbed name so tests run in parallel.

use std::path::{Path, PathBuf};

/// Writes a local topology named `name` with `hosts` hosts on one `service` network (plus a
/// `heartbeat` network between the first two) into `dir`, and returns its path. Host 1 is the
/// primary, host 2 the backup, the rest clients; mode `none`.
pub fn write_local(dir: &Path, name: &str, hosts: usize) -> PathBuf {
    assert!(hosts >= 3, "need primary, backup and a client");
    let mut t = format!(
        "name = \"{name}\"\nprovider = \"local\"\nservice_address = \"10.77.0.250\"\n\n\
         [run]\nmode = \"none\"\nworkload = \"bulk\"\n\n\
         [[networks]]\nname = \"service\"\nsubnet = \"10.77.0.0/24\"\n\n\
         [[networks]]\nname = \"heartbeat\"\nsubnet = \"10.77.1.0/24\"\n"
    );
    for i in 1..=hosts {
        let role = match i {
            1 => "primary",
            2 => "backup",
            _ => "client",
        };
        let hb = if i <= 2 {
            format!(", heartbeat = \"10.77.1.{i}\"")
        } else {
            String::new()
        };
        t.push_str(&format!(
            "\n[[hosts]]\nname = \"h{i}\"\nroles = [\"{role}\"]\naddresses = {{ service = \"10.77.0.{i}\"{hb} }}\n"
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, t).expect("write topology");
    path
}
