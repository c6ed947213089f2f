//! The outbox of publishes made from SQL, on a Postgres transaction.

use async_trait::async_trait;

use super::PgTx;
use crate::store::error::StoreError;
use crate::store::tx::{OutboxRepo, OutboxRow};

#[async_trait]
impl OutboxRepo for PgTx<'_> {
    async fn take_outbox(&mut self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        // Rows of transactions still open are invisible here and stay for
        // a later drain; nothing waits on them. DELETE … RETURNING does not
        // promise an order, hence the sort.
        let rows = self
            .query(
                "DELETE FROM pollcast.outbox
                 WHERE seq IN (SELECT seq FROM pollcast.outbox ORDER BY seq LIMIT $1)
                 RETURNING seq, topic, type, payload::text, tenant, trace_id, entity_id",
                &[&limit],
            )
            .await?;
        let mut taken: Vec<OutboxRow> = rows
            .iter()
            .map(|row| OutboxRow {
                seq: row.get(0),
                topic: row.get(1),
                event_type: row.get(2),
                payload: row.get(3),
                tenant: row.get(4),
                trace_id: row.get(5),
                entity_id: row.get(6),
            })
            .collect();
        taken.sort_by_key(|row| row.seq);
        Ok(taken)
    }
}
