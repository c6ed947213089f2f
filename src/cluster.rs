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
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::topic::Selector;
use crate::rooms::{Op, RoomChange, RoomError, Rooms};
use crate::store::EventStore;

/// How long a node waits for the node holding a stream to answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

type Outcome = Result<RoomChange, RoomError>;

pub struct Cluster {
    node_id: Uuid,
    store: Arc<dyn EventStore>,
    rooms: Arc<Rooms>,
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<Outcome>>>,
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
        join: bool,
        topic: String,
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
        stop: CancellationToken,
    ) -> Arc<Self> {
        let cluster = Arc::new(Cluster {
            node_id,
            store,
            rooms,
            waiting: Mutex::new(HashMap::new()),
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
        topic: &Selector,
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
            join: op == Op::Join,
            topic: topic.as_str().to_string(),
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
                join,
                topic,
            } => {
                // Only the node holding the stream answers; the asking node
                // already looked at its own rooms.
                if from == self.node_id || !self.rooms.holds(connection_id) {
                    return;
                }
                let Ok(selector) = Selector::parse_internal(&topic) else {
                    return;
                };
                let outcome = if join {
                    self.rooms.join(connection_id, &identity, selector).await
                } else {
                    self.rooms.leave(connection_id, &identity, &selector).await
                };
                let reply = Message::Reply {
                    request_id,
                    to: from,
                    outcome: WireOutcome::from(&outcome),
                };
                self.send(&reply).await;
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
