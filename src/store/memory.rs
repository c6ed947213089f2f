//! The embedded default: the log in a `Vec` behind a mutex. One process,
//! nothing durable, same semantics as Postgres (ids in commit order,
//! idempotency, retention), so protocol tests can run on it.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};

use super::memory_polling::{MemTx, PollingTables};
use super::{
    is_remembered, replay_or_conflict, AppendOutcome, AppendRequest, CommittedBatch, EventStore, LogBounds,
    StoreError, StoredResponse, TxCommand, COMMITTED_BATCH_BACKLOG, IDEMPOTENCY_WINDOW,
};
use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::revocation::Revocation;

#[derive(Default)]
struct Log {
    /// Events in id order; ids are dense here, but readers never rely on it.
    events: Vec<StoredEvent>,
    next_id: EventId,
    pruned_through: EventId,
    keys: HashMap<(String, String), RememberedKey>,
    polling: PollingTables,
    revocations: Vec<Revocation>,
}

struct RememberedKey {
    fingerprint: String,
    response: StoredResponse,
    at: DateTime<Utc>,
}

impl Log {
    /// Index of the first event with an id greater than `after`.
    fn position_after(&self, after: EventId) -> usize {
        self.events.partition_point(|e| e.id <= after)
    }

    fn matching<'a>(
        &'a self,
        after: EventId,
        up_to: EventId,
        filter: &'a TopicFilter,
    ) -> impl Iterator<Item = &'a StoredEvent> + 'a {
        self.events[self.position_after(after)..]
            .iter()
            .take_while(move |e| e.id <= up_to)
            .filter(move |e| filter.matches(e.topic.as_str()))
    }
}

pub struct MemoryStore {
    /// An async lock: commands await while holding it, which is what makes
    /// each one a transaction here.
    log: tokio::sync::Mutex<Log>,
    hints: watch::Sender<EventId>,
    batches: broadcast::Sender<CommittedBatch>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            log: tokio::sync::Mutex::new(Log {
                next_id: 1,
                ..Log::default()
            }),
            hints: watch::channel(0).0,
            batches: broadcast::channel(COMMITTED_BATCH_BACKLOG).0,
        }
    }

    async fn lock(&self) -> tokio::sync::MutexGuard<'_, Log> {
        self.log.lock().await
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, mut request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let mut log = self.lock().await;
        request.command.start();
        if let Some(key) = &request.idempotency {
            if let Some(seen) = log.keys.get(&(key.scope.clone(), key.key.clone())) {
                return Ok(replay_or_conflict(key, &seen.fingerprint, &seen.response));
            }
        }
        let head = log.next_id - 1;
        let before = head;
        let output = request
            .command
            .run(&mut MemTx {
                tables: &mut log.polling,
                head,
            })
            .await?;
        let mut committed = Vec::with_capacity(output.events.len());
        for event in output.events {
            let id = log.next_id;
            log.next_id += 1;
            committed.push(StoredEvent::from_new(id, event));
        }
        log.events.extend(committed.iter().cloned());
        let response = (output.respond)(&committed);
        if let Some(key) = request.idempotency.filter(|_| is_remembered(&response)) {
            log.keys.insert(
                (key.scope, key.key),
                RememberedKey {
                    fingerprint: key.fingerprint,
                    response: response.clone(),
                    at: Utc::now(),
                },
            );
        }
        let head = log.next_id - 1;
        if !committed.is_empty() {
            // Sent under the log's lock, so batches go out in id order.
            crate::metrics::events_appended(committed.len());
            let _ = self.batches.send(CommittedBatch {
                after: before,
                events: committed.into(),
            });
            drop(log);
            self.hints.send_replace(head);
        }
        Ok(AppendOutcome::Committed { response })
    }

    async fn read(&self, command: Box<dyn TxCommand>) -> Result<StoredResponse, StoreError> {
        let mut log = self.lock().await;
        let head = log.next_id - 1;
        let output = command
            .run(&mut MemTx {
                tables: &mut log.polling,
                head,
            })
            .await?;
        Ok((output.respond)(&[]))
    }

    async fn read_range(
        &self,
        after: EventId,
        up_to: EventId,
        filter: &TopicFilter,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let log = self.lock().await;
        Ok(log.matching(after, up_to, filter).take(limit).cloned().collect())
    }

    async fn count_range(
        &self,
        after: EventId,
        up_to: EventId,
        filter: &TopicFilter,
    ) -> Result<u64, StoreError> {
        Ok(self.lock().await.matching(after, up_to, filter).count() as u64)
    }

    async fn bounds(&self) -> Result<LogBounds, StoreError> {
        let log = self.lock().await;
        Ok(LogBounds {
            pruned_through: log.pruned_through,
            head: log.events.last().map_or(log.pruned_through, |e| e.id),
        })
    }

    async fn prune(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut log = self.lock().await;
        // Drop a prefix, like the Postgres path: everything up to the last
        // event older than the cutoff.
        let dropped = log
            .events
            .iter()
            .rposition(|e| e.timestamp < cutoff)
            .map_or(0, |i| i + 1);
        if dropped > 0 {
            log.pruned_through = log.events[dropped - 1].id;
            log.events.drain(..dropped);
        }
        let key_cutoff = Utc::now() - IDEMPOTENCY_WINDOW;
        log.keys.retain(|_, k| k.at >= key_cutoff);
        Ok(dropped as u64)
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        self.lock().await.revocations.push(revocation.clone());
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let now = Utc::now();
        let mut log = self.lock().await;
        log.revocations.retain(|r| r.until > now);
        Ok(log.revocations.clone())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn commit_hints(&self) -> watch::Receiver<EventId> {
        self.hints.subscribe()
    }

    fn committed_batches(&self) -> broadcast::Receiver<CommittedBatch> {
        self.batches.subscribe()
    }

    /// One process, one node: nobody else is on the bus.
    fn bus_messages(&self) -> broadcast::Receiver<String> {
        broadcast::channel(1).1
    }

    async fn bus_send(&self, _message: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
