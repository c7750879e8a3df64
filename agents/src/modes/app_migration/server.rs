//! The app-migration server process: `halab-agent serve --app-migration`, started by the agent
//! for the server roles. The group member runs *in* this process, beside the workload server,
//! so a power-off or a process kill silences its heartbeats together with its downloads: a
//! member whose heartbeats go on while its server is dead would hide the failure it is meant
//! to report.
//!
//! The config (with the testbed's key) comes in the environment variable [`CONFIG_ENV`], which
//! only the agent's user can read, not on the command line. Events for the console go to
//! stdout as `event <json>` lines, after the `ready <port> <http-port>` line the agent waits for.

use super::group::{Group, Output};
use super::wire::{END_TOKEN, Hello, Key, LineError, MAX_LINE, Welcome, WireError};
use crate::error::Chain;
use crate::workload::request::name_seed;
use halab_protocol::modes::app_migration::{AppMigrationConfig, Event, GROUP_PORT, SERVICE_PORT};
use halab_protocol::mono_ns;
use halab_workload::content;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Environment variable carrying the JSON [`AppMigrationConfig`].
pub const CONFIG_ENV: &str = "HALAB_APP_MIGRATION";
/// Bytes per write when streaming a download.
const CHUNK: usize = 256 * 1024;
/// A download reports its checkpoint to the group every this many bytes.
const CHECKPOINT_EVERY: u64 = 4 * 1024 * 1024;
/// How long a client may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the config in [`CONFIG_ENV`] cannot be used.
#[derive(Debug, thiserror::Error)]
enum ConfigError {
    #[error("no config in ${}", CONFIG_ENV)]
    Missing(#[source] std::env::VarError),
    #[error("no config in ${}", CONFIG_ENV)]
    Json(#[source] serde_json::Error),
}

/// Why the server process stops with an error.
#[derive(Debug, thiserror::Error)]
enum ServerError {
    #[error("app-migration key")]
    Key(#[source] WireError),
    #[error("none of the group's service addresses is on this host")]
    NotAMember,
    #[error("bind TCP {port}")]
    BindTcp {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("bind UDP {port}")]
    BindUdp {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("the workload server did not start")]
    WorkloadServer,
    #[error("cannot start the group member")]
    GroupMember(#[source] std::io::Error),
}

/// Why one download ended early.
#[derive(Debug, thiserror::Error)]
enum DownloadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no hello")]
    NoHello,
    #[error("bad hello")]
    Hello(#[source] LineError),
    #[error("closed before a full line")]
    Closed,
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("line too long")]
    TooLong,
    #[error("server stopping")]
    Stopping,
}

fn config() -> Result<AppMigrationConfig, ConfigError> {
    let json = std::env::var(CONFIG_ENV).map_err(ConfigError::Missing)?;
    serde_json::from_str(&json).map_err(ConfigError::Json)
}

/// `halab-agent serve --app-migration`; returns the exit code. The process's one shutdown
/// owner: `stop` (SIGINT) ends [`run`], which returns only once everything it started ended.
pub fn main() -> i32 {
    let cfg = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("halab-agent serve --app-migration: {}", Chain(&e));
            return 2;
        }
    };
    // One thread, as the plain workload server: a killed process goes down at once.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("halab-agent serve: cannot start runtime: {e}");
            return 1;
        }
    };
    let stop = CancellationToken::new();
    let code = runtime.block_on(async {
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            s.cancel();
        });
        match run(cfg, stop).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("halab-agent serve --app-migration: {}", Chain(&e));
                1
            }
        }
    });
    runtime.shutdown_background();
    code
}

/// This host's index in the group: the member whose service address is one of ours.
fn find_me(cfg: &AppMigrationConfig) -> Result<u32, ServerError> {
    cfg.group
        .iter()
        .position(|m| {
            m.service_addr
                .parse::<IpAddr>()
                .is_ok_and(|ip| std::net::UdpSocket::bind((ip, 0)).is_ok())
        })
        .map(|i| i as u32)
        .ok_or(ServerError::NotAMember)
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn emit(event: &Event) {
    if let Ok(json) = serde_json::to_string(event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "event {json}");
        let _ = out.flush();
    }
}

/// What download tasks tell the group loop.
enum Local {
    /// A client said hello: register it, answer with the welcome line.
    Hello {
        hello: Hello,
        client: IpAddr,
        reply: oneshot::Sender<Welcome>,
    },
    Progress {
        id: u64,
        offset: u64,
    },
    Closed {
        id: u64,
        generation: u32,
    },
}

async fn run(cfg: AppMigrationConfig, stop: CancellationToken) -> Result<(), ServerError> {
    let key = Key::from_hex(&cfg.key_hex).map_err(ServerError::Key)?;
    let me = find_me(&cfg)?;
    let any = IpAddr::from([0, 0, 0, 0]);
    let service = TcpListener::bind((any, SERVICE_PORT))
        .await
        .map_err(|source| ServerError::BindTcp {
            port: SERVICE_PORT,
            source,
        })?;
    let udp = std::net::UdpSocket::bind((any, GROUP_PORT))
        .and_then(|u| u.set_nonblocking(true).map(|()| u))
        .map_err(|source| ServerError::BindUdp {
            port: GROUP_PORT,
            source,
        })?;

    let mut tasks = JoinSet::new();
    // The plain workload server too, so other workloads still run under this mode.
    let (ports_tx, ports_rx) = oneshot::channel();
    let s = stop.clone();
    tasks.spawn(async move {
        let (port, http) = crate::workload::server::default_ports();
        if let Err(e) = crate::workload::server::serve(any, port, http, s, move |p, h| {
            let _ = ports_tx.send((p, h));
        })
        .await
        {
            eprintln!("halab-server: {e}");
        }
    });
    let (port, http) = ports_rx.await.map_err(|_| ServerError::WorkloadServer)?;

    // The group member gets a thread of its own: on the downloads' thread, fifty busy
    // downloads delay its heartbeats past 150 ms and the peers declare a live server dead.
    let group = Group::new(cfg.clone(), key, me, mono_ns(), wall_ns());
    let (local_tx, local_rx) = mpsc::unbounded_channel::<Local>();
    let group_stop = stop.clone();
    let member = std::thread::Builder::new()
        .name("group-member".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(group_loop(group, &cfg, udp, local_rx, group_stop)),
                Err(e) => eprintln!("halab-server: group member runtime: {e}"),
            }
        })
        .map_err(ServerError::GroupMember)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready {port} {http}");
        let _ = out.flush();
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = service.accept() => {
                if let Ok((stream, peer)) = r {
                    let local = local_tx.clone();
                    let s = stop.clone();
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = s.cancelled() => {}
                            r = serve_download(stream, peer.ip(), local) => {
                                if let Err(e) = r {
                                    eprintln!("halab-server: app-migration {peer}: {}", Chain(&e));
                                }
                            }
                        }
                    });
                }
            }
            Some(_) = tasks.join_next() => {}
        }
    }
    tasks.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || member.join()).await;
    Ok(())
}

/// The group member: heartbeats and soft state on the group port, triggers to clients, and
/// the downloads' hellos, checkpoints and ends from `local`.
async fn group_loop(
    mut group: Group,
    cfg: &AppMigrationConfig,
    udp: std::net::UdpSocket,
    mut local: mpsc::UnboundedReceiver<Local>,
    stop: CancellationToken,
) {
    let udp = match UdpSocket::from_std(udp) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("halab-server: group socket: {e}");
            return;
        }
    };
    let me = group.me();
    let peers: Vec<SocketAddr> = cfg
        .group
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 != me)
        .flat_map(|(_, m)| {
            let mut ips: Vec<IpAddr> = std::iter::once(&m.service_addr)
                .chain(&m.heartbeat_addrs)
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .collect();
            ips.sort();
            ips.dedup();
            ips.into_iter().map(|ip| SocketAddr::new(ip, GROUP_PORT))
        })
        .collect();
    let mut datagram = vec![0u8; super::wire::MAX_DATAGRAM + 1];
    loop {
        let due = group.next_tick_ns().saturating_sub(mono_ns());
        let outs = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_nanos(due)) => group.tick(mono_ns()),
            r = udp.recv_from(&mut datagram) => match r {
                Ok((n, from)) => group.on_datagram(&datagram[..n], from.ip(), mono_ns()),
                // ICMP errors of earlier sends to a dead peer surface here: not a datagram.
                Err(_) => Vec::new(),
            },
            msg = local.recv() => match msg {
                None => return,
                Some(Local::Hello { hello, client, reply }) => {
                    let now = mono_ns();
                    let info = super::wire::ConnInfo {
                        id: hello.conn,
                        client: client.to_string(),
                        mport: hello.mport,
                        name: hello.name.clone(),
                        size: hello.size,
                        generation: hello.generation,
                        offset: hello.offset,
                    };
                    let outs = group.local_open(info, now);
                    if hello.generation > 1 {
                        emit(&Event::Accepted {
                            conn: halab_protocol::modes::app_migration::DownloadId(hello.conn),
                            client: client.to_string(),
                            offset: hello.offset,
                            at_ns: now,
                        });
                    }
                    let _ = reply.send(Welcome {
                        me,
                        offset: hello.offset,
                        servers: group.failover_list(hello.conn),
                    });
                    outs
                }
                Some(Local::Progress { id, offset }) => {
                    group.local_progress(id, offset);
                    Vec::new()
                }
                Some(Local::Closed { id, generation }) => group.local_close(id, generation),
            },
        };
        for o in outs {
            match o {
                Output::Broadcast(d) => {
                    for a in &peers {
                        // A peer that is down answers nothing or an ICMP error; both are
                        // what heartbeats are for.
                        let _ = udp.send_to(&d, a).await;
                    }
                }
                Output::Trigger { to, datagram } => {
                    if let Err(e) = udp.send_to(&datagram, to).await {
                        eprintln!("halab-server: trigger to {to}: {e}");
                    }
                }
                Output::Event(e) => {
                    if let Event::Ignored { source, reason, .. } = &e {
                        eprintln!("halab-server: ignored a datagram from {source}: {reason}");
                    }
                    emit(&e);
                }
            }
        }
    }
}

/// One download: hello, welcome, bytes from the client's offset, end token, FIN.
async fn serve_download(
    mut stream: TcpStream,
    client: IpAddr,
    local: mpsc::UnboundedSender<Local>,
) -> Result<(), DownloadError> {
    stream.set_nodelay(true)?;
    let line = tokio::time::timeout(HELLO_TIMEOUT, read_line(&mut stream))
        .await
        .map_err(|_| DownloadError::NoHello)??;
    let hello = Hello::parse(&line).map_err(DownloadError::Hello)?;
    let (reply_tx, reply_rx) = oneshot::channel();
    let (id, generation) = (hello.conn, hello.generation);
    let (name, size, offset) = (hello.name.clone(), hello.size, hello.offset);
    local
        .send(Local::Hello {
            hello,
            client,
            reply: reply_tx,
        })
        .map_err(|_| DownloadError::Stopping)?;
    let welcome = reply_rx.await.map_err(|_| DownloadError::Stopping)?;
    let result = async {
        stream.write_all(welcome.line().as_bytes()).await?;
        let seed = name_seed(&name);
        let mut buf = vec![0u8; CHUNK];
        let mut off = offset;
        let mut checkpoint = offset;
        while off < size {
            let n = ((size - off) as usize).min(CHUNK);
            content::fill(seed, off, &mut buf[..n]);
            stream.write_all(&buf[..n]).await?;
            off += n as u64;
            // One thread serves the downloads and the group member: without a yield per
            // chunk a fast client keeps this task busy for a whole coop budget (128 writes,
            // 32 MB) and the heartbeats fall silent, which the peers take for a death.
            tokio::task::yield_now().await;
            if off - checkpoint >= CHECKPOINT_EVERY {
                checkpoint = off;
                let _ = local.send(Local::Progress { id, offset: off });
            }
        }
        stream.write_all(END_TOKEN).await?;
        stream.shutdown().await?;
        Ok::<(), DownloadError>(())
    }
    .await;
    let _ = local.send(Local::Closed { id, generation });
    result
}

/// One `\n`-terminated control line, byte by byte (it is short, and what follows it is not
/// ours to buffer).
async fn read_line(stream: &mut TcpStream) -> Result<String, DownloadError> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match stream.read(&mut b).await {
            Err(e) => return Err(e.into()),
            Ok(0) => return Err(DownloadError::Closed),
            Ok(_) if b[0] == b'\n' => {
                return String::from_utf8(line).map_err(|_| DownloadError::NotUtf8);
            }
            Ok(_) if line.len() >= MAX_LINE => return Err(DownloadError::TooLong),
            Ok(_) => line.push(b[0]),
        }
    }
}
