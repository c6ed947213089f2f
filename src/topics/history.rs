//! History reads: the same events as a stream, read from the log after a
//! cursor; with a wait, a long-poll that answers as soon as a matching
//! event is committed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::outcome::HistoryRejection;
use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::fanout::hub::{Attach, Hub};
use crate::store::{EventStore, LogBounds, StoreError};

/// A history read, its parameters checked.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// The last event the client has (`None`: from the start of the log).
    pub after: Option<EventId>,
    pub limit: usize,
    /// How long to wait for a matching event when none is there yet.
    pub wait: Duration,
}

/// Where a read continues from: after the client's cursor, or after what
/// retention dropped. A cursor inside the dropped prefix, or past every id
/// this node has seen (`high`, the hub's), cannot be continued.
pub fn start_after(
    requested: Option<EventId>,
    bounds: LogBounds,
    high: EventId,
) -> Result<EventId, HistoryRejection> {
    match requested {
        None => Ok(bounds.pruned_through),
        Some(after) if after < bounds.pruned_through => Err(HistoryRejection::Pruned { after }),
        Some(after) if after > bounds.head.max(high) => Err(HistoryRejection::Unknown { after }),
        Some(after) => Ok(after),
    }
}

/// Reads up to `query.limit` events matching `filter` after the query's
/// cursor, waiting up to `query.wait` (or until `stop`) when there are none.
pub async fn read(
    store: &dyn EventStore,
    hub: &Arc<Hub>,
    stop: &CancellationToken,
    filter: &TopicFilter,
    query: &HistoryQuery,
) -> Result<Result<Vec<StoredEvent>, HistoryRejection>, StoreError> {
    let bounds = store.bounds().await?;
    let after = match start_after(query.after, bounds, hub.high()) {
        Ok(after) => after,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let mut events = store.read_range(after, EventId::MAX, filter, query.limit).await?;
    if events.is_empty() && !query.wait.is_zero() {
        events = wait_for_events(store, hub, stop, after, filter, query.limit, query.wait).await?;
    }
    Ok(Ok(events))
}

/// Waits for the hub to publish a matching event after `after`, then reads
/// it (and any others) from the store.
async fn wait_for_events(
    store: &dyn EventStore,
    hub: &Arc<Hub>,
    stop: &CancellationToken,
    after: EventId,
    filter: &TopicFilter,
    limit: usize,
    wait: Duration,
) -> Result<Vec<StoredEvent>, StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    // Nothing matching exists in (after, cursor].
    let mut cursor = after;
    loop {
        match hub.attach(cursor, filter.clone(), None) {
            Attach::Live {
                backlog,
                mut subscription,
            } => {
                if !backlog.is_empty() {
                    return store.read_range(after, EventId::MAX, filter, limit).await;
                }
                // A frame is only a reason to look: it may be an event the
                // client already has (committed before its request, but
                // reaching the hub after it attached). Keep waiting until
                // the store has something after `after`.
                loop {
                    tokio::select! {
                        frame = subscription.frames.recv() => if frame.is_none() { break },
                        _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                        _ = stop.cancelled() => return Ok(Vec::new()),
                    }
                    let events = store.read_range(after, EventId::MAX, filter, limit).await?;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
            }
            // The cursor is older than the hub's ring: check the store up to
            // where the hub is, then attach from there.
            Attach::Behind { high } => {
                let events = store.read_range(cursor, high, filter, limit).await?;
                if !events.is_empty() {
                    return Ok(events);
                }
                cursor = high;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: LogBounds = LogBounds {
        pruned_through: 10,
        head: 20,
    };

    #[test]
    fn without_a_cursor_a_read_starts_after_what_was_dropped() {
        assert_eq!(start_after(None, BOUNDS, 0), Ok(10));
    }

    #[test]
    fn a_cursor_inside_the_log_is_continued() {
        assert_eq!(start_after(Some(10), BOUNDS, 0), Ok(10));
        assert_eq!(start_after(Some(20), BOUNDS, 0), Ok(20));
        // The hub may be ahead of the bounds just read.
        assert_eq!(start_after(Some(25), BOUNDS, 25), Ok(25));
    }

    #[test]
    fn a_cursor_outside_the_log_needs_a_resync() {
        assert_eq!(
            start_after(Some(9), BOUNDS, 0),
            Err(HistoryRejection::Pruned { after: 9 })
        );
        assert_eq!(
            start_after(Some(21), BOUNDS, 20),
            Err(HistoryRejection::Unknown { after: 21 })
        );
        assert_eq!(
            HistoryRejection::Pruned { after: 9 }.message(),
            "events after 9 are no longer retained; resync from a snapshot"
        );
        assert_eq!(
            HistoryRejection::Unknown { after: 21 }.message(),
            "event id 21 is unknown; resync from a snapshot"
        );
    }
}
