//! Several events in one commit (`POST /v1/events`): each checked as a
//! single publish is, all appended in one transaction with consecutive
//! ids, or none. A version conflict on any of them refuses the whole
//! request and names which one.

use async_trait::async_trait;

use super::outcome::PublishRejection;
use super::publish::Publish;
use super::versions::{key_of, EntityVersions};
use crate::domain::event::{NewEvent, StoredEvent};
use crate::store::{execute, Answer, Command, EventStore, Idempotent, StoreError, Tx};

/// The most events one request may carry.
pub const MAX_EVENTS: usize = 100;

/// What a request of several publishes comes back with: every event as
/// stored, in the order sent, or why none was (and which one).
pub type ManyOutcome = Result<Vec<StoredEvent>, ManyRejection>;

/// A refused request of several publishes: the item at `index` (from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManyRejection {
    pub index: usize,
    pub rejection: PublishRejection,
}

/// Checked publishes, to run in one transaction of the writer.
#[derive(Debug)]
pub struct PublishMany {
    items: Vec<Publish>,
    /// How many of them name an entity (and so read and write a version).
    versioned: usize,
}

impl PublishMany {
    /// 1 to [`MAX_EVENTS`] checked publishes; `None` for more or none.
    pub fn new(items: Vec<Publish>, versioned: usize) -> Option<Self> {
        (1..=MAX_EVENTS)
            .contains(&items.len())
            .then_some(PublishMany { items, versioned })
    }
}

/// Appends the publishes together; the outcome once committed (or, for a
/// retried Idempotency-Key, what the key kept).
pub async fn publish_many(
    store: &dyn EventStore,
    command: PublishMany,
    idempotency: Option<Idempotent<ManyOutcome>>,
) -> Result<Answer<ManyOutcome>, StoreError> {
    execute(store, command, idempotency).await
}

#[async_trait]
impl Command for PublishMany {
    type Outcome = ManyOutcome;
    type Decided = Result<(), ManyRejection>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        // Every version is decided before any is written, so a conflict on
        // one item leaves no other's version moved. Items naming the same
        // entity follow each other, in the order sent.
        let mut items = Vec::with_capacity(self.items.len());
        for item in std::mem::take(&mut self.items) {
            let (Some(event), check) = item.into_parts() else {
                return Err(StoreError::internal("a publish ran twice"));
            };
            items.push((event, check));
        }
        let keys = items
            .iter()
            .filter_map(|(event, check)| check.as_ref().map(|check| key_of(event, check)));
        let mut versions = EntityVersions::read(tx, keys).await?;
        let mut events = Vec::with_capacity(items.len());
        for (index, (mut event, check)) in items.into_iter().enumerate() {
            if let Some(check) = check {
                if let Err(rejection) = versions.stamp(&mut event, check) {
                    return Ok((Vec::new(), Err(ManyRejection { index, rejection })));
                }
            }
            events.push(event);
        }
        versions.write(tx).await?;
        Ok((events, Ok(())))
    }

    fn outcome(decided: Self::Decided, events: &[StoredEvent]) -> ManyOutcome {
        decided?;
        Ok(events.to_vec())
    }

    fn touches_tables(&self) -> bool {
        self.versioned > 0
    }

    fn known_event_count(&self) -> Option<usize> {
        (self.versioned == 0).then_some(self.items.len())
    }
}
