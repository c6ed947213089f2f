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
//!
//! The list itself ([`present`]) gathers this node's streams on a topic and
//! the other nodes' over the cluster bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outcome::{PresenceList, PresenceRejection};
use crate::cluster::Cluster;
use crate::domain::event::{format_timestamp, EventType, NewEvent, TraceId};
use crate::domain::topic::{is_private, Topic};
use crate::rooms::{Arrival, PresenceChange, PresenceRecord, Rooms};
use crate::store::{Append, EventStore};

/// The event type of presence changes.
pub const PRESENCE_UPDATE: &str = "presence:update";

type Key = (String, String);

pub struct Announcer {
    store: Arc<dyn EventStore>,
    grace: Duration,
    roster: Roster,
}

/// Who of this node's streams is where, and who is leaving: what the
/// announcer decides, without its clock or its store.
#[derive(Debug, Default)]
pub struct Roster {
    /// This node's streams per (topic, user).
    here: HashMap<Key, usize>,
    /// Users whose last stream left, with when `left` becomes due.
    leaving: HashMap<Key, Instant>,
}

impl Roster {
    /// One more stream of the user on the topic; `true` when the user
    /// joined (a user back within the grace period never left).
    pub fn arrive(&mut self, key: Key) -> bool {
        let count = self.here.entry(key.clone()).or_default();
        *count += 1;
        *count == 1 && self.leaving.remove(&key).is_none()
    }

    /// One stream fewer; when it was the user's last, `left` becomes due
    /// at `due` unless the user comes back first.
    pub fn leave(&mut self, key: Key, due: Instant) {
        let Some(count) = self.here.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.here.remove(&key);
            self.leaving.insert(key, due);
        }
    }

    /// The users whose `left` is due by `now`, no longer leaving.
    pub fn departures(&mut self, now: Instant) -> Vec<Key> {
        let due: Vec<Key> = self
            .leaving
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &due {
            self.leaving.remove(key);
        }
        due
    }
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
            roster: Roster::default(),
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
                if self.roster.arrive(key.clone()) {
                    self.append(&key, "joined").await;
                }
            }
            Arrival::Left => self.roster.leave(key, Instant::now() + self.grace),
        }
    }

    async fn announce_departures(&mut self) {
        for key in self.roster.departures(Instant::now()) {
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

/// Whether `topic` has a presence list: every topic but a participant's own.
pub fn check_listable(topic: &Topic) -> Result<(), PresenceRejection> {
    if is_private(topic.as_str()) {
        return Err(PresenceRejection::PrivateTopic);
    }
    Ok(())
}

/// Who is on `topic`: this node's streams and the other nodes'.
pub async fn present(rooms: &Rooms, cluster: &Cluster, topic: &Topic) -> PresenceList {
    let mut present = rooms.present_on(topic.as_str());
    present.extend(cluster.present_elsewhere(topic.as_str()).await);
    summarize(present)
}

/// The streams oldest first, with how many distinct users they are.
pub fn summarize(mut present: Vec<PresenceRecord>) -> PresenceList {
    present.sort_by_key(|r| r.connected_at);
    let mut users: Vec<&str> = present.iter().filter_map(|r| r.user_id.as_deref()).collect();
    users.sort_unstable();
    users.dedup();
    let users = users.len();
    PresenceList { present, users }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;

    fn key(user: &str) -> Key {
        ("orders".to_string(), user.to_string())
    }

    #[test]
    fn the_first_stream_joins_and_the_last_one_leaves_after_the_grace() {
        let mut roster = Roster::default();
        let start = Instant::now();
        let due = start + Duration::from_secs(5);
        assert!(roster.arrive(key("ann")));
        assert!(!roster.arrive(key("ann")));
        roster.leave(key("ann"), due);
        assert!(roster.departures(due).is_empty(), "one stream is still there");
        roster.leave(key("ann"), due);
        assert!(roster.departures(start).is_empty(), "not due yet");
        assert_eq!(roster.departures(due), vec![key("ann")]);
        assert!(roster.departures(due).is_empty(), "announced once");
        assert!(roster.arrive(key("ann")), "a new visit joins again");
    }

    #[test]
    fn a_user_back_within_the_grace_never_left() {
        let mut roster = Roster::default();
        let due = Instant::now() + Duration::from_secs(5);
        assert!(roster.arrive(key("ann")));
        roster.leave(key("ann"), due);
        assert!(!roster.arrive(key("ann")));
        assert!(roster.departures(due).is_empty());
    }

    #[test]
    fn a_stream_that_never_arrived_changes_nothing() {
        let mut roster = Roster::default();
        let due = Instant::now();
        roster.leave(key("bob"), due);
        assert!(roster.departures(due).is_empty());
        assert!(roster.arrive(key("bob")));
    }

    #[test]
    fn a_participant_topic_has_no_list() {
        let private = Topic::parse("participant:abc").unwrap();
        assert_eq!(check_listable(&private), Err(PresenceRejection::PrivateTopic));
        assert!(check_listable(&Topic::parse("orders:1").unwrap()).is_ok());
    }

    #[test]
    fn a_list_counts_distinct_users_oldest_stream_first() {
        let record = |user: Option<&str>, second: u32| PresenceRecord {
            user_id: user.map(str::to_string),
            connection_id: Uuid::new_v4(),
            connected_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, second).unwrap(),
            last_seen: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, second).unwrap(),
            user_agent: None,
        };
        let list = summarize(vec![
            record(Some("bob"), 3),
            record(None, 1),
            record(Some("ann"), 2),
            record(Some("bob"), 0),
        ]);
        assert_eq!(list.users, 2);
        let order: Vec<u32> = list
            .present
            .iter()
            .map(|r| r.connected_at.timestamp() as u32 % 60)
            .collect();
        assert_eq!(order, vec![0, 1, 2, 3]);
    }
}
