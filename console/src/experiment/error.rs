//! Why an experiment file could not be loaded.

use crate::topology::TopologyError;
use crate::topology::diagnostic::Diagnostic;
use std::path::Path;

/// An experiment file that could not be read or is invalid, or the topology it names is
/// invalid. Either way `Display` renders the whole diagnostic (file, line and column when
/// known, the offending line, a hint), ready to print as is, exactly as a [`TopologyError`]
/// does; a topology's error is its own, naming the topology file.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// About the experiment file itself (including a `topology` path that cannot be read,
    /// which points at that value).
    #[error("{diagnostic}")]
    Experiment {
        /// Boxed: it is large, and `Result`s should stay small.
        diagnostic: Box<Diagnostic>,
        /// The read error, when the experiment file could not be read; its text is part of the
        /// diagnostic, so it is not `source()` as well (it would be printed twice).
        io: Option<std::io::Error>,
    },
    /// The topology file named by `topology` was read but is not a valid topology.
    #[error("{0}")]
    Topology(TopologyError),
}

impl ExperimentError {
    /// The experiment file at `path` could not be read.
    pub fn read(path: &Path, error: std::io::Error) -> Self {
        let hint = match error.kind() {
            std::io::ErrorKind::NotFound => {
                "check the path; the shipped experiments are in `experiments/`"
            }
            std::io::ErrorKind::InvalidData => "an experiment file must be UTF-8 text",
            std::io::ErrorKind::PermissionDenied => "check the file's permissions",
            _ => "check that the path names a readable file",
        };
        ExperimentError::Experiment {
            diagnostic: Box::new(Diagnostic::whole_file(
                path,
                format!("cannot read the experiment file: {error}"),
                hint,
            )),
            io: Some(error),
        }
    }

    pub fn diagnostic(&self) -> &Diagnostic {
        match self {
            ExperimentError::Experiment { diagnostic, .. } => diagnostic,
            ExperimentError::Topology(e) => e.diagnostic(),
        }
    }

    /// The topology's own error, when the topology file is what is wrong.
    pub fn topology_error(&self) -> Option<&TopologyError> {
        match self {
            ExperimentError::Topology(e) => Some(e),
            ExperimentError::Experiment { .. } => None,
        }
    }

    /// The read error, if the experiment file could not be read.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            ExperimentError::Experiment { io, .. } => io.as_ref(),
            ExperimentError::Topology(_) => None,
        }
    }

    /// The file the error is in: the experiment file, or the topology file.
    pub fn path(&self) -> &Path {
        &self.diagnostic().path
    }

    pub fn line(&self) -> Option<usize> {
        self.diagnostic().line()
    }

    pub fn column(&self) -> Option<usize> {
        self.diagnostic().column()
    }

    pub fn message(&self) -> &str {
        &self.diagnostic().message
    }

    pub fn hint(&self) -> &str {
        &self.diagnostic().hint
    }
}

impl From<Diagnostic> for ExperimentError {
    fn from(diagnostic: Diagnostic) -> Self {
        ExperimentError::Experiment {
            diagnostic: Box::new(diagnostic),
            io: None,
        }
    }
}

impl From<TopologyError> for ExperimentError {
    fn from(error: TopologyError) -> Self {
        ExperimentError::Topology(error)
    }
}
