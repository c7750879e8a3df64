//! Host key verification against a known_hosts file, with OpenSSH's `accept-new` policy: a
//! key on file must match; a host with no entry on file is refused unless the user asked to
//! trust new keys, and then its key is recorded; a changed or revoked key is always refused.
//!
//! The file is read here, following sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT": fields separated
//! by runs of spaces or tabs, `#` comment lines, an optional `@revoked` or `@cert-authority`
//! marker, comma-separated host patterns with `*`/`?` wildcards and `!` negation, compared
//! case-insensitively with `host` (port 22) or `[host]:port`, and hashed `|1|salt|hash` names.
//! russh's own helpers skip several of these forms, so a host whose key is on file in one of
//! them would look new and, with accept-new, have whatever key it offers trusted.
//!
//! Learning uses russh's `learn_known_hosts_path`, which writes `host` or `[host]:port`, exactly
//! the name the next check looks for.

use super::error::{HostKeyRefused, SshError, display_addr};
use hmac::{Hmac, KeyInit, Mac};
use russh::client;
use russh::keys::known_hosts::learn_known_hosts_path;
use russh::keys::ssh_encoding::base64::{Base64, Encoding};
use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyOrCertificate};
use sha1::Sha1;
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

/// The [`SshError`] carrying `refusal`.
fn refused(refusal: HostKeyRefused) -> SshError {
    SshError::HostKeyRefused(refusal)
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
                addr: display_addr(&self.host, self.port),
            }),
        };
        let ok = result.is_ok();
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        Ok(ok)
    }
}

/// Checks `key`, offered by `host:port`, against the known_hosts file at `path`, learning it
/// when the host has no entry and `accept_new` is set.
pub(super) fn verify(
    host: &str,
    port: u16,
    key: &PublicKey,
    path: &Path,
    accept_new: bool,
) -> Result<Accepted, SshError> {
    match check(host, port, key, path, &read_entries(path)?) {
        Verdict::Known => return Ok(Accepted::Known),
        Verdict::Refused(e) => return Err(e),
        Verdict::Unknown => {}
    }
    let addr = display_addr(host, port);
    let offered = describe(key);
    if !accept_new {
        return Err(SshError::UnknownHostKey {
            addr,
            path: path.to_path_buf(),
            offered,
        });
    }
    let _guard = LEARN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    // Another connection to the same address may have learned it while this one waited (or
    // the file changed): decide again on the file as it is now.
    match check(host, port, key, path, &read_entries(path)?) {
        Verdict::Known => return Ok(Accepted::Known),
        Verdict::Refused(e) => return Err(e),
        Verdict::Unknown => {}
    }
    learn_known_hosts_path(host, port, key, path).map_err(|source| SshError::LearnHostKey {
        addr: addr.clone(),
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    tracing::info!(%addr, known_hosts = %path.display(), key = %offered, "learned new host key");
    Ok(Accepted::Learned)
}

/// What the file says about a key offered by a host.
enum Verdict {
    Known,
    /// The host has no entry at all.
    Unknown,
    Refused(SshError),
}

/// The decision, in OpenSSH's order: a revoked key is refused whatever else the file says;
/// then the host's plain entries decide (match, changed, other type); then an entry the key
/// cannot be compared with (`@cert-authority`, unreadable) still means the host is not new.
fn check(host: &str, port: u16, key: &PublicKey, path: &Path, entries: &[Entry]) -> Verdict {
    let addr = display_addr(host, port);
    let offered = describe(key);
    let path_buf = path.to_path_buf();
    let revoked = entries.iter().filter(|e| e.marker == Marker::Revoked);
    for e in revoked.clone() {
        if let Ok(k) = &e.key
            && k.key_data() == key.key_data()
        {
            return Verdict::Refused(refused(HostKeyRefused::Revoked {
                addr,
                path: path_buf,
                line: e.line,
                offered,
            }));
        }
    }
    for e in revoked {
        if let Err(reason) = &e.key {
            return Verdict::Refused(refused(HostKeyRefused::RevokedUnreadable {
                addr,
                path: path_buf,
                line: e.line,
                reason: reason.clone(),
            }));
        }
    }

    let name = lookup_name(host, port);
    let matching: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.marker != Marker::Revoked && hosts_match(&e.hosts, &name))
        .collect();
    let plain = || {
        matching
            .iter()
            .filter(|e| e.marker == Marker::None)
            .filter_map(|e| e.key.as_ref().ok().map(|k| (e.line, k)))
    };
    if plain().any(|(_, k)| k.key_data() == key.key_data()) {
        return Verdict::Known;
    }
    if let Some((line, _)) = plain().find(|(_, k)| k.algorithm() == key.algorithm()) {
        return Verdict::Refused(SshError::HostKeyChanged {
            addr,
            path: path_buf,
            line,
            offered,
        });
    }
    if let Some((line, k)) = plain().next() {
        // OpenSSH would ask here; trusting a key of another type on a host whose key is on
        // file would let anyone who can offer only that type impersonate it.
        return Verdict::Refused(SshError::HostKeyOtherType {
            addr,
            path: path_buf,
            line,
            known: k.algorithm().to_string(),
            offered,
        });
    }
    if let Some(e) = matching.iter().find(|e| e.marker == Marker::CertAuthority) {
        return Verdict::Refused(refused(HostKeyRefused::CertAuthority {
            addr,
            path: path_buf,
            line: e.line,
            offered,
        }));
    }
    if let Some((line, reason)) = matching
        .iter()
        .find_map(|e| e.key.as_ref().err().map(|r| (e.line, r)))
    {
        return Verdict::Refused(refused(HostKeyRefused::Unreadable {
            addr,
            path: path_buf,
            line,
            reason: reason.clone(),
        }));
    }
    Verdict::Unknown
}

/// The marker field of a known_hosts line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One line of a known_hosts file that is neither blank nor a comment.
#[derive(Debug)]
struct Entry {
    /// 1-based, counting every line of the file, as an editor does.
    line: usize,
    marker: Marker,
    /// The host patterns field, as written.
    hosts: String,
    /// The key, or why it cannot be read (also for an unknown marker, so that such a line
    /// still counts as an entry for the hosts it names).
    key: Result<PublicKey, String>,
}

/// The entries of the known_hosts file at `path`; a missing file has none.
fn read_entries(path: &Path) -> Result<Vec<Entry>, SshError> {
    match std::fs::read(path) {
        Ok(content) => Ok(parse(&content)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(SshError::KnownHosts {
            path: path.to_path_buf(),
            source: Box::new(russh::keys::Error::IO(e)),
        }),
    }
}

/// Parses known_hosts content: `[marker] patterns keytype base64 [comment]`, fields separated
/// by runs of spaces or tabs (a CR of a CRLF line end counts as one too).
fn parse(content: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (i, raw) in content.split(|&b| b == b'\n').enumerate() {
        let text = String::from_utf8_lossy(raw);
        let mut fields = text.split([' ', '\t', '\r']).filter(|f| !f.is_empty());
        let Some(first) = fields.next() else {
            continue;
        };
        if first.starts_with('#') {
            continue;
        }
        let (marker, hosts, bad_marker) = match first {
            "@revoked" => (Marker::Revoked, fields.next(), None),
            "@cert-authority" => (Marker::CertAuthority, fields.next(), None),
            m if m.starts_with('@') => (Marker::None, fields.next(), Some(m)),
            h => (Marker::None, Some(h), None),
        };
        let key = match (bad_marker, fields.next(), fields.next()) {
            (Some(m), _, _) => Err(format!("unknown marker {m}")),
            (None, Some(kind), Some(base64)) => {
                PublicKey::from_openssh(&format!("{kind} {base64}"))
                    .map_err(|e| format!("its {kind} key cannot be parsed: {e}"))
            }
            (None, _, _) => Err("it holds no key".to_string()),
        };
        entries.push(Entry {
            line: i + 1,
            marker,
            hosts: hosts.unwrap_or_default().to_string(),
            key,
        });
    }
    entries
}

/// The name `host:port` is filed under: `host` for port 22, `[host]:port` otherwise, in lower
/// case (host names are compared case-insensitively, and hashed in lower case, as by ssh).
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Whether the comma-separated `patterns` match `name` (from [`lookup_name`]): some pattern
/// matches it and no negated (`!`) one does.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        let hit = match pattern.strip_prefix("|1|") {
            Some(hashed) => hashed_name_matches(hashed, name),
            None => glob(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()),
        };
        if hit {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// Whether `salt|hash` (base64, after the `|1|` magic) is the HMAC-SHA1 of `name` keyed by the
/// salt. A malformed hashed name matches nothing, as in OpenSSH.
fn hashed_name_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (Base64::decode_vec(salt), Base64::decode_vec(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Glob matching of `name` against `pattern`: `*` matches any run of bytes, `?` any one byte.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the position in `name` it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more byte and retry from there.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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
    let name = lookup_name(host, port);
    let known: Vec<Algorithm> = read_entries(path)
        .unwrap_or_default()
        .iter()
        .filter(|e| e.marker == Marker::None && hosts_match(&e.hosts, &name))
        .filter_map(|e| e.key.as_ref().ok().map(PublicKey::algorithm))
        .collect();
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
    use crate::error::chain;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";
    const KEY_EC: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEEB04b/7ECv79wlzagp5+\
                          mdY4NliuNl5UP/yOWdJgOg/2eEFkqV3QmR01BE/1ZpU46+/ZkNzJI96PnlII6Dshg=";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    /// Whether `host:port` offering KEY_A is known, with accept-new off.
    fn known_a(path: &Path, host: &str, port: u16) -> bool {
        verify(host, port, &key(KEY_A), path, false).is_ok()
    }

    /// The refusal of KEY_A from `host:port`, as a user reads it.
    fn refusal_a(path: &Path, host: &str, port: u16, accept_new: bool) -> String {
        chain(&verify(host, port, &key(KEY_A), path, accept_new).unwrap_err())
    }

    /// `|1|salt|hash` for `name`, as `ssh-keygen -H` writes it.
    fn hashed(name: &str) -> String {
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(name.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!(
            "|1|{}|{}",
            Base64::encode_string(&salt),
            Base64::encode_string(&hash)
        )
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
    fn blank_and_indented_comment_lines_are_counted() {
        let (_d, p) = file(&format!(
            "# c\n\n   # indented\n\t\n\r\n10.0.0.1 ssh-ed25519 {KEY_B}\n"
        ));
        let msg = refusal_a(&p, "10.0.0.1", 22, true);
        assert!(msg.contains(&format!("{} line 6 ", p.display())), "{msg}");
    }

    #[test]
    fn tab_separated_line_is_known() {
        let (_d, p) = file(&format!("10.0.0.1\tssh-ed25519\t{KEY_A}\n"));
        assert!(known_a(&p, "10.0.0.1", 22));
    }

    #[test]
    fn runs_of_blanks_comment_and_crlf_are_accepted() {
        let (_d, p) = file(&format!(
            "  10.0.0.1  \t ssh-ed25519   {KEY_A}   root@host  x\r\n10.0.0.2 ssh-ed25519 {KEY_A}"
        ));
        assert!(known_a(&p, "10.0.0.1", 22));
        // The last line without a line end too.
        assert!(known_a(&p, "10.0.0.2", 22));
    }

    #[test]
    fn host_names_are_compared_case_insensitively() {
        let (_d, p) = file(&format!(
            "Lab-Host.Example,[OTHER]:2222 ssh-ed25519 {KEY_A}\n"
        ));
        assert!(known_a(&p, "lab-host.example", 22));
        assert!(known_a(&p, "LAB-HOST.EXAMPLE", 22));
        assert!(known_a(&p, "other", 2222));
        // And a changed key is found the same way, not taken for a new host.
        let e = verify("LAB-host.example", 22, &key(KEY_B), &p, true).unwrap_err();
        assert!(matches!(e, SshError::HostKeyChanged { line: 1, .. }), "{e}");
    }

    #[test]
    fn wildcard_patterns_match() {
        let (_d, p) = file(&format!(
            "10.0.0.* ssh-ed25519 {KEY_A}\nnode?.lab ssh-ed25519 {KEY_A}\n\
             [10.0.1.*]:2222 ssh-ed25519 {KEY_A}\n*.test ssh-ed25519 {KEY_B}\n"
        ));
        assert!(known_a(&p, "10.0.0.17", 22));
        assert!(known_a(&p, "node7.lab", 22));
        assert!(!known_a(&p, "node17.lab", 22));
        assert!(known_a(&p, "10.0.1.3", 2222));
        assert!(!known_a(&p, "10.0.1.3", 22));
        // `10.0.0.*` is not `[10.0.0.1]:2222`.
        assert!(!known_a(&p, "10.0.0.1", 2222));
        let msg = refusal_a(&p, "a.b.test", 22, true);
        assert!(msg.contains("CHANGED") && msg.contains(" line 4 "), "{msg}");
    }

    #[test]
    fn negated_pattern_excludes_the_line() {
        let (_d, p) = file(&format!("10.0.0.*,!10.0.0.5 ssh-ed25519 {KEY_B}\n"));
        // Another key on 10.0.0.6 is a changed key...
        let msg = refusal_a(&p, "10.0.0.6", 22, true);
        assert!(msg.contains("CHANGED"), "{msg}");
        // ...but 10.0.0.5 has no entry: unknown, and learned with accept-new.
        let msg = refusal_a(&p, "10.0.0.5", 22, false);
        assert!(msg.contains("is not in"), "{msg}");
        assert_eq!(
            verify("10.0.0.5", 22, &key(KEY_A), &p, true).unwrap(),
            Accepted::Learned
        );
        assert!(known_a(&p, "10.0.0.5", 22));
        // A negation only excludes: alone it matches nothing.
        let (_d, p) = file(&format!("!10.0.0.5 ssh-ed25519 {KEY_A}\n"));
        assert!(!known_a(&p, "10.0.0.6", 22));
    }

    #[test]
    fn bracketed_port_entries_are_distinct_from_port_22() {
        let (_d, p) = file(&format!(
            "[10.0.0.1]:2222 ssh-ed25519 {KEY_A}\n10.0.0.1 ssh-ed25519 {KEY_B}\n"
        ));
        assert!(known_a(&p, "10.0.0.1", 2222));
        let e = verify("10.0.0.1", 22, &key(KEY_A), &p, true).unwrap_err();
        assert!(matches!(e, SshError::HostKeyChanged { line: 2, .. }), "{e}");
        // `[host]:22` is not how port 22 is filed (ssh writes and looks up the plain name).
        let (_d, p) = file(&format!("[10.0.0.1]:22 ssh-ed25519 {KEY_A}\n"));
        assert!(!known_a(&p, "10.0.0.1", 22));
        assert!(!known_a(&p, "10.0.0.1", 2222));
    }

    #[test]
    fn hashed_entries_match() {
        let (_d, p) = file(&format!(
            "{} ssh-ed25519 {KEY_A}\n{} ssh-ed25519 {KEY_A}\n{} ssh-ed25519 {KEY_B}\n",
            hashed("10.0.0.1"),
            hashed("[10.0.0.2]:2222"),
            hashed("lab.example"),
        ));
        assert!(known_a(&p, "10.0.0.1", 22));
        assert!(!known_a(&p, "10.0.0.1", 2222));
        assert!(known_a(&p, "10.0.0.2", 2222));
        assert!(!known_a(&p, "10.0.0.2", 22));
        let e = verify("Lab.Example", 22, &key(KEY_A), &p, true).unwrap_err();
        assert!(matches!(e, SshError::HostKeyChanged { line: 3, .. }), "{e}");
        // A malformed hashed name matches nothing.
        let (_d, p) = file(&format!("|1|not base64|x ssh-ed25519 {KEY_B}\n"));
        assert_eq!(
            verify("10.0.0.1", 22, &key(KEY_A), &p, true).unwrap(),
            Accepted::Learned
        );
    }

    #[test]
    fn entries_hashed_by_ssh_keygen_match() {
        let (_d, p) = file(&format!(
            "10.0.0.1 ssh-ed25519 {KEY_A}\n[10.0.0.2]:2222 ssh-ed25519 {KEY_A}\n"
        ));
        let st = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED entries_hashed_by_ssh_keygen_match: no ssh-keygen");
            return;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("10.0.0.") && text.contains("|1|"), "{text}");
        assert!(known_a(&p, "10.0.0.1", 22));
        assert!(known_a(&p, "10.0.0.2", 2222));
        assert!(!known_a(&p, "10.0.0.2", 22));
    }

    #[test]
    fn revoked_key_is_refused_even_with_accept_new() {
        // Revoked for any host, and also on file as the host's key.
        let content = format!(
            "10.0.0.1 ssh-ed25519 {KEY_A}\n# revoked after the leak\n\
             @revoked other.example ssh-ed25519 {KEY_A}\n"
        );
        let (_d, p) = file(&content);
        for accept_new in [false, true] {
            let msg = refusal_a(&p, "10.0.0.1", 22, accept_new);
            assert!(
                msg.contains(&format!(
                    "host key of 10.0.0.1:22 is REVOKED: {} line 3 marks the key it offered \
                     (ssh-ed25519 SHA256:",
                    p.display()
                )),
                "{msg}"
            );
            // A host with no entry is not learned either.
            let msg = refusal_a(&p, "10.0.0.2", 22, accept_new);
            assert!(msg.contains("REVOKED"), "{msg}");
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), content);
        // Another key is not affected by the revocation.
        let (_d, p) = file(&format!("@revoked * ssh-ed25519 {KEY_B}\n"));
        assert_eq!(
            verify("10.0.0.1", 22, &key(KEY_A), &p, true).unwrap(),
            Accepted::Learned
        );
    }

    #[test]
    fn unreadable_revoked_line_refuses_every_key() {
        let content = format!("10.0.0.1 ssh-ed25519 {KEY_A}\n@revoked\t*  ssh-ed25519 AAAA!!!\n");
        let (_d, p) = file(&content);
        for accept_new in [false, true] {
            let msg = refusal_a(&p, "10.0.0.1", 22, accept_new);
            assert!(
                msg.contains(&format!(
                    "{} line 2 is a @revoked entry that cannot be read",
                    p.display()
                )),
                "{msg}"
            );
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), content);
    }

    #[test]
    fn cert_authority_entry_is_not_learned_over() {
        let content = format!("@cert-authority *.lab ssh-ed25519 {KEY_B}\n");
        let (_d, p) = file(&content);
        for accept_new in [false, true] {
            let msg = refusal_a(&p, "n1.lab", 22, accept_new);
            assert!(
                msg.contains(&format!(
                    "host key of n1.lab:22 is not trusted: {} line 1 is a @cert-authority entry \
                     for it, and halab does not support host certificates",
                    p.display()
                )),
                "{msg}"
            );
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), content);
        // The CA's key is not the host's key: it is not accepted as known either.
        let e = verify("n1.lab", 22, &key(KEY_B), &p, false).unwrap_err();
        assert!(chain(&e).contains("@cert-authority"), "{e}");
        // Another host is new; a plain key on file for the host is used as usual.
        assert_eq!(
            verify("n1.other", 22, &key(KEY_A), &p, true).unwrap(),
            Accepted::Learned
        );
        std::fs::write(&p, format!("{content}n1.lab ssh-ed25519 {KEY_A}\n")).unwrap();
        assert!(known_a(&p, "n1.lab", 22));
    }

    #[test]
    fn unreadable_matching_line_is_not_learned_over() {
        for (line, why) in [
            (
                format!("10.0.0.1 ssh-ed25519 AAAA!!!{KEY_A}"),
                "cannot be parsed",
            ),
            // The base64 holds an ed25519 key, the type field says otherwise.
            (format!("10.0.0.1 ssh-rsa {KEY_A}"), "cannot be parsed"),
            ("10.0.0.1 ssh-ed25519".to_string(), "holds no key"),
            (
                format!("@trusted 10.0.0.1 ssh-ed25519 {KEY_A}"),
                "unknown marker @trusted",
            ),
        ] {
            let content = format!("# c\n10.0.0.2 ssh-ed25519 {KEY_B}\n{line}\n");
            let (_d, p) = file(&content);
            for accept_new in [false, true] {
                let msg = refusal_a(&p, "10.0.0.1", 22, accept_new);
                assert!(
                    msg.contains(&format!(
                        "host key of 10.0.0.1:22 is not trusted: {} line 3 is an entry for it \
                         that cannot be read (",
                        p.display()
                    )) && msg.contains(why),
                    "{line}: {msg}"
                );
            }
            assert_eq!(std::fs::read_to_string(&p).unwrap(), content);
            // It does not concern other hosts, and a readable entry for the host wins.
            assert_eq!(
                verify("10.0.0.3", 22, &key(KEY_A), &p, true).unwrap(),
                Accepted::Learned
            );
            std::fs::write(&p, format!("{content}10.0.0.1 ssh-ed25519 {KEY_A}\n")).unwrap();
            assert!(known_a(&p, "10.0.0.1", 22), "{line}");
        }
    }

    #[test]
    fn key_of_another_type_is_refused() {
        let (_d, p) = file(&format!("10.0.0.1 ecdsa-sha2-nistp256 {KEY_EC}\n"));
        for accept_new in [false, true] {
            let e = verify("10.0.0.1", 22, &key(KEY_A), &p, accept_new).unwrap_err();
            assert!(
                matches!(&e, SshError::HostKeyOtherType { line: 1, known, .. }
                    if known == "ecdsa-sha2-nistp256"),
                "{e}"
            );
        }
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
    fn unreadable_file_is_an_error_not_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be read as a file.
        let e = verify("h", 22, &key(KEY_A), dir.path(), true).unwrap_err();
        assert!(matches!(e, SshError::KnownHosts { .. }), "{e}");
    }

    #[test]
    fn known_algorithms_are_preferred() {
        let (_d, p) = file(&format!(
            "h\tecdsa-sha2-nistp256   {KEY_EC}\n@cert-authority * ssh-rsa x\n"
        ));
        let order = preferred_host_key_order("H", 22, &p);
        assert!(matches!(order[0], Algorithm::Ecdsa { .. }), "{order:?}");
        assert_eq!(order.len(), russh::Preferred::DEFAULT.key.len());
        let order = preferred_host_key_order("other", 22, &p);
        assert_eq!(order[0], Algorithm::Ed25519);
        // Through a wildcard and a hashed name too.
        std::fs::write(
            &p,
            format!(
                "n*.lab ecdsa-sha2-nistp256 {KEY_EC}\n{} ecdsa-sha2-nistp256 {KEY_EC}\n",
                hashed("[10.0.0.1]:2222")
            ),
        )
        .unwrap();
        for (host, port) in [("n1.lab", 22), ("10.0.0.1", 2222)] {
            let order = preferred_host_key_order(host, port, &p);
            assert!(
                matches!(order[0], Algorithm::Ecdsa { .. }),
                "{host}: {order:?}"
            );
        }
    }

    #[test]
    fn glob_wildcards() {
        for (pattern, name, hit) in [
            ("*", "anything", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("a*b*c", "abxbc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.lab", "n1.lab", true),
            ("*.lab", "n1.lab.x", false),
            ("**a", "bba", true),
            ("10.0.0.?", "10.0.0.12", false),
        ] {
            assert_eq!(
                glob(pattern.as_bytes(), name.as_bytes()),
                hit,
                "{pattern} {name}"
            );
        }
    }
}
