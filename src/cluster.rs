//! The cluster bus: requests one node makes of the node that holds a
//! stream, over the store's bus (Postgres NOTIFY on `pollcast_bus`), with
//! replies matched by request id.
//!
//! Used for room changes and admin closes asked of a node that does not
//! hold the stream: the request goes to every node, the one holding the
//! connection applies it and replies, the others stay silent, and the
//! asking node gives up after [`REPLY_TIMEOUT`] (then the connection is
//! unknown: 404). Nothing is written to tables per stream, so opening a
//! stream costs the database nothing. On the memory store (one node)
//! nobody else is asked.
//!
//! It also keeps revocations in step: a node that records one tells the
//! others, which reload the list from the store and close the streams it
//! covers; every node also reloads it every [`REVOCATION_RELOAD`], in case
//! a message was lost while its listener reconnected.

mod bus;
pub mod census;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::topic::Selector;
use crate::revocation::RevocationList;
use crate::rooms::{Op, PresenceRecord, RoomChange, RoomError, Rooms};
use crate::store::EventStore;
use crate::streams::{CloseReason, OpenStreams};

/// How long a node waits for the node holding a stream to answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a presence query waits for the other nodes' lists.
pub const PRESENCE_WAIT: Duration = Duration::from_millis(500);
/// How often each node reloads the revocations from the store.
pub const REVOCATION_RELOAD: Duration = Duration::from_secs(5);
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
    /// Admin closes asked of the other nodes, by request id.
    closing: Mutex<HashMap<Uuid, oneshot::Sender<()>>>,
    /// This node's streams, which revocations and admins close.
    streams: Arc<OpenStreams>,
    /// The revocations this node's token checks read.
    revocations: Arc<RevocationList>,
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
    /// A revocation was recorded: reload them and close what they cover.
    #[serde(rename_all = "camelCase")]
    Revoked { from: Uuid },
    /// An admin asks the node holding this stream to end it.
    #[serde(rename_all = "camelCase")]
    CloseConnection {
        request_id: Uuid,
        from: Uuid,
        connection_id: Uuid,
    },
    #[serde(rename_all = "camelCase")]
    ConnectionClosed { request_id: Uuid, to: Uuid },
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
        streams: Arc<OpenStreams>,
        revocations: Arc<RevocationList>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let cluster = Arc::new(Cluster {
            node_id,
            store,
            rooms,
            live_nodes,
            waiting: Mutex::new(HashMap::new()),
            gathering: Mutex::new(HashMap::new()),
            closing: Mutex::new(HashMap::new()),
            streams,
            revocations,
        });
        tokio::spawn(Arc::clone(&cluster).listen(stop.clone()));
        tokio::spawn(Arc::clone(&cluster).reload_revocations_every(REVOCATION_RELOAD, stop));
        cluster
    }

    /// Tells every node that a revocation was recorded; this node has
    /// already applied it.
    pub async fn revoked(&self) {
        if self.store.is_shared() {
            self.send(&Message::Revoked { from: self.node_id }).await;
        }
    }

    /// Ends a stream this node does not hold on the node that does; `false`
    /// when no node answered (no such connection).
    pub async fn close_connection(&self, connection_id: Uuid) -> bool {
        if !self.store.is_shared() {
            return false;
        }
        let request_id = Uuid::new_v4();
        let (reply, answer) = oneshot::channel();
        self.closing().insert(request_id, reply);
        let request = Message::CloseConnection {
            request_id,
            from: self.node_id,
            connection_id,
        };
        let closed = self.send(&request).await
            && tokio::time::timeout(REPLY_TIMEOUT, answer)
                .await
                .is_ok_and(|r| r.is_ok());
        self.closing().remove(&request_id);
        closed
    }

    fn closing(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<()>>> {
        self.closing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the revocations in force from the store and closes the
    /// streams of this node they cover. Returns how many it closed.
    pub async fn reload_revocations(&self) -> usize {
        match self.store.revocations().await {
            Ok(revocations) => {
                self.revocations.replace(revocations);
                let list = &self.revocations;
                self.streams
                    .close_matching(|token| list.covers(token), CloseReason::TokenRevoked)
            }
            Err(error) => {
                tracing::warn!(%error, "could not reload revocations; keeping the last list");
                0
            }
        }
    }

    async fn reload_revocations_every(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.reload_revocations().await;
        }
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
        bus::send_json(&*self.store, message, "cluster").await
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
            Message::Revoked { from } => {
                if from != self.node_id {
                    self.reload_revocations().await;
                }
            }
            Message::CloseConnection {
                request_id,
                from,
                connection_id,
            } => {
                if from != self.node_id && self.streams.close(connection_id, CloseReason::ClosedByAdmin) {
                    self.send(&Message::ConnectionClosed { request_id, to: from })
                        .await;
                }
            }
            Message::ConnectionClosed { request_id, to } => {
                if to == self.node_id {
                    if let Some(waiter) = self.closing().remove(&request_id) {
                        let _ = waiter.send(());
                    }
                }
            }
        }
    }
}
