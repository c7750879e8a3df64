//! Experiment files: the shipped ones load and expand into the documented runs, every invalid
//! fixture fails with exactly the error in its `.expected` file (pointing at the right file,
//! line and column, with a hint), and no input whatsoever panics the loader.
//!
//! `HALAB_BLESS=1 cargo test -p halab --test experiment_fixtures` rewrites the `.expected`
//! files from the current output; review the diff before committing it.

mod support;

use halab::experiment::{
    self, Direction, Experiment, ExperimentError, FaultAt, FaultKind, FaultTarget, MatrixValue,
    RunPlan, load, parse_str,
};
use halab::topology::{Mode, RunSettings, Trigger, Workload};
use halab_protocol::Role;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;
use support::fixtures::{Located, check_invalid_fixtures};
use support::toml_gen::TomlGen;

/// Relative to the crate folder, where cargo runs integration tests, so the paths in the
/// rendered errors (and so the `.expected` files) are the same on every machine.
const FIXTURES: &str = "tests/fixtures/experiments";
const INVALID: &str = "tests/fixtures/experiments/invalid";

/// The error as [`check_location`] checks it: pointing into the experiment's `text`, the file
/// `path`, or into the topology file for a topology's own error.
fn located(err: &ExperimentError, text: &str, path: &str) -> Located {
    let rendered = err.to_string();
    let (text, path) = match err.topology_error() {
        Some(_) => (
            std::fs::read_to_string(err.path()).map_err(|e| format!("{e}: {rendered}")),
            err.path().display().to_string(),
        ),
        None if err.path() != Path::new(path) => (
            Err(format!("error names {} not {path}", err.path().display())),
            path.to_string(),
        ),
        None => (Ok(text.to_string()), path.to_string()),
    };
    Located {
        path,
        text,
        line: err.line(),
        column: err.column(),
        rendered,
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
fn a_topology_error_is_the_topology_s_own() {
    let err = load(Path::new(&format!("{INVALID}/topology-invalid.toml"))).expect_err("invalid");
    let topology = err.topology_error().expect("a topology error");
    assert_eq!(
        err.path(),
        Path::new("tests/fixtures/experiments/invalid/../topo-broken.toml")
    );
    assert_eq!(err.to_string(), topology.to_string());
    assert_eq!(err.message(), "unknown mode `st-tpc`");
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let path = Path::new("tests/fixtures/experiments/no-such-file.toml");
    let err = load(path).expect_err("missing file");
    assert!(err.io_error().is_some());
    assert_eq!(err.path(), path);
    let rendered = err.to_string();
    assert!(
        rendered.starts_with(
            "error: tests/fixtures/experiments/no-such-file.toml: \
             cannot read the experiment file: "
        ),
        "{rendered}"
    );
    assert!(rendered.contains("hint: "), "{rendered}");
}

fn load_ok(path: &str) -> Experiment {
    let e = load(Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&e);
    e
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn baseline_none_loads() {
    let e = load_ok("../experiments/baseline-none.toml");
    assert_eq!(e.name, "baseline-none");
    assert_eq!(e.topology.name, "two-server");
    assert_eq!(
        e.topology.source,
        Path::new("../experiments/../topologies/two-server.toml")
    );
    assert_eq!(e.repetitions, 1);
    assert_eq!(e.run_timeout, Duration::from_secs(300));
    // The topology's st-tcp heartbeat settings are left out under mode none.
    let expected = RunSettings {
        mode: Mode::None,
        heartbeat_ms: None,
        missed_heartbeats: None,
        trigger: None,
        workload: Workload::Bulk,
        size: Some(100_000_000),
        clients: None,
    };
    assert_eq!(e.base, expected);
    assert!(e.matrix.is_empty());
    assert_eq!(e.cells(), 1);
    assert_eq!(e.faults.len(), 1);
    let f = &e.faults[0];
    assert_eq!(f.at, FaultAt::Fraction(0.4));
    assert_eq!(f.kind, FaultKind::ProcessKill);
    assert_eq!(f.target, FaultTarget::Role(Role::Primary));
    assert_eq!(f.duration, None);
    assert_eq!(
        (&f.interface, f.percent, f.direction, &f.peer, f.delay_ms),
        (&None, None, None, &None, None)
    );

    let runs = e.runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!((run.index, run.cell, run.repetition), (0, 0, 1));
    assert_eq!(run.settings, expected);
    assert!(run.params.is_empty());
    assert_eq!(run.faults, e.faults);
}

#[test]
fn workloads_none_loads() {
    let e = load_ok("../experiments/workloads-none.toml");
    assert_eq!(e.name, "workloads-none");
    assert_eq!(e.cells(), 5);
    assert!(e.faults.is_empty());
    let runs = e.runs();
    let got: Vec<(usize, usize, u32, Workload, Option<u64>)> = runs
        .iter()
        .map(|r| {
            (
                r.index,
                r.cell,
                r.repetition,
                r.settings.workload,
                r.settings.size,
            )
        })
        .collect();
    // echo and interactive leave out the topology's size; the others use it (20MB).
    assert_eq!(
        got,
        [
            (0, 0, 1, Workload::Echo, None),
            (1, 1, 1, Workload::Interactive, None),
            (2, 2, 1, Workload::Bulk, Some(20_000_000)),
            (3, 3, 1, Workload::Download, Some(20_000_000)),
            (4, 4, 1, Workload::Http, Some(20_000_000)),
        ]
    );
    for (run, workload) in runs
        .iter()
        .zip(["echo", "interactive", "bulk", "download", "http"])
    {
        assert_eq!(run.params, params(&[("workload", workload)]));
        assert_eq!(run.settings.mode, Mode::None);
        assert_eq!(run.settings.heartbeat_ms, None);
        assert_eq!(run.settings.missed_heartbeats, None);
    }
}

#[test]
fn matrix_faults_runs_each_cell_without_and_with_the_faults() {
    let e = load_ok("tests/fixtures/experiments/valid/faults-matrix.toml");
    assert_eq!(e.cells(), 4);
    let runs = e.runs();
    assert_eq!(runs.len(), 8);
    let got: Vec<(usize, bool, Option<u64>)> = runs
        .iter()
        .map(|r| (r.cell, !r.faults.is_empty(), r.settings.size))
        .collect();
    assert_eq!(
        got,
        [
            (0, false, Some(1_000_000)),
            (0, false, Some(1_000_000)),
            (1, false, Some(5_000_000)),
            (1, false, Some(5_000_000)),
            (2, true, Some(1_000_000)),
            (2, true, Some(1_000_000)),
            (3, true, Some(5_000_000)),
            (3, true, Some(5_000_000)),
        ]
    );
    assert_eq!(
        runs[0].params,
        params(&[("faults", "false"), ("size", "1000000")])
    );
    assert_eq!(runs[4].faults, e.faults);
    assert_eq!(e.faults[0].kind, FaultKind::PowerOff);
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        json["matrix"][0],
        serde_json::json!(["faults", [false, true]])
    );
}

/// The shipped experiments load; the paper ones expand to the matrices their comments state.
#[test]
fn shipped_experiments_load() {
    let cells = |f: &str| {
        let e = load_ok(&format!("../experiments/{f}"));
        check_invariants(&e);
        (e.name.clone(), e.cells(), e.repetitions)
    };
    assert_eq!(
        cells("sttcp-table-3-1.toml"),
        ("sttcp-table-3-1".into(), 6, 3)
    );
    assert_eq!(
        cells("sttcp-table-3-2.toml"),
        ("sttcp-table-3-2".into(), 9, 3)
    );
    assert_eq!(
        cells("app-migration-file-sizes.toml"),
        ("app-migration-file-sizes".into(), 8, 3)
    );
    assert_eq!(
        cells("detection-vs-interval.toml"),
        ("detection-vs-interval".into(), 3, 3)
    );
    assert_eq!(
        cells("modes-compared.toml"),
        ("modes-compared".into(), 6, 3)
    );
}

#[test]
fn a_2x2_matrix_with_2_repetitions_gives_8_runs_in_order() {
    let e = load_ok("tests/fixtures/experiments/valid/matrix-2x2.toml");
    assert_eq!(e.name, "matrix-2x2");
    assert_eq!(e.cells(), 4);
    let runs = e.runs();
    assert_eq!(runs.len(), 8);
    let got: Vec<(usize, usize, u32, Mode, Option<u64>)> = runs
        .iter()
        .map(|r| {
            (
                r.index,
                r.cell,
                r.repetition,
                r.settings.mode,
                r.settings.heartbeat_ms,
            )
        })
        .collect();
    let st = Mode::StTcp;
    let am = Mode::AppMigration;
    assert_eq!(
        got,
        [
            (0, 0, 1, st, Some(50)),
            (1, 0, 2, st, Some(50)),
            (2, 1, 1, st, Some(200)),
            (3, 1, 2, st, Some(200)),
            (4, 2, 1, am, Some(50)),
            (5, 2, 2, am, Some(50)),
            (6, 3, 1, am, Some(200)),
            (7, 3, 2, am, Some(200)),
        ]
    );
    assert_eq!(
        runs[4].params,
        params(&[("mode", "app-migration"), ("heartbeat_ms", "50")])
    );
    // Topology values the cells do not vary stay.
    assert!(runs.iter().all(|r| r.settings.missed_heartbeats == Some(3)
        && r.settings.size == Some(10_000_000)));
    assert_eq!(
        e.matrix,
        [
            (
                "mode".to_string(),
                vec![MatrixValue::Mode(st), MatrixValue::Mode(am)]
            ),
            (
                "heartbeat_ms".to_string(),
                vec![MatrixValue::HeartbeatMs(50), MatrixValue::HeartbeatMs(200)]
            ),
        ]
    );
}

#[test]
fn every_key_is_read() {
    let e = load_ok("tests/fixtures/experiments/valid/everything.toml");
    assert_eq!(e.name, "everything-1");
    assert_eq!(e.repetitions, 3);
    assert_eq!(e.run_timeout, Duration::from_secs(120));
    assert_eq!(e.base.mode, Mode::AppMigration);
    assert_eq!(e.base.trigger, Some(Trigger::Client));
    assert_eq!(e.base.heartbeat_ms, Some(100), "from the topology");
    assert_eq!(e.base.missed_heartbeats, Some(5));
    assert_eq!(e.base.workload, Workload::Download);
    assert_eq!(e.base.size, Some(65_536));
    assert_eq!(e.base.clients, Some(4));
    assert_eq!(e.cells(), 8);
    assert_eq!(e.runs().len(), 24);

    let kinds: Vec<FaultKind> = e.faults.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            FaultKind::Loss,
            FaultKind::NicDown,
            FaultKind::Partition,
            FaultKind::Delay,
            FaultKind::PowerOff
        ]
    );
    let [loss, nic, partition, delay, power] = &e.faults[..] else {
        panic!("five faults");
    };
    assert_eq!(loss.at, FaultAt::Fraction(0.25));
    assert_eq!(loss.target, FaultTarget::Host("s1".to_string()));
    assert_eq!(loss.percent, Some(30.0));
    assert_eq!(loss.direction, Some(Direction::In));
    assert_eq!(loss.duration, Some(Duration::from_millis(2500)));
    assert_eq!(nic.at, FaultAt::After(Duration::from_millis(2500)));
    assert_eq!(nic.target, FaultTarget::Role(Role::Backup));
    assert_eq!(nic.interface.as_deref(), Some("hb"));
    assert_eq!(partition.at, FaultAt::After(Duration::from_millis(1500)));
    assert_eq!(partition.peer.as_deref(), Some("c1"));
    assert_eq!(delay.at, FaultAt::Fraction(0.125));
    assert_eq!(delay.delay_ms, Some(50));
    assert_eq!(delay.duration, Some(Duration::from_millis(500)));
    assert_eq!(power.at, FaultAt::After(Duration::from_secs(120)));

    // Last key fastest: cell 1 differs from cell 0 in `trigger` only.
    let runs = e.runs();
    assert_eq!(
        runs[0].params,
        params(&[("clients", "1"), ("size", "1000"), ("trigger", "server")])
    );
    assert_eq!(
        runs[3].params,
        params(&[("clients", "1"), ("size", "1000"), ("trigger", "client")])
    );
    assert_eq!(runs[6].settings.size, Some(1_000_000));
    assert_eq!(runs[23].settings.clients, Some(8));

    // The model serializes (for the records).
    let json = serde_json::to_value(&runs[0]).expect("json");
    assert_eq!(
        json["faults"][0]["at"],
        serde_json::json!({"fraction": 0.25})
    );
    assert_eq!(
        json["faults"][1]["target"],
        serde_json::json!({"role": "backup"})
    );
    assert_eq!(json["params"]["size"], "1000");
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(json["run_timeout_ms"], 120_000);
    assert_eq!(
        json["matrix"][1],
        serde_json::json!(["size", [1000, 1_000_000]])
    );
}

const TOPO: &str = "tests/fixtures/experiments/x.toml";

fn parse_ok(text: &str) -> Experiment {
    let e = parse_str(text, Path::new(TOPO)).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&e);
    e
}

#[test]
fn a_matrix_cell_brings_back_topology_values_run_left_out() {
    // [run] says mode none: base has no heartbeat; the st-tcp cell uses the topology's.
    let e = parse_ok(
        "topology = \"topo.toml\"\n[run]\nmode = \"none\"\n[matrix]\nmode = [\"none\", \"st-tcp\"]\n",
    );
    assert_eq!(e.base.heartbeat_ms, None);
    let hb: Vec<Option<u64>> = e.runs().iter().map(|r| r.settings.heartbeat_ms).collect();
    assert_eq!(hb, [None, Some(100)]);
}

#[test]
fn the_name_defaults_to_the_file_stem_which_must_be_valid() {
    let text = "topology = \"topo.toml\"\n";
    let e = parse_ok(text);
    assert_eq!(e.name, "x");
    let err = parse_str(text, Path::new("tests/fixtures/experiments/Bad Name.toml"))
        .expect_err("invalid stem");
    let rendered = err.to_string();
    assert!(
        rendered.starts_with("error: tests/fixtures/experiments/Bad Name.toml:1:1: "),
        "{rendered}"
    );
    assert!(rendered.contains("hint: add `name = "), "{rendered}");
    let e = parse_str(
        "name = \"ok\"\ntopology = \"topo.toml\"\n",
        Path::new("tests/fixtures/experiments/Bad Name.toml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.name, "ok");
}

#[test]
fn durations_and_fault_times() {
    let with = |timeout: &str, at: &str| {
        parse_str(
            &format!(
                "topology = \"topo.toml\"\nrun_timeout = {timeout}\n[[faults]]\nat = {at}\n\
                 kind = \"process-hang\"\ntarget = \"s1\"\n"
            ),
            Path::new(TOPO),
        )
    };
    let ok = |timeout: &str, at: &str| {
        let e = with(timeout, at).unwrap_or_else(|e| panic!("{e}"));
        (e.run_timeout, e.faults[0].at)
    };
    let ms = Duration::from_millis;
    assert_eq!(ok("500", "\"0.5s\""), (ms(500), FaultAt::After(ms(500))));
    assert_eq!(
        ok("\"3m\"", "\"3m\""),
        (ms(180_000), FaultAt::After(ms(180_000)))
    );
    assert_eq!(ok("\"1h\"", "1"), (ms(3_600_000), FaultAt::After(ms(1))));
    assert_eq!(
        ok("\"1.5s\"", "0.999"),
        (ms(1500), FaultAt::Fraction(0.999))
    );
    assert_eq!(
        ok("\"2s\"", "\"0.5%\""),
        (ms(2000), FaultAt::Fraction(0.005))
    );
    for (timeout, at) in [
        ("0", "\"1%\""),
        ("\"0s\"", "\"1%\""),
        ("\"25h\"", "\"1%\""),
        ("1.5", "\"1%\""),
        ("\"2s\"", "\"2001ms\""),
        ("\"2s\"", "0.0"),
        ("\"2s\"", "-0.5"),
        ("\"2s\"", "\"100%\""),
        ("\"2s\"", "\"0%\""),
        ("\"2s\"", "\"x%\""),
        ("\"2s\"", "-1"),
        ("\"2s\"", "nan"),
        ("\"2s\"", "true"),
    ] {
        let err = with(timeout, at).expect_err(&format!("{timeout} / {at}"));
        assert!(err.to_string().contains("hint: "), "{err}");
    }
}

#[test]
fn role_words_are_roles_and_other_words_hosts() {
    // two-server names its hosts after their roles: `primary` is the role (the host holding
    // it when the fault fires), `client` too.
    let e = load_ok("../experiments/baseline-none.toml");
    assert_eq!(e.faults[0].target, FaultTarget::Role(Role::Primary));
    let e = parse_ok(
        "topology = \"topo.toml\"\n[[faults]]\nat = \"10%\"\nkind = \"power-off\"\ntarget = \"s2\"\n\
         [[faults]]\nat = \"20%\"\nkind = \"power-on\"\ntarget = \"s2\"\n",
    );
    let targets: Vec<&FaultTarget> = e.faults.iter().map(|f| &f.target).collect();
    assert_eq!(
        targets,
        [
            &FaultTarget::Host("s2".into()),
            &FaultTarget::Host("s2".into())
        ]
    );
    let times: Vec<FaultAt> = e.faults.iter().map(|f| f.at).collect();
    assert_eq!(
        times,
        [FaultAt::Fraction(0.1), FaultAt::Fraction(0.2)],
        "file order"
    );
}

#[test]
fn a_role_a_mode_does_not_use_idles() {
    // craft's roles are absent from topo.toml, but mode none only needs primary, backup and
    // client; st-tcp needs exactly one backup, which it has.
    let e = parse_ok(
        "topology = \"topo.toml\"\n[matrix]\nmode = [\"none\", \"st-tcp\", \"app-migration\"]\n",
    );
    assert_eq!(e.runs().len(), 3);
    // three-server has two backups: fine for app-migration (its own mode) and none, not st-tcp.
    let three = |mode: &str| {
        parse_str(
            &format!(
                "topology = \"../../../../topologies/three-server.toml\"\n[run]\nmode = \"{mode}\"\n"
            ),
            Path::new(TOPO),
        )
    };
    if let Err(e) = three("none") {
        panic!("{e}");
    }
    let err = three("st-tcp").expect_err("two backups");
    assert!(
        err.message().contains(
            "needs exactly one host with role `backup`, and topology `three-server` has 2"
        ),
        "{err}"
    );
}

/// What the model promises (model.rs), checked on every experiment that loads, generated ones
/// included.
fn check_invariants(e: &Experiment) {
    let name_ok = (1..=40).contains(&e.name.len())
        && e.name.starts_with(|c: char| c.is_ascii_lowercase())
        && e.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    assert!(name_ok, "name {}", e.name);
    assert!((1..=1000).contains(&e.repetitions));
    assert!(e.run_timeout > Duration::ZERO && e.run_timeout <= Duration::from_secs(86_400));
    for (key, values) in &e.matrix {
        assert!(experiment::MATRIX_KEYS.contains(&key.as_str()), "{key}");
        assert!(!values.is_empty());
        assert!(values.iter().all(|v| v.key() == key));
        let distinct: HashSet<String> = values.iter().map(|v| v.to_string()).collect();
        assert_eq!(distinct.len(), values.len(), "duplicates in {key}");
    }
    let keys: HashSet<&String> = e.matrix.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), e.matrix.len(), "duplicate matrix key");
    for f in &e.faults {
        match f.at {
            FaultAt::Fraction(x) => assert!(x > 0.0 && x < 1.0),
            FaultAt::After(d) => assert!(d > Duration::ZERO && d <= e.run_timeout),
        }
        assert!(f.interface.is_none() || f.kind == FaultKind::NicDown);
        assert_eq!(f.percent.is_some(), f.kind == FaultKind::Loss);
        // Loss and delay have a direction (given, or their default); no other kind takes one.
        assert_eq!(
            f.direction.is_some(),
            matches!(f.kind, FaultKind::Loss | FaultKind::Delay)
        );
        assert_eq!(f.peer.is_some(), f.kind == FaultKind::Partition);
        assert_eq!(f.delay_ms.is_some(), f.kind == FaultKind::Delay);
        assert!(f.percent.is_none_or(|p| p > 0.0 && p <= 100.0));
        assert!(f.delay_ms.is_none_or(|d| (1..=10_000).contains(&d)));
        match &f.target {
            FaultTarget::Host(h) => assert!(e.topology.host(h).is_some()),
            FaultTarget::Role(r) => assert!(e.topology.hosts_with(*r).next().is_some()),
        }
    }
    let runs: Vec<RunPlan> = e.runs();
    assert_eq!(runs.len(), e.cells() * e.repetitions as usize);
    assert!(runs.len() <= 10_000);
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.index, i);
        assert_eq!(run.cell, i / e.repetitions as usize);
        assert_eq!(run.repetition as usize, i % e.repetitions as usize + 1);
        assert_eq!(run.params.len(), e.matrix.len());
        if run.params.get("faults").map(String::as_str) == Some("false") {
            assert!(run.faults.is_empty());
        } else {
            assert_eq!(run.faults, e.faults);
        }
        check_settings(e, &run.settings);
    }
    check_settings(e, &e.base);
}

/// A run's settings are valid as a topology's [run], and the topology has the mode's roles.
fn check_settings(e: &Experiment, s: &RunSettings) {
    if s.mode == Mode::None {
        assert!(s.heartbeat_ms.is_none() && s.missed_heartbeats.is_none());
    }
    assert!(s.heartbeat_ms.is_none_or(|h| (1..=60_000).contains(&h)));
    assert!(s.missed_heartbeats.is_none_or(|m| (1..=100).contains(&m)));
    assert!(s.clients.is_none_or(|c| (1..=1000).contains(&c)));
    assert!(s.trigger.is_none() || s.mode == Mode::AppMigration);
    assert!(
        s.size.is_none()
            || matches!(
                s.workload,
                Workload::Bulk | Workload::Download | Workload::Http
            )
    );
    let n = |role| e.topology.hosts_with(role).count();
    assert_eq!(n(Role::Primary), 1);
    assert!(n(Role::Client) >= 1);
    match s.mode {
        Mode::None | Mode::AppMigration => assert!(n(Role::Backup) >= 1),
        Mode::StTcp => assert_eq!(n(Role::Backup), 1),
        Mode::Craft => assert!(n(Role::Lb) >= 1 && n(Role::Proxy) >= 1),
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests: no input panics the loader; every error points inside the file it names.

/// In `experiments/`, so the shipped files' `../topologies/...` resolve when mutated.
const FUZZ_PATH: &str = "../experiments/fuzz.toml";

/// The format's words: its keys, and scalar values (words it uses, numbers near the bounds).
#[rustfmt::skip]
const GEN: TomlGen = TomlGen {
    keys: &[
        "name", "topology", "repetitions", "run_timeout", "mode", "heartbeat_ms",
        "missed_heartbeats", "trigger", "workload", "size", "clients", "at", "kind", "target",
        "duration", "interface", "percent", "direction", "peer", "delay_ms",
    ],
    words: &[
        "../topologies/two-server.toml", "../topologies/three-server.toml",
        "../console/tests/fixtures/experiments/topo.toml",
        "../console/tests/fixtures/experiments/topo-broken.toml", "no-such.toml", "~", "~bob/x",
        "", "none", "app-migration", "st-tcp", "craft", "server", "client", "echo",
        "interactive", "bulk", "download", "http", "primary", "backup", "logger", "lb", "proxy",
        "service", "heartbeat", "lan", "hb", "s1", "c1", "20MB", "64KiB", "0B", "40%", "0%",
        "100%", "99.9%", "2.5s", "500ms", "3m", "25h", "0s", "300", "process-kill",
        "process-hang", "process-crash", "nic-down", "loss", "partition", "delay", "power-off",
        "power-on", "in", "out", "both", "é", "Ab",
    ],
    extra_words: None,
    integers: &[
        "0", "1", "2", "50", "100", "101", "1000", "1001", "10000", "10001", "60000", "60001",
        "-1", "9223372036854775807", "-9223372036854775808",
    ],
    others: &["0.4", "1.0", "0.0", "-0.5", "1e300", "nan", "inf", "-inf", "1979-05-27"],
    max_array: 5,
    headers: &["[run]", "[[faults]]", "[matrix]", "[faults]"],
    insert: "[\\[\\]{}=\"',.#%\n a-z0-9é]{1,4}",
};

/// Whole documents: a topology line (usually a real one), top-level keys, then tables with the
/// format's headers (and some others).
fn document() -> impl Strategy<Value = String> {
    GEN.document(prop::sample::select(vec![
        "topology = \"../topologies/two-server.toml\"\n",
        "topology = \"../topologies/three-server.toml\"\n",
        "topology = \"../console/tests/fixtures/experiments/topo.toml\"\n",
        "",
    ]))
}

/// Valid experiments, all with topology paths that resolve from [`FUZZ_PATH`].
fn bases() -> Vec<String> {
    let fixture = |name: &str| {
        std::fs::read_to_string(format!("{FIXTURES}/valid/{name}"))
            .expect("fixture")
            .replace(
                "\"../topo.toml\"",
                "\"../console/tests/fixtures/experiments/topo.toml\"",
            )
    };
    vec![
        include_str!("../../experiments/baseline-none.toml").to_string(),
        include_str!("../../experiments/workloads-none.toml").to_string(),
        fixture("matrix-2x2.toml"),
        fixture("everything.toml"),
        fixture("faults-matrix.toml"),
        include_str!("../../experiments/sttcp-table-3-1.toml").to_string(),
        include_str!("../../experiments/sttcp-table-3-2.toml").to_string(),
        include_str!("../../experiments/app-migration-file-sizes.toml").to_string(),
        include_str!("../../experiments/detection-vs-interval.toml").to_string(),
        include_str!("../../experiments/modes-compared.toml").to_string(),
    ]
}

fn near_valid() -> impl Strategy<Value = String> {
    GEN.near_valid(bases())
}

#[test]
fn the_fuzz_bases_are_valid() {
    for base in bases() {
        let e = parse_str(&base, Path::new(FUZZ_PATH)).unwrap_or_else(|e| panic!("{e}"));
        check_invariants(&e);
    }
}

never_panic_tests! {
    parse: experiment::parse_str,
    invariants: check_invariants,
    located: located,
    path: FUZZ_PATH,
    toml_like: "[\\[\\]{}=\"'.,#% \t\r\na-z0-9_é-]{0,300}",
    documents: document(),
    mutated_experiments_never_panic: near_valid(),
}

/// `[links]` and matrix link keys: each run's links are the topology's with the experiment's
/// over them, the matrix cell's last; the cell's values are its params.
#[test]
fn link_settings_layer_per_run() {
    let exp = load(&Path::new(FIXTURES).join("valid/links.toml")).unwrap_or_else(|e| panic!("{e}"));
    let runs = exp.runs();
    assert_eq!(runs.len(), 8);
    let last = &runs[7];
    assert_eq!(last.params["c1.lan.delay"], "150ms");
    assert_eq!(last.params["lan.loss"], "0.5%");
    let c1 = last.links["c1"]["lan"];
    assert_eq!(
        (c1.rate_bps, c1.delay_us, c1.jitter_us, c1.loss_ppm),
        (Some(10_000_000), Some(150_000), Some(1_000), Some(5_000))
    );
    let s1 = last.links["s1"]["lan"];
    assert_eq!(
        (s1.rate_bps, s1.delay_us, s1.loss_ppm),
        (Some(10_000_000), None, Some(5_000))
    );
    assert!(!last.links["s1"].contains_key("hb"), "{:?}", last.links);
    let first = &runs[0];
    assert_eq!(first.links["c1"]["lan"].delay_us, Some(5_000));
    assert_eq!(first.links["c1"]["lan"].loss_ppm, Some(0));
    assert_eq!(
        halab::experiment::links::record_of(&first.links)["c1.lan"],
        "rate 10Mbit, delay 5ms ± 1ms, loss 0%"
    );
}
