//! Throughput of the measuring stick, without criterion: the content generator must not be
//! the bottleneck of a bulk transfer (issue 3, "must hold" 4: ≥ 0.8 of iperf3).
//!
//! Prints GB/s (10^9 bytes/s) for 64 MiB in 64 KiB chunks: `fill` (generate), `check`
//! (generate + compare, `first_mismatch`) and `StreamChecker::push` (the client's whole
//! per-byte work). Best of 7 rounds, after a warm-up round.

use halab_workload::content::Content;
use halab_workload::integrity::StreamChecker;
use std::hint::black_box;
use std::time::Instant;

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 64 << 10;
const ROUNDS: usize = 7;

fn best_gbps(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    TOTAL as f64 / best / 1e9
}

fn main() {
    let c = Content::new(0x5eed);
    let mut buf = vec![0u8; CHUNK];
    let fill = best_gbps(|| {
        for k in 0..TOTAL / CHUNK {
            c.fill((k * CHUNK) as u64, black_box(&mut buf));
        }
        black_box(&buf);
    });
    println!("content fill  : {fill:6.2} GB/s  (64 MiB in 64 KiB chunks)");

    // The check reads a stream that is really there: 64 MiB of content, 64 KiB at a time.
    let mut stream = vec![0u8; TOTAL];
    c.fill(0, &mut stream);
    let check = best_gbps(|| {
        for (k, chunk) in stream.chunks(CHUNK).enumerate() {
            let r = c.first_mismatch((k * CHUNK) as u64, black_box(chunk));
            assert!(r.is_none());
        }
    });
    println!("content check : {check:6.2} GB/s  (generate + compare)");

    let push = best_gbps(|| {
        let mut checker = StreamChecker::new(0x5eed, TOTAL as u64);
        for chunk in stream.chunks(CHUNK) {
            checker.push(black_box(chunk));
        }
        assert!(checker.finish().integrity_ok);
    });
    println!("checker push  : {push:6.2} GB/s  (StreamChecker, clean stream)");

    // Unaligned chunking costs a partial word per chunk.
    let odd = best_gbps(|| {
        let mut checker = StreamChecker::new(0x5eed, TOTAL as u64);
        for chunk in stream.chunks(CHUNK - 3) {
            checker.push(black_box(chunk));
        }
        assert!(checker.finish().integrity_ok);
    });
    println!("checker push  : {odd:6.2} GB/s  (unaligned 65533-byte chunks)");
}
