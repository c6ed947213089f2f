//! The cluster bus: requests one node makes of the node that holds a
//! stream, over the store's bus (Postgres NOTIFY on `pollcast_bus`), with
//! replies matched by request id.
//!
//! Used for room changes asked of a node that does not hold the stream:
//! the request goes to every node, the one holding the connection applies
//! it and replies, the others stay silent, and the asking node gives up
//! after [`REPLY_TIMEOUT`] (then the connection is unknown: 404). Nothing
//! is written to tables per stream, so opening a stream costs the database
//! nothing. On the memory store (one node) nobody else is asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::topic::Selector;
use crate::rooms::{Op, PresenceRecord, RoomChange, RoomError, Rooms};
use crate::store::EventStore;

/// How long a node waits for the node holding a stream to answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a presence query waits for the other nodes' lists.
pub const PRESENCE_WAIT: Duration = Duration::from_millis(500);
/// Presence records per bus message: NOTIFY payloads stop at 8,000 bytes.
const RECORDS_PER_MESSAGE: usize = 20;

/// One node's part of a presence answer: its records, and whether it is done.
type PresencePart = (Uuid, Vec<PresenceRecord>, bool);

type Outcome = Result<RoomChange, RoomError>;

pub struct Cluster {
    node_id: Uuid,
    store: Arc<dyn EventStore>,
    rooms: Arc<Rooms>,
    /// Nodes alive on the database, from their heartbeats: how many
    /// presence answers to wait for.
    live_nodes: watch::Receiver<usize>,
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<Outcome>>>,
    gathering: Mutex<HashMap<Uuid, mpsc::UnboundedSender<PresencePart>>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Message {
    #[serde(rename_all = "camelCase")]
    Room {
        request_id: Uuid,
        from: Uuid,
        connection_id: Uuid,
        identity: String,
        op: Op,
        topic: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    PresenceQuery {
        request_id: Uuid,
        from: Uuid,
        topic: String,
    },
    #[serde(rename_all = "camelCase")]
    PresenceRecords {
        request_id: Uuid,
        to: Uuid,
        from: Uuid,
        records: Vec<PresenceRecord>,
        done: bool,
    },
    #[serde(rename_all = "camelCase")]
    Reply {
        request_id: Uuid,
        to: Uuid,
        outcome: WireOutcome,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum WireOutcome {
    Changed { topics: Vec<String>, changed: bool },
    NotOwner,
    NotAllowed,
    TooManyTopics(usize),
    LastTopic,
}

impl From<&Outcome> for WireOutcome {
    fn from(outcome: &Outcome) -> Self {
        match outcome {
            Ok(change) => WireOutcome::Changed {
                topics: change.topics.clone(),
                changed: change.changed,
            },
            Err(RoomError::NotOwner | RoomError::UnknownConnection) => WireOutcome::NotOwner,
            Err(RoomError::NotAllowed) => WireOutcome::NotAllowed,
            Err(RoomError::TooManyTopics(max)) => WireOutcome::TooManyTopics(*max),
            Err(RoomError::LastTopic) => WireOutcome::LastTopic,
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(wire: WireOutcome) -> Self {
        match wire {
            WireOutcome::Changed { topics, changed } => Ok(RoomChange { topics, changed }),
            WireOutcome::NotOwner => Err(RoomError::NotOwner),
            WireOutcome::NotAllowed => Err(RoomError::NotAllowed),
            WireOutcome::TooManyTopics(max) => Err(RoomError::TooManyTopics(max)),
            WireOutcome::LastTopic => Err(RoomError::LastTopic),
        }
    }
}

impl Cluster {
    /// Starts listening to the bus until `stop`.
    pub fn start(
        node_id: Uuid,
        store: Arc<dyn EventStore>,
        rooms: Arc<Rooms>,
        live_nodes: watch::Receiver<usize>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let cluster = Arc::new(Cluster {
            node_id,
            store,
            rooms,
            live_nodes,
            waiting: Mutex::new(HashMap::new()),
            gathering: Mutex::new(HashMap::new()),
        });
        tokio::spawn(Arc::clone(&cluster).listen(stop));
        cluster
    }

    /// Asks the other nodes to change a room of a stream this node does
    /// not hold. `None` when no node answered: the connection is unknown.
    pub async fn change_room(
        &self,
        connection_id: Uuid,
        identity: &str,
        op: Op,
        topic: Option<&Selector>,
    ) -> Option<Outcome> {
        if !self.store.is_shared() {
            return None; // one node: nobody else to ask
        }
        let request_id = Uuid::new_v4();
        let (reply, answer) = oneshot::channel();
        self.waiting().insert(request_id, reply);
        let message = Message::Room {
            request_id,
            from: self.node_id,
            connection_id,
            identity: identity.to_string(),
            op,
            topic: topic.map(|t| t.as_str().to_string()),
        };
        let sent = self.send(&message).await;
        let outcome = match sent {
            true => tokio::time::timeout(REPLY_TIMEOUT, answer)
                .await
                .ok()
                .and_then(Result::ok),
            false => None,
        };
        self.waiting().remove(&request_id);
        outcome
    }

    /// The streams present on `topic` on the other nodes (best effort:
    /// whatever arrived from them within [`PRESENCE_WAIT`]).
    pub async fn present_elsewhere(&self, topic: &str) -> Vec<PresenceRecord> {
        let others = self.live_nodes.borrow().saturating_sub(1);
        if !self.store.is_shared() || others == 0 {
            return Vec::new();
        }
        let request_id = Uuid::new_v4();
        let (parts, mut incoming) = mpsc::unbounded_channel();
        self.gathering().insert(request_id, parts);
        let query = Message::PresenceQuery {
            request_id,
            from: self.node_id,
            topic: topic.to_string(),
        };
        let mut records = Vec::new();
        if self.send(&query).await {
            let deadline = tokio::time::Instant::now() + PRESENCE_WAIT;
            let mut finished = std::collections::HashSet::new();
            while finished.len() < others {
                match tokio::time::timeout_at(deadline, incoming.recv()).await {
                    Ok(Some((node, part, done))) => {
                        records.extend(part);
                        if done {
                            finished.insert(node);
                        }
                    }
                    _ => break,
                }
            }
        }
        self.gathering().remove(&request_id);
        records
    }

    fn gathering(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, mpsc::UnboundedSender<PresencePart>>> {
        self.gathering.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn answer_presence(&self, request_id: Uuid, to: Uuid, topic: &str) {
        let records = self.rooms.present_on(topic);
        let mut chunks: Vec<Vec<PresenceRecord>> =
            records.chunks(RECORDS_PER_MESSAGE).map(<[_]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let part = Message::PresenceRecords {
                request_id,
                to,
                from: self.node_id,
                records: chunk,
                done: n == last,
            };
            self.send(&part).await;
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Outcome>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn send(&self, message: &Message) -> bool {
        let text = serde_json::to_string(message).expect("bus messages serialize");
        match self.store.bus_send(&text).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "cluster bus: could not send");
                false
            }
        }
    }

    async fn listen(self: Arc<Self>, stop: CancellationToken) {
        let mut messages = self.store.bus_messages();
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = messages.recv() => next,
            };
            match next {
                Ok(text) => match serde_json::from_str::<Message>(&text) {
                    Ok(message) => self.handle(message).await,
                    Err(error) => tracing::debug!(%error, "cluster bus: ignoring a message"),
                },
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "cluster bus: messages missed (their senders time out)");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn handle(&self, message: Message) {
        match message {
            Message::Room {
                request_id,
                from,
                connection_id,
                identity,
                op,
                topic,
            } => {
                // Only the node holding the stream answers; the asking node
                // already looked at its own rooms.
                if from == self.node_id || !self.rooms.holds(connection_id) {
                    return;
                }
                let selector = match topic.map(|t| Selector::parse_internal(&t)) {
                    Some(Ok(selector)) => Some(selector),
                    Some(Err(_)) => return,
                    None => None,
                };
                let outcome = self.rooms.apply_op(op, connection_id, &identity, selector).await;
                let reply = Message::Reply {
                    request_id,
                    to: from,
                    outcome: WireOutcome::from(&outcome),
                };
                self.send(&reply).await;
            }
            Message::PresenceQuery {
                request_id,
                from,
                topic,
            } => {
                if from != self.node_id {
                    self.answer_presence(request_id, from, &topic).await;
                }
            }
            Message::PresenceRecords {
                request_id,
                to,
                from,
                records,
                done,
            } => {
                if to != self.node_id {
                    return;
                }
                if let Some(parts) = self.gathering().get(&request_id) {
                    let _ = parts.send((from, records, done));
                }
            }
            Message::Reply {
                request_id,
                to,
                outcome,
            } => {
                if to != self.node_id {
                    return;
                }
                if let Some(waiter) = self.waiting().remove(&request_id) {
                    let _ = waiter.send(outcome.into());
                }
            }
        }
    }
}
