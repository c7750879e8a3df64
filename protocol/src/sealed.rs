//! Authenticated datagrams between a testbed's agents (and the console): `MAGIC` · body ·
//! HMAC-SHA256(key, `MAGIC` · body) under the per-testbed key the console makes at `up`. A
//! datagram whose tag does not verify is refused before its body is looked at, so a forged one
//! cannot even make the parser work. Each mode names its own 4-byte magic, so a datagram of one
//! kind is never taken for another even under the same key.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Length of the HMAC-SHA256 tag at the end of every sealed datagram.
pub const TAG_LEN: usize = 32;
/// The largest datagram sealed or accepted (fits one UDP datagram on any link here).
pub const MAX_DATAGRAM: usize = 60_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    #[error("key is not hex or is empty")]
    BadKey,
    #[error("datagram of {0} bytes is too short or too long")]
    Length(usize),
    #[error("not a datagram of this kind (magic)")]
    Magic,
    #[error("bad HMAC (forged, or another testbed's key)")]
    BadTag,
}

/// The per-testbed HMAC key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key given as hex, as configs carry it; empty or odd-length hex is refused.
    pub fn from_hex(hex: &str) -> Result<Key, SealError> {
        if hex.is_empty() || !hex.len().is_multiple_of(2) {
            return Err(SealError::BadKey);
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .map(Key)
            .ok_or(SealError::BadKey)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        #[allow(clippy::expect_used)]
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// `body` behind `magic`, with the tag appended.
    pub fn seal(&self, magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(magic.len() + body.len() + TAG_LEN);
        out.extend_from_slice(magic);
        out.extend_from_slice(body);
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The body of a sealed datagram of kind `magic`; the tag is checked, in constant time,
    /// before anything else of the body is looked at.
    pub fn open<'a>(&self, magic: &[u8; 4], datagram: &'a [u8]) -> Result<&'a [u8], SealError> {
        if datagram.len() < magic.len() + TAG_LEN || datagram.len() > MAX_DATAGRAM {
            return Err(SealError::Length(datagram.len()));
        }
        if &datagram[..magic.len()] != magic {
            return Err(SealError::Magic);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| SealError::BadTag)?;
        Ok(&signed[magic.len()..])
    }

    /// A detached tag over `parts` (each length-prefixed, so no two lists of parts collide),
    /// hex: for messages that travel inside another channel, such as a fence request.
    pub fn tag_hex(&self, magic: &[u8; 4], parts: &[&[u8]]) -> String {
        let mut mac = self.mac();
        mac.update(magic);
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `tag` is [`Key::tag_hex`] of `parts` (compared in constant time).
    pub fn verify_hex(&self, magic: &[u8; 4], parts: &[&[u8]], tag: &str) -> bool {
        let Ok(Key(raw)) = Key::from_hex(tag) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(magic);
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.verify_slice(&raw).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_opens_and_anything_changed_is_refused() {
        let k = Key::from_hex("00112233").unwrap();
        let d = k.seal(b"TEST", b"hello");
        assert_eq!(k.open(b"TEST", &d).unwrap(), b"hello");
        assert_eq!(k.open(b"TESU", &d), Err(SealError::Magic));
        let mut bad = d.clone();
        bad[5] ^= 1;
        assert_eq!(k.open(b"TEST", &bad), Err(SealError::BadTag));
        let other = Key::from_hex("00112234").unwrap();
        assert_eq!(other.open(b"TEST", &d), Err(SealError::BadTag));
        assert_eq!(k.open(b"TEST", &d[..10]), Err(SealError::Length(10)));
        assert_eq!(Key::from_hex("abc"), Err(SealError::BadKey));
        assert_eq!(Key::from_hex("zz"), Err(SealError::BadKey));
    }

    #[test]
    fn detached_tags_verify_only_their_parts() {
        let k = Key::from_hex("abcd").unwrap();
        let t = k.tag_hex(b"HSTF", &[b"primary", b"12"]);
        assert!(k.verify_hex(b"HSTF", &[b"primary", b"12"], &t));
        assert!(!k.verify_hex(b"HSTF", &[b"primary1", b"2"], &t));
        assert!(!k.verify_hex(b"HSTX", &[b"primary", b"12"], &t));
        assert!(!k.verify_hex(b"HSTF", &[b"primary", b"12"], "00"));
        assert!(!k.verify_hex(b"HSTF", &[b"primary", b"12"], "not hex"));
    }
}
