//! halab-agent: one per testbed host. It speaks the control protocol on stdin/stdout, so the
//! same binary works behind `ip netns exec` and behind an SSH exec channel, with no port of its
//! own (DESIGN §3).

pub mod capabilities;
pub mod error;
pub mod faults;
pub mod host_stats;
pub mod iface;
pub mod link_delay;
pub mod link_shape;
pub mod log_forward;
pub mod modes;
pub mod netfilter_queue;
pub mod netlink;
pub mod role_ctx;
pub mod roles;
pub mod server_process;
pub mod session;
pub mod sockopt;
pub mod workload;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Capacity of the queue of messages to the console.
const OUTBOUND_QUEUE: usize = 1024;

/// Runs the agent on this process's stdin/stdout until the channel ends; returns the exit code.
pub async fn run() -> i32 {
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALAB_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(log_forward::ForwardLayer::new(tx.clone()))
        .try_init();

    // A request to stop, not the owner of stopping: `session::serve` acts on it on its one
    // exit path (see there), and this returns its exit code to `main`, which exits with it.
    let stop = CancellationToken::new();
    spawn_signal_watch(stop.clone());
    let exit = session::serve(tokio::io::stdin(), tokio::io::stdout(), (tx, rx), stop).await;
    if let session::Exit::ProtocolError(e) = &exit {
        eprintln!("halab-agent: control channel: {e}");
    }
    exit.code()
}

/// SIGTERM, SIGINT and SIGHUP stop the agent the same way a closed channel does.
fn spawn_signal_watch(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        stop.cancel();
    });
}
