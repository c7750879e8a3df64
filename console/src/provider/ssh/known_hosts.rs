//! Host key verification against a known_hosts file, with OpenSSH's `accept-new` policy: a
//! key on file must match; a host with no key on file is refused unless the user asked to
//! trust new keys, and then its key is recorded; a changed key is always refused.
//!
//! Matching is done by `russh::keys::known_hosts`, and learning by its
//! `learn_known_hosts_path`, called with the same host and port, so that an entry this module
//! writes (`[host]:port` for a port other than 22) is exactly what the next check looks for.

use super::SshError;
use russh::client;
use russh::keys::known_hosts::{known_host_keys_path, learn_known_hosts_path};
use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyOrCertificate};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Serialises learning across concurrent connections of this process: hosts of a testbed
/// connect in parallel and append to the same file.
static LEARN_LOCK: Mutex<()> = Mutex::new(());

/// What the check decided about a key it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Accepted {
    /// The key is on file.
    Known,
    /// The key was not on file and has now been recorded (accept-new).
    Learned,
}

/// The russh client handler: it only verifies the server's host key. Its verdict is also kept
/// in `verdict`, because russh reports a refused key to the caller as a bare `UnknownKey`.
pub(super) struct HostKeyCheck {
    pub host: String,
    pub port: u16,
    pub known_hosts: PathBuf,
    pub accept_new: bool,
    pub verdict: Arc<Mutex<Option<Result<Accepted, SshError>>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let result = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => verify(
                &self.host,
                self.port,
                key,
                &self.known_hosts,
                self.accept_new,
            ),
            // Host certificates are never requested (Preferred::host_key_certificates is
            // empty), so a server sending one is not following the negotiation.
            PublicKeyOrCertificate::Certificate(_) => Err(SshError::HostCertificate {
                addr: super::display_addr(&self.host, self.port),
            }),
        };
        let ok = result.is_ok();
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        Ok(ok)
    }
}

/// Checks `key`, offered by `host:port`, against the known_hosts file at `path`, learning it
/// when it is new and `accept_new` is set.
pub(super) fn verify(
    host: &str,
    port: u16,
    key: &PublicKey,
    path: &Path,
    accept_new: bool,
) -> Result<Accepted, SshError> {
    let addr = super::display_addr(host, port);
    let known = known_keys(host, port, path)?;
    if known.iter().any(|(_, k)| k.key_data() == key.key_data()) {
        return Ok(Accepted::Known);
    }
    let offered = describe(key);
    if let Some((line, _)) = known.iter().find(|(_, k)| k.algorithm() == key.algorithm()) {
        return Err(SshError::HostKeyChanged {
            addr,
            path: path.to_path_buf(),
            line: *line,
            offered,
        });
    }
    if let Some((line, k)) = known.first() {
        // OpenSSH would ask here; trusting a key of another type on a host whose key is on
        // file would let anyone who can offer only that type impersonate it.
        return Err(SshError::HostKeyOtherType {
            addr,
            path: path.to_path_buf(),
            line: *line,
            known: k.algorithm().to_string(),
            offered,
        });
    }
    if !accept_new {
        return Err(SshError::UnknownHostKey {
            addr,
            path: path.to_path_buf(),
            offered,
        });
    }
    let _guard = LEARN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    // Another connection to the same address may have learned it while this one waited.
    if known_keys(host, port, path)?
        .iter()
        .any(|(_, k)| k.key_data() == key.key_data())
    {
        return Ok(Accepted::Known);
    }
    learn_known_hosts_path(host, port, key, path).map_err(|source| SshError::LearnHostKey {
        addr: addr.clone(),
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    tracing::info!(%addr, known_hosts = %path.display(), key = %offered, "learned new host key");
    Ok(Accepted::Learned)
}

/// The keys on file for `host:port`, each with its line number in the file (1-based).
fn known_keys(host: &str, port: u16, path: &Path) -> Result<Vec<(usize, PublicKey)>, SshError> {
    // russh treats a file it cannot open as empty; only a missing file may mean "no keys".
    if let Err(e) = std::fs::File::open(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(SshError::KnownHosts {
            path: path.to_path_buf(),
            source: Box::new(russh::keys::Error::IO(e)),
        });
    }
    let keys = known_host_keys_path(host, port, path).map_err(|source| SshError::KnownHosts {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    // russh numbers lines without counting comment lines; translate to the file's numbering
    // so the line a user is told to look at is the right one.
    let map = line_map(path);
    Ok(keys
        .into_iter()
        .map(|(n, k)| (map.get(n.wrapping_sub(1)).copied().unwrap_or(n), k))
        .collect())
}

/// For each line russh counts (every line not starting with `#`), its 1-based number in the
/// file. Read errors give a shorter map, and callers fall back to russh's number.
fn line_map(path: &Path) -> Vec<usize> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut map = Vec::new();
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let mut n = 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                n += 1;
                if line.first() != Some(&b'#') {
                    map.push(n);
                }
            }
        }
    }
    map
}

/// `ssh-ed25519 SHA256:...`, how OpenSSH shows a key to a user who must verify it.
fn describe(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256))
}

/// Host key algorithms to offer, those of the keys on file for `host:port` first, as OpenSSH
/// does: a server with several host keys then proves the identity the user already trusts
/// instead of one that would be refused as of another type.
pub(super) fn preferred_host_key_order(host: &str, port: u16, path: &Path) -> Vec<Algorithm> {
    let default = russh::Preferred::DEFAULT.key.to_vec();
    let known: Vec<Algorithm> = known_host_keys_path(host, port, path)
        .map(|v| v.into_iter().map(|(_, k)| k.algorithm()).collect())
        .unwrap_or_default();
    let is_known = |a: &Algorithm| {
        known
            .iter()
            .any(|k| k == a || (k.clone().is_rsa() && a.clone().is_rsa()))
    };
    let (mut first, rest): (Vec<_>, Vec<_>) = default.into_iter().partition(is_known);
    first.extend(rest);
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn known_key_is_accepted() {
        let (_d, p) = file(&format!("10.0.0.1 ssh-ed25519 {KEY_A}\n"));
        assert_eq!(
            verify("10.0.0.1", 22, &key(KEY_A), &p, false).unwrap(),
            Accepted::Known
        );
    }

    #[test]
    fn changed_key_names_the_physical_line_despite_comments() {
        let (_d, p) = file(&format!(
            "# a comment\n#another\n10.0.0.9 ssh-ed25519 {KEY_A}\n10.0.0.1 ssh-ed25519 {KEY_B}\n"
        ));
        let e = verify("10.0.0.1", 22, &key(KEY_A), &p, true).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("CHANGED"), "{msg}");
        assert!(msg.contains(&format!("{} line 4", p.display())), "{msg}");
    }

    #[test]
    fn unknown_key_is_refused_then_learned_with_port() {
        let (_d, p) = file("");
        let e = verify("10.0.0.1", 2222, &key(KEY_A), &p, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host key of 10.0.0.1:2222 is not in "),
            "{e}"
        );
        assert_eq!(
            verify("10.0.0.1", 2222, &key(KEY_A), &p, true).unwrap(),
            Accepted::Learned
        );
        let text = std::fs::read_to_string(&p).unwrap();
        // russh starts an empty file with a blank line.
        assert!(
            text.trim_start()
                .starts_with("[10.0.0.1]:2222 ssh-ed25519 "),
            "{text}"
        );
        assert_eq!(
            verify("10.0.0.1", 2222, &key(KEY_A), &p, false).unwrap(),
            Accepted::Known
        );
        // Port 22 is a different entry.
        assert!(verify("10.0.0.1", 22, &key(KEY_A), &p, false).is_err());
    }

    #[test]
    fn missing_file_is_empty_and_is_created_when_learning() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/known_hosts");
        assert!(verify("h", 22, &key(KEY_A), &p, false).is_err());
        assert_eq!(
            verify("h", 22, &key(KEY_A), &p, true).unwrap(),
            Accepted::Learned
        );
    }

    #[test]
    fn known_algorithms_are_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
            .arg(&k)
            .status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED known_algorithms_are_preferred: no ssh-keygen");
            return;
        }
        let public = std::fs::read_to_string(k.with_extension("pub")).unwrap();
        let p = dir.path().join("known_hosts");
        std::fs::write(&p, format!("h {public}")).unwrap();
        let order = preferred_host_key_order("h", 22, &p);
        assert!(matches!(order[0], Algorithm::Ecdsa { .. }), "{order:?}");
        assert_eq!(order.len(), russh::Preferred::DEFAULT.key.len());
        let order = preferred_host_key_order("other", 22, &p);
        assert_eq!(order[0], Algorithm::Ed25519);
    }
}
