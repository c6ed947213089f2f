//! Entity versions: the rules of `entityId` / `expectedVersion` (pure), and
//! the versions decided for a whole command: read in one statement before
//! any is decided, stamped on the events by those rules, written in one
//! statement after. A publish-many or an outbox drain naming one
//! entity a hundred times reads and writes it once, and a thousand
//! entities cost two statements, not two thousand, while the writer holds
//! the log's lock.

use std::collections::{HashMap, HashSet};

use super::outcome::{PublishRejection, MAX_ENTITY_ID};
use crate::domain::event::{EntityVersion, NewEvent};
use crate::store::tx::EntityKey;
use crate::store::{StoreError, Tx};

/// `entityId` / `expectedVersion` of a publish, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCheck {
    entity_id: String,
    expected: Option<i64>,
}

impl VersionCheck {
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }
}

/// Checks an `entityId` and `expectedVersion` pair: `None` when the publish
/// names no entity.
pub fn version_check(
    entity_id: Option<String>,
    expected: Option<i64>,
) -> Result<Option<VersionCheck>, PublishRejection> {
    let Some(entity_id) = entity_id else {
        if expected.is_some() {
            return Err(PublishRejection::VersionWithoutEntity);
        }
        return Ok(None);
    };
    if entity_id.is_empty()
        || entity_id.chars().count() > MAX_ENTITY_ID
        || entity_id.chars().any(char::is_control)
    {
        return Err(PublishRejection::BadEntityId);
    }
    if expected.is_some_and(|v| v < 0) {
        return Err(PublishRejection::NegativeVersion);
    }
    Ok(Some(VersionCheck { entity_id, expected }))
}

/// The version an entity at `current` gets from a publish: the next one,
/// unless the publisher expected another.
pub fn next_version(check: &VersionCheck, current: i64) -> Result<i64, PublishRejection> {
    match check.expected {
        Some(expected) if expected != current => Err(PublishRejection::VersionConflict {
            entity_id: check.entity_id.clone(),
            expected,
            current,
        }),
        _ => Ok(current + 1),
    }
}

/// The entity an event with this check is about.
pub fn key_of(event: &NewEvent, check: &VersionCheck) -> EntityKey {
    (event.topic.as_str().to_string(), check.entity_id().to_string())
}

/// The versions of the entities one command's events name.
#[derive(Debug, Default)]
pub struct EntityVersions {
    /// The current version of each entity read, as stamping moves it.
    current: HashMap<EntityKey, i64>,
    /// The entities stamped, to be written.
    stamped: HashSet<EntityKey>,
}

impl EntityVersions {
    /// Reads the current versions of `keys` (repeats read once).
    pub async fn read(
        tx: &mut dyn Tx,
        keys: impl IntoIterator<Item = EntityKey>,
    ) -> Result<Self, StoreError> {
        let mut wanted: Vec<EntityKey> = keys.into_iter().collect();
        wanted.sort();
        wanted.dedup();
        let versions = tx.entity_versions(&wanted).await?;
        Ok(EntityVersions {
            current: wanted.into_iter().zip(versions).collect(),
            stamped: HashSet::new(),
        })
    }

    /// Gives `event` its entity's next version, or says why it may not
    /// have one (its expected version is not the current one). Events
    /// naming the same entity follow each other in the order stamped.
    pub fn stamp(&mut self, event: &mut NewEvent, check: VersionCheck) -> Result<(), PublishRejection> {
        let key = key_of(event, &check);
        let current = self.current.get(&key).copied().unwrap_or(0);
        let version = next_version(&check, current)?;
        event.entity = Some(EntityVersion {
            entity_id: key.1.clone(),
            version,
        });
        self.current.insert(key.clone(), version);
        self.stamped.insert(key);
        Ok(())
    }

    /// Writes the version of every entity stamped.
    pub async fn write(&self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        let versions: Vec<(EntityKey, i64)> = self
            .stamped
            .iter()
            .map(|key| (key.clone(), self.current[key]))
            .collect();
        tx.set_entity_versions(&versions).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::event::{EventType, TraceId};
    use crate::domain::topic::Topic;

    fn event(topic: &str) -> NewEvent {
        NewEvent::new(
            Topic::parse(topic).unwrap(),
            EventType::parse("doc:updated").unwrap(),
            TraceId::generate(),
            &json!({}),
        )
    }

    fn check(entity: &str, expected: Option<i64>) -> VersionCheck {
        version_check(Some(entity.into()), expected).unwrap().unwrap()
    }

    fn versions_read(current: &[(&str, &str, i64)]) -> EntityVersions {
        EntityVersions {
            current: current
                .iter()
                .map(|(t, e, v)| ((t.to_string(), e.to_string()), *v))
                .collect(),
            stamped: HashSet::new(),
        }
    }

    #[test]
    fn events_naming_one_entity_take_its_next_versions_in_turn() {
        // Given doc-1 at version 4 on docs:a, when three events name it
        // (one expecting 5, the version the one before it makes)...
        let mut versions = versions_read(&[("docs:a", "doc-1", 4)]);
        let mut stamped = Vec::new();
        for expected in [None, Some(5), None] {
            let mut e = event("docs:a");
            versions.stamp(&mut e, check("doc-1", expected)).unwrap();
            stamped.push(e.entity.unwrap().version);
        }
        // ...then they get 5, 6 and 7, and 7 is what is written.
        assert_eq!(stamped, [5, 6, 7]);
        assert_eq!(versions.current[&("docs:a".into(), "doc-1".into())], 7);
        assert_eq!(versions.stamped.len(), 1);
    }

    #[test]
    fn a_stale_expectation_is_a_conflict_that_moves_nothing() {
        let mut versions = versions_read(&[("docs:a", "doc-1", 2)]);
        let mut e = event("docs:a");
        let conflict = versions.stamp(&mut e, check("doc-1", Some(1))).unwrap_err();
        assert!(matches!(
            conflict,
            PublishRejection::VersionConflict {
                current: 2,
                expected: 1,
                ..
            }
        ));
        assert!(e.entity.is_none());
        assert!(versions.stamped.is_empty(), "nothing to write");
    }

    #[test]
    fn versions_are_per_topic_and_an_unread_entity_starts_at_zero() {
        let mut versions = versions_read(&[("docs:a", "doc-1", 9)]);
        let (mut same_id_elsewhere, mut new) = (event("docs:b"), event("docs:a"));
        versions
            .stamp(&mut same_id_elsewhere, check("doc-1", None))
            .unwrap();
        versions.stamp(&mut new, check("doc-2", Some(0))).unwrap();
        assert_eq!(same_id_elsewhere.entity.unwrap().version, 1);
        assert_eq!(new.entity.unwrap().version, 1);
    }
}
