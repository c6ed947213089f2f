//! Open participant streams, on any node, and the nodes' heartbeats: what
//! presence decides who is in the room with.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::polling::ids::{ParticipantId, SessionId};
use crate::store::error::StoreError;

type R<T> = Result<T, StoreError>;

/// One open participant stream, on some node.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceConnection {
    pub id: Uuid,
    pub node_id: Uuid,
    pub session_id: SessionId,
    pub participant_id: ParticipantId,
    pub opened_at: DateTime<Utc>,
    /// Refreshed by its node while the node lives.
    pub last_seen: DateTime<Utc>,
}

#[async_trait]
pub trait ConnectionRepo: Send {
    async fn open_connection(&mut self, connection: &PresenceConnection) -> R<()>;
    async fn close_connection(&mut self, id: Uuid) -> R<()>;
    async fn connection_count(&mut self, participant: ParticipantId) -> R<i64>;
    /// Marks this node's rows as alive now.
    async fn touch_connections(&mut self, node_id: Uuid, now: DateTime<Utc>) -> R<()>;
    /// Deletes rows not touched since `before` (their node stopped) and
    /// returns the participants they belonged to.
    async fn expire_connections(&mut self, before: DateTime<Utc>) -> R<Vec<ParticipantId>>;
    /// Records this node's heartbeat, forgets nodes silent since `before`,
    /// and returns how many nodes are alive (this one included).
    async fn live_nodes(&mut self, node_id: Uuid, now: DateTime<Utc>, before: DateTime<Utc>) -> R<usize>;
    /// Every node alive by its heartbeat, with that heartbeat, by node id
    /// (the admin console's node list).
    async fn node_heartbeats(&mut self) -> R<Vec<(Uuid, DateTime<Utc>)>>;
}
