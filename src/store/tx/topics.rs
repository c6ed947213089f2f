//! Generic topics' entity versions: what a versioned publish compares its
//! `expectedVersion` with, and bumps.

use async_trait::async_trait;

use crate::store::error::StoreError;

#[async_trait]
pub trait VersionRepo: Send {
    /// The current version of an entity on a generic topic; 0 before its
    /// first versioned event.
    async fn entity_version(&mut self, topic: &str, entity_id: &str) -> Result<i64, StoreError>;
    async fn set_entity_version(
        &mut self,
        topic: &str,
        entity_id: &str,
        version: i64,
    ) -> Result<(), StoreError>;
}
