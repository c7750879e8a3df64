//! Why a delay line could not be set up.

/// Why a delay line could not be set up (what was set up before is taken down again).
#[derive(Debug, thiserror::Error)]
pub enum LinkDelayError {
    #[error("a delay line needs a direction (egress, ingress or both)")]
    NoDirection,
    #[error("a delay line matches senders by MAC address on its way in only")]
    SourcesOnEgress,
    #[error("no free NFQUEUE among {first}..{last}")]
    NoFreeQueue {
        first: u16,
        last: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind NFQUEUE {queue}")]
    Bind {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the delay line's thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot make the delay line's stop signal")]
    StopSignal(#[source] std::io::Error),
    #[error("cannot run `{line}`")]
    Spawn {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{line}` failed ({status}): {stderr}")]
    Rule {
        line: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}
