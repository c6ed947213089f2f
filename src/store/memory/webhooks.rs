//! Webhooks in memory, for `make run` without a database: the same rules
//! as on Postgres (leases, fenced writes, revisions) on one node, with
//! the cursor lost at exit like every other part of this store. A
//! restarted server has no webhooks until they are created again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use crate::domain::event::{now_millis, EventId};
use crate::store::error::StoreError;
use crate::store::webhooks::{
    AfterFailure, DeliveryError, NewWebhook, WebhookChange, WebhookRow, WebhookStore,
};

#[derive(Default)]
pub struct MemoryWebhooks {
    rows: Mutex<HashMap<Uuid, WebhookRow>>,
}

fn lease_end(lease: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(5))
}

impl MemoryWebhooks {
    fn rows(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, WebhookRow>> {
        self.rows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The row, if `node` holds it at `revision`.
    fn fenced(
        rows: &mut HashMap<Uuid, WebhookRow>,
        id: Uuid,
        node: Uuid,
        revision: i64,
    ) -> Option<&mut WebhookRow> {
        rows.get_mut(&id)
            .filter(|row| row.leased_by == Some(node) && row.revision == revision)
    }
}

#[async_trait]
impl WebhookStore for MemoryWebhooks {
    async fn create(&self, webhook: NewWebhook) -> Result<WebhookRow, StoreError> {
        let row = WebhookRow::new(Uuid::new_v4(), webhook, now_millis());
        self.rows().insert(row.id, row.clone());
        Ok(row)
    }

    async fn list(&self) -> Result<Vec<WebhookRow>, StoreError> {
        let mut rows: Vec<WebhookRow> = self.rows().values().cloned().collect();
        rows.sort_by_key(|row| (row.created_at, row.id));
        Ok(rows)
    }

    async fn get(&self, id: Uuid) -> Result<Option<WebhookRow>, StoreError> {
        Ok(self.rows().get(&id).cloned())
    }

    async fn update(&self, id: Uuid, change: WebhookChange) -> Result<Option<WebhookRow>, StoreError> {
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(&id) else {
            return Ok(None);
        };
        row.change_secret(&change);
        if let Some(url) = change.url {
            row.url = url;
        }
        if let Some(topics) = change.topics {
            row.topics = topics;
        }
        if let Some(description) = change.description {
            row.description = description;
        }
        if let Some(cursor) = change.cursor {
            row.cursor = cursor;
        }
        match change.enabled {
            Some(true) => {
                row.enabled = true;
                row.consecutive_failures = 0;
            }
            Some(false) => {
                row.enabled = false;
                row.leased_by = None;
                row.lease_until = None;
            }
            None => {}
        }
        row.revision += 1;
        Ok(Some(row.clone()))
    }

    async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(self.rows().remove(&id).is_some())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.rows().len() as u64)
    }

    async fn renew(&self, node: Uuid, lease: Duration) -> Result<Vec<WebhookRow>, StoreError> {
        let until = lease_end(lease);
        let mut rows = self.rows();
        Ok(rows
            .values_mut()
            .filter(|row| row.enabled && row.leased_by == Some(node))
            .map(|row| {
                row.lease_until = Some(until);
                row.clone()
            })
            .collect())
    }

    async fn claim(&self, node: Uuid, lease: Duration, limit: usize) -> Result<Vec<WebhookRow>, StoreError> {
        let now = Utc::now();
        let until = lease_end(lease);
        let mut rows = self.rows();
        Ok(rows
            .values_mut()
            .filter(|row| row.enabled && row.delivering_node(now).is_none())
            .take(limit)
            .map(|row| {
                row.leased_by = Some(node);
                row.lease_until = Some(until);
                row.clone()
            })
            .collect())
    }

    async fn record_delivery(
        &self,
        id: Uuid,
        node: Uuid,
        revision: i64,
        cursor: EventId,
    ) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        let Some(row) = Self::fenced(&mut rows, id, node, revision) else {
            return Ok(false);
        };
        // Only forward: a worker of this node that lost the webhook and got
        // it back in one round must not move the cursor back.
        if row.cursor >= cursor {
            return Ok(false);
        }
        row.cursor = cursor;
        row.consecutive_failures = 0;
        row.last_delivered_at = Some(now_millis());
        Ok(true)
    }

    async fn record_failure(
        &self,
        id: Uuid,
        node: Uuid,
        revision: i64,
        error: DeliveryError,
        then: AfterFailure,
    ) -> Result<Option<u32>, StoreError> {
        let mut rows = self.rows();
        let Some(row) = Self::fenced(&mut rows, id, node, revision) else {
            return Ok(None);
        };
        row.consecutive_failures = row.consecutive_failures.saturating_add(1);
        row.last_error = Some(error);
        if then == AfterFailure::Disable {
            row.enabled = false;
            row.revision += 1;
            row.leased_by = None;
            row.lease_until = None;
        }
        Ok(Some(row.consecutive_failures))
    }

    async fn release_all(&self, node: Uuid) -> Result<(), StoreError> {
        for row in self.rows().values_mut() {
            if row.leased_by == Some(node) {
                row.leased_by = None;
                row.lease_until = None;
            }
        }
        Ok(())
    }
}
