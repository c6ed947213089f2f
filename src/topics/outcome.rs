//! What the topics service comes back with: typed outcomes and the
//! reasons a request is refused. The HTTP edge turns them into statuses
//! and bodies; nothing here knows either.

use crate::domain::event::{EventId, StoredEvent};
use crate::rooms::PresenceRecord;

/// Who writes a reserved topic, in the words a refusal uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// `system`: the server's own notices.
    Server,
    /// `session:*`, `participant:*`: the live polling service.
    Polling,
}

impl Owner {
    /// Who that is, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Owner::Server => "the server itself",
            Owner::Polling => "the live polling API",
        }
    }
}

/// Longest `entityId` accepted: ids of other systems, not documents.
pub const MAX_ENTITY_ID: usize = 200;

/// Why a publish was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRejection {
    /// The topic is written only by its owner (`kind` is its first segment).
    ReservedTopic { kind: String, owner: Owner },
    /// The event type is one only the server sends (`domain` is its first
    /// segment).
    ServerOnlyEventType { domain: String },
    /// An `expectedVersion` without the `entityId` it is the version of.
    VersionWithoutEntity,
    /// An `entityId` empty, too long or with control characters.
    BadEntityId,
    /// An `expectedVersion` below 0.
    NegativeVersion,
    /// A payload that is not a JSON object.
    PayloadNotObject,
    /// The entity was not at the version the publisher expected.
    VersionConflict {
        entity_id: String,
        expected: i64,
        current: i64,
    },
}

impl PublishRejection {
    /// What it says to people.
    pub fn message(&self) -> String {
        match self {
            PublishRejection::ReservedTopic { kind, owner } => {
                format!("`{kind}:*` topics are written only by {}", owner.describe())
            }
            PublishRejection::ServerOnlyEventType { domain } => {
                format!("`{domain}:*` event types are sent only by the server")
            }
            PublishRejection::VersionWithoutEntity => "expectedVersion needs an entityId".into(),
            PublishRejection::BadEntityId => {
                format!("entityId must be 1 to {MAX_ENTITY_ID} characters without control characters")
            }
            PublishRejection::NegativeVersion => "expectedVersion must be 0 or more".into(),
            PublishRejection::PayloadNotObject => "payload must be a JSON object".into(),
            PublishRejection::VersionConflict {
                entity_id,
                expected,
                current,
            } => format!("entity `{entity_id}` is at version {current}, not {expected}"),
        }
    }
}

/// A publish that was appended: the event as stored, with its id and, when
/// it named an entity, the version it gave it.
#[derive(Debug, Clone)]
pub struct Published {
    pub event: StoredEvent,
}

/// What a publish comes to.
pub type PublishOutcome = Result<Published, PublishRejection>;

/// Why a history read was refused: the client's cursor is not one the
/// log can continue from, so it must resync from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRejection {
    /// Events after `after` were dropped by retention.
    Pruned { after: EventId },
    /// `after` is beyond every id this node has seen.
    Unknown { after: EventId },
}

impl HistoryRejection {
    /// What it says to people.
    pub fn message(&self) -> String {
        match self {
            HistoryRejection::Pruned { after } => {
                format!("events after {after} are no longer retained; resync from a snapshot")
            }
            HistoryRejection::Unknown { after } => {
                format!("event id {after} is unknown; resync from a snapshot")
            }
        }
    }
}

/// Why a presence list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceRejection {
    /// A participant's own topic: who reads it is nobody else's business.
    PrivateTopic,
}

impl PresenceRejection {
    /// What it says to people.
    pub fn message(&self) -> &'static str {
        match self {
            PresenceRejection::PrivateTopic => "a participant's topic has no presence list",
        }
    }
}

/// Who is on a topic, across nodes: every present stream, oldest first,
/// and how many distinct users they belong to (anonymous streams count as
/// connections only).
#[derive(Debug, Clone)]
pub struct PresenceList {
    pub present: Vec<PresenceRecord>,
    pub users: usize,
}
