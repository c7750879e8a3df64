//! The commands st-tcp runs (`ip`, `nft`, `iptables`) in its host's namespace: run to
//! completion within 5 s, a failure carrying the command's stderr.

use std::time::Duration;

/// How long one command may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a command did not do its job; `line` is the command as run.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{line}`")]
    Spawn {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{line}`")]
    Io {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{line}` did not finish within 5 s")]
    Timeout { line: String },
    #[error("`{line}` failed: {stderr}")]
    Failed { line: String, stderr: String },
}

/// Runs `program args` to completion, `input` on its stdin.
pub async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), CommandError> {
    use tokio::io::AsyncWriteExt;
    let line = format!("{program} {}", args.join(" "));
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(source) => return Err(CommandError::Spawn { line, source }),
    };
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take())
        && let Err(source) = stdin.write_all(text.as_bytes()).await
    {
        return Err(CommandError::Io { line, source });
    }
    let out = match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Err(_) => return Err(CommandError::Timeout { line }),
        Ok(Err(source)) => return Err(CommandError::Io { line, source }),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(CommandError::Failed {
            line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
