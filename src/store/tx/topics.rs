//! Generic topics' entity versions: what a versioned publish compares its
//! `expectedVersion` with, and bumps.

use async_trait::async_trait;

use crate::store::error::StoreError;

/// An entity on a generic topic: (topic, entity id).
pub type EntityKey = (String, String);

#[async_trait]
pub trait VersionRepo: Send {
    /// The current versions of these entities, in their order; 0 before an
    /// entity's first versioned event. One statement however many.
    async fn entity_versions(&mut self, keys: &[EntityKey]) -> Result<Vec<i64>, StoreError>;
    /// Sets these entities' versions. One statement however many.
    async fn set_entity_versions(&mut self, versions: &[(EntityKey, i64)]) -> Result<(), StoreError>;
}
