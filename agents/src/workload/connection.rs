//! One measuring client connection across its attempts ([`Client`]): its meter and stream
//! checker, the events it records, and the primitives every client of it is built from (connect
//! down the server list, read with the idle timeout, receive a stream to its end). The plain
//! workloads (`workload::client`) and the modes' own clients use these; this module
//! depends on neither.

use super::live::Live;
use crate::error::chain;
use halab_protocol::message::ConnError;
use halab_protocol::{ClientSpec, ConnectionResult, mono_ns};
use halab_workload::integrity::StreamChecker;
use halab_workload::meter::{ConnEvent, Meter};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Why a connection ended before its stream did: its `error` in the result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The run was stopped (`StopClient`, or the agent stopping): reported as
    /// [`ConnError::Stopped`], not as a failure.
    #[error("stopped by the console")]
    Stopped,
    #[error("deadline of {0} ms passed")]
    Deadline(u64),
    #[error("gave up after {0} connection attempts")]
    GaveUp(u32),
    #[error("no servers given")]
    NoServers,
    /// The server answered something no retry can fix.
    #[error("server answered {0:?}")]
    Answer(String),
    /// A mode's own client failed (`ClientPolicy` in `modes::registry`); its error type is
    /// the mode's.
    #[error(transparent)]
    Mode(Box<dyn std::error::Error + Send + Sync>),
}

/// Why an attempt (one connection to one server) ended early.
#[derive(Debug)]
pub enum Failure {
    /// The run was stopped while the attempt was under way: the connection ends.
    Stopped,
    /// The attempt broke: the client records it and tries again.
    Broke(Break),
}

/// How an attempt broke: the connection event it is recorded as, and why (the detect reason
/// the console shows).
#[derive(Debug)]
pub struct Break {
    pub event: ConnEvent,
    pub reason: String,
}

impl Break {
    pub fn io(e: std::io::Error) -> Break {
        Break {
            event: ConnEvent::Reset,
            reason: format!("TCP error: {e}"),
        }
    }

    pub fn fin(got: u64, want: u64) -> Break {
        Break {
            event: ConnEvent::Fin,
            reason: format!("FIN after {got} of {want} bytes"),
        }
    }

    pub fn idle(ms: u64) -> Break {
        Break {
            event: ConnEvent::TimedOut,
            reason: format!("no data for {ms} ms"),
        }
    }

    pub fn connect_timeout(addr: &str) -> Break {
        Break {
            event: ConnEvent::TimedOut,
            reason: format!("connect to {addr} timed out"),
        }
    }

    pub fn protocol(reason: String) -> Break {
        Break {
            event: ConnEvent::Reset,
            reason,
        }
    }
}

impl From<Break> for Failure {
    fn from(b: Break) -> Failure {
        Failure::Broke(b)
    }
}

/// Read buffer per connection.
const READ_BUF: usize = 256 * 1024;

/// State of one client connection across its attempts.
pub struct Client<'a> {
    pub(crate) spec: &'a ClientSpec,
    pub(crate) index: u32,
    pub(crate) seed: u64,
    pub(crate) meter: Meter,
    pub(crate) checker: StreamChecker,
    pub(crate) live: Arc<Live>,
    pub(crate) stop: CancellationToken,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) server: usize,
    pub(crate) attempts: u32,
    pub(crate) servers_used: Vec<String>,
    pub(crate) detect: Option<(u64, String)>,
    pub(crate) reconnected_ns: Option<u64>,
    pub(crate) resume_ns: Option<u64>,
    pub(crate) buf: Vec<u8>,
}

impl<'a> Client<'a> {
    /// Connection `index` of `spec`, checking the stream `(check_seed, expected)`; nothing
    /// connected yet.
    pub(crate) fn new(
        spec: &'a ClientSpec,
        index: u32,
        seed: u64,
        (check_seed, expected): (u64, u64),
        stop: CancellationToken,
        live: Arc<Live>,
    ) -> Client<'a> {
        Client {
            spec,
            index,
            seed,
            meter: Meter::new(mono_ns()),
            checker: StreamChecker::new(check_seed, expected),
            live,
            stop,
            deadline: tokio::time::Instant::now() + Duration::from_millis(spec.deadline_ms),
            server: 0,
            attempts: 0,
            servers_used: Vec::new(),
            detect: None,
            reconnected_ns: None,
            resume_ns: None,
            buf: vec![0u8; READ_BUF],
        }
    }

    /// Connects to the current server, moving down the list on failure.
    pub(crate) async fn connect(&mut self, port: u16) -> Result<TcpStream, ClientError> {
        loop {
            self.may_attempt()?;
            let addr = self.spec.servers[self.server % self.spec.servers.len()].clone();
            self.attempts += 1;
            self.servers_used.push(addr.clone());
            let timeout = Duration::from_millis(self.spec.connect_timeout_ms.max(1));
            match tokio::time::timeout(timeout, TcpStream::connect((addr.as_str(), port))).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    let now = mono_ns();
                    let event = if self.detect.is_some() {
                        self.reconnected_ns.get_or_insert(now);
                        ConnEvent::Reconnect { to: addr }
                    } else {
                        ConnEvent::Connected
                    };
                    self.event(now, event);
                    return Ok(s);
                }
                Ok(Err(e)) => self.failed(Break::io(e)),
                Err(_) => self.failed(Break::connect_timeout(&addr)),
            }
        }
    }

    /// Whether another attempt may start: not once the run is stopped, its deadline passed or
    /// its attempts are used up.
    pub(crate) fn may_attempt(&self) -> Result<(), ClientError> {
        if self.stop.is_cancelled() {
            return Err(ClientError::Stopped);
        }
        if tokio::time::Instant::now() >= self.deadline {
            return Err(ClientError::Deadline(self.spec.deadline_ms));
        }
        if self.attempts >= self.spec.max_attempts.max(1) {
            return Err(ClientError::GaveUp(self.attempts));
        }
        Ok(())
    }

    /// Records a connection event, in the meter and live.
    pub(crate) fn event(&mut self, now: u64, event: ConnEvent) {
        self.live.push(self.index, now, event.clone());
        self.meter.on_event(now, event);
    }

    /// Records a failure and moves to the next server.
    pub(crate) fn failed(&mut self, b: Break) {
        let now = mono_ns();
        tracing::info!(connection = self.index, reason = %b.reason, "client connection failed");
        self.event(now, b.event);
        if self.detect.is_none() {
            self.detect = Some((now, b.reason));
        }
        self.server += 1;
    }

    /// After a failed attempt: ends the connection if the run was stopped (an attempt that
    /// broke while it was being stopped included), else records the break and lets the caller
    /// try again.
    pub(crate) fn after(&mut self, f: Failure) -> Result<(), ClientError> {
        match f {
            Failure::Broke(b) if !self.stop.is_cancelled() => {
                self.failed(b);
                Ok(())
            }
            _ => Err(ClientError::Stopped),
        }
    }

    /// Accounts received payload bytes. True when they reached a progress mark: the caller
    /// then yields before its next read. The task that reports the mark was woken from this
    /// one and waits in this worker's LIFO slot, which other workers cannot steal; a
    /// connection whose reads are always ready would keep it waiting for its whole coop
    /// budget (128 reads of up to 256 KB: tens of milliseconds, a whole transfer).
    #[must_use]
    pub(crate) fn payload(&mut self, n: usize) -> bool {
        let now = mono_ns();
        if self.reconnected_ns.is_some() && self.resume_ns.is_none() {
            self.resume_ns = Some(now);
        }
        self.meter.on_bytes(now, n as u64);
        let seen = self.checker.bytes_seen();
        self.checker.push(&self.buf[..n]);
        self.live.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.live
            .add_progress(self.checker.bytes_seen().saturating_sub(seen))
    }

    /// One read with the idle timeout; `Ok(0)` is end of stream.
    pub(crate) async fn read(&mut self, stream: &mut TcpStream) -> Result<usize, Failure> {
        let idle = Duration::from_millis(self.spec.idle_timeout_ms.max(1));
        tokio::select! {
            _ = self.stop.cancelled() => Err(Failure::Stopped),
            r = tokio::time::timeout(idle, stream.read(&mut self.buf)) => match r {
                Err(_) => Err(Break::idle(self.spec.idle_timeout_ms).into()),
                Ok(Err(e)) => Err(Break::io(e).into()),
                Ok(Ok(n)) => Ok(n),
            },
        }
    }

    /// Receives exactly `want` payload bytes.
    pub(crate) async fn receive(
        &mut self,
        stream: &mut TcpStream,
        want: u64,
    ) -> Result<(), Failure> {
        let mut got = 0u64;
        while got < want {
            let cap = (want - got).min(self.buf.len() as u64) as usize;
            let n = {
                let idle = Duration::from_millis(self.spec.idle_timeout_ms.max(1));
                tokio::select! {
                    _ = self.stop.cancelled() => return Err(Failure::Stopped),
                    r = tokio::time::timeout(idle, stream.read(&mut self.buf[..cap])) => match r {
                        Err(_) => return Err(Break::idle(self.spec.idle_timeout_ms).into()),
                        Ok(Err(e)) => return Err(Break::io(e).into()),
                        Ok(Ok(0)) => return Err(Break::fin(got, want).into()),
                        Ok(Ok(n)) => n,
                    },
                }
            };
            if self.payload(n) {
                tokio::task::yield_now().await;
            }
            got += n as u64;
        }
        Ok(())
    }

    /// After the last expected byte the server must close: more bytes are an error too.
    async fn expect_fin(&mut self, s: &mut TcpStream) -> Result<(), Failure> {
        match self.read(s).await? {
            0 => Ok(()),
            n => {
                // The run ends here: no mark to yield for.
                let _ = self.payload(n);
                Err(Break::protocol(format!("{n} bytes beyond the end")).into())
            }
        }
    }

    /// Receives the rest of a stream: `want` bytes, then the server's FIN. `Some` ends the
    /// connection's work (done, or stopped); `None` means the attempt failed and was recorded,
    /// and the caller tries the next server.
    pub(crate) async fn finish_stream(
        &mut self,
        s: &mut TcpStream,
        want: u64,
        sent: u64,
    ) -> Option<Result<(), ClientError>> {
        // The FIN is awaited only once every byte is in: `Result::and` would evaluate (and
        // wait for) it even after a failed receive, doubling the detection time.
        let outcome = match self.receive(s, want).await {
            Ok(()) => self.expect_fin(s).await,
            Err(f) => Err(f),
        };
        match outcome {
            Ok(()) => {
                self.meter.on_latency(mono_ns().saturating_sub(sent));
                Some(Ok(()))
            }
            Err(f) => self.after(f).err().map(Err),
        }
    }

    /// The connection's result, `outcome` being how it ended.
    pub(crate) fn finish(self, outcome: Result<(), ClientError>) -> ConnectionResult {
        let (detect_ns, detect_reason) = match self.detect {
            Some((t, r)) => (Some(t), Some(r)),
            None => (None, None),
        };
        ConnectionResult {
            index: self.index,
            seed: self.seed,
            meter: self.meter.summary(),
            integrity: self.checker.finish(),
            detect_ns,
            detect_reason,
            reconnected_ns: self.reconnected_ns,
            resume_ns: self.resume_ns,
            attempts: self.attempts,
            servers_used: self.servers_used,
            error: match outcome {
                Ok(()) => None,
                Err(ClientError::Stopped) => Some(ConnError::Stopped),
                Err(e) => Some(ConnError::Failed(chain(&e))),
            },
        }
    }
}
