//! Presence on generic topics (CONTRACT §4): `presence:update` events on a
//! topic when a user arrives on it or leaves it.
//!
//! A user is a token `sub`; a stream counts on the topics it follows by
//! name (its exact selectors, joined rooms included). The announcer keeps,
//! per (topic, user), how many of this node's streams are there. The first
//! one appends `joined`; when the last one goes, `left` waits for the grace
//! period and is dropped if the user comes back meanwhile, so a reconnect
//! (or a page reload) does not flap. Anonymous streams (no `sub`) are listed
//! by `GET /v1/topics/{topic}/presence` but announce nothing.
//!
//! Each node announces its own streams: a user who moves from one node to
//! another within the grace period shows `joined` from the new node and,
//! after the grace period, `left` from the old one only if the old node
//! still had no stream of theirs (it cannot see the new one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::event::{format_timestamp, EventType, NewEvent, TraceId};
use crate::domain::topic::Topic;
use crate::rooms::{Arrival, PresenceChange};
use crate::store::{Append, EventStore};

/// The event type of presence changes.
pub const PRESENCE_UPDATE: &str = "presence:update";

type Key = (String, String);

pub struct Announcer {
    store: Arc<dyn EventStore>,
    grace: Duration,
    /// This node's streams per (topic, user).
    here: HashMap<Key, usize>,
    /// Users whose last stream left, with when `left` becomes due.
    leaving: HashMap<Key, Instant>,
}

impl Announcer {
    /// Starts the announcer; streams report through the returned sender.
    pub fn start(
        store: Arc<dyn EventStore>,
        grace: Duration,
        stop: CancellationToken,
    ) -> mpsc::UnboundedSender<PresenceChange> {
        let (changes, inbox) = mpsc::unbounded_channel();
        let announcer = Announcer {
            store,
            grace,
            here: HashMap::new(),
            leaving: HashMap::new(),
        };
        tokio::spawn(announcer.run(inbox, stop));
        changes
    }

    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<PresenceChange>, stop: CancellationToken) {
        let mut sweep = tokio::time::interval((self.grace / 4).max(Duration::from_millis(20)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                change = inbox.recv() => match change {
                    Some(change) => self.take(change).await,
                    None => return,
                },
                _ = sweep.tick() => self.announce_departures().await,
            }
        }
    }

    async fn take(&mut self, change: PresenceChange) {
        let key = (change.topic, change.user_id);
        match change.arrival {
            Arrival::Arrived => {
                let count = self.here.entry(key.clone()).or_default();
                *count += 1;
                // A user back within the grace period never left.
                if *count == 1 && self.leaving.remove(&key).is_none() {
                    self.append(&key, "joined").await;
                }
            }
            Arrival::Left => {
                let Some(count) = self.here.get_mut(&key) else {
                    return;
                };
                *count -= 1;
                if *count == 0 {
                    self.here.remove(&key);
                    self.leaving.insert(key, Instant::now() + self.grace);
                }
            }
        }
    }

    async fn announce_departures(&mut self) {
        let now = Instant::now();
        let due: Vec<Key> = self
            .leaving
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.leaving.remove(&key);
            self.append(&key, "left").await;
        }
    }

    async fn append(&self, (topic, user): &Key, action: &str) {
        let topic = Topic::from_stored(topic);
        let payload = json!({
            "topic": topic.display_name(),
            "userId": user,
            "action": action,
            "timestamp": format_timestamp(&chrono::Utc::now()),
        });
        let event_type = EventType::parse(PRESENCE_UPDATE).expect("a valid event type");
        let event = NewEvent::new(topic, event_type, TraceId::generate(), &payload);
        let append = Append { events: vec![event] };
        if let Err(error) = crate::store::execute(&*self.store, append, None).await {
            tracing::warn!(%error, "presence: could not append presence:update");
        }
    }
}
