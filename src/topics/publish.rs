//! A generic publisher's event: checked against the reserved-topic rules
//! and the version rules, then appended in the writer's transaction. A
//! publish naming an entity is compared with the entity's current version
//! and stamped with the next one inside that transaction, so two
//! publishers racing on one version cannot both win, on any node.

use async_trait::async_trait;

use super::outcome::{PublishOutcome, PublishRejection, Published};
use super::reserved;
use super::versions::{key_of, version_check, EntityVersions, VersionCheck};
use crate::domain::event::{EventType, NewEvent, StoredEvent, TraceId};
use crate::domain::topic::Topic;
use crate::store::{execute, Answer, Command, EventStore, Idempotent, StoreError, Tx};

/// An event as a publisher sent it, on a topic it may write.
#[derive(Debug)]
pub struct PublishRequest {
    pub topic: Topic,
    pub event_type: EventType,
    pub payload: serde_json::Value,
    /// The entity this event changes; its version is kept per topic.
    pub entity_id: Option<String>,
    /// The version the publisher last saw (0: the entity must be new).
    pub expected_version: Option<i64>,
    pub trace_id: TraceId,
}

impl PublishRequest {
    /// The request as a command, or why it is refused before anything is
    /// read: a server-only event type, then a bad entity or version, then
    /// a payload that is not an object.
    pub fn check(self) -> Result<Publish, PublishRejection> {
        reserved::check_event_type(&self.event_type)?;
        let check = version_check(self.entity_id, self.expected_version)?;
        if !self.payload.is_object() {
            return Err(PublishRejection::PayloadNotObject);
        }
        let event = NewEvent::new(self.topic, self.event_type, self.trace_id, &self.payload);
        Ok(Publish {
            event: Some(event),
            check,
        })
    }
}

/// A checked publish, to run in the writer's transaction.
#[derive(Debug)]
pub struct Publish {
    event: Option<NewEvent>,
    check: Option<VersionCheck>,
}

impl Publish {
    /// The event and its version check, for a command that runs several.
    pub(super) fn into_parts(self) -> (Option<NewEvent>, Option<VersionCheck>) {
        (self.event, self.check)
    }
}

/// The event as it is appended: with its entity's next version when it
/// names one (written in this transaction), or the conflict that refuses
/// it.
pub(super) async fn stamped(
    tx: &mut dyn Tx,
    mut event: NewEvent,
    check: Option<VersionCheck>,
) -> Result<Result<NewEvent, PublishRejection>, StoreError> {
    let Some(check) = check else {
        return Ok(Ok(event));
    };
    let mut versions = EntityVersions::read(tx, [key_of(&event, &check)]).await?;
    if let Err(conflict) = versions.stamp(&mut event, check) {
        return Ok(Err(conflict));
    }
    versions.write(tx).await?;
    Ok(Ok(event))
}

/// Appends a checked publish; its outcome once committed (or, for a
/// retried Idempotency-Key, what the key kept).
pub async fn publish(
    store: &dyn EventStore,
    command: Publish,
    idempotency: Option<Idempotent<PublishOutcome>>,
) -> Result<Answer<PublishOutcome>, StoreError> {
    execute(store, command, idempotency).await
}

#[async_trait]
impl Command for Publish {
    type Outcome = PublishOutcome;
    type Decided = Result<(), PublishRejection>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let Some(event) = self.event.take() else {
            return Err(StoreError::internal("a publish ran twice"));
        };
        Ok(match stamped(tx, event, self.check.take()).await? {
            Ok(event) => (vec![event], Ok(())),
            Err(conflict) => (Vec::new(), Err(conflict)),
        })
    }

    fn outcome(decided: Self::Decided, events: &[StoredEvent]) -> PublishOutcome {
        decided?;
        // The store hands back exactly the events `run` returned: one.
        Ok(Published {
            event: events[0].clone(),
        })
    }

    fn touches_tables(&self) -> bool {
        self.check.is_some()
    }

    fn known_event_count(&self) -> Option<usize> {
        // A versioned publish may append nothing (a conflict).
        self.check.is_none().then_some(1)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::topics::outcome::MAX_ENTITY_ID;
    use crate::topics::versions::next_version;

    fn request(entity_id: Option<&str>, expected_version: Option<i64>) -> PublishRequest {
        PublishRequest {
            topic: Topic::parse("orders:1").unwrap(),
            event_type: EventType::parse("order:created").unwrap(),
            payload: json!({"total": 3}),
            entity_id: entity_id.map(str::to_string),
            expected_version,
            trace_id: TraceId::generate(),
        }
    }

    #[test]
    fn an_unversioned_publish_needs_no_tables() {
        let publish = request(None, None).check().unwrap();
        assert!(!publish.touches_tables());
        assert_eq!(publish.known_event_count(), Some(1));
    }

    #[test]
    fn a_versioned_publish_reads_its_entity() {
        let publish = request(Some("order-1"), Some(0)).check().unwrap();
        assert!(publish.touches_tables());
        assert_eq!(publish.known_event_count(), None);
    }

    #[test]
    fn entity_and_version_are_checked() {
        assert_eq!(version_check(None, None), Ok(None));
        assert_eq!(
            version_check(None, Some(1)),
            Err(PublishRejection::VersionWithoutEntity)
        );
        assert_eq!(
            version_check(Some(String::new()), None),
            Err(PublishRejection::BadEntityId)
        );
        assert_eq!(
            version_check(Some("a".repeat(MAX_ENTITY_ID + 1)), None),
            Err(PublishRejection::BadEntityId)
        );
        assert_eq!(
            version_check(Some("a\nb".into()), None),
            Err(PublishRejection::BadEntityId)
        );
        assert!(version_check(Some("é".repeat(MAX_ENTITY_ID)), None).is_ok());
        assert_eq!(
            version_check(Some("a".into()), Some(-1)),
            Err(PublishRejection::NegativeVersion)
        );
        assert_eq!(
            PublishRejection::BadEntityId.message(),
            "entityId must be 1 to 200 characters without control characters"
        );
    }

    #[test]
    fn a_server_event_type_is_refused_before_the_version() {
        let mut input = request(None, Some(1));
        input.event_type = EventType::parse("presence:update").unwrap();
        assert_eq!(
            input.check().unwrap_err(),
            PublishRejection::ServerOnlyEventType {
                domain: "presence".into()
            }
        );
    }

    #[test]
    fn the_payload_must_be_an_object() {
        let mut input = request(None, None);
        input.payload = json!([1]);
        assert_eq!(input.check().unwrap_err(), PublishRejection::PayloadNotObject);
        let mut input = request(None, Some(1));
        input.payload = json!("x");
        assert_eq!(input.check().unwrap_err(), PublishRejection::VersionWithoutEntity);
    }

    #[test]
    fn the_next_version_follows_the_expected_one() {
        let check = version_check(Some("order-1".into()), Some(3)).unwrap().unwrap();
        assert_eq!(next_version(&check, 3), Ok(4));
        let conflict = next_version(&check, 5).unwrap_err();
        assert_eq!(
            conflict,
            PublishRejection::VersionConflict {
                entity_id: "order-1".into(),
                expected: 3,
                current: 5
            }
        );
        assert_eq!(conflict.message(), "entity `order-1` is at version 5, not 3");
        // Without an expected version the entity moves on from wherever it is.
        let check = version_check(Some("order-1".into()), None).unwrap().unwrap();
        assert_eq!(next_version(&check, 7), Ok(8));
    }
}
