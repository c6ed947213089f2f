//! The tail: the one task per node that feeds the hub committed events in
//! id order. Batches this node's writer just committed are published as
//! they are when the hub already holds everything committed before them
//! (the common case, and one store round trip less per event's latency);
//! anything else — other nodes' events, a gap, a lagging channel — is read
//! from the store, so every node delivers the same ids in the same order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
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
    let mut batches = store.committed_batches();
    let mut ticker = tokio::time::interval(poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let everything = TopicFilter::everything();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            batch = batches.recv() => match batch {
                Ok(batch) if hub.publish_after(batch.after, &batch.events) => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            changed = hints.changed() => {
                if changed.is_err() {
                    return;
                }
                // A hint for what the hub already has (this node's own
                // batches) needs no read.
                if *hints.borrow_and_update() <= hub.high() {
                    continue;
                }
            }
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
