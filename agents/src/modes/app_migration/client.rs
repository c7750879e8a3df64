//! The download client under app-migration, called by the workload client for the download
//! workload. It keeps the measuring of [`Client`] (meter, checker, events) and changes where
//! it goes after a failure and how it notices one:
//!
//! - client-triggered (paper 004, RedSocks): the server's welcome line carries the failover
//!   list; the download ends with [`END_TOKEN`], so a FIN without it is a failure; a TCP error
//!   or no byte for `heartbeat_ms × missed_heartbeats` (the client's own heartbeat: a download
//!   that flows is alive) is one too; the client resumes on the next server of the list.
//! - server-triggered (paper 000, Snoeren et al.): the client opens a UDP migration port and
//!   names it in its hello; it waits for a surviving server's trigger and reconnects to that
//!   server. Its own detection is only a fallback, much later, for a group that is gone.
//!
//! Either way it resumes at its byte offset. A trigger is taken only if [`check_trigger`]
//! accepts it; anything else is logged and ignored.

use super::wire::{END_TOKEN, Hello, Key, MAX_LINE, TriggerMsg, Welcome, WireError};
use crate::error::Chain;
use crate::workload::connection::{Break, Client, ClientError};
use crate::workload::request::file_name;
use halab_protocol::modes::app_migration::{AppMigrationConfig, SERVICE_PORT, Trigger};
use halab_protocol::mono_ns;
use halab_workload::meter::ConnEvent;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Why a trigger datagram is not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TriggerRefused {
    #[error(transparent)]
    Sealed(#[from] WireError),
    #[error("for download {got:x}, not this one ({want:x})")]
    OtherDownload { got: u64, want: u64 },
    #[error("from member {0}, which does not exist")]
    NoSuchMember(u32),
    #[error("names member {dead} as the dead owner, but this download is served by {current:?}")]
    NotTheOwner { dead: u32, current: Option<u32> },
    #[error("{from} is not an address of {host}")]
    NotFromMember { from: IpAddr, host: String },
    #[error("replayed (not newer than the last trigger taken)")]
    Replayed,
}

/// Why the download client cannot run at all (its failures on the way are attempts that
/// broke, or [`ClientError`]s of every client).
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("app-migration key")]
    Key(#[source] WireError),
    #[error("the app-migration group is empty")]
    EmptyGroup,
    #[error("cannot open a migration port")]
    MigrationPort(#[source] std::io::Error),
    #[error("the migration port's address")]
    MigrationPortAddr(#[source] std::io::Error),
    #[error("server answered {welcome:?} to offset {offset}")]
    Welcome { welcome: Welcome, offset: u64 },
}

impl From<DownloadError> for ClientError {
    fn from(e: DownloadError) -> ClientError {
        ClientError::Mode(Box::new(e))
    }
}

/// Whether to take a trigger datagram from `source` for download `conn`, served now by group
/// member `current`, when the newest trigger taken so far was sent at `last_sent`.
///
/// Refused: a bad HMAC (forged), a trigger for another download, one naming as dead a server
/// that does not serve this download (the sender does not own what it asks for), one from a
/// server that is not a member or not at that member's address, and a replay.
pub fn check_trigger(
    key: &Key,
    cfg: &AppMigrationConfig,
    datagram: &[u8],
    source: IpAddr,
    conn: u64,
    current: Option<u32>,
    last_sent: u64,
) -> Result<TriggerMsg, TriggerRefused> {
    let t: TriggerMsg = key.open(datagram)?;
    if t.conn != conn {
        return Err(TriggerRefused::OtherDownload {
            got: t.conn,
            want: conn,
        });
    }
    let Some(member) = cfg.group.get(t.from as usize) else {
        return Err(TriggerRefused::NoSuchMember(t.from));
    };
    if current != Some(t.dead) || t.from == t.dead {
        return Err(TriggerRefused::NotTheOwner {
            dead: t.dead,
            current,
        });
    }
    let at_member = std::iter::once(&member.service_addr)
        .chain(&member.heartbeat_addrs)
        .any(|a| a.parse::<IpAddr>().ok() == Some(source));
    if !at_member {
        return Err(TriggerRefused::NotFromMember {
            from: source,
            host: member.host.clone(),
        });
    }
    if t.sent <= last_sent {
        return Err(TriggerRefused::Replayed);
    }
    Ok(t)
}

/// A download id unique among concurrent clients: a hash of seed, connection and time.
fn download_id(seed: u64, index: u32) -> u64 {
    let mut h = seed ^ (index as u64).rotate_left(32) ^ mono_ns();
    for _ in 0..2 {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    h ^ (h >> 33)
}

/// How an attempt ended.
enum End {
    Done,
    /// The run was stopped.
    Stopped,
    Broke(Break),
    /// A server asked the client to move to it.
    Migrate(TriggerMsg, String),
}

/// The download of paper 000 §5.1 under app-migration.
pub async fn download(c: &mut Client<'_>, cfg: &AppMigrationConfig) -> Result<(), ClientError> {
    let key = Key::from_hex(&cfg.key_hex).map_err(DownloadError::Key)?;
    let members = cfg.group.len() as u32;
    if members == 0 {
        return Err(DownloadError::EmptyGroup.into());
    }
    let server_triggered = cfg.trigger == Trigger::Server;
    let migration = if server_triggered {
        Some(
            UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), 0))
                .await
                .map_err(DownloadError::MigrationPort)?,
        )
    } else {
        None
    };
    let mport = match &migration {
        Some(s) => s
            .local_addr()
            .map_err(DownloadError::MigrationPortAddr)?
            .port(),
        None => 0,
    };
    let detect_ms = cfg.detect_after_ms();
    // Server-triggered: the client's own detection is a fallback for a trigger that never
    // comes, well after the group's.
    let idle_ms = if server_triggered {
        detect_ms * 4 + 2000
    } else {
        detect_ms
    };
    let size = c.spec.size;
    let name = file_name(c.seed);
    let id = download_id(c.seed, c.index);
    let mut offset = 0u64;
    let mut generation = 0u32;
    // The first server: the service address (the primary's); then where the group says.
    let mut target = c
        .spec
        .servers
        .first()
        .cloned()
        .unwrap_or_else(|| cfg.group[0].service_addr.clone());
    let mut current: Option<u32> = None;
    // Failover list: the group's order until a server hands out its own.
    let mut list: Vec<u32> = (1..members).collect();
    let mut next_in_list = 0usize;
    let mut last_trigger = 0u64;
    let mut tbuf = vec![0u8; 2048];
    loop {
        c.may_attempt()?;
        c.attempts += 1;
        c.servers_used.push(target.clone());
        let timeout = Duration::from_millis(c.spec.connect_timeout_ms.max(1));
        let connected =
            tokio::time::timeout(timeout, TcpStream::connect((target.as_str(), SERVICE_PORT)))
                .await;
        let mut s = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                c.failed(Break::io(e));
                target = next_target(cfg, &list, &mut next_in_list, current);
                continue;
            }
            Err(_) => {
                c.failed(Break::connect_timeout(&target));
                target = next_target(cfg, &list, &mut next_in_list, current);
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        let now = mono_ns();
        let event = if c.detect.is_some() {
            c.reconnected_ns.get_or_insert(now);
            ConnEvent::Reconnect { to: target.clone() }
        } else {
            ConnEvent::Connected
        };
        c.event(now, event);
        if c.detect.is_some() {
            c.checker.restart_at(offset);
        }
        generation += 1;
        let sent = mono_ns();
        let hello = Hello {
            name: name.clone(),
            size,
            conn: id,
            generation,
            mport,
            offset,
        };
        let welcome = async {
            s.write_all(hello.line().as_bytes())
                .await
                .map_err(Break::io)?;
            let line = read_line(&mut s, idle_ms).await?;
            Welcome::parse(&line).map_err(|e| Break::protocol(e.to_string()))
        }
        .await;
        let welcome = match welcome {
            Ok(w) if w.offset == offset && w.me < members => w,
            Ok(welcome) => return Err(DownloadError::Welcome { welcome, offset }.into()),
            Err(b) => {
                c.failed(b);
                target = next_target(cfg, &list, &mut next_in_list, current);
                continue;
            }
        };
        current = Some(welcome.me);
        list = welcome.servers;
        next_in_list = 0;

        let before = c.checker.progress().bytes_received;
        let end = stream(
            c,
            &mut s,
            size - offset,
            idle_ms,
            migration.as_ref(),
            &mut tbuf,
            |d, src| check_trigger(&key, cfg, d, src, id, current, last_trigger),
        )
        .await;
        offset = (offset + c.checker.progress().bytes_received - before).min(size);
        match end {
            End::Done => {
                c.meter.on_latency(mono_ns().saturating_sub(sent));
                return Ok(());
            }
            End::Stopped => return Err(ClientError::Stopped),
            End::Broke(_) if c.stop.is_cancelled() => return Err(ClientError::Stopped),
            End::Migrate(t, reason) => {
                last_trigger = t.sent;
                c.failed(Break {
                    event: ConnEvent::Reset,
                    reason,
                });
                target = cfg.group[t.from as usize].service_addr.clone();
            }
            End::Broke(b) => {
                c.failed(b);
                let waited = match &migration {
                    Some(sock) => {
                        wait_trigger(sock, &mut tbuf, idle_ms, |d, src| {
                            check_trigger(&key, cfg, d, src, id, current, last_trigger)
                        })
                        .await
                    }
                    None => None,
                };
                target = match waited {
                    Some(t) => {
                        last_trigger = t.sent;
                        cfg.group[t.from as usize].service_addr.clone()
                    }
                    None => next_target(cfg, &list, &mut next_in_list, current),
                };
            }
        }
    }
}

/// The next server of the failover list (wrapping around it); the current one comes last.
fn next_target(
    cfg: &AppMigrationConfig,
    list: &[u32],
    next: &mut usize,
    current: Option<u32>,
) -> String {
    let mut order: Vec<u32> = list.to_vec();
    order.extend(current);
    let i = order[*next % order.len().max(1)];
    *next += 1;
    cfg.group
        .get(i as usize)
        .map(|m| m.service_addr.clone())
        .unwrap_or_default()
}

/// Receives `want` bytes, the end token and the FIN, watching the migration port meanwhile.
async fn stream(
    c: &mut Client<'_>,
    s: &mut TcpStream,
    want: u64,
    idle_ms: u64,
    migration: Option<&UdpSocket>,
    tbuf: &mut [u8],
    check: impl Fn(&[u8], IpAddr) -> Result<TriggerMsg, TriggerRefused>,
) -> End {
    let idle = Duration::from_millis(idle_ms.max(1));
    let mut got = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let payload = got < want;
        let cap = if payload {
            (want - got).min(c.buf.len() as u64) as usize
        } else {
            END_TOKEN.len() + 1 - tail.len().min(END_TOKEN.len())
        };
        let stop = c.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            r = tokio::time::timeout(idle, s.read(&mut c.buf[..cap])) => {
                let n = match r {
                    Err(_) => return End::Broke(Break::idle(idle_ms)),
                    Ok(Err(e)) => return End::Broke(Break::io(e)),
                    Ok(Ok(n)) => n,
                };
                if n == 0 {
                    if payload {
                        return End::Broke(Break::fin(got, want));
                    }
                    if tail == END_TOKEN {
                        return End::Done;
                    }
                    // RedSocks' end token: a FIN without it is the server going away.
                    return End::Broke(Break {
                        event: ConnEvent::Fin,
                        reason: format!(
                            "FIN without the end token (got {:?})",
                            String::from_utf8_lossy(&tail)
                        ),
                    });
                }
                if payload {
                    if c.payload(n) {
                        // See `Client::payload`: the mark's reporter runs now.
                        tokio::task::yield_now().await;
                    }
                    got += n as u64;
                } else {
                    tail.extend_from_slice(&c.buf[..n]);
                    if !END_TOKEN.starts_with(&tail) {
                        return End::Broke(Break::protocol(format!(
                            "bytes beyond the end: {:?}",
                            String::from_utf8_lossy(&tail)
                        )));
                    }
                }
            }
            r = recv(migration, tbuf) => {
                if let Some((n, from)) = r {
                    match check(&tbuf[..n], from.ip()) {
                        Ok(t) => {
                            let reason = format!("migration request from member {} ({from}): member {} is dead", t.from, t.dead);
                            return End::Migrate(t, reason);
                        }
                        Err(why) => tracing::warn!(connection = c.index, %from, "ignored a trigger: {}", Chain(&why)),
                    }
                }
            }
        }
    }
}

/// A datagram on the migration port, if there is one; never resolves without a port.
async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// After a failure, server-triggered: waits up to `ms` for a trigger that passes `check`.
async fn wait_trigger(
    sock: &UdpSocket,
    buf: &mut [u8],
    ms: u64,
    check: impl Fn(&[u8], IpAddr) -> Result<TriggerMsg, TriggerRefused>,
) -> Option<TriggerMsg> {
    let until = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        let (n, from) = tokio::time::timeout_at(until, sock.recv_from(buf))
            .await
            .ok()?
            .ok()?;
        match check(&buf[..n], from.ip()) {
            Ok(t) => return Some(t),
            Err(why) => tracing::warn!(%from, "ignored a trigger: {}", Chain(&why)),
        }
    }
}

/// One `\n`-terminated control line, byte by byte.
async fn read_line(s: &mut TcpStream, idle_ms: u64) -> Result<String, Break> {
    let mut line = Vec::new();
    let idle = Duration::from_millis(idle_ms.max(1));
    loop {
        let mut b = [0u8; 1];
        match tokio::time::timeout(idle, s.read(&mut b)).await {
            Err(_) => return Err(Break::idle(idle_ms)),
            Ok(Err(e)) => return Err(Break::io(e)),
            Ok(Ok(0)) => return Err(Break::fin(0, 1)),
            Ok(Ok(_)) if b[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(Ok(_)) if line.len() > MAX_LINE => {
                return Err(Break::protocol("control line too long".into()));
            }
            Ok(Ok(_)) => line.push(b[0]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halab_protocol::modes::app_migration::GroupMember;

    fn cfg() -> AppMigrationConfig {
        AppMigrationConfig {
            trigger: Trigger::Server,
            heartbeat_ms: 50,
            missed_heartbeats: 3,
            group: (1..=3)
                .map(|i| GroupMember {
                    host: format!("server{i}"),
                    service_addr: format!("10.0.0.{i}"),
                    heartbeat_addrs: vec![format!("10.0.1.{i}")],
                })
                .collect(),
            key_hex: "abcdef".into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_authentic_triggers_for_this_download_from_its_new_owner_are_taken() {
        let key = Key::from_hex("abcdef").unwrap();
        let cfg = cfg();
        let t = TriggerMsg {
            conn: 7,
            from: 1,
            dead: 0,
            sent: 100,
        };
        let good = key.seal(&t);
        let check = |d: &[u8], src: &str, current: Option<u32>, last: u64| {
            check_trigger(&key, &cfg, d, ip(src), 7, current, last)
        };
        assert_eq!(check(&good, "10.0.0.2", Some(0), 0), Ok(t.clone()));
        assert_eq!(check(&good, "10.0.1.2", Some(0), 99), Ok(t.clone()));
        // Forged: another key, or flipped bits.
        let forged = Key::from_hex("abcdee").unwrap().seal(&t);
        assert!(
            check(&forged, "10.0.0.2", Some(0), 0)
                .unwrap_err()
                .to_string()
                .contains("HMAC")
        );
        let mut flipped = good.clone();
        flipped[10] ^= 0x20;
        assert!(check(&flipped, "10.0.0.2", Some(0), 0).is_err());
        // For another download.
        let other = key.seal(&TriggerMsg {
            conn: 8,
            ..t.clone()
        });
        assert!(check(&other, "10.0.0.2", Some(0), 0).is_err());
        // The download is served by member 2, not by the member the trigger says is dead:
        // the sender does not own it.
        assert!(check(&good, "10.0.0.2", Some(2), 0).is_err());
        // A member naming itself dead, or one that does not exist.
        let selfish = key.seal(&TriggerMsg {
            from: 0,
            ..t.clone()
        });
        assert!(check(&selfish, "10.0.0.1", Some(0), 0).is_err());
        let stranger = key.seal(&TriggerMsg {
            from: 9,
            ..t.clone()
        });
        assert!(check(&stranger, "10.0.0.2", Some(0), 0).is_err());
        // From an address that is not the sender's.
        assert!(check(&good, "10.0.0.3", Some(0), 0).is_err());
        // Replayed.
        assert!(check(&good, "10.0.0.2", Some(0), 100).is_err());
    }

    #[test]
    fn the_failover_list_wraps_and_ends_with_the_current_server() {
        let cfg = cfg();
        let mut next = 0;
        let got: Vec<String> = (0..4)
            .map(|_| next_target(&cfg, &[2, 1], &mut next, Some(0)))
            .collect();
        assert_eq!(got, ["10.0.0.3", "10.0.0.2", "10.0.0.1", "10.0.0.3"]);
    }
}
