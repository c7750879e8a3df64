//! The `halab` command line as a user meets it: help, exit codes, and error messages.

mod support;

use std::process::Command;
use support::halab_bin;

fn halab(state: &std::path::Path) -> Command {
    let mut c = Command::new(halab_bin());
    c.env("HALAB_STATE_DIR", state)
        .env("HALAB_RUNS_DIR", state.join("runs"));
    c
}

#[test]
fn help_names_every_command() {
    let out = Command::new(halab_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["up", "down", "status", "check"] {
        assert!(text.contains(&format!("  {cmd} ")), "{text}");
    }
}

#[test]
fn an_invalid_topology_exits_non_zero_with_file_line_column_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = "tests/fixtures/topologies/invalid/address-outside-subnet.toml";
    let expected = std::fs::read_to_string(fixture.replace(".toml", ".expected")).unwrap();
    for cmd in ["check", "up"] {
        let out = halab(dir.path()).args([cmd, fixture]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end(), expected.trim_end(), "{cmd}");
        assert!(out.stdout.is_empty(), "nothing on stdout for {cmd}");
    }
    // Nothing was created for a file that does not validate.
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn status_with_nothing_up_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = halab(dir.path()).arg("status").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no testbed is up"));
    let out = halab(dir.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn down_of_a_testbed_that_is_not_up_is_harmless() {
    if !support::netns_available("down_of_a_testbed_that_is_not_up_is_harmless") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = halab(dir.path())
        .args(["down", "--name", "never-was-up"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing left to remove"));
}

#[test]
fn down_refuses_a_name_that_is_not_a_testbed_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = halab(dir.path())
        .args(["down", "--name", "../etc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a testbed name"));
}

#[test]
fn check_probes_this_machine_for_a_local_topology() {
    if !support::netns_available("check_probes_this_machine_for_a_local_topology") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = halab(dir.path())
        .args(["check", "../topologies/two-server.toml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("valid — testbed two-server"), "{text}");
    for cap in [
        "root",
        "namespaces",
        "af_packet",
        "tcp_repair",
        "nftables",
        "netem",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(cap)),
            "{cap} missing: {text}"
        );
    }
    // Which fault kinds this machine supports, with the reason for each.
    assert!(text.contains("fault kinds on this machine:"), "{text}");
    for kind in [
        "process-kill",
        "nic-down",
        "loss",
        "partition",
        "power-off",
        "delay",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(kind)),
            "{kind} missing: {text}"
        );
    }
    let out = halab(dir.path())
        .args(["check", "--json", "../topologies/two-server.toml"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["probes"][0]["capabilities"]["root"]["ok"], true);
}

/// A power fault on an ssh host without the topology's power commands is refused before
/// anything is brought up, naming the missing key.
#[test]
fn power_off_of_an_ssh_host_without_power_commands_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    std::fs::write(&key, "not read before the refusal").unwrap();
    let hosts: String = [("a", "primary", 1), ("b", "backup", 2), ("c", "client", 3)]
        .iter()
        .map(|(name, role, i)| {
            format!(
                "[[hosts]]\nname = \"{name}\"\nroles = [\"{role}\"]\n\
                 addresses = {{ service = \"10.70.0.{i}\" }}\nuser = \"root\"\nkey = \"{}\"\n{}\n",
                key.display(),
                if *name == "a" {
                    "power_command = \"virsh destroy {name}\""
                } else {
                    ""
                }
            )
        })
        .collect();
    std::fs::write(
        dir.path().join("topology.toml"),
        format!(
            "name = \"t-cli-pwr\"\nprovider = \"ssh\"\nservice_address = \"10.70.0.100\"\n\
             [run]\nmode = \"none\"\n[[networks]]\nname = \"service\"\n\
             subnet = \"10.70.0.0/24\"\n{hosts}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("exp.toml"),
        "name = \"pwr\"\ntopology = \"topology.toml\"\n[run]\nworkload = \"bulk\"\n\
         [[faults]]\nat = \"1s\"\nkind = \"power-off\"\ntarget = \"primary\"\n",
    )
    .unwrap();
    let out = halab(dir.path())
        .args(["run", &dir.path().join("exp.toml").display().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("fault `power-off` on ssh host a needs `power_on_command` in the topology"),
        "{err}"
    );
    // Refused before anything was brought up.
    assert!(!dir.path().join("t-cli-pwr.json").exists());
}

/// `halab check` takes an experiment file too: its runs are checked as `halab run` would, and
/// one that cannot run on its topology is refused with the reason.
#[test]
fn check_validates_an_experiment_and_probes_its_topology() {
    if !support::netns_available("check_validates_an_experiment_and_probes_its_topology") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = halab(dir.path())
        .args(["check", "../experiments/workloads-none.toml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("valid — experiment workloads-none, 5 runs, modes none"),
        "{text}"
    );
    assert!(text.contains("valid — testbed two-server"), "{text}");

    std::fs::copy(
        "../topologies/two-server.toml",
        dir.path().join("topology.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("exp.toml"),
        "name = \"craft\"\ntopology = \"topology.toml\"\n[run]\nmode = \"craft\"\n",
    )
    .unwrap();
    let out = halab(dir.path())
        .args(["check", &dir.path().join("exp.toml").display().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("exp.toml:4:8: mode `craft` needs a host with role `lb`"),
        "{err}"
    );
}
