//! The agent binary against its control channel: a real `halab-agent` process driven through
//! its stdin/stdout, well-formed and malformed.
//!
//! These agents run in the test's own network namespace, so the role lifecycle is exercised
//! with roles that start no process (logger, client): the server roles would listen on the
//! machine's ports. Server roles are tested inside testbed namespaces (console tests).

use halab_protocol::frame::{HEADER_LEN, MAGIC, MAX_PAYLOAD, PROTOCOL_VERSION, encode_frame};
use halab_protocol::{AgentMsg, ConsoleMsg, FrameDecoder, Role, RoleState};
use proptest::prelude::*;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_agent() -> Child {
    Command::new(env!("CARGO_BIN_EXE_halab-agent"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start halab-agent")
}

fn hello() -> ConsoleMsg {
    ConsoleMsg::Hello {
        console_version: "test".into(),
        testbed: "t".into(),
        host: "h1".into(),
        probe: false,
    }
}

/// Writes `input` to a fresh agent, closes its stdin, and returns (messages, stderr, exit code).
fn exchange(input: &[u8]) -> (Vec<AgentMsg>, String, i32) {
    let mut child = spawn_agent();
    let mut stdin = child.stdin.take().unwrap();
    // The agent may close the channel before reading everything; a broken pipe is fine.
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(10));
    let mut d = FrameDecoder::new();
    d.feed(&out.0);
    let mut msgs = Vec::new();
    while let Some(p) = d.next_frame().expect("agent output is valid frames") {
        msgs.push(halab_protocol::frame::decode_payload::<AgentMsg>(&p).expect("valid message"));
    }
    d.finish().expect("agent output ends on a frame boundary");
    (msgs, out.1, out.2)
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> (Vec<u8>, String, i32) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = Vec::new();
            child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (out, err, status.code().unwrap_or(-1));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("agent did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn frames(msgs: &[ConsoleMsg]) -> Vec<u8> {
    msgs.iter().flat_map(|m| encode_frame(m).unwrap()).collect()
}

fn last_error(msgs: &[AgentMsg]) -> String {
    match msgs.last() {
        Some(AgentMsg::Error { message }) => message.clone(),
        other => panic!("expected an error frame last, got {other:?}"),
    }
}

#[test]
fn hello_ping_clock_roles_and_shutdown() {
    let input = frames(&[
        hello(),
        ConsoleMsg::Ping { id: 5 },
        ConsoleMsg::ClockProbe { id: 6 },
        ConsoleMsg::StartRole {
            role: Role::Logger,
            mode: Default::default(),
            request: Some(9),
        },
        ConsoleMsg::StopRole { role: Role::Logger },
        ConsoleMsg::Shutdown,
    ]);
    let (msgs, stderr, code) = exchange(&input);
    assert_eq!(code, 0, "stderr: {stderr}");
    let replies: Vec<&AgentMsg> = msgs
        .iter()
        .filter(|m| !matches!(m, AgentMsg::Log { .. }))
        .collect();
    assert!(
        matches!(replies[0], AgentMsg::Hello { host, pid, .. } if host == "h1" && *pid > 0),
        "{replies:?}"
    );
    assert_eq!(replies[1], &AgentMsg::Pong { id: 5 });
    assert!(
        matches!(replies[2], AgentMsg::ClockReply { id: 6, agent_mono_ns } if *agent_mono_ns > 0)
    );
    assert!(matches!(
        replies[3],
        AgentMsg::RoleState {
            role: Role::Logger,
            state: RoleState::Running,
            // The answer names the request it answers.
            request: Some(9),
            ..
        }
    ));
    assert!(matches!(
        replies[4],
        AgentMsg::RoleState {
            role: Role::Logger,
            state: RoleState::Stopped,
            detail: None,
            request: None
        }
    ));
    assert!(matches!(replies[5], AgentMsg::Bye { .. }));
    // The agent's own log lines travel as frames too.
    assert!(
        msgs.iter().any(
            |m| matches!(m, AgentMsg::Log { message, .. } if message.contains("role started"))
        )
    );
}

#[test]
fn probe_reports_every_capability() {
    let input = frames(&[ConsoleMsg::Hello {
        console_version: "test".into(),
        testbed: "t".into(),
        host: "h1".into(),
        probe: true,
    }]);
    let (msgs, _, code) = exchange(&input);
    assert_eq!(code, 0);
    let caps = msgs
        .iter()
        .find_map(|m| match m {
            AgentMsg::Hello { capabilities, .. } => capabilities.clone(),
            _ => None,
        })
        .expect("hello with capabilities");
    for (name, probe) in caps.entries() {
        assert!(!probe.detail.is_empty(), "{name} has no detail");
    }
}

#[test]
fn closed_channel_makes_the_agent_exit_at_once() {
    let mut child = spawn_agent();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&frames(&[
            hello(),
            ConsoleMsg::StartRole {
                role: Role::Client,
                mode: Default::default(),
                request: None,
            },
        ]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    drop(child.stdin.take());
    let (out, _, code) = wait_with_timeout(child, Duration::from_secs(2));
    assert_eq!(code, 0);
    assert!(start.elapsed() < Duration::from_secs(2));
    let mut d = FrameDecoder::new();
    d.feed(&out);
    let mut saw_stop = false;
    while let Some(p) = d.next_frame().unwrap() {
        if let AgentMsg::Log { message, .. } = halab_protocol::frame::decode_payload(&p).unwrap()
            && message.contains("role stopped")
        {
            saw_stop = true;
        }
    }
    assert!(saw_stop, "roles are stopped when the channel closes");
}

#[test]
fn a_silent_console_counts_as_a_closed_channel() {
    // A half-open connection never delivers an end of file: the agent must notice silence.
    let mut child = Command::new(env!("CARGO_BIN_EXE_halab-agent"))
        .env("HALAB_AGENT_SILENCE_MS", "300")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&frames(&[
            hello(),
            ConsoleMsg::StartRole {
                role: Role::Client,
                mode: Default::default(),
                request: None,
            },
        ]))
        .unwrap();
    // stdin stays open, but nothing more is sent.
    let (out, _, code) = wait_with_timeout(child, Duration::from_secs(5));
    drop(stdin);
    assert_eq!(code, 0);
    let mut d = FrameDecoder::new();
    d.feed(&out);
    let mut last = None;
    while let Some(p) = d.next_frame().unwrap() {
        last = Some(halab_protocol::frame::decode_payload::<AgentMsg>(&p).unwrap());
    }
    assert!(
        matches!(&last, Some(AgentMsg::Bye { reason }) if reason.contains("nothing from the console")),
        "{last:?}"
    );
}

#[test]
fn garbage_closes_with_a_clear_error_on_both_sides() {
    let (msgs, stderr, code) = exchange(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(code, 2);
    let err = last_error(&msgs);
    assert!(err.contains("not speaking the halab protocol"), "{err}");
    assert!(err.contains("GET / HTTP/1.1"), "{err}");
    assert!(
        stderr.contains("halab-agent: control channel: peer is not speaking"),
        "{stderr}"
    );
}

#[test]
fn wrong_version_is_refused() {
    let mut f = encode_frame(&hello()).unwrap();
    f[2] = PROTOCOL_VERSION.wrapping_add(1);
    let (msgs, stderr, code) = exchange(&f);
    assert_eq!(code, 2);
    let err = last_error(&msgs);
    assert!(err.contains("protocol version mismatch"), "{err}");
    assert!(stderr.contains("protocol version mismatch"), "{stderr}");
}

#[test]
fn oversized_frame_is_refused() {
    let mut f = MAGIC.to_vec();
    f.extend([PROTOCOL_VERSION, 0]);
    f.extend(((MAX_PAYLOAD + 1) as u32).to_be_bytes());
    let (msgs, _, code) = exchange(&f);
    assert_eq!(code, 2);
    assert!(last_error(&msgs).contains("exceeds the limit"));
}

#[test]
fn truncated_frame_is_reported() {
    let f = encode_frame(&hello()).unwrap();
    let (msgs, stderr, code) = exchange(&f[..HEADER_LEN + 3]);
    assert_eq!(code, 2);
    assert!(last_error(&msgs).contains("in the middle of a frame"));
    assert!(stderr.contains("in the middle of a frame"), "{stderr}");
}

#[test]
fn requests_before_hello_are_refused() {
    let (msgs, _, code) = exchange(&frames(&[ConsoleMsg::Ping { id: 1 }]));
    assert_eq!(code, 2);
    assert!(last_error(&msgs).contains("expected hello"));
}

#[test]
fn unknown_message_type_is_refused() {
    let payload = br#"{"type":"format-disk"}"#;
    let mut f = MAGIC.to_vec();
    f.extend([PROTOCOL_VERSION, 0]);
    f.extend((payload.len() as u32).to_be_bytes());
    f.extend(payload);
    let (msgs, _, code) = exchange(&f);
    assert_eq!(code, 2);
    assert!(last_error(&msgs).contains("malformed message"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    /// Whatever follows a valid hello, the agent answers in valid frames and exits with 0 or 2;
    /// it never crashes (a panic would exit 101).
    #[test]
    fn arbitrary_input_never_crashes_the_agent(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut input = frames(&[hello()]);
        input.extend(tail);
        let (_, stderr, code) = exchange(&input);
        prop_assert!(code == 0 || code == 2, "exit {code}: {stderr}");
    }
}
