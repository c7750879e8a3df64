//! Why an SSH host could not be reached, and how addresses are shown in those messages (a leaf:
//! the connection, the known_hosts check and the upload all report through it).

use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Why an SSH host could not be reached or its agent not started. Each message names what a
/// user needs to fix it: the address, the user, the key or known_hosts file and line.
#[derive(Debug, Error)]
pub enum SshError {
    #[error("ssh: cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ssh: {addr}: timed out after {timeout:?} {what}")]
    Timeout {
        addr: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("ssh: handshake with {addr} failed")]
    Handshake {
        addr: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error(
        "host key of {addr} is not in {}; verify it ({offered}) and re-run with \
         --accept-new-host-keys to trust it",
        path.display()
    )]
    UnknownHostKey {
        addr: String,
        path: PathBuf,
        offered: String,
    },
    #[error(
        "host key of {addr} CHANGED: it does not match {} line {line} (the server offered \
         {offered}); if the host was reinstalled, delete that line, otherwise someone may be \
         intercepting the connection",
        path.display()
    )]
    HostKeyChanged {
        addr: String,
        path: PathBuf,
        line: usize,
        offered: String,
    },
    #[error(
        "host key of {addr} is not trusted: {} line {line} holds a {known} key for it, but the \
         server offered {offered}",
        path.display()
    )]
    HostKeyOtherType {
        addr: String,
        path: PathBuf,
        line: usize,
        known: String,
        offered: String,
    },
    #[error("host key of {addr} is a certificate; halab only trusts plain keys from known_hosts")]
    HostCertificate { addr: String },
    /// A revoked key, or a host whose known_hosts entry is a `@cert-authority` or cannot be
    /// read: refused with or without accept-new.
    #[error(transparent)]
    HostKeyRefused(#[from] HostKeyRefused),
    #[error("ssh: cannot read known_hosts file {}", path.display())]
    KnownHosts {
        path: PathBuf,
        #[source]
        source: Box<russh::keys::Error>,
    },
    #[error("ssh: cannot record the host key of {addr} in {}", path.display())]
    LearnHostKey {
        addr: String,
        path: PathBuf,
        #[source]
        source: Box<russh::keys::Error>,
    },
    #[error(
        "ssh: private key {} is protected by a passphrase, which halab does not support; \
         use a key without one",
        path.display()
    )]
    KeyEncrypted { path: PathBuf },
    #[error("ssh: cannot load private key {}", path.display())]
    KeyRead {
        path: PathBuf,
        #[source]
        source: Box<russh::keys::Error>,
    },
    #[error("ssh: server refused key {} for user {user}@{addr}", path.display())]
    AuthRefused {
        path: PathBuf,
        user: String,
        addr: String,
    },
    #[error(
        "ssh: {user}@{addr} accepted key {} but asks for more authentication, which halab \
         does not support",
        path.display()
    )]
    AuthPartial {
        path: PathBuf,
        user: String,
        addr: String,
    },
    #[error("ssh: authenticating {user}@{addr} failed")]
    Auth {
        user: String,
        addr: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("ssh: {addr}: {what} failed")]
    Channel {
        addr: String,
        what: &'static str,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("ssh: {addr} refused to run a command (exec request denied)")]
    CommandRefused { addr: String },
    #[error("cannot read the agent binary {}", path.display())]
    LocalAgent {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ssh: uploading the agent to {addr}:{remote} failed ({ending}){}", suffix(.stderr))]
    Upload {
        addr: String,
        remote: String,
        ending: String,
        stderr: String,
    },
}

fn suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// `host:port`, bracketing an IPv6 address.
pub(super) fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Refusals of a host key that come from known_hosts entries other than a plain key line.
/// Refused with or without accept-new: each is an entry the user wrote for a reason.
#[derive(Debug, Error)]
pub enum HostKeyRefused {
    /// The offered key is on a `@revoked` line (whatever hosts that line names).
    #[error(
        "host key of {addr} is REVOKED: {} line {line} marks the key it offered ({offered}) \
         as @revoked; it is never trusted",
        path.display()
    )]
    Revoked {
        addr: String,
        path: PathBuf,
        line: usize,
        offered: String,
    },
    /// A `@revoked` line whose key cannot be read: whether the offered key is revoked is
    /// unknown, so no key is trusted until it is fixed.
    #[error(
        "host key of {addr} is not trusted: {} line {line} is a @revoked entry that cannot be \
         read ({reason}), so whether the key is revoked is unknown; fix or remove that line",
        path.display()
    )]
    RevokedUnreadable {
        addr: String,
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The host's entry is a `@cert-authority` line: it expects host certificates, which
    /// halab neither requests nor verifies, so a plain key it offers is not learned either.
    #[error(
        "host key of {addr} is not trusted: {} line {line} is a @cert-authority entry for it, \
         and halab does not support host certificates; add the host's own key to that file \
         once you have verified it (the server offered {offered})",
        path.display()
    )]
    CertAuthority {
        addr: String,
        path: PathBuf,
        line: usize,
        offered: String,
    },
    /// The host's only entries cannot be read (bad base64, unknown key type or marker, no
    /// key): it has an entry, so its key is not new, but it cannot be compared.
    #[error(
        "host key of {addr} is not trusted: {} line {line} is an entry for it that cannot be \
         read ({reason}); fix or remove that line",
        path.display()
    )]
    Unreadable {
        addr: String,
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl HostKeyRefused {
    /// The known_hosts file whose entry refused the key.
    pub fn path(&self) -> &Path {
        match self {
            HostKeyRefused::Revoked { path, .. }
            | HostKeyRefused::RevokedUnreadable { path, .. }
            | HostKeyRefused::CertAuthority { path, .. }
            | HostKeyRefused::Unreadable { path, .. } => path,
        }
    }
}
