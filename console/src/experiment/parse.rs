//! The experiment file as written: serde structs mirroring the TOML keys (DESIGN §8), before
//! any check beyond TOML syntax.
//!
//! As for topologies (`topology/parse.rs`), every table denies unknown keys and values are
//! `Spanned` so a later check can point at them. Values whose type depends on the key or is a
//! choice (durations, `at`, `[run]` and `[matrix]` values) are kept as `toml::Value`:
//! `validate.rs` checks them itself, with the same words for a `[run]` value and a `[matrix]`
//! element. Field order is the order serde lists expected keys in its "unknown field" message.

use crate::topology::diagnostic::{Diagnostic, missing_field};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// `[matrix]`: `[run]` key → list of values. Which keys are allowed is checked in
/// `validate.rs`, so that a wrong one gets a message about the matrix.
pub(crate) type RawMatrix = BTreeMap<Spanned<String>, RawList>;

/// A `[matrix]` list, each element with its span.
pub(crate) type RawList = Spanned<Vec<Spanned<toml::Value>>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExperiment {
    pub name: Option<Spanned<String>>,
    pub topology: Spanned<String>,
    pub repetitions: Option<Spanned<i64>>,
    pub run_timeout: Option<Spanned<toml::Value>>,
    pub run: Option<Spanned<RawRun>>,
    pub faults: Option<Spanned<Vec<Spanned<RawFault>>>>,
    pub matrix: Option<Spanned<RawMatrix>>,
    /// `[links]`: a link path (`<network>` or `<host>.<network>`) → its settings.
    pub links: Option<Spanned<BTreeMap<Spanned<String>, Spanned<crate::topology::parse::RawLink>>>>,
}

impl RawExperiment {
    /// The `[matrix]` entries in the order they were written (a map sorts its keys).
    pub fn matrix_in_file_order(&self) -> Vec<(&Spanned<String>, &RawList)> {
        let mut entries: Vec<_> = match &self.matrix {
            Some(m) => m.get_ref().iter().collect(),
            None => Vec::new(),
        };
        entries.sort_by_key(|(key, _)| key.span().start);
        entries
    }
}

/// An experiment's `[run]`: the keys of a topology's `[run]`, each optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRun {
    pub mode: Option<Spanned<toml::Value>>,
    pub heartbeat_ms: Option<Spanned<toml::Value>>,
    pub missed_heartbeats: Option<Spanned<toml::Value>>,
    pub trigger: Option<Spanned<toml::Value>>,
    pub workload: Option<Spanned<toml::Value>>,
    pub size: Option<Spanned<toml::Value>>,
    pub clients: Option<Spanned<toml::Value>>,
}

impl RawRun {
    /// (key, value) of the keys present, in the order of `RUN_KEYS`.
    pub fn entries(&self) -> Vec<(&'static str, &Spanned<toml::Value>)> {
        [
            ("mode", &self.mode),
            ("heartbeat_ms", &self.heartbeat_ms),
            ("missed_heartbeats", &self.missed_heartbeats),
            ("trigger", &self.trigger),
            ("workload", &self.workload),
            ("size", &self.size),
            ("clients", &self.clients),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect()
    }
}

/// One `[[faults]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFault {
    pub at: Spanned<toml::Value>,
    pub kind: Spanned<String>,
    pub target: Spanned<String>,
    pub duration: Option<Spanned<toml::Value>>,
    pub interface: Option<Spanned<String>>,
    pub percent: Option<Spanned<toml::Value>>,
    pub direction: Option<Spanned<String>>,
    pub peer: Option<Spanned<String>>,
    pub delay_ms: Option<Spanned<i64>>,
}

pub(crate) fn from_str(text: &str) -> Result<RawExperiment, toml::de::Error> {
    toml::from_str(text)
}

/// Turns a toml error from [`from_str`] into a diagnostic, with hints for the missing keys of
/// an experiment and for a `[matrix]` value that is not a list.
pub(crate) fn diagnose(path: &Path, text: &str, error: &toml::de::Error) -> Diagnostic {
    let mut d = Diagnostic::from_toml(path, text, error);
    if d.hint == "expected an array"
        && let Some(span) = error.span()
        && in_matrix_table(text, span.start)
    {
        d.hint = "a `[matrix]` key takes a list of the values to try, \
                  e.g. `mode = [\"none\", \"st-tcp\"]`"
            .to_string();
        return d;
    }
    let Some(field) = missing_field(error) else {
        return d;
    };
    d.hint = match field {
        "topology" => "add `topology = \"...\"`, the topology file to run on, relative to this \
                       file's folder, e.g. `topology = \"../topologies/two-server.toml\"`"
            .to_string(),
        "at" => "add `at = ...`: a fraction of the failure-free run such as `\"40%\"`, or a time \
                 after the run starts such as `\"2.5s\"`"
            .to_string(),
        "kind" => format!("add `kind = ...`, one of {KINDS}"),
        "target" => "add `target = \"...\"`: a host of the topology, or a role such as \
                     `\"primary\"`"
            .to_string(),
        _ => return d,
    };
    d
}

pub(crate) const KINDS: &str = "`process-kill`, `process-hang`, `process-crash`, `nic-down`, \
                                `loss`, `partition`, `delay`, `power-off`, `power-on`";

/// Whether byte `at` of `text` lies under a `[matrix]` header (the last table header before it).
fn in_matrix_table(text: &str, at: usize) -> bool {
    let before = text.get(..at).unwrap_or(text);
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .is_some_and(|header| {
            header
                .split('#')
                .next()
                .is_some_and(|h| h.trim() == "[matrix]")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_entries_come_back_in_file_order() {
        let text = "topology = 't'\n[matrix]\nworkload = ['bulk']\nmode = ['none']\n\
                    clients = [1]\n";
        let raw = from_str(text).unwrap();
        let keys: Vec<_> = raw
            .matrix_in_file_order()
            .iter()
            .map(|(k, _)| k.get_ref().clone())
            .collect();
        assert_eq!(keys, ["workload", "mode", "clients"]);
    }

    #[test]
    fn a_matrix_value_that_is_no_list_gets_a_matrix_hint() {
        let text = "topology = 't'\n[matrix]\nmode = 'none'\n";
        let err = from_str(text).unwrap_err();
        let d = diagnose(Path::new("e.toml"), text, &err);
        assert!(d.hint.contains("`[matrix]` key takes a list"), "{d}");
        assert_eq!(d.line(), Some(3));
    }
}
