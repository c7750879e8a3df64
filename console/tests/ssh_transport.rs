//! The SSH transport (provider `ssh`) against a real OpenSSH server in a network namespace:
//! host key policy, authentication, agent upload, and the agent's link over the exec channel.
//!
//! Every test runs sshd in its own pair of namespaces (`hlt-ssh-<tag>-srv/-cli`) and installs
//! the agent into its own temporary directory, so the tests run in parallel and leave nothing
//! behind, also when they fail.

mod support;

use halab::agent::{AgentLink, AgentSession, LinkError, LinkEvent};
use halab::error::chain;
use halab::provider::ssh::{SshConnection, SshError, SshOptions, SshTarget, connect_agent};
use halab_protocol::ConsoleMsg;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::sshd::{self, ALT_PORT, SERVER_ADDR, Sshd};
use tokio::sync::mpsc::Receiver;

const TIMEOUT: Duration = Duration::from_secs(20);

fn available(test: &str) -> bool {
    support::netns_available(test) && sshd::sshd_available(test)
}

fn target(key: &Path) -> SshTarget {
    SshTarget {
        name: "srv".into(),
        address: SERVER_ADDR.into(),
        port: 22,
        user: "root".into(),
        key: key.to_path_buf(),
    }
}

fn options(known_hosts: PathBuf, accept_new: bool, remote_dir: String) -> SshOptions {
    let mut o = SshOptions::new(known_hosts, accept_new);
    o.remote_dir = remote_dir;
    o.connect_timeout = Duration::from_secs(10);
    o
}

/// Runs `connect_agent` from the client namespace and hands its result to `then`, on the
/// same thread and runtime (the link's task lives on that runtime).
fn with_connection<T: Send + 'static>(
    fx: &Sshd,
    target: SshTarget,
    opts: SshOptions,
    agent: PathBuf,
    then: impl AsyncFnOnce(Result<(AgentLink, SshConnection), SshError>) -> T + Send + 'static,
) -> T {
    support::in_netns(&fx.client_ns.name, move || {
        Box::pin(async move {
            let r = connect_agent(&target, &opts, &agent).await;
            then(r).await
        })
    })
}

/// Connects and returns the error text, panicking when the connection succeeds.
fn connect_err(fx: &Sshd, target: SshTarget, opts: SshOptions) -> String {
    with_connection(
        fx,
        target,
        opts,
        PathBuf::from("/bin/cat"),
        async |r| match r {
            Ok((_, conn)) => panic!("connected to {}, expected a refusal", conn.addr()),
            Err(e) => chain(&e),
        },
    )
}

/// Connects, expecting success; closes the connection (stopping the agent) and returns
/// whether it uploaded.
fn connect_ok(fx: &Sshd, target: SshTarget, opts: SshOptions) -> bool {
    let log = fx.log();
    with_connection(
        fx,
        target,
        opts,
        PathBuf::from("/bin/cat"),
        async move |r| {
            let (_link, conn) = r.unwrap_or_else(|e| panic!("{}\nsshd log:\n{log}", chain(&e)));
            let uploaded = conn.uploaded();
            conn.close().await;
            uploaded
        },
    )
}

/// Waits (up to 5 s) until no `halab-agent` runs in namespace `ns`, from inside a test's
/// runtime, where the connection that ran it is still open.
async fn wait_no_agent_in(ns: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !sshd::agent_pids(ns).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent still running in {ns} with the connection open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sha256_of(path: &Path) -> String {
    let out = support::run("sha256sum", &[path.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().to_string()
}

/// The next event that is not a stderr line, within `TIMEOUT`; stderr lines go to `stderr`.
async fn next_non_stderr(events: &mut Receiver<LinkEvent>, stderr: &mut Vec<String>) -> LinkEvent {
    loop {
        match tokio::time::timeout(TIMEOUT, events.recv()).await {
            Err(_) => panic!("no event within {TIMEOUT:?}; stderr so far: {stderr:?}"),
            Ok(None) => panic!("link ended without a Closed event"),
            Ok(Some(LinkEvent::Stderr(line))) => stderr.push(line),
            Ok(Some(ev)) => return ev,
        }
    }
}

/// (1) The real agent is uploaded on first use, answers hello and ping over the exec channel,
/// and shuts down; a second connection finds it installed and does not upload it again.
#[test]
fn deploy_handshake_ping_and_no_second_upload() {
    if !available("deploy_handshake_ping_and_no_second_upload") {
        return;
    }
    let fx = Sshd::start("deploy");
    let known = fx.write_known_hosts("known_hosts", &(fx.known_hosts_line() + "\n"));
    let remote = fx.remote_dir("remote");
    let agent = support::agent_bin();
    for first in [true, false] {
        let opts = options(known.clone(), false, remote.clone());
        let log = fx.log();
        let uploaded = with_connection(
            &fx,
            target(&fx.client_key),
            opts,
            agent.clone(),
            async move |r| {
                let (link, conn) = r.unwrap_or_else(|e| panic!("{}\nsshd log:\n{log}", chain(&e)));
                let mut session = AgentSession::handshake(link, "ssh-test", "srv", false, TIMEOUT)
                    .await
                    .unwrap_or_else(|e| panic!("handshake: {}", chain(&e)));
                assert_eq!(session.info.agent_version, halab_protocol::HALAB_VERSION);
                assert!(session.local_pid().is_none());
                let rtt = session
                    .ping(TIMEOUT)
                    .await
                    .unwrap_or_else(|e| panic!("ping: {}", chain(&e)));
                assert!(rtt < TIMEOUT);
                session
                    .shutdown(TIMEOUT)
                    .await
                    .unwrap_or_else(|e| panic!("shutdown: {}", chain(&e)));
                let uploaded = conn.uploaded();
                conn.close().await;
                uploaded
            },
        );
        assert_eq!(uploaded, first, "uploaded on the first connection only");
        fx.wait_no_agent(Duration::from_secs(5));
    }
    let installed = Path::new(&remote).join("halab-agent");
    assert_eq!(sha256_of(&installed), sha256_of(&agent));
    // No temporary upload file is left behind.
    let names: Vec<_> = std::fs::read_dir(&remote)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["halab-agent".to_string()]);
}

/// (2) A host whose key is not on file is refused with a message naming the address, the file,
/// the key's fingerprint and the flag; with accept-new it is trusted and recorded, and later
/// connections without the flag succeed. The same on a port other than 22, whose entry is
/// `[address]:port`.
#[test]
fn unknown_host_key_is_refused_unless_accept_new() {
    if !available("unknown_host_key_is_refused_unless_accept_new") {
        return;
    }
    let fx = Sshd::start("unknown");
    let known = fx.write_known_hosts("known_hosts", "");
    let remote = fx.remote_dir("remote");

    let err = connect_err(
        &fx,
        target(&fx.client_key),
        options(known.clone(), false, remote.clone()),
    );
    assert_eq!(
        err,
        format!(
            "host key of {SERVER_ADDR}:22 is not in {}; verify it (ssh-ed25519 {}) and re-run \
             with --accept-new-host-keys to trust it",
            known.display(),
            fx.host_fingerprint()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        "",
        "nothing learned"
    );
    assert!(!Path::new(&remote).exists(), "nothing uploaded");

    assert!(connect_ok(
        &fx,
        target(&fx.client_key),
        options(known.clone(), true, remote.clone())
    ));
    let text = std::fs::read_to_string(&known).unwrap();
    let key_b64 = fx.host_pub.split_whitespace().nth(1).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines, vec![format!("{SERVER_ADDR} ssh-ed25519 {key_b64}")]);

    assert!(!connect_ok(
        &fx,
        target(&fx.client_key),
        options(known.clone(), false, remote.clone())
    ));
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        text,
        "learned once"
    );

    // Another port is another entry, `[address]:port`, found again once learned.
    let alt = SshTarget {
        port: ALT_PORT,
        ..target(&fx.client_key)
    };
    let err = connect_err(
        &fx,
        alt.clone(),
        options(known.clone(), false, remote.clone()),
    );
    assert!(
        err.starts_with(&format!("host key of {SERVER_ADDR}:{ALT_PORT} is not in ")),
        "{err}"
    );
    connect_ok(
        &fx,
        alt.clone(),
        options(known.clone(), true, remote.clone()),
    );
    let text = std::fs::read_to_string(&known).unwrap();
    let entry = format!("[{SERVER_ADDR}]:{ALT_PORT} ssh-ed25519 {key_b64}");
    assert!(text.lines().any(|l| l == entry), "{text}");
    connect_ok(&fx, alt, options(known.clone(), false, remote));
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        text,
        "learned once"
    );
}

/// (3) A host whose key differs from the one on file is refused, even with accept-new, and the
/// message names the file and the line (counting comment lines, as an editor does).
#[test]
fn changed_host_key_is_refused_naming_file_and_line() {
    if !available("changed_host_key_is_refused_naming_file_and_line") {
        return;
    }
    let fx = Sshd::start("changed");
    let other = fx.path("other_host_key");
    sshd::keygen(&other);
    let other_pub = sshd::public_key(&other);
    let content = format!("# hosts of the lab\n10.98.0.9 {other_pub}\n{SERVER_ADDR} {other_pub}\n");
    let known = fx.write_known_hosts("known_hosts", &content);
    for accept_new in [false, true] {
        let err = connect_err(
            &fx,
            target(&fx.client_key),
            options(known.clone(), accept_new, fx.remote_dir("remote")),
        );
        assert!(
            err.starts_with(&format!(
                "host key of {SERVER_ADDR}:22 CHANGED: it does not match {} line 3 (the server \
                 offered ssh-ed25519 {})",
                known.display(),
                fx.host_fingerprint()
            )),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&known).unwrap(), content);
}

/// (4) A client key the server does not accept gives a message naming the key, user and
/// address; an encrypted or missing key is refused before any connection.
#[test]
fn wrong_client_key_is_refused_with_a_clear_message() {
    if !available("wrong_client_key_is_refused_with_a_clear_message") {
        return;
    }
    let fx = Sshd::start("authfail");
    let known = fx.write_known_hosts("known_hosts", &(fx.known_hosts_line() + "\n"));
    let opts = || options(known.clone(), false, fx.remote_dir("remote"));

    let stranger = fx.path("stranger_ed25519");
    sshd::keygen(&stranger);
    let err = connect_err(&fx, target(&stranger), opts());
    assert_eq!(
        err,
        format!(
            "ssh: server refused key {} for user root@{SERVER_ADDR}:22",
            stranger.display()
        )
    );

    let locked = fx.path("locked_ed25519");
    sshd::keygen_with_passphrase(&locked, "secret phrase");
    let err = connect_err(&fx, target(&locked), opts());
    assert_eq!(
        err,
        format!(
            "ssh: private key {} is protected by a passphrase, which halab does not support; \
             use a key without one",
            locked.display()
        )
    );

    let missing = fx.path("no_such_key");
    let err = connect_err(&fx, target(&missing), opts());
    assert!(
        err.starts_with(&format!(
            "ssh: cannot load private key {}: ",
            missing.display()
        )),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");
}

/// (5) What the remote program writes to stderr arrives as stderr lines, dropping the link
/// closes its stdin, and a non-zero exit status is reported with those lines. `/bin/sh`
/// stands in for the agent: the frame it reads is no command, which it says on stderr when
/// its input ends.
#[test]
fn stderr_lines_eof_on_drop_and_exit_status() {
    if !available("stderr_lines_eof_on_drop_and_exit_status") {
        return;
    }
    let fx = Sshd::start("stderr");
    let known = fx.write_known_hosts("known_hosts", &(fx.known_hosts_line() + "\n"));
    let opts = options(known, false, fx.remote_dir("remote"));
    let (stderr, closed) = with_connection(
        &fx,
        target(&fx.client_key),
        opts,
        PathBuf::from("/bin/sh"),
        async |r| {
            let (link, conn) = r.unwrap_or_else(|e| panic!("{}", chain(&e)));
            assert!(conn.uploaded());
            link.send(ConsoleMsg::Ping { id: 1 }).await.unwrap();
            // Dropping the sender is what closes the program's stdin.
            let (tx, mut events) = link.into_parts();
            drop(tx);
            let mut stderr = Vec::new();
            let ev = next_non_stderr(&mut events, &mut stderr).await;
            let closed = match ev {
                LinkEvent::Closed(r) => r.map_err(|e| chain(&e)),
                other => panic!("expected Closed, got {other:?}"),
            };
            conn.close().await;
            (stderr, closed)
        },
    );
    assert!(
        stderr.iter().any(|l| l.contains("not found")),
        "stderr lines: {stderr:?}"
    );
    let err = closed.expect_err("sh exits with status 127");
    assert!(
        err.starts_with(&format!(
            "agent exited (exit status 127 on {SERVER_ADDR}:22): "
        )),
        "{err}"
    );
    assert!(err.contains("not found"), "{err}");
    fx.wait_no_agent(Duration::from_secs(5));
}

/// A program that answers with something other than agent messages (`cat` echoing the
/// console's own frames) closes the link with a frame error, and the channel is closed so
/// the program goes away.
#[test]
fn invalid_frames_close_the_link_and_the_channel() {
    if !available("invalid_frames_close_the_link_and_the_channel") {
        return;
    }
    let fx = Sshd::start("frames");
    let known = fx.write_known_hosts("known_hosts", &(fx.known_hosts_line() + "\n"));
    let opts = options(known, false, fx.remote_dir("remote"));
    let server_ns = fx.server_ns.name.clone();
    let closed = with_connection(
        &fx,
        target(&fx.client_key),
        opts,
        PathBuf::from("/bin/cat"),
        async move |r| {
            let (link, conn) = r.unwrap_or_else(|e| panic!("{}", chain(&e)));
            link.send(ConsoleMsg::Ping { id: 7 }).await.unwrap();
            // The sender stays alive: the transport itself must close the channel.
            let (_tx, mut events) = link.into_parts();
            let mut stderr = Vec::new();
            let closed = match next_non_stderr(&mut events, &mut stderr).await {
                LinkEvent::Closed(r) => r,
                other => panic!("expected Closed, got {other:?}"),
            };
            wait_no_agent_in(&server_ns).await;
            drop(conn);
            closed
        },
    );
    match closed {
        Err(LinkError::Frame(e)) => {
            assert!(e.to_string().contains("unknown variant `ping`"), "{e}")
        }
        other => panic!("expected a frame error, got {other:?}"),
    }
    fx.wait_no_agent(Duration::from_secs(5));
}

/// `SshConnection::close` while the link is still open stops the program (EOF on its stdin)
/// and the link reports a clean close.
#[test]
fn close_stops_a_running_agent() {
    if !available("close_stops_a_running_agent") {
        return;
    }
    let fx = Sshd::start("close");
    let known = fx.write_known_hosts("known_hosts", &(fx.known_hosts_line() + "\n"));
    let opts = options(known, false, fx.remote_dir("remote"));
    let server_ns = fx.server_ns.name.clone();
    let (running, closed) = with_connection(
        &fx,
        target(&fx.client_key),
        opts,
        PathBuf::from("/bin/cat"),
        async move |r| {
            let (link, conn) = r.unwrap_or_else(|e| panic!("{}", chain(&e)));
            // cat starts and waits for input; the link stays open.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let mut running = sshd::agent_pids(&server_ns).len();
            while running == 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                running = sshd::agent_pids(&server_ns).len();
            }
            let (_tx, mut events) = link.into_parts();
            conn.close().await;
            let mut stderr = Vec::new();
            let closed = match next_non_stderr(&mut events, &mut stderr).await {
                LinkEvent::Closed(r) => r.map_err(|e| chain(&e)),
                other => panic!("expected Closed, got {other:?}"),
            };
            (running, closed)
        },
    );
    assert_eq!(running, 1, "one agent ran before close");
    closed.expect("cat exits cleanly at EOF");
    fx.wait_no_agent(Duration::from_secs(5));
}

/// Dropping the `SshConnection` ends the session: the link reports it closed by the console,
/// and sshd, losing the connection, ends the program.
#[test]
fn dropping_the_connection_ends_the_session() {
    if !available("dropping_the_connection_ends_the_session") {
        return;
    }
    let fx = Sshd::start("drop");
    let known = fx.write_known_hosts("known_hosts", &(fx.known_hosts_line() + "\n"));
    let opts = options(known, false, fx.remote_dir("remote"));
    let server_ns = fx.server_ns.name.clone();
    let closed = with_connection(
        &fx,
        target(&fx.client_key),
        opts,
        PathBuf::from("/bin/cat"),
        async move |r| {
            let (link, conn) = r.unwrap_or_else(|e| panic!("{}", chain(&e)));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while sshd::agent_pids(&server_ns).is_empty() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "agent never started"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (_tx, mut events) = link.into_parts();
            drop(conn);
            let mut stderr = Vec::new();
            let closed = match next_non_stderr(&mut events, &mut stderr).await {
                LinkEvent::Closed(r) => r.map_err(|e| chain(&e)),
                other => panic!("expected Closed, got {other:?}"),
            };
            // The runtime (and the session task on it) is still running here.
            wait_no_agent_in(&server_ns).await;
            closed
        },
    );
    assert_eq!(
        closed.unwrap_err(),
        format!("ssh: connection to {SERVER_ADDR}:22 was closed by the console")
    );
}

/// An ssh testbed's topology (from `text`, named `name`) and the options to bring it up with,
/// its state and logs in the returned folder.
fn ssh_testbed(
    text: &str,
    name: &str,
    known: PathBuf,
    remote: String,
    probe: bool,
) -> (
    halab::topology::Topology,
    tempfile::TempDir,
    halab::testbed::UpOptions,
) {
    let topo = halab::topology::parse_str(text, Path::new(&format!("{name}.toml")))
        .unwrap_or_else(|e| panic!("{e}"));
    let state = tempfile::tempdir().unwrap();
    let mut ssh = options(known, false, remote);
    ssh.connect_timeout = TIMEOUT;
    let opts = halab::testbed::UpOptions {
        agent_binary: support::agent_bin(),
        state_dir: state.path().to_path_buf(),
        run_id: name.into(),
        log_dir: state.path().join("logs"),
        probe,
        ssh: Some(ssh),
    };
    (topo, state, opts)
}

/// (9) A whole ssh-provider testbed through the orchestrator: three hosts reached over SSH get
/// their agents deployed concurrently, are watched, and are shut down by `Testbed::down`.
#[test]
fn ssh_testbed_up_and_down_through_the_orchestrator() {
    if !available("ssh_testbed_up_and_down_through_the_orchestrator") {
        return;
    }
    let fx = Sshd::start("testbed");
    let known = fx.write_known_hosts("known_hosts", &(fx.known_hosts_line() + "\n"));
    let remote = fx.remote_dir("remote");
    let mut topo_text = format!(
        "name = \"t-ssh\"\nprovider = \"ssh\"\nservice_address = \"10.66.0.100\"\n\
         known_hosts = \"{}\"\n\n[run]\nmode = \"none\"\n\n\
         [[networks]]\nname = \"service\"\nsubnet = \"10.66.0.0/24\"\n",
        known.display()
    );
    for (i, role) in ["primary", "backup", "client"].iter().enumerate() {
        topo_text.push_str(&format!(
            "\n[[hosts]]\nname = \"s{i}\"\nroles = [\"{role}\"]\n\
             addresses = {{ service = \"10.66.0.{}\" }}\nssh_address = \"{SERVER_ADDR}\"\n\
             user = \"root\"\nkey = \"{}\"\n",
            i + 1,
            fx.client_key.display()
        ));
    }
    let (topo, state, opts) = ssh_testbed(&topo_text, "t-ssh", known, remote, true);
    let state_dir = state.path().to_path_buf();
    support::in_netns(&fx.client_ns.name, move || {
        Box::pin(async move {
            let tb = halab::testbed::Testbed::up(topo, &opts)
                .await
                .unwrap_or_else(|e| panic!("up: {}", chain(&e)));
            let snap = tb.snapshot();
            assert_eq!(snap.hosts.len(), 3);
            for h in &snap.hosts {
                assert_eq!(h.state, halab::state::HostState::Connected, "{h:?}");
                assert_eq!(h.location, format!("root@{SERVER_ADDR}:22"));
                assert!(h.agent_pid.is_some());
            }
            assert!(state_dir.join("t-ssh.json").exists(), "state file written");
            tb.down()
                .await
                .unwrap_or_else(|e| panic!("down: {}", chain(&e)));
            assert!(!state_dir.join("t-ssh.json").exists(), "state file removed");
        })
    });
    fx.wait_no_agent(Duration::from_secs(5));
}

/// (9b) Power of an ssh host through the topology's commands: `power_command` takes the
/// machine down (its link first, then every process: sshd and the agent die without a word),
/// the host is marked powered off, and `power_on_command` brings it back: the console
/// reconnects once sshd answers, a new agent says hello and the host's role runs again. (The
/// backup, `m2`, is reached through the same sshd: the power cut takes its agent too.)
#[test]
fn ssh_host_powered_off_and_on_by_its_commands() {
    if !available("ssh_host_powered_off_and_on_by_its_commands") {
        return;
    }
    let fx = Sshd::start("power");
    let known = fx.write_known_hosts(
        "known_hosts",
        &format!(
            "{}\n[{SERVER_ADDR}]:{ALT_PORT} {}\n",
            fx.known_hosts_line(),
            fx.host_pub
        ),
    );
    let remote = fx.remote_dir("remote");
    let topo_text = format!(
        "name = \"t-ssh-pwr\"\nprovider = \"ssh\"\nservice_address = \"10.67.0.100\"\n\
         known_hosts = \"{}\"\n\n[run]\nmode = \"none\"\n\n\
         [[networks]]\nname = \"service\"\nsubnet = \"10.67.0.0/24\"\n\n\
         [[hosts]]\nname = \"m1\"\nroles = [\"primary\"]\n\
         addresses = {{ service = \"10.67.0.1\" }}\nssh_address = \"{SERVER_ADDR}\"\n\
         user = \"root\"\nkey = \"{key}\"\npower_command = \"{}\"\npower_on_command = \"{}\"\n\n\
         [[hosts]]\nname = \"m2\"\nroles = [\"backup\", \"client\"]\n\
         addresses = {{ service = \"10.67.0.2\" }}\nssh_address = \"{SERVER_ADDR}\"\n\
         port = {ALT_PORT}\nuser = \"root\"\nkey = \"{key}\"\n",
        known.display(),
        fx.power_off_command(),
        fx.power_on_command(),
        key = fx.client_key.display(),
    );
    let (topo, _state, opts) = ssh_testbed(&topo_text, "t-ssh-pwr", known, remote, false);
    let server_ns = fx.server_ns.name.clone();
    support::in_netns(&fx.client_ns.name, move || {
        Box::pin(async move {
            let mut tb = halab::testbed::Testbed::up(topo, &opts)
                .await
                .unwrap_or_else(|e| panic!("up: {}", chain(&e)));
            let mut inbox = tb.take_inbox().expect("inbox");
            let first_agent = tb.snapshot().hosts[0].agent_pid;
            assert!(first_agent.is_some());

            tb.power_off("m1")
                .await
                .unwrap_or_else(|e| panic!("power off: {}", chain(&e)));
            assert_eq!(
                tb.snapshot().hosts[0].state,
                halab::state::HostState::PoweredOff
            );
            // The power command's `kill -9` returns once the signal is sent; the kernel tears
            // the process down after that (a large binary's teardown takes a moment).
            wait_no_agent_in(&server_ns).await;

            tb.power_on("m1")
                .await
                .unwrap_or_else(|e| panic!("power on: {}", chain(&e)));
            let h = &tb.snapshot().hosts[0];
            assert_eq!(h.state, halab::state::HostState::Connected, "{h:?}");
            assert!(h.agent_pid.is_some() && h.agent_pid != first_agent, "{h:?}");
            // The host's role runs again under the new agent.
            let running = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some((host, msg)) = inbox.recv().await {
                    if let halab_protocol::AgentMsg::RoleState {
                        role,
                        state,
                        detail,
                        ..
                    } = msg
                    {
                        assert_eq!(host, "m1");
                        assert_eq!(role, halab_protocol::Role::Primary);
                        return (state, detail);
                    }
                }
                panic!("inbox closed");
            })
            .await
            .expect("role state after power-on");
            assert_eq!(
                running.0,
                halab_protocol::RoleState::Running,
                "{:?}",
                running.1
            );
            // The watcher of the dead agent's link gives up later; it must not mark the host
            // lost under its new agent.
            tokio::time::sleep(Duration::from_secs(4)).await;
            assert_eq!(
                tb.snapshot().hosts[0].state,
                halab::state::HostState::Connected
            );
            tb.down()
                .await
                .unwrap_or_else(|e| panic!("down: {}", chain(&e)));
        })
    });
    fx.wait_no_agent(Duration::from_secs(5));
}

/// (10) known_hosts entries in the forms OpenSSH accepts are honoured: a tab-separated wildcard
/// entry and entries hashed by `ssh-keygen -H` are known; a key marked `@revoked` is refused
/// even with accept-new, and so is a host whose entry is a `@cert-authority`; nothing is
/// learned over either.
#[test]
fn known_hosts_forms_wildcards_hashes_and_markers() {
    if !available("known_hosts_forms_wildcards_hashes_and_markers") {
        return;
    }
    let fx = Sshd::start("khforms");
    let remote = fx.remote_dir("remote");
    let alt = SshTarget {
        port: ALT_PORT,
        ..target(&fx.client_key)
    };

    let known = fx.write_known_hosts(
        "wildcard",
        &format!(
            "# lab\n10.98.0.?\t{}\n[10.98.*]:{ALT_PORT}   {}\n",
            fx.host_pub, fx.host_pub
        ),
    );
    connect_ok(
        &fx,
        target(&fx.client_key),
        options(known.clone(), false, remote.clone()),
    );
    connect_ok(&fx, alt.clone(), options(known, false, remote.clone()));

    let known = fx.write_known_hosts(
        "hashed",
        &format!(
            "{}\n[{SERVER_ADDR}]:{ALT_PORT} {}\n",
            fx.known_hosts_line(),
            fx.host_pub
        ),
    );
    let out = support::run("ssh-keygen", &["-H", "-f", known.to_str().unwrap()]);
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(!text.contains(SERVER_ADDR), "not hashed: {out}\n{text}");
    connect_ok(
        &fx,
        target(&fx.client_key),
        options(known.clone(), false, remote.clone()),
    );
    connect_ok(&fx, alt, options(known, false, remote.clone()));

    let content = format!(
        "{}\n# compromised\n@revoked * {}\n",
        fx.known_hosts_line(),
        fx.host_pub
    );
    let known = fx.write_known_hosts("revoked", &content);
    for accept_new in [false, true] {
        let err = connect_err(
            &fx,
            target(&fx.client_key),
            options(known.clone(), accept_new, remote.clone()),
        );
        assert!(
            err.contains(&format!(
                "host key of {SERVER_ADDR}:22 is REVOKED: {} line 3 marks the key it offered \
                 (ssh-ed25519 {})",
                known.display(),
                fx.host_fingerprint()
            )),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&known).unwrap(), content);

    let ca = fx.path("ca");
    sshd::keygen(&ca);
    let content = format!("@cert-authority 10.98.0.* {}\n", sshd::public_key(&ca));
    let known = fx.write_known_hosts("ca", &content);
    let err = connect_err(
        &fx,
        target(&fx.client_key),
        options(known.clone(), true, remote),
    );
    assert!(
        err.contains(&format!(
            "{} line 1 is a @cert-authority entry for it, and halab does not support host \
             certificates",
            known.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&known).unwrap(), content);
}
