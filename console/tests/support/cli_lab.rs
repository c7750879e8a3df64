//! A testbed driven through the `halab` binary, as a user would: a temp folder holding a
//! renamed copy of a shipped topology, the state, runs and reports folders of its commands,
//! and `halab down` on drop (also when the test fails).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct CliLab {
    pub dir: tempfile::TempDir,
    /// The testbed's name (unique per test, so tests run in parallel).
    pub name: String,
}

impl CliLab {
    /// A copy of `topologies/<shipped>.toml` renamed to `name`, as `topology.toml`.
    pub fn new(shipped: &str, name: &str) -> CliLab {
        let dir = tempfile::tempdir().unwrap();
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../topologies")
            .join(format!("{shipped}.toml"));
        let text = std::fs::read_to_string(file).unwrap();
        let text = text.replace(
            &format!("name = \"{shipped}\""),
            &format!("name = \"{name}\""),
        );
        assert!(text.contains(name));
        std::fs::write(dir.path().join("topology.toml"), text).unwrap();
        CliLab {
            dir,
            name: name.to_string(),
        }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// `halab` with this lab's state, runs and reports folders (a run's report goes into the
    /// lab, not the source tree).
    pub fn halab(&self) -> Command {
        let mut c = Command::new(super::halab_bin());
        c.env("HALAB_STATE_DIR", self.path("state"))
            .env("HALAB_RUNS_DIR", self.path("runs"))
            .env("HALAB_REPORTS_DIR", self.path("reports"));
        c
    }

    /// The folder of the (first) run that wrote a results.jsonl.
    pub fn run_dir(&self) -> PathBuf {
        std::fs::read_dir(self.path("runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("results.jsonl").exists())
            .expect("a results.jsonl")
    }

    /// Writes `experiment` (on this lab's topology: its `topology` key is added) and runs it
    /// with `halab run`, which must succeed; returns its records.
    pub fn run(&self, experiment: &str) -> Vec<Value> {
        let file = self.path("experiment.toml");
        std::fs::write(&file, format!("topology = \"topology.toml\"\n{experiment}")).unwrap();
        let out = self.halab().arg("run").arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "halab run failed:\n{stderr}");
        eprintln!("{stderr}");
        std::fs::read_to_string(self.run_dir().join("results.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a JSON record"))
            .collect()
    }

    /// The console's log of the run.
    pub fn console_log(&self) -> String {
        std::fs::read_to_string(self.run_dir().join("logs/console.log")).unwrap_or_default()
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("hl.{}.{host}", self.name)
    }
}

impl Drop for CliLab {
    fn drop(&mut self) {
        let _ = self.halab().args(["down", "--name", &self.name]).output();
    }
}
