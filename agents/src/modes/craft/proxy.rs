//! A proxy's connections (thesis §4.6 steps 4–5, figure 4.7): accept on the service address,
//! read the first request, pick a backend, connect to it from the proxies' source address,
//! forward the request, then splice ([`super::splicer`]). A connection that cannot be spliced
//! is relayed by the proxy in user space instead, and the reason logged: it is slower, never
//! lost.

use super::datapath::Datapath;
use super::splicer::{self, Exits, SpliceError};
use super::translation::Translation;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The longest first request head read before routing.
pub const MAX_HEAD: usize = 16 * 1024;

/// What a proxy needs to serve.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect: the service address and port.
    pub listen: SocketAddrV4,
    /// The address the proxy's backend connections come from.
    pub source: Ipv4Addr,
    /// The backends, in the order routing tries them.
    pub backends: Vec<SocketAddrV4>,
    /// Where spliced packets leave.
    pub exits: Exits,
    /// The source ports of this proxy's backend connections, `[first, first + count)`: each
    /// proxy has its own range, so that the backends' packets to the shared source address can
    /// be told apart by port (the redirector sends them to their proxy), and two proxies never
    /// make the same connection. `None`: any port the kernel picks (a proxy alone).
    pub source_ports: Option<(u16, u16)>,
}

/// The other proxies a splice is replicated to, and the connections to them.
pub struct Replication {
    pub peers: super::replica::Peers,
    /// The splice listeners of the other proxies in the pool now.
    pub live: Mutex<Vec<SocketAddr>>,
}

/// Hands out the source ports of [`ProxyConfig::source_ports`] in turn.
#[derive(Debug, Default)]
pub struct PortTurn(std::sync::atomic::AtomicU32);

impl PortTurn {
    fn next(&self, (first, count): (u16, u16)) -> u16 {
        let i = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        first.wrapping_add((i % u32::from(count.max(1))) as u16)
    }
}

/// How a connection ended up.
#[derive(Debug)]
pub enum Outcome {
    /// Spliced: the connection lives in the data paths.
    Spliced(Translation),
    /// Relayed by the proxy, because the splice could not be made.
    Relayed(SpliceError),
}

/// Why a connection failed before it could be spliced or relayed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("reading the first request")]
    Read(#[source] std::io::Error),
    #[error("the client closed before its first request was complete")]
    Incomplete,
    #[error("the first request head is longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("no backend to route to")]
    NoBackend,
    #[error("connecting to backend {backend}")]
    Connect {
        backend: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
    #[error("forwarding the first request")]
    Forward(#[source] std::io::Error),
    #[error("the splice failed after it was made")]
    Retire(#[source] SpliceError),
}

/// Accepts on `listener` until `cancel`, each connection in a task of its own; every task ends
/// with the proxy's (its `JoinSet` is dropped with it).
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<ProxyConfig>,
    datapath: Arc<Mutex<Datapath>>,
    replication: Option<Arc<Replication>>,
    cancel: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    let ports = Arc::new(PortTurn::default());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            a = listener.accept() => match a {
                Ok((conn, peer)) => {
                    let (cfg, dp, rep, ports) =
                        (cfg.clone(), datapath.clone(), replication.clone(), ports.clone());
                    tasks.spawn(async move {
                        match handle(conn, &cfg, &dp, rep.as_deref(), &ports).await {
                            Ok(Outcome::Spliced(t)) => {
                                tracing::debug!(%peer, splice = %super::translation::describe(&t), "craft: spliced");
                            }
                            Ok(Outcome::Relayed(why)) => {
                                tracing::warn!(%peer, error = %crate::error::chain(&why), "craft: relayed, not spliced");
                            }
                            Err(e) => {
                                tracing::warn!(%peer, error = %crate::error::chain(&e), "craft: connection failed");
                            }
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "craft: accept"),
            },
        }
    }
}

/// Listens on the service address (which sits on the host without being announced, so the
/// socket binds to it freely).
pub fn listen(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    crate::sockopt::set_int(&sock, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)?;
    sock.bind(SocketAddr::V4(addr))?;
    sock.listen(1024)
}

/// One client connection: its first request, its backend, its splice (or relay).
pub async fn handle(
    mut client: TcpStream,
    cfg: &ProxyConfig,
    datapath: &Mutex<Datapath>,
    replication: Option<&Replication>,
    ports: &PortTurn,
) -> Result<Outcome, ConnectionError> {
    let head = read_head(&mut client).await?;
    let backend_addr = *cfg.backends.first().ok_or(ConnectionError::NoBackend)?;
    let mut backend = connect(cfg, backend_addr, ports).await?;
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    backend
        .write_all(&head)
        .await
        .map_err(ConnectionError::Forward)?;
    let replicate = |t: Translation| async move {
        let Some(r) = replication else {
            return Ok(());
        };
        let live = r.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        r.peers
            .everywhere(&live, &super::replica::Message::Install(t.into()))
            .await
    };
    match splicer::splice(client, backend, datapath, cfg.exits, replicate).await {
        Ok(t) => Ok(Outcome::Spliced(t)),
        Err((e, Some((mut client, mut backend)))) => {
            // Not spliced: the proxy carries the connection itself.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
            Ok(Outcome::Relayed(e))
        }
        Err((e, None)) => Err(ConnectionError::Retire(e)),
    }
}

/// Connects to `backend` from the proxies' source address, from a port of this proxy's range
/// (the next free one in turn).
async fn connect(
    cfg: &ProxyConfig,
    backend: SocketAddrV4,
    ports: &PortTurn,
) -> Result<TcpStream, ConnectionError> {
    let err = |source| ConnectionError::Connect { backend, source };
    let tries = cfg.source_ports.map_or(1, |(_, n)| u32::from(n).max(1));
    let mut last = None;
    for _ in 0..tries {
        let port = cfg.source_ports.map_or(0, |r| ports.next(r));
        let sock = TcpSocket::new_v4().map_err(err)?;
        match sock.bind(SocketAddr::V4(SocketAddrV4::new(cfg.source, port))) {
            Ok(()) => return sock.connect(SocketAddr::V4(backend)).await.map_err(err),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(
        last.unwrap_or_else(|| std::io::Error::other("no source port"))
    ))
}

/// Reads until the end of the first HTTP request head; returns everything read (the head and
/// whatever of the body came with it).
async fn read_head(client: &mut TcpStream) -> Result<Vec<u8>, ConnectionError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(ConnectionError::HeadTooLong);
        }
        let n = client
            .read(&mut chunk)
            .await
            .map_err(ConnectionError::Read)?;
        if n == 0 {
            return Err(ConnectionError::Incomplete);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
