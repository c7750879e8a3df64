//! The console's side of a broken control channel: an "agent" that prints garbage, half a
//! frame, a frame of another protocol version or an absurd length is refused with a clear
//! error, never a panic, and `halab up` removes whatever it had made.

mod support;

use halab::agent::link::spawn_process_link;
use halab::agent::{AgentSession, LinkError};
use halab::error::chain;
use halab_protocol::FrameError;
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;

/// Runs `sh -c script` as the agent and tries a hello with it.
async fn hello_with(script: &str) -> Result<AgentSession, LinkError> {
    let (link, _child) =
        spawn_process_link(Path::new("sh"), &["-c".to_string(), script.to_string()])?;
    AgentSession::handshake(link, "t", "fake", false, Duration::from_secs(5)).await
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn garbage_is_refused_quoting_what_the_peer_said() {
    let err = rt()
        .block_on(hello_with(
            "cat >/dev/null & echo 'bash: halab-agent: command not found'",
        ))
        .unwrap_err();
    assert!(
        matches!(&err, LinkError::Frame(FrameError::BadMagic { .. })),
        "{err:?}"
    );
    let text = chain(&err);
    assert!(
        text.contains("not speaking the halab protocol")
            && text.contains("bash: halab-agent: command not found"),
        "{text}"
    );
}

#[test]
fn truncated_frame_is_reported() {
    // Header announcing 16 bytes, then one byte, then end of stream.
    let err = rt()
        .block_on(hello_with(r"printf 'HL\001\000\000\000\000\020{'"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LinkError::Frame(FrameError::Truncated {
                expected: 24,
                got: 9
            })
        ),
        "{err:?}"
    );
    assert!(chain(&err).contains("channel closed in the middle of a frame"));
}

#[test]
fn wrong_version_is_refused() {
    let err = rt()
        .block_on(hello_with(
            r"printf 'HL\002\000\000\000\000\002{}'; sleep 5",
        ))
        .unwrap_err();
    assert!(
        chain(&err)
            .contains("protocol version mismatch: peer speaks version 2, this side speaks 1"),
        "{}",
        chain(&err)
    );
}

#[test]
fn oversized_frame_is_refused() {
    let err = rt()
        .block_on(hello_with(r"printf 'HL\001\000\377\377\377\377'; sleep 5"))
        .unwrap_err();
    assert!(chain(&err).contains("exceeds the limit"), "{}", chain(&err));
}

#[test]
fn an_agent_that_exits_early_is_reported_with_its_stderr() {
    let err = rt()
        .block_on(hello_with(
            "echo 'agent: cannot open /dev/net/tun' >&2; exit 3",
        ))
        .unwrap_err();
    let text = chain(&err);
    assert!(text.contains("cannot open /dev/net/tun"), "{text}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]
    /// Whatever bytes an agent sends, the handshake ends in a result, never a panic or a hang.
    #[test]
    fn arbitrary_agent_output_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("out");
        std::fs::write(&f, &bytes).unwrap();
        let r = rt().block_on(hello_with(&format!("cat '{}'", f.display())));
        prop_assert!(r.is_err());
    }
}

#[test]
fn up_with_a_broken_agent_fails_clearly_and_leaves_nothing() {
    if !support::netns_available("up_with_a_broken_agent_fails_clearly_and_leaves_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-agent");
    std::fs::write(&fake, "#!/bin/sh\necho 'Welcome to Debian!'\nsleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = support::topology::write_local(dir.path(), "t-badagent", 3);
    let out = std::process::Command::new(support::halab_bin())
        .args(["up", "--no-tui"])
        .arg(&file)
        .env("HALAB_STATE_DIR", dir.path().join("state"))
        .env("HALAB_RUNS_DIR", dir.path().join("runs"))
        .env("HALAB_AGENT", &fake)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not come up") && err.contains("Welcome to Debian!"),
        "{err}"
    );
    let left = support::run("ip", &["netns", "list"]);
    assert!(!left.contains("hl.t-badagent."), "{left}");
}
