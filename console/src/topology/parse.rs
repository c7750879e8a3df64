//! The topology file as written: serde structs mirroring the TOML keys (DESIGN §8), before any
//! check beyond TOML syntax and value types.
//!
//! Every table denies unknown keys, so a typo is an error naming the key rather than a setting
//! silently ignored. Values that a later check may complain about are `Spanned`, so the
//! complaint can point at them. Enumerations, addresses and subnets are kept as strings here:
//! `validate.rs` parses them itself, to give messages and hints in the file's own words rather
//! than serde's.
//!
//! Field order matters: serde lists the expected keys in declaration order in its "unknown
//! field" message, which becomes the hint.

use super::diagnostic::{Diagnostic, missing_field};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopology {
    pub name: Spanned<String>,
    /// Optional: `local` is the default provider (DESIGN §4).
    pub provider: Option<Spanned<String>>,
    pub service_address: Spanned<String>,
    pub known_hosts: Option<Spanned<String>>,
    pub run: Spanned<RawRun>,
    /// `None` when absent; `Some(empty)` for `networks = []`, so that error can point at it.
    pub networks: Option<Spanned<Vec<Spanned<RawNetwork>>>>,
    pub hosts: Option<Spanned<Vec<Spanned<RawHost>>>>,
}

/// A `[run]` table: mode, its parameters and the workload. Experiment files use the same
/// table, so this and `validate::run_settings` are written to be reused by their parser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRun {
    pub mode: Spanned<String>,
    /// Integers are read as `i64` (what TOML has) so that range errors are ours, with the
    /// range in the hint, instead of serde's "expected u16".
    pub heartbeat_ms: Option<Spanned<i64>>,
    pub missed_heartbeats: Option<Spanned<i64>>,
    pub trigger: Option<Spanned<String>>,
    pub workload: Option<Spanned<String>>,
    /// An integer or a string with a unit; checked in `validate.rs`.
    pub size: Option<Spanned<toml::Value>>,
    pub clients: Option<Spanned<i64>>,
}

/// One `[[networks]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub name: Spanned<String>,
    pub subnet: Spanned<String>,
    pub hub: Option<Spanned<bool>>,
    pub rate: Option<Spanned<String>>,
    pub delay: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub loss: Option<Spanned<String>>,
}

/// A host's `links = { <network> = { ... } }` entry: the same keys as a network's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLink {
    pub rate: Option<Spanned<String>>,
    pub delay: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub loss: Option<Spanned<String>>,
}

/// One `[[hosts]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    pub name: Spanned<String>,
    pub roles: Spanned<Vec<Spanned<String>>>,
    /// Network name → address. A map sorts its keys; [`RawHost::addresses_in_file_order`]
    /// restores the order they were written in, for errors in file order.
    pub addresses: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub ssh_address: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub user: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub power_command: Option<Spanned<String>>,
    pub power_on_command: Option<Spanned<String>>,
    /// Network name → that one link's settings, over the network's.
    pub links: Option<Spanned<BTreeMap<Spanned<String>, Spanned<RawLink>>>>,
}

impl RawHost {
    pub fn addresses_in_file_order(&self) -> Vec<(&Spanned<String>, &Spanned<String>)> {
        let mut entries: Vec<_> = self.addresses.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        entries
    }
}

/// Reads the text into the raw structs. The error is toml's: syntax, unknown key, wrong type or
/// missing key, with the span toml found.
pub(crate) fn from_str(text: &str) -> Result<RawTopology, toml::de::Error> {
    toml::from_str(text)
}

/// Turns a toml error from [`from_str`] into a diagnostic, with hints for the missing keys of a
/// topology that say what to write (the generic one only says "add `x = ...`").
pub(crate) fn diagnose(path: &Path, text: &str, error: &toml::de::Error) -> Diagnostic {
    let mut d = Diagnostic::from_toml(path, text, error);
    let Some(field) = missing_field(error) else {
        return d;
    };
    // The span of a missing key is the table lacking it: `[[hosts]]`, `[run]`, or the start
    // of the file for the top level.
    let table = error
        .span()
        .and_then(|s| text.get(s))
        .unwrap_or("")
        .trim_start_matches([' ', '\t']);
    let hint = match field {
        "run" => {
            d.message = "missing table `[run]`".to_string();
            format!(
                "add a `[run]` table with at least `mode = ...`, one of {}",
                modes_list()
            )
        }
        "mode" => format!("add `mode = ...`, one of {}", modes_list()),
        "name" => {
            let max = if table.starts_with("[[hosts") {
                "15"
            } else if table.starts_with("[[networks") {
                "12"
            } else if table.is_empty() {
                "20"
            } else {
                "a few"
            };
            format!(
                "add `name = \"...\"`: 1 to {max} characters of `a-z`, `0-9` and `-`, \
                 starting with a letter"
            )
        }
        "service_address" => {
            "add `service_address = \"...\"`, the IPv4 address clients connect to (the VIP)"
                .to_string()
        }
        "subnet" => "add `subnet = \"...\"`, an IPv4 network in CIDR form such as `10.10.0.0/24`"
            .to_string(),
        "roles" => format!("add `roles = [...]` with some of {ROLES}"),
        "addresses" => "add `addresses = { <network> = \"<address>\" }`, \
                        e.g. `addresses = { service = \"10.10.0.5\" }`"
            .to_string(),
        _ => return d,
    };
    d.hint = hint;
    d
}

/// Every mode's name, from the registry: "`none`, `app-migration`, ...".
fn modes_list() -> String {
    crate::topology::Mode::all()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
const ROLES: &str = "`primary`, `backup`, `logger`, `lb`, `proxy`, `client`";

/// Why a path from the file could not be made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathError {
    /// `~` used but `$HOME` is not set (or not absolute).
    NoHome,
    /// `~user/...`: only the current user's home is supported.
    OtherUsersHome,
    /// Empty string.
    Empty,
    /// The topology file's folder is relative and the current directory is unknown.
    NoCurrentDir,
}

/// Resolves a path written in the topology file (an ssh `key`, `known_hosts`): `~` and `~/...`
/// expand to `home`; a relative path is taken relative to the folder of the topology file, so
/// a file works the same from whatever directory halab is started in; the result is absolute
/// (the model promises absolute paths). Lexical only: nothing is read, and `..` is kept as
/// written since resolving it would need the file system (symlinks).
pub(crate) fn resolve_path(
    written: &str,
    topology_file: &Path,
    home: Option<&Path>,
) -> Result<PathBuf, PathError> {
    let path = expand_path(written, topology_file, home)?;
    let path = if path.is_absolute() {
        path
    } else {
        std::path::absolute(&path).map_err(|_| PathError::NoCurrentDir)?
    };
    // Drop `.` components (`./id_ed25519`), which `absolute` keeps on some platforms.
    Ok(path
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect())
}

/// The lexical part of [`resolve_path`]: `~` expanded, a relative path joined to the folder of
/// `file` (the file it was written in), but not made absolute, so a path relative to the
/// current directory stays relative (as the experiment parser wants it, to name the file in
/// messages as the user would). Never `Ok` with an empty path.
pub(crate) fn expand_path(
    written: &str,
    file: &Path,
    home: Option<&Path>,
) -> Result<PathBuf, PathError> {
    if written.is_empty() {
        return Err(PathError::Empty);
    }
    let path = if written == "~" || written.starts_with("~/") {
        let home = home.filter(|h| h.is_absolute()).ok_or(PathError::NoHome)?;
        let rest = written.strip_prefix('~').unwrap_or(written);
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            home.to_path_buf()
        } else {
            home.join(rest)
        }
    } else if written.starts_with('~') {
        return Err(PathError::OtherUsersHome);
    } else {
        let written = Path::new(written);
        if written.is_absolute() {
            written.to_path_buf()
        } else {
            let folder = file.parent().unwrap_or(Path::new(""));
            folder.join(written)
        }
    };
    Ok(path)
}

/// `$HOME`, as `~` expands to.
pub(crate) fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_expands_to_home() {
        let home = Path::new("/home/u");
        let file = Path::new("/etc/halab/t.toml");
        assert_eq!(
            resolve_path("~/.ssh/id", file, Some(home)).unwrap(),
            PathBuf::from("/home/u/.ssh/id")
        );
        assert_eq!(
            resolve_path("~", file, Some(home)).unwrap(),
            PathBuf::from("/home/u")
        );
        assert_eq!(
            resolve_path("~/x", file, None),
            Err(PathError::NoHome),
            "no HOME"
        );
        assert_eq!(
            resolve_path("~bob/x", file, Some(home)),
            Err(PathError::OtherUsersHome)
        );
        assert_eq!(resolve_path("", file, Some(home)), Err(PathError::Empty));
    }

    #[test]
    fn relative_paths_are_relative_to_the_topology_folder() {
        let file = Path::new("/etc/halab/t.toml");
        assert_eq!(
            resolve_path("keys/id", file, None).unwrap(),
            PathBuf::from("/etc/halab/keys/id")
        );
        assert_eq!(
            resolve_path("./id", file, None).unwrap(),
            PathBuf::from("/etc/halab/id")
        );
        assert_eq!(
            resolve_path("/abs/id", file, None).unwrap(),
            PathBuf::from("/abs/id")
        );
        // A relative topology path is made absolute against the current directory.
        let got = resolve_path("id", Path::new("topologies/t.toml"), None).unwrap();
        assert!(got.is_absolute());
        assert!(got.ends_with("topologies/id"));
        let got = resolve_path("id", Path::new("t.toml"), None).unwrap();
        assert!(got.is_absolute() && got.ends_with("id"));
    }

    #[test]
    fn addresses_come_back_in_file_order() {
        let text = "name = 'a'\nservice_address = '1'\n[run]\nmode = 'none'\n[[hosts]]\n\
                    name = 'h'\nroles = []\naddresses = { zz = '1', aa = '2', mm = '3' }\n";
        let raw = from_str(text).unwrap();
        let hosts = raw.hosts.unwrap().into_inner();
        let host = hosts[0].get_ref();
        let keys: Vec<_> = host
            .addresses_in_file_order()
            .iter()
            .map(|(k, _)| k.get_ref().clone())
            .collect();
        assert_eq!(keys, ["zz", "aa", "mm"]);
    }
}
