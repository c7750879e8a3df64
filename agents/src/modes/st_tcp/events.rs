//! The mode's events to the console.

use halab_protocol::modes::st_tcp::Event;
use halab_protocol::{AgentMsg, ModeEvent};
use tokio::sync::mpsc;

/// Sends an event of this mode to the console.
pub async fn emit(outbound: &mpsc::Sender<AgentMsg>, event: Event) {
    tracing::info!(?event, "st-tcp event");
    let _ = outbound
        .send(AgentMsg::Mode {
            event: ModeEvent::StTcp(event),
        })
        .await;
}
