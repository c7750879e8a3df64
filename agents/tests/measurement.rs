//! The measuring stick checked against known truth: the real workload server and the real
//! clients, with a relay between them that drops, duplicates or corrupts chosen byte ranges,
//! and a server paused for a known time. Everything runs on loopback.

use halab_agent::workload::client;
use halab_protocol::{ClientResult, ClientSpec, Workload};
use halab_workload::ByteRange;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A workload server process on loopback, killed on drop.
struct Server {
    child: Child,
    port: u16,
    http_port: u16,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_halab-agent"))
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--http-port",
                "0",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("ready"), "{line}");
        let port = words.next().unwrap().parse().unwrap();
        let http_port = words.next().unwrap().parse().unwrap();
        Server {
            child,
            port,
            http_port,
        }
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(workload: Workload, size: u64, port: u16, http_port: u16) -> ClientSpec {
    ClientSpec {
        workload,
        seed: 0x1234_5678,
        size,
        connections: 1,
        servers: vec!["127.0.0.1".into()],
        workload_port: port,
        http_port,
        idle_timeout_ms: 5000,
        connect_timeout_ms: 1000,
        max_attempts: 1,
        deadline_ms: 60_000,
        mode: Default::default(),
        progress_marks_ppm: Vec::new(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn run_client(spec: ClientSpec) -> ClientResult {
    client::run(
        spec,
        CancellationToken::new(),
        Arc::new(client::Live::default()),
    )
    .await
}

/// What the relay does to the server→client byte stream, by stream offset.
#[derive(Clone, Default)]
struct Mangle {
    drop: Option<(u64, u64)>,
    duplicate: Option<(u64, u64)>,
    corrupt: Option<(u64, u64)>,
}

/// A one-connection TCP relay on loopback that forwards client→server bytes untouched and
/// applies `mangle` to the server→client stream. Returns its port.
async fn relay(server_port: u16, mangle: Mangle) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(("127.0.0.1", server_port))
            .await
            .unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
            let _ = sw.shutdown().await;
        });
        // The whole response is held, mangled, then sent: the ranges are exact by construction.
        let mut all = Vec::new();
        sr.read_to_end(&mut all).await.unwrap();
        let mut out = Vec::with_capacity(all.len());
        for (i, b) in all.iter().enumerate() {
            let off = i as u64;
            if mangle.drop.is_some_and(|(a, z)| off >= a && off < z) {
                continue;
            }
            let b = if mangle.corrupt.is_some_and(|(a, z)| off >= a && off < z) {
                b ^ 0xA5
            } else {
                *b
            };
            out.push(b);
            if let Some((a, z)) = mangle.duplicate
                && off + 1 == z
            {
                out.extend_from_slice(&all[a as usize..z as usize]);
            }
        }
        cw.write_all(&out).await.unwrap();
        let _ = cw.shutdown().await;
    });
    port
}

fn bulk_through_relay(mangle: Mangle, size: u64) -> halab_protocol::ConnectionResult {
    let server = Server::start();
    let rt = rt();
    let mut result = rt.block_on(async {
        let port = relay(server.port, mangle).await;
        run_client(spec(Workload::Bulk, size, port, server.http_port)).await
    });
    result.connections.remove(0)
}

const SIZE: u64 = 3_000_000;

#[test]
fn a_clean_bulk_transfer_is_exact() {
    let c = bulk_through_relay(Mangle::default(), SIZE);
    assert!(c.integrity.integrity_ok, "{:?}", c.integrity);
    assert_eq!(c.integrity.bytes_received, SIZE);
    assert_eq!(c.error, None);
}

#[test]
fn dropped_range_is_counted_and_located_exactly() {
    let c = bulk_through_relay(
        Mangle {
            drop: Some((1_000_003, 1_004_700)),
            ..Default::default()
        },
        SIZE,
    );
    let i = &c.integrity;
    assert_eq!(i.bytes_lost, 4_697, "{i:?}");
    assert_eq!(
        i.lost,
        vec![ByteRange {
            offset: 1_000_003,
            len: 4_697
        }]
    );
    assert_eq!((i.bytes_duplicated, i.bytes_corrupted), (0, 0));
    assert!(!i.integrity_ok);
}

#[test]
fn duplicated_range_is_counted_and_located_exactly() {
    let c = bulk_through_relay(
        Mangle {
            duplicate: Some((2_000_017, 2_000_917)),
            ..Default::default()
        },
        SIZE,
    );
    let i = &c.integrity;
    assert_eq!(i.bytes_duplicated, 900, "{i:?}");
    assert_eq!(
        i.duplicated,
        vec![ByteRange {
            offset: 2_000_017,
            len: 900
        }]
    );
    assert_eq!((i.bytes_lost, i.bytes_corrupted), (0, 0));
}

#[test]
fn corrupted_range_is_counted_and_located_exactly() {
    let c = bulk_through_relay(
        Mangle {
            corrupt: Some((500_001, 500_051)),
            ..Default::default()
        },
        SIZE,
    );
    let i = &c.integrity;
    assert_eq!(i.bytes_corrupted, 50, "{i:?}");
    assert_eq!(
        i.corrupted,
        vec![ByteRange {
            offset: 500_001,
            len: 50
        }]
    );
    assert_eq!((i.bytes_lost, i.bytes_duplicated), (0, 0));
}

#[test]
fn all_three_at_once() {
    let c = bulk_through_relay(
        Mangle {
            drop: Some((100_000, 100_500)),
            duplicate: Some((1_500_000, 1_502_048)),
            corrupt: Some((2_500_000, 2_500_003)),
        },
        SIZE,
    );
    let i = &c.integrity;
    assert_eq!(
        (i.bytes_lost, i.bytes_duplicated, i.bytes_corrupted),
        (500, 2_048, 3),
        "{i:?}"
    );
    assert_eq!(i.lost[0].offset, 100_000);
    assert_eq!(i.duplicated[0].offset, 1_500_000);
    assert_eq!(i.corrupted[0].offset, 2_500_000);
}

#[test]
fn a_server_paused_500_ms_gives_a_500_ms_stall() {
    // Interactive: request, 10 KB reply, next request. Once replies flow, the server is
    // stopped for 500 ms: the next request waits in its socket, and no byte is in flight that
    // could arrive during the pause, so the client's longest gap is the pause itself.
    let server = Server::start();
    let rt = rt();
    let live = Arc::new(client::Live::default());
    let s = spec(Workload::Interactive, 0, server.port, server.http_port);
    let run = rt.spawn(client::run(s, CancellationToken::new(), live.clone()));
    while live.bytes.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        std::hint::spin_loop();
    }
    server.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    server.signal(libc::SIGCONT);
    let result = rt.block_on(run).unwrap();
    let c = &result.connections[0];
    assert!(c.integrity.integrity_ok, "{:?} {:?}", c.integrity, c.error);
    let stall = c.meter.stall_ms.expect("a stall");
    eprintln!("stall measured: {stall:.1} ms");
    assert!((470.0..=530.0).contains(&stall), "stall {stall} ms");
}

#[test]
fn every_workload_is_exact_on_loopback() {
    let server = Server::start();
    let rt = rt();
    for w in Workload::ALL {
        let size = if w.has_size() { 2_500_000 } else { 0 };
        let r = rt.block_on(run_client(spec(w, size, server.port, server.http_port)));
        let c = &r.connections[0];
        assert!(
            c.integrity.integrity_ok,
            "{w}: {:?} {:?}",
            c.integrity, c.error
        );
        assert_eq!(c.error, None, "{w}");
        let expected = match w {
            Workload::Echo => 100 * 150,
            Workload::Interactive => 100 * 10240,
            _ => size,
        };
        assert_eq!(c.integrity.bytes_received, expected, "{w}");
        if matches!(w, Workload::Echo | Workload::Interactive) {
            assert_eq!(
                c.meter.latency_us.as_ref().map(|l| l.count),
                Some(100),
                "{w}"
            );
        }
    }
}
