//! Sending on the cluster bus, shared by the bus's two readers
//! (`crate::cluster`'s requests and replies, [`super::census`]): a message
//! as one JSON text, a failure logged rather than returned.

use serde::Serialize;

use crate::store::EventStore;

/// Sends `message` to every node; whether the store took it. `reader`
/// names who sends, for the log.
pub async fn send_json<M: Serialize>(store: &dyn EventStore, message: &M, reader: &str) -> bool {
    let text = serde_json::to_string(message).expect("bus messages serialize");
    match store.bus_send(&text).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, reader, "could not send on the cluster bus");
            false
        }
    }
}
