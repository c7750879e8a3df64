//! The logger role (DESIGN §5 st-tcp step 5; thesis §3.4): a bounded in-memory ring of the
//! client segments it taps on the service hub, from which the backup fetches bytes its own
//! capture missed. Requests and answers are UDP datagrams on [`LOGGER_PORT`], each sealed with
//! the testbed's key ([`halab_protocol::sealed`]: magic · body · HMAC-SHA256):
//!
//! - request: `HLRQ`, client address (4), client port (2), service port (2), first sequence
//!   number (4), length (4) — all big-endian;
//! - answer, one per stored segment overlapping the range: `HLRP`, the same key (8), the
//!   segment's sequence number (4), its bytes.
//!
//! A forged answer would put bytes the client never sent into a replica, so answers are checked
//! before anything is read from them; a forged request is refused too. Replays need no guard:
//! a replayed request only repeats answers to the backup, and a replayed answer fills bytes
//! already filled with the same bytes.

use super::events::emit;
use super::start_error::{self, StartError};
use super::tap::Tap;
use super::tracker::{ConnKey, parse_frame};
use crate::role_ctx::{RoleCtx, StartedRole};
use halab_protocol::modes::st_tcp::{Channel, Event, LOGGER_PORT, StTcpConfig};
use halab_protocol::mono_ns;
use halab_protocol::sealed::Key;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

/// Bytes of client payload the ring keeps at most.
pub const RING_BYTES: usize = 32 << 20;
/// Largest answer payload (a sealed UDP datagram, its header and tag aside).
const MAX_ANSWER: usize = 59_000;
const REQUEST_MAGIC: &[u8; 4] = b"HLRQ";
const ANSWER_MAGIC: &[u8; 4] = b"HLRP";

/// A request for client bytes `[seq, seq + len)` of connection `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub key: ConnKey,
    pub seq: u32,
    pub len: u32,
}

fn put_key(out: &mut Vec<u8>, k: &ConnKey) {
    out.extend_from_slice(&k.client.octets());
    out.extend_from_slice(&k.client_port.to_be_bytes());
    out.extend_from_slice(&k.port.to_be_bytes());
}

fn get_key(b: &[u8]) -> Option<ConnKey> {
    let b = b.get(..8)?;
    Some(ConnKey {
        client: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        client_port: u16::from_be_bytes([b[4], b[5]]),
        port: u16::from_be_bytes([b[6], b[7]]),
    })
}

impl Request {
    pub fn encode(&self, mac: &Key) -> Vec<u8> {
        let mut body = Vec::with_capacity(16);
        put_key(&mut body, &self.key);
        body.extend_from_slice(&self.seq.to_be_bytes());
        body.extend_from_slice(&self.len.to_be_bytes());
        mac.seal(REQUEST_MAGIC, &body)
    }

    /// The request in a datagram sealed with `mac`; `None` for anything else.
    pub fn decode(mac: &Key, datagram: &[u8]) -> Option<Request> {
        let b = mac.open(REQUEST_MAGIC, datagram).ok()?;
        if b.len() != 16 {
            return None;
        }
        Some(Request {
            key: get_key(b)?,
            seq: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            len: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }
}

/// An answer: bytes of `key` starting at sequence number `seq`.
pub fn encode_answer(mac: &Key, key: &ConnKey, seq: u32, bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + bytes.len());
    put_key(&mut body, key);
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(bytes);
    mac.seal(ANSWER_MAGIC, &body)
}

/// The answer in a datagram sealed with `mac`; `None` for anything else (forged included).
pub fn decode_answer<'a>(mac: &Key, datagram: &'a [u8]) -> Option<(ConnKey, u32, &'a [u8])> {
    let b = mac.open(ANSWER_MAGIC, datagram).ok()?;
    if b.len() < 12 {
        return None;
    }
    Some((
        get_key(b)?,
        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        &b[12..],
    ))
}

/// The ring of tapped client segments (sans-IO).
#[derive(Debug, Default)]
pub struct Ring {
    segments: VecDeque<(ConnKey, u32, Vec<u8>)>,
    bytes: usize,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            segments: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    pub fn push(&mut self, key: ConnKey, seq: u32, payload: &[u8]) {
        if payload.is_empty() || payload.len() > self.cap {
            return;
        }
        self.bytes += payload.len();
        self.segments.push_back((key, seq, payload.to_vec()));
        while self.bytes > self.cap {
            match self.segments.pop_front() {
                Some((_, _, b)) => self.bytes -= b.len(),
                None => break,
            }
        }
    }

    /// The stored pieces of `[req.seq, req.seq + req.len)`: (sequence number, bytes), each at
    /// most [`MAX_ANSWER`] long.
    pub fn lookup(&self, req: &Request) -> Vec<(u32, &[u8])> {
        let mut out = Vec::new();
        for (k, seq, b) in &self.segments {
            if *k != req.key {
                continue;
            }
            // Offsets relative to the request's start, in wrapping sequence space.
            let start = seq.wrapping_sub(req.seq) as i32 as i64;
            let end = start + b.len() as i64;
            let (lo, hi) = (start.max(0), end.min(req.len as i64));
            if lo >= hi {
                continue;
            }
            let part = &b[(lo - start) as usize..(hi - start) as usize];
            for (i, chunk) in part.chunks(MAX_ANSWER).enumerate() {
                let s = req
                    .seq
                    .wrapping_add(lo as u32)
                    .wrapping_add((i * MAX_ANSWER) as u32);
                out.push((s, chunk));
            }
        }
        out
    }
}

pub async fn start(ctx: RoleCtx, cfg: StTcpConfig) -> Result<StartedRole, StartError> {
    let vip = start_error::vip(&cfg.vip)?;
    let mut tap = Tap::open(&cfg.service_iface, vip).map_err(|source| StartError::Tap {
        iface: cfg.service_iface.clone(),
        source,
    })?;
    let sock = tokio::net::UdpSocket::bind(("0.0.0.0", LOGGER_PORT))
        .await
        .map_err(StartError::LoggerSocket)?;
    let mac = Key::from_hex(&cfg.key_hex).map_err(StartError::Key)?;
    let cancel = ctx.cancel;
    let outbound = ctx.outbound;
    let ports = cfg.service_ports.clone();
    let task = tokio::spawn(async move {
        let mut ring = Ring::new(RING_BYTES);
        let mut buf = vec![0u8; 2048];
        let mut forged = 0u64;
        let mut report = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = report.tick(), if forged > 0 => {
                    emit(&outbound, Event::Refused {
                        at_ns: mono_ns(),
                        channel: Channel::Logger,
                        forged: std::mem::take(&mut forged),
                        replayed: 0,
                    }).await;
                }
                r = tap.next_batch(|f| {
                    if let Some(seg) = parse_frame(f)
                        && seg.dst == vip
                        && ports.contains(&seg.dport)
                    {
                        let key = ConnKey { client: seg.src, client_port: seg.sport, port: seg.dport };
                        ring.push(key, seg.seq, seg.payload);
                    }
                }) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "st-tcp logger: tap failed");
                        break;
                    }
                }
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let Some(req) = Request::decode(&mac, &buf[..n]) else {
                        forged += 1;
                        continue;
                    };
                    for (seq, bytes) in ring.lookup(&req) {
                        let _ = sock.send_to(&encode_answer(&mac, &req.key, seq, bytes), from).await;
                    }
                }
            }
        }
    });
    Ok(StartedRole {
        task,
        detail: Some("st-tcp logger: segment ring".into()),
        commands: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: ConnKey = ConnKey {
        client: Ipv4Addr::new(10, 0, 0, 10),
        client_port: 4000,
        port: 7070,
    };

    #[test]
    fn the_ring_answers_overlaps_across_wraparound_and_forgets_the_oldest() {
        let mut r = Ring::new(20);
        r.push(K, u32::MAX - 4, b"abcdefghij"); // seq ..MAX-4 .. +5 (wraps)
        r.push(K, 5, b"klmno");
        let got = r.lookup(&Request {
            key: K,
            seq: u32::MAX - 1,
            len: 10,
        });
        assert_eq!(got, vec![(u32::MAX - 1, &b"defghij"[..]), (5, &b"klm"[..])]);
        r.push(K, 10, b"pqrstuvw"); // 23 bytes > 20: the first segment goes
        let none = r.lookup(&Request {
            key: K,
            seq: u32::MAX - 4,
            len: 3,
        });
        assert!(none.is_empty());
        let other = ConnKey { port: 8080, ..K };
        assert!(
            r.lookup(&Request {
                key: other,
                seq: 5,
                len: 5
            })
            .is_empty()
        );
    }

    #[test]
    fn requests_and_answers_round_trip_and_forged_or_garbage_ones_are_refused() {
        let mac = Key::from_hex("a1b2").unwrap();
        let forger = Key::from_hex("a1b3").unwrap();
        let q = Request {
            key: K,
            seq: 77,
            len: 1000,
        };
        assert_eq!(Request::decode(&mac, &q.encode(&mac)), Some(q));
        assert_eq!(Request::decode(&mac, &q.encode(&mac)[..19]), None);
        assert_eq!(Request::decode(&mac, &q.encode(&forger)), None);
        let a = encode_answer(&mac, &K, 9, b"xyz");
        assert_eq!(decode_answer(&mac, &a), Some((K, 9, &b"xyz"[..])));
        assert_eq!(decode_answer(&mac, b"HLRP"), None);
        assert_eq!(
            decode_answer(&mac, &encode_answer(&forger, &K, 9, b"xyz")),
            None
        );
        // A request is not an answer, even under the right key.
        assert_eq!(decode_answer(&mac, &q.encode(&mac)), None);
    }
}
