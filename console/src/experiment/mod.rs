//! Experiment files (DESIGN §8): a topology, `[run]` settings over the topology's, faults, a
//! matrix of `[run]` values and repetitions; and their expansion into runs.
//!
//! [`load`] reads a file, [`parse_str`] checks text already in memory (reading only the
//! topology file it names); both return the validated [`Experiment`] or an
//! [`ExperimentError`] that names the file, line and column of the first mistake, with a hint,
//! exactly as topology errors do (an invalid topology's error is its own).
//! [`Experiment::runs`] lists the runs in the order they are executed.

mod duration;
pub mod error;
pub mod links;
pub mod model;
pub(crate) mod parse;
pub(crate) mod validate;

pub use error::ExperimentError;
pub use model::*;

use std::path::Path;

/// Reads and checks the experiment file at `path`, and the topology file it names.
pub fn load(path: &Path) -> Result<Experiment, ExperimentError> {
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::read(path, e))?;
    parse_str(&text, path)
}

/// Checks `text`, the contents of the experiment file `path`. Reads the topology file it
/// names (relative to the folder of `path`; `~` expands to `$HOME`) and nothing else: `path`
/// is named in errors and recorded as the experiment's source.
pub fn parse_str(text: &str, path: &Path) -> Result<Experiment, ExperimentError> {
    let raw = parse::from_str(text).map_err(|e| parse::diagnose(path, text, &e))?;
    let home = crate::topology::parse::home_dir();
    validate::experiment(&raw, text, path, home.as_deref())
}
