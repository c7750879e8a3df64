//! Checks a parsed experiment file, loads its topology, and builds the model (`model.rs`),
//! whose invariants are established here.
//!
//! Three stages, each only when the previous one found nothing (as for topologies, so one
//! mistake is not reported as a different, earlier one):
//! 1. each value of the experiment file on its own: name, paths, numbers, durations, `[run]`
//!    values, fault kinds and their parameters, `[matrix]` keys and values;
//! 2. the topology file: loaded and validated; its errors are reported as they are;
//! 3. the experiment against the topology: fault targets, interfaces and peers, and every
//!    matrix cell as a run (the combinations a topology's `[run]` forbids, the roles its mode
//!    needs).
//!
//! Within a stage every error is collected and the first in the file is reported.

use super::duration;
use super::error::ExperimentError;
use super::links::{LinkPath, LinkSetting, split_matrix_key};
use super::model::{
    Direction, Experiment, FaultAt, FaultKind, FaultSpec, FaultTarget, Layered, MATRIX_KEYS,
    MatrixValue, Origin, RUN_KEYS, RunOverrides, has_heartbeat, has_size, has_trigger, odometer,
};
use super::parse::{RawExperiment, RawFault};
use crate::modes::RoleCount;
use crate::topology::LinkShape;
use crate::topology::diagnostic::{Location, Reporter};
use crate::topology::parse::{PathError, expand_path};
use crate::topology::validate::{
    TRIGGERS, WORKLOADS, check_name, in_range, list, list_all, modes, one_of, parse_size,
    valid_name,
};
use crate::topology::{self, Mode, Topology};
use halab_protocol::Role;
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

const NAME_MAX: usize = 40;
/// Most runs one experiment may expand to (matrix cells × repetitions).
pub(crate) const MAX_RUNS: usize = 10_000;
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(300);
const AT_HINT: &str = "write a fraction of the failure-free run, such as `\"40%\"` or `0.4`, \
                       or a time after the run starts, such as `\"2.5s\"`, `\"500ms\"` or an \
                       integer number of milliseconds";
const DIRECTIONS: [(&str, Direction); 3] = [
    ("in", Direction::In),
    ("out", Direction::Out),
    ("both", Direction::Both),
];

/// Checks `raw`, read from `text` (the contents of `path`), loads the topology it names, and
/// builds the model. `home` is what `~` expands to.
pub(crate) fn experiment(
    raw: &RawExperiment,
    text: &str,
    path: &Path,
    home: Option<&Path>,
) -> Result<Experiment, ExperimentError> {
    let mut r = Reporter::new(path, text);

    // Stage 1: each value on its own.
    let name = experiment_name(&mut r, raw, path);
    let topology_path = topology_path(&mut r, &raw.topology, path, home);
    let repetitions = match &raw.repetitions {
        Some(n) => in_range::<u32>(
            &mut r,
            "repetitions",
            n,
            1,
            1000,
            "runs of each matrix cell",
        ),
        None => Some(1),
    };
    let run_timeout = match &raw.run_timeout {
        Some(v) => positive_duration(&mut r, "run_timeout", v),
        None => Some(DEFAULT_RUN_TIMEOUT),
    };
    let mut run_values: Vec<(MatrixValue, Range<usize>)> = Vec::new();
    if let Some(run) = &raw.run {
        for (key, value) in run.get_ref().entries() {
            if let Some(v) = run_value(&mut r, key, value) {
                run_values.push((v, value.span()));
            }
        }
    }
    let matrix = matrix(&mut r, raw, text);
    let fixed = fixed_links(&mut r, raw);
    let faults: Vec<Option<FaultDraft>> = match &raw.faults {
        Some(f) => f
            .get_ref()
            .iter()
            .map(|f| fault(&mut r, f, run_timeout, raw.run_timeout.is_some()))
            .collect(),
        None => Vec::new(),
    };
    if let (Some(matrix), Some(repetitions)) = (&matrix, repetitions) {
        check_run_count(&mut r, raw, matrix, repetitions);
    }
    r.finish()?;

    let stage1 = || {
        let faults: Option<Vec<FaultDraft>> = faults.into_iter().collect();
        Some((
            name?,
            topology_path?,
            repetitions?,
            run_timeout?,
            matrix?,
            faults?,
            fixed?,
        ))
    };
    let Some((name, topology_path, repetitions, run_timeout, matrix, faults, fixed)) = stage1()
    else {
        return Err(r.internal("a value").into());
    };

    // Stage 2: the topology.
    let topology = match topology::load(&topology_path) {
        Ok(t) => t,
        Err(e) => {
            let Some(io) = e.io_error() else {
                return Err(ExperimentError::Topology(e));
            };
            let written = raw.topology.get_ref();
            let hint = match io.kind() {
                std::io::ErrorKind::NotFound
                    if Path::new(written).is_relative() && !written.starts_with('~') =>
                {
                    let folder = path
                        .parent()
                        .map_or(String::new(), |p| p.display().to_string());
                    let folder = if folder.is_empty() {
                        ".".to_string()
                    } else {
                        folder
                    };
                    format!(
                        "a relative path is taken from the folder of this file (`{folder}`); \
                         the shipped topologies are in `topologies/`, so from `experiments/` \
                         write `\"../topologies/two-server.toml\"`"
                    )
                }
                std::io::ErrorKind::NotFound => {
                    "check the path; the shipped topologies are in `topologies/`".to_string()
                }
                std::io::ErrorKind::InvalidData => "a topology file must be UTF-8 text".into(),
                std::io::ErrorKind::PermissionDenied => "check the file's permissions".into(),
                _ => "check that the path names a readable topology file".into(),
            };
            r.error(
                raw.topology.span(),
                format!(
                    "cannot read the topology file `{}`: {io}",
                    topology_path.display()
                ),
                hint,
            );
            r.finish()?;
            return Err(r.internal("the topology path").into());
        }
    };

    // Stage 3: against the topology.
    let faults: Vec<Option<FaultSpec>> = faults
        .into_iter()
        .map(|f| fault_on(&mut r, f, &topology))
        .collect();
    check_cells(&mut r, text, &topology, &run_values, &matrix);
    let links = links_on(&mut r, raw, &topology, fixed, &matrix);
    r.finish()?;
    let Some(links) = links else {
        return Err(r.internal("a link setting").into());
    };
    let Some(faults) = faults.into_iter().collect::<Option<Vec<FaultSpec>>>() else {
        return Err(r.internal("a fault").into());
    };

    let mut run = RunOverrides::default();
    let mut base = Layered::new(&topology.run);
    for (value, span) in &run_values {
        run.set(*value);
        base.set(*value, Origin::Run(span.clone()));
    }
    Ok(Experiment {
        source: path.to_path_buf(),
        name,
        base: base.settings(),
        topology,
        repetitions,
        run_timeout,
        run,
        faults,
        matrix: matrix
            .into_iter()
            .map(|e| (e.key, e.values.into_iter().map(|(v, _)| v).collect()))
            .collect(),
        links,
    })
}

fn experiment_name(r: &mut Reporter, raw: &RawExperiment, path: &Path) -> Option<String> {
    if let Some(name) = &raw.name {
        return check_name(r, "experiment", name, NAME_MAX);
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if valid_name(&stem, NAME_MAX) {
        return Some(stem);
    }
    r.error(
        0..0,
        format!("the experiment has no `name`, and its file name `{stem}` is not a valid one"),
        format!(
            "add `name = \"...\"`: 1 to {NAME_MAX} characters of `a-z`, `0-9` and `-`, \
             starting with a letter (without it, the file name without `.toml` is the name)"
        ),
    );
    None
}

/// The `topology` value, relative to the folder of the experiment file (kept relative when
/// that is, so messages name the file as the user would).
fn topology_path(
    r: &mut Reporter,
    value: &Spanned<String>,
    path: &Path,
    home: Option<&Path>,
) -> Option<PathBuf> {
    match expand_path(value.get_ref(), path, home) {
        Ok(p) => Some(p),
        Err(e) => {
            let (message, hint) = match e {
                PathError::NoHome => (
                    "cannot expand `~`: HOME is not set",
                    "write the path relative to this file's folder, or an absolute path",
                ),
                PathError::OtherUsersHome => (
                    "`~user` paths are not supported",
                    "write `~/...` for your own home folder, or a relative or absolute path",
                ),
                PathError::Empty | PathError::NoCurrentDir => (
                    "empty topology path",
                    "give the topology file to run on, relative to this file's folder, \
                     e.g. `\"../topologies/two-server.toml\"`",
                ),
            };
            r.error(value.span(), message, hint);
            None
        }
    }
}

/// A duration of more than 0 (and at most 24 h).
fn positive_duration(
    r: &mut Reporter,
    key: &str,
    value: &Spanned<toml::Value>,
) -> Option<Duration> {
    match duration::parse(key, value.get_ref()) {
        Ok(d) if d.is_zero() => {
            r.error(
                value.span(),
                format!("`{key}` must be more than 0"),
                duration::HINT,
            );
            None
        }
        Ok(d) => Some(d),
        Err((message, hint)) => {
            r.error(value.span(), message, hint);
            None
        }
    }
}

/// A value of `[run]` key `key`, from the experiment's `[run]` or a `[matrix]` list.
fn run_value(r: &mut Reporter, key: &str, value: &Spanned<toml::Value>) -> Option<MatrixValue> {
    match key {
        "mode" => word(r, key, "mode", value, &modes()).map(MatrixValue::Mode),
        "trigger" => word(r, key, "trigger", value, &TRIGGERS).map(MatrixValue::Trigger),
        "workload" => word(r, key, "workload", value, &WORKLOADS).map(MatrixValue::Workload),
        "heartbeat_ms" => integer(r, key, value, 60_000, "milliseconds between heartbeats")
            .map(MatrixValue::HeartbeatMs),
        "missed_heartbeats" => integer(
            r,
            key,
            value,
            100,
            "heartbeats missed before a peer counts as dead",
        )
        .map(MatrixValue::MissedHeartbeats),
        "faults" => match value.get_ref() {
            toml::Value::Boolean(b) => Some(MatrixValue::Faults(*b)),
            other => {
                r.error(
                    value.span(),
                    format!("invalid type: {} for `faults`", other.type_str()),
                    "expected `true` (the run has the `[[faults]]`) or `false` (it has none), \
                     e.g. `faults = [false, true]`",
                );
                None
            }
        },
        "clients" => {
            integer(r, key, value, 1000, "concurrent client connections").map(MatrixValue::Clients)
        }
        "size" => match parse_size(value.get_ref()) {
            Ok(size) => Some(MatrixValue::Size(size)),
            Err((message, hint)) => {
                r.error(value.span(), message, hint);
                None
            }
        },
        _ => {
            r.error(
                value.span(),
                format!("internal error: `{key}` is not a `[run]` key"),
                "please report this together with the file",
            );
            None
        }
    }
}

fn word<T: Copy>(
    r: &mut Reporter,
    key: &str,
    what: &str,
    value: &Spanned<toml::Value>,
    options: &[(&str, T)],
) -> Option<T> {
    match value.get_ref() {
        toml::Value::String(s) => one_of(r, what, &Spanned::new(value.span(), s.clone()), options),
        other => {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            r.error(
                value.span(),
                format!("invalid type: {} for `{key}`", other.type_str()),
                format!("expected a string, {}", list(&names)),
            );
            None
        }
    }
}

/// An integer from 1 to `max`.
fn integer<T: TryFrom<i64>>(
    r: &mut Reporter,
    key: &str,
    value: &Spanned<toml::Value>,
    max: i64,
    what: &str,
) -> Option<T> {
    match value.get_ref() {
        toml::Value::Integer(i) => in_range(r, key, &Spanned::new(value.span(), *i), 1, max, what),
        other => {
            r.error(
                value.span(),
                format!("invalid type: {} for `{key}`", other.type_str()),
                format!("expected an integer from 1 to {max} ({what})"),
            );
            None
        }
    }
}

/// A `[matrix]` entry that passed stage 1.
struct MatrixEntry {
    key: String,
    key_span: Range<usize>,
    /// Each value with the span of its element.
    values: Vec<(MatrixValue, Range<usize>)>,
}

/// The `[matrix]` entries in file order; `None` when any is wrong.
fn matrix(r: &mut Reporter, raw: &RawExperiment, text: &str) -> Option<Vec<MatrixEntry>> {
    let mut ok = true;
    let mut entries = Vec::new();
    for (key, values) in raw.matrix_in_file_order() {
        let k = key.get_ref().as_str();
        let link = split_matrix_key(k);
        if !MATRIX_KEYS.contains(&k) && link.is_none() {
            r.error(
                key.span(),
                format!("`{k}` is not a `[run]` key nor a link setting"),
                format!(
                    "a `[matrix]` key is a `[run]` key with a list of the values to try: {}; \
                     or `faults = [false, true]` to run each cell without and with the \
                     `[[faults]]`; or a link setting, `\"<network>.<setting>\"` or \
                     `\"<host>.<network>.<setting>\"` with setting rate, delay, jitter or loss \
                     (quoted: a bare dotted key is a table)",
                    list(&RUN_KEYS)
                ),
            );
            ok = false;
            continue;
        }
        if k == "faults" && raw.faults.as_ref().is_none_or(|f| f.get_ref().is_empty()) {
            r.error(
                key.span(),
                "`faults` in `[matrix]` without any `[[faults]]`".to_string(),
                "add the `[[faults]]` the cells with `true` should have, or remove the key",
            );
            ok = false;
            continue;
        }
        if values.get_ref().is_empty() {
            r.error(
                values.span(),
                format!("empty list for `{k}` in `[matrix]`"),
                "give at least one value to try, or remove the key \
                 (the `[run]` or topology value applies then)",
            );
            ok = false;
            continue;
        }
        let mut checked: Vec<(MatrixValue, Range<usize>)> = Vec::new();
        for element in values.get_ref() {
            let value = match link {
                Some((_, setting)) => link_value(r, k, setting, element),
                None => run_value(r, k, element),
            };
            let Some(value) = value else {
                ok = false;
                continue;
            };
            if let Some((_, first)) = checked.iter().find(|(v, _)| *v == value) {
                let at = Location::of_span(text, first.clone());
                r.error(
                    element.span(),
                    format!("`{k}` value `{value}` is listed twice"),
                    format!(
                        "the same value is already in the list (line {}, column {}); \
                         give each value once",
                        at.line, at.column
                    ),
                );
                ok = false;
                continue;
            }
            checked.push((value, element.span()));
        }
        entries.push(MatrixEntry {
            key: k.to_string(),
            key_span: key.span(),
            values: checked,
        });
    }
    ok.then_some(entries)
}

/// A value of a link setting in a `[matrix]` list: a string with its unit.
fn link_value(
    r: &mut Reporter,
    key: &str,
    setting: LinkSetting,
    value: &Spanned<toml::Value>,
) -> Option<MatrixValue> {
    let toml::Value::String(text) = value.get_ref() else {
        r.error(
            value.span(),
            format!("invalid type: {} for `{key}`", value.get_ref().type_str()),
            format!(
                "expected a string with a unit, e.g. `{}`",
                match setting {
                    LinkSetting::Rate => "\"100Mbit\"",
                    LinkSetting::Delay | LinkSetting::Jitter => "\"20ms\"",
                    LinkSetting::Loss => "\"0.5%\"",
                }
            ),
        );
        return None;
    };
    match setting.parse(text) {
        Ok(amount) if setting == LinkSetting::Rate && amount == 0 => {
            r.error(
                value.span(),
                "a rate of 0 carries nothing",
                "give a positive rate such as `\"10Mbit\"`",
            );
            None
        }
        Ok(amount) => Some(MatrixValue::Link(setting, amount)),
        Err((message, hint)) => {
            r.error(value.span(), message, hint);
            None
        }
    }
}

/// `[links]` entries with their settings checked (the paths wait for the topology).
fn fixed_links(r: &mut Reporter, raw: &RawExperiment) -> Option<Vec<(Spanned<String>, LinkShape)>> {
    let Some(links) = &raw.links else {
        return Some(Vec::new());
    };
    let mut entries: Vec<_> = links.get_ref().iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::new();
    let mut ok = true;
    for (path, l) in entries {
        let l = l.get_ref();
        match crate::topology::validate::link_shape(r, [&l.rate, &l.delay, &l.jitter, &l.loss]) {
            Some(shape) => out.push((path.clone(), shape)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Stage 3 of the link settings: each path names a link of the topology, the provider applies
/// them, and no cell gives a link more jitter than delay.
fn links_on(
    r: &mut Reporter,
    raw: &RawExperiment,
    topology: &Topology,
    fixed: Vec<(Spanned<String>, LinkShape)>,
    matrix: &[MatrixEntry],
) -> Option<Vec<(LinkPath, LinkShape)>> {
    let mut ok = true;
    let mut paths = Vec::new();
    for (path, shape) in fixed {
        match LinkPath::parse(path.get_ref(), topology) {
            Ok(p) => paths.push((p, shape)),
            Err((message, hint)) => {
                r.error(path.span(), message, hint);
                ok = false;
            }
        }
    }
    let mut link_keys = Vec::new();
    for e in matrix {
        let Some((path, setting)) = split_matrix_key(&e.key) else {
            continue;
        };
        match LinkPath::parse(path, topology) {
            Ok(p) => link_keys.push((e, p, setting)),
            Err((message, hint)) => {
                r.error(e.key_span.clone(), message, hint);
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let first_span = raw
        .links
        .as_ref()
        .map(|l| l.span())
        .or_else(|| link_keys.first().map(|(e, _, _)| e.key_span.clone()));
    if let Some(span) = first_span.clone()
        && topology.provider == crate::topology::Provider::Ssh
    {
        r.error(
            span,
            "link settings on a testbed of provider ssh",
            "provider ssh does not apply link settings in this version; remove them, or run \
             the experiment on a topology of provider local",
        );
        return None;
    }
    // Each combination of the link keys' values (other keys do not change the links).
    let lengths: Vec<usize> = link_keys.iter().map(|(e, _, _)| e.values.len()).collect();
    let combos: usize = lengths.iter().product();
    for combo in 0..combos {
        let cell: Vec<(LinkPath, LinkSetting, u64)> = link_keys
            .iter()
            .zip(odometer(&lengths, combo))
            .filter_map(|((e, p, setting), i)| match e.values.get(i) {
                Some((MatrixValue::Link(_, amount), _)) => Some((p.clone(), *setting, *amount)),
                _ => None,
            })
            .collect();
        let resolved = super::links::resolve(topology, &paths, &cell);
        if let Some((_, _, message)) = super::links::jitter_over_delay(&resolved) {
            let values: Vec<String> = cell
                .iter()
                .map(|(p, s, a)| format!("{p}.{} = {}", s.as_str(), s.show(*a)))
                .collect();
            // The matrix key when a cell's value brought it about, else `[links]`.
            let span = link_keys
                .first()
                .map(|(e, _, _)| e.key_span.clone())
                .or(first_span.clone())
                .unwrap_or(0..0);
            r.error(
                span,
                if values.is_empty() {
                    message
                } else {
                    format!("{message} in the cell {}", values.join(", "))
                },
                "a packet cannot leave before it arrives: give each link a jitter of at most \
                 its delay",
            );
            return None;
        }
    }
    Some(paths)
}

/// At most [`MAX_RUNS`] runs in all.
fn check_run_count(
    r: &mut Reporter,
    raw: &RawExperiment,
    matrix: &[MatrixEntry],
    repetitions: u32,
) {
    let cells = matrix
        .iter()
        .try_fold(1u128, |n, e| n.checked_mul(e.values.len() as u128));
    let runs = cells.and_then(|c| c.checked_mul(u128::from(repetitions)));
    if runs.is_some_and(|n| n <= MAX_RUNS as u128) {
        return;
    }
    let span = raw.matrix.as_ref().map_or(0..0, |m| m.span());
    let message = match (cells, runs) {
        (Some(c), Some(n)) => {
            format!("the experiment has {n} runs ({c} matrix cells × {repetitions} repetitions)")
        }
        _ => format!("the experiment has more than {MAX_RUNS} runs"),
    };
    r.error(
        span,
        message,
        format!(
            "an experiment has at most {MAX_RUNS} runs: shorten the `[matrix]` lists, lower \
             `repetitions`, or split it into several files"
        ),
    );
}

/// A fault that passed stage 1; target, interface and peer wait for the topology.
struct FaultDraft<'r> {
    raw: &'r RawFault,
    at: FaultAt,
    kind: FaultKind,
    duration: Option<Duration>,
    percent: Option<f64>,
    direction: Option<Direction>,
    delay_ms: Option<u64>,
}

fn fault<'r>(
    r: &mut Reporter,
    spanned: &'r Spanned<RawFault>,
    run_timeout: Option<Duration>,
    timeout_written: bool,
) -> Option<FaultDraft<'r>> {
    let raw = spanned.get_ref();
    let kinds: Vec<(&str, FaultKind)> = FaultKind::ALL.iter().map(|k| (k.as_str(), *k)).collect();
    let kind = one_of(r, "fault kind", &raw.kind, &kinds);
    let at = fault_at(r, &raw.at, run_timeout, timeout_written);
    let mut ok = true;
    let duration = match &raw.duration {
        Some(d) => {
            let d = positive_duration(r, "duration", d);
            ok &= d.is_some();
            d
        }
        None => None,
    };

    // Parameters: each only for its kind.
    let mut only_for_any = |key: &str, span: Option<Range<usize>>, owners: &[FaultKind]| {
        if let (Some(span), Some(kind)) = (span, kind)
            && !owners.contains(&kind)
        {
            let names: Vec<String> = owners.iter().map(|o| format!("`{o}`")).collect();
            let kinds = if names.len() == 1 { "kind" } else { "kinds" };
            r.error(
                span,
                format!("`{key}` cannot be used with fault kind `{kind}`"),
                format!(
                    "only fault {kinds} {} take{} `{key}`; remove it",
                    names.join(" and "),
                    if names.len() == 1 { "s" } else { "" }
                ),
            );
            return false;
        }
        true
    };
    ok &= only_for_any(
        "interface",
        raw.interface.as_ref().map(|v| v.span()),
        &[FaultKind::NicDown],
    );
    ok &= only_for_any(
        "percent",
        raw.percent.as_ref().map(|v| v.span()),
        &[FaultKind::Loss],
    );
    ok &= only_for_any(
        "direction",
        raw.direction.as_ref().map(|v| v.span()),
        &[FaultKind::Loss, FaultKind::Delay],
    );
    ok &= only_for_any(
        "peer",
        raw.peer.as_ref().map(|v| v.span()),
        &[FaultKind::Partition],
    );
    ok &= only_for_any(
        "delay_ms",
        raw.delay_ms.as_ref().map(|v| v.span()),
        &[FaultKind::Delay],
    );
    let required = [
        (
            FaultKind::Loss,
            "percent",
            raw.percent.is_some(),
            "add `percent = ...`, the share of packets dropped: more than 0, at most 100",
        ),
        (
            FaultKind::Partition,
            "peer",
            raw.peer.is_some(),
            "add `peer = \"...\"`: the host, role or network the target is cut off from",
        ),
        (
            FaultKind::Delay,
            "delay_ms",
            raw.delay_ms.is_some(),
            "add `delay_ms = ...`, 1 to 10000 milliseconds added to each packet",
        ),
    ];
    for (owner, key, present, hint) in required {
        if kind == Some(owner) && !present {
            r.error(
                raw.kind.span(),
                format!("fault kind `{owner}` needs `{key}`"),
                hint,
            );
            ok = false;
        }
    }

    let percent = raw.percent.as_ref().and_then(|p| {
        let v = match p.get_ref() {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            other => {
                r.error(
                    p.span(),
                    format!("invalid type: {} for `percent`", other.type_str()),
                    "expected a number more than 0 and at most 100 (the share of packets \
                     dropped, in %)",
                );
                return None;
            }
        };
        if !(v > 0.0 && v <= 100.0) {
            r.error(
                p.span(),
                format!("`percent` = {v} is out of range"),
                "use a number more than 0 and at most 100 (the share of packets dropped, in %)",
            );
            return None;
        }
        Some(v)
    });
    ok &= raw.percent.is_none() || percent.is_some();
    let direction = match &raw.direction {
        Some(d) => {
            let d = one_of(r, "direction", d, &DIRECTIONS);
            ok &= d.is_some();
            d
        }
        None if kind == Some(FaultKind::Loss) => Some(Direction::Both),
        // A delay on the target's way in: a host that sends through a delay line on its way
        // out has its TCP throttled by the packets held in its name (ARCHITECTURE.md), while
        // the way in delays at line rate. Request and response see one delay either way.
        None if kind == Some(FaultKind::Delay) => Some(Direction::In),
        None => None,
    };
    let delay_ms = match &raw.delay_ms {
        Some(d) => {
            let d = in_range::<u64>(
                r,
                "delay_ms",
                d,
                1,
                10_000,
                "milliseconds added to each packet",
            );
            ok &= d.is_some();
            d
        }
        None => None,
    };
    if !ok {
        return None;
    }
    Some(FaultDraft {
        raw,
        at: at?,
        kind: kind?,
        duration,
        percent,
        direction,
        delay_ms,
    })
}

/// `at`: a fraction strictly between 0 and 1, or a time more than 0 and within the run's limit.
fn fault_at(
    r: &mut Reporter,
    value: &Spanned<toml::Value>,
    run_timeout: Option<Duration>,
    timeout_written: bool,
) -> Option<FaultAt> {
    let span = value.span();
    let fraction = |r: &mut Reporter, f: f64, shown: String| {
        if f > 0.0 && f < 1.0 {
            return Some(FaultAt::Fraction(f));
        }
        r.error(
            span.clone(),
            format!("fault time `{shown}` is out of range"),
            "a fraction of the failure-free run lies strictly between 0 and 1 \
             (0% and 100%): the fault fires during the run",
        );
        None
    };
    let time = match value.get_ref() {
        toml::Value::String(s) if s.trim_end().ends_with('%') => {
            return match duration::parse_percent(s.trim_end()) {
                Some(f) => fraction(r, f, s.clone()),
                None => {
                    r.error(span, format!("invalid fault time `{s}`"), AT_HINT);
                    None
                }
            };
        }
        toml::Value::Float(f) => return fraction(r, *f, format!("{f:?}")),
        v @ (toml::Value::String(_) | toml::Value::Integer(_)) => match duration::parse("at", v) {
            Ok(d) => d,
            Err((message, hint)) => {
                r.error(
                    span,
                    message,
                    format!(
                        "{hint}; or give a fraction of the failure-free run, such as \
                             `\"40%\"`"
                    ),
                );
                return None;
            }
        },
        other => {
            r.error(
                span,
                format!("invalid type: {} for `at`", other.type_str()),
                AT_HINT,
            );
            return None;
        }
    };
    if time.is_zero() {
        r.error(
            span,
            "fault time 0 is the start of the run",
            "fire the fault after the run has started: give a time of more than 0, \
             or a fraction such as `\"40%\"`",
        );
        return None;
    }
    let timeout = run_timeout?;
    if time > timeout {
        let origin = if timeout_written {
            "`run_timeout`"
        } else {
            "the default `run_timeout`"
        };
        r.error(
            span,
            format!(
                "fault time {} is after the end of the run",
                duration::show(time)
            ),
            format!(
                "a run lasts at most {} ({origin}); fire the fault earlier, or raise \
                 `run_timeout`",
                duration::show(timeout)
            ),
        );
        return None;
    }
    Some(FaultAt::After(time))
}

/// Hosts of the topology and the roles they hold, for hints.
fn targets_hint(topology: &Topology) -> String {
    let hosts: Vec<&str> = topology.hosts.iter().map(|h| h.name.as_str()).collect();
    let roles: Vec<&str> = held_roles(topology).iter().map(|r| r.as_str()).collect();
    format!(
        "name a host of topology `{}` ({}) or a role one of them holds ({})",
        topology.name,
        list_all(&hosts),
        list_all(&roles)
    )
}

fn held_roles(topology: &Topology) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|role| topology.hosts_with(*role).next().is_some())
        .collect()
}

fn role_named(word: &str) -> Option<Role> {
    Role::ALL.into_iter().find(|r| r.as_str() == word)
}

/// Completes a fault with what needs the topology: its target, interface and peer.
fn fault_on(r: &mut Reporter, draft: FaultDraft, topology: &Topology) -> Option<FaultSpec> {
    let raw = draft.raw;
    let word = raw.target.get_ref();
    let target = match role_named(word) {
        Some(role) if topology.hosts_with(role).next().is_some() => Some(FaultTarget::Role(role)),
        Some(role) => {
            r.error(
                raw.target.span(),
                format!("no host of topology `{}` has role `{role}`", topology.name),
                targets_hint(topology),
            );
            None
        }
        None if topology.host(word).is_some() => Some(FaultTarget::Host(word.clone())),
        None => {
            r.error(
                raw.target.span(),
                format!("unknown fault target `{word}`"),
                targets_hint(topology),
            );
            None
        }
    };

    let mut ok = target.is_some();
    if let (Some(interface), Some(target)) = (&raw.interface, &target) {
        ok &= check_interface(r, interface, target, topology);
    }
    if let Some(peer) = &raw.peer {
        ok &= check_peer(r, peer, word, topology);
    }
    if !ok {
        return None;
    }
    Some(FaultSpec {
        at: draft.at,
        kind: draft.kind,
        target: target?,
        duration: draft.duration,
        interface: raw.interface.as_ref().map(|i| i.get_ref().clone()),
        percent: draft.percent,
        direction: draft.direction,
        peer: raw.peer.as_ref().map(|p| p.get_ref().clone()),
        delay_ms: draft.delay_ms,
    })
}

/// `interface`: a network of the topology that every host the target names is on.
fn check_interface(
    r: &mut Reporter,
    interface: &Spanned<String>,
    target: &FaultTarget,
    topology: &Topology,
) -> bool {
    let network = interface.get_ref();
    if topology.network(network).is_none() {
        let names: Vec<&str> = topology.networks.iter().map(|n| n.name.as_str()).collect();
        r.error(
            interface.span(),
            format!("unknown network `{network}`"),
            format!(
                "the networks of topology `{}` are {}; leave `interface` out to take \
                 every interface of the host down",
                topology.name,
                list_all(&names)
            ),
        );
        return false;
    }
    let hosts: Vec<&topology::Host> = match target {
        FaultTarget::Host(h) => topology.host(h).into_iter().collect(),
        FaultTarget::Role(role) => topology.hosts_with(*role).collect(),
    };
    for host in hosts {
        if host.addresses.contains_key(network) {
            continue;
        }
        let on: Vec<&str> = topology
            .networks
            .iter()
            .filter(|n| host.addresses.contains_key(&n.name))
            .map(|n| n.name.as_str())
            .collect();
        let who = match target {
            FaultTarget::Host(_) => format!("host `{}`", host.name),
            FaultTarget::Role(role) => format!("host `{}` (role `{role}`)", host.name),
        };
        r.error(
            interface.span(),
            format!("{who} has no interface on network `{network}`"),
            format!("host `{}` is on {}", host.name, list_all(&on)),
        );
        return false;
    }
    true
}

/// `peer`: a host, a role some host holds, or a network; not the target itself.
fn check_peer(r: &mut Reporter, peer: &Spanned<String>, target: &str, topology: &Topology) -> bool {
    let word = peer.get_ref();
    let known = match role_named(word) {
        Some(role) => topology.hosts_with(role).next().is_some(),
        None => topology.host(word).is_some() || topology.network(word).is_some(),
    };
    if !known {
        let hosts: Vec<&str> = topology.hosts.iter().map(|h| h.name.as_str()).collect();
        let roles: Vec<&str> = held_roles(topology).iter().map(|r| r.as_str()).collect();
        let networks: Vec<&str> = topology.networks.iter().map(|n| n.name.as_str()).collect();
        r.error(
            peer.span(),
            format!("unknown partition peer `{word}`"),
            format!(
                "name a host ({}), a role one of them holds ({}) or a network ({}) of \
                 topology `{}`",
                list_all(&hosts),
                list_all(&roles),
                list_all(&networks),
                topology.name
            ),
        );
        return false;
    }
    if word == target {
        r.error(
            peer.span(),
            format!("the partition's peer `{word}` is its target"),
            "a partition cuts the target off from the peer: name another host, role or network",
        );
        return false;
    }
    true
}

/// One side of a combination a run does not allow.
struct Party<'a> {
    key: &'static str,
    value: String,
    origin: &'a Origin,
}

/// Every matrix cell as a run: topology `[run]` ← experiment `[run]` ← the cell's values.
/// Checked as a topology's `[run]` would be, except that topology values the run cannot use
/// are left out rather than errors; and the topology must have the roles the mode needs.
fn check_cells(
    r: &mut Reporter,
    text: &str,
    topology: &Topology,
    run_values: &[(MatrixValue, Range<usize>)],
    matrix: &[MatrixEntry],
) {
    let lengths: Vec<usize> = matrix.iter().map(|e| e.values.len()).collect();
    // Stage 1 limited the product to MAX_RUNS.
    let cells: usize = lengths.iter().product();
    // Spans already reported: the first cell (in run order) with a problem there names it.
    let mut reported: HashSet<usize> = HashSet::new();
    for cell in 0..cells {
        let mut layered = Layered::new(&topology.run);
        for (value, span) in run_values {
            layered.set(*value, Origin::Run(span.clone()));
        }
        let mut described = Vec::new();
        for (entry, i) in matrix.iter().zip(odometer(&lengths, cell)) {
            if let Some((value, span)) = entry.values.get(i) {
                layered.set(*value, Origin::Matrix(span.clone()));
                let written = written(text, span).trim_matches(['"', '\'']);
                described.push(format!("{} = {written}", entry.key));
            }
        }
        let cell = Cell {
            text,
            described: &described.join(", "),
        };
        check_run(r, &mut reported, topology, &layered, &cell);
    }
}

/// The text of `span`, as written in the file.
fn written<'t>(text: &'t str, span: &Range<usize>) -> &'t str {
    text.get(span.clone()).unwrap_or("").trim()
}

/// The matrix cell being checked: the file's text (to quote values as written) and the cell's
/// values, `key = value, ...` (empty without a matrix).
struct Cell<'a> {
    text: &'a str,
    described: &'a str,
}

impl Cell<'_> {
    /// `value` as written where it comes from this file, else as the model shows it.
    fn show(&self, value: impl ToString, origin: &Origin) -> String {
        match origin.span() {
            Some(span) => written(self.text, &span).to_string(),
            None => value.to_string(),
        }
    }
}

fn check_run(
    r: &mut Reporter,
    reported: &mut HashSet<usize>,
    topology: &Topology,
    run: &Layered,
    cell: &Cell<'_>,
) {
    let (mode, mode_origin) = (&run.mode.0, &run.mode.1);
    let (workload, workload_origin) = (&run.workload.0, &run.workload.1);
    let mode_party = || Party {
        key: "mode",
        value: mode.as_str().to_string(),
        origin: mode_origin,
    };
    if !has_heartbeat(*mode) {
        let reason = format!("mode `{mode}` has no failover and so no heartbeat");
        if let Some((v, origin)) = &run.heartbeat_ms {
            let dependent = Party {
                key: "heartbeat_ms",
                value: cell.show(v, origin),
                origin,
            };
            conflict(r, reported, cell, dependent, mode_party(), &reason);
        }
        if let Some((v, origin)) = &run.missed_heartbeats {
            let dependent = Party {
                key: "missed_heartbeats",
                value: cell.show(v, origin),
                origin,
            };
            conflict(r, reported, cell, dependent, mode_party(), &reason);
        }
    }
    if !has_trigger(*mode)
        && let Some((v, origin)) = &run.trigger
    {
        let dependent = Party {
            key: "trigger",
            value: cell.show(MatrixValue::Trigger(*v), origin),
            origin,
        };
        let reason = "only mode `app-migration` has a trigger";
        conflict(r, reported, cell, dependent, mode_party(), reason);
    }
    if !has_size(*workload)
        && let Some((v, origin)) = &run.size
    {
        let dependent = Party {
            key: "size",
            value: cell.show(v, origin),
            origin,
        };
        let partner = Party {
            key: "workload",
            value: workload.as_str().to_string(),
            origin: workload_origin,
        };
        let reason = "only workloads `bulk`, `download` and `http` transfer a given size";
        conflict(r, reported, cell, dependent, partner, reason);
    }

    // The topology was validated under its own mode; a mode from the experiment must find the
    // roles it needs.
    if let Some(span) = mode_origin.span()
        && let Some((message, hint)) = missing_roles(*mode, topology)
        && reported.insert(span.start)
    {
        let prefix = match mode_origin {
            Origin::Matrix(_) => format!("in the run with {}: ", cell.described),
            _ => String::new(),
        };
        r.error(span, message, format!("{prefix}{hint}"));
    }
}

/// Reports `dependent` (a value the partner's mode or workload cannot use) against `partner`,
/// at the value that introduced the combination: the one from the later layer (a `[matrix]`
/// element over a `[run]` value), else the dependent value. Topology values are left out of
/// the run instead (see `Layered::settings`).
fn conflict(
    r: &mut Reporter,
    reported: &mut HashSet<usize>,
    cell: &Cell<'_>,
    dependent: Party,
    partner: Party,
    reason: &str,
) {
    let Some(dependent_span) = dependent.origin.span() else {
        return;
    };
    let in_matrix = matches!(dependent.origin, Origin::Matrix(_))
        || matches!(partner.origin, Origin::Matrix(_));
    let prefix = if in_matrix && !cell.described.is_empty() {
        format!("in the run with {}: ", cell.described)
    } else {
        String::new()
    };
    let (span, message, hint) = match partner.origin.span() {
        Some(partner_span) if partner.origin.rank() > dependent.origin.rank() => (
            partner_span,
            format!(
                "{} `{}` cannot be used with `{} = {}`",
                partner.key, partner.value, dependent.key, dependent.value
            ),
            format!(
                "{prefix}{reason}, and `{}` is set on line {}; remove one of them",
                dependent.key,
                r.line_of(dependent_span.clone())
            ),
        ),
        partner_span => {
            let advice = match (partner_span, partner.origin) {
                (None, _) => format!(
                    " (the topology's `[run]` sets `{} = \"{}\"`); remove it",
                    partner.key, partner.value
                ),
                (Some(_), Origin::Matrix(_)) => "; remove one of them".to_string(),
                (Some(s), _) => format!(
                    " (`{}` is set on line {}); remove it",
                    partner.key,
                    r.line_of(s)
                ),
            };
            (
                dependent_span,
                format!(
                    "`{}` cannot be used with {} `{}`",
                    dependent.key, partner.key, partner.value
                ),
                format!("{prefix}{reason}{advice}"),
            )
        }
    };
    if reported.insert(span.start) {
        r.error(span, message, hint);
    }
}

/// Why `topology` lacks the roles `mode` needs: (message, hint). Hosts with roles the mode
/// does not use simply idle.
fn missing_roles(mode: Mode, topology: &Topology) -> Option<(String, String)> {
    let mut needs: Vec<(Role, bool)> = mode
        .behaviour()
        .roles()
        .iter()
        .filter(|rule| rule.count != RoleCount::Optional)
        .map(|rule| (rule.role, rule.count == RoleCount::One))
        .collect();
    // The testbed's own roles first, as they were always checked first.
    needs.sort_by_key(|(role, _)| !matches!(role, Role::Primary | Role::Client));
    let file = topology.source.display();
    for (role, exactly_one) in needs {
        let n = topology.hosts_with(role).count();
        let has = if n == 0 {
            "none".to_string()
        } else {
            n.to_string()
        };
        let needed = if exactly_one {
            "exactly one host"
        } else {
            "a host"
        };
        if n == 0 || (exactly_one && n > 1) {
            let fix = if n == 0 {
                format!("add a host with role `{role}` to `{file}`")
            } else {
                format!("keep one host with role `{role}` in `{file}`")
            };
            return Some((
                format!(
                    "mode `{mode}` needs {needed} with role `{role}`, and topology `{}` has {has}",
                    topology.name
                ),
                format!(
                    "hosts holding roles a mode does not use stay idle, but the roles it needs \
                     must be there: {fix}, or choose another mode or topology"
                ),
            ));
        }
    }
    None
}
