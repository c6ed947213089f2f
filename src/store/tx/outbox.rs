//! The outbox of publishes made from SQL (`pollcast.publish`, see
//! `sql/0011_publish_from_sql.sql`): rows that applications' committed
//! transactions left for the writer to move into the log.

use async_trait::async_trait;

use crate::store::error::StoreError;

/// One publish an application made in SQL, as it waits in the outbox. Its
/// fields are what the SQL function checked; the writer checks them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its place in the outbox: rows are taken in this order.
    pub seq: i64,
    pub topic: String,
    pub event_type: String,
    /// The payload as JSON text.
    pub payload: String,
    pub tenant: Option<String>,
    pub trace_id: String,
    /// The entity whose next version the event gets.
    pub entity_id: Option<String>,
}

#[async_trait]
pub trait OutboxRepo: Send {
    /// Removes and returns the oldest `limit` rows that committed
    /// transactions left, in `seq` order. Only the writer calls it, under
    /// the log lock: its events join the log in the same transaction.
    async fn take_outbox(&mut self, limit: i64) -> Result<Vec<OutboxRow>, StoreError>;
}
