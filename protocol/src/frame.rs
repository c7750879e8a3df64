//! Framing of the control channel: a fixed 8-byte header followed by a JSON payload.
//!
//! ```text
//!  0      2        3        4                8
//!  +------+--------+--------+----------------+--------------------+
//!  | "HL" | version| flags  | payload length | payload (JSON)     |
//!  |      |  (u8)  | (0)    |  (u32, BE)     | `length` bytes     |
//!  +------+--------+--------+----------------+--------------------+
//! ```
//!
//! The codec does no I/O: bytes go in through [`FrameDecoder::feed`], frames come out of
//! [`FrameDecoder::next_frame`], and [`encode_frame`] turns a message into bytes. The magic
//! makes a peer that is not an agent at all (a shell printing `command not found`, an SSH
//! banner) fail on its first bytes with that text quoted in the error, and the version byte in
//! every header makes a console and agent of different protocol versions refuse each other
//! before either tries to interpret a payload.
//!
//! No function in this module panics, whatever bytes it is given.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"HL";
/// The protocol version this build speaks. Bump on any incompatible change of the messages.
pub const PROTOCOL_VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 8;
/// The largest payload either side accepts. Large enough for a full-resolution run record,
/// small enough that a corrupt length cannot make a peer allocate gigabytes.
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// Why a byte stream is not (or no longer) a valid control channel. After any of these the
/// channel must be closed: the decoder does not resynchronise.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("peer is not speaking the halab protocol: it sent {preview:?}")]
    BadMagic { preview: String },
    #[error("protocol version mismatch: peer speaks version {theirs}, this side speaks {ours}")]
    VersionMismatch { ours: u8, theirs: u8 },
    #[error("frame header has unknown flags {flags:#04x}")]
    BadFlags { flags: u8 },
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    #[error("channel closed in the middle of a frame: {got} of {expected} bytes received")]
    Truncated { expected: usize, got: usize },
    #[error("malformed message: {0}")]
    Payload(String),
}

/// Encodes `msg` as one frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let payload = serde_json::to_vec(msg).map_err(|e| FrameError::Payload(e.to_string()))?;
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::Oversized {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(0);
    // Cannot truncate: payload.len() <= MAX_PAYLOAD < u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a payload taken from [`FrameDecoder::next_frame`] into a message.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(|e| FrameError::Payload(e.to_string()))
}

/// Incremental frame decoder. Feed it bytes as they arrive; take whole frames out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Returns the next complete frame's payload, `Ok(None)` when more bytes are needed, or the
    /// error that makes this stream unusable (returned again on every later call).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.parse_header() {
            Ok(Some(len)) => {
                if self.buf.len() < HEADER_LEN + len {
                    return Ok(None);
                }
                let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
                self.buf.drain(..HEADER_LEN + len);
                Ok(Some(payload))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.buf.clear();
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Validates as much of the header as has arrived; `Ok(Some(len))` once it is complete.
    /// Checks the magic and version byte by byte, so garbage is refused at its first bytes
    /// rather than after eight.
    fn parse_header(&self) -> Result<Option<usize>, FrameError> {
        let b = &self.buf;
        for (i, m) in MAGIC.iter().enumerate() {
            match b.get(i) {
                None => return Ok(None),
                Some(x) if x != m => {
                    return Err(FrameError::BadMagic {
                        preview: preview(b),
                    });
                }
                Some(_) => {}
            }
        }
        match b.get(2) {
            None => return Ok(None),
            Some(&v) if v != PROTOCOL_VERSION => {
                return Err(FrameError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: v,
                });
            }
            Some(_) => {}
        }
        match b.get(3) {
            None => return Ok(None),
            Some(&0) => {}
            Some(&flags) => return Err(FrameError::BadFlags { flags }),
        }
        let Some(len_bytes) = b.get(4..8) else {
            return Ok(None);
        };
        let len =
            u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::Oversized {
                len,
                max: MAX_PAYLOAD,
            });
        }
        Ok(Some(len))
    }

    /// To be called when the byte stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let expected = match self.parse_header() {
            Ok(Some(len)) => HEADER_LEN + len,
            Ok(None) => HEADER_LEN,
            Err(e) => return Err(e),
        };
        Err(FrameError::Truncated {
            expected,
            got: self.buf.len(),
        })
    }

    /// Bytes received but not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// The first bytes of a non-protocol stream as text, for the error message: a user who sees
/// `bash: /root/.halab/halab-agent: No such file or directory` knows what went wrong.
fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let mut s: String = text.trim_end().to_string();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{AgentMsg, ConsoleMsg};
    use proptest::prelude::*;

    fn ping(id: u64) -> Vec<u8> {
        encode_frame(&ConsoleMsg::Ping { id }).unwrap()
    }

    #[test]
    fn round_trip_in_single_bytes() {
        let mut bytes = ping(7);
        bytes.extend(ping(8));
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for b in bytes {
            d.feed(&[b]);
            while let Some(p) = d.next_frame().unwrap() {
                got.push(decode_payload::<ConsoleMsg>(&p).unwrap());
            }
        }
        assert_eq!(
            got,
            vec![ConsoleMsg::Ping { id: 7 }, ConsoleMsg::Ping { id: 8 }]
        );
        d.finish().unwrap();
    }

    #[test]
    fn garbage_is_refused_at_once_with_its_text() {
        let mut d = FrameDecoder::new();
        d.feed(b"bash: halab-agent: command not found\n");
        match d.next_frame() {
            Err(FrameError::BadMagic { preview }) => {
                assert_eq!(preview, "bash: halab-agent: command not found")
            }
            other => panic!("expected BadMagic, got {other:?}"),
        }
        // The decoder stays failed.
        d.feed(&ping(1));
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut f = ping(1);
        f[2] = PROTOCOL_VERSION + 1;
        let mut d = FrameDecoder::new();
        d.feed(&f);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1
            })
        );
    }

    #[test]
    fn oversized_is_refused_before_buffering() {
        let mut f = MAGIC.to_vec();
        f.extend([PROTOCOL_VERSION, 0]);
        f.extend(u32::MAX.to_be_bytes());
        let mut d = FrameDecoder::new();
        d.feed(&f);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::Oversized { len, .. }) if len == u32::MAX as usize
        ));
    }

    #[test]
    fn truncated_is_reported_at_end_of_stream() {
        let f = ping(1);
        let mut d = FrameDecoder::new();
        d.feed(&f[..f.len() - 3]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(
            d.finish(),
            Err(FrameError::Truncated {
                expected: f.len(),
                got: f.len() - 3
            })
        );
    }

    #[test]
    fn malformed_payload_is_an_error_not_a_panic() {
        let mut f = MAGIC.to_vec();
        f.extend([PROTOCOL_VERSION, 0]);
        f.extend(5u32.to_be_bytes());
        f.extend(b"{\"ty");
        f.push(b'}');
        let mut d = FrameDecoder::new();
        d.feed(&f);
        let p = d.next_frame().unwrap().unwrap();
        assert!(matches!(
            decode_payload::<AgentMsg>(&p),
            Err(FrameError::Payload(_))
        ));
    }

    proptest! {
        /// Any byte sequence, cut anywhere, gives frames or an error: never a panic, and never
        /// a frame longer than the limit.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                       cut in 0usize..2048) {
            let mut d = FrameDecoder::new();
            let cut = cut.min(bytes.len());
            for chunk in [&bytes[..cut], &bytes[cut..]] {
                d.feed(chunk);
                while let Ok(Some(p)) = d.next_frame() {
                    prop_assert!(p.len() <= MAX_PAYLOAD);
                    let _ = decode_payload::<AgentMsg>(&p);
                    let _ = decode_payload::<ConsoleMsg>(&p);
                }
            }
            let _ = d.finish();
        }

        /// Valid frames with garbage spliced into the header are refused, never misread.
        #[test]
        fn header_corruption_is_detected(id in any::<u64>(), pos in 0usize..4, byte in any::<u8>()) {
            let mut f = ping(id);
            prop_assume!(f[pos] != byte);
            f[pos] = byte;
            let mut d = FrameDecoder::new();
            d.feed(&f);
            prop_assert!(d.next_frame().is_err());
        }

        #[test]
        fn every_ping_round_trips(id in any::<u64>()) {
            let mut d = FrameDecoder::new();
            d.feed(&ping(id));
            let p = d.next_frame().unwrap().unwrap();
            prop_assert_eq!(decode_payload::<ConsoleMsg>(&p).unwrap(), ConsoleMsg::Ping { id });
        }
    }
}
