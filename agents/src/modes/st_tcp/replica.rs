//! The replica of one tapped connection (DESIGN §5 st-tcp; paper 003): a local TCP connection
//! to the backup's own copy of the workload server, fed the client's bytes as the tap
//! reassembles them. Its output is held, trimmed by the client's ACKs, so that at takeover the
//! bytes the client has not acknowledged can be sent at once; then the task relays between the
//! rebuilt client connection and the replica for the rest of the connection's life.

use super::tracker::ConnKey;
use crate::error::Chain;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Replica output held beyond the client's ACK at most; the replica is then paused by TCP flow
/// control. It must exceed what the primary can have in flight (its send buffer plus the
/// client's window), which on these hosts is a few MB.
pub const HOLD_CAP: usize = 48 << 20;

/// What the tap and the takeover tell a replica.
pub enum ToReplica {
    Bytes(Vec<u8>),
    /// The client acknowledged the server's stream up to this offset.
    Acked(u64),
    ClientFin,
    /// Take over: `sock` is the rebuilt client connection, still in repair mode, whose send
    /// sequence starts at server offset `from`; the primary had sent up to offset `sent`.
    /// Answers with the bytes sent at once, or why the rebuilt socket could not be finished.
    TakeOver {
        sock: super::takeover::InRepair,
        from: u64,
        sent: u64,
        done: oneshot::Sender<std::io::Result<u64>>,
    },
}

/// What a replica tells the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The replica closed its output after `at` bytes (its FIN).
    OutputEnded { key: ConnKey, at: u64 },
    /// The connection ended for good (relay done, or replica lost).
    Finished { key: ConnKey, detail: String },
    /// The rebuilt connection has had data in flight and no ACK from the client for
    /// [`STALL_AFTER_MS`]: the kernel's view of it, for the record.
    Stalled { key: ConnKey, detail: String },
}

/// How a replica's life ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Cancelled before any takeover: its role stopped, or the connection closed or was
    /// replaced.
    Cancelled,
    /// The tap's view of the connection went (closed on the tap).
    ClosedOnTap,
    /// Taken over; `resent` bytes went to the client at once.
    TakenOver { resent: u64 },
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Cancelled => f.write_str("cancelled"),
            Ended::ClosedOnTap => f.write_str("closed on the tap"),
            Ended::TakenOver { resent } => {
                write!(f, "taken over; {resent} bytes resent at once")
            }
        }
    }
}

/// Why a replica ended early.
#[derive(Debug, thiserror::Error)]
enum ReplicaError {
    #[error("replica server on port {port}")]
    Connect {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The rebuilt socket could not be finished; the takeover was told why.
    #[error("rebuilt socket not finished (see the takeover's error)")]
    NotFinished,
    #[error("rebuilt socket")]
    Rebuilt(#[source] std::io::Error),
    #[error("sending held output")]
    SendHeld(#[source] std::io::Error),
}

/// How long a takeover waits for a lagging replica to produce what the primary had sent.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// A rebuilt connection with unacknowledged data and no ACK for this long is reported once.
pub const STALL_AFTER_MS: u32 = 3000;

/// The kernel's view of a rebuilt connection when it stalls (TCP_INFO), `None` while it
/// moves.
fn stalled(sock: &TcpStream) -> Option<String> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut i: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `i`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut i as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 || i.tcpi_unacked == 0 || i.tcpi_last_ack_recv < STALL_AFTER_MS {
        return None;
    }
    Some(format!(
        "no ACK from the client for {} ms with {} segments unacknowledged: state {}, \
         retransmits {} (total {}), backoff {}, rto {} ms, cwnd {}, snd_mss {}, \
         bytes acked {}, last data sent {} ms ago, segs out {} in {}",
        i.tcpi_last_ack_recv,
        i.tcpi_unacked,
        i.tcpi_state,
        i.tcpi_retransmits,
        i.tcpi_total_retrans,
        i.tcpi_backoff,
        i.tcpi_rto / 1000,
        i.tcpi_snd_cwnd,
        i.tcpi_snd_mss,
        i.tcpi_bytes_acked,
        i.tcpi_last_data_sent,
        i.tcpi_segs_out,
        i.tcpi_segs_in,
    ))
}

/// Shared progress of a replica, for the lag check.
#[derive(Debug, Default)]
pub struct Progress {
    /// Output bytes the replica produced.
    pub produced: AtomicU64,
    /// Client bytes fed to it.
    pub fed: AtomicU64,
}

pub struct Replica {
    pub tx: mpsc::UnboundedSender<ToReplica>,
    pub progress: Arc<Progress>,
}

/// Starts the replica of `key` against the replica server on `port` of the loopback.
pub fn spawn(
    key: ConnKey,
    port: u16,
    cancel: CancellationToken,
    notes: mpsc::UnboundedSender<Note>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Replica {
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    tasks.spawn(async move {
        let detail = match run(key, port, rx, cancel, &p, &notes).await {
            Ok(end) => end.to_string(),
            Err(e) => {
                let e = Chain(&e).to_string();
                tracing::warn!(%key, error = %e, "replica ended");
                e
            }
        };
        let _ = notes.send(Note::Finished { key, detail });
    });
    Replica { tx, progress }
}

/// Output held for the client: bytes `[base, base + data.len())` of the server's stream.
struct Held {
    data: VecDeque<u8>,
    base: u64,
    acked: u64,
}

impl Held {
    fn produced(&self) -> u64 {
        self.base + self.data.len() as u64
    }

    fn push(&mut self, b: &[u8]) {
        self.data.extend(b);
        self.trim();
    }

    fn ack(&mut self, upto: u64) {
        self.acked = self.acked.max(upto);
        self.trim();
    }

    fn trim(&mut self) {
        if self.acked > self.base {
            let n = ((self.acked - self.base) as usize).min(self.data.len());
            self.data.drain(..n);
            self.base += n as u64;
        }
    }
}

async fn run(
    key: ConnKey,
    port: u16,
    mut rx: mpsc::UnboundedReceiver<ToReplica>,
    cancel: CancellationToken,
    progress: &Progress,
    notes: &mpsc::UnboundedSender<Note>,
) -> Result<Ended, ReplicaError> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|source| ReplicaError::Connect { port, source })?;
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    // Client bytes go to the replica from their own task: a replica that stops reading while
    // its output is held must not stop the ACKs that release that output.
    let (feed_tx, feed_rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let feeder = tokio::spawn(feed(wr, feed_rx));
    let mut held = Held {
        data: VecDeque::new(),
        base: 0,
        acked: 0,
    };
    let mut eof = false;
    let mut chunk = vec![0u8; 64 * 1024];
    let (sock, sent, done) = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                feeder.abort();
                return Ok(Ended::Cancelled);
            }
            msg = rx.recv() => match msg {
                None => {
                    feeder.abort();
                    return Ok(Ended::ClosedOnTap);
                }
                Some(ToReplica::Bytes(b)) => {
                    progress.fed.fetch_add(b.len() as u64, Ordering::Relaxed);
                    let _ = feed_tx.send(Some(b));
                }
                Some(ToReplica::Acked(a)) => held.ack(a),
                Some(ToReplica::ClientFin) => {
                    let _ = feed_tx.send(None);
                }
                Some(ToReplica::TakeOver { sock, from, sent, done }) => {
                    held.ack(from);
                    break (sock, sent, done);
                }
            },
            r = rd.read(&mut chunk), if !eof && held.data.len() < HOLD_CAP => match r {
                Ok(0) | Err(_) => {
                    eof = true;
                    let _ = notes.send(Note::OutputEnded { key, at: held.produced() });
                }
                Ok(n) => {
                    held.push(&chunk[..n]);
                    progress.produced.store(held.produced(), Ordering::Relaxed);
                }
            },
        }
    };

    // Takeover. What the primary had sent goes into the rebuilt socket's send queue as in
    // flight: the replica runs a little behind on a loaded host, so it is given a moment to
    // produce that much.
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    while !eof && held.produced() < sent && held.data.len() < HOLD_CAP {
        match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => eof = true,
            Ok(Ok(n)) => {
                held.push(&chunk[..n]);
                progress.produced.store(held.produced(), Ordering::Relaxed);
            }
        }
    }
    let in_flight = sent.saturating_sub(held.base).min(held.data.len() as u64) as usize;
    let sock = {
        let (a, b) = held.data.as_slices();
        let first = in_flight.min(a.len());
        sock.finish(&[&a[..first], &b[..in_flight - first]])
    };
    let sock = match sock {
        Ok(s) => s,
        Err(e) => {
            let _ = done.send(Err(e));
            feeder.abort();
            return Err(ReplicaError::NotFinished);
        }
    };
    held.data.drain(..in_flight);
    held.base += in_flight as u64;
    let client = TcpStream::from_std(sock).map_err(ReplicaError::Rebuilt)?;
    let (mut crd, mut cwr) = client.into_split();
    let resent = held.data.len() as u64;
    // The connection is rebuilt: that is its T_takeover; the held bytes leave from here on.
    let _ = done.send(Ok(resent));
    let (a, b) = held.data.as_slices();
    let first = async {
        cwr.write_all(a).await?;
        cwr.write_all(b).await?;
        if eof {
            cwr.shutdown().await?;
        }
        std::io::Result::Ok(())
    }
    .await;
    if let Err(e) = first {
        feeder.abort();
        return Err(ReplicaError::SendHeld(e));
    }
    let mut produced = held.produced();
    let acked = held.acked;
    let mut client_open = true;
    let mut cbuf = vec![0u8; 64 * 1024];
    let mut watch = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut reported = false;
    while client_open || !eof {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = watch.tick(), if !reported => {
                if let Some(detail) = stalled(cwr.as_ref()) {
                    reported = true;
                    let _ = notes.send(Note::Stalled { key, detail });
                }
            }
            r = crd.read(&mut cbuf), if client_open => match r {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = feed_tx.send(None);
                }
                Ok(n) => {
                    let _ = feed_tx.send(Some(cbuf[..n].to_vec()));
                }
            },
            r = rd.read(&mut chunk), if !eof => match r {
                Ok(0) | Err(_) => {
                    eof = true;
                    let _ = cwr.shutdown().await;
                }
                Ok(n) => {
                    // Bytes the client acknowledged before the takeover are not sent again.
                    let skip = acked.saturating_sub(produced).min(n as u64) as usize;
                    produced += n as u64;
                    if cwr.write_all(&chunk[skip..n]).await.is_err() {
                        eof = true;
                        client_open = false;
                    }
                }
            },
        }
    }
    feeder.abort();
    Ok(Ended::TakenOver { resent })
}

async fn feed(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
) {
    while let Some(m) = rx.recv().await {
        match m {
            Some(b) => {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
            None => {
                let _ = wr.shutdown().await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_output_is_trimmed_by_acks_also_before_it_is_produced() {
        let mut h = Held {
            data: VecDeque::new(),
            base: 0,
            acked: 0,
        };
        h.push(b"0123456789");
        h.ack(4);
        assert_eq!(h.base, 4);
        assert_eq!(h.data.iter().copied().collect::<Vec<_>>(), b"456789");
        h.ack(2);
        assert_eq!(h.base, 4, "an old ACK changes nothing");
        h.ack(15);
        assert!(h.data.is_empty());
        h.push(b"abcdefgh"); // bytes 10..18, of which 10..15 are acknowledged
        assert_eq!(h.base, 15);
        assert_eq!(h.data.iter().copied().collect::<Vec<_>>(), b"fgh");
        assert_eq!(h.produced(), 18);
    }
}
