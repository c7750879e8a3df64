//! `cargo run -q -p halab-modcycles [CRATE_DIR...]`: checks the module graph of every crate of
//! the workspace (or of the crate directories given) for cycles.
//!
//! Exit status: 0 when every graph is acyclic, 1 when some graph has a cycle, 2 when a crate
//! could not be read (a missing module file, a syntax error), so that CI tells a finding from a
//! breakage.

use std::env;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

const USAGE: &str = "usage: halab-modcycles [CRATE_DIR...]

Checks each crate root (src/lib.rs, src/main.rs) of the given crate directories, or of every
member of the workspace but this tool, for cycles in its module dependency graph.
Exit status: 0 acyclic, 1 a cycle was found, 2 error.";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("halab-modcycles: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<bool> {
    let cwd = env::current_dir().context("reading the current directory")?;
    let base = cwd.canonicalize().unwrap_or(cwd.clone());
    let own_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs: Vec<PathBuf> = if args.is_empty() {
        // The workspace this tool was built in; failing that (a binary moved elsewhere), the
        // current directory.
        let built_in = own_dir.join("../..");
        let root = if built_in.join("Cargo.toml").is_file() {
            built_in
        } else {
            cwd
        };
        halab_modcycles::workspace_crates(&root, own_dir)?
    } else {
        args.iter()
            .map(|a| {
                let dir = PathBuf::from(a);
                dir.canonicalize()
                    .with_context(|| format!("crate directory {}", dir.display()))
            })
            .collect::<Result<_>>()?
    };
    let mut stdout = io::stdout().lock();
    let acyclic = halab_modcycles::check_crates(&dirs, &base, &mut stdout)?;
    stdout.flush().context("writing the report")?;
    Ok(acyclic)
}
