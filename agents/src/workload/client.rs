//! The workload clients: real TCP clients in the client host's namespace that measure what
//! they see (DESIGN §7). Each connection has a [`Meter`] (throughput buckets, stalls, request
//! latencies, connection events) and a [`StreamChecker`] that verifies every received byte.
//!
//! Failover is the client's own, as in the traditional architecture of mode `none` (DESIGN §5,
//! thesis §5.6): on a TCP error, a FIN before the end, or no byte for the idle timeout, it
//! connects to the next server in its list and re-issues its request: bulk and http from the
//! start (the checker counts the bytes fetched again), echo and interactive from the exchange
//! that broke, download from its byte offset (paper 000 §5.1).

use super::request::{EXCHANGES, REPLY_LEN, REQUEST_LEN, Request, name_seed, reply_seed};
use halab_protocol::{
    ClientEvent, ClientResult, ClientSpec, ConnectionResult, ModeConfig, Workload, mono_ns,
};
use halab_workload::content;
use halab_workload::integrity::StreamChecker;
use halab_workload::meter::{ConnEvent, Meter};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Read buffer per connection.
const READ_BUF: usize = 256 * 1024;

/// What a run's clients report while they run, for telemetry: the bytes all connections
/// have received, how far they have got through their streams, and connection events not yet
/// sent.
#[derive(Debug)]
pub struct Live {
    pub bytes: AtomicU64,
    /// Distinct stream offsets received by all connections (see
    /// [`StreamChecker::bytes_seen`]): the run's progress, which marks are taken against.
    pub progress: AtomicU64,
    /// The progress at which `mark_reached` is notified; `u64::MAX` when no mark is armed.
    next_mark: AtomicU64,
    pub mark_reached: tokio::sync::Notify,
    events: std::sync::Mutex<Vec<ClientEvent>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            bytes: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            next_mark: AtomicU64::new(u64::MAX),
            mark_reached: tokio::sync::Notify::new(),
            events: std::sync::Mutex::default(),
        }
    }
}

impl Live {
    /// Notifies `mark_reached` once progress reaches `at` (at once if it already has); `None`
    /// disarms.
    pub fn arm_mark(&self, at: Option<u64>) {
        let at = at.unwrap_or(u64::MAX);
        self.next_mark.store(at, Ordering::SeqCst);
        // Progress may have passed the mark before it was armed.
        if self.progress.load(Ordering::SeqCst) >= at {
            self.mark_reached.notify_one();
        }
    }

    /// Adds `n` to the progress; true when that reached the armed mark (the caller should
    /// yield, see [`Client::payload`]).
    fn add_progress(&self, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        let now = self.progress.fetch_add(n, Ordering::SeqCst) + n;
        if now >= self.next_mark.load(Ordering::SeqCst) {
            // One stored permit at most, however often this is called before it is taken.
            self.mark_reached.notify_one();
            return true;
        }
        false
    }

    /// The events since the last call.
    pub fn take_events(&self) -> Vec<ClientEvent> {
        // A poisoned lock only means a client task panicked while pushing; the list is intact.
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, connection: u32, at_ns: u64, event: ConnEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ClientEvent {
                connection,
                at_ns,
                event,
            });
    }
}

/// Runs every connection of `spec` to completion, failure or `stop`, reporting progress and
/// events through `live` as they happen.
pub async fn run(spec: ClientSpec, stop: CancellationToken, live: Arc<Live>) -> ClientResult {
    let started_ns = mono_ns();
    let mut set = JoinSet::new();
    for index in 0..spec.connections.max(1) {
        let (spec, stop, live) = (spec.clone(), stop.clone(), live.clone());
        set.spawn(async move { connection(index, &spec, stop, live).await });
    }
    let mut connections = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(c) => connections.push(c),
            Err(e) => tracing::error!(error = %e, "client task failed"),
        }
    }
    connections.sort_by_key(|c| c.index);
    ClientResult {
        started_ns,
        ended_ns: mono_ns(),
        connections,
    }
}

/// The stream a connection with stream seed `seed` checks what it receives against: the
/// content's seed and the number of bytes expected.
fn checked_stream(spec: &ClientSpec, seed: u64) -> (u64, u64) {
    match spec.workload {
        Workload::Echo => (seed, EXCHANGES * REQUEST_LEN as u64),
        Workload::Interactive => (reply_seed(seed), EXCHANGES * REPLY_LEN as u64),
        Workload::Bulk => (seed, spec.size),
        Workload::Download => (name_seed(&file_name(seed)), spec.size),
        Workload::Http => (name_seed(&http_path(seed)), spec.size),
    }
}

/// Bytes all connections of a run expect together: what its progress marks are millionths of.
#[must_use]
pub fn expected_bytes(spec: &ClientSpec) -> u64 {
    let len = checked_stream(spec, spec.seed).1;
    len.saturating_mul(u64::from(spec.connections.max(1)))
}

/// The progress at which mark `ppm` (millionths of `total`) is reached, rounded up so that a
/// mark is never taken before its share of the bytes has arrived.
#[must_use]
pub fn mark_bytes(total: u64, ppm: u32) -> u64 {
    let exact = u128::from(total) * u128::from(ppm.min(1_000_000));
    // At most `total`: fits in u64.
    exact.div_ceil(1_000_000) as u64
}

/// Why an attempt ended early.
pub(crate) struct Failure {
    pub(crate) event: ConnEvent,
    pub(crate) reason: String,
}

impl Failure {
    pub(crate) fn io(e: std::io::Error) -> Failure {
        Failure {
            event: ConnEvent::Reset,
            reason: format!("TCP error: {e}"),
        }
    }

    pub(crate) fn fin(got: u64, want: u64) -> Failure {
        Failure {
            event: ConnEvent::Fin,
            reason: format!("FIN after {got} of {want} bytes"),
        }
    }
    pub(crate) fn idle(ms: u64) -> Failure {
        Failure {
            event: ConnEvent::TimedOut,
            reason: format!("no data for {ms} ms"),
        }
    }
    pub(crate) fn protocol(reason: String) -> Failure {
        Failure {
            event: ConnEvent::Reset,
            reason,
        }
    }
}

/// State of one client connection across its attempts.
pub(crate) struct Client<'a> {
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

impl Client<'_> {
    /// Connects to the current server, moving down the list on failure.
    async fn connect(&mut self, port: u16) -> Result<TcpStream, String> {
        loop {
            if self.stop.is_cancelled() {
                return Err("stopped".into());
            }
            if tokio::time::Instant::now() >= self.deadline {
                return Err(format!("deadline of {} ms passed", self.spec.deadline_ms));
            }
            if self.attempts >= self.spec.max_attempts.max(1) {
                return Err(format!(
                    "gave up after {} connection attempts",
                    self.attempts
                ));
            }
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
                Ok(Err(e)) => self.failed(Failure::io(e)),
                Err(_) => self.failed(Failure {
                    event: ConnEvent::TimedOut,
                    reason: format!("connect to {addr} timed out"),
                }),
            }
        }
    }

    /// Records a connection event, in the meter and live.
    pub(crate) fn event(&mut self, now: u64, event: ConnEvent) {
        self.live.push(self.index, now, event.clone());
        self.meter.on_event(now, event);
    }

    /// Records a failure and moves to the next server.
    pub(crate) fn failed(&mut self, f: Failure) {
        let now = mono_ns();
        tracing::info!(connection = self.index, reason = %f.reason, "client connection failed");
        self.event(now, f.event);
        if self.detect.is_none() {
            self.detect = Some((now, f.reason));
        }
        self.server += 1;
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
    async fn read(&mut self, stream: &mut TcpStream) -> Result<usize, Failure> {
        let idle = Duration::from_millis(self.spec.idle_timeout_ms.max(1));
        tokio::select! {
            _ = self.stop.cancelled() => Err(Failure::protocol("stopped".into())),
            r = tokio::time::timeout(idle, stream.read(&mut self.buf)) => match r {
                Err(_) => Err(Failure::idle(self.spec.idle_timeout_ms)),
                Ok(Err(e)) => Err(Failure::io(e)),
                Ok(Ok(n)) => Ok(n),
            },
        }
    }

    /// Receives exactly `want` payload bytes.
    async fn receive(&mut self, stream: &mut TcpStream, want: u64) -> Result<(), Failure> {
        let mut got = 0u64;
        while got < want {
            let cap = (want - got).min(self.buf.len() as u64) as usize;
            let n = {
                let idle = Duration::from_millis(self.spec.idle_timeout_ms.max(1));
                tokio::select! {
                    _ = self.stop.cancelled() => return Err(Failure::protocol("stopped".into())),
                    r = tokio::time::timeout(idle, stream.read(&mut self.buf[..cap])) => match r {
                        Err(_) => return Err(Failure::idle(self.spec.idle_timeout_ms)),
                        Ok(Err(e)) => return Err(Failure::io(e)),
                        Ok(Ok(0)) => return Err(Failure::fin(got, want)),
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

    /// Receives the rest of a stream: `want` bytes, then the server's FIN. `Some` ends the
    /// connection's work (done, or stopped); `None` means the attempt failed and was recorded,
    /// and the caller tries the next server.
    async fn finish_stream(
        &mut self,
        s: &mut TcpStream,
        want: u64,
        sent: u64,
    ) -> Option<Result<(), String>> {
        // The FIN is awaited only once every byte is in: `Result::and` would evaluate (and
        // wait for) it even after a failed receive, doubling the detection time.
        let outcome = match self.receive(s, want).await {
            Ok(()) => expect_fin(self, s).await,
            Err(f) => Err(f),
        };
        match outcome {
            Ok(()) => {
                self.meter.on_latency(mono_ns().saturating_sub(sent));
                Some(Ok(()))
            }
            Err(_) if self.stop.is_cancelled() => Some(Err("stopped".into())),
            Err(f) => {
                self.failed(f);
                None
            }
        }
    }

    fn finish(self, error: Option<String>) -> ConnectionResult {
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
            error,
        }
    }
}

/// Idle and connect timeout of a client under st-tcp: the takeover happens under it, on the
/// same connection, so only a failed takeover may end it.
const ST_TCP_IDLE_TIMEOUT_MS: u64 = 30_000;

async fn connection(
    index: u32,
    spec: &ClientSpec,
    stop: CancellationToken,
    live: Arc<Live>,
) -> ConnectionResult {
    // st-tcp (DESIGN §5): an unmodified client of the service address that never reconnects;
    // the failover is the backup's business. A failure ends the connection with its error.
    let st_tcp_spec;
    let spec = if matches!(spec.mode, halab_protocol::ModeConfig::StTcp(_)) {
        let mut s = spec.clone();
        s.servers.truncate(1);
        s.max_attempts = 1;
        s.idle_timeout_ms = s.idle_timeout_ms.max(ST_TCP_IDLE_TIMEOUT_MS);
        // Connecting, it is the kernel's client: its SYN is sent again (1 s, 3 s, 7 s, ...
        // after the first) until someone answers for the service address. A SYN lost to a
        // primary that failed before answering reaches the backup once it took over.
        s.connect_timeout_ms = s.connect_timeout_ms.max(ST_TCP_IDLE_TIMEOUT_MS);
        st_tcp_spec = s;
        &st_tcp_spec
    } else {
        spec
    };
    let seed = spec.seed.wrapping_add(index as u64);
    let (check_seed, expected) = checked_stream(spec, seed);
    let mut c = Client {
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
    };
    if spec.servers.is_empty() {
        return c.finish(Some("no servers given".into()));
    }
    let outcome = match spec.workload {
        Workload::Echo | Workload::Interactive => exchanges(&mut c).await,
        Workload::Bulk => bulk(&mut c).await,
        Workload::Download => match &spec.mode {
            ModeConfig::AppMigration(cfg) => {
                crate::modes::app_migration::client::download(&mut c, cfg).await
            }
            _ => download(&mut c).await,
        },
        Workload::Http => http(&mut c).await,
    };
    c.finish(outcome.err())
}

/// The virtual file a download connection fetches.
pub(crate) fn file_name(seed: u64) -> String {
    format!("halab-{seed:x}.bin")
}

/// The URL path an http connection fetches.
fn http_path(seed: u64) -> String {
    format!("/halab-{seed:x}.bin")
}

/// Echo and interactive: request k, wait for its whole reply, record the latency, next.
async fn exchanges(c: &mut Client<'_>) -> Result<(), String> {
    let interactive = c.spec.workload == Workload::Interactive;
    let reply_len = if interactive { REPLY_LEN } else { REQUEST_LEN } as u64;
    let mut k = 0u64;
    let mut request = vec![0u8; REQUEST_LEN];
    'connection: while k < EXCHANGES {
        let mut s = c.connect(c.spec.workload_port).await?;
        let line = if interactive {
            Request::Interactive {
                seed: c.seed,
                from: k,
            }
        } else {
            Request::Echo {
                seed: c.seed,
                from: k,
            }
        }
        .line();
        if k > 0 || c.detect.is_some() {
            c.checker.restart_at(k * reply_len);
        }
        if let Err(e) = s.write_all(line.as_bytes()).await {
            c.failed(Failure::io(e));
            continue;
        }
        while k < EXCHANGES {
            content::fill(c.seed, k * REQUEST_LEN as u64, &mut request);
            let sent = mono_ns();
            if let Err(e) = s.write_all(&request).await {
                c.failed(Failure::io(e));
                continue 'connection;
            }
            if let Err(f) = c.receive(&mut s, reply_len).await {
                if c.stop.is_cancelled() {
                    return Err("stopped".into());
                }
                c.failed(f);
                continue 'connection;
            }
            c.meter.on_latency(mono_ns().saturating_sub(sent));
            k += 1;
        }
    }
    Ok(())
}

/// Bulk: one request, `size` bytes, FIN. A failed attempt is re-issued from the start.
async fn bulk(c: &mut Client<'_>) -> Result<(), String> {
    loop {
        let mut s = c.connect(c.spec.workload_port).await?;
        if c.detect.is_some() {
            c.checker.restart_at(0);
        }
        let sent = mono_ns();
        let line = Request::Bulk {
            seed: c.seed,
            size: c.spec.size,
        }
        .line();
        if let Err(e) = s.write_all(line.as_bytes()).await {
            c.failed(Failure::io(e));
            continue;
        }
        if let Some(done) = c.finish_stream(&mut s, c.spec.size, sent).await {
            return done;
        }
    }
}

/// After the last expected byte the server must close: more bytes are an error too.
async fn expect_fin(c: &mut Client<'_>, s: &mut TcpStream) -> Result<(), Failure> {
    match c.read(s).await? {
        0 => Ok(()),
        n => {
            // The run ends here: no mark to yield for.
            let _ = c.payload(n);
            Err(Failure::protocol(format!("{n} bytes beyond the end")))
        }
    }
}

/// Download (paper 000 §5.1): name out, size in, offset out, bytes from the offset.
async fn download(c: &mut Client<'_>) -> Result<(), String> {
    let size = c.spec.size;
    let name = file_name(c.seed);
    // The offset the next connection resumes at: every byte received so far, in order.
    let mut offset = 0u64;
    loop {
        let mut s = c.connect(c.spec.workload_port).await?;
        if c.detect.is_some() {
            c.checker.restart_at(offset);
        }
        let sent = mono_ns();
        let line = Request::Download {
            name: name.clone(),
            size,
        }
        .line();
        let attempt = async {
            s.write_all(line.as_bytes()).await.map_err(Failure::io)?;
            let announced = read_line(c, &mut s).await?;
            if announced != format!("SIZE {size}") {
                return Err(Failure::protocol(format!("server announced {announced:?}")));
            }
            s.write_all(format!("OFFSET {offset}\n").as_bytes())
                .await
                .map_err(Failure::io)?;
            Ok(())
        }
        .await;
        if let Err(f) = attempt {
            c.failed(f);
            continue;
        }
        let before = c.checker.progress().bytes_received;
        let done = c.finish_stream(&mut s, size - offset, sent).await;
        // Every byte received in order moves the resume point; never past the end.
        offset = (offset + c.checker.progress().bytes_received - before).min(size);
        if let Some(done) = done {
            return done;
        }
    }
}

/// Reads one `\n`-terminated control line byte by byte (the download exchange is tiny).
async fn read_line(c: &mut Client<'_>, s: &mut TcpStream) -> Result<String, Failure> {
    let mut line = Vec::new();
    let idle = Duration::from_millis(c.spec.idle_timeout_ms.max(1));
    loop {
        let mut b = [0u8; 1];
        match tokio::time::timeout(idle, s.read(&mut b)).await {
            Err(_) => return Err(Failure::idle(c.spec.idle_timeout_ms)),
            Ok(Err(e)) => return Err(Failure::io(e)),
            Ok(Ok(0)) => return Err(Failure::fin(0, 1)),
            Ok(Ok(_)) if b[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(Ok(_)) if line.len() > 256 => {
                return Err(Failure::protocol("control line too long".into()));
            }
            Ok(Ok(_)) => line.push(b[0]),
        }
    }
}

/// HTTP/1.1 GET of `size` bytes; a failed attempt is re-issued from the start.
async fn http(c: &mut Client<'_>) -> Result<(), String> {
    let path = http_path(c.seed);
    loop {
        let mut s = c.connect(c.spec.http_port).await?;
        if c.detect.is_some() {
            c.checker.restart_at(0);
        }
        let sent = mono_ns();
        let server = c.servers_used.last().cloned().unwrap_or_default();
        let req = format!(
            "GET {path}?size={} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n",
            c.spec.size
        );
        if let Err(e) = s.write_all(req.as_bytes()).await {
            c.failed(Failure::io(e));
            continue;
        }
        // Response head, then the body; body bytes that came with the head are payload.
        let mut head = Vec::new();
        let body_start = loop {
            match c.read(&mut s).await {
                Err(f) => break Err(f),
                Ok(0) => break Err(Failure::fin(0, c.spec.size)),
                Ok(n) => {
                    head.extend_from_slice(&c.buf[..n]);
                    if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Ok(i + 4);
                    }
                    if head.len() > 16 * 1024 {
                        break Err(Failure::protocol("response head too long".into()));
                    }
                }
            }
        };
        let body_start = match body_start {
            Ok(i) => i,
            Err(f) => {
                c.failed(f);
                continue;
            }
        };
        let head_text = String::from_utf8_lossy(&head[..body_start]).into_owned();
        if !head_text.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "server answered {:?}",
                head_text.lines().next().unwrap_or("")
            ));
        }
        let early = head.len() - body_start;
        if early > 0 {
            let n = early.min(c.buf.len());
            c.buf[..n].copy_from_slice(&head[body_start..body_start + n]);
            if c.payload(n) {
                tokio::task::yield_now().await;
            }
        }
        let rest = c.spec.size.saturating_sub(early as u64);
        match c.receive(&mut s, rest).await {
            Ok(()) => {
                c.meter.on_latency(mono_ns().saturating_sub(sent));
                return Ok(());
            }
            Err(_) if c.stop.is_cancelled() => return Err("stopped".into()),
            Err(f) => c.failed(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_rounded_up_and_never_beyond_the_total() {
        assert_eq!(mark_bytes(100, 400_000), 40);
        assert_eq!(mark_bytes(3, 500_000), 2);
        assert_eq!(mark_bytes(1_000_000, 1), 1);
        assert_eq!(mark_bytes(999_999, 1), 1);
        assert_eq!(mark_bytes(0, 400_000), 0);
        assert_eq!(mark_bytes(u64::MAX, 1_000_000), u64::MAX);
        assert_eq!(mark_bytes(10, 2_000_000), 10);
    }

    #[tokio::test]
    async fn a_mark_is_notified_when_reached_also_when_armed_late() {
        let live = Live::default();
        live.arm_mark(Some(100));
        live.add_progress(60);
        let wait = tokio::time::timeout(Duration::from_millis(20), live.mark_reached.notified());
        assert!(wait.await.is_err(), "notified before the mark");
        live.add_progress(40);
        tokio::time::timeout(Duration::from_secs(5), live.mark_reached.notified())
            .await
            .expect("notified at the mark");
        // Progress already beyond the next mark when it is armed.
        live.add_progress(50);
        live.arm_mark(Some(120));
        tokio::time::timeout(Duration::from_secs(5), live.mark_reached.notified())
            .await
            .expect("notified on arming");
        live.arm_mark(None);
        live.add_progress(1_000);
        let wait = tokio::time::timeout(Duration::from_millis(20), live.mark_reached.notified());
        assert!(wait.await.is_err(), "notified while disarmed");
    }
}
