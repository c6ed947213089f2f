//! The embedded default: the log in a `VecDeque` behind a mutex. One
//! process, nothing durable, same semantics as Postgres (ids in commit
//! order, idempotency, retention), so protocol tests can run on it.
//!
//! Bounded, because it is what `make run` starts with no setup: past its
//! [`MemoryBudget`] of events or bytes the oldest events are dropped, just
//! as retention drops them on Postgres (a client resuming from one gets
//! `connection:reset`), and past its row budget new live polling rows are
//! refused (`StoreError::Full`). Publishing 50 KB events with stalled
//! subscribers once took it from 9 MB to 1.29 GB in 20 s.

mod log;
mod tables;
mod tx;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};

pub use log::MemoryBudget;

use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::revocation::Revocation;
use crate::store::command::TxCommand;
use crate::store::error::StoreError;
use crate::store::event_store::{
    replay_or_conflict, AppendOutcome, AppendRequest, CommittedBatch, EventStore, LogBounds,
    COMMITTED_BATCH_BACKLOG, IDEMPOTENCY_WINDOW,
};
use log::{event_size, Log, RememberedKey};
use tables::PollingTables;
use tx::MemTx;

pub struct MemoryStore {
    /// An async lock: commands await while holding it, which is what makes
    /// each one a transaction here.
    log: tokio::sync::Mutex<Log>,
    hints: watch::Sender<EventId>,
    batches: broadcast::Sender<CommittedBatch>,
    /// The webhooks, with their cursors: in memory like the log.
    webhooks: Arc<webhooks::MemoryWebhooks>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_budget(MemoryBudget::default())
    }

    pub fn with_budget(budget: MemoryBudget) -> Self {
        MemoryStore {
            log: tokio::sync::Mutex::new(Log {
                next_id: 1,
                budget,
                polling: PollingTables::with_max_rows(budget.max_rows),
                ..Log::default()
            }),
            hints: watch::channel(0).0,
            batches: broadcast::channel(COMMITTED_BATCH_BACKLOG).0,
            webhooks: Arc::default(),
        }
    }

    async fn lock(&self) -> tokio::sync::MutexGuard<'_, Log> {
        self.log.lock().await
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let AppendRequest {
            mut command,
            idempotency,
        } = request;
        let mut log = self.lock().await;
        command.start();
        if let Some(key) = &idempotency {
            if let Some(seen) = log.keys.get(&(key.scope.clone(), key.key.clone())) {
                return Ok(replay_or_conflict(key, &seen.fingerprint, &seen.answer));
            }
        }
        let head = log.next_id - 1;
        let before = head;
        let events = command
            .run(&mut MemTx {
                tables: &mut log.polling,
                head,
            })
            .await?;
        let mut committed = Vec::with_capacity(events.len());
        for event in events {
            let id = log.next_id;
            log.next_id += 1;
            committed.push(StoredEvent::from_new(id, event));
        }
        log.bytes += committed.iter().map(event_size).sum::<usize>();
        log.events.extend(committed.iter().cloned());
        let dropped = log.enforce_budget();
        if dropped > 0 {
            tracing::debug!(dropped, "memory store over budget: dropped its oldest events");
        }
        let remembered = command.settle(&committed);
        let keys_full = log.keys.len() + log.polling.rows() >= log.budget.max_rows;
        if let (Some(key), Some(answer)) = (idempotency.filter(|_| !keys_full), remembered) {
            log.keys.insert(
                (key.scope, key.key),
                RememberedKey {
                    fingerprint: key.fingerprint,
                    answer,
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
        command.deliver();
        Ok(AppendOutcome::Committed)
    }

    async fn read(&self, mut command: Box<dyn TxCommand>) -> Result<(), StoreError> {
        let mut log = self.lock().await;
        let head = log.next_id - 1;
        command
            .run(&mut MemTx {
                tables: &mut log.polling,
                head,
            })
            .await?;
        drop(log);
        command.settle(&[]);
        command.deliver();
        Ok(())
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
            head: log.events.back().map_or(log.pruned_through, |e| e.id),
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
            let gone: usize = log.events.drain(..dropped).map(|e| event_size(&e)).sum();
            log.bytes -= gone;
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

    fn has_outbox(&self) -> bool {
        false
    }

    async fn outbox_waiting(&self) -> Result<bool, StoreError> {
        Ok(false)
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

    fn webhooks(&self) -> Arc<dyn crate::store::webhooks::WebhookStore> {
        self.webhooks.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{EventType, NewEvent, TraceId};
    use crate::domain::topic::Topic;

    async fn publish(store: &MemoryStore, size: usize) {
        let event = NewEvent::new(
            Topic::parse("demo:a").unwrap(),
            EventType::parse("demo:said").unwrap(),
            TraceId::generate(),
            &serde_json::json!({ "blob": "x".repeat(size) }),
        );
        crate::store::execute(store, crate::store::Append { events: vec![event] }, None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn past_its_budget_the_oldest_events_go_as_retention_would() {
        let store = MemoryStore::with_budget(MemoryBudget {
            max_events: 5,
            max_bytes: 1 << 20,
            max_rows: 100,
        });
        for _ in 0..12 {
            publish(&store, 10).await;
        }
        let bounds = store.bounds().await.unwrap();
        assert_eq!((bounds.pruned_through, bounds.head), (7, 12));
        let kept = store
            .read_range(0, 12, &TopicFilter::everything(), 100)
            .await
            .unwrap();
        assert_eq!(
            kept.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![8, 9, 10, 11, 12]
        );

        // By bytes: 10 KB events in a 32 KiB budget keep three at most.
        let store = MemoryStore::with_budget(MemoryBudget {
            max_events: 1_000,
            max_bytes: 32 << 10,
            max_rows: 100,
        });
        for _ in 0..10 {
            publish(&store, 10_000).await;
        }
        let kept = store
            .read_range(0, 10, &TopicFilter::everything(), 100)
            .await
            .unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(store.bounds().await.unwrap().pruned_through, 7);
    }
}
