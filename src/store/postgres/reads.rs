//! Reads on the pool: id ranges of the log under a topic filter, and
//! read-only commands on a consistent snapshot.

use deadpool_postgres::ClientWrapper;
use serde_json::value::RawValue;
use tokio_postgres::types::ToSql;

use super::error::during;
use super::tx::PgTx;
use crate::domain::event::{EntityVersion, EventId, EventType, StoredEvent, TraceId};
use crate::domain::topic::{Selector, Topic, TopicFilter};
use crate::store::command::TxCommand;
use crate::store::error::StoreError;

/// Runs a read-only command in one snapshot, so that every query of the
/// command agrees with the others and with its lastEventId.
pub async fn read_in_snapshot(
    client: &ClientWrapper,
    mut command: Box<dyn TxCommand>,
) -> Result<(), StoreError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(during("read in snapshot"))?;
    command.run(&mut PgTx::new(client)).await?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(during("read in snapshot"))?;
    command.settle(&[]);
    command.deliver();
    Ok(())
}

/// The SQL condition and parameters selecting the topics of a filter,
/// numbered from `$first`.
pub struct TopicCondition {
    pub sql: String,
    pub params: Vec<Vec<String>>,
}

pub fn topic_condition(filter: &TopicFilter, first: usize) -> TopicCondition {
    let mut sql = String::new();
    let mut params = Vec::new();
    let mut add = |selectors: &[Selector], sql: &mut String| {
        let exact: Vec<String> = selectors
            .iter()
            .filter_map(|s| s.as_exact())
            .map(str::to_string)
            .collect();
        let patterns: Vec<String> = selectors
            .iter()
            .filter(|s| s.as_exact().is_none())
            .map(Selector::to_regex)
            .collect();
        let mut parts = Vec::new();
        if exact.len() == 1 {
            // One topic: a plain equality, so even a generic plan walks the
            // (topic, id) index in id order instead of sorting the range.
            params.push(exact);
            parts.push(format!("topic = (${}::text[])[1]", first + params.len() - 1));
        } else if !exact.is_empty() {
            params.push(exact);
            parts.push(format!("topic = ANY(${})", first + params.len() - 1));
        }
        if !patterns.is_empty() {
            params.push(patterns);
            parts.push(format!("topic ~ ANY(${})", first + params.len() - 1));
        }
        if parts.is_empty() {
            parts.push("false".into());
        }
        sql.push_str(&format!(" AND ({})", parts.join(" OR ")));
    };
    if !filter.requested().is_empty() {
        add(filter.requested(), &mut sql);
    }
    if let Some(allowed) = filter.allowed() {
        add(allowed, &mut sql);
    }
    if filter.hides_private() {
        sql.push_str(&format!(
            " AND topic NOT LIKE '{}:%'",
            crate::domain::topic::PRIVATE_KIND
        ));
    }
    TopicCondition { sql, params }
}

pub fn row_to_event(row: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    let payload: String = row.get(4);
    Ok(StoredEvent {
        id: row.get(0),
        topic: Topic::from_stored(row.get(1)),
        event_type: EventType::from_stored(row.get(2)),
        trace_id: TraceId::from_stored(row.get(3)),
        payload: RawValue::from_string(payload)
            .map_err(|e| StoreError::internal("a stored payload is not JSON").caused_by(e))?,
        timestamp: row.get(5),
        entity: row
            .get::<_, Option<String>>(6)
            .zip(row.get::<_, Option<i64>>(7))
            .map(|(entity_id, version)| EntityVersion { entity_id, version }),
    })
}

/// Events with `after < id <= up_to` that pass `filter`, in id order.
pub async fn read_range(
    client: &ClientWrapper,
    after: EventId,
    up_to: EventId,
    filter: &TopicFilter,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let condition = topic_condition(filter, 4);
    let sql = format!(
        "SELECT id, topic, type, trace_id, payload::text, created_at, entity_id, version FROM events
          WHERE id > $1 AND id <= $2{} ORDER BY id LIMIT $3",
        condition.sql
    );
    let limit = limit as i64;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &up_to, &limit];
    params.extend(condition.params.iter().map(|p| p as &(dyn ToSql + Sync)));
    let statement = client.prepare_cached(&sql).await.map_err(during("read range"))?;
    let rows = client
        .query(&statement, &params)
        .await
        .map_err(during("read range"))?;
    rows.iter().map(row_to_event).collect()
}

pub async fn count_range(
    client: &ClientWrapper,
    after: EventId,
    up_to: EventId,
    filter: &TopicFilter,
) -> Result<u64, StoreError> {
    let condition = topic_condition(filter, 3);
    let sql = format!(
        "SELECT count(*) FROM events WHERE id > $1 AND id <= $2{}",
        condition.sql
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &up_to];
    params.extend(condition.params.iter().map(|p| p as &(dyn ToSql + Sync)));
    let statement = client.prepare_cached(&sql).await.map_err(during("count range"))?;
    let row = client
        .query_one(&statement, &params)
        .await
        .map_err(during("count range"))?;
    Ok(row.get::<_, i64>(0) as u64)
}
