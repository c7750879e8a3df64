//! The workloads' wire formats (DESIGN §2 workloads; thesis §3.5; paper 000 §5.1), parsed
//! without I/O. Every parser takes the bytes received so far and either needs more, returns a
//! request, or refuses with a reason; none panics on any input.
//!
//! halab protocol (port [`WORKLOAD_PORT`]): the client's first line names the workload.
//! - `HALAB echo seed=<hex> from=<k>`: then 150-byte requests, each echoed back at once
//!   (thesis §3.5 Echo). `from` is the index of the first exchange, so a reconnecting client
//!   continues the conversation where it broke off.
//! - `HALAB interactive seed=<hex> from=<k>`: then 150-byte requests, each answered with a
//!   10 KB reply (thesis §3.5 Interactive); reply `k` is bytes `[k·10240, (k+1)·10240)` of the
//!   reply stream.
//! - `HALAB bulk seed=<hex> size=<n>`: `n` bytes back, then FIN (thesis §3.5 Bulk transfer).
//! - `HALAB download name=<name> size=<n>`: the server answers `SIZE <n>`, the client answers
//!   `OFFSET <o>`, the server sends bytes `[o, n)` of the file and closes (paper 000 §5.1; the
//!   file is virtual: its content is a function of its name).
//!
//! HTTP/1.1 (port [`HTTP_PORT`]): `GET /<name>?size=<n>` answers `n` bytes (default 1 MB) with
//! Content-Length and keep-alive, and no Date header, so replies are deterministic.
//! `PUT /<name>` with a Content-Length (craft's upload workload, `curl -T`): the body must be the
//! content of `<name>`; the server checks every byte and answers its verdict
//! ([`http_upload_verdict`]), 200 when every byte matched, 422 when one did not.

pub use halab_protocol::{HTTP_PORT, WORKLOAD_PORT};
/// Bytes in one echo or interactive request.
pub const REQUEST_LEN: usize = 150;
/// Bytes in one interactive reply.
pub const REPLY_LEN: usize = 10 * 1024;
/// Exchanges in one echo or interactive run.
pub const EXCHANGES: u64 = 100;
/// The longest first line or HTTP request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Size of an HTTP download whose URL names none.
pub const DEFAULT_HTTP_SIZE: u64 = 1_000_000;
/// The largest size a request may ask for (1 TB): a bound, not a limit anyone should meet.
pub const MAX_SIZE: u64 = 1_000_000_000_000;

/// Seed of the interactive reply stream derived from the request stream's seed, so the two
/// streams differ.
pub fn reply_seed(seed: u64) -> u64 {
    seed ^ 0x5245_504c_5953_4545 // "REPLYSEE"
}

pub use halab_workload::content::name_seed;

/// The virtual file a download connection with stream seed `seed` fetches.
pub fn file_name(seed: u64) -> String {
    format!("halab-{seed:x}.bin")
}

/// The URL path an http connection with stream seed `seed` fetches.
pub fn http_path(seed: u64) -> String {
    format!("/halab-{seed:x}.bin")
}

/// The first line of a halab-protocol connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Echo { seed: u64, from: u64 },
    Interactive { seed: u64, from: u64 },
    Bulk { seed: u64, size: u64 },
    Download { name: String, size: u64 },
}

impl Request {
    /// The line a client sends, newline included.
    pub fn line(&self) -> String {
        match self {
            Request::Echo { seed, from } => format!("HALAB echo seed={seed:x} from={from}\n"),
            Request::Interactive { seed, from } => {
                format!("HALAB interactive seed={seed:x} from={from}\n")
            }
            Request::Bulk { seed, size } => format!("HALAB bulk seed={seed:x} size={size}\n"),
            Request::Download { name, size } => format!("HALAB download name={name} size={size}\n"),
        }
    }
}

/// Result of looking for a line in the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// No complete line yet.
    Incomplete,
    /// A value and how many bytes it used (the line and its newline).
    Done(T, usize),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no end of line in {} bytes", MAX_HEAD)]
    NoEndOfLine,
    #[error("request line is not UTF-8")]
    LineNotUtf8,
    #[error("not a halab request: {0:?}")]
    NotHalab(String),
    #[error("request names no workload")]
    NoWorkload,
    #[error("bad field {0:?}")]
    BadField(String),
    #[error("bad {field} {value:?}")]
    BadValue { field: &'static str, value: String },
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("{kind} request without {what}")]
    Missing { kind: String, what: &'static str },
    #[error("unknown workload {0:?}")]
    UnknownWorkload(String),
    #[error("expected `{keyword} <n>`, got {line:?}")]
    Expected { keyword: String, line: String },
    #[error("request head longer than {} bytes", MAX_HEAD)]
    HeadTooLong,
    #[error("request head is not UTF-8")]
    HeadNotUtf8,
    #[error("bad request line {0:?}")]
    BadRequestLine(String),
    #[error("method {0} not supported")]
    Method(String),
    #[error("bad path {0:?}")]
    BadPath(String),
}

fn bad(field: &'static str, value: &str) -> RequestError {
    RequestError::BadValue {
        field,
        value: value.to_string(),
    }
}

/// Takes one `\n`-terminated line from `buf`, refusing lines over [`MAX_HEAD`].
fn take_line(buf: &[u8]) -> Result<Parsed<&str>, RequestError> {
    match buf.iter().position(|b| *b == b'\n') {
        None if buf.len() > MAX_HEAD => Err(RequestError::NoEndOfLine),
        None => Ok(Parsed::Incomplete),
        Some(i) => {
            let line = std::str::from_utf8(&buf[..i]).map_err(|_| RequestError::LineNotUtf8)?;
            Ok(Parsed::Done(line.trim_end_matches('\r'), i + 1))
        }
    }
}

/// Parses the first line of a halab-protocol connection.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<Request>, RequestError> {
    let (line, used) = match take_line(buf)? {
        Parsed::Incomplete => return Ok(Parsed::Incomplete),
        Parsed::Done(l, n) => (l, n),
    };
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some("HALAB") {
        return Err(RequestError::NotHalab(line.to_string()));
    }
    let kind = words.next().ok_or(RequestError::NoWorkload)?;
    let mut seed = None;
    let mut size = None;
    let mut from = None;
    let mut name = None;
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| RequestError::BadField(w.to_string()))?;
        match k {
            "seed" => seed = Some(u64::from_str_radix(v, 16).map_err(|_| bad("seed", v))?),
            "size" => size = Some(parse_size(v)?),
            "from" => from = Some(v.parse::<u64>().map_err(|_| bad("from", v))?),
            "name" if valid_name(v) => name = Some(v.to_string()),
            "name" => return Err(bad("name", v)),
            _ => return Err(RequestError::UnknownField(k.to_string())),
        }
    }
    let missing = |what: &'static str| RequestError::Missing {
        kind: kind.to_string(),
        what,
    };
    let need = |v: Option<u64>, what: &'static str| v.ok_or_else(|| missing(what));
    let req = match kind {
        "echo" => Request::Echo {
            seed: need(seed, "seed")?,
            from: from.unwrap_or(0),
        },
        "interactive" => Request::Interactive {
            seed: need(seed, "seed")?,
            from: from.unwrap_or(0),
        },
        "bulk" => Request::Bulk {
            seed: need(seed, "seed")?,
            size: need(size, "size")?,
        },
        "download" => Request::Download {
            name: name.ok_or_else(|| missing("name"))?,
            size: need(size, "size")?,
        },
        other => return Err(RequestError::UnknownWorkload(other.to_string())),
    };
    Ok(Parsed::Done(req, used))
}

fn parse_size(v: &str) -> Result<u64, RequestError> {
    match v.parse::<u64>() {
        Ok(n) if n <= MAX_SIZE => Ok(n),
        _ => Err(bad("size", v)),
    }
}

/// File names: 1–128 characters of `[A-Za-z0-9._-]`, not `.` or `..`. Files are virtual (their
/// content is a function of the name), but a name that reads like a path step is refused all
/// the same.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses a `SIZE <n>` or `OFFSET <n>` line of the download exchange.
pub fn parse_number_line(buf: &[u8], keyword: &str) -> Result<Parsed<u64>, RequestError> {
    let (line, used) = match take_line(buf)? {
        Parsed::Incomplete => return Ok(Parsed::Incomplete),
        Parsed::Done(l, n) => (l, n),
    };
    let v = line
        .strip_prefix(keyword)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| RequestError::Expected {
            keyword: keyword.to_string(),
            line: line.to_string(),
        })?;
    Ok(Parsed::Done(parse_size(v.trim())?, used))
}

/// The methods the http workloads use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// A download of `size` bytes.
    Get,
    /// An upload of `size` bytes (the Content-Length), checked by the server.
    Put,
}

/// An HTTP/1.1 request the http workloads send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: HttpMethod,
    /// The path without query, e.g. `/file.bin`; names the content.
    pub path: String,
    /// GET: the bytes asked for; PUT: the body's length.
    pub size: u64,
    /// False when the client sent `Connection: close` (or spoke HTTP/1.0 without keep-alive).
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body (curl does for uploads
    /// over 1 MB).
    pub expect_continue: bool,
}

/// Parses an HTTP request head (up to and including the empty line). RFC 9112 §3 (request
/// line), §6 (message body length) and §9.3 (persistence); GET and PUT are served, a PUT's
/// body needs a Content-Length (no chunked uploads).
pub fn parse_http(buf: &[u8]) -> Result<Parsed<HttpRequest>, RequestError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(RequestError::HeadTooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| RequestError::HeadNotUtf8)?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return Err(RequestError::BadRequestLine(request_line.to_string()));
    };
    let method = match method {
        "GET" => HttpMethod::Get,
        "PUT" => HttpMethod::Put,
        m => return Err(RequestError::Method(m.to_string())),
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = None;
    let mut expect_continue = false;
    for h in lines {
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        } else if k.eq_ignore_ascii_case("content-length") {
            content_length = Some(parse_size(v)?);
        } else if k.eq_ignore_ascii_case("expect") {
            expect_continue = v.eq_ignore_ascii_case("100-continue");
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("transfer-encoding", v));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') || !path[1..].split('/').all(valid_name_or_empty) {
        return Err(RequestError::BadPath(path.to_string()));
    }
    let size = match method {
        HttpMethod::Get => {
            let mut size = DEFAULT_HTTP_SIZE;
            for kv in query.split('&').filter(|s| !s.is_empty()) {
                if let Some(v) = kv.strip_prefix("size=") {
                    size = parse_size(v)?;
                }
            }
            size
        }
        HttpMethod::Put => content_length.ok_or(RequestError::Missing {
            kind: "PUT".into(),
            what: "Content-Length",
        })?,
    };
    Ok(Parsed::Done(
        HttpRequest {
            method,
            path: path.to_string(),
            size,
            keep_alive,
            expect_continue,
        },
        end + 4,
    ))
}

fn valid_name_or_empty(s: &str) -> bool {
    s.is_empty() || valid_name(s)
}

/// The response head for a GET of `size` bytes.
pub fn http_response_head(size: u64, keep_alive: bool) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    )
}

/// The interim answer to `Expect: 100-continue`.
pub const HTTP_CONTINUE: &str = "HTTP/1.1 100 Continue\r\n\r\n";

/// The server's verdict on an upload of `received` bytes: 200 with `verified <n> bytes` when
/// every byte was the content, else 422 with the offset of the first wrong byte.
pub fn http_upload_verdict(received: u64, first_wrong: Option<u64>, keep_alive: bool) -> String {
    let (status, body) = match first_wrong {
        None => ("200 OK", format!("verified {received} bytes\n")),
        Some(at) => (
            "422 Unprocessable Content",
            format!("mismatch at byte {at} of {received}\n"),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
}

/// The response to a request the server cannot serve.
pub fn http_error(reason: &str) -> String {
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_lines_round_trip() {
        for r in [
            Request::Echo {
                seed: 0xabc,
                from: 7,
            },
            Request::Interactive { seed: 1, from: 0 },
            Request::Bulk {
                seed: u64::MAX,
                size: 100_000_000,
            },
            Request::Download {
                name: "file-1.bin".into(),
                size: 5,
            },
        ] {
            let line = r.line();
            assert_eq!(
                parse_request(line.as_bytes()),
                Ok(Parsed::Done(r, line.len()))
            );
        }
    }

    #[test]
    fn partial_and_bad_requests() {
        assert_eq!(parse_request(b"HALAB bulk seed=1"), Ok(Parsed::Incomplete));
        assert!(parse_request(b"GET / HTTP/1.1\n").is_err());
        assert!(parse_request(b"HALAB bulk seed=zz size=1\n").is_err());
        assert!(parse_request(b"HALAB bulk seed=1\n").is_err());
        assert!(parse_request(b"HALAB download name=../etc size=1\n").is_err());
        assert!(parse_request(&[b'x'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn http_get_with_size_and_connection() {
        let req = b"GET /data.bin?size=1234 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nrest";
        let Ok(Parsed::Done(get, used)) = parse_http(req) else {
            panic!()
        };
        assert_eq!(get.path, "/data.bin");
        assert_eq!(get.size, 1234);
        assert!(!get.keep_alive);
        assert_eq!(&req[used..], b"rest");
        let Ok(Parsed::Done(get, _)) = parse_http(b"GET / HTTP/1.1\r\n\r\n") else {
            panic!()
        };
        assert_eq!((get.size, get.keep_alive), (DEFAULT_HTTP_SIZE, true));
        assert!(parse_http(b"POST / HTTP/1.1\r\n\r\n").is_err());
        assert!(
            parse_http(b"PUT /x HTTP/1.1\r\n\r\n").is_err(),
            "no Content-Length"
        );
        assert!(parse_http(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        let put =
            b"PUT /up.bin HTTP/1.1\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n";
        let Ok(Parsed::Done(put, _)) = parse_http(put) else {
            panic!()
        };
        assert_eq!(
            (put.method, put.path.as_str(), put.size, put.expect_continue),
            (HttpMethod::Put, "/up.bin", 5_000_000, true)
        );
        assert!(parse_http(b"GET /../x HTTP/1.1\r\n\r\n").is_err());
        assert_eq!(parse_http(b"GET / HTTP/1.1\r\n"), Ok(Parsed::Incomplete));
    }

    #[test]
    fn download_lines() {
        assert_eq!(
            parse_number_line(b"SIZE 42\n", "SIZE"),
            Ok(Parsed::Done(42, 8))
        );
        assert_eq!(
            parse_number_line(b"OFFSET 4", "OFFSET"),
            Ok(Parsed::Incomplete)
        );
        assert!(parse_number_line(b"OFFSET x\n", "OFFSET").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request(&bytes);
            let _ = parse_http(&bytes);
            let _ = parse_number_line(&bytes, "SIZE");
        }
    }
}
