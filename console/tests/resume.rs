//! Interruption: the real `halab run` killed with SIGKILL after its first record landed, then
//! `halab run --resume`: the finished runs are not run again, a torn last line is cut off with
//! a message, a changed matrix is refused, nothing of the testbed is left, and the report has
//! the structure of one from an uninterrupted run.
//!
//! On a renamed copy of topologies/two-server.toml (testbed `t-resume`), mode none, so it runs
//! beside the other namespace tests.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::cli_lab::CliLab;
use support::netns_available;

const TESTBED: &str = "t-resume";

/// The run folders under the lab's runs folder.
fn run_dirs(lab: &CliLab) -> BTreeSet<PathBuf> {
    match std::fs::read_dir(lab.path("runs")) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn namespaces_left() -> Vec<String> {
    support::run("ip", &["netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&format!("hl.{TESTBED}.")))
        .map(str::to_string)
        .collect()
}

fn records(results: &Path) -> Vec<Value> {
    std::fs::read_to_string(results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
        .collect()
}

/// Headings and the first cell of every table row: what a report of the same experiment has
/// whatever its numbers.
fn structure(md: &str) -> Vec<String> {
    md.lines()
        .filter_map(|l| {
            if l.starts_with('#') {
                Some(l.to_string())
            } else if l.starts_with("| ") {
                l.split('|').nth(1).map(|c| c.trim().to_string())
            } else {
                None
            }
        })
        .collect()
}

const EXPERIMENT: &str = "topology = \"topology.toml\"\nname = \"resume\"\nrepetitions = 2\n\
     [run]\nmode = \"none\"\nworkload = \"bulk\"\nsize = \"200MB\"\n\
     [matrix]\nclients = [1, 2]\n";

#[test]
fn kill_9_then_resume_runs_only_what_is_left() {
    if !netns_available("kill_9_then_resume_runs_only_what_is_left") {
        return;
    }
    let lab = CliLab::new("two-server", TESTBED);
    let file = lab.path("experiment.toml");
    std::fs::write(&file, EXPERIMENT).unwrap();

    // 1. Run, and SIGKILL the console once the first record is on disk.
    let stderr_file = std::fs::File::create(lab.path("first.stderr")).unwrap();
    let mut console = lab
        .halab()
        .arg("run")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_dir = loop {
        if let Some(d) = run_dirs(&lab).into_iter().next()
            && std::fs::read_to_string(d.join("results.jsonl")).is_ok_and(|t| t.contains('\n'))
        {
            break d;
        }
        assert!(
            console.try_wait().unwrap().is_none(),
            "halab run ended before it could be killed: {}",
            std::fs::read_to_string(lab.path("first.stderr")).unwrap()
        );
        assert!(Instant::now() < deadline, "no record within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    console.kill().unwrap(); // SIGKILL
    let status = console.wait().unwrap();
    assert!(!status.success(), "killed: {status:?}");
    let results = run_dir.join("results.jsonl");
    let before = records(&results);
    assert!(
        (1..4).contains(&before.len()),
        "killed after {} of 4 runs",
        before.len()
    );
    assert!(
        !namespaces_left().is_empty(),
        "a killed console leaves its testbed"
    );
    // As a kill in the middle of a write would leave it: half a record, no newline.
    let whole = std::fs::read(&results).unwrap();
    let first_line = &whole[..whole.iter().position(|b| *b == b'\n').unwrap()];
    let mut torn = whole.clone();
    torn.extend_from_slice(&first_line[..first_line.len() / 2]);
    std::fs::write(&results, &torn).unwrap();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();

    // 2. A changed matrix is refused, before anything is brought up or cut.
    std::fs::write(
        &file,
        EXPERIMENT.replace("repetitions = 2", "repetitions = 3"),
    )
    .unwrap();
    let out = lab
        .halab()
        .args(["run"])
        .arg(&file)
        .args(["--resume", &run_id])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("describes different runs"), "{stderr}");
    assert_eq!(std::fs::read(&results).unwrap(), torn, "nothing touched");

    // 3. Resume (a comment added meanwhile changes no run): only the missing runs run.
    std::fs::write(&file, format!("# resumed\n{EXPERIMENT}")).unwrap();
    let out = lab
        .halab()
        .args(["run"])
        .arg(&file)
        .args(["--resume", &run_id])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("removed a torn last line"), "{stderr}");
    assert!(
        stderr.contains("was left up by the interrupted run"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{} runs done, {} to go",
            before.len(),
            4 - before.len()
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches(" start: ").count(),
        4 - before.len(),
        "{stderr}"
    );
    let after = records(&results);
    assert_eq!(after.len(), 4);
    // The finished runs are the same records, untouched.
    assert_eq!(&after[..before.len()], &before[..]);
    let keys: BTreeSet<(u64, u64)> = after
        .iter()
        .map(|r| {
            (
                r["cell"].as_u64().unwrap(),
                r["repetition"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, BTreeSet::from([(0, 1), (0, 2), (1, 1), (1, 2)]));
    let hash = after[0]["plan_hash"].as_str().unwrap();
    assert!(after.iter().all(|r| r["plan_hash"] == hash));
    for r in &after {
        assert_eq!(r["error"], Value::Null, "{r}");
        assert_eq!(r["integrity_ok"], true, "{r}");
    }
    assert!(namespaces_left().is_empty(), "{:?}", namespaces_left());

    // 4. Resuming a finished run runs nothing.
    let out = lab
        .halab()
        .args(["run"])
        .arg(&file)
        .args(["--resume", &run_id])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("nothing left to run"), "{stderr}");
    assert_eq!(records(&results).len(), 4);

    // 5. The report has the structure of an uninterrupted run's.
    let reports = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        v.sort();
        v
    };
    let resumed_reports = reports(&lab.path("reports"));
    assert_eq!(resumed_reports.len(), 1, "{resumed_reports:?}");
    let resumed_md = std::fs::read_to_string(&resumed_reports[0]).unwrap();
    std::fs::rename(lab.path("reports"), lab.path("reports-resumed")).unwrap();
    let out = lab.halab().arg("run").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = reports(&lab.path("reports"));
    assert_eq!(fresh.len(), 1);
    let fresh_md = std::fs::read_to_string(&fresh[0]).unwrap();
    assert_eq!(structure(&resumed_md), structure(&fresh_md));
    assert!(namespaces_left().is_empty(), "{:?}", namespaces_left());
}
