//! Topology files: the shipped ones load with the facts the documentation states, every
//! invalid fixture fails with exactly the error in its `.expected` file (pointing at the right
//! file, line and column, with a hint), and no input whatsoever panics the loader.
//!
//! `HALAB_BLESS=1 cargo test -p halab --test topology_fixtures` rewrites the `.expected` files
//! from the current output; review the diff before committing it.

mod support;

use halab::topology::{
    self, Mode, Provider, Topology, TopologyError, Trigger, Workload, load, parse_str,
};
use halab_protocol::Role;
use proptest::prelude::*;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use support::fixtures::{Located, check_invalid_fixtures};
use support::toml_gen::TomlGen;

/// Relative to the crate folder, where cargo runs integration tests, so the paths in the
/// rendered errors (and so the `.expected` files) are the same on every machine.
const INVALID: &str = "tests/fixtures/topologies/invalid";

/// The error as [`check_location`] checks it: pointing into `text`, the file `path`.
fn located(err: &TopologyError, text: &str, path: &str) -> Located {
    Located {
        path: path.to_string(),
        text: Ok(text.to_string()),
        line: err.line(),
        column: err.column(),
        rendered: err.to_string(),
    }
}

#[test]
fn invalid_fixtures_fail_with_the_expected_error() {
    check_invalid_fixtures(INVALID, 20, |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        load(path)
            .map(drop)
            .map_err(|e| located(&e, &text, &path.display().to_string()))
    });
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let path = Path::new("tests/fixtures/topologies/no-such-file.toml");
    let err = load(path).expect_err("missing file");
    assert!(err.io_error().is_some());
    assert_eq!(err.path(), path);
    let rendered = err.to_string();
    assert!(
        rendered.starts_with(
            "error: tests/fixtures/topologies/no-such-file.toml: cannot read the topology file: "
        ),
        "{rendered}"
    );
    assert!(rendered.contains("hint: "), "{rendered}");
}

fn addr(s: &str) -> Ipv4Addr {
    s.parse().expect("address")
}

fn roles(t: &Topology, host: &str) -> Vec<Role> {
    t.host(host).expect(host).roles.clone()
}

#[test]
fn two_server_topology_loads() {
    let t = load(Path::new("../topologies/two-server.toml")).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&t);
    assert_eq!(t.name, "two-server");
    assert_eq!(t.provider, Provider::Local);
    assert_eq!(t.service_address, addr("10.10.0.100"));
    assert_eq!(t.known_hosts, None);
    assert_eq!(t.run.mode, Mode::StTcp);
    assert_eq!(t.run.heartbeat_ms, Some(200));
    assert_eq!(t.run.missed_heartbeats, Some(3));
    assert_eq!(t.run.trigger, None);
    assert_eq!(t.run.workload, Workload::Bulk);
    assert_eq!(t.run.size, Some(20_000_000));
    assert_eq!(t.run.clients, None);

    let nets: Vec<(&str, String, bool)> = t
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.subnet.to_string(), n.hub))
        .collect();
    assert_eq!(
        nets,
        [
            ("service", "10.10.0.0/24".to_string(), true),
            ("heartbeat", "10.10.1.0/24".to_string(), false)
        ]
    );
    assert_eq!(t.service_network().name, "service");

    let names: Vec<&str> = t.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["primary", "backup", "logger", "client"]);
    assert_eq!(roles(&t, "primary"), [Role::Primary]);
    assert_eq!(roles(&t, "backup"), [Role::Backup]);
    assert_eq!(roles(&t, "logger"), [Role::Logger]);
    assert_eq!(roles(&t, "client"), [Role::Client]);
    let a = |h: &str, n: &str| t.host(h).expect(h).addresses.get(n).copied();
    assert_eq!(a("primary", "service"), Some(addr("10.10.0.1")));
    assert_eq!(a("primary", "heartbeat"), Some(addr("10.10.1.1")));
    assert_eq!(a("backup", "service"), Some(addr("10.10.0.2")));
    assert_eq!(a("backup", "heartbeat"), Some(addr("10.10.1.2")));
    assert_eq!(a("logger", "service"), Some(addr("10.10.0.3")));
    assert_eq!(a("logger", "heartbeat"), None);
    assert_eq!(a("client", "service"), Some(addr("10.10.0.10")));
    assert_eq!(a("client", "heartbeat"), None);
    assert!(t.hosts.iter().all(|h| h.ssh.is_none()));
}

/// The craft testbed (issue 16): the service address on the balancer, the balancer and both
/// proxies on its network, the logger between the proxies' network and the backends'.
#[test]
fn craft_topology_loads() {
    let t = load(Path::new("../topologies/craft.toml")).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&t);
    assert_eq!(t.run.mode, Mode::Craft);
    assert_eq!(t.service_address_role, Role::Lb);
    assert_eq!(t.service_network().name, "front");
    for role in [Role::Lb, Role::Proxy, Role::Client] {
        assert!(
            t.hosts_with(role)
                .all(|h| h.addresses.contains_key("front")),
            "{role}"
        );
    }
    assert_eq!(t.hosts_with(Role::Proxy).count(), 2);
    let logger = t.hosts_with(Role::Logger).next().expect("a logger");
    assert!(logger.addresses.contains_key("mid") && logger.addresses.contains_key("back"));
    for role in [Role::Primary, Role::Backup] {
        assert!(
            t.hosts_with(role).all(|h| h.addresses.keys().eq(["back"])),
            "{role}"
        );
    }
}

/// The wan example: the client's link shaped, everything else plain.
#[test]
fn wan_topology_loads() {
    let t = load(Path::new("../topologies/wan.toml")).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&t);
    let shaped: Vec<(&str, &str)> = t
        .hosts
        .iter()
        .flat_map(|h| h.links.keys().map(move |n| (h.name.as_str(), n.as_str())))
        .collect();
    assert_eq!(shaped, [("client", "service")]);
    let l = t.hosts.iter().find(|h| h.name == "client").unwrap().links["service"];
    assert_eq!(
        (l.rate_bps, l.delay_us, l.jitter_us, l.loss_ppm),
        (Some(20_000_000), Some(40_000), Some(2_000), None)
    );
}

#[test]
fn three_server_topology_loads() {
    let t = load(Path::new("../topologies/three-server.toml")).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&t);
    assert_eq!(t.name, "three-server");
    assert_eq!(t.provider, Provider::Local);
    assert_eq!(t.service_address, addr("10.20.0.100"));
    assert_eq!(t.run.mode, Mode::AppMigration);
    assert_eq!(t.run.trigger, Some(Trigger::Server));
    assert_eq!(t.run.heartbeat_ms, Some(200));
    assert_eq!(t.run.missed_heartbeats, Some(3));
    assert_eq!(t.run.workload, Workload::Download);
    assert_eq!(t.run.size, Some(200_000_000));

    let nets: Vec<(&str, String, bool)> = t
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.subnet.to_string(), n.hub))
        .collect();
    assert_eq!(
        nets,
        [
            ("service", "10.20.0.0/24".to_string(), false),
            ("heartbeat", "10.20.1.0/24".to_string(), false)
        ]
    );

    let names: Vec<&str> = t.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["server1", "server2", "server3", "client"]);
    assert_eq!(roles(&t, "server1"), [Role::Primary]);
    assert_eq!(roles(&t, "server2"), [Role::Backup]);
    assert_eq!(roles(&t, "server3"), [Role::Backup]);
    assert_eq!(roles(&t, "client"), [Role::Client]);
    for (i, server) in ["server1", "server2", "server3"].iter().enumerate() {
        let h = t.host(server).expect("server");
        let n = i + 1;
        assert_eq!(h.addresses["service"], addr(&format!("10.20.0.{n}")));
        assert_eq!(h.addresses["heartbeat"], addr(&format!("10.20.1.{n}")));
    }
    let client = t.host("client").expect("client");
    assert_eq!(client.addresses.len(), 1);
    assert_eq!(client.addresses["service"], addr("10.20.0.10"));
}

const SSH_TOPOLOGY: &str = r#"
name = "vagrant"
provider = "ssh"
service_address = "192.168.56.100"
known_hosts = "keys/known_hosts"

[run]
mode = "craft"
workload = "http"
size = "64KiB"
clients = 8

[[networks]]
name = "lan"
subnet = "192.168.56.0/24"

[[networks]]
name = "hb"
subnet = "192.168.57.0/24"

[[hosts]]
name = "lb"
roles = ["lb", "proxy"]
addresses = { hb = "192.168.57.10", lan = "192.168.56.10" }
user = "vagrant"
key = "~/.ssh/id_ed25519"

[[hosts]]
name = "primary"
roles = ["primary", "logger"]
addresses = { lan = "192.168.56.11" }
ssh_address = "primary.example"
port = 2222
user = "root"
key = "/etc/halab/id"
power_command = "virsh destroy {name}"

[[hosts]]
name = "client"
roles = ["client"]
addresses = { lan = "192.168.56.20" }
user = "vagrant"
key = "./keys/client"
"#;

#[test]
fn ssh_topology_resolves_paths_and_defaults() {
    let t = parse_str(SSH_TOPOLOGY, Path::new("/srv/lab/vagrant.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&t);
    assert_eq!(t.source, Path::new("/srv/lab/vagrant.toml"));
    assert_eq!(t.provider, Provider::Ssh);
    assert_eq!(t.run.mode, Mode::Craft);
    assert_eq!(t.run.workload, Workload::Http);
    assert_eq!(t.run.size, Some(65_536));
    assert_eq!(t.run.clients, Some(8));
    assert_eq!(t.run.heartbeat_ms, None);
    assert_eq!(
        t.known_hosts.as_deref(),
        Some(Path::new("/srv/lab/keys/known_hosts"))
    );

    let lb = t.host("lb").and_then(|h| h.ssh.clone()).expect("lb ssh");
    // Default ssh address: the address on the first network in the file's order of
    // [[networks]] (lan), not the first written in `addresses` (hb).
    assert_eq!(lb.address, "192.168.56.10");
    assert_eq!(lb.port, 22);
    assert_eq!(lb.user, "vagrant");
    let home = std::env::var_os("HOME").expect("HOME is set for tests");
    assert_eq!(lb.key, Path::new(&home).join(".ssh/id_ed25519"));
    assert_eq!(lb.power_command, None);

    let primary = t.host("primary").and_then(|h| h.ssh.clone()).expect("ssh");
    assert_eq!(primary.address, "primary.example");
    assert_eq!(primary.port, 2222);
    assert_eq!(primary.key, Path::new("/etc/halab/id"));
    assert_eq!(
        primary.power_command.as_deref(),
        Some("virsh destroy {name}")
    );

    let client = t.host("client").and_then(|h| h.ssh.clone()).expect("ssh");
    assert_eq!(client.key, Path::new("/srv/lab/keys/client"));
}

#[test]
fn sizes_accept_every_unit() {
    let base = include_str!("../../topologies/two-server.toml");
    for (written, bytes) in [
        ("1", 1u64),
        ("\"512B\"", 512),
        ("\"3KB\"", 3_000),
        ("\"20MB\"", 20_000_000),
        ("\"2GB\"", 2_000_000_000),
        ("\"3KiB\"", 3_072),
        ("\"20MiB\"", 20 << 20),
        ("\"2GiB\"", 2 << 30),
        ("\"5 MB\"", 5_000_000),
    ] {
        let text = base.replace("size = \"20MB\"", &format!("size = {written}"));
        let t = parse_str(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.run.size, Some(bytes), "{written}");
    }
}

/// What the model promises (model.rs), checked on every topology that loads, generated ones
/// included.
fn check_invariants(t: &Topology) {
    let name_ok = |n: &str, max: usize| {
        (1..=max).contains(&n.len())
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    assert!(name_ok(&t.name, 20), "testbed name {}", t.name);
    assert!(!t.networks.is_empty() && !t.hosts.is_empty());
    assert!(t.hosts.len() <= 64);
    let mut net_names = HashSet::new();
    for (i, n) in t.networks.iter().enumerate() {
        assert!(name_ok(&n.name, 12), "network name {}", n.name);
        assert!(net_names.insert(&n.name), "duplicate network {}", n.name);
        assert!((8..=30).contains(&n.subnet.prefix_len()));
        assert_eq!(n.subnet.trunc(), n.subnet);
        for m in &t.networks[..i] {
            assert!(
                !m.subnet.contains(&n.subnet.network()) && !n.subnet.contains(&m.subnet.network())
            );
        }
    }
    let holding = t
        .networks
        .iter()
        .filter(|n| n.subnet.contains(&t.service_address))
        .count();
    assert_eq!(holding, 1, "service address in {holding} networks");
    let service_net = t.service_network();
    let mut host_names = HashSet::new();
    let mut addresses = HashSet::from([t.service_address]);
    for h in &t.hosts {
        assert!(name_ok(&h.name, 15), "host name {}", h.name);
        assert!(host_names.insert(&h.name), "duplicate host {}", h.name);
        assert!(!h.roles.is_empty());
        let distinct: HashSet<_> = h.roles.iter().collect();
        assert_eq!(distinct.len(), h.roles.len(), "duplicate role");
        assert!(
            h.roles
                .iter()
                .all(|r| t.run.mode.usable_roles().contains(r))
        );
        assert!(!(h.roles.contains(&Role::Primary) && h.roles.contains(&Role::Backup)));
        assert!(!h.addresses.is_empty());
        for (net, a) in &h.addresses {
            let n = t.network(net).expect("address on a known network");
            assert!(n.subnet.contains(a) && *a != n.subnet.network() && *a != n.subnet.broadcast());
            assert!(addresses.insert(*a), "duplicate address {a}");
        }
        assert_eq!(h.ssh.is_some(), t.provider == Provider::Ssh);
        if let Some(ssh) = &h.ssh {
            assert!(ssh.key.is_absolute());
            assert!(ssh.port >= 1 && !ssh.user.is_empty() && !ssh.address.is_empty());
        }
    }
    assert_eq!(t.hosts_with(Role::Primary).count(), 1);
    let backups = t.hosts_with(Role::Backup).count();
    match t.run.mode {
        Mode::StTcp => assert_eq!(backups, 1),
        Mode::None | Mode::AppMigration => assert!(backups >= 1),
        Mode::Craft => {}
    }
    assert!(t.hosts_with(Role::Client).count() >= 1);
    // The host the mode puts the service address on (the primary; craft's balancer).
    let holder = t
        .hosts_with(t.service_address_role)
        .next()
        .expect("a holder of the service address");
    assert!(holder.addresses.contains_key(&service_net.name));
    if t.provider == Provider::Local {
        assert!(t.known_hosts.is_none());
    }
    if let Some(k) = &t.known_hosts {
        assert!(k.is_absolute());
    }
    let r = &t.run;
    if r.mode == Mode::None {
        assert!(r.heartbeat_ms.is_none() && r.missed_heartbeats.is_none());
    }
    assert!(r.heartbeat_ms.is_none_or(|h| (1..=60_000).contains(&h)));
    assert!(r.missed_heartbeats.is_none_or(|m| (1..=100).contains(&m)));
    assert!(r.clients.is_none_or(|c| (1..=1000).contains(&c)));
    assert!(r.trigger.is_none() || r.mode == Mode::AppMigration);
    assert!(
        r.size.is_none()
            || matches!(
                r.workload,
                Workload::Bulk | Workload::Download | Workload::Http
            )
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: no input panics the loader; every error points inside the input.

const FUZZ_PATH: &str = "fuzz/t.toml";

/// The format's words: its keys, and scalar values (words it uses, addresses, subnets, numbers
/// near the bounds).
#[rustfmt::skip]
const GEN: TomlGen = TomlGen {
    keys: &[
        "name", "provider", "service_address", "known_hosts", "mode", "heartbeat_ms",
        "missed_heartbeats", "trigger", "workload", "size", "clients", "subnet", "hub", "roles",
        "addresses", "ssh_address", "port", "user", "key", "power_command", "power_on_command",
        "service",
        "heartbeat",
    ],
    words: &[
        "local", "ssh", "none", "app-migration", "st-tcp", "craft", "server", "client", "echo",
        "interactive", "bulk", "download", "http", "primary", "backup", "logger", "lb", "proxy",
        "service", "heartbeat", "20MB", "64KiB", "10 GB", "0B", "~/.ssh/id", "~", "~bob/x", "",
        "keys/id", "a", "Ab", "x_y", "é", "10.10.0.0/24", "10.10.0.1/24", "10.10.0.0/31",
        "10.10.0.0", "10.10.0.1", "10.10.0.255", "10.10.0.100", "10.10.1.1", "300.1.1.1",
        "10.0.0.0/8",
    ],
    extra_words: Some(addresses),
    integers: &[
        "0", "1", "3", "22", "200", "1000", "1001", "60000", "60001", "65535", "65536", "-1",
        "9223372036854775807", "-9223372036854775808", "18446744073709551615",
    ],
    others: &["1.5", "nan", "-inf", "1979-05-27", "07:32:00"],
    max_array: 4,
    headers: &["[run]", "[[networks]]", "[[hosts]]", "[hosts.addresses]"],
    insert: "[\\[\\]{}=\"',.#\n a-z0-9é]{1,4}",
};

fn addresses() -> BoxedStrategy<String> {
    (0u8..4, 0u8..=255)
        .prop_map(|(c, d)| format!("\"10.10.{c}.{d}\""))
        .boxed()
}

/// Whole documents: top-level keys, then tables with the format's headers (and some others).
fn document() -> impl Strategy<Value = String> {
    GEN.document(Just(""))
}

/// A valid file with a few random edits.
fn near_valid() -> impl Strategy<Value = String> {
    GEN.near_valid(vec![
        include_str!("../../topologies/two-server.toml").to_string(),
        include_str!("../../topologies/three-server.toml").to_string(),
        SSH_TOPOLOGY.to_string(),
    ])
}

never_panic_tests! {
    parse: topology::parse_str,
    invariants: check_invariants,
    located: located,
    path: FUZZ_PATH,
    toml_like: "[\\[\\]{}=\"'.,# \t\r\na-z0-9_é-]{0,300}",
    documents: document(),
    mutated_topologies_never_panic: near_valid(),
}

#[test]
fn links_take_the_network_s_settings_with_the_host_s_own_over_them() {
    let text = r#"
name = "wan"
service_address = "10.10.0.100"
[run]
mode = "none"
[[networks]]
name = "service"
subnet = "10.10.0.0/24"
rate = "100Mbit"
delay = "1ms"
[[networks]]
name = "quiet"
subnet = "10.10.1.0/24"
[[hosts]]
name = "primary"
roles = ["primary"]
addresses = { service = "10.10.0.1", quiet = "10.10.1.1" }
[[hosts]]
name = "backup"
roles = ["backup"]
addresses = { service = "10.10.0.2" }
[[hosts]]
name = "client"
roles = ["client"]
addresses = { service = "10.10.0.10" }
links = { service = { delay = "20ms", jitter = "5ms", loss = "0.5%" } }
"#;
    let t = parse_str(text, Path::new("wan.toml")).unwrap_or_else(|e| panic!("{e}"));
    let link = |host: &str, net: &str| t.host(host).unwrap().links.get(net).copied();
    // The network's settings on every host's link to it...
    let primary = link("primary", "service").expect("shaped");
    assert_eq!(primary.rate_bps, Some(100_000_000));
    assert_eq!(primary.delay_us, Some(1_000));
    assert_eq!((primary.jitter_us, primary.loss_ppm), (None, None));
    // ...a plain network leaves the link plain...
    assert_eq!(link("primary", "quiet"), None);
    // ...and a host's own settings replace the network's key by key.
    let client = link("client", "service").expect("shaped");
    assert_eq!(client.rate_bps, Some(100_000_000));
    assert_eq!(client.delay_us, Some(20_000));
    assert_eq!(client.jitter_us, Some(5_000));
    assert_eq!(client.loss_ppm, Some(5_000));
}
