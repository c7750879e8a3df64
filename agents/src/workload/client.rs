//! The workload clients: real TCP clients in the client host's namespace that measure what
//! they see (DESIGN §7). Each connection is a [`Client`]: a [`halab_workload::meter::Meter`]
//! (throughput buckets, stalls, request latencies, connection events) and a
//! [`halab_workload::integrity::StreamChecker`] that verifies every received byte.
//!
//! What a mode changes on the client side is its [`ClientPolicy`], taken once per connection
//! from the spec's mode. The workloads here are mode none's client, the traditional
//! architecture (DESIGN §5, thesis §5.6): on a TCP error, a FIN before the end, or no byte for
//! the idle timeout, it connects to the next server in its list and re-issues its request: bulk
//! and http from the start (the checker counts the bytes fetched again), echo and interactive
//! from the exchange that broke, download from its byte offset (paper 000 §5.1).

use super::connection::{Break, Client, ClientError, Failure};
pub use super::live::Live;
use super::request::{
    EXCHANGES, REPLY_LEN, REQUEST_LEN, Request, file_name, http_path, name_seed, reply_seed,
};
use crate::modes::registry::ClientPolicy;
use halab_protocol::{ClientResult, ClientSpec, ConnectionResult, Workload, mono_ns};
use halab_workload::content;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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

async fn connection(
    index: u32,
    spec: &ClientSpec,
    stop: CancellationToken,
    live: Arc<Live>,
) -> ConnectionResult {
    let policy = ClientPolicy::of(&spec.mode);
    let spec = policy.spec(spec);
    let spec = spec.as_ref();
    let seed = spec.seed.wrapping_add(index as u64);
    let mut c = Client::new(spec, index, seed, checked_stream(spec, seed), stop, live);
    if spec.servers.is_empty() {
        return c.finish(Err(ClientError::NoServers));
    }
    let outcome = match policy.run_own(&mut c).await {
        Some(outcome) => outcome,
        None => match spec.workload {
            Workload::Echo | Workload::Interactive => exchanges(&mut c).await,
            Workload::Bulk => bulk(&mut c).await,
            Workload::Download => download(&mut c).await,
            Workload::Http => http(&mut c).await,
        },
    };
    c.finish(outcome)
}

/// Echo and interactive: request k, wait for its whole reply, record the latency, next.
async fn exchanges(c: &mut Client<'_>) -> Result<(), ClientError> {
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
            c.failed(Break::io(e));
            continue;
        }
        while k < EXCHANGES {
            content::fill(c.seed, k * REQUEST_LEN as u64, &mut request);
            let sent = mono_ns();
            if let Err(e) = s.write_all(&request).await {
                c.failed(Break::io(e));
                continue 'connection;
            }
            if let Err(f) = c.receive(&mut s, reply_len).await {
                c.after(f)?;
                continue 'connection;
            }
            c.meter.on_latency(mono_ns().saturating_sub(sent));
            k += 1;
        }
    }
    Ok(())
}

/// Bulk: one request, `size` bytes, FIN. A failed attempt is re-issued from the start.
async fn bulk(c: &mut Client<'_>) -> Result<(), ClientError> {
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
            c.failed(Break::io(e));
            continue;
        }
        if let Some(done) = c.finish_stream(&mut s, c.spec.size, sent).await {
            return done;
        }
    }
}

/// Download (paper 000 §5.1): name out, size in, offset out, bytes from the offset.
async fn download(c: &mut Client<'_>) -> Result<(), ClientError> {
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
            s.write_all(line.as_bytes()).await.map_err(Break::io)?;
            let announced = read_line(c, &mut s).await?;
            if announced != format!("SIZE {size}") {
                return Err(Break::protocol(format!("server announced {announced:?}")));
            }
            s.write_all(format!("OFFSET {offset}\n").as_bytes())
                .await
                .map_err(Break::io)?;
            Ok(())
        }
        .await;
        if let Err(b) = attempt {
            c.failed(b);
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
async fn read_line(c: &mut Client<'_>, s: &mut TcpStream) -> Result<String, Break> {
    let mut line = Vec::new();
    let idle = Duration::from_millis(c.spec.idle_timeout_ms.max(1));
    loop {
        let mut b = [0u8; 1];
        match tokio::time::timeout(idle, s.read(&mut b)).await {
            Err(_) => return Err(Break::idle(c.spec.idle_timeout_ms)),
            Ok(Err(e)) => return Err(Break::io(e)),
            Ok(Ok(0)) => return Err(Break::fin(0, 1)),
            Ok(Ok(_)) if b[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(Ok(_)) if line.len() > 256 => {
                return Err(Break::protocol("control line too long".into()));
            }
            Ok(Ok(_)) => line.push(b[0]),
        }
    }
}

/// HTTP/1.1 GET of `size` bytes; a failed attempt is re-issued from the start.
async fn http(c: &mut Client<'_>) -> Result<(), ClientError> {
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
            c.failed(Break::io(e));
            continue;
        }
        // Response head, then the body; body bytes that came with the head are payload.
        let mut head = Vec::new();
        let body_start = loop {
            match c.read(&mut s).await {
                Err(f) => break Err(f),
                Ok(0) => break Err(Break::fin(0, c.spec.size).into()),
                Ok(n) => {
                    head.extend_from_slice(&c.buf[..n]);
                    if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Ok(i + 4);
                    }
                    if head.len() > 16 * 1024 {
                        break Err(Break::protocol("response head too long".into()).into());
                    }
                }
            }
        };
        let body_start = match body_start {
            Ok(i) => i,
            Err(Failure::Stopped) => return Err(ClientError::Stopped),
            Err(Failure::Broke(b)) => {
                c.failed(b);
                continue;
            }
        };
        let head_text = String::from_utf8_lossy(&head[..body_start]).into_owned();
        if !head_text.starts_with("HTTP/1.1 200") {
            return Err(ClientError::Answer(
                head_text.lines().next().unwrap_or("").to_string(),
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
            Err(f) => c.after(f)?,
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
}
