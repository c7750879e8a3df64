//! The thread that runs one direction of a delay line: it reads the queue's packets, offers each
//! to its [`DelayLine`], and gives the kernel its verdict when the line lets the packet go.
//!
//! Why a thread of its own rather than a tokio task: tokio's timer has a 1 ms resolution, which
//! alone would make the added delay up to 1 ms late (0.5 ms on average); and a link's packet
//! rate is better served by a loop that takes 64 messages per system call and sends all of its
//! verdicts in one than by a task sharing the agent's runtime. The thread sleeps in ppoll(2),
//! whose timeout is a high-resolution timer (the thread's timer slack set to 1 ns), until the
//! next release is `spin_ns` away, then spins, looking for new packets meanwhile, until it is
//! due.

use super::line::{DelayLine, Offer, Released};
use super::stats::{DirectionStats, kernel_drops};
use crate::netfilter_queue::{BlockingQueue, MessageRef, RECV_BATCH, Verdict};
use halab_protocol::mono_ns;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tells a worker to stop: a flag it looks at on every turn, and an eventfd that wakes it from
/// its sleep.
pub struct StopSignal {
    raised: AtomicBool,
    fd: OwnedFd,
}

impl StopSignal {
    pub fn new() -> io::Result<StopSignal> {
        // SAFETY: eventfd(2) returns a new descriptor or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StopSignal {
            raised: AtomicBool::new(false),
            // SAFETY: a fresh descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) of 8 bytes to an eventfd we own. It cannot fail short of the
        // counter overflowing, and the flag above is what the worker reads anyway.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr() as *const _, 8) };
    }

    fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }
}

/// One direction's loop and what it owns.
pub struct Worker {
    pub queue: BlockingQueue,
    pub line: DelayLine,
    pub stop: Arc<StopSignal>,
    /// The line's counters as of its last turn, for whoever watches it run.
    pub live: Arc<Mutex<super::line::Counters>>,
    /// How close to a release the thread stops sleeping and spins.
    pub spin_ns: u64,
    pub realtime: bool,
    pub stats: DirectionStats,
}

impl Worker {
    /// Runs until stopped; then lets every packet it holds go and reports.
    pub fn run(mut self) -> DirectionStats {
        // SAFETY: prctl(2) on the calling thread: its timer slack, in ns. The default (50 µs)
        // would be added to every sleep.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        if self.realtime
            && let Err(e) = halab_protocol::sys::enter_realtime()
        {
            tracing::debug!(error = %e, "delay line stays at normal priority");
        }
        if let Err(e) = self.serve() {
            // From here on the rule's `--queue-bypass` lets packets pass undelayed once the
            // socket is closed (below, when the worker ends).
            tracing::error!(queue = self.queue.queue(), error = %e, "delay line failed");
            self.stats.failure = Some(e.to_string());
        }
        self.drain();
        self.stats.counters = self.line.counters();
        // thread-self: /proc/net is the process's namespace, and this thread's may differ (a
        // benchmark runs the line in a namespace a thread entered). Read a few times: one
        // stop in 16 found its queue missing from the file while the link's other direction
        // was stopping; the report says why when it stays missing.
        const PROC: &str = "/proc/thread-self/net/netfilter/nfnetlink_queue";
        let queue = self.queue.queue();
        let mut why = String::new();
        for _ in 0..3 {
            match std::fs::read_to_string(PROC) {
                Ok(text) => match kernel_drops(&text, queue) {
                    Some(n) => {
                        self.stats.kernel_dropped = Some(n);
                        break;
                    }
                    None => why = format!("queue {queue} not listed in {PROC}: {:?}", text.trim()),
                },
                Err(e) => why = format!("{PROC}: {e}"),
            }
        }
        if self.stats.kernel_dropped.is_none() {
            self.stats.kernel_dropped_unknown = Some(why);
        }
        self.stats
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut verdicts: Vec<(u32, Verdict)> = Vec::with_capacity(1024);
        let mut due: Vec<Released> = Vec::with_capacity(1024);
        let fds = [self.queue.fd(), self.stop.fd.as_raw_fd()];
        loop {
            // Take every message waiting, a batch at a time, releasing what falls due between
            // batches so that a flood of arrivals does not hold up departures.
            loop {
                let line = &mut self.line;
                let mut refused = 0;
                // Stamped once the batch is in (never before a packet arrived: no packet may
                // leave early), once per batch (a clock read per packet would cost more than
                // the spread it measures).
                let mut now = None;
                let batch = self.queue.recv_batch(|m| match m {
                    MessageRef::Packet(p) => {
                        let now = *now.get_or_insert_with(mono_ns);
                        if line.offer(now, p.id, p.len) == Offer::Dropped {
                            verdicts.push((p.id, Verdict::Drop));
                        }
                    }
                    MessageRef::Ack(e) if e != 0 => refused += 1,
                    _ => {}
                })?;
                self.stats.verdict_errors += refused;
                self.stats.truncated += batch.truncated as u64;
                self.release(&mut verdicts, &mut due)?;
                if batch.datagrams < RECV_BATCH {
                    break;
                }
            }
            if let Ok(mut live) = self.live.lock() {
                *live = self.line.counters();
            }
            if self.stop.is_raised() {
                return Ok(());
            }
            let now = mono_ns();
            match self.line.next_release_ns() {
                Some(t) if t <= now + self.spin_ns => std::hint::spin_loop(),
                next => wait(fds, next.map(|t| t - now - self.spin_ns))?,
            }
        }
    }

    /// Sends the verdicts gathered, with an accept for every packet due now.
    fn release(
        &mut self,
        verdicts: &mut Vec<(u32, Verdict)>,
        due: &mut Vec<Released>,
    ) -> io::Result<()> {
        let now = mono_ns();
        due.clear();
        self.line.due_into(now, due);
        for r in due.iter() {
            verdicts.push((r.id, Verdict::Accept));
            self.stats.lateness.record(now.saturating_sub(r.release_ns));
        }
        if !verdicts.is_empty() {
            self.queue.send_verdicts(verdicts)?;
            verdicts.clear();
        }
        Ok(())
    }

    /// The line is being taken down (its rules are gone): every packet it holds goes now, and
    /// so does every packet the kernel queued before the rules went, until the queue has been
    /// quiet for a few ms. Nothing is lost.
    fn drain(&mut self) {
        let mut verdicts: Vec<(u32, Verdict)> = self
            .line
            .drain()
            .into_iter()
            .map(|id| (id, Verdict::Accept))
            .collect();
        if let Err(e) = self.queue.send_verdicts(&verdicts) {
            tracing::error!(queue = self.queue.queue(), error = %e, "delay line: held packets not let go");
            return;
        }
        let mut quiet = 0;
        while quiet < 3 {
            verdicts.clear();
            let got = self.queue.recv_batch(|m| {
                if let MessageRef::Packet(p) = m {
                    verdicts.push((p.id, Verdict::Accept));
                }
            });
            let Ok(batch) = got else { break };
            self.stats.passed_at_stop += verdicts.len() as u64;
            if self.queue.send_verdicts(&verdicts).is_err() {
                break;
            }
            if batch.datagrams == 0 {
                quiet += 1;
                let _ = wait([self.queue.fd(), self.queue.fd()], Some(2_000_000));
            } else {
                quiet = 0;
            }
        }
    }
}

/// Sleeps until one of `fds` is readable or `timeout_ns` (none: no limit) has passed.
fn wait(fds: [RawFd; 2], timeout_ns: Option<u64>) -> io::Result<()> {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ts = timeout_ns.map(|ns| {
        let d = Duration::from_nanos(ns);
        libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        }
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: ppoll(2) on two pollfds of this frame, with a timeout of this frame or none, and
    // no signal mask.
    let n = unsafe { libc::ppoll(p.as_mut_ptr(), 2, tsp, std::ptr::null()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
