//! Checks a parsed topology file and builds the model, which promises the invariants documented
//! in `model.rs`; this is the one place they are established.
//!
//! The checks run in three stages, each only when the previous one found nothing:
//! 1. each value on its own (names, enumerations, addresses, ranges, keys the provider or mode
//!    does not take), then whether networks and hosts are there at all;
//! 2. values against each other (duplicates, overlapping subnets, addresses inside their
//!    networks);
//! 3. the testbed as a whole (one primary, the backups the mode needs, a client, the service
//!    address on the primary's network).
//!
//! Within a stage every error is collected and the first in the file is reported. The stages
//! keep one mistake from being reported as a different, earlier one: a misspelt role must be
//! reported as such, not as "no host has role `client`" pointing at the first host.

use super::diagnostic::{Diagnostic, Reporter};
use super::link_units;
use super::model::{
    Host, LinkShape, Mode, Network, Provider, RunSettings, SshHost, Topology, Trigger, Workload,
};
use super::parse::{self, PathError, RawHost, RawNetwork, RawRun, RawTopology};
use crate::modes::RoleCount;
use halab_protocol::Role;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Longest names: the testbed name prefixes namespace and interface names, a network name is
/// an interface name (15 bytes in Linux, less room for prefixes), a host name a namespace name.
const TESTBED_NAME_MAX: usize = 20;
const NETWORK_NAME_MAX: usize = 12;
const HOST_NAME_MAX: usize = 15;
/// The local provider gives each host a veth per network on one bridge; 64 keeps a testbed
/// within what one machine sets up in seconds.
const MAX_HOSTS: usize = 64;

/// Every mode's name, from the registry.
pub(crate) fn modes() -> Vec<(&'static str, Mode)> {
    Mode::all().map(|m| (m.as_str(), m)).collect()
}
pub(crate) const WORKLOADS: [(&str, Workload); 5] = [
    ("echo", Workload::Echo),
    ("interactive", Workload::Interactive),
    ("bulk", Workload::Bulk),
    ("download", Workload::Download),
    ("http", Workload::Http),
];
pub(crate) const TRIGGERS: [(&str, Trigger); 2] =
    [("server", Trigger::Server), ("client", Trigger::Client)];
const PROVIDERS: [(&str, Provider); 2] = [("local", Provider::Local), ("ssh", Provider::Ssh)];

/// Size units: decimal (powers of 1000) and binary (powers of 1024), as the model documents.
const SIZE_UNITS: [(&str, u64); 7] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];
const SIZE_HINT: &str = "write an integer number of bytes, or a string with a unit such as \
                         `\"20MB\"`: B, KB, MB, GB (powers of 1000), KiB, MiB, GiB \
                         (powers of 1024)";

/// Checks `raw`, read from `text` (the contents of `path`), and builds the model. `home` is
/// what `~` expands to.
pub(crate) fn topology(
    raw: &RawTopology,
    text: &str,
    path: &Path,
    home: Option<&Path>,
) -> Result<Topology, Diagnostic> {
    let mut r = Reporter::new(path, text);

    // Stage 1: each value on its own.
    let name = check_name(&mut r, "testbed", &raw.name, TESTBED_NAME_MAX);
    let provider = match &raw.provider {
        Some(p) => one_of(&mut r, "provider", p, &PROVIDERS),
        None => Some(Provider::Local),
    };
    let service_address = ipv4(&mut r, "service address", &raw.service_address);
    let known_hosts = match (&raw.known_hosts, provider) {
        (None, _) | (Some(_), None) => None,
        (Some(k), Some(Provider::Local)) => {
            ssh_only(&mut r, "known_hosts", k.span());
            None
        }
        (Some(k), Some(Provider::Ssh)) => file_path(&mut r, k, path, home),
    };
    let run = run_settings(&mut r, &raw.run);
    let mode = mode_named(raw.run.get_ref().mode.get_ref());

    let raw_networks: &[Spanned<RawNetwork>] = match &raw.networks {
        Some(n) => n.get_ref(),
        None => &[],
    };
    let networks: Vec<Option<Network>> = raw_networks
        .iter()
        .map(|n| network(&mut r, n.get_ref()))
        .collect();

    let raw_hosts: &[Spanned<RawHost>] = match &raw.hosts {
        Some(h) => h.get_ref(),
        None => &[],
    };
    if let Some(extra) = raw_hosts.get(MAX_HOSTS) {
        r.error(
            extra.span(),
            format!("more than {MAX_HOSTS} hosts"),
            format!(
                "a testbed has at most {MAX_HOSTS} hosts; this is host {}",
                MAX_HOSTS + 1
            ),
        );
    }
    let hosts: Vec<Option<HostDraft>> = raw_hosts
        .iter()
        .map(|h| host(&mut r, h, mode, provider, path, home))
        .collect();

    r.finish()?;

    // Whole tables missing: after the values, since such an error points at the start of the
    // file and would otherwise hide every mistake actually written down.
    if raw_networks.is_empty() {
        let span = raw.networks.as_ref().map_or(0..0, |n| n.span());
        r.error(
            span,
            "the testbed has no networks",
            "add a `[[networks]]` table with `name` and `subnet`, e.g. `subnet = \"10.10.0.0/24\"`",
        );
    }
    if raw_hosts.is_empty() {
        let span = raw.hosts.as_ref().map_or(0..0, |h| h.span());
        r.error(
            span,
            "the testbed has no hosts",
            "add a `[[hosts]]` table with `name`, `roles` and `addresses`",
        );
    }
    r.finish()?;

    let stage1 = || {
        let networks: Option<Vec<Network>> = networks.into_iter().collect();
        let hosts: Option<Vec<HostDraft>> = hosts.into_iter().collect();
        Some((name?, provider?, service_address?, run?, networks?, hosts?))
    };
    let Some((name, provider, service_address, run, networks, hosts)) = stage1() else {
        return Err(r.internal("a value"));
    };

    // Stage 2: values against each other.
    check_networks(&mut r, raw_networks, &networks);
    check_host_names(&mut r, &hosts);
    check_host_addresses(&mut r, raw_networks, &networks, &hosts);
    check_unique_addresses(&mut r, &raw.service_address, service_address, &hosts);
    r.finish()?;

    // Stage 3: the testbed as a whole.
    let service_network = check_service_address(&mut r, raw, service_address, &networks);
    check_roles(
        &mut r,
        raw,
        &hosts,
        run.mode,
        service_network,
        service_address,
    );
    check_service_network_roles(&mut r, &hosts, run.mode, service_network);
    r.finish()?;

    let hosts = hosts
        .into_iter()
        .map(|h| h.build(&networks, provider))
        .collect();
    Ok(Topology {
        source: path.to_path_buf(),
        name,
        provider,
        service_address,
        service_address_role: run.mode.behaviour().service_address_role(),
        run,
        networks,
        hosts,
        known_hosts,
    })
}

/// A host that passed stage 1, with the spans the later stages point at.
struct HostDraft<'r> {
    raw: &'r Spanned<RawHost>,
    name: String,
    /// Roles with the span of each entry in `roles`.
    roles: Vec<(Role, Range<usize>)>,
    /// (network name as written, address), in file order.
    addresses: Vec<(&'r Spanned<String>, Spanned<Ipv4Addr>)>,
    /// Everything of the ssh settings but the address, which may default to an address of the
    /// host and so waits for stage 2 to have checked those. `None` for provider local.
    ssh: Option<SshDraft>,
    /// `links` entries: (network name as written, its settings).
    links: Vec<(&'r Spanned<String>, LinkShape)>,
}

struct SshDraft {
    address: Option<String>,
    port: u16,
    user: String,
    key: PathBuf,
    power_command: Option<String>,
    power_on_command: Option<String>,
}

impl HostDraft<'_> {
    fn has(&self, role: Role) -> Option<Range<usize>> {
        self.roles
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, span)| span.clone())
    }

    fn build(self, networks: &[Network], provider: Provider) -> Host {
        let addresses: BTreeMap<String, Ipv4Addr> = self
            .addresses
            .iter()
            .map(|(net, addr)| (net.get_ref().clone(), *addr.get_ref()))
            .collect();
        // Stage 2 checked that every `links` entry names a network the host is on.
        let links: BTreeMap<String, LinkShape> = networks
            .iter()
            .filter(|n| addresses.contains_key(&n.name))
            .map(|n| {
                let own = self
                    .links
                    .iter()
                    .find(|(name, _)| name.get_ref() == &n.name)
                    .map(|(_, shape)| *shape)
                    .unwrap_or_default();
                (n.name.clone(), n.shape.overlaid(own))
            })
            .filter(|(_, shape)| !shape.is_plain())
            .collect();
        let ssh = match (provider, self.ssh) {
            (Provider::Ssh, Some(ssh)) => {
                // Default: the address on the first network, in the networks' file order, the
                // host has. Stage 1 made sure it has one.
                let address = ssh.address.unwrap_or_else(|| {
                    networks
                        .iter()
                        .find_map(|n| addresses.get(&n.name))
                        .map(|a| a.to_string())
                        .unwrap_or_default()
                });
                Some(SshHost {
                    address,
                    port: ssh.port,
                    user: ssh.user,
                    key: ssh.key,
                    power_command: ssh.power_command,
                    power_on_command: ssh.power_on_command,
                })
            }
            _ => None,
        };
        Host {
            name: self.name,
            roles: self.roles.into_iter().map(|(role, _)| role).collect(),
            addresses,
            links,
            ssh,
        }
    }
}

/// Checks a `[run]` table and builds its settings. Shared with experiment files, which carry
/// the same table.
pub(crate) fn run_settings(r: &mut Reporter, raw: &Spanned<RawRun>) -> Option<RunSettings> {
    let run = raw.get_ref();
    let mode = one_of(r, "mode", &run.mode, &modes());
    let workload = match &run.workload {
        Some(w) => one_of(r, "workload", w, &WORKLOADS),
        None => Some(Workload::Bulk),
    };

    let trigger = match (&run.trigger, mode) {
        (Some(t), Some(m)) if !m.behaviour().run_keys().trigger => {
            let with: Vec<Mode> = Mode::all()
                .filter(|m| m.behaviour().run_keys().trigger)
                .collect();
            let names: Vec<String> = with.iter().map(|m| format!("`{m}`")).collect();
            r.error(
                t.span(),
                format!("`trigger` cannot be used with mode `{m}`"),
                format!(
                    "only mode {} has a trigger; remove it, or set `mode = \"{}\"`",
                    names.join(" or "),
                    with.first().map_or("", |m| m.as_str())
                ),
            );
            None
        }
        (Some(t), _) => one_of(r, "trigger", t, &TRIGGERS),
        (None, _) => None,
    };

    let no_heartbeat_in = mode.filter(|m| !m.behaviour().run_keys().heartbeat);
    let heartbeat_ms = run.heartbeat_ms.as_ref().and_then(|h| {
        if let Some(m) = no_heartbeat_in {
            no_heartbeat(r, m, "heartbeat_ms", h.span());
            return None;
        }
        in_range(
            r,
            "heartbeat_ms",
            h,
            1,
            60_000,
            "milliseconds between heartbeats",
        )
    });
    let missed_heartbeats = run.missed_heartbeats.as_ref().and_then(|m| {
        if let Some(mode) = no_heartbeat_in {
            no_heartbeat(r, mode, "missed_heartbeats", m.span());
            return None;
        }
        in_range(
            r,
            "missed_heartbeats",
            m,
            1,
            100,
            "heartbeats missed before a peer counts as dead",
        )
    });

    let size = match (&run.size, workload) {
        (Some(s), Some(w))
            if !matches!(w, Workload::Bulk | Workload::Download | Workload::Http) =>
        {
            let name = WORKLOADS
                .iter()
                .find(|(_, x)| *x == w)
                .map_or("", |(n, _)| n);
            r.error(
                s.span(),
                format!("`size` cannot be used with workload `{name}`"),
                "only workloads `bulk`, `download` and `http` transfer a given size; remove it",
            );
            None
        }
        (Some(s), _) => match parse_size(s.get_ref()) {
            Ok(size) => Some(size),
            Err((message, hint)) => {
                r.error(s.span(), message, hint);
                None
            }
        },
        (None, _) => None,
    };
    let clients = run
        .clients
        .as_ref()
        .and_then(|c| in_range(r, "clients", c, 1, 1000, "concurrent client connections"));

    // A value that is present but failed its check is `None` above with an error recorded;
    // the caller sees it through the reporter, so building with it as `None` is harmless.
    Some(RunSettings {
        mode: mode?,
        heartbeat_ms,
        missed_heartbeats,
        trigger,
        workload: workload?,
        size,
        clients,
    })
}

fn mode_named(name: &str) -> Option<Mode> {
    Mode::from_name(name)
}

fn no_heartbeat(r: &mut Reporter, mode: Mode, key: &str, span: Range<usize>) {
    r.error(
        span,
        format!("`{key}` cannot be used with mode `{mode}`"),
        format!("mode `{mode}` has no failover and so no heartbeat; remove it"),
    );
}

/// An integer in `min..=max`; `what` says what it counts, for the hint.
pub(crate) fn in_range<T: TryFrom<i64>>(
    r: &mut Reporter,
    key: &str,
    value: &Spanned<i64>,
    min: i64,
    max: i64,
    what: &str,
) -> Option<T> {
    let v = *value.get_ref();
    if !(min..=max).contains(&v) {
        r.error(
            value.span(),
            format!("`{key}` = {v} is out of range"),
            format!("use a value from {min} to {max} ({what})"),
        );
        return None;
    }
    match T::try_from(v) {
        Ok(v) => Some(v),
        Err(_) => {
            // Unreachable for the ranges used here; reported rather than panicking.
            r.error(
                value.span(),
                format!("`{key}` = {v} is out of range"),
                format!("use a value from {min} to {max}"),
            );
            None
        }
    }
}

/// `size`: an integer number of bytes, or a string with a unit.
pub(crate) fn parse_size(value: &toml::Value) -> Result<u64, (String, String)> {
    let out_of_range = |shown: &str| {
        (
            format!("size {shown} is out of range"),
            format!("give at least 1 byte and at most {} bytes", u64::MAX),
        )
    };
    match value {
        toml::Value::Integer(n) => match u64::try_from(*n) {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(out_of_range(&n.to_string())),
        },
        toml::Value::String(s) => {
            let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(digits_end);
            let unit = unit.trim_start_matches(' ');
            let invalid = || (format!("invalid size `{s}`"), SIZE_HINT.to_string());
            if digits.is_empty() {
                return Err(invalid());
            }
            let Some((_, factor)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
                if unit.is_empty() {
                    return Err((
                        format!("size `{s}` has no unit"),
                        format!(
                            "write `{s}B` for bytes, or an integer without quotes; \
                             units: B, KB, MB, GB, KiB, MiB, GiB"
                        ),
                    ));
                }
                return Err(invalid());
            };
            let shown = format!("`{s}`");
            let n: u64 = digits.parse().map_err(|_| out_of_range(&shown))?;
            match n.checked_mul(*factor) {
                Some(bytes) if bytes >= 1 => Ok(bytes),
                _ => Err(out_of_range(&shown)),
            }
        }
        other => Err((
            format!("invalid type: {} for `size`", other.type_str()),
            SIZE_HINT.to_string(),
        )),
    }
}

/// One of a fixed set of words (mode, provider, ...).
pub(crate) fn one_of<T: Copy>(
    r: &mut Reporter,
    what: &str,
    value: &Spanned<String>,
    options: &[(&str, T)],
) -> Option<T> {
    let v = value.get_ref();
    if let Some((_, t)) = options.iter().find(|(name, _)| name == v) {
        return Some(*t);
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    r.error(
        value.span(),
        format!("unknown {what} `{v}`"),
        format!("expected {}", list(&names)),
    );
    None
}

/// "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
pub(crate) fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

fn roles_list(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

/// A testbed, network or host name: 1..=max characters of `[a-z0-9-]`, starting with a letter.
pub(crate) fn check_name(
    r: &mut Reporter,
    what: &str,
    value: &Spanned<String>,
    max: usize,
) -> Option<String> {
    let v = value.get_ref();
    let rule = format!("use 1 to {max} characters of `a-z`, `0-9` and `-`, starting with a letter");
    let problem = if v.is_empty() {
        Some(format!("empty {what} name"))
    } else if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let lower = v.to_ascii_lowercase();
        if c.is_ascii_uppercase() && valid_name(&lower, max) {
            r.error(
                value.span(),
                format!("{what} name `{v}` contains an uppercase letter"),
                format!("names are lowercase: write `{lower}`"),
            );
            return None;
        }
        let shown = if c.is_whitespace() {
            "a space".to_string()
        } else {
            format!("`{}`", c.escape_debug())
        };
        Some(format!("{what} name `{v}` contains {shown}"))
    } else if !v.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some(format!("{what} name `{v}` does not start with a letter"))
    } else if v.chars().count() > max {
        Some(format!(
            "{what} name `{v}` is {} characters long",
            v.chars().count()
        ))
    } else {
        None
    };
    match problem {
        Some(message) => {
            r.error(value.span(), message, rule);
            None
        }
        None => Some(v.clone()),
    }
}

pub(crate) fn valid_name(v: &str, max: usize) -> bool {
    v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.len() <= max
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn ipv4(r: &mut Reporter, what: &str, value: &Spanned<String>) -> Option<Ipv4Addr> {
    let v = value.get_ref();
    match v.parse::<Ipv4Addr>() {
        Ok(a) => Some(a),
        Err(_) => {
            let hint = if v.contains('/') {
                "write the address alone, without a prefix length, e.g. `10.10.0.1`"
            } else {
                "write an IPv4 address as four numbers 0-255, e.g. `10.10.0.1`"
            };
            r.error(value.span(), format!("invalid {what} `{v}`"), hint);
            None
        }
    }
}

/// A path from the file (an ssh key, known_hosts), resolved by `parse::resolve_path`.
fn file_path(
    r: &mut Reporter,
    value: &Spanned<String>,
    topology_file: &Path,
    home: Option<&Path>,
) -> Option<PathBuf> {
    match parse::resolve_path(value.get_ref(), topology_file, home) {
        Ok(p) => Some(p),
        Err(e) => {
            let (message, hint) = match e {
                PathError::NoHome => (
                    "cannot expand `~`: HOME is not set",
                    "write an absolute path, or set HOME",
                ),
                PathError::OtherUsersHome => (
                    "`~user` paths are not supported",
                    "write `~/...` for your own home folder, or an absolute path",
                ),
                PathError::Empty => ("empty path", "give the path of a file"),
                PathError::NoCurrentDir => (
                    "cannot resolve a relative path: the current directory is unknown",
                    "write an absolute path",
                ),
            };
            r.error(value.span(), message, hint);
            None
        }
    }
}

fn ssh_only(r: &mut Reporter, key: &str, span: Range<usize>) {
    r.error(
        span,
        format!("`{key}` is only used with provider `ssh`"),
        "remove it, or set `provider = \"ssh\"` at the top of the file",
    );
}

fn network(r: &mut Reporter, raw: &RawNetwork) -> Option<Network> {
    let mut name = check_name(r, "network", &raw.name, NETWORK_NAME_MAX);
    // A network's name is its interface name inside every host, and `lo` is already there.
    if name.as_deref() == Some("lo") {
        r.error(
            raw.name.span(),
            "network name `lo` is taken by every host's loopback interface",
            "choose another name, such as `lan`",
        );
        name = None;
    }
    let subnet = subnet(r, &raw.subnet);
    let shape = link_shape(r, [&raw.rate, &raw.delay, &raw.jitter, &raw.loss]);
    Some(Network {
        name: name?,
        subnet: subnet?,
        hub: raw.hub.as_ref().is_some_and(|h| *h.get_ref()),
        shape: shape?,
    })
}

/// A link's settings, `[rate, delay, jitter, loss]` as written; `owner` is where an error about
/// them together points.
pub(crate) fn link_shape(
    r: &mut Reporter,
    [rate, delay, jitter, loss]: [&Option<Spanned<String>>; 4],
) -> Option<LinkShape> {
    let mut ok = true;
    let mut read = |value: &Option<Spanned<String>>,
                    parse: &dyn Fn(&str) -> Result<u64, link_units::Refusal>| {
        let v = value.as_ref()?;
        match parse(v.get_ref()) {
            Ok(x) => Some(x),
            Err((message, hint)) => {
                r.error(v.span(), message, hint);
                ok = false;
                None
            }
        }
    };
    let rate_bps = read(rate, &|t| link_units::parse_rate("rate", t));
    let delay_us = read(delay, &|t| link_units::parse_delay("delay", t));
    let jitter_us = read(jitter, &|t| link_units::parse_delay("jitter", t));
    let loss_ppm = match loss {
        Some(v) => match link_units::parse_loss("loss", v.get_ref()) {
            Ok(percent) => Some((percent * 10_000.0).round() as u32),
            Err((message, hint)) => {
                r.error(v.span(), message, hint);
                ok = false;
                None
            }
        },
        None => None,
    };
    if let (Some(j), Some(span)) = (jitter_us, jitter.as_ref().map(|j| j.span())) {
        match delay_us {
            None if j > 0 => {
                r.error(
                    span,
                    "`jitter` without `delay`",
                    "jitter spreads a delay; add `delay`, e.g. `delay = \"20ms\"`",
                );
                ok = false;
            }
            Some(d) if j > d => {
                r.error(
                    span,
                    format!(
                        "jitter {} is larger than the delay {}",
                        link_units::show_delay(j),
                        link_units::show_delay(d)
                    ),
                    "a packet cannot leave before it arrives: give a jitter of at most the delay",
                );
                ok = false;
            }
            _ => {}
        }
    }
    ok.then_some(LinkShape {
        rate_bps,
        delay_us,
        jitter_us,
        loss_ppm,
    })
}

fn subnet(r: &mut Reporter, value: &Spanned<String>) -> Option<Ipv4Net> {
    let v = value.get_ref();
    let Ok(net) = v.parse::<Ipv4Net>() else {
        let hint = if !v.contains('/') && v.parse::<Ipv4Addr>().is_ok() {
            format!("add the prefix length, e.g. `{v}/24`")
        } else {
            "write an IPv4 network in CIDR form, e.g. `10.10.0.0/24`".to_string()
        };
        r.error(value.span(), format!("invalid subnet `{v}`"), hint);
        return None;
    };
    if !(8..=30).contains(&net.prefix_len()) {
        r.error(
            value.span(),
            format!(
                "prefix length /{} of subnet `{v}` is out of range",
                net.prefix_len()
            ),
            "use a prefix length from /8 to /30 (/31 and /32 leave no room for hosts)",
        );
        return None;
    }
    if net.trunc() != net {
        r.error(
            value.span(),
            format!("subnet `{v}` has host bits set"),
            format!("did you mean `{}`?", net.trunc()),
        );
        return None;
    }
    Some(net)
}

fn host<'r>(
    r: &mut Reporter,
    spanned: &'r Spanned<RawHost>,
    mode: Option<Mode>,
    provider: Option<Provider>,
    topology_file: &Path,
    home: Option<&Path>,
) -> Option<HostDraft<'r>> {
    let raw = spanned.get_ref();
    let name = check_name(r, "host", &raw.name, HOST_NAME_MAX);
    let shown = name.as_deref().unwrap_or(raw.name.get_ref().as_str());
    let roles = host_roles(r, raw, shown, mode);

    let mut addresses_ok = true;
    let mut addresses = Vec::new();
    if raw.addresses.get_ref().is_empty() {
        r.error(
            raw.addresses.span(),
            format!("host `{shown}` has no addresses"),
            "give it an address on at least one network, \
             e.g. `addresses = { service = \"10.10.0.5\" }`",
        );
        addresses_ok = false;
    }
    for (network, address) in raw.addresses_in_file_order() {
        match ipv4(r, "address", address) {
            Some(a) => addresses.push((network, Spanned::new(address.span(), a))),
            None => addresses_ok = false,
        }
    }

    let ssh = match provider {
        Some(Provider::Local) => {
            let ssh_keys = [
                ("ssh_address", raw.ssh_address.as_ref().map(|v| v.span())),
                ("port", raw.port.as_ref().map(|v| v.span())),
                ("user", raw.user.as_ref().map(|v| v.span())),
                ("key", raw.key.as_ref().map(|v| v.span())),
                (
                    "power_command",
                    raw.power_command.as_ref().map(|v| v.span()),
                ),
                (
                    "power_on_command",
                    raw.power_on_command.as_ref().map(|v| v.span()),
                ),
            ];
            for (key, span) in ssh_keys {
                if let Some(span) = span {
                    ssh_only(r, key, span);
                }
            }
            None
        }
        Some(Provider::Ssh) => ssh_settings(r, spanned, shown, topology_file, home),
        None => None,
    };

    let mut links = Vec::new();
    let mut links_ok = true;
    if let Some(entries) = &raw.links {
        let mut entries: Vec<_> = entries.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for (network, link) in entries {
            let l = link.get_ref();
            match link_shape(r, [&l.rate, &l.delay, &l.jitter, &l.loss]) {
                Some(shape) => links.push((network, shape)),
                None => links_ok = false,
            }
        }
    }

    let ssh_ok = provider != Some(Provider::Ssh) || ssh.is_some();
    if !(addresses_ok && ssh_ok && links_ok) {
        return None;
    }
    Some(HostDraft {
        raw: spanned,
        name: name?,
        roles: roles?,
        addresses,
        ssh,
        links,
    })
}

/// Roles of one host: known, not repeated, usable by the mode, not both primary and backup.
fn host_roles(
    r: &mut Reporter,
    raw: &RawHost,
    host: &str,
    mode: Option<Mode>,
) -> Option<Vec<(Role, Range<usize>)>> {
    let all_names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    if raw.roles.get_ref().is_empty() {
        let usable = mode.map_or(Role::ALL.to_vec(), |m| m.usable_roles());
        r.error(
            raw.roles.span(),
            format!("host `{host}` has no roles"),
            format!("give it at least one of {}", roles_list(&usable)),
        );
        return None;
    }
    let mut ok = true;
    let mut roles: Vec<(Role, Range<usize>)> = Vec::new();
    for entry in raw.roles.get_ref() {
        let Some(role) = Role::ALL
            .into_iter()
            .find(|r| r.as_str() == entry.get_ref())
        else {
            r.error(
                entry.span(),
                format!("unknown role `{}`", entry.get_ref()),
                format!("expected {}", list(&all_names)),
            );
            ok = false;
            continue;
        };
        if roles.iter().any(|(r, _)| *r == role) {
            r.error(
                entry.span(),
                format!("role `{role}` is listed twice"),
                "remove the second one",
            );
            ok = false;
            continue;
        }
        if let Some(mode) = mode
            && !mode.usable_roles().contains(&role)
        {
            r.error(
                entry.span(),
                format!("role `{role}` cannot be used with mode `{mode}`"),
                format!(
                    "mode `{mode}` uses roles {}",
                    roles_list(&mode.usable_roles())
                ),
            );
            ok = false;
            continue;
        }
        let other = match role {
            Role::Primary => Some(Role::Backup),
            Role::Backup => Some(Role::Primary),
            _ => None,
        };
        if let Some(other) = other
            && roles.iter().any(|(r, _)| *r == other)
        {
            r.error(
                entry.span(),
                format!("host `{host}` cannot be both `primary` and `backup`"),
                "a backup takes over from the primary, so it must be another host",
            );
            ok = false;
            continue;
        }
        roles.push((role, entry.span()));
    }
    ok.then_some(roles)
}

/// The ssh settings of one host under provider ssh.
fn ssh_settings(
    r: &mut Reporter,
    spanned: &Spanned<RawHost>,
    host: &str,
    topology_file: &Path,
    home: Option<&Path>,
) -> Option<SshDraft> {
    let raw = spanned.get_ref();
    let mut ok = true;
    let address = match &raw.ssh_address {
        Some(a) if a.get_ref().is_empty() || a.get_ref().contains(char::is_whitespace) => {
            r.error(
                a.span(),
                format!("invalid ssh_address `{}`", a.get_ref()),
                "write an IP address or DNS name to connect to, or leave it out \
                 to use the host's address on its first network",
            );
            ok = false;
            None
        }
        Some(a) => Some(a.get_ref().clone()),
        None => None,
    };
    let port = match &raw.port {
        Some(p) => {
            let port = in_range::<u16>(r, "port", p, 1, 65535, "the SSH server's TCP port");
            ok &= port.is_some();
            port.unwrap_or(22)
        }
        None => 22,
    };
    let user = match &raw.user {
        Some(u) if u.get_ref().trim().is_empty() => {
            r.error(
                u.span(),
                "empty `user`",
                "give the login name on the host, e.g. `user = \"root\"`",
            );
            None
        }
        Some(u) => Some(u.get_ref().clone()),
        None => {
            r.error(
                spanned.span(),
                format!("host `{host}` has no `user`"),
                "provider `ssh` needs the login name of every host, e.g. `user = \"root\"`",
            );
            None
        }
    };
    let key = match &raw.key {
        Some(k) => file_path(r, k, topology_file, home),
        None => {
            r.error(
                spanned.span(),
                format!("host `{host}` has no `key`"),
                "provider `ssh` needs a private key file for every host, \
                 e.g. `key = \"~/.ssh/id_ed25519\"`",
            );
            None
        }
    };
    let mut command = |key: &str, raw: &Option<Spanned<String>>, does: &str| match raw {
        Some(c) if c.get_ref().trim().is_empty() => {
            r.error(
                c.span(),
                format!("empty `{key}`"),
                format!("give a command that {does}, or leave it out"),
            );
            ok = false;
            None
        }
        Some(c) => Some(c.get_ref().clone()),
        None => None,
    };
    let power_command = command(
        "power_command",
        &raw.power_command,
        "powers the host off, e.g. `virsh destroy {name}`",
    );
    let power_on_command = command(
        "power_on_command",
        &raw.power_on_command,
        "powers the host on, e.g. `virsh start {name}`",
    );
    if !ok {
        return None;
    }
    Some(SshDraft {
        address,
        port,
        user: user?,
        key: key?,
        power_command,
        power_on_command,
    })
}

/// Network names unique; subnets unique and not overlapping. Errors point at the later one.
fn check_networks(r: &mut Reporter, raw: &[Spanned<RawNetwork>], networks: &[Network]) {
    for (j, (b, raw_b)) in networks.iter().zip(raw).enumerate() {
        for (a, raw_a) in networks.iter().zip(raw).take(j) {
            let line = r.line_of(raw_a.get_ref().name.span());
            if a.name == b.name {
                r.error(
                    raw_b.get_ref().name.span(),
                    format!("duplicate network name `{}`", b.name),
                    format!("network `{}` is already defined on line {line}", a.name),
                );
            }
            let line = r.line_of(raw_a.get_ref().subnet.span());
            if a.subnet == b.subnet {
                r.error(
                    raw_b.get_ref().subnet.span(),
                    format!("duplicate subnet `{}`", b.subnet),
                    format!(
                        "network `{}` already uses it (line {line}); \
                         give each network its own subnet",
                        a.name
                    ),
                );
            } else if a.subnet.contains(&b.subnet.network())
                || b.subnet.contains(&a.subnet.network())
            {
                r.error(
                    raw_b.get_ref().subnet.span(),
                    format!(
                        "subnet `{}` overlaps subnet `{}` of network `{}`",
                        b.subnet, a.subnet, a.name
                    ),
                    format!(
                        "subnets must not overlap (line {line}), \
                         so that every address belongs to one network"
                    ),
                );
            }
        }
    }
}

fn check_host_names(r: &mut Reporter, hosts: &[HostDraft]) {
    let mut seen: HashMap<&str, Range<usize>> = HashMap::new();
    for h in hosts {
        let span = h.raw.get_ref().name.span();
        if let Some(first) = seen.get(h.name.as_str()) {
            let line = r.line_of(first.clone());
            r.error(
                span,
                format!("duplicate host name `{}`", h.name),
                format!("host `{}` is already defined on line {line}", h.name),
            );
        } else {
            seen.insert(&h.name, span);
        }
    }
}

/// Every address names a network of the file and lies inside its subnet, but is neither its
/// network nor its broadcast address.
fn check_host_addresses(
    r: &mut Reporter,
    raw: &[Spanned<RawNetwork>],
    networks: &[Network],
    hosts: &[HostDraft],
) {
    let names: Vec<&str> = raw
        .iter()
        .map(|n| n.get_ref().name.get_ref().as_str())
        .collect();
    for h in hosts {
        for (network, address) in &h.addresses {
            let Some(net) = networks.iter().find(|n| n.name == *network.get_ref()) else {
                r.error(
                    network.span(),
                    format!("unknown network `{}`", network.get_ref()),
                    format!("the networks of this file are {}", list_all(&names)),
                );
                continue;
            };
            if let Some((message, hint)) = misplaced(*address.get_ref(), net, "address") {
                r.error(address.span(), message, hint);
            }
        }
        // A link's settings shape the host's link to a network it is on.
        for (network, _) in &h.links {
            let on: Vec<&str> = h
                .addresses
                .iter()
                .map(|(n, _)| n.get_ref().as_str())
                .collect();
            if !names.contains(&network.get_ref().as_str()) {
                r.error(
                    network.span(),
                    format!("unknown network `{}` in `links`", network.get_ref()),
                    format!("the networks of this file are {}", list_all(&names)),
                );
            } else if !on.contains(&network.get_ref().as_str()) {
                r.error(
                    network.span(),
                    format!(
                        "host `{}` has no link to network `{}`",
                        h.name,
                        network.get_ref()
                    ),
                    format!(
                        "`links` shapes the host's links to the networks it has an address on: {}",
                        list_all(&on)
                    ),
                );
            }
        }
    }
}

/// "`a`", "`a` and `b`", "`a`, `b` and `c`".
pub(crate) fn list_all(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        None => "none".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Why `address` cannot be used on `net`, if it cannot: (message, hint).
fn misplaced(address: Ipv4Addr, net: &Network, what: &str) -> Option<(String, String)> {
    let subnet = net.subnet;
    let usable = format!(
        "use one of {} to {}",
        Ipv4Addr::from(u32::from(subnet.network()) + 1),
        Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
    );
    if !subnet.contains(&address) {
        return Some((
            format!("{what} {address} is outside network `{}`", net.name),
            format!("network `{}` is {subnet}: {usable}", net.name),
        ));
    }
    if address == subnet.network() {
        return Some((
            format!(
                "{what} {address} is the network address of `{}` ({subnet})",
                net.name
            ),
            usable,
        ));
    }
    if address == subnet.broadcast() {
        return Some((
            format!(
                "{what} {address} is the broadcast address of `{}` ({subnet})",
                net.name
            ),
            usable,
        ));
    }
    None
}

/// No address used twice: not by two hosts, not by one host on two networks, and none equal
/// to the service address. The later one in the file is the error.
fn check_unique_addresses(
    r: &mut Reporter,
    raw_service: &Spanned<String>,
    service: Ipv4Addr,
    hosts: &[HostDraft],
) {
    // (address, span, owner: None for the service address), in file order.
    let mut all: Vec<(Ipv4Addr, Range<usize>, Option<&str>)> =
        vec![(service, raw_service.span(), None)];
    for h in hosts {
        for (_, address) in &h.addresses {
            all.push((*address.get_ref(), address.span(), Some(&h.name)));
        }
    }
    all.sort_by_key(|(_, span, _)| span.start);
    let mut seen: HashMap<Ipv4Addr, (Range<usize>, Option<&str>)> = HashMap::new();
    for (address, span, owner) in all {
        let Some((first_span, first_owner)) = seen.get(&address) else {
            seen.insert(address, (span, owner));
            continue;
        };
        let line = r.line_of(first_span.clone());
        let (message, hint) = match (first_owner, owner) {
            (None, Some(host)) => (
                format!("address {address} of host `{host}` is the service address"),
                format!(
                    "the service address (line {line}) moves between servers on failover; \
                     give the host an address of its own"
                ),
            ),
            (Some(first), None) => (
                format!("service address {address} is an address of host `{first}`"),
                format!("the service address must not be any host's own address (line {line})"),
            ),
            (Some(first), Some(_)) => (
                format!("address {address} is already used by host `{first}`"),
                format!("see line {line}; every address in a testbed must be unique"),
            ),
            // Only one service address exists.
            (None, None) => continue,
        };
        r.error(span, message, hint);
    }
}

/// The service address lies in exactly one network, as a usable address of it. Returns that
/// network.
fn check_service_address<'n>(
    r: &mut Reporter,
    raw: &RawTopology,
    service: Ipv4Addr,
    networks: &'n [Network],
) -> Option<&'n Network> {
    let span = raw.service_address.span();
    let holding: Vec<usize> = (0..networks.len())
        .filter(|&i| networks[i].subnet.contains(&service))
        .collect();
    match holding.as_slice() {
        [i] => {
            if let Some((message, hint)) = misplaced(service, &networks[*i], "service address") {
                r.error(span, message, hint);
            }
            networks.get(*i)
        }
        [] => {
            let subnets: Vec<String> = networks
                .iter()
                .map(|n| format!("`{}` is {}", n.name, n.subnet))
                .collect();
            r.error(
                span,
                format!("service address {service} is in none of the networks"),
                format!(
                    "use an address of the network clients reach the servers on: {}",
                    subnets.join(", ")
                ),
            );
            None
        }
        // Stage 2 rejects overlapping subnets, so this cannot happen; reported all the same.
        _ => {
            r.error(
                span,
                format!("service address {service} is in more than one network"),
                "subnets must not overlap",
            );
            None
        }
    }
}

/// The roles the mode needs, as many hosts of each as it takes (its rules in the registry),
/// and the host the mode puts the service address on, on the network of that address.
fn check_roles(
    r: &mut Reporter,
    raw: &RawTopology,
    hosts: &[HostDraft],
    mode: Mode,
    service_network: Option<&Network>,
    service: Ipv4Addr,
) {
    let first_host = hosts.first().map_or(0..0, |h| h.raw.span());
    let mode_span = raw.run.get_ref().mode.span();
    let behaviour = mode.behaviour();
    for rule in behaviour.roles() {
        let role = rule.role;
        let holders: Vec<(&HostDraft, Range<usize>)> = hosts
            .iter()
            .filter_map(|h| h.has(role).map(|s| (h, s)))
            .collect();
        // A role every mode needs is the testbed's, not this mode's.
        let every_mode_needs = Mode::all().all(|m| {
            m.behaviour()
                .roles()
                .iter()
                .any(|x| x.role == role && x.count != RoleCount::Optional)
        });
        match (rule.count, holders.as_slice()) {
            (RoleCount::Optional, _) => {}
            (_, []) if every_mode_needs => r.error(
                first_host.clone(),
                format!("no host has role `{role}`"),
                match role {
                    Role::Primary => format!(
                        "give exactly one host the role `{role}`, e.g. `roles = [\"{role}\"]`"
                    ),
                    _ => format!(
                        "give at least one host the role `{role}`, which {}",
                        role_purpose(role)
                    ),
                },
            ),
            (count, []) => r.error(
                mode_span.clone(),
                format!(
                    "mode `{mode}` needs {} with role `{role}`, and there is none",
                    if count == RoleCount::One {
                        "exactly one host"
                    } else {
                        "at least one host"
                    }
                ),
                format!("add `{role}` to the roles of a host other than the primary"),
            ),
            (RoleCount::One, [(first, first_span), rest @ ..]) => {
                let line = r.line_of(first_span.clone());
                let several: Vec<String> = Mode::all()
                    .filter(|m| m.behaviour().runnable().is_ok())
                    .filter(|m| {
                        m.behaviour()
                            .roles()
                            .iter()
                            .any(|x| x.role == role && x.count != RoleCount::One)
                    })
                    .map(|m| format!("`{m}`"))
                    .collect();
                for (host, span) in rest {
                    let (message, hint) = if several.is_empty() {
                        (
                            format!("host `{}` is a second host with role `{role}`", host.name),
                            format!(
                                "host `{}` (line {line}) is the {role}; a testbed has exactly one",
                                first.name
                            ),
                        )
                    } else {
                        (
                            format!(
                                "host `{}` is a second {role}, but mode `{mode}` takes exactly one",
                                host.name
                            ),
                            format!(
                                "host `{}` (line {line}) is the {role}; use mode {} for several \
                                 {role}s",
                                first.name,
                                several.join(" or ")
                            ),
                        )
                    };
                    r.error(span.clone(), message, hint);
                }
            }
            (RoleCount::AtLeastOne, _) => {}
        }
    }

    // The service address goes on the host(s) of the mode's role for it.
    let holder_role = behaviour.service_address_role();
    let holders: Vec<&HostDraft> = hosts
        .iter()
        .filter(|h| h.has(holder_role).is_some())
        .collect();
    if let (Some(net), [holder]) = (service_network, holders.as_slice()) {
        let net_name = &net.name;
        if !holder
            .addresses
            .iter()
            .any(|(n, _)| n.get_ref() == net_name)
        {
            r.error(
                holder.raw.get_ref().addresses.span(),
                format!(
                    "the {holder_role} `{}` has no address on network `{net_name}`",
                    holder.name
                ),
                format!(
                    "the service address {service} is on network `{net_name}` ({}); \
                     add `{net_name} = \"...\"` to the {holder_role}'s addresses",
                    net.subnet
                ),
            );
        }
    }
}

/// The hosts of the roles the mode needs on the service network
/// ([`crate::modes::FailoverMode::service_network_roles`]) each have an address there.
fn check_service_network_roles(
    r: &mut Reporter,
    hosts: &[HostDraft],
    mode: Mode,
    service_network: Option<&Network>,
) {
    let Some(net) = service_network else {
        return;
    };
    for &role in mode.behaviour().service_network_roles() {
        for h in hosts.iter().filter(|h| h.has(role).is_some()) {
            if h.addresses.iter().any(|(n, _)| n.get_ref() == &net.name) {
                continue;
            }
            r.error(
                h.raw.get_ref().addresses.span(),
                format!(
                    "the {role} `{}` has no address on network `{}`",
                    h.name, net.name
                ),
                format!(
                    "under mode `{mode}` every {role} shares the service address's network \
                     (`{}`, {}): {}; add `{} = \"...\"` to its addresses",
                    net.name,
                    net.subnet,
                    role_purpose(role),
                    net.name
                ),
            );
        }
    }
}

/// What a role is for, in a hint.
fn role_purpose(role: Role) -> &'static str {
    match role {
        Role::Client => "runs the workload against the service address",
        Role::Primary | Role::Backup => "serves the workload",
        Role::Logger => "logs the traffic of the service",
        Role::Lb => "spreads the clients' packets over the proxies",
        Role::Proxy => "splices client connections to the servers",
    }
}
