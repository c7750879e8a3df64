//! What a run's clients report while they run ([`Live`]), read by the session for telemetry and
//! progress marks.

use halab_protocol::ClientEvent;
use halab_workload::meter::ConnEvent;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a run's clients report while they run, for telemetry: the bytes all connections
/// have received, how far they have got through their streams, and connection events not yet
/// sent.
#[derive(Debug)]
pub struct Live {
    pub bytes: AtomicU64,
    /// Distinct stream offsets received by all connections (see
    /// [`halab_workload::integrity::StreamChecker::bytes_seen`]): the run's progress, which
    /// marks are taken against.
    pub progress: AtomicU64,
    /// The progress at which `mark_reached` is notified; `u64::MAX` when no mark is armed.
    next_mark: AtomicU64,
    pub mark_reached: tokio::sync::Notify,
    events: std::sync::Mutex<Vec<ClientEvent>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            bytes: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            next_mark: AtomicU64::new(u64::MAX),
            mark_reached: tokio::sync::Notify::new(),
            events: std::sync::Mutex::default(),
        }
    }
}

impl Live {
    /// Notifies `mark_reached` once progress reaches `at` (at once if it already has); `None`
    /// disarms.
    pub fn arm_mark(&self, at: Option<u64>) {
        let at = at.unwrap_or(u64::MAX);
        self.next_mark.store(at, Ordering::SeqCst);
        // Progress may have passed the mark before it was armed.
        if self.progress.load(Ordering::SeqCst) >= at {
            self.mark_reached.notify_one();
        }
    }

    /// Adds `n` to the progress; true when that reached the armed mark (the caller should
    /// yield, see `Client::payload` in `workload::connection`).
    pub(crate) fn add_progress(&self, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        let now = self.progress.fetch_add(n, Ordering::SeqCst) + n;
        if now >= self.next_mark.load(Ordering::SeqCst) {
            // One stored permit at most, however often this is called before it is taken.
            self.mark_reached.notify_one();
            return true;
        }
        false
    }

    /// The events since the last call.
    pub fn take_events(&self) -> Vec<ClientEvent> {
        // A poisoned lock only means a client task panicked while pushing; the list is intact.
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn push(&self, connection: u32, at_ns: u64, event: ConnEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ClientEvent {
                connection,
                at_ns,
                event,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_mark_is_notified_when_reached_also_when_armed_late() {
        let live = Live::default();
        live.arm_mark(Some(100));
        live.add_progress(60);
        let wait = tokio::time::timeout(Duration::from_millis(20), live.mark_reached.notified());
        assert!(wait.await.is_err(), "notified before the mark");
        live.add_progress(40);
        tokio::time::timeout(Duration::from_secs(5), live.mark_reached.notified())
            .await
            .expect("notified at the mark");
        // Progress already beyond the next mark when it is armed.
        live.add_progress(50);
        live.arm_mark(Some(120));
        tokio::time::timeout(Duration::from_secs(5), live.mark_reached.notified())
            .await
            .expect("notified on arming");
        live.arm_mark(None);
        live.add_progress(1_000);
        let wait = tokio::time::timeout(Duration::from_millis(20), live.mark_reached.notified());
        assert!(wait.await.is_err(), "notified while disarmed");
    }
}
