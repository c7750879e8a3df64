//! Short remote commands over exec channels: the checksum of the installed agent, its upload,
//! and the command line that starts it.
//!
//! Every script runs under `sh -c`, so it is POSIX sh whatever the user's login shell is.

use super::error::SshError;
use super::known_hosts::HostKeyCheck as Client;
use russh::ChannelMsg;
use russh::client::Handle;
use sha2::{Digest, Sha256};
use std::path::Path;

/// File name of the agent inside the remote directory.
const AGENT_FILE: &str = "halab-agent";

/// What a finished remote command left behind.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// `None` when the command was killed by a signal or the server sent no status.
    pub status: Option<u32>,
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// How the command ended, for an error message.
    fn ending(&self) -> String {
        match (&self.status, &self.signal) {
            (Some(s), _) => format!("exit status {s}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "no exit status".to_string(),
        }
    }
}

/// Quotes `s` as one word for sh.
pub(super) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The remote directory as a sh expression: a leading `~` becomes `"$HOME"` (it is not
/// expanded inside quotes, and the remote home is only known to the remote shell).
pub(super) fn dir_expr(dir: &str) -> String {
    if dir == "~" {
        "\"$HOME\"".to_string()
    } else if let Some(rest) = dir.strip_prefix("~/") {
        format!("\"$HOME\"/{}", sh_quote(rest))
    } else {
        sh_quote(dir)
    }
}

/// The command that starts the agent: `exec`, so the agent is the channel's process and its
/// exit status is the channel's; `sudo -n` for a user other than root, so that a sudo that
/// would ask for a password fails at once with its message on stderr instead of hanging.
pub(super) fn agent_command(remote_dir: &str, user: &str) -> String {
    let path = format!("{}/{AGENT_FILE}", dir_expr(remote_dir));
    let script = if user == "root" {
        format!("exec {path}")
    } else {
        format!("exec sudo -n {path}")
    };
    format!("sh -c {}", sh_quote(&script))
}

/// Prints the sha256 of the installed agent, or nothing when there is none (or no tool to
/// compute it, which makes the console upload again rather than fail).
fn checksum_command(remote_dir: &str) -> String {
    let script = format!(
        "f={}/{AGENT_FILE}; if [ -f \"$f\" ]; then \
         sha256sum \"$f\" 2>/dev/null || openssl dgst -sha256 -r \"$f\" 2>/dev/null; fi; exit 0",
        dir_expr(remote_dir)
    );
    format!("sh -c {}", sh_quote(&script))
}

/// Receives the agent on stdin into a temporary file named after the shell's pid (two
/// consoles uploading at once do not mix their bytes) and renames it into place, so a running
/// agent's file is never overwritten in place and an interrupted upload leaves no half file.
fn upload_command(remote_dir: &str) -> String {
    let script = format!(
        "set -e; umask 022; d={dir}; mkdir -p \"$d\"; t=\"$d/{AGENT_FILE}.tmp.$$\"; \
         trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; chmod 755 \"$t\"; mv -f \"$t\" \"$d/{AGENT_FILE}\"; \
         trap - EXIT",
        dir = dir_expr(remote_dir)
    );
    format!("sh -c {}", sh_quote(&script))
}

/// The first word of `sha256sum`'s (or `openssl dgst -r`'s) output, when it is a digest.
fn parse_checksum(stdout: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stdout);
    let word = text.split_whitespace().next()?.to_ascii_lowercase();
    (word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit())).then_some(word)
}

/// The sha256 of a local file, hex.
pub(super) async fn local_sha256(path: &Path) -> Result<String, SshError> {
    let p = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&p)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut f, &mut hasher)?;
        Ok::<_, std::io::Error>(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r);
    result.map_err(|source| SshError::LocalAgent {
        path: path.to_path_buf(),
        source,
    })
}

/// Makes sure `remote_dir/halab-agent` is the local `agent` (by sha256), uploading it when
/// not. Returns whether it uploaded.
pub(super) async fn ensure_agent(
    handle: &Handle<Client>,
    addr: &str,
    agent: &Path,
    remote_dir: &str,
    timeout: std::time::Duration,
) -> Result<bool, SshError> {
    let local = local_sha256(agent).await?;
    let command = checksum_command(remote_dir);
    let out = tokio::time::timeout(timeout, run(handle, addr, &command, None))
        .await
        .map_err(|_| SshError::Timeout {
            addr: addr.to_string(),
            what: "checking the installed agent",
            timeout,
        })??;
    let remote = parse_checksum(&out.stdout);
    if remote.as_deref() == Some(local.as_str()) {
        tracing::debug!(%addr, sha256 = %local, "agent up to date");
        return Ok(false);
    }
    tracing::info!(%addr, sha256 = %local, remote = ?remote, "uploading agent");
    let file = tokio::fs::File::open(agent)
        .await
        .map_err(|source| SshError::LocalAgent {
            path: agent.to_path_buf(),
            source,
        })?;
    let command = upload_command(remote_dir);
    let out = run(handle, addr, &command, Some(file)).await?;
    if !out.success() {
        return Err(SshError::Upload {
            addr: addr.to_string(),
            remote: format!("{remote_dir}/{AGENT_FILE}"),
            ending: out.ending(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(true)
}

/// Runs `command` in a fresh exec channel, streaming `stdin` to it (then EOF) while draining
/// its output, and waits for the channel to close.
pub(super) async fn run(
    handle: &Handle<Client>,
    addr: &str,
    command: &str,
    stdin: Option<tokio::fs::File>,
) -> Result<Output, SshError> {
    let channel_err = |what: &'static str| {
        let addr = addr.to_string();
        move |source| SshError::Channel {
            addr,
            what,
            source: Box::new(source),
        }
    };
    let channel = handle
        .channel_open_session()
        .await
        .map_err(channel_err("opening a session channel"))?;
    channel
        .exec(true, command)
        .await
        .map_err(channel_err("starting a remote command"))?;
    let (mut rd, wr) = channel.split();

    // Writing and reading run together: a command that prints while it reads (or fails at
    // once) must never wait on a console that is blocked writing into a full window.
    let write = async {
        if let Some(file) = stdin {
            wr.data(file).await?;
        }
        wr.eof().await
    };
    let read = async {
        let mut out = Output::default();
        let mut refused = false;
        while let Some(msg) = rd.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.signal = Some(format!("{signal_name:?}"))
                }
                ChannelMsg::Failure => refused = true,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        (out, refused)
    };
    tokio::pin!(write, read);
    let mut write_result = None;
    let (out, refused) = loop {
        tokio::select! {
            r = &mut write, if write_result.is_none() => write_result = Some(r),
            r = &mut read => break r,
        }
    };
    if refused {
        return Err(SshError::CommandRefused {
            addr: addr.to_string(),
        });
    }
    // A failed command explains itself better than the write it broke.
    if out.success() {
        match write_result {
            Some(Ok(())) => {}
            Some(Err(source)) => {
                return Err(channel_err("sending data to a remote command")(source));
            }
            None => {
                return Err(SshError::Channel {
                    addr: addr.to_string(),
                    what: "sending data to a remote command",
                    source: Box::new(russh::Error::Disconnect),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(dir_expr("~"), "\"$HOME\"");
        assert_eq!(dir_expr("~/.halab"), "\"$HOME\"/'.halab'");
        assert_eq!(dir_expr("/tmp/x y"), "'/tmp/x y'");
    }

    #[test]
    fn agent_command_uses_sudo_for_other_users() {
        assert_eq!(
            agent_command("~/.halab", "root"),
            r#"sh -c 'exec "$HOME"/'\''.halab'\''/halab-agent'"#
        );
        assert!(agent_command("~/.halab", "vagrant").contains("exec sudo -n "));
    }

    #[test]
    fn checksum_parsing() {
        let d = "a".repeat(64);
        assert_eq!(
            parse_checksum(format!("{d}  /x\n").as_bytes()),
            Some(d.clone())
        );
        assert_eq!(parse_checksum(format!("{d} */x\n").as_bytes()), Some(d));
        assert_eq!(parse_checksum(b""), None);
        assert_eq!(parse_checksum(b"sha256sum: not found"), None);
    }

    /// The scripts are valid sh and do what they say, run here with a local sh.
    #[test]
    fn scripts_run_under_sh() {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("it's here").display().to_string();
        let sh = |cmd: &str, input: &[u8]| {
            use std::io::Write;
            // The command line is what the remote login shell would get; a local sh stands in.
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            (out.status.success(), out.stdout)
        };
        let (ok, out) = sh(&checksum_command(&remote), b"");
        assert!(ok && out.is_empty());
        let (ok, _) = sh(&upload_command(&remote), b"#!/bin/sh\necho hi\n");
        assert!(ok);
        let (ok, out) = sh(&checksum_command(&remote), b"");
        assert!(ok);
        let local = hex::encode(Sha256::digest(b"#!/bin/sh\necho hi\n"));
        assert_eq!(parse_checksum(&out), Some(local));
        let (ok, out) = sh(&agent_command(&remote, "root"), b"");
        assert!(ok);
        assert_eq!(out, b"hi\n");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("it's here"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(AGENT_FILE)]);
    }
}
