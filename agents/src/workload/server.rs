//! The workload server: one process per server host, started by the agent for the `primary`
//! and `backup` roles, so that a process fault kills *it* and not the agent. It serves the
//! halab protocol on [`WORKLOAD_PORT`] and HTTP on [`HTTP_PORT`]; every byte it sends is
//! `content(seed, offset)`, so what it sends depends only on what the client asked.

use super::request::{
    HTTP_CONTINUE, HTTP_PORT, HttpMethod, HttpRequest, Parsed, REPLY_LEN, REQUEST_LEN, Request,
    RequestError, WORKLOAD_PORT, http_error, http_response_head, http_upload_verdict, name_seed,
    parse_http, parse_number_line, parse_request, reply_seed,
};
use halab_workload::content;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Bytes written per write call when streaming content.
const CHUNK: usize = 256 * 1024;

/// Serves until `stop` is cancelled. The agent binds `0.0.0.0` on both ports so the server
/// answers on every address of its host, the service address included. Calls `ready` with the
/// ports once both listen (port 0 asks the kernel for free ones).
pub async fn serve(
    bind: std::net::IpAddr,
    workload_port: u16,
    http_port: u16,
    stop: CancellationToken,
    ready: impl FnOnce(u16, u16),
) -> io::Result<()> {
    let halab = TcpListener::bind((bind, workload_port)).await?;
    let http = TcpListener::bind((bind, http_port)).await?;
    ready(halab.local_addr()?.port(), http.local_addr()?.port());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = halab.accept() => {
                let (stream, peer) = r?;
                conns.spawn(async move {
                    if let Err(e) = serve_halab(stream).await {
                        eprintln!("halab-server: {peer}: {e}");
                    }
                });
            }
            r = http.accept() => {
                let (stream, peer) = r?;
                conns.spawn(async move {
                    if let Err(e) = serve_http(stream).await {
                        eprintln!("halab-server: http {peer}: {e}");
                    }
                });
            }
            Some(_) = conns.join_next() => {}
        }
    }
    conns.shutdown().await;
    Ok(())
}

/// Default ports, for `halab-agent serve` without arguments.
pub fn default_ports() -> (u16, u16) {
    (WORKLOAD_PORT, HTTP_PORT)
}

/// A refused request as the I/O error it ends its connection with (the refusal stays its
/// source).
fn bad(e: RequestError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Reads until `parse` accepts a prefix of the buffer; returns the value and the bytes after it.
async fn read_head<T>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Parsed<T>, RequestError>,
) -> io::Result<Option<T>> {
    loop {
        match parse(buf).map_err(bad)? {
            Parsed::Done(v, used) => {
                buf.drain(..used);
                return Ok(Some(v));
            }
            Parsed::Incomplete => {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "connection closed inside a request",
                        ))
                    };
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// Writes bytes `[from, to)` of stream `seed`.
async fn send_content(stream: &mut TcpStream, seed: u64, from: u64, to: u64) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut off = from;
    while off < to {
        let n = ((to - off) as usize).min(CHUNK);
        content::fill(seed, off, &mut buf[..n]);
        stream.write_all(&buf[..n]).await?;
        off += n as u64;
    }
    Ok(())
}

async fn serve_halab(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let Some(req) = read_head(&mut stream, &mut buf, parse_request).await? else {
        return Ok(());
    };
    match req {
        Request::Echo { .. } => {
            // Echo every byte back as it arrives (thesis §3.5 Echo).
            if !buf.is_empty() {
                stream.write_all(&buf).await?;
            }
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                stream.write_all(&chunk[..n]).await?;
            }
        }
        Request::Interactive { seed, from } => {
            // Reply k (10 KB) once the k-th 150-byte request is complete.
            let seed = reply_seed(seed);
            let mut received = buf.len() as u64;
            let mut next = from;
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                while received >= (next - from + 1) * REQUEST_LEN as u64 {
                    let start = next * REPLY_LEN as u64;
                    send_content(&mut stream, seed, start, start + REPLY_LEN as u64).await?;
                    next += 1;
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                received += n as u64;
            }
        }
        Request::Bulk { seed, size } => {
            send_content(&mut stream, seed, 0, size).await?;
            stream.shutdown().await
        }
        Request::Download { name, size } => {
            // Paper 000 §5.1: size out, offset in, bytes from the offset, close.
            stream
                .write_all(format!("SIZE {size}\n").as_bytes())
                .await?;
            let Some(offset) =
                read_head(&mut stream, &mut buf, |b| parse_number_line(b, "OFFSET")).await?
            else {
                return Ok(());
            };
            if offset > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("offset {offset} beyond size {size}"),
                ));
            }
            send_content(&mut stream, name_seed(&name), offset, size).await?;
            stream.shutdown().await
        }
    }
}

async fn serve_http(mut stream: TcpStream) -> io::Result<()> {
    // The head and the body are separate writes: with Nagle's algorithm a small body would
    // wait for the head's acknowledgement, which the client delays (40 ms a response).
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let req: HttpRequest = match read_head(&mut stream, &mut buf, parse_http).await {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = stream
                    .write_all(http_error(&e.to_string()).as_bytes())
                    .await;
                return Err(e);
            }
        };
        match req.method {
            HttpMethod::Get => {
                stream
                    .write_all(http_response_head(req.size, req.keep_alive).as_bytes())
                    .await?;
                send_content(&mut stream, name_seed(&req.path), 0, req.size).await?;
            }
            HttpMethod::Put => {
                if req.expect_continue {
                    stream.write_all(HTTP_CONTINUE.as_bytes()).await?;
                }
                let first_wrong =
                    check_upload(&mut stream, &mut buf, name_seed(&req.path), req.size).await?;
                stream
                    .write_all(
                        http_upload_verdict(req.size, first_wrong, req.keep_alive).as_bytes(),
                    )
                    .await?;
            }
        }
        if !req.keep_alive {
            return stream.shutdown().await;
        }
    }
}

/// Reads an upload's `size` bytes (the first of them may be in `buf` already; what follows
/// them stays there) and checks each against the content of stream `seed`; the offset of the
/// first wrong byte, if any.
async fn check_upload(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    seed: u64,
    size: u64,
) -> io::Result<Option<u64>> {
    let mut off = 0u64;
    let mut first_wrong = None;
    let mut check = |data: &[u8], off: u64| {
        if first_wrong.is_none()
            && let Some(i) = content::first_mismatch(seed, off, data)
        {
            first_wrong = Some(off + i as u64);
        }
    };
    let early = (buf.len() as u64).min(size) as usize;
    check(&buf[..early], 0);
    buf.drain(..early);
    off += early as u64;
    let mut chunk = vec![0u8; CHUNK];
    while off < size {
        let want = ((size - off) as usize).min(CHUNK);
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("upload ended after {off} of {size} bytes"),
            ));
        }
        check(&chunk[..n], off);
        off += n as u64;
    }
    Ok(first_wrong)
}
