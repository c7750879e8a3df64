//! Topology files: parsing, validation and the validated model (DESIGN §8).
//!
//! [`load`] reads a file, [`parse_str`] checks text already in memory; both return the
//! validated [`Topology`] or a [`TopologyError`] that names the file, line and column of the
//! first mistake in the file, with a hint.

pub mod diagnostic;
pub mod link_plan;
pub mod link_units;
pub mod model;
pub(crate) mod parse;
pub mod synthetic;
pub(crate) mod validate;

pub use diagnostic::TopologyError;
pub use model::*;

use std::path::Path;

/// Reads and checks the topology file at `path`. A file that cannot be read is a
/// [`TopologyError`] naming the file, as a syntax error is.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|e| TopologyError::read(path, e))?;
    parse_str(&text, path)
}

/// Checks `text`, the contents of the topology file `path`. Reads nothing: `path` is only
/// named in errors, recorded as the topology's source, and the folder relative `key` and
/// `known_hosts` paths are resolved against (`~` expands to `$HOME`).
pub fn parse_str(text: &str, path: &Path) -> Result<Topology, TopologyError> {
    let raw = parse::from_str(text).map_err(|e| parse::diagnose(path, text, &e))?;
    let home = parse::home_dir();
    Ok(validate::topology(&raw, text, path, home.as_deref())?)
}
