//! The repositories of `store::tx` on a Postgres transaction (the caller
//! began it and ends it): live polling's tables of `sql/0002_polling.sql`
//! (`sessions.rs`, `participants.rs`, `votes.rs`, whose statements go out
//! pipelined), presence and entity versions (`presence.rs`), and the
//! outbox of publishes made from SQL (`outbox.rs`).

mod outbox;
mod participants;
mod presence;
mod rows;
mod sessions;
mod votes;

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio_postgres::Row;
use uuid::Uuid;

use super::error::during;
use crate::domain::event::EventId;
use crate::domain::polling::model::{Poll, PollOption};
use crate::store::error::StoreError;
use crate::store::tx::LogRepo;
use rows::{options_by_poll, poll_from_row, OPTIONS_OF, POLL_COLUMNS};

type R<T> = Result<T, StoreError>;

/// The polling tables as seen from a connection inside a transaction (the
/// caller began it and ends it).
pub struct PgTx<'a> {
    tx: &'a deadpool_postgres::ClientWrapper,
}

impl<'a> PgTx<'a> {
    pub fn new(tx: &'a deadpool_postgres::ClientWrapper) -> Self {
        PgTx { tx }
    }

    async fn query(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> R<Vec<Row>> {
        let statement = self.tx.prepare_cached(sql).await.map_err(during("query"))?;
        self.tx.query(&statement, params).await.map_err(during("query"))
    }

    async fn execute(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> R<u64> {
        let statement = self.tx.prepare_cached(sql).await.map_err(during("execute"))?;
        self.tx
            .execute(&statement, params)
            .await
            .map_err(during("execute"))
    }

    async fn options_of(&self, polls: &[Uuid]) -> R<BTreeMap<Uuid, Vec<PollOption>>> {
        Ok(options_by_poll(self.query(OPTIONS_OF, &[&polls]).await?))
    }

    async fn polls_where(&self, condition: &str, param: &Uuid) -> R<Vec<Poll>> {
        let sql = format!("SELECT {POLL_COLUMNS} FROM polls WHERE {condition} ORDER BY sequence_order");
        let rows = self.query(&sql, &[param]).await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let mut options = if rows.iter().any(|r| r.get::<_, String>(4) == "multiple_choice") {
            self.options_of(&ids).await?
        } else {
            BTreeMap::new()
        };
        rows.iter()
            .map(|row| poll_from_row(row, options.remove(&row.get::<_, Uuid>(0)).unwrap_or_default()))
            .collect()
    }
}

#[async_trait]
impl LogRepo for PgTx<'_> {
    async fn head_event_id(&mut self) -> R<EventId> {
        // Never below what retention dropped: a client streaming from this
        // id must not be told it is too old.
        let rows = self
            .query(
                "SELECT greatest(coalesce(max(id), 0), (SELECT pruned_through FROM log_state)) FROM events",
                &[],
            )
            .await?;
        Ok(rows[0].get(0))
    }
}
