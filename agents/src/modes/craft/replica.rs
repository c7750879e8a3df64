//! Replicating splices to the other proxies (thesis §4.6 steps 6–7, the `spliceListener`): a
//! proxy that makes a splice sends its translation to every other live proxy and installs it
//! itself only when all have acknowledged it, so that from the first spliced packet on, any
//! proxy carries any packet of the connection.
//!
//! Wire: one TCP connection per pair, kept open; each message one line, `<tag> <json>`, the
//! tag an HMAC of the JSON under the testbed's key (a forged install would let anyone on the
//! network steer connections). The answer is one line: `ok`, or `error <why>`.

use super::datapath::{Datapath, DatapathError};
use super::splicer::Exits;
use super::translation::{Flow, Rewrite, Translation};
use halab_protocol::sealed::Key;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const MAGIC: &[u8; 4] = b"HCR1";

/// How long a proxy waits for its peers' acknowledgements before it relays the connection
/// itself instead of splicing it.
pub const ACK_LIMIT: Duration = Duration::from_secs(2);

/// What one proxy asks another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Message {
    /// Install both directions of a splice.
    Install(WireTranslation),
    /// Forget a splice (the connection ended).
    Remove { flows: [WireFlow; 2] },
}

/// A flow on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFlow {
    pub src: std::net::SocketAddrV4,
    pub dst: std::net::SocketAddrV4,
}

/// One direction on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRewrite {
    pub from: WireFlow,
    pub to: WireFlow,
    pub seq_add: u32,
    pub ack_add: u32,
    pub tsval_add: u32,
    pub tsecr_add: u32,
    pub win_shl: u8,
    pub win_shr: u8,
}

/// A translation on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTranslation {
    pub to_backend: WireRewrite,
    pub to_client: WireRewrite,
}

impl From<Flow> for WireFlow {
    fn from(f: Flow) -> WireFlow {
        WireFlow {
            src: f.src,
            dst: f.dst,
        }
    }
}

impl From<WireFlow> for Flow {
    fn from(f: WireFlow) -> Flow {
        Flow::new(f.src, f.dst)
    }
}

impl From<Rewrite> for WireRewrite {
    fn from(r: Rewrite) -> WireRewrite {
        WireRewrite {
            from: r.from.into(),
            to: r.to.into(),
            seq_add: r.seq_add,
            ack_add: r.ack_add,
            tsval_add: r.tsval_add,
            tsecr_add: r.tsecr_add,
            win_shl: r.win_shl,
            win_shr: r.win_shr,
        }
    }
}

impl From<WireRewrite> for Rewrite {
    fn from(r: WireRewrite) -> Rewrite {
        Rewrite {
            from: r.from.into(),
            to: r.to.into(),
            seq_add: r.seq_add,
            ack_add: r.ack_add,
            tsval_add: r.tsval_add,
            tsecr_add: r.tsecr_add,
            win_shl: r.win_shl,
            win_shr: r.win_shr,
        }
    }
}

impl From<Translation> for WireTranslation {
    fn from(t: Translation) -> WireTranslation {
        WireTranslation {
            to_backend: t.to_backend.into(),
            to_client: t.to_client.into(),
        }
    }
}

impl From<WireTranslation> for Translation {
    fn from(t: WireTranslation) -> Translation {
        Translation {
            to_backend: t.to_backend.into(),
            to_client: t.to_client.into(),
        }
    }
}

/// Why a message was refused or could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("a message without a valid tag (not sealed with the testbed's key)")]
    Forged,
    #[error("a message that is not one")]
    Malformed(#[source] serde_json::Error),
    #[error("installing it")]
    Datapath(#[from] DatapathError),
    #[error("talking to proxy {peer}")]
    Io {
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy {peer} refused: {why}")]
    Refused { peer: SocketAddr, why: String },
    #[error("proxy {peer} did not answer within {ACK_LIMIT:?}")]
    TimedOut { peer: SocketAddr },
}

/// A message as its line (without the newline).
pub fn seal(key: &Key, m: &Message) -> String {
    // A Message of plain fields always serialises.
    let json = serde_json::to_string(m).unwrap_or_default();
    format!("{} {json}", key.tag_hex(MAGIC, &[json.as_bytes()]))
}

/// A line as its message, if its tag is right.
pub fn open(key: &Key, line: &str) -> Result<Message, ReplicaError> {
    let (tag, json) = line.split_once(' ').ok_or(ReplicaError::Forged)?;
    if !key.verify_hex(MAGIC, &[json.as_bytes()], tag) {
        return Err(ReplicaError::Forged);
    }
    serde_json::from_str(json).map_err(ReplicaError::Malformed)
}

/// Carries out `m` on this host's data path.
pub fn apply(m: &Message, datapath: &Mutex<Datapath>, exits: Exits) -> Result<(), ReplicaError> {
    let mut dp = datapath.lock().unwrap_or_else(|p| p.into_inner());
    match m {
        Message::Install(t) => {
            let t = Translation::from(*t);
            dp.splice(&t.to_client, exits.to_client)?;
            dp.splice(&t.to_backend, exits.to_backend)?;
        }
        Message::Remove { flows } => {
            for f in flows {
                dp.remove(Flow::from(*f))?;
            }
        }
    }
    Ok(())
}

/// The splice listener: serves other proxies' messages until `cancel`.
pub async fn serve(
    listener: TcpListener,
    key: Arc<Key>,
    datapath: Arc<Mutex<Datapath>>,
    exits: Exits,
    cancel: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            a = listener.accept() => match a {
                Ok((stream, peer)) => {
                    let (key, dp) = (key.clone(), datapath.clone());
                    conns.spawn(async move {
                        if let Err(e) = serve_peer(stream, &key, &dp, exits).await {
                            tracing::warn!(%peer, error = %e, "craft: splice listener");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "craft: splice listener accept"),
            },
        }
    }
}

async fn serve_peer(
    stream: TcpStream,
    key: &Key,
    datapath: &Mutex<Datapath>,
    exits: Exits,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        let answer = match open(key, &line).and_then(|m| apply(&m, datapath, exits)) {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error {}\n", crate::error::chain(&e)),
        };
        w.write_all(answer.as_bytes()).await?;
    }
    Ok(())
}

/// A proxy's connections to its peers' splice listeners.
pub struct Peers {
    key: Arc<Key>,
    conns: tokio::sync::Mutex<std::collections::HashMap<SocketAddr, Conn>>,
}

struct Conn {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Peers {
    pub fn new(key: Arc<Key>) -> Peers {
        Peers {
            key,
            conns: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Sends `m` to every one of `peers` and waits for all their acknowledgements (at most
    /// [`ACK_LIMIT`] each). Peers are asked one after the other over their kept connections.
    pub async fn everywhere(&self, peers: &[SocketAddr], m: &Message) -> Result<(), ReplicaError> {
        let line = seal(&self.key, m) + "\n";
        let mut conns = self.conns.lock().await;
        for peer in peers {
            let r = tokio::time::timeout(ACK_LIMIT, ask(&mut conns, *peer, &line)).await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    conns.remove(peer);
                    return Err(e);
                }
                Err(_) => {
                    conns.remove(peer);
                    return Err(ReplicaError::TimedOut { peer: *peer });
                }
            }
        }
        Ok(())
    }
}

async fn ask(
    conns: &mut std::collections::HashMap<SocketAddr, Conn>,
    peer: SocketAddr,
    line: &str,
) -> Result<(), ReplicaError> {
    let io = |source| ReplicaError::Io { peer, source };
    let c = match conns.entry(peer) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let s = TcpStream::connect(peer).await.map_err(io)?;
            let _ = s.set_nodelay(true);
            let (r, w) = s.into_split();
            e.insert(Conn {
                lines: BufReader::new(r).lines(),
                w,
            })
        }
    };
    c.w.write_all(line.as_bytes()).await.map_err(io)?;
    match c.lines.next_line().await.map_err(io)? {
        Some(a) if a == "ok" => Ok(()),
        Some(a) => Err(ReplicaError::Refused {
            peer,
            why: a.strip_prefix("error ").unwrap_or(&a).to_string(),
        }),
        None => Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn key() -> Key {
        Key::from_hex("00112233445566778899aabbccddeeff").unwrap()
    }

    fn flow(a: u8, b: u8) -> WireFlow {
        WireFlow {
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), 1000 + a as u16),
            dst: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, b), 8080),
        }
    }

    #[test]
    fn sealed_messages_round_trip_and_forged_ones_are_refused() {
        let m = Message::Remove {
            flows: [flow(1, 2), flow(3, 4)],
        };
        let line = seal(&key(), &m);
        assert_eq!(open(&key(), &line).unwrap(), m);
        let other = Key::from_hex("ffeeddccbbaa99887766554433221100").unwrap();
        assert!(matches!(open(&other, &line), Err(ReplicaError::Forged)));
        let tampered = line.replace("10.0.0.1", "10.0.0.9");
        assert!(matches!(open(&key(), &tampered), Err(ReplicaError::Forged)));
        assert!(matches!(open(&key(), "junk"), Err(ReplicaError::Forged)));
    }
}
