//! Provider `ssh`: hosts reached with russh (DESIGN §4).
//!
//! [`connect_agent`] connects to a host, verifies its host key against known_hosts
//! ([`known_hosts`]), authenticates with the host's key, uploads the agent when the installed
//! one differs ([`remote`]), starts it in an exec channel and serves an [`AgentLink`] over that
//! channel ([`pump`]). Everything above the link (hello, pings, roles) is the same as for
//! provider `local`.
//!
//! Lifetimes: the link and the [`SshConnection`] are independent handles on one SSH session.
//! Dropping the link sends EOF on the agent's stdin, so the agent reverts what it holds and
//! exits; [`SshConnection::close`] does the same and then disconnects; dropping the connection
//! tears the session down at once (sshd then closes the agent's stdin itself).

mod error;
mod known_hosts;
mod pump;
mod remote;

use crate::agent::AgentLink;
use crate::topology::Host;
use error::display_addr;
pub use error::{HostKeyRefused, SshError};
use known_hosts::{Accepted, HostKeyCheck};
use russh::client::{self, AuthResult};
use russh::keys::PrivateKeyWithHashAlg;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The russh client handler of this provider.
type Client = HostKeyCheck;

/// How long [`SshConnection::close`] lets the agent exit after its stdin closed before the
/// session is torn down regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Keepalives a dead server may leave unanswered before the session is declared lost.
const KEEPALIVE_MAX: usize = 3;

/// Settings shared by every SSH host of a testbed.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The known_hosts file host keys are checked against (and learned into).
    pub known_hosts: PathBuf,
    /// Trust and record a host key when its host has none on file (OpenSSH's `accept-new`).
    /// A key that differs from the one on file is refused regardless.
    pub accept_new_host_keys: bool,
    /// Limit on each step before the agent starts: TCP connect and key exchange,
    /// authentication, the remote checksum. The upload itself is not limited (its size
    /// varies); a dead server is caught there by the keepalives.
    pub connect_timeout: Duration,
    /// Where the agent is installed on the host. A leading `~` is the remote user's home.
    pub remote_dir: String,
    /// SSH keepalive interval: a host that stops answering (powered off, cable pulled) is
    /// declared lost after [`KEEPALIVE_MAX`] unanswered keepalives, so its link closes rather
    /// than hanging.
    pub keepalive_interval: Duration,
}

impl SshOptions {
    /// Options with the defaults: 15 s connect timeout, agent in `~/.halab`, keepalive 10 s.
    pub fn new(known_hosts: PathBuf, accept_new_host_keys: bool) -> Self {
        SshOptions {
            known_hosts,
            accept_new_host_keys,
            connect_timeout: Duration::from_secs(15),
            remote_dir: "~/.halab".to_string(),
            keepalive_interval: Duration::from_secs(10),
        }
    }
}

/// One host to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name in the topology, for messages.
    pub name: String,
    /// Address or DNS name, exactly as it is (or will be) recorded in known_hosts.
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key file.
    pub key: PathBuf,
}

impl SshTarget {
    /// The target of a topology host; `None` for a host without SSH settings (provider local).
    pub fn from_host(host: &Host) -> Option<SshTarget> {
        let ssh = host.ssh.as_ref()?;
        Some(SshTarget {
            name: host.name.clone(),
            address: ssh.address.clone(),
            port: ssh.port,
            user: ssh.user.clone(),
            key: ssh.key.clone(),
        })
    }

    /// `address:port` (`[address]:port` for IPv6), as in messages.
    pub fn display_addr(&self) -> String {
        display_addr(&self.address, self.port)
    }
}

/// The SSH session under an agent's link. Keep it as long as the link is used.
pub struct SshConnection {
    addr: String,
    uploaded: bool,
    handle: client::Handle<Client>,
    eof: CancellationToken,
    abort: CancellationToken,
    pump: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("addr", &self.addr)
            .field("uploaded", &self.uploaded)
            .field("closed", &self.handle.is_closed())
            .finish()
    }
}

impl SshConnection {
    /// `address:port` of the host.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether this connection uploaded the agent (it was missing or differed).
    pub fn uploaded(&self) -> bool {
        self.uploaded
    }

    /// Stops the agent cleanly and disconnects: closes the agent's stdin (its dead-man switch
    /// reverts what it holds and it exits), waits up to a few seconds for its channel to
    /// close, then ends the session. The link reports its close as usual.
    pub async fn close(mut self) {
        self.eof.cancel();
        if let Some(pump) = self.pump.take() {
            let _ = tokio::time::timeout(CLOSE_GRACE, pump).await;
        }
        self.abort.cancel();
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "halab console done", "en")
            .await;
    }
}

impl Drop for SshConnection {
    /// Releases the channel so that, with the handle gone, russh ends the session.
    fn drop(&mut self) {
        self.abort.cancel();
    }
}

/// Connects to `target`, verifies its host key, authenticates, makes sure the agent installed
/// in `opts.remote_dir` is `agent_binary` (uploading it when its sha256 differs), starts it and
/// returns its link and the connection that carries it.
pub async fn connect_agent(
    target: &SshTarget,
    opts: &SshOptions,
    agent_binary: &Path,
) -> Result<(AgentLink, SshConnection), SshError> {
    let addr = target.display_addr();
    // The key first: a wrong key path fails before any traffic.
    let key = load_key(&target.key)?;

    let verdict = Arc::new(Mutex::new(None));
    let handler = HostKeyCheck {
        host: target.address.clone(),
        port: target.port,
        known_hosts: opts.known_hosts.clone(),
        accept_new: opts.accept_new_host_keys,
        verdict: verdict.clone(),
    };
    let preferred = russh::Preferred {
        key: Cow::Owned(known_hosts::preferred_host_key_order(
            &target.address,
            target.port,
            &opts.known_hosts,
        )),
        ..Default::default()
    };
    let config = Arc::new(client::Config {
        preferred,
        keepalive_interval: Some(opts.keepalive_interval),
        keepalive_max: KEEPALIVE_MAX,
        // Control messages are small and latency is what the console measures.
        nodelay: true,
        ..Default::default()
    });
    let timeout = opts.connect_timeout;
    let connecting = client::connect(config, (target.address.as_str(), target.port), handler);
    let connected = tokio::time::timeout(timeout, connecting).await;
    let host_key_verdict = verdict
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let mut handle = match connected {
        Err(_) => {
            return Err(SshError::Timeout {
                addr,
                what: "connecting",
                timeout,
            });
        }
        Ok(Err(e)) => {
            return Err(match host_key_verdict {
                Some(Err(refused)) => refused,
                _ => match e {
                    russh::Error::IO(source) => SshError::Connect { addr, source },
                    source => SshError::Handshake {
                        addr,
                        source: Box::new(source),
                    },
                },
            });
        }
        Ok(Ok(h)) => h,
    };
    // russh only returns a handle after check_server_key accepted the key.
    if let Some(Ok(Accepted::Learned)) = host_key_verdict {
        tracing::info!(host = %target.name, %addr, "host key added to known_hosts");
    }

    authenticate(&mut handle, target, &key, &addr, timeout).await?;
    let uploaded =
        remote::ensure_agent(&handle, &addr, agent_binary, &opts.remote_dir, timeout).await?;

    let command = remote::agent_command(&opts.remote_dir, &target.user);
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|source| SshError::Channel {
            addr: addr.clone(),
            what: "opening the agent's channel",
            source: Box::new(source),
        })?;
    channel
        .exec(true, command.as_str())
        .await
        .map_err(|source| SshError::Channel {
            addr: addr.clone(),
            what: "starting the agent",
            source: Box::new(source),
        })?;

    let (link, outbound, events) = AgentLink::channel(None);
    let eof = CancellationToken::new();
    let abort = CancellationToken::new();
    let pump = pump::Pump {
        addr: addr.clone(),
        command,
        channel,
        outbound,
        events,
        eof: eof.clone(),
        abort: abort.clone(),
    };
    let pump = tokio::spawn(pump.run());
    Ok((
        link,
        SshConnection {
            addr,
            uploaded,
            handle,
            eof,
            abort,
            pump: Some(pump),
        },
    ))
}

/// Loads an unencrypted private key.
fn load_key(path: &Path) -> Result<russh::keys::PrivateKey, SshError> {
    russh::keys::load_secret_key(path, None).map_err(|source| match source {
        russh::keys::Error::KeyIsEncrypted => SshError::KeyEncrypted {
            path: path.to_path_buf(),
        },
        source => SshError::KeyRead {
            path: path.to_path_buf(),
            source: Box::new(source),
        },
    })
}

/// Public key authentication; RSA keys sign with the best hash the server accepts.
async fn authenticate(
    handle: &mut client::Handle<Client>,
    target: &SshTarget,
    key: &russh::keys::PrivateKey,
    addr: &str,
    timeout: Duration,
) -> Result<(), SshError> {
    let auth_err = |source| SshError::Auth {
        user: target.user.clone(),
        addr: addr.to_string(),
        source: Box::new(source),
    };
    let timed_out = |_| SshError::Timeout {
        addr: addr.to_string(),
        what: "authenticating",
        timeout,
    };
    let hash = if key.algorithm().is_rsa() {
        tokio::time::timeout(timeout, handle.best_supported_rsa_hash())
            .await
            .map_err(timed_out)?
            .map_err(auth_err)?
            .flatten()
    } else {
        None
    };
    let key = PrivateKeyWithHashAlg::new(Arc::new(key.clone()), hash);
    let result = tokio::time::timeout(
        timeout,
        handle.authenticate_publickey(target.user.as_str(), key),
    )
    .await
    .map_err(timed_out)?
    .map_err(auth_err)?;
    match result {
        AuthResult::Success => Ok(()),
        AuthResult::Failure {
            partial_success: true,
            ..
        } => Err(SshError::AuthPartial {
            path: target.key.clone(),
            user: target.user.clone(),
            addr: addr.to_string(),
        }),
        AuthResult::Failure { .. } => Err(SshError::AuthRefused {
            path: target.key.clone(),
            user: target.user.clone(),
            addr: addr.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_displayed_with_port() {
        assert_eq!(display_addr("10.1.2.3", 22), "10.1.2.3:22");
        assert_eq!(display_addr("fe80::1", 2222), "[fe80::1]:2222");
    }

    #[test]
    fn missing_key_is_reported_with_its_path() {
        let e = load_key(Path::new("/nonexistent/id_ed25519")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ssh: cannot load private key /nonexistent/id_ed25519"
        );
    }
}
