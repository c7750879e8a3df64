//! halab's measuring stick (DESIGN §7): content that is a pure function of (stream seed,
//! offset), a checker that counts and locates every lost, duplicated and corrupted byte, and a
//! meter for throughput, stalls and request latency. Everything here takes bytes and
//! timestamps and does no I/O.
//!
//! - [`content`]: the bytes of stream `seed` at any offset, self-locating blocks.
//! - [`integrity`]: [`StreamChecker`], byte-exact accounting of a received stream.
//! - [`meter`]: [`Meter`], throughput buckets, the longest stall, T_resume, latencies, events.
//!
//! No public function panics on any input; each module documents how.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod content;
pub mod integrity;
pub mod meter;

pub use content::Content;
pub use integrity::{ByteRange, IntegrityReport, Progress, StreamChecker};
pub use meter::{ConnEvent, LatencySummary, Meter, MeterSummary, Sample};
