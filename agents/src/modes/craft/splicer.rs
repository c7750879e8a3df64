//! Making one splice (thesis figure 4.7, steps 5–8): hold both legs in the data path, relay
//! until both sockets are quiet, read their state, compute the translation, have every other
//! proxy install it, install it here, and retire both sockets silently.
//!
//! Holding drops the legs' segments that carry data (their senders send them again once the
//! splice is in; a tail loss probe does so within about two round trips) and lets pure ACKs
//! through, so that what the proxy itself sent can be acknowledged. The relay then moves the
//! bytes that were already in the sockets. Quiet: nothing unread, nothing unacknowledged.

use super::datapath::{Datapath, DatapathError};
use super::sockets::{self, ReadError};
use super::translation::{self, Flow, Mismatch, Translation};
use std::future::Future;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long the legs may take to become quiet before the splice is given up: a peer that
/// stops acknowledging (it died, or its link did) must not hold the proxy's task forever.
pub const QUIET_LIMIT: Duration = Duration::from_secs(5);

/// How often the send queues are looked at while waiting for their acknowledgements: an ACK
/// wakes nothing a task can wait on.
const QUIET_POLL: Duration = Duration::from_micros(200);

/// Why a connection was not spliced. The caller relays it in user space instead (except after
/// [`SpliceError::Retire`], when it is spliced already).
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("the data path")]
    Datapath(#[from] DatapathError),
    #[error("relaying before the splice")]
    Relay(#[source] std::io::Error),
    #[error("the legs were not quiet within {0:?}")]
    NotQuiet(Duration),
    #[error("reading the {leg} leg")]
    Read {
        leg: &'static str,
        #[source]
        source: ReadError,
    },
    #[error("the legs cannot be joined")]
    Mismatch(#[from] Mismatch),
    #[error("replicating the splice to the other proxies")]
    Replicate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("leaving repair mode after a splice that was not made")]
    Unrepair(#[source] std::io::Error),
    #[error("retiring the spliced sockets (the splice is in place)")]
    Retire(#[source] std::io::Error),
}

/// Where each direction's rewritten packets leave this host (interface indexes).
#[derive(Debug, Clone, Copy)]
pub struct Exits {
    /// Towards the backends.
    pub to_backend: u32,
    /// Towards the clients.
    pub to_client: u32,
}

/// Splices `client` (accepted) and `backend` (connected, the request written to it).
/// `replicate` installs the translation on every other proxy and resolves once all have
/// acknowledged it. On success both sockets are gone and the connection lives in the data
/// paths; on an error before the retirement the holds are removed and both sockets are
/// returned to the caller as they were.
pub async fn splice<R, F, E>(
    client: TcpStream,
    backend: TcpStream,
    datapath: &std::sync::Mutex<Datapath>,
    exits: Exits,
    replicate: R,
) -> Result<Translation, (SpliceError, Option<(TcpStream, TcpStream)>)>
where
    R: FnOnce(Translation) -> F,
    F: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let flows = match (
        client.peer_addr(),
        client.local_addr(),
        backend.peer_addr(),
        backend.local_addr(),
    ) {
        (
            Ok(std::net::SocketAddr::V4(c)),
            Ok(std::net::SocketAddr::V4(v)),
            Ok(std::net::SocketAddr::V4(b)),
            Ok(std::net::SocketAddr::V4(p)),
        ) => (Flow::new(c, v), Flow::new(b, p)),
        _ => {
            let e = std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "only IPv4 connections are spliced",
            );
            return Err((SpliceError::Relay(e), Some((client, backend))));
        }
    };
    let lock = || datapath.lock().unwrap_or_else(|p| p.into_inner());
    let unhold = |e: SpliceError, client: TcpStream, backend: TcpStream| {
        let mut dp = lock();
        let _ = dp.remove(flows.0);
        let _ = dp.remove(flows.1);
        (e, Some((client, backend)))
    };
    {
        let mut dp = lock();
        if let Err(e) = dp.hold(flows.0).and_then(|()| dp.hold(flows.1)) {
            drop(dp);
            return Err(unhold(e.into(), client, backend));
        }
    }
    let (mut client, mut backend) = (client, backend);
    if let Err(e) = relay_until_quiet(&mut client, &mut backend).await {
        return Err(unhold(e, client, backend));
    }
    let (c_std, b_std) = match (into_std(client), into_std(backend)) {
        (Ok(c), Ok(b)) => (c, b),
        (Err(e), _) | (_, Err(e)) => {
            // The socket is lost with the conversion's failure; nothing to give back.
            let mut dp = lock();
            let _ = dp.remove(flows.0);
            let _ = dp.remove(flows.1);
            return Err((SpliceError::Relay(e), None));
        }
    };
    let back = |e: SpliceError, c: std::net::TcpStream, b: std::net::TcpStream| {
        let _ = sockets::unrepair(&c);
        let _ = sockets::unrepair(&b);
        let mut dp = lock();
        let _ = dp.remove(flows.0);
        let _ = dp.remove(flows.1);
        drop(dp);
        let give = from_std(c).ok().zip(from_std(b).ok());
        (e, give)
    };
    let tsvals = {
        let dp = lock();
        (dp.newest_tsval(flows.0), dp.newest_tsval(flows.1))
    };
    let (c_ts, b_ts) = match tsvals {
        (Ok(c), Ok(b)) => (c, b),
        (Err(e), _) | (_, Err(e)) => return Err(back(e.into(), c_std, b_std)),
    };
    let legs = sockets::read_leg(&c_std, c_ts)
        .map_err(|source| SpliceError::Read {
            leg: "client",
            source,
        })
        .and_then(|c| {
            sockets::read_leg(&b_std, b_ts)
                .map(|b| (c, b))
                .map_err(|source| SpliceError::Read {
                    leg: "backend",
                    source,
                })
        });
    let t = match legs.and_then(|(c, b)| Ok(translation::translate(&c, &b)?)) {
        Ok(t) => t,
        Err(e) => return Err(back(e, c_std, b_std)),
    };
    if let Err(e) = replicate(t).await {
        return Err(back(SpliceError::Replicate(Box::new(e)), c_std, b_std));
    }
    {
        let mut dp = lock();
        let installed = dp
            .splice(&t.to_client, exits.to_client)
            .and_then(|()| dp.splice(&t.to_backend, exits.to_backend));
        if let Err(e) = installed {
            drop(dp);
            return Err(back(e.into(), c_std, b_std));
        }
    }
    sockets::retire(c_std)
        .and_then(|()| sockets::retire(b_std))
        .map_err(|e| (SpliceError::Retire(e), None))?;
    Ok(t)
}

fn into_std(s: TcpStream) -> std::io::Result<std::net::TcpStream> {
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

fn from_std(s: std::net::TcpStream) -> std::io::Result<TcpStream> {
    s.set_nonblocking(true)?;
    TcpStream::from_std(s)
}

/// Moves what the sockets already hold to the other leg until neither has anything unread or
/// unacknowledged (the holds keep new data out).
async fn relay_until_quiet(
    client: &mut TcpStream,
    backend: &mut TcpStream,
) -> Result<(), SpliceError> {
    let deadline = tokio::time::Instant::now() + QUIET_LIMIT;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        move_unread(client, backend, &mut buf).await?;
        move_unread(backend, client, &mut buf).await?;
        let c = sockets::queues(client).map_err(SpliceError::Relay)?;
        let b = sockets::queues(backend).map_err(SpliceError::Relay)?;
        if c.quiet() && b.quiet() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SpliceError::NotQuiet(QUIET_LIMIT));
        }
        tokio::time::sleep(QUIET_POLL).await;
    }
}

/// Writes everything `from` has unread into `to`.
async fn move_unread(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: &mut [u8],
) -> Result<(), SpliceError> {
    loop {
        let n = match from.try_read(buf) {
            Ok(0) => {
                return Err(SpliceError::Relay(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "a leg closed before the splice",
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(SpliceError::Relay(e)),
        };
        to.write_all(&buf[..n]).await.map_err(SpliceError::Relay)?;
    }
}
