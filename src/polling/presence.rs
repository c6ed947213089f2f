//! Presence of participants: present while at least one of its streams to
//! the session is open, plus a grace period. Open streams are rows in the
//! store (with this node's id), so counts are global across nodes; this
//! task turns stream opens and closes into those rows, in order, checks
//! again when a grace period ends, and heartbeats this node's rows: the
//! rows of a node that stops heartbeating (it crashed) expire after the
//! TTL, and their participants are reported gone. The same heartbeat
//! keeps this node's row in `nodes`, and tells the rest of the service how
//! many nodes are alive (the vote rate limit is shared out among them).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ops::Op;
use super::run_with_retry;
use crate::domain::event::now_millis;
use crate::domain::polling::ids::{ParticipantId, SessionId};
use crate::store::polling::PresenceConnection;
use crate::store::EventStore;

/// The live node count a sweep answered with.
fn live_nodes_in(answer: &crate::store::StoredResponse) -> Option<usize> {
    let body: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
    body["liveNodes"].as_u64().map(|n| n as usize)
}

enum Change {
    Opened(PresenceConnection),
    Closed { id: Uuid, participant: ParticipantId },
}

#[derive(Clone)]
pub struct Presence {
    changes: mpsc::UnboundedSender<Change>,
    node_id: Uuid,
}

/// Held by a participant's stream; dropping it closes the connection row.
pub struct PresenceGuard {
    presence: Presence,
    id: Uuid,
    participant: ParticipantId,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let _ = self.presence.changes.send(Change::Closed {
            id: self.id,
            participant: self.participant,
        });
    }
}

impl Presence {
    pub fn start(
        store: Arc<dyn EventStore>,
        node_id: Uuid,
        grace: Duration,
        ttl: Duration,
        live_nodes: watch::Sender<usize>,
        stop: CancellationToken,
    ) -> Self {
        let (changes, mut incoming) = mpsc::unbounded_channel::<Change>();
        let ttl_chrono = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30));
        tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(ttl / 3);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let change = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = heartbeat.tick() => {
                        let swept = run_with_retry(&store, || Op::PresenceSweep { node_id, ttl: ttl_chrono }).await;
                        if let Some(nodes) = swept.as_ref().and_then(live_nodes_in) {
                            live_nodes.send_if_modified(|known| std::mem::replace(known, nodes) != nodes);
                        }
                        continue;
                    }
                    change = incoming.recv() => match change { Some(c) => c, None => return },
                };
                match change {
                    Change::Opened(connection) => {
                        run_with_retry(&store, || Op::StreamOpened(connection.clone())).await;
                    }
                    Change::Closed { id, participant } => {
                        run_with_retry(&store, || Op::StreamClosed { connection_id: id }).await;
                        let store = Arc::clone(&store);
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = tokio::time::sleep(grace) => {
                                    run_with_retry(&store, || Op::GraceExpired { participant_id: participant }).await;
                                }
                            }
                        });
                    }
                }
            }
        });
        Presence { changes, node_id }
    }

    /// A participant's stream to its session opened.
    pub fn opened(&self, session_id: SessionId, participant_id: ParticipantId) -> PresenceGuard {
        let id = Uuid::new_v4();
        let _ = self.changes.send(Change::Opened(PresenceConnection {
            id,
            node_id: self.node_id,
            session_id,
            participant_id,
            opened_at: now_millis(),
            last_seen: now_millis(),
        }));
        PresenceGuard {
            presence: self.clone(),
            id,
            participant: participant_id,
        }
    }
}
