//! Reports: a results fixture (tests/fixtures/reports/modes-compared.jsonl: three modes, with
//! and without a power-off, one run that lost and duplicated bytes, one that timed out)
//! renders to the expected Markdown; the SVGs parse and hold one line per mode with the
//! plotted points; the paper tables put our numbers beside the paper's and "—" where we have
//! none; the JSON and CSV exports; and `halab report` on the command line.
//!
//! `HALAB_BLESS=1 cargo test -p halab --test report` rewrites the expected Markdown from the
//! current output; review the diff before committing it.

mod support;

use halab::report::{self, ReportInput, export, plot};
use halab::run::record::{RunRecord, parse_results};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::halab_bin;

const FIXTURE: &str = "tests/fixtures/reports/modes-compared.jsonl";
const EXPECTED: &str = "tests/fixtures/reports/modes-compared.expected.md";

fn records() -> Vec<RunRecord> {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let parsed = parse_results(&bytes).unwrap();
    assert_eq!(parsed.torn_tail, None);
    assert_eq!(parsed.records.len(), 12);
    parsed.records
}

fn render(records: &[RunRecord]) -> report::Report {
    report::render(&ReportInput {
        records,
        plot_stem: "modes-compared",
        source: FIXTURE,
        planned_runs: Some(12),
    })
    .unwrap()
}

#[test]
fn the_fixture_renders_to_the_expected_markdown() {
    let md = render(&records()).markdown;
    if std::env::var("HALAB_BLESS").as_deref() == Ok("1") {
        std::fs::write(EXPECTED, &md).unwrap();
    }
    let expected = std::fs::read_to_string(EXPECTED).unwrap();
    if md != expected {
        for (i, (a, b)) in md.lines().zip(expected.lines()).enumerate() {
            if a != b {
                panic!(
                    "line {} differs:\n got: {a}\nwant: {b}\n(HALAB_BLESS=1 rewrites {EXPECTED})",
                    i + 1
                );
            }
        }
        panic!(
            "lengths differ: {} vs {} lines",
            md.lines().count(),
            expected.lines().count()
        );
    }
}

#[test]
fn the_report_shows_what_matters_and_never_a_missing_value_as_zero() {
    let md = render(&records()).markdown;
    // Every mode, the integrity failure with its ranges, the error, the overhead.
    for needle in [
        "| none ",
        "| app-migration ",
        "| st-tcp ",
        "FAILED in 2 of 2",
        "lost 1448 B at [8001448, 8002896)",
        "duplicated 2896 B at [7998552, 8001448)",
        "the client did not finish within the run timeout of 60s",
        "+3.1 % (+2.9 ms)",
        "baseline",
        "![Throughput around the fault, per mode](modes-compared-throughput.svg)",
        "![Failover latency distribution, per mode](modes-compared-failover.svg)",
        "6.18.44-fc-v657",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    // st-tcp measured one failover of two runs: the count says so.
    assert!(md.contains("702.8 / 702.8 / 702.8 (1)"), "{md}");
    // Nothing in the fixture is a zero latency: a 0.0 would be a missing value shown as 0.
    assert!(!md.contains(" 0.0 "), "{md}");
}

#[test]
fn a_paper_table_puts_ours_beside_the_paper_s_and_a_dash_where_we_have_none() {
    let mut rs = records();
    for r in &mut rs {
        r.experiment = "sttcp-table-3-2".into();
    }
    let md = render(&rs).markdown;
    assert!(
        md.contains("## Thesis (Marwah 2008) table 3.2: ST-TCP failover time (s)"),
        "{md}"
    );
    let row = |label: &str| -> Vec<String> {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {label} ")))
            .unwrap_or_else(|| panic!("no row {label} in\n{md}"));
        line.split('|')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    assert_eq!(
        row("ST-TCP 50ms HB (paper)"),
        [
            "ST-TCP 50ms HB (paper)",
            "0.219",
            "0.412",
            "0.417",
            "0.627",
            "0.676",
            "0.422"
        ]
    );
    // Our one st-tcp failover at HB 200 ms, bulk 20 MB: 702.8 ms, the mean of 1 run.
    assert_eq!(
        row("ST-TCP 200ms HB (halab)"),
        [
            "ST-TCP 200ms HB (halab)",
            "—",
            "—",
            "—",
            "—",
            "0.703 (1)",
            "—"
        ]
    );
    assert_eq!(
        row("ST-TCP 5s HB (halab)"),
        ["ST-TCP 5s HB (halab)", "—", "—", "—", "—", "—", "—"]
    );
}

fn parse_svg(svg: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("SVG does not parse: {e}"))
}

/// The polylines of `doc` drawn in `rgb` (plotters writes `stroke="#rrggbb"`), as point lists.
fn lines_in(doc: &roxmltree::Document<'_>, rgb: &str) -> Vec<Vec<(f64, f64)>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            n.attribute("stroke")
                .is_some_and(|s| s.eq_ignore_ascii_case(rgb))
        })
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').expect("x,y");
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect()
}

const MODES: [(&str, &str); 3] = [
    ("none", "#5A5A5A"),
    ("app-migration", "#1F77B4"),
    ("st-tcp", "#D62728"),
];

#[test]
fn the_svgs_parse_and_hold_one_named_line_per_mode() {
    let rs = records();
    let rendered = render(&rs);
    let names: Vec<&str> = rendered
        .plots
        .iter()
        .map(|p| p.file_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "modes-compared-throughput.svg",
            "modes-compared-failover.svg"
        ]
    );
    let expected_series = [plot::throughput_series(&rs), plot::failover_cdf_series(&rs)];
    for (p, series) in rendered.plots.iter().zip(expected_series) {
        let doc = parse_svg(&p.svg);
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts = texts(&doc);
        assert!(
            texts.iter().any(|t| t == &p.title),
            "{}: {texts:?}",
            p.file_name
        );
        assert_eq!(series.len(), 3, "{}", p.file_name);
        for ((mode, colour), s) in MODES.iter().zip(&series) {
            assert_eq!(&s.name, mode);
            // The series' name in the legend, and its line: the longest polyline in its
            // colour (the legend's sample is a 2-point path) with one vertex per point.
            assert!(
                texts.iter().any(|t| t == mode),
                "{}: no legend entry {mode}: {texts:?}",
                p.file_name
            );
            let lines = lines_in(&doc, colour);
            let longest = lines.iter().map(Vec::len).max().unwrap_or(0);
            assert_eq!(
                longest,
                s.points.len(),
                "{}: the {mode} line has {longest} vertices, the series {} points",
                p.file_name,
                s.points.len()
            );
        }
    }
    // The throughput series dips to nothing after the fault for every mode (the fixture's
    // failovers are 600 ms and more) and carries bytes before it.
    for s in plot::throughput_series(&rs) {
        let at = |t: f64| {
            s.points
                .iter()
                .find(|(x, _)| (*x - t).abs() < 1e-9)
                .map(|p| p.1)
                .unwrap()
        };
        assert!(at(-30.0) > 0.0, "{}: nothing before the fault", s.name);
        assert_eq!(at(300.0), 0.0, "{}: bytes 300 ms after the fault", s.name);
    }
    // The failover CDF ends at 1 at the slowest failover.
    for s in plot::failover_cdf_series(&rs) {
        assert_eq!(s.points.last().unwrap().1, 1.0, "{}", s.name);
    }
}

#[test]
fn no_plot_without_a_fault_and_the_report_says_why() {
    let rs: Vec<RunRecord> = records()
        .into_iter()
        .filter(|r| r.faults.is_empty())
        .collect();
    let rendered = render(&rs);
    assert!(rendered.plots.is_empty());
    assert!(rendered.markdown.contains("No throughput plot"));
    assert!(rendered.markdown.contains("No failover plot"));
    assert!(rendered.markdown.contains("No run had a fault."));
}

#[test]
fn the_json_export_has_every_run_and_every_parameter_set() {
    let v: Value = serde_json::from_str(&export::to_json(&records())).unwrap();
    assert_eq!(v["experiment"], serde_json::json!(["modes-compared"]));
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 12);
    assert_eq!(runs[0]["failover_ms"], Value::Null);
    assert_eq!(runs[0]["faults"], "");
    assert_eq!(runs[2]["failover_ms"], 1005.860406);
    assert_eq!(runs[2]["faults"], "power-off of primary");
    assert_eq!(runs[10]["bytes_lost"], 1448);
    assert_eq!(runs[10]["integrity_ok"], false);
    assert_eq!(runs[11]["duration_ms"], Value::Null);
    assert_eq!(runs[4]["heartbeat_ms"], 200);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 6);
    assert_eq!(groups[1]["mode"], "none");
    assert_eq!(groups[1]["failover_ms"]["p50"], 1005.860406);
    assert_eq!(groups[1]["failover_ms"]["max"], 1009.05473);
    assert_eq!(groups[0]["failover_ms"], Value::Null);
    assert_eq!(groups[5]["integrity_failures"], 2);
    assert_eq!(groups[5]["errors"], 1);
    assert_eq!(groups[5]["failover_ms"]["n"], 1);
}

#[test]
fn the_csv_export_has_a_header_and_one_row_per_run_with_empty_missing_fields() {
    let csv = export::to_csv(&records());
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 13);
    assert_eq!(lines[0], export::CSV_COLUMNS.join(","));
    let col = |name: &str| export::CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    for r in &rows {
        assert_eq!(r.len(), export::CSV_COLUMNS.len(), "{r:?}");
    }
    assert_eq!(rows[0][col("failover_ms")], "");
    assert_eq!(rows[0][col("heartbeat_ms")], "");
    assert_eq!(rows[2][col("failover_ms")], "1005.860406");
    assert_eq!(rows[2][col("mode")], "none");
    assert_eq!(rows[8][col("heartbeat_ms")], "200");
    assert_eq!(rows[10][col("bytes_duplicated")], "2896");
    assert_eq!(rows[10][col("integrity_ok")], "false");
    assert_eq!(
        rows[11][col("error")],
        "the client did not finish within the run timeout of 60s"
    );
    assert_eq!(rows[11][col("duration_ms")], "");
}

fn halab_report(args: &[&str]) -> std::process::Output {
    Command::new(halab_bin())
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn halab_report_writes_markdown_with_its_plots_and_exports_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("out/r.md");
    let out = halab_report(&[FIXTURE, "-o", md.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&md).unwrap();
    // Linked relatively, and there.
    for svg in ["r-throughput.svg", "r-failover.svg"] {
        assert!(text.contains(&format!("]({svg})")), "{text}");
        parse_svg(&std::fs::read_to_string(dir.path().join("out").join(svg)).unwrap());
    }
    // Without -o: <reports-dir>/<experiment>-<date of the first run>.md.
    let reports = dir.path().join("reports");
    let out = Command::new(halab_bin())
        .args(["report", FIXTURE, "--reports-dir"])
        .arg(&reports)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reports.join("modes-compared-20261122T193255.md").exists());
    assert!(
        reports
            .join("modes-compared-20261122T193255-failover.svg")
            .exists()
    );

    let out = halab_report(&[FIXTURE, "--format", "json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 12);

    let csv_file = dir.path().join("r.csv");
    let out = halab_report(&[FIXTURE, "--format", "csv", "-o", csv_file.to_str().unwrap()]);
    assert!(out.status.success());
    let csv = std::fs::read_to_string(&csv_file).unwrap();
    assert_eq!(csv.split("\r\n").filter(|l| !l.is_empty()).count(), 13);

    // Markdown needs a file for its plots.
    let out = halab_report(&[FIXTURE, "-o", "-"]);
    assert!(!out.status.success());
}

#[test]
fn halab_report_leaves_out_a_torn_last_line_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.jsonl");
    let mut bytes = std::fs::read(FIXTURE).unwrap();
    let torn = bytes.clone();
    let last_start = torn[..torn.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    // The last record cut in the middle, as a kill during its write leaves it.
    bytes.truncate(last_start + (torn.len() - last_start) / 2);
    std::fs::write(&results, &bytes).unwrap();
    let out = halab_report(&[results.to_str().unwrap(), "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("incomplete"), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 11);

    // A damaged line before the last is an error, not silently skipped.
    let mut damaged = std::fs::read(FIXTURE).unwrap();
    damaged[10] = b'#';
    std::fs::write(&results, &damaged).unwrap();
    let out = halab_report(&[results.to_str().unwrap(), "--format", "json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1 is not a run record"));
    let _ = Path::new(FIXTURE);
}
