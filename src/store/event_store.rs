//! The event log: one trait, two backends (`postgres` for durability and
//! several nodes, `memory` for the zero-setup default).
//!
//! Every write goes through [`EventStore::append`], which resolves only after
//! the events are committed with their final ids; every read is by id range.
//! Idempotency keys live here too, because a key must be recorded in the
//! same transaction as the events it produced.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::command::{Remembered, TxCommand};
use super::error::StoreError;
use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;

/// A client's `Idempotency-Key`, scoped to the caller and fingerprinted
/// with the request, so a retry is recognised and a reuse is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Whose key it is: the caller's identity.
    pub scope: String,
    pub key: String,
    /// Hash of the route and body; a different request under the same key is a conflict.
    pub fingerprint: String,
}

/// One command: its events are committed together or not at all.
pub struct AppendRequest {
    pub command: Box<dyn TxCommand>,
    pub idempotency: Option<IdempotencyKey>,
}

/// What became of an [`AppendRequest`].
#[derive(Debug)]
pub enum AppendOutcome {
    /// The command's events were committed (the tail gets them from the
    /// store's committed batches); its outcome went to its own channel.
    Committed,
    /// The key was seen before with the same request: nothing appended,
    /// here is what it kept of the first answer.
    Replayed(Remembered),
    /// The key was seen before with a different request: nothing appended.
    KeyReused,
}

/// Where the log starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Every id up to this one has been dropped by retention (0: none).
    pub pruned_through: EventId,
    /// The highest committed id (or `pruned_through` when the log is empty).
    pub head: EventId,
}

/// How long an idempotency key is remembered (CONTRACT §6).
pub const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Runs the request's command in the writer's transaction and commits
    /// its events with their ids; the command's outcome goes to its own
    /// channel (see `store::execute`). Ids are assigned in commit order
    /// across every writer of the store.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// Runs a command on a consistent read-only snapshot; its events, if
    /// any, are discarded, its outcome goes to its own channel (see
    /// `store::query`).
    async fn read(&self, command: Box<dyn TxCommand>) -> Result<(), StoreError>;

    /// Events with `after < id <= up_to` whose topic passes `filter`, in id
    /// order, at most `limit` of them.
    async fn read_range(
        &self,
        after: EventId,
        up_to: EventId,
        filter: &TopicFilter,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// How many events `read_range` would return without a limit.
    async fn count_range(
        &self,
        after: EventId,
        up_to: EventId,
        filter: &TopicFilter,
    ) -> Result<u64, StoreError>;

    async fn bounds(&self) -> Result<LogBounds, StoreError>;

    /// The one maintenance path that removes events: drops the prefix of the
    /// log older than `cutoff`, and idempotency keys older than their window.
    /// Returns how many events were dropped.
    async fn prune(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Records a revocation (see [`crate::revocation`]).
    async fn revoke(&self, revocation: &crate::revocation::Revocation) -> Result<(), StoreError>;

    /// The revocations still in force.
    async fn revocations(&self) -> Result<Vec<crate::revocation::Revocation>, StoreError>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Hints that new events may be committed: the value is the highest id
    /// known to be committed. Readers treat it as a wake-up, not as truth.
    fn commit_hints(&self) -> watch::Receiver<EventId>;

    /// The batches this node commits, as they commit: the tail publishes
    /// them without reading them back when nothing from another node came
    /// in between. A lagging receiver just reads the store instead.
    fn committed_batches(&self) -> broadcast::Receiver<CommittedBatch>;

    /// Messages other nodes sent on the cluster bus (`crate::cluster`);
    /// a single-node store never delivers any.
    fn bus_messages(&self) -> broadcast::Receiver<String>;

    /// Sends a message to every node's [`EventStore::bus_messages`],
    /// this one's included. At most about 7,000 bytes (NOTIFY's limit).
    async fn bus_send(&self, message: &str) -> Result<(), StoreError>;

    /// Whether applications can publish from SQL into this store's outbox
    /// (`pollcast.publish`), so that a node must drain it. The memory
    /// store has no SQL.
    fn has_outbox(&self) -> bool;

    /// Whether a committed row waits in the outbox: one statement, no
    /// transaction and no lock (the drain asks 40 times a second).
    async fn outbox_waiting(&self) -> Result<bool, StoreError>;

    /// Whether other nodes may share this store (and its bus).
    fn is_shared(&self) -> bool;

    /// `"postgres"` or `"memory"` (which keeps nothing across a restart),
    /// for logs, metrics and the snapshot's `storage`.
    fn kind(&self) -> &'static str;

    /// The webhooks kept beside this log (`crate::webhooks` delivers them).
    fn webhooks(&self) -> Arc<dyn super::webhooks::WebhookStore>;
}

/// Events one node just committed, and where the log stood before them.
#[derive(Debug, Clone)]
pub struct CommittedBatch {
    /// Every event with an id up to this one was committed before the
    /// batch; the batch's ids are all greater.
    pub after: EventId,
    pub events: Arc<[StoredEvent]>,
}

/// Batches kept for a tail that is busy; past that it reads the store.
pub(crate) const COMMITTED_BATCH_BACKLOG: usize = 1024;

/// Decides a keyed request against what the store already remembers.
pub(crate) fn replay_or_conflict(
    key: &IdempotencyKey,
    fingerprint: &str,
    remembered: &Remembered,
) -> AppendOutcome {
    if key.fingerprint == fingerprint {
        AppendOutcome::Replayed(remembered.clone())
    } else {
        AppendOutcome::KeyReused
    }
}
