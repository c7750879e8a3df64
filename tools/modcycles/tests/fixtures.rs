//! The checker on the fixture crates of `tests/fixtures/` (plain source trees, never compiled),
//! through the library rather than a subprocess.

use std::path::{Path, PathBuf};

use halab_modcycles::{Cycle, RootReport, check_crate_dir, check_crates, workspace_crates};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The report of the fixture's `src/lib.rs`.
fn lib_report(name: &str) -> RootReport {
    let reports = check_crate_dir(&fixture(name)).unwrap();
    reports
        .into_iter()
        .find(|r| r.root == Path::new("src/lib.rs"))
        .unwrap()
}

fn modules(cycle: &Cycle) -> Vec<&str> {
    cycle.modules.iter().map(String::as_str).collect()
}

fn has_edge(report: &RootReport, from: &str, to: &str) -> bool {
    report.edges.iter().any(|e| e.from == from && e.to == to)
}

#[test]
fn clean_tree_is_acyclic() {
    let reports = check_crate_dir(&fixture("clean")).unwrap();
    assert_eq!(
        reports.len(),
        2,
        "lib.rs and main.rs are checked separately"
    );

    let lib = &reports[0];
    assert_eq!(lib.root, Path::new("src/lib.rs"));
    assert!(lib.is_acyclic(), "{}", lib.render(Path::new("")));
    // crate, a, b, b::c, d (through #[path]), inline.
    assert_eq!(lib.modules, 6);
    for (from, to) in [
        ("crate", "crate::a"),
        ("crate::a", "crate::b"),
        ("crate::a", "crate::b::c"),
        ("crate::b", "crate::b::c"),
        ("crate::d", "crate::b"),
        ("crate::inline", "crate::b"),
    ] {
        assert!(has_edge(lib, from, to), "no edge {from} -> {to}");
    }
    assert_eq!(lib.edges.len(), 6, "{:#?}", lib.edges);
    assert_eq!(
        lib.render(Path::new("")),
        "clean (src/lib.rs): 6 modules, 6 edges, acyclic\n"
    );

    let bin = &reports[1];
    assert_eq!(bin.root, Path::new("src/main.rs"));
    assert_eq!(bin.modules, 2);
    assert!(bin.is_acyclic());
    assert!(has_edge(bin, "crate", "crate::cli"));
}

#[test]
fn parent_and_child_through_super_is_a_cycle() {
    let report = lib_report("parent_child");
    assert_eq!(report.cycles.len(), 1);
    let cycle = &report.cycles[0];
    assert_eq!(modules(cycle), ["crate::parent", "crate::parent::child"]);
    assert_eq!(cycle.edges.len(), 2);
    let up = cycle
        .edges
        .iter()
        .find(|e| e.from == "crate::parent::child")
        .unwrap();
    assert_eq!(up.to, "crate::parent");
    assert_eq!(up.text, "super::Thing");
    assert_eq!(up.line, 1);
    assert!(up.file.ends_with("parent_child/src/parent/child.rs"));
}

#[test]
fn siblings_through_crate_paths_are_a_cycle() {
    let report = lib_report("siblings");
    assert_eq!(report.cycles.len(), 1);
    let cycle = &report.cycles[0];
    assert_eq!(modules(cycle), ["crate::a", "crate::b"]);
    let texts: Vec<(&str, &str, usize)> = cycle
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.text.as_str(), e.line))
        .collect();
    assert_eq!(
        texts,
        [
            ("crate::a", "crate::b::fb", 4),
            ("crate::b", "crate::a::A", 1)
        ]
    );
    let rendered = report.render(&fixture("siblings"));
    assert!(
        rendered.contains("    src/a.rs:4: crate::a -> crate::b (crate::b::fb)\n"),
        "{rendered}"
    );
}

#[test]
fn cycle_behind_a_reexport_is_found() {
    let report = lib_report("reexport");
    assert_eq!(report.cycles.len(), 1, "{}", report.render(Path::new("")));
    let cycle = &report.cycles[0];
    // Through the re-export, `a` depends on `b` itself, not on `facade`.
    assert_eq!(modules(cycle), ["crate::a", "crate::b"]);
    let a_to_b = cycle.edges.iter().find(|e| e.from == "crate::a").unwrap();
    assert_eq!(a_to_b.to, "crate::b");
    assert_eq!(a_to_b.text, "crate::facade::Thing");
    assert!(!has_edge(&report, "crate::a", "crate::facade"));
    assert!(has_edge(&report, "crate::facade", "crate::b"));
    // A re-export of an external item leads out of the crate.
    assert!(!has_edge(&report, "crate::b", "crate::facade"));
}

#[test]
fn test_module_globbing_its_parent_is_no_cycle() {
    let report = lib_report("test_module");
    assert!(report.is_acyclic(), "{}", report.render(Path::new("")));
    assert_eq!(report.modules, 2);
    assert!(has_edge(&report, "crate::tests", "crate"));
    assert!(!has_edge(&report, "crate", "crate::tests"));
}

#[test]
fn import_through_a_parent_leads_to_the_defining_module() {
    let report = lib_report("private_import");
    assert!(report.is_acyclic(), "{}", report.render(Path::new("")));
    assert!(has_edge(&report, "crate::parent::child", "crate::shared"));
    assert!(!has_edge(&report, "crate::parent::child", "crate::parent"));
}

#[test]
fn paths_inside_macro_invocations_count() {
    let report = lib_report("macro_cycle");
    assert_eq!(report.cycles.len(), 1);
    let a_to_b = report.cycles[0]
        .edges
        .iter()
        .find(|e| e.from == "crate::a")
        .unwrap();
    assert_eq!(a_to_b.text, "crate::b::NAME");
    assert_eq!(a_to_b.line, 7);
}

#[test]
fn missing_module_file_is_an_error_naming_the_declaration() {
    let error = check_crate_dir(&fixture("missing_file")).unwrap_err();
    let chain = format!("{error:#}");
    assert!(
        chain.contains("checking missing_file (src/lib.rs)"),
        "{chain}"
    );
    assert!(chain.contains("src/lib.rs:4: `mod absent;`"), "{chain}");
    assert!(chain.contains("module file not found"), "{chain}");
    assert!(chain.contains("absent/mod.rs"), "{chain}");
}

#[test]
fn syntax_error_is_an_error_naming_the_place() {
    let error = check_crate_dir(&fixture("syntax_error")).unwrap_err();
    let chain = format!("{error:#}");
    assert!(chain.contains("syntax_error/src/broken.rs:3:"), "{chain}");
}

#[test]
fn check_crates_reports_every_root_and_whether_all_are_acyclic() {
    let base = fixture("");
    let mut out = Vec::new();
    let acyclic = check_crates(&[fixture("clean"), fixture("test_module")], &base, &mut out);
    assert!(acyclic.unwrap());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "clean (src/lib.rs): 6 modules, 6 edges, acyclic\n\
         clean (src/main.rs): 2 modules, 1 edges, acyclic\n\
         test_module (src/lib.rs): 2 modules, 1 edges, acyclic\n"
    );

    let mut out = Vec::new();
    let acyclic = check_crates(&[fixture("clean"), fixture("siblings")], &base, &mut out);
    assert!(!acyclic.unwrap());
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("siblings (src/lib.rs): 3 modules, 2 edges, 1 cycle\n  cycle 1 (2 modules): crate::a, crate::b\n"), "{text}");
    assert!(
        text.contains("    siblings/src/b.rs:1: crate::b -> crate::a (crate::a::A)\n"),
        "{text}"
    );
}

/// The tool holds itself to its own rule.
#[test]
fn this_crate_is_acyclic() {
    for report in check_crate_dir(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap() {
        assert!(report.is_acyclic(), "{}", report.render(Path::new("")));
    }
}

#[test]
fn workspace_members_exclude_this_tool() {
    let own = Path::new(env!("CARGO_MANIFEST_DIR"));
    let members = workspace_crates(&own.join("../.."), own).unwrap();
    assert!(!members.is_empty());
    let own = own.canonicalize().unwrap();
    assert!(members.iter().all(|m| *m != own), "{members:?}");
}
