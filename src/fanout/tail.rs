//! The tail: the one task per node that reads newly committed events from
//! the store, in id order, and publishes them to the hub. Whatever wrote
//! them (this node's writer or another node), the path is the same, so
//! every node delivers the same ids in the same order.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use crate::domain::event::EventId;
use crate::domain::topic::TopicFilter;
use crate::store::EventStore;

/// Events read per query while catching up.
const PAGE: usize = 1000;

/// Runs until `stop` is cancelled. Wakes on every commit hint, and every
/// `poll_interval` regardless, because hints can be lost (a NOTIFY sent
/// while the LISTEN connection was down never arrives).
pub async fn run(
    store: Arc<dyn EventStore>,
    hub: Arc<Hub>,
    poll_interval: Duration,
    stop: CancellationToken,
) {
    let mut hints = store.commit_hints();
    let mut ticker = tokio::time::interval(poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let everything = TopicFilter::everything();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = hints.changed() => if changed.is_err() { return },
            _ = ticker.tick() => {}
        }
        catch_up(store.as_ref(), &hub, &everything).await;
    }
}

async fn catch_up(store: &dyn EventStore, hub: &Hub, everything: &TopicFilter) {
    loop {
        let after = hub.high();
        match store.read_range(after, EventId::MAX, everything, PAGE).await {
            Ok(events) => {
                hub.publish(&events);
                if events.len() < PAGE {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read new events; will retry");
                return;
            }
        }
    }
}
