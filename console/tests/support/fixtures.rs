//! The harness for folders of invalid fixtures (`*.toml`, each beside the `.expected` file
//! holding its exact rendered error), shared by the topology and experiment fixture tests.
//!
//! With `HALAB_BLESS=1` the `.expected` files are rewritten from the current output; review the
//! diff before committing it.

use std::path::{Path, PathBuf};

/// An error with the place it points at, as [`check_location`] checks it.
pub struct Located {
    /// The file the error points into, as its message names it.
    pub path: String,
    /// That file's text, or why the error cannot be checked against it.
    pub text: Result<String, String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The error as shown to users.
    pub rendered: String,
}

/// The `.toml` files in `dir`, sorted. `dir` is relative to the crate folder, where cargo runs
/// integration tests, so the paths in the rendered errors (and so the `.expected` files) are
/// the same on every machine.
pub fn invalid_fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture folder")
        .map(|e| Path::new(dir).join(e.expect("dir entry").file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// `Ok` when the error's line and column lie inside the text of the file it names (a column
/// may be one past the end of its line: an error at the end of a line or file) and the
/// rendering names them, with a hint.
pub fn check_location(d: &Located) -> Result<(), String> {
    let err = &d.rendered;
    let (Some(line), Some(column)) = (d.line, d.column) else {
        return Err(format!("no line/column in:\n{err}"));
    };
    let text = d.text.as_deref().map_err(String::clone)?;
    let lines: Vec<&str> = text.split('\n').collect();
    if line == 0 || line > lines.len() {
        return Err(format!("line {line} outside 1..={}:\n{err}", lines.len()));
    }
    let chars = lines[line - 1].chars().count();
    if column == 0 || column > chars + 1 {
        return Err(format!(
            "column {column} outside 1..={} of line {line}:\n{err}",
            chars + 1
        ));
    }
    let position = format!("{}:{line}:{column}:", d.path);
    if !err.contains(&position) {
        return Err(format!("`{position}` missing from:\n{err}"));
    }
    if !err.contains("hint: ") {
        return Err(format!("no hint in:\n{err}"));
    }
    Ok(())
}

/// Checks that there are at least `min` fixtures in `dir`, that `load` fails on every one
/// with an error that [`check_location`] accepts and that is exactly its `.expected` file
/// (rewritten instead under `HALAB_BLESS=1`), and that no `.expected` file lacks its fixture.
pub fn check_invalid_fixtures(dir: &str, min: usize, load: impl Fn(&Path) -> Result<(), Located>) {
    let bless = std::env::var_os("HALAB_BLESS").is_some_and(|v| v == "1");
    let fixtures = invalid_fixtures(dir);
    assert!(
        fixtures.len() >= min,
        "only {} invalid fixtures",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for path in &fixtures {
        let shown = path.display().to_string();
        let err = match load(path) {
            Ok(()) => {
                failures.push(format!("{shown}: loaded without error"));
                continue;
            }
            Err(e) => e,
        };
        if let Err(problem) = check_location(&err) {
            failures.push(format!("{shown}: {problem}"));
        }
        let rendered = format!("{}\n", err.rendered);
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &rendered).expect("write .expected");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => failures.push(format!(
                "{shown}: error differs from {}\n--- expected\n{expected}--- got\n{rendered}",
                expected_path.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (run with HALAB_BLESS=1 to create it); got\n{rendered}",
                expected_path.display()
            )),
        }
    }
    // No stale .expected files without a fixture.
    for entry in std::fs::read_dir(dir).expect("fixture folder") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "expected")
            && !path.with_extension("toml").exists()
        {
            failures.push(format!("{}: no matching .toml", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
