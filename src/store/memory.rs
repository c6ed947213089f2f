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

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};

use super::memory_polling::{MemTx, PollingTables};
use super::{
    replay_or_conflict, AppendOutcome, AppendRequest, CommittedBatch, EventStore, LogBounds, Remembered,
    StoreError, TxCommand, COMMITTED_BATCH_BACKLOG, IDEMPOTENCY_WINDOW,
};
use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::revocation::Revocation;

/// How much the memory store keeps.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBudget {
    /// Events kept; the oldest go first.
    pub max_events: usize,
    /// Bytes of events kept (see [`event_size`]); the oldest go first.
    pub max_bytes: usize,
    /// Live polling rows and idempotency keys; new ones are refused past it.
    pub max_rows: usize,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget {
            max_events: 100_000,
            max_bytes: 64 << 20,
            max_rows: 1_000_000,
        }
    }
}

/// About how many bytes an event takes in memory: its text plus the
/// allocations around it.
fn event_size(event: &StoredEvent) -> usize {
    event.payload.get().len()
        + event.topic.as_str().len()
        + event.event_type.as_str().len()
        + event.trace_id.as_str().len()
        + event.entity.as_ref().map_or(0, |e| e.entity_id.len())
        + 160
}

#[derive(Default)]
struct Log {
    /// Events in id order; ids are dense here, but readers never rely on it.
    events: VecDeque<StoredEvent>,
    /// The sum of [`event_size`] over `events`.
    bytes: usize,
    budget: MemoryBudget,
    next_id: EventId,
    pruned_through: EventId,
    keys: HashMap<(String, String), RememberedKey>,
    polling: PollingTables,
    revocations: Vec<Revocation>,
}

struct RememberedKey {
    fingerprint: String,
    answer: Remembered,
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
        self.events
            .range(self.position_after(after)..)
            .take_while(move |e| e.id <= up_to)
            .filter(move |e| filter.matches(e.topic.as_str()))
    }

    /// Drops the oldest events while the log is over its budget.
    fn enforce_budget(&mut self) -> usize {
        let mut dropped = 0;
        while self.events.len() > self.budget.max_events || self.bytes > self.budget.max_bytes {
            let Some(oldest) = self.events.pop_front() else {
                break;
            };
            self.bytes -= event_size(&oldest);
            self.pruned_through = oldest.id;
            dropped += 1;
        }
        dropped
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
        crate::store::command::execute(store, crate::store::Append { events: vec![event] }, None)
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
