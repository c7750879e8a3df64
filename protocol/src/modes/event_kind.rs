//! The kinds of mode events, shared by every mode (a leaf: the modes' event types map onto it).

use serde::{Deserialize, Serialize};

/// The kinds of mode events, over every mode: what a run's record and the dashboard call them.
/// Each mode's events map onto these (`Event::kind`); the console's figures are defined on
/// kinds, not on one mode's variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A failure declared (T_detect).
    Detect,
    /// A host asked the console to fence another.
    Fence,
    /// A host reports what it serves as.
    Serving,
    /// A primary has a backup (again).
    FaultTolerant,
    /// Datagrams refused (forged, replayed, unknown sender).
    Refused,
    /// One connection taken over (T_takeover).
    Takeover,
    /// Every connection of a failure taken over.
    TakeoverDone,
    /// A primary runs without a backup.
    NonFaultTolerant,
    /// Bytes a backup missed, fetched from the logger.
    LoggerRecovered,
    /// A FIN or RST held back, and what became of it.
    FinHeld,
    /// A group member heard again.
    Rejoin,
    /// A datagram dropped: it failed authentication or named no member.
    Ignored,
    /// Something a mode could not do.
    Error,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 13] = [
        EventKind::Detect,
        EventKind::Fence,
        EventKind::Serving,
        EventKind::FaultTolerant,
        EventKind::Refused,
        EventKind::Takeover,
        EventKind::TakeoverDone,
        EventKind::NonFaultTolerant,
        EventKind::LoggerRecovered,
        EventKind::FinHeld,
        EventKind::Rejoin,
        EventKind::Ignored,
        EventKind::Error,
    ];

    /// The name records and logs show (kebab-case, as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Detect => "detect",
            EventKind::Fence => "fence",
            EventKind::Serving => "serving",
            EventKind::FaultTolerant => "fault-tolerant",
            EventKind::Refused => "refused",
            EventKind::Takeover => "takeover",
            EventKind::TakeoverDone => "takeover-done",
            EventKind::NonFaultTolerant => "non-fault-tolerant",
            EventKind::LoggerRecovered => "logger-recovered",
            EventKind::FinHeld => "fin-held",
            EventKind::Rejoin => "rejoin",
            EventKind::Ignored => "ignored",
            EventKind::Error => "error",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn event_kinds_serialize_as_their_names() {
        for k in EventKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
        }
    }
}
