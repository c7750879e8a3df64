//! The client under st-tcp (DESIGN §5): an unmodified client of the service address that
//! never reconnects; the failover is the backup's business, under the client's one connection.
//! A failure ends the connection with its error.

use halab_protocol::ClientSpec;

/// Idle and connect timeout of a client under st-tcp: the takeover happens under it, on the
/// same connection, so only a failed takeover may end it.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;

/// The spec an st-tcp client runs with: the service address only, one attempt, and timeouts
/// of at least [`IDLE_TIMEOUT_MS`].
pub fn spec(spec: &ClientSpec) -> ClientSpec {
    let mut s = spec.clone();
    s.servers.truncate(1);
    s.max_attempts = 1;
    s.idle_timeout_ms = s.idle_timeout_ms.max(IDLE_TIMEOUT_MS);
    // Connecting, it is the kernel's client: its SYN is sent again (1 s, 3 s, 7 s, ...
    // after the first) until someone answers for the service address. A SYN lost to a
    // primary that failed before answering reaches the backup once it took over.
    s.connect_timeout_ms = s.connect_timeout_ms.max(IDLE_TIMEOUT_MS);
    s
}
