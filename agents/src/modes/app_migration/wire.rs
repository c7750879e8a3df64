//! The app-migration wire formats, parsed without I/O.
//!
//! Datagrams (group traffic on UDP [`GROUP_PORT`], triggers to a client's migration port):
//! `HAM1` · JSON body · HMAC-SHA256(key, `HAM1` · body). A datagram whose tag does not verify
//! is dropped before its body is parsed, so a forged one cannot even make the parser work.
//!
//! The download exchange on TCP [`SERVICE_PORT`] (paper 000 §5.1, with the additions of paper
//! 004): the client sends one [`Hello`] line, the server answers one [`Welcome`] line (its group
//! index, where it starts, and the failover list), then the bytes `[offset, size)`, then
//! [`END_TOKEN`], then FIN. A FIN without the end token is a failure (RedSocks' end token).
//!
//! [`GROUP_PORT`]: halab_protocol::modes::app_migration::GROUP_PORT
//! [`SERVICE_PORT`]: halab_protocol::modes::app_migration::SERVICE_PORT

use halab_protocol::sealed::{self, SealError};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;

const MAGIC: &[u8; 4] = b"HAM1";
/// The largest datagram sent or accepted (fits one UDP datagram on any link here).
pub const MAX_DATAGRAM: usize = sealed::MAX_DATAGRAM;
/// What follows the last payload byte of a download; then the server closes.
pub const END_TOKEN: &[u8] = b"HALAB-END\n";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error(transparent)]
    Sealed(#[from] SealError),
    #[error("bad body: {0}")]
    Body(String),
}

/// Why a control line of the download exchange is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    #[error("not an app-migration download: {0:?}")]
    NotADownload(String),
    #[error("server refused: {0:?}")]
    Refused(String),
    #[error("bad field {0:?}")]
    BadField(String),
    #[error("bad {key} {value:?}")]
    BadValue { key: String, value: String },
    #[error("no {0}")]
    Missing(&'static str),
    #[error("size {0} too large")]
    TooLarge(u64),
    #[error("offset {offset} beyond size {size}")]
    BeyondSize { offset: u64, size: u64 },
}

/// One `key=value` word of a control line.
fn field(w: &str) -> Result<(&str, &str), LineError> {
    w.split_once('=')
        .ok_or_else(|| LineError::BadField(w.to_string()))
}

/// `value` of `key` parsed, or the line refused naming both.
fn value<T>(key: &str, value: &str, parsed: Option<T>) -> Result<T, LineError> {
    parsed.ok_or_else(|| LineError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// The per-testbed HMAC key, sealing this mode's datagrams (`HAM1`).
#[derive(Clone, Debug)]
pub struct Key(sealed::Key);

impl Key {
    pub fn from_hex(hex: &str) -> Result<Key, WireError> {
        Ok(Key(sealed::Key::from_hex(hex)?))
    }

    /// `value` as an authenticated datagram.
    pub fn seal<T: Serialize>(&self, value: &T) -> Vec<u8> {
        // Serialising plain data structs to JSON cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.0.seal(MAGIC, &body)
    }

    /// The value in an authenticated datagram; the tag is checked (in constant time) before
    /// the body is looked at.
    pub fn open<T: DeserializeOwned>(&self, datagram: &[u8]) -> Result<T, WireError> {
        let body = self.0.open(MAGIC, datagram)?;
        serde_json::from_slice(body).map_err(|e| WireError::Body(e.to_string()))
    }
}

/// What the group knows about one client download (the soft state of paper 000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnInfo {
    /// The client's id for its download, stable across its reconnects.
    pub id: u64,
    /// Client address as the owner saw it.
    pub client: String,
    /// Client's migration port (0: client-triggered, the client has none).
    pub mport: u16,
    pub name: String,
    pub size: u64,
    /// How many times the client has connected for this download: the latest claim wins.
    pub generation: u32,
    /// Bytes the owner has sent up to (the last checkpoint it knows of).
    pub offset: u64,
}

/// Group traffic between servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMsg {
    /// Sender's index in the group.
    pub from: u32,
    /// Sender's start time (wall clock ns): a larger one is a restarted sender.
    pub incarnation: u64,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Body {
    Heartbeat {
        load: u32,
    },
    /// Delta: the sender now serves this download.
    Open {
        conn: ConnInfo,
    },
    /// Delta: the sender no longer serves this download (done or gone).
    Close {
        id: u64,
        generation: u32,
    },
    /// Periodic full state: (part of) the downloads the sender serves.
    Full {
        conns: Vec<ConnInfo>,
    },
}

/// A server's request to a client to move its download to that server (paper 000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerMsg {
    /// The download it is about.
    pub conn: u64,
    /// The sender's group index: the new owner.
    pub from: u32,
    /// The group index of the server the sender believes dead, which owned the download.
    pub dead: u32,
    /// Sender's wall-clock ns: a client takes only triggers newer than the last it took.
    pub sent: u64,
}

/// The client's first line: `HALAB-AM download name=N size=S conn=HEX gen=G mport=P offset=O`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub name: String,
    pub size: u64,
    pub conn: u64,
    pub generation: u32,
    pub mport: u16,
    pub offset: u64,
}

/// The longest control line accepted.
pub const MAX_LINE: usize = 1024;

impl Hello {
    pub fn line(&self) -> String {
        format!(
            "HALAB-AM download name={} size={} conn={:x} gen={} mport={} offset={}\n",
            self.name, self.size, self.conn, self.generation, self.mport, self.offset
        )
    }

    pub fn parse(line: &str) -> Result<Hello, LineError> {
        let mut words = line.split_ascii_whitespace();
        if (words.next(), words.next()) != (Some("HALAB-AM"), Some("download")) {
            return Err(LineError::NotADownload(line.to_string()));
        }
        let (mut name, mut size, mut conn, mut generation, mut mport, mut offset) =
            (None, None, None, None, None, None);
        for w in words {
            let (k, v) = field(w)?;
            match k {
                "name" if crate::workload::request::valid_name(v) => name = Some(v.to_string()),
                "size" => size = Some(value(k, v, v.parse::<u64>().ok())?),
                "conn" => conn = Some(value(k, v, u64::from_str_radix(v, 16).ok())?),
                "gen" => generation = Some(value(k, v, v.parse::<u32>().ok())?),
                "mport" => mport = Some(value(k, v, v.parse::<u16>().ok())?),
                "offset" => offset = Some(value(k, v, v.parse::<u64>().ok())?),
                _ => return value(k, v, None),
            }
        }
        let h = Hello {
            name: name.ok_or(LineError::Missing("name"))?,
            size: size.ok_or(LineError::Missing("size"))?,
            conn: conn.ok_or(LineError::Missing("conn"))?,
            generation: generation.ok_or(LineError::Missing("gen"))?,
            mport: mport.ok_or(LineError::Missing("mport"))?,
            offset: offset.ok_or(LineError::Missing("offset"))?,
        };
        if h.size > crate::workload::request::MAX_SIZE {
            return Err(LineError::TooLarge(h.size));
        }
        if h.offset > h.size {
            return Err(LineError::BeyondSize {
                offset: h.offset,
                size: h.size,
            });
        }
        Ok(h)
    }
}

/// The server's answer: `OK me=I offset=O servers=A,B` — its group index, the offset it starts
/// at, and the failover list (the other live servers, in the order to try them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub me: u32,
    pub offset: u64,
    pub servers: Vec<u32>,
}

impl Welcome {
    pub fn line(&self) -> String {
        let list: Vec<String> = self.servers.iter().map(u32::to_string).collect();
        format!(
            "OK me={} offset={} servers={}\n",
            self.me,
            self.offset,
            list.join(",")
        )
    }

    pub fn parse(line: &str) -> Result<Welcome, LineError> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("OK") {
            return Err(LineError::Refused(line.to_string()));
        }
        let (mut me, mut offset, mut servers) = (None, None, Vec::new());
        for w in words {
            let (k, v) = field(w)?;
            match k {
                "me" => me = Some(value(k, v, v.parse::<u32>().ok())?),
                "offset" => offset = Some(value(k, v, v.parse::<u64>().ok())?),
                "servers" => {
                    for s in v.split(',').filter(|s| !s.is_empty()) {
                        servers.push(value(k, v, s.parse::<u32>().ok())?);
                    }
                }
                _ => return value(k, v, None),
            }
        }
        Ok(Welcome {
            me: me.ok_or(LineError::Missing("me"))?,
            offset: offset.ok_or(LineError::Missing("offset"))?,
            servers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> Key {
        Key::from_hex("00112233445566778899aabbccddeeff").unwrap()
    }

    #[test]
    fn sealed_datagrams_open_with_the_same_key_only() {
        let t = TriggerMsg {
            conn: 42,
            from: 1,
            dead: 0,
            sent: 9,
        };
        let d = key().seal(&t);
        assert_eq!(key().open::<TriggerMsg>(&d), Ok(t.clone()));
        let other = Key::from_hex("ff").unwrap();
        assert_eq!(
            other.open::<TriggerMsg>(&d),
            Err(WireError::Sealed(SealError::BadTag))
        );
        // One flipped bit anywhere: refused.
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 1;
            assert!(key().open::<TriggerMsg>(&bad).is_err(), "bit in byte {i}");
        }
        assert_eq!(
            key().open::<TriggerMsg>(b"HAM1"),
            Err(WireError::Sealed(SealError::Length(4)))
        );
    }

    #[test]
    fn keys_are_hex() {
        assert!(Key::from_hex("").is_err());
        assert!(Key::from_hex("abc").is_err());
        assert!(Key::from_hex("zz").is_err());
        assert!(Key::from_hex("é0").is_err());
    }

    #[test]
    fn control_lines_round_trip() {
        let h = Hello {
            name: "halab-1.bin".into(),
            size: 200,
            conn: 0xdead,
            generation: 2,
            mport: 40000,
            offset: 100,
        };
        assert_eq!(Hello::parse(h.line().trim_end()), Ok(h));
        let w = Welcome {
            me: 1,
            offset: 5,
            servers: vec![2, 0],
        };
        assert_eq!(Welcome::parse(w.line().trim_end()), Ok(w));
        assert!(
            Hello::parse("HALAB-AM download name=../x size=1 conn=1 gen=1 mport=0 offset=0")
                .is_err()
        );
        assert!(
            Hello::parse("HALAB-AM download name=x size=1 conn=1 gen=1 mport=0 offset=2").is_err()
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = key().open::<GroupMsg>(&bytes);
            let s = String::from_utf8_lossy(&bytes);
            let _ = Hello::parse(&s);
            let _ = Welcome::parse(&s);
        }
    }
}
