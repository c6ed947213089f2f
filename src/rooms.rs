//! Rooms: the topics an open stream follows, changed while it stays open
//! (CONTRACT §4, `POST` / `DELETE /v1/connections/{id}/topics`).
//!
//! Every stream registers here under its `connectionId` with its owner (the
//! token's identity) and the token's `subscribe` permission. A join or a
//! leave replaces the stream's filter in the hub and queues the
//! `system:subscribed` / `system:unsubscribed` confirmation on the stream's
//! own queue, both under the hub's lock: the confirmation comes before the
//! first event of a joined topic, and after the last event of a left one.
//! A stream still replaying when a room changes picks the new filter up for
//! its next page and gets the confirmation when it goes live.
//!
//! Rooms are local to the node holding the stream; `crate::cluster` carries
//! a change made on another node to this one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::event::EventId;
use crate::domain::topic::{is_private, Selector, Topic, TopicFilter};
use crate::fanout::frame::{self, Frame};
use crate::fanout::hub::{Attach, Hub};

/// Longest a room change waits for the hub to catch up with the commits
/// made before it (normally microseconds to a few milliseconds).
const SETTLE_AT_MOST: Duration = Duration::from_millis(500);

/// Joining or leaving a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Join,
    Leave,
}

/// Why a room change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomError {
    /// No open stream with that connection id (on this node).
    UnknownConnection,
    /// The stream belongs to another token identity.
    NotOwner,
    /// The stream's token may not read that topic.
    NotAllowed,
    /// The stream already follows the most topics it may.
    TooManyTopics(usize),
    /// Leaving would leave the stream with no topic at all.
    LastTopic,
}

/// What a stream follows after a change, and whether the change did anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomChange {
    pub topics: Vec<String>,
    pub changed: bool,
}

/// The registry of this node's open streams.
pub struct Rooms {
    hub: Arc<Hub>,
    /// The highest id committed as this node knows it.
    committed: watch::Receiver<EventId>,
    max_topics: usize,
    streams: Mutex<HashMap<Uuid, Arc<Entry>>>,
}

struct Entry {
    connection_id: Uuid,
    owner: String,
    allowed: Vec<Selector>,
    /// A participant's own private topic, the only private one it may join.
    own_private: Option<String>,
    state: Mutex<EntryState>,
}

struct EntryState {
    requested: Vec<Selector>,
    /// The hub's key once the stream is live.
    subscriber: Option<u64>,
    /// Confirmations decided before the stream went live.
    pending: Vec<Bytes>,
}

/// What a new stream tells the registry about itself.
pub struct StreamOwner {
    pub connection_id: Uuid,
    pub identity: String,
    pub allowed: Vec<Selector>,
    pub own_private: Option<String>,
}

impl Rooms {
    pub fn new(hub: Arc<Hub>, committed: watch::Receiver<EventId>, max_topics: usize) -> Arc<Self> {
        Arc::new(Rooms {
            hub,
            committed,
            max_topics,
            streams: Mutex::new(HashMap::new()),
        })
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Entry>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an opening stream; it stays joinable until the returned
    /// room is dropped.
    pub fn register(self: &Arc<Self>, owner: StreamOwner, requested: Vec<Selector>) -> Room {
        let entry = Arc::new(Entry {
            connection_id: owner.connection_id,
            owner: owner.identity,
            allowed: owner.allowed,
            own_private: owner.own_private,
            state: Mutex::new(EntryState {
                requested,
                subscriber: None,
                pending: Vec::new(),
            }),
        });
        self.streams().insert(entry.connection_id, Arc::clone(&entry));
        Room {
            rooms: Arc::clone(self),
            entry,
        }
    }

    /// Whether this node holds the stream.
    pub fn holds(&self, connection_id: Uuid) -> bool {
        self.streams().contains_key(&connection_id)
    }

    /// Waits (briefly) until the hub has published everything committed
    /// before the request, so that "from the join" means after every event
    /// the caller could have seen committed, not after whatever the hub had
    /// caught up to.
    async fn settle(&self) {
        let committed = *self.committed.borrow();
        let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
        while self.hub.high() < committed && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Adds `selector` to the stream's topics, for the stream's owner.
    pub async fn join(
        &self,
        connection_id: Uuid,
        identity: &str,
        selector: Selector,
    ) -> Result<RoomChange, RoomError> {
        self.owned(connection_id, identity)?;
        self.settle().await;
        let entry = self.owned(connection_id, identity)?;
        if !entry.may_read(&selector) {
            return Err(RoomError::NotAllowed);
        }
        let mut state = entry.lock();
        if state.requested.contains(&selector) {
            return Ok(state.change(false));
        }
        if state.requested.len() >= self.max_topics {
            return Err(RoomError::TooManyTopics(self.max_topics));
        }
        state.requested.push(selector.clone());
        self.apply(&entry, &mut state, "system:subscribed", &selector);
        Ok(state.change(true))
    }

    /// Removes `selector` from the stream's topics, for the stream's owner.
    pub async fn leave(
        &self,
        connection_id: Uuid,
        identity: &str,
        selector: &Selector,
    ) -> Result<RoomChange, RoomError> {
        self.owned(connection_id, identity)?;
        self.settle().await;
        let entry = self.owned(connection_id, identity)?;
        let mut state = entry.lock();
        let Some(at) = state.requested.iter().position(|s| s == selector) else {
            return Ok(state.change(false));
        };
        if state.requested.len() == 1 {
            // An empty filter would mean "every topic".
            return Err(RoomError::LastTopic);
        }
        state.requested.remove(at);
        self.apply(&entry, &mut state, "system:unsubscribed", selector);
        Ok(state.change(true))
    }

    fn owned(&self, connection_id: Uuid, identity: &str) -> Result<Arc<Entry>, RoomError> {
        let entry = self
            .streams()
            .get(&connection_id)
            .cloned()
            .ok_or(RoomError::UnknownConnection)?;
        if entry.owner != identity {
            return Err(RoomError::NotOwner);
        }
        Ok(entry)
    }

    /// Hands the new filter to the hub with its confirmation, or keeps the
    /// confirmation for when the stream goes live.
    fn apply(&self, entry: &Entry, state: &mut EntryState, event_type: &str, selector: &Selector) {
        let notice = confirmation(event_type, entry.connection_id, selector, &state.requested);
        let filter = entry.filter(&state.requested);
        let delivered = state.subscriber.is_some_and(|key| {
            self.hub
                .refilter(key, filter, Frame::transient(system_topic(), notice.clone()))
        });
        if !delivered {
            state.pending.push(notice);
        }
    }
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn may_read(&self, selector: &Selector) -> bool {
        let private_ok =
            !is_private(selector.as_str()) || self.own_private.as_deref() == Some(selector.as_str());
        private_ok && self.allowed.iter().any(|a| a.overlaps(selector))
    }

    fn filter(&self, requested: &[Selector]) -> TopicFilter {
        let filter = TopicFilter::new(requested.to_vec(), Some(self.allowed.clone()));
        if self.own_private.is_some() {
            filter
        } else {
            filter.without_private()
        }
    }
}

impl EntryState {
    fn change(&self, changed: bool) -> RoomChange {
        RoomChange {
            topics: self
                .requested
                .iter()
                .map(|s| s.display_name().to_string())
                .collect(),
            changed,
        }
    }
}

/// A stream's registration; dropping it (the stream ended) unregisters.
pub struct Room {
    rooms: Arc<Rooms>,
    entry: Arc<Entry>,
}

impl Room {
    pub fn connection_id(&self) -> Uuid {
        self.entry.connection_id
    }

    /// The stream's filter as of now.
    pub fn filter(&self) -> TopicFilter {
        let state = self.entry.lock();
        self.entry.filter(&state.requested)
    }

    /// Attaches the stream to the hub with its current filter, holding the
    /// room's lock so that no change slips between reading the filter and
    /// recording the subscriber. Returns the confirmations decided before.
    pub fn attach(&self, attach: impl FnOnce(TopicFilter) -> Attach) -> (Attach, Vec<Bytes>) {
        let mut state = self.entry.lock();
        let outcome = attach(self.entry.filter(&state.requested));
        if let Attach::Live { subscription, .. } = &outcome {
            state.subscriber = Some(subscription.key());
            return (outcome, std::mem::take(&mut state.pending));
        }
        (outcome, Vec::new())
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let mut streams = self.rooms.streams();
        if streams
            .get(&self.entry.connection_id)
            .is_some_and(|e| Arc::ptr_eq(e, &self.entry))
        {
            streams.remove(&self.entry.connection_id);
        }
    }
}

/// The topic of the server's own transient frames.
pub fn system_topic() -> Topic {
    Topic::from_stored("system")
}

fn confirmation(event_type: &str, connection_id: Uuid, selector: &Selector, topics: &[Selector]) -> Bytes {
    frame::transient(
        event_type,
        json!({
            "connectionId": connection_id.to_string(),
            "topic": selector.display_name(),
            "topics": topics.iter().map(Selector::display_name).collect::<Vec<_>>(),
        }),
    )
}
