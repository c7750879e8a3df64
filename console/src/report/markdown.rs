//! The Markdown report. Tables follow the papers' layout where one is reproduced (rows:
//! configurations, columns: workloads or figures), and the per-parameter-set tables give each
//! figure as p50 / p95 / max. A value that was not measured is "—", never 0.

use super::group::{self, Group};
use super::input::{Plot, ReportInput};
use super::paper::{self, PaperTable};
use super::stats::Summary;
use crate::run::record::RunRecord;
use halab_workload::ByteRange;
use std::fmt::Write;

/// The mark for a value that was not measured.
pub const MISSING: &str = "—";

/// Renders the report; `plots` are the plots that were drawn (the others are explained).
pub fn render(input: &ReportInput<'_>, plots: &[Plot]) -> String {
    let records = input.records;
    let groups = group::groups(records);
    let mut md = String::new();
    let names = experiment_names(records);
    let title = if names.is_empty() {
        "(no runs)".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(md, "# Experiment {title}\n");
    let _ = writeln!(
        md,
        "Report of {} from `{}`, written by halab.\n",
        plural(records.len(), "run"),
        input.source
    );
    summary(&mut md, input, &groups);
    failover(&mut md, &groups);
    failure_free(&mut md, &groups);
    for name in &names {
        if let Some(t) = paper::table_for(name) {
            paper_table(&mut md, t, records);
        }
    }
    integrity(&mut md, &groups, records);
    errors(&mut md, records);
    plot_links(&mut md, input, plots);
    environment(&mut md, records, input.source);
    md
}

fn experiment_names(records: &[RunRecord]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in records {
        if !names.contains(&r.experiment.as_str()) {
            names.push(&r.experiment);
        }
    }
    names
}

fn summary(md: &mut String, input: &ReportInput<'_>, groups: &[Group<'_>]) {
    let records = input.records;
    let _ = writeln!(md, "## Summary\n");
    let mut t = Table::new(&["", ""], "l l");
    let runs = match input.planned_runs {
        Some(p) if p != records.len() => format!("{} of {p} planned", records.len()),
        _ => records.len().to_string(),
    };
    t.row(vec!["Runs".into(), runs]);
    t.row(vec!["Parameter sets".into(), groups.len().to_string()]);
    let mut modes: Vec<&str> = Vec::new();
    for g in groups {
        if !modes.contains(&g.mode.as_str()) {
            modes.push(&g.mode);
        }
    }
    t.row(vec!["Modes".into(), or_missing(modes.join(", "))]);
    let first = records.iter().map(|r| r.started_unix_ms).min();
    let last = records
        .iter()
        .map(|r| r.started_unix_ms + r.duration_ms.max(0.0) as u64)
        .max();
    t.row(vec![
        "First run started".into(),
        first.map_or(MISSING.into(), utc),
    ]);
    t.row(vec![
        "Last run ended".into(),
        last.map_or(MISSING.into(), utc),
    ]);
    let errors = records.iter().filter(|r| r.error.is_some()).count();
    t.row(vec!["Runs with an error".into(), errors.to_string()]);
    let ok = records.iter().filter(|r| r.integrity.integrity_ok).count();
    t.row(vec![
        "Integrity".into(),
        format!("{ok} of {} ok", plural(records.len(), "run")),
    ]);
    // The links' delay lines (only runs that had some): a drop there is a packet the emulated
    // link lost beyond its configured loss.
    let lined: Vec<&RunRecord> = records
        .iter()
        .filter(|r| !r.delay_lines.is_empty())
        .collect();
    if !lined.is_empty() {
        let (delayed, dropped) = lined
            .iter()
            .flat_map(|r| r.delay_lines.values())
            .fold((0u64, 0u64), |(d, x), l| (d + l.delayed, x + l.dropped));
        t.row(vec![
            "Delay-line drops".into(),
            format!(
                "{dropped} of {} packets ({})",
                delayed + dropped,
                plural(lined.len(), "run")
            ),
        ]);
    }
    for mode in &modes {
        let s = Summary::of(
            records
                .iter()
                .filter(|r| r.mode == *mode)
                .map(|r| r.failover_ms),
        );
        if let Some(s) = s {
            t.row(vec![
                format!("Failover p50, {mode}"),
                format!("{} ms ({})", ms(s.p50), plural(s.n, "run")),
            ]);
        }
    }
    md.push_str(&t.render());
    md.push('\n');
}

fn failover(md: &mut String, groups: &[Group<'_>]) {
    let faulted: Vec<&Group<'_>> = groups.iter().filter(|g| g.faulted()).collect();
    let _ = writeln!(md, "## Failover under faults\n");
    if faulted.is_empty() {
        let _ = writeln!(md, "No run had a fault.\n");
        return;
    }
    let _ = writeln!(
        md,
        "Times in ms after T_fault, when the fault took effect. Each cell is p50 / p95 / max \
         over the runs that measured the figure (nearest rank; how many in parentheses when not \
         all). Failover: T_resume − T_fault, the client's first new byte; detection: \
         T_detect − T_fault; takeover: T_takeover − T_fault; stall: the longest gap between \
         received bytes.\n"
    );
    let mut t = Table::new(
        &[
            "Mode",
            "Parameters",
            "Runs",
            "Failover",
            "Detection",
            "Takeover",
            "Stall",
        ],
        "l l r r r r r",
    );
    for g in faulted {
        let n = g.runs.len();
        t.row(vec![
            g.mode.clone(),
            g.parameters(),
            n.to_string(),
            triple(g.summary(|r| r.failover_ms), n),
            triple(g.summary(|r| r.detect_ms), n),
            triple(g.summary(|r| r.takeover_ms), n),
            triple(g.summary(|r| r.stall_ms), n),
        ]);
    }
    md.push_str(&t.render());
    md.push('\n');
}

/// A run's total time when it completed.
fn clean_duration(r: &RunRecord) -> Option<f64> {
    r.error.is_none().then_some(r.duration_ms)
}

fn failure_free(md: &mut String, groups: &[Group<'_>]) {
    let free: Vec<&Group<'_>> = groups.iter().filter(|g| !g.faulted()).collect();
    let _ = writeln!(md, "## Failure-free runs\n");
    if free.is_empty() {
        let _ = writeln!(md, "Every run had a fault.\n");
        return;
    }
    let _ = writeln!(
        md,
        "Total time: client start to the end of its last connection, in ms, p50 / p95 / max. \
         Overhead: this set's p50 against the p50 of mode `none` with the same workload \
         (— without such runs).\n"
    );
    let mut t = Table::new(
        &[
            "Mode",
            "Parameters",
            "Runs",
            "Total time",
            "Goodput (p50)",
            "Overhead vs none",
        ],
        "l l r r r r",
    );
    for g in &free {
        let n = g.runs.len();
        let d = g.summary(clean_duration);
        let bytes = Summary::of(
            g.runs
                .iter()
                .map(|r| Some(r.integrity.bytes_expected as f64)),
        );
        let goodput = match (d, bytes) {
            (Some(d), Some(b)) if d.p50 > 0.0 => format!("{:.1} MB/s", b.p50 / d.p50 / 1000.0),
            _ => MISSING.into(),
        };
        let is_baseline = |mode: &str| {
            crate::topology::Mode::from_name(mode).is_some_and(|m| m.behaviour().is_baseline())
        };
        let baseline = free
            .iter()
            .find(|b| is_baseline(&b.mode) && b.load == g.load)
            .and_then(|b| b.summary(clean_duration));
        let overhead = match (is_baseline(&g.mode), d, baseline) {
            (true, Some(_), _) => "baseline".to_string(),
            (_, Some(d), Some(b)) if b.p50 > 0.0 => {
                let diff = d.p50 - b.p50;
                format!(
                    "{:+.1} % ({}{} ms)",
                    diff / b.p50 * 100.0,
                    if diff >= 0.0 { "+" } else { "" },
                    ms(diff)
                )
            }
            _ => MISSING.into(),
        };
        t.row(vec![
            g.mode.clone(),
            g.parameters(),
            n.to_string(),
            triple(d, n),
            goodput,
            overhead,
        ]);
    }
    md.push_str(&t.render());
    md.push('\n');
}

fn paper_table(md: &mut String, table: &PaperTable, records: &[RunRecord]) {
    let unit = table.unit;
    let _ = writeln!(md, "## {} ({})\n", table.title, unit.name());
    let _ = writeln!(
        md,
        "The paper's numbers as published, each beside ours: the mean over our matching runs \
         (how many in parentheses), {MISSING} where none of our runs matches. {}\n",
        table.note
    );
    let mut headers: Vec<&str> = vec![""];
    headers.extend(table.columns.iter().map(|c| c.label));
    let align = std::iter::once("l")
        .chain(table.columns.iter().map(|_| "r"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut t = Table::new(&headers, &align);
    for row in table.rows {
        let mut paper_cells = vec![format!("{} (paper)", row.label)];
        paper_cells.extend(row.paper.iter().map(|v| v.to_string()));
        t.row(paper_cells);
        let mut ours = vec![format!("{} (halab)", row.label)];
        for column in table.columns {
            let s = Summary::of(
                records
                    .iter()
                    .filter(|r| PaperTable::selects(row, column, r))
                    .map(|r| column.metric.of(r)),
            );
            ours.push(match s {
                Some(s) => {
                    let v = unit.from_ms(s.mean);
                    let shown = match unit {
                        super::paper::Unit::Seconds => format!("{v:.3}"),
                        super::paper::Unit::Millis if v.abs() >= 100.0 => format!("{v:.1}"),
                        super::paper::Unit::Millis => format!("{v:.3}"),
                    };
                    format!("{shown} ({})", s.n)
                }
                None => MISSING.into(),
            });
        }
        t.row(ours);
    }
    md.push_str(&t.render());
    md.push('\n');
}

fn integrity(md: &mut String, groups: &[Group<'_>], records: &[RunRecord]) {
    let _ = writeln!(md, "## Integrity\n");
    let _ = writeln!(
        md,
        "Every byte a client received is checked against the content it must be. Bytes summed \
         over the set's runs; refetched bytes were asked for again by the client (not a \
         failure).\n"
    );
    let mut t = Table::new(
        &[
            "Mode",
            "Parameters",
            "Runs",
            "Verdict",
            "Lost",
            "Duplicated",
            "Corrupted",
            "Refetched",
        ],
        "l l r l r r r r",
    );
    for g in groups {
        let n = g.runs.len();
        let failed = g.runs.iter().filter(|r| !r.integrity.integrity_ok).count();
        let verdict = if failed == 0 {
            "ok".to_string()
        } else {
            format!("FAILED in {failed} of {n}")
        };
        let sum = |f: fn(&RunRecord) -> u64| g.runs.iter().map(|r| f(r)).sum::<u64>().to_string();
        t.row(vec![
            g.mode.clone(),
            g.parameters(),
            n.to_string(),
            verdict,
            sum(|r| r.integrity.bytes_lost),
            sum(|r| r.integrity.bytes_duplicated),
            sum(|r| r.integrity.bytes_corrupted),
            sum(|r| r.integrity.bytes_refetched),
        ]);
    }
    md.push_str(&t.render());
    md.push('\n');
    let failed: Vec<&RunRecord> = records
        .iter()
        .filter(|r| !r.integrity.integrity_ok)
        .collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(md, "### Runs that failed the check\n");
    for r in failed {
        let i = &r.integrity;
        let mut what = Vec::new();
        if i.bytes_lost > 0 {
            what.push(format!("lost {} B{}", i.bytes_lost, at_ranges(&i.lost)));
        }
        if i.bytes_duplicated > 0 {
            what.push(format!(
                "duplicated {} B{}",
                i.bytes_duplicated,
                at_ranges(&i.duplicated)
            ));
        }
        if i.bytes_corrupted > 0 {
            what.push(format!(
                "corrupted {} B{}",
                i.bytes_corrupted,
                at_ranges(&i.corrupted)
            ));
        }
        if i.bytes_excess > 0 {
            what.push(format!("{} B beyond the end of the stream", i.bytes_excess));
        }
        if i.bytes_received < i.bytes_expected && i.bytes_lost == 0 {
            what.push(format!(
                "received {} of {} B",
                i.bytes_received, i.bytes_expected
            ));
        }
        if let Some(e) = &r.error {
            what.push(format!("the run ended in an error: {}", escape(e)));
        }
        if i.ranges_truncated {
            what.push("(more ranges than the record keeps)".into());
        }
        if what.is_empty() {
            what.push("a connection gave up".into());
        }
        let _ = writeln!(md, "- {}: {}.", run_name(r), what.join("; "));
    }
    md.push('\n');
}

fn at_ranges(ranges: &[ByteRange]) -> String {
    if ranges.is_empty() {
        return String::new();
    }
    let list: Vec<String> = ranges
        .iter()
        .map(|r| format!("[{}, {})", r.offset, r.offset + r.len))
        .collect();
    format!(" at {}", list.join(", "))
}

fn errors(md: &mut String, records: &[RunRecord]) {
    let failed: Vec<&RunRecord> = records.iter().filter(|r| r.error.is_some()).collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Errors\n");
    for r in failed {
        let _ = writeln!(
            md,
            "- {}: {}",
            run_name(r),
            escape(r.error.as_deref().unwrap_or_default())
        );
    }
    md.push('\n');
}

/// `Run 10 (st-tcp, HB 200 ms × 3, bulk 20 MB, power-off of primary, repetition 1)`.
fn run_name(r: &RunRecord) -> String {
    let mut parts = vec![r.mode.clone()];
    let mp = group::mode_params(r);
    if !mp.is_empty() {
        parts.push(mp);
    }
    parts.push(group::load(r));
    let links = group::links(r);
    if !links.is_empty() {
        parts.push(links);
    }
    if let Some(f) = group::fault(r) {
        parts.push(f);
    }
    parts.push(format!("repetition {}", r.repetition));
    format!("Run {} ({})", r.run_index, parts.join(", "))
}

fn plot_links(md: &mut String, input: &ReportInput<'_>, plots: &[Plot]) {
    let _ = writeln!(md, "## Plots\n");
    let [(tp, _), (fo, _)] = super::plot::names(input.plot_stem);
    for p in plots {
        let _ = writeln!(md, "![{}]({})\n", p.title, p.file_name);
    }
    if !plots.iter().any(|p| p.file_name == tp) {
        let _ = writeln!(
            md,
            "No throughput plot: no run with a fault that took effect recorded throughput.\n"
        );
    }
    if !plots.iter().any(|p| p.file_name == fo) {
        let _ = writeln!(md, "No failover plot: no run measured a failover.\n");
    }
}

fn environment(md: &mut String, records: &[RunRecord], source: &str) {
    let _ = writeln!(md, "## Environment\n");
    let mut t = Table::new(&["", ""], "l l");
    t.row(vec![
        "halab version".into(),
        distinct(records, |r| Some(r.halab_version.clone())),
    ]);
    t.row(vec![
        "Kernel".into(),
        distinct(records, |r| r.kernel.clone()),
    ]);
    t.row(vec![
        "Topology".into(),
        distinct(records, |r| Some(format!("`{}`", r.topology))),
    ]);
    t.row(vec![
        "Capabilities (client host)".into(),
        distinct(records, |r| {
            let c = r.capabilities.as_ref()?;
            let probes = [
                ("root", &c.root),
                ("namespaces", &c.namespaces),
                ("AF_PACKET", &c.af_packet),
                ("TCP_REPAIR", &c.tcp_repair),
                ("nftables", &c.nftables),
                ("netem", &c.netem),
            ];
            Some(
                probes
                    .iter()
                    .map(|(name, p)| {
                        if p.ok {
                            format!("{name} yes")
                        } else {
                            format!("{name} no ({})", p.detail)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        }),
    ]);
    t.row(vec!["Results".into(), format!("`{source}`")]);
    md.push_str(&t.render());
}

/// The distinct values over the runs, joined; — when no run has one.
fn distinct(records: &[RunRecord], f: impl Fn(&RunRecord) -> Option<String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for v in records.iter().filter_map(f) {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    or_missing(seen.join("; "))
}

fn or_missing(s: String) -> String {
    if s.is_empty() { MISSING.into() } else { s }
}

/// `p50 / p95 / max`, with the count when fewer than `runs` measured it; — when none did.
fn triple(s: Option<Summary>, runs: usize) -> String {
    match s {
        None => MISSING.into(),
        Some(s) => {
            let mut out = format!("{} / {} / {}", ms(s.p50), ms(s.p95), ms(s.max));
            if s.n != runs {
                out.push_str(&format!(" ({})", s.n));
            }
            out
        }
    }
}

fn ms(v: f64) -> String {
    format!("{v:.1}")
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `2026-11-22 19:32:55 UTC`.
fn utc(unix_ms: u64) -> String {
    let c = crate::state::compact_utc(unix_ms);
    // compact_utc gives YYYYMMDDTHHMMSS (ASCII).
    match (
        c.get(0..4),
        c.get(4..6),
        c.get(6..8),
        c.get(9..11),
        c.get(11..13),
        c.get(13..15),
    ) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) => {
            format!("{y}-{mo}-{d} {h}:{mi}:{s} UTC")
        }
        _ => c,
    }
}

/// Text safe in a table cell or list item: no pipe, no line break.
fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A Markdown table with its columns padded to one width, readable as text too.
struct Table {
    headers: Vec<String>,
    /// `l` or `r` per column.
    align: Vec<char>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[&str], align: &str) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            align: align
                .split_whitespace()
                .map(|a| a.chars().next().unwrap_or('l'))
                .collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| escape(c)).collect());
    }

    fn render(&self) -> String {
        let n = self.headers.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .chain(std::iter::once(&self.headers[i]))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let right = |i: usize| self.align.get(i) == Some(&'r');
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(c.chars().count());
                if right(i) {
                    s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
                }
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.headers);
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            if right(i) {
                out.push_str(&format!(" {}: |", "-".repeat(w - 1)));
            } else {
                out.push_str(&format!(" {} |", "-".repeat(*w)));
            }
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}
