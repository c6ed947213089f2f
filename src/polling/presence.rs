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

use async_trait::async_trait;

use super::context::{Ctx, SessionKey, Stamp};
use super::projection::apply;
use super::retry::run_with_retry;
use crate::domain::event::{now_millis, NewEvent, StoredEvent, TraceId};
use crate::domain::polling::ids::{ParticipantId, SessionId};
use crate::domain::polling::{decide, Command as Rule};
use crate::store::tx::PresenceConnection;
use crate::store::Tx;
use crate::store::{Command, EventStore, StoreError};

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
                        let swept = run_with_retry(&store, || Sweep { node_id, ttl: ttl_chrono, stamp: stamp() }).await;
                        if let Some(nodes) = swept {
                            live_nodes.send_if_modified(|known| std::mem::replace(known, nodes) != nodes);
                        }
                        continue;
                    }
                    change = incoming.recv() => match change { Some(c) => c, None => return },
                };
                match change {
                    Change::Opened(connection) => {
                        run_with_retry(&store, || StreamOpened {
                            connection: connection.clone(),
                            stamp: stamp(),
                        })
                        .await;
                    }
                    Change::Closed { id, participant } => {
                        run_with_retry(&store, || StreamClosed { connection_id: id }).await;
                        let store = Arc::clone(&store);
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = tokio::time::sleep(grace) => {
                                    run_with_retry(&store, || GraceExpired { participant_id: participant, stamp: stamp() }).await;
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

/// A background change's stamp: a trace id of its own, now.
fn stamp() -> Stamp {
    Stamp::new(TraceId::generate())
}

/// A participant's stream opened: its row, and `participant:joined` again
/// if it was absent.
struct StreamOpened {
    connection: PresenceConnection,
    stamp: Stamp,
}

#[async_trait]
impl Command for StreamOpened {
    type Outcome = ();
    type Decided = ();

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, ()), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        ctx.tx.open_connection(&self.connection).await?;
        Ok((mark(&mut ctx, self.connection.participant_id, true).await?, ()))
    }

    fn outcome(_: (), _: &[StoredEvent]) {}
}

/// A participant's stream closed: its row goes (the grace period decides
/// whether the participant left).
struct StreamClosed {
    connection_id: Uuid,
}

#[async_trait]
impl Command for StreamClosed {
    type Outcome = ();
    type Decided = ();

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, ()), StoreError> {
        tx.close_connection(self.connection_id).await?;
        Ok((Vec::new(), ()))
    }

    fn outcome(_: (), _: &[StoredEvent]) {}
}

/// A grace period ended: the participant left, unless one of its streams
/// is open again.
struct GraceExpired {
    participant_id: ParticipantId,
    stamp: Stamp,
}

#[async_trait]
impl Command for GraceExpired {
    type Outcome = ();
    type Decided = ();

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, ()), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        if ctx.tx.connection_count(self.participant_id).await? > 0 {
            return Ok((Vec::new(), ()));
        }
        Ok((mark(&mut ctx, self.participant_id, false).await?, ()))
    }

    fn outcome(_: (), _: &[StoredEvent]) {}
}

/// A node's heartbeat: keep its stream rows alive, expire those of nodes
/// that stopped (their participants are marked absent), and count the
/// nodes alive.
struct Sweep {
    node_id: Uuid,
    ttl: chrono::Duration,
    stamp: Stamp,
}

#[async_trait]
impl Command for Sweep {
    /// How many nodes are alive, this one included.
    type Outcome = usize;
    type Decided = usize;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, usize), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let at = ctx.at();
        ctx.tx.touch_connections(self.node_id, at).await?;
        let live_nodes = ctx.tx.live_nodes(self.node_id, at, at - self.ttl).await?;
        let orphaned = ctx.tx.expire_connections(at - self.ttl).await?;
        let mut events = Vec::new();
        for participant_id in orphaned {
            if ctx.tx.connection_count(participant_id).await? == 0 {
                events.extend(mark(&mut ctx, participant_id, false).await?);
            }
        }
        Ok((events, live_nodes))
    }

    fn outcome(live_nodes: usize, _: &[StoredEvent]) -> usize {
        live_nodes
    }
}

/// Marks a participant present or absent, with the events that says so
/// (none when nothing changes, or the participant is unknown).
async fn mark(
    ctx: &mut Ctx<'_>,
    participant_id: ParticipantId,
    present: bool,
) -> Result<Vec<NewEvent>, StoreError> {
    let Some(participant) = ctx.tx.participant(participant_id).await? else {
        return Ok(Vec::new());
    };
    let session = match ctx.session(&SessionKey::Id(participant.session_id)).await {
        Ok(session) => session,
        Err(super::context::Stop::Store(error)) => return Err(error),
        Err(super::context::Stop::Refused(_)) => return Ok(Vec::new()),
    };
    let mut state = ctx.state_of(session, Vec::new()).await?;
    state.participant = Some(participant);
    let at = ctx.at();
    let rule = if present {
        Rule::MarkPresent { participant_id, at }
    } else {
        Rule::MarkAbsent { participant_id, at }
    };
    let Ok(events) = decide(&state, rule) else {
        return Ok(Vec::new());
    };
    apply(ctx, &state, &events).await?;
    Ok(ctx.events(&events))
}
