//! Generated topologies of any size, for benchmarks and tests: one `service` network for all
//! hosts plus a `heartbeat` network between the first two.

use std::fmt::Write as _;

/// Text of a provider-local topology named `name` with `hosts` hosts (clamped to 3..=64, the most a topology may have):
/// `h1` primary, `h2` backup, the rest clients; mode `none`, workload `bulk`.
pub fn local_topology(name: &str, hosts: usize) -> String {
    let hosts = hosts.clamp(3, 64);
    let mut t = format!(
        "name = \"{name}\"\nprovider = \"local\"\nservice_address = \"10.77.0.254\"\n\n\
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
        // Writing to a String cannot fail.
        let _ = write!(
            t,
            "\n[[hosts]]\nname = \"h{i}\"\nroles = [\"{role}\"]\naddresses = {{ service = \"10.77.0.{i}\"{hb} }}\n"
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_topologies_are_valid() {
        for n in [3, 20, 64] {
            let text = local_topology("gen", n);
            let topo = crate::topology::parse_str(&text, std::path::Path::new("gen.toml"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(topo.hosts.len(), n);
        }
    }
}
