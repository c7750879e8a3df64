//! halab's own delay line, for kernels without netem (issue 15): a link's packets are queued to
//! user space (NFQUEUE, through iptables' NFQUEUE target) and let go when their time comes.
//!
//! - [`line`]: one direction's queue, sans-IO: delay, jitter (netem's reordering), bounds in
//!   packets and bytes, counters.
//! - [`worker`]: the thread running one direction: the queue's socket, the line, the timer.
//! - [`rules`]: the iptables rules that send a link's packets to the queues.
//! - [`stats`]: what a line reports.
//!
//! [`DelayLink::start`] binds a queue per direction (each its own thread and [`DelayLine`]),
//! then installs the rules; [`DelayLink::stop`] removes the rules first, then lets every packet
//! still held go, so nothing is lost. The fault that owns a `DelayLink` stops it when it is
//! reverted (request, lease, the agent's dead-man switch); dropping one stops it too. An agent
//! killed with SIGKILL runs no code: its rules stay, but `--queue-bypass` lets packets through
//! undelayed once its sockets are closed, and the namespace's deletion takes the rules.
//!
//! Limits (measured in `agents/benches/delay_line.rs` and ARCHITECTURE.md): a packet the host
//! itself sends stays charged to its socket while it waits here (netem orphans it), so TCP's
//! small-queue limit and a UDP socket's send buffer bound what a delayed host can have in
//! flight on its egress; packets entering the host, and packets it forwards, are not bound so.
//! Each packet's delay starts when the agent reads it from the queue, a few µs after the
//! kernel queued it.
//!
//! Everything here blocks (sockets, `iptables`, joins): callers on the agent's runtime use
//! `spawn_blocking`. The network namespace is the calling thread's.

pub mod error;
pub mod line;
pub mod rules;
pub mod stats;
pub mod worker;

use error::LinkDelayError;
use line::{Counters, DelayLine, Jitter, LineConfig};
pub use rules::Stage;
use rules::{PROGRAMS, Rule};
use stats::{DirectionStats, Way};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use worker::{StopSignal, Worker};

/// The delay lines' queue numbers: far above st-tcp's FIN hold (7), and tried in turn, so that
/// lines of several faults (each link its own) get queues of their own.
pub const QUEUE_FIRST: u16 = 19_000;
pub const QUEUE_LAST: u16 = 19_511;

/// Bytes of each packet the kernel copies to the agent: the line needs only the packet's
/// length, which the kernel adds when it cuts the copy short.
const COPY: u32 = 32;
/// The kernel holds at most this many packets per queue; twice the line's own bound, so that
/// the line, which counts its drops, is always the one that drops.
const KERNEL_QUEUE_FACTOR: u32 = 2;
/// The queue socket's receive buffer: room for tens of thousands of messages, so that a burst
/// arriving while the thread sends verdicts is not dropped.
const RCVBUF: usize = 32 << 20;
const BIND_TIMEOUT: Duration = Duration::from_secs(2);

/// What a delay line does and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub delay_ns: u64,
    pub jitter: Jitter,
    /// The link; `None`: every link but `lo`. Checked by the caller to be an interface name.
    pub interface: Option<String>,
    /// Delay what leaves the host.
    pub egress: bool,
    /// Delay what enters the host.
    pub ingress: bool,
    /// Where its rules go: a link's own delay, or a delay fault's (they add up).
    pub stage: Stage,
    /// Delay only what enters from these MAC addresses (checked by the caller; a link's delay
    /// by sender, `halab_protocol::link`); empty: everything. Ingress only.
    pub source_macs: Vec<String>,
    /// Each direction holds at most this many packets and bytes (a link's queue: beyond it,
    /// tail drop).
    pub max_packets: usize,
    pub max_bytes: u64,
    /// How close to a release its thread stops sleeping and spins (see [`worker`]).
    pub spin_ns: u64,
    /// The jitter's draws (each direction its own stream from it).
    pub seed: u64,
    /// Run the threads at real-time priority (SCHED_FIFO, [`halab_protocol::sys`]), so that a
    /// host's busy threads do not make releases late; they go on at normal priority where
    /// that is refused.
    pub realtime: bool,
}

impl Spec {
    /// A delay of `delay_ns` (± `jitter_ns`, uniform: netem's default) with the default bounds:
    /// 50 000 packets and 64 MiB per direction, far above a 1.25 MB bandwidth-delay product.
    pub fn new(delay_ns: u64, jitter_ns: u64) -> Spec {
        Spec {
            delay_ns,
            jitter: if jitter_ns == 0 {
                Jitter::None
            } else {
                Jitter::Uniform { ns: jitter_ns }
            },
            interface: None,
            egress: true,
            ingress: false,
            stage: Stage::Fault,
            source_macs: Vec::new(),
            max_packets: 50_000,
            max_bytes: 64 << 20,
            spin_ns: 50_000,
            seed: 0,
            realtime: false,
        }
    }

    fn ways(&self) -> Vec<Way> {
        let mut w = Vec::new();
        if self.egress {
            w.push(Way::Egress);
        }
        if self.ingress {
            w.push(Way::Ingress);
        }
        w
    }
}

/// One running direction.
struct Direction {
    way: Way,
    queue: u16,
    stop: Arc<StopSignal>,
    live: Arc<Mutex<Counters>>,
    thread: Option<std::thread::JoinHandle<DirectionStats>>,
}

/// A running delay line: its threads and its rules. Stopped by [`DelayLink::stop`] or on drop.
pub struct DelayLink {
    directions: Vec<Direction>,
    rules: Vec<Rule>,
    stopped: bool,
}

/// What a delay line did, when it was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    pub directions: Vec<DirectionStats>,
    /// Rules that could not be removed, and threads that ended in a panic.
    pub problems: Vec<String>,
}

impl DelayLink {
    /// Binds a queue and starts a thread per direction, then installs the rules that feed them
    /// (bound first: no packet meets a rule before someone listens). On any failure, what was
    /// set up is taken down again.
    pub fn start(spec: &Spec) -> Result<DelayLink, LinkDelayError> {
        let ways = spec.ways();
        if ways.is_empty() {
            return Err(LinkDelayError::NoDirection);
        }
        if !spec.source_macs.is_empty() && spec.egress {
            return Err(LinkDelayError::SourcesOnEgress);
        }
        let mut link = DelayLink {
            directions: Vec::new(),
            rules: Vec::new(),
            stopped: false,
        };
        for (i, way) in ways.into_iter().enumerate() {
            let queue = bind_free_queue(spec)?;
            let number = queue.queue();
            let line = DelayLine::new(
                LineConfig {
                    delay_ns: spec.delay_ns,
                    jitter: spec.jitter,
                    max_packets: spec.max_packets,
                    max_bytes: spec.max_bytes,
                },
                spec.seed.wrapping_add(i as u64),
            );
            let stop = Arc::new(StopSignal::new().map_err(LinkDelayError::StopSignal)?);
            let live = Arc::new(Mutex::new(Counters::default()));
            let worker = Worker {
                queue,
                line,
                stop: stop.clone(),
                live: live.clone(),
                spin_ns: spec.spin_ns,
                realtime: spec.realtime,
                stats: DirectionStats::new(way, number),
            };
            let thread = std::thread::Builder::new()
                .name(format!("delay-{}", way.name()))
                .spawn(move || worker.run())
                .map_err(LinkDelayError::Thread)?;
            link.directions.push(Direction {
                way,
                queue: number,
                stop,
                live,
                thread: Some(thread),
            });
        }
        let sources: Vec<Option<String>> = if spec.source_macs.is_empty() {
            vec![None]
        } else {
            spec.source_macs.iter().cloned().map(Some).collect()
        };
        for d in &link.directions {
            for program in PROGRAMS {
                for source_mac in &sources {
                    let rule = Rule {
                        program,
                        stage: spec.stage,
                        way: d.way,
                        interface: spec.interface.clone(),
                        source_mac: source_mac.clone(),
                        queue: d.queue,
                    };
                    rule.add()?;
                    link.rules.push(rule);
                }
            }
        }
        Ok(link)
    }

    /// Each direction's way and queue number.
    pub fn queues(&self) -> Vec<(Way, u16)> {
        self.directions.iter().map(|d| (d.way, d.queue)).collect()
    }

    /// Each direction's counters as of its thread's last turn.
    pub fn live(&self) -> Vec<(Way, Counters)> {
        self.directions
            .iter()
            .map(|d| {
                let c = d
                    .live
                    .lock()
                    .map(|c| *c)
                    .unwrap_or_else(|p| *p.into_inner());
                (d.way, c)
            })
            .collect()
    }

    /// Removes the rules, then lets every held packet go and ends the threads.
    pub fn stop(mut self) -> StopReport {
        self.shutdown()
    }

    fn shutdown(&mut self) -> StopReport {
        self.stopped = true;
        let mut problems = Vec::new();
        // Rules first: from then on nothing new is queued, and what is held can all go.
        for rule in self.rules.drain(..).rev() {
            if let Err(e) = rule.delete() {
                problems.push(crate::error::chain(&e));
            }
        }
        for d in &self.directions {
            d.stop.raise();
        }
        let mut directions = Vec::new();
        for d in &mut self.directions {
            let Some(t) = d.thread.take() else { continue };
            match t.join() {
                Ok(s) => directions.push(s),
                Err(_) => problems.push(format!(
                    "the {} line's thread (NFQUEUE {}) panicked",
                    d.way.name(),
                    d.queue
                )),
            }
        }
        StopReport {
            directions,
            problems,
        }
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        if !self.stopped {
            // Nothing may stay behind: a link dropped without `stop` (a failed start, a
            // panic unwinding) is stopped here, blocking for the few ms it takes.
            let r = self.shutdown();
            if !r.problems.is_empty() {
                tracing::error!(problems = %r.problems.join("; "), "delay line removed with problems");
            }
        }
    }
}

/// Binds the first free queue of [`QUEUE_FIRST`]..=[`QUEUE_LAST`]. A queue bound by another
/// socket answers EPERM (EBUSY from some kernels): the next is tried.
fn bind_free_queue(spec: &Spec) -> Result<crate::netfilter_queue::BlockingQueue, LinkDelayError> {
    use crate::netfilter_queue::{BlockingQueue, Config, CopyMode};
    let config = Config {
        copy: CopyMode::Packet(COPY),
        max_len: Some(
            u32::try_from(spec.max_packets)
                .unwrap_or(u32::MAX)
                .saturating_mul(KERNEL_QUEUE_FACTOR),
        ),
        gso: true,
    };
    let mut last = None;
    for queue in QUEUE_FIRST..=QUEUE_LAST {
        match BlockingQueue::bind(queue, &config, RCVBUF, BIND_TIMEOUT) {
            Ok(q) => return Ok(q),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EBUSY)) => last = Some(e),
            Err(source) => return Err(LinkDelayError::Bind { queue, source }),
        }
    }
    Err(LinkDelayError::NoFreeQueue {
        first: QUEUE_FIRST,
        last: QUEUE_LAST,
        source: last.unwrap_or_else(|| std::io::Error::other("no queue tried")),
    })
}
