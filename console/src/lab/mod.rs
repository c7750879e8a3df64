//! The lab layer: what the headless runner (`run::runner`) and the dashboard
//! (`tui::orchestrator`) both do to a testbed that is up, implemented once. It fires and
//! reverts faults ([`faults`]), starts roles and waits for them ([`roles`]), switches modes and
//! brings a testbed back to its topology's roles ([`switch`]), acts on mode events through the
//! mode registry ([`mode_events`]), builds the client's instructions ([`client`]) and computes
//! failover figures ([`figures`], on the console's clock: [`clock`]). The runner keeps its
//! schedule and records; the orchestrator its keys and screen.

pub mod client;
pub mod clock;
pub mod faults;
pub mod figures;
pub mod handle;
pub mod links;
pub mod mode_events;
pub mod roles;
pub mod switch;
