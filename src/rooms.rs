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
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::domain::event::EventId;
use crate::domain::topic::{is_private, without_tenant, Selector, Topic, TopicFilter};
use crate::fanout::frame::{self, Frame};
use crate::fanout::hub::{Attach, Hub};

/// Longest a room change waits for the hub to catch up with the commits
/// made before it (normally microseconds to a few milliseconds).
const SETTLE_AT_MOST: Duration = Duration::from_millis(500);

/// What a client asks of an open stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    Join,
    Leave,
    /// Refresh the stream's `lastSeen` in presence.
    Touch,
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
    /// Arrivals and departures of users on exact topics, for presence.
    presence: Option<mpsc::UnboundedSender<PresenceChange>>,
    /// The highest id committed as this node knows it.
    committed: watch::Receiver<EventId>,
    max_topics: usize,
    streams: Mutex<HashMap<Uuid, Arc<Entry>>>,
}

struct Entry {
    connection_id: Uuid,
    owner: String,
    /// The token's `sub`: who the stream is, in presence.
    user_id: Option<String>,
    /// Whether the stream asked to be present (`?presence=true`).
    present: bool,
    user_agent: Option<String>,
    connected_at: DateTime<Utc>,
    last_seen: Mutex<DateTime<Utc>>,
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
    pub user_id: Option<String>,
    pub user_agent: Option<String>,
    pub present: bool,
    pub allowed: Vec<Selector>,
    pub own_private: Option<String>,
}

impl Rooms {
    pub fn new(
        hub: Arc<Hub>,
        committed: watch::Receiver<EventId>,
        max_topics: usize,
        presence: Option<mpsc::UnboundedSender<PresenceChange>>,
    ) -> Arc<Self> {
        Arc::new(Rooms {
            hub,
            presence,
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
        let now = Utc::now();
        let entry = Arc::new(Entry {
            connection_id: owner.connection_id,
            owner: owner.identity,
            user_id: owner.user_id,
            user_agent: owner.user_agent,
            present: owner.present,
            connected_at: now,
            last_seen: Mutex::new(now),
            allowed: owner.allowed,
            own_private: owner.own_private,
            state: Mutex::new(EntryState {
                requested,
                subscriber: None,
                pending: Vec::new(),
            }),
        });
        self.streams().insert(entry.connection_id, Arc::clone(&entry));
        for selector in entry.lock().requested.iter() {
            self.announce(&entry, selector, Arrival::Arrived);
        }
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
        self.announce(&entry, &selector, Arrival::Arrived);
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
        self.announce(&entry, selector, Arrival::Left);
        Ok(state.change(true))
    }

    /// Marks the stream as seen now (`POST /v1/presence/heartbeat`).
    pub fn touch(&self, connection_id: Uuid, identity: &str) -> Result<RoomChange, RoomError> {
        let entry = self.owned(connection_id, identity)?;
        *entry.last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Utc::now();
        let state = entry.lock();
        Ok(state.change(true))
    }

    /// Applies an [`Op`] to a stream this node holds (`selector` is the
    /// topic joined or left; a touch has none).
    pub async fn apply_op(
        &self,
        op: Op,
        connection_id: Uuid,
        identity: &str,
        selector: Option<Selector>,
    ) -> Result<RoomChange, RoomError> {
        match (op, selector) {
            (Op::Join, Some(selector)) => self.join(connection_id, identity, selector).await,
            (Op::Leave, Some(selector)) => self.leave(connection_id, identity, &selector).await,
            (Op::Touch, _) => self.touch(connection_id, identity),
            (_, None) => Err(RoomError::NotAllowed),
        }
    }

    /// Who is on `topic` on this node: the streams opened with presence
    /// that follow it by name (wildcard subscriptions are not presence on
    /// every topic they cover).
    pub fn present_on(&self, topic: &str) -> Vec<PresenceRecord> {
        let entries: Vec<Arc<Entry>> = self.streams().values().cloned().collect();
        entries
            .iter()
            .filter(|e| e.present && e.lock().requested.iter().any(|s| s.as_exact() == Some(topic)))
            .map(|e| PresenceRecord {
                user_id: e.user_id.clone(),
                connection_id: e.connection_id,
                connected_at: e.connected_at,
                last_seen: *e.last_seen.lock().unwrap_or_else(|p| p.into_inner()),
                user_agent: e.user_agent.clone(),
            })
            .collect()
    }

    /// Tells presence that a user came to or left an exact topic.
    fn announce(&self, entry: &Entry, selector: &Selector, arrival: Arrival) {
        if !entry.present {
            return;
        }
        let (Some(presence), Some(user), Some(topic)) = (&self.presence, &entry.user_id, selector.as_exact())
        else {
            return;
        };
        // A user's personal topic is theirs alone: no one to tell.
        if without_tenant(topic).strip_prefix("user:") == Some(user.as_str()) {
            return;
        }
        let _ = presence.send(PresenceChange {
            topic: topic.to_string(),
            user_id: user.clone(),
            connection_id: entry.connection_id,
            arrival,
        });
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
        {
            let mut streams = self.rooms.streams();
            if streams
                .get(&self.entry.connection_id)
                .is_some_and(|e| Arc::ptr_eq(e, &self.entry))
            {
                streams.remove(&self.entry.connection_id);
            }
        }
        for selector in self.entry.lock().requested.iter() {
            self.rooms.announce(&self.entry, selector, Arrival::Left);
        }
    }
}

/// One stream present on a topic (`GET /v1/topics/{topic}/presence`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceRecord {
    pub user_id: Option<String>,
    pub connection_id: Uuid,
    pub connected_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    Arrived,
    Left,
}

/// A user's stream arriving on or leaving an exact topic (internal name).
#[derive(Debug, Clone)]
pub struct PresenceChange {
    pub topic: String,
    pub user_id: String,
    pub connection_id: Uuid,
    pub arrival: Arrival,
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
