//! The memory store's state: its events in id order within a budget, the
//! idempotency keys it remembers, live polling's tables and revocations.
//! The store holds it behind one lock; holding it is the transaction.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use super::tables::PollingTables;
use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::revocation::Revocation;
use crate::store::command::Remembered;

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
pub(super) fn event_size(event: &StoredEvent) -> usize {
    event.payload.get().len()
        + event.topic.as_str().len()
        + event.event_type.as_str().len()
        + event.trace_id.as_str().len()
        + event.entity.as_ref().map_or(0, |e| e.entity_id.len())
        + 160
}

#[derive(Default)]
pub(super) struct Log {
    /// Events in id order; ids are dense here, but readers never rely on it.
    pub(super) events: VecDeque<StoredEvent>,
    /// The sum of [`event_size`] over `events`.
    pub(super) bytes: usize,
    pub(super) budget: MemoryBudget,
    pub(super) next_id: EventId,
    pub(super) pruned_through: EventId,
    pub(super) keys: HashMap<(String, String), RememberedKey>,
    pub(super) polling: PollingTables,
    pub(super) revocations: Vec<Revocation>,
}

pub(super) struct RememberedKey {
    pub(super) fingerprint: String,
    pub(super) answer: Remembered,
    pub(super) at: DateTime<Utc>,
}

impl Log {
    /// Index of the first event with an id greater than `after`.
    pub(super) fn position_after(&self, after: EventId) -> usize {
        self.events.partition_point(|e| e.id <= after)
    }

    pub(super) fn matching<'a>(
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
    pub(super) fn enforce_budget(&mut self) -> usize {
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
