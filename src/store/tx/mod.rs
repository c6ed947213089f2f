//! One store transaction as a command sees it: a handful of small
//! repositories, each a trait of its own, which both backends implement
//! (Postgres on its writer's or a reader's transaction, the memory store
//! on its maps while it holds its lock).
//!
//! | repository | what it keeps | used by |
//! |---|---|---|
//! | [`LogRepo`] | the event log's head | every snapshot read |
//! | [`SessionRepo`], [`PollRepo`], [`ParticipantRepo`], [`VoteRepo`] | live polling's tables | `crate::polling` |
//! | [`ConnectionRepo`] | open participant streams, node heartbeats | presence |
//! | [`VersionRepo`] | entity versions on generic topics | versioned publish |
//! | [`OutboxRepo`] | publishes made from SQL, waiting for the log | the outbox drain |
//!
//! Events are not written through a repository: a command returns them
//! and the store's writer appends them, with their ids, after it. Nor are
//! idempotency keys: the writer keeps and looks them up around the
//! commands (`postgres/statements.rs`, `memory/log.rs`).
//! Writes only ever happen inside the writer's batch, under the log lock.

mod outbox;
mod polling;
mod presence;
mod topics;

use async_trait::async_trait;

pub use outbox::{OutboxRepo, OutboxRow};
pub use polling::{BallotReads, ParticipantRepo, PollRepo, SessionRepo, VoteRecord, VoteRepo, Voters};
pub use presence::{ConnectionRepo, PresenceConnection};
pub use topics::{EntityKey, VersionRepo};

use super::error::StoreError;
use crate::domain::event::EventId;

/// What a transaction sees of the event log itself.
#[async_trait]
pub trait LogRepo: Send {
    /// The highest event id visible to this transaction.
    async fn head_event_id(&mut self) -> Result<EventId, StoreError>;
}

/// Everything a command may use inside its transaction.
pub trait Tx:
    LogRepo + SessionRepo + PollRepo + ParticipantRepo + VoteRepo + ConnectionRepo + VersionRepo + OutboxRepo
{
}

impl<T> Tx for T where
    T: LogRepo
        + SessionRepo
        + PollRepo
        + ParticipantRepo
        + VoteRepo
        + ConnectionRepo
        + VersionRepo
        + OutboxRepo
{
}
