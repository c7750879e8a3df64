//! `halab-modcycles`: fails CI when a crate's module graph has a cycle.
//!
//! This is our stand-in for `cargo modules dependencies --acyclic`, which would compile
//! rust-analyzer on every CI run. Module A depends on module B when code written directly in A
//! (not in A's child modules, which are nodes of their own) names an item of B, through a `use`
//! or a path anywhere in the code. Dependencies between a module and its own ancestors or
//! descendants count like any other: a parent calling into a child that uses `super::Thing` is
//! a cycle, and the fix is to move what both need into a sibling module.
//!
//! Resolution is syntactic (`src/resolve.rs`): paths that start with `crate`, `super`, `self`,
//! a child module or an imported name are followed, through re-exports, to the module that
//! defines the item; everything else (std, external crates, locals) is ignored. Code generated
//! by macros is not seen (nor a `mod` declared by one), though paths written inside macro
//! invocations are. Only the conventional roots `src/lib.rs` and `src/main.rs` are checked.

mod check;
mod graph;
mod refs;
mod resolve;
mod scope;
mod tree;
mod workspace;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use check::{Cycle, Edge, RootReport, check_root};

/// The crate roots this tool checks in a crate directory, each a crate of its own.
const ROOTS: [&str; 2] = ["src/lib.rs", "src/main.rs"];

/// Checks every crate root (`src/lib.rs`, `src/main.rs`) of the crate in `dir`.
pub fn check_crate_dir(dir: &Path) -> Result<Vec<RootReport>> {
    let name = workspace::package_name(dir)?;
    let mut reports = Vec::new();
    for root in ROOTS.map(Path::new) {
        if dir.join(root).is_file() {
            let report = check_root(&name, dir, root)
                .with_context(|| format!("checking {name} ({})", root.display()))?;
            reports.push(report);
        }
    }
    if reports.is_empty() {
        bail!("{}: no src/lib.rs or src/main.rs", dir.display());
    }
    Ok(reports)
}

/// The crate directories to check by default: every member of the workspace at
/// `workspace_root` except the one at `exclude` (this tool itself, whose own tests check it).
pub fn workspace_crates(workspace_root: &Path, exclude: &Path) -> Result<Vec<PathBuf>> {
    let exclude = exclude
        .canonicalize()
        .unwrap_or_else(|_| exclude.to_path_buf());
    let mut out = Vec::new();
    for dir in workspace::member_dirs(workspace_root)? {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("workspace member {}", dir.display()))?;
        if dir != exclude {
            out.push(dir);
        }
    }
    Ok(out)
}

/// Checks the crates in `dirs` and writes one summary line per crate root, with the cycles
/// found, to `out` (files relative to `base`). Returns whether every graph is acyclic.
pub fn check_crates(dirs: &[PathBuf], base: &Path, out: &mut dyn Write) -> Result<bool> {
    let mut acyclic = true;
    for dir in dirs {
        for report in check_crate_dir(dir)? {
            acyclic &= report.is_acyclic();
            out.write_all(report.render(base).as_bytes())
                .context("writing the report")?;
        }
    }
    Ok(acyclic)
}
