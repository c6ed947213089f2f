//! Webhooks on Postgres (the `webhooks` table, `sql/0012_webhooks.sql` and
//! `0013_webhook_previous_secret.sql`).
//!
//! Plain statements on the pool, outside the writer: webhooks are not
//! events, and a delivery's cursor write must not wait behind a batch of
//! votes. Lease times come from the database's `now()`, so the nodes'
//! clocks need not agree; each statement is atomic, which is all the
//! fencing needs (a claim and a renewal compare and set in one UPDATE).

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use uuid::Uuid;

use super::error::{during, no_connection};
use crate::domain::event::EventId;
use crate::store::error::StoreError;
use crate::store::webhooks::{
    AfterFailure, DeliveryError, NewWebhook, PreviousSecret, WebhookChange, WebhookRow, WebhookStore,
};

const COLUMNS: &str = "id, url, topics, secret, description, enabled, delivered_through, revision, \
     consecutive_failures, last_error_at, last_error, last_delivered_at, leased_by, lease_until, created_at, tenant, \
     previous_secret, previous_secret_until";

pub struct PgWebhooks {
    pool: Pool,
}

impl PgWebhooks {
    pub fn new(pool: Pool) -> Self {
        PgWebhooks { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(no_connection)
    }
}

fn row_to_webhook(row: &tokio_postgres::Row) -> WebhookRow {
    let failures: i32 = row.get(8);
    WebhookRow {
        id: row.get(0),
        url: row.get(1),
        topics: row.get(2),
        secret: row.get(3),
        description: row.get(4),
        enabled: row.get(5),
        cursor: row.get(6),
        revision: row.get(7),
        consecutive_failures: failures.max(0) as u32,
        last_error: row
            .get::<_, Option<chrono::DateTime<chrono::Utc>>>(9)
            .zip(row.get::<_, Option<String>>(10))
            .map(|(at, message)| DeliveryError { at, message }),
        last_delivered_at: row.get(11),
        leased_by: row.get(12),
        lease_until: row.get(13),
        created_at: row.get(14),
        tenant: row.get(15),
        previous_secret: row
            .get::<_, Option<String>>(16)
            .zip(row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(17))
            .map(|(secret, until)| PreviousSecret { secret, until }),
    }
}

/// A lease's length as Postgres reads it: milliseconds.
fn millis(lease: Duration) -> f64 {
    lease.as_secs_f64() * 1000.0
}

#[async_trait]
impl WebhookStore for PgWebhooks {
    async fn create(&self, webhook: NewWebhook) -> Result<WebhookRow, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO webhooks (id, url, topics, secret, description, delivered_through, tenant)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
                ),
                &[
                    &Uuid::new_v4(),
                    &webhook.url,
                    &webhook.topics,
                    &webhook.secret,
                    &webhook.description,
                    &webhook.cursor,
                    &webhook.tenant,
                ],
            )
            .await
            .map_err(during("create a webhook"))?;
        Ok(row_to_webhook(&row))
    }

    async fn list(&self) -> Result<Vec<WebhookRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM webhooks ORDER BY created_at, id"),
                &[],
            )
            .await
            .map_err(during("list webhooks"))?;
        Ok(rows.iter().map(row_to_webhook).collect())
    }

    async fn get(&self, id: Uuid) -> Result<Option<WebhookRow>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1"), &[&id])
            .await
            .map_err(during("read a webhook"))?;
        Ok(row.as_ref().map(row_to_webhook))
    }

    async fn update(&self, id: Uuid, change: WebhookChange) -> Result<Option<WebhookRow>, StoreError> {
        let client = self.client().await?;
        let (set_description, description) = match change.description {
            Some(description) => (true, description),
            None => (false, None),
        };
        let row = client
            .query_opt(
                &format!(
                    "UPDATE webhooks SET
                         url = coalesce($2, url),
                         topics = coalesce($3, topics),
                         secret = coalesce($4, secret),
                         previous_secret = CASE WHEN $9 THEN NULL
                             WHEN $4 IS NOT NULL AND $4 <> secret AND $10::timestamptz IS NOT NULL THEN secret
                             WHEN $4 IS NOT NULL AND $4 <> secret THEN NULL
                             ELSE previous_secret END,
                         previous_secret_until = CASE WHEN $9 THEN NULL
                             WHEN $4 IS NOT NULL AND $4 <> secret THEN $10
                             ELSE previous_secret_until END,
                         description = CASE WHEN $5 THEN $6 ELSE description END,
                         enabled = coalesce($7, enabled),
                         delivered_through = coalesce($8, delivered_through),
                         revision = revision + 1,
                         consecutive_failures = CASE WHEN $7 THEN 0 ELSE consecutive_failures END,
                         leased_by = CASE WHEN $7 = false THEN NULL ELSE leased_by END,
                         lease_until = CASE WHEN $7 = false THEN NULL ELSE lease_until END
                     WHERE id = $1 RETURNING {COLUMNS}"
                ),
                &[
                    &id,
                    &change.url,
                    &change.topics,
                    &change.secret,
                    &set_description,
                    &description,
                    &change.enabled,
                    &change.cursor,
                    &change.drop_previous,
                    &change.previous_until,
                ],
            )
            .await
            .map_err(during("update a webhook"))?;
        Ok(row.as_ref().map(row_to_webhook))
    }

    async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await
            .map_err(during("delete a webhook"))?;
        Ok(deleted > 0)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM webhooks", &[])
            .await
            .map_err(during("count webhooks"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn renew(&self, node: Uuid, lease: Duration) -> Result<Vec<WebhookRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "UPDATE webhooks SET lease_until = now() + $2 * interval '1 millisecond'
                      WHERE leased_by = $1 AND enabled RETURNING {COLUMNS}"
                ),
                &[&node, &millis(lease)],
            )
            .await
            .map_err(during("renew webhook leases"))?;
        Ok(rows.iter().map(row_to_webhook).collect())
    }

    async fn claim(&self, node: Uuid, lease: Duration, limit: usize) -> Result<Vec<WebhookRow>, StoreError> {
        let client = self.client().await?;
        // SKIP LOCKED: nodes claiming at the same moment take different
        // rows instead of queueing on the same ones.
        let rows = client
            .query(
                &format!(
                    "UPDATE webhooks SET leased_by = $1, lease_until = now() + $2 * interval '1 millisecond'
                      WHERE id IN (SELECT id FROM webhooks
                                    WHERE enabled AND (leased_by IS NULL OR lease_until < now())
                                    ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                      RETURNING {COLUMNS}"
                ),
                &[&node, &millis(lease), &(limit as i64)],
            )
            .await
            .map_err(during("claim webhooks"))?;
        Ok(rows.iter().map(row_to_webhook).collect())
    }

    async fn record_delivery(
        &self,
        id: Uuid,
        node: Uuid,
        revision: i64,
        cursor: EventId,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE webhooks SET delivered_through = $4, consecutive_failures = 0, last_delivered_at = now()
                  WHERE id = $1 AND leased_by = $2 AND revision = $3 AND delivered_through < $4",
                &[&id, &node, &revision, &cursor],
            )
            .await
            .map_err(during("record a webhook delivery"))?;
        Ok(updated > 0)
    }

    async fn record_failure(
        &self,
        id: Uuid,
        node: Uuid,
        revision: i64,
        error: DeliveryError,
        then: AfterFailure,
    ) -> Result<Option<u32>, StoreError> {
        let client = self.client().await?;
        let disable = then == AfterFailure::Disable;
        let row = client
            .query_opt(
                "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1,
                        last_error_at = $4, last_error = $5,
                        enabled = enabled AND NOT $6,
                        revision = revision + CASE WHEN $6 THEN 1 ELSE 0 END,
                        leased_by = CASE WHEN $6 THEN NULL ELSE leased_by END,
                        lease_until = CASE WHEN $6 THEN NULL ELSE lease_until END
                  WHERE id = $1 AND leased_by = $2 AND revision = $3
                  RETURNING consecutive_failures",
                &[&id, &node, &revision, &error.at, &error.message, &disable],
            )
            .await
            .map_err(during("record a webhook failure"))?;
        Ok(row.map(|row| row.get::<_, i32>(0).max(0) as u32))
    }

    async fn release_all(&self, node: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE webhooks SET leased_by = NULL, lease_until = NULL WHERE leased_by = $1",
                &[&node],
            )
            .await
            .map_err(during("release webhook leases"))?;
        Ok(())
    }
}
