//! The writer's statements: prepared once per connection, and the
//! functions that send them (ids, events with their NOTIFY, idempotency
//! keys). The writer (`writer.rs`) decides when; these know how.

use std::collections::HashMap;

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::error::during;
use super::notify::NOTIFY_CHANNEL;
use crate::domain::event::{EventId, StoredEvent};
use crate::store::command::Remembered;
use crate::store::error::StoreError;
use crate::store::event_store::IdempotencyKey;

/// The writer's statements, prepared once per pooled connection: a plain
/// string would be parsed and described on every call, one more round trip
/// each inside the log lock. Holding them also lets a batch send several
/// at once (pipelined) and know each goes out in the order it was issued.
pub struct WriterStatements {
    pub begin: Statement,
    pub lock: Statement,
    pub ids: Statement,
    pub remembered: Statement,
    pub insert_events: Statement,
    pub insert_keys: Statement,
    pub savepoint: Statement,
    pub rollback_to_savepoint: Statement,
    pub commit: Statement,
}

impl WriterStatements {
    pub async fn prepare(client: &ClientWrapper) -> Result<Self, StoreError> {
        let prepare =
            |sql: &'static str| async move { client.prepare_cached(sql).await.map_err(during("prepare")) };
        Ok(WriterStatements {
            begin: prepare("BEGIN").await?,
            lock: prepare("SELECT pg_advisory_xact_lock($1)").await?,
            ids: prepare(NEXT_IDS).await?,
            remembered: prepare(REMEMBERED_KEYS).await?,
            insert_events: prepare(INSERT_EVENTS).await?,
            insert_keys: prepare(INSERT_KEYS).await?,
            savepoint: prepare("SAVEPOINT command").await?,
            rollback_to_savepoint: prepare("ROLLBACK TO SAVEPOINT command").await?,
            commit: prepare("COMMIT").await?,
        })
    }
}

const REMEMBERED_KEYS: &str = "SELECT k.scope, k.key, k.fingerprint, k.answer
       FROM idempotency_keys k
       JOIN unnest($1::text[], $2::text[]) AS wanted(scope, key) USING (scope, key)";

/// The remembered keys among `wanted`.
pub async fn remembered_keys(
    client: &ClientWrapper,
    statements: &WriterStatements,
    wanted: &[(String, String)],
) -> Result<HashMap<(String, String), (String, Remembered)>, StoreError> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let (scopes, keys): (Vec<&str>, Vec<&str>) = wanted.iter().map(|(s, k)| (s.as_str(), k.as_str())).unzip();
    let rows = client
        .query(&statements.remembered, &[&scopes, &keys])
        .await
        .map_err(during("remembered keys"))?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.get(0), row.get(1)), (row.get(2), Remembered(row.get(3)))))
        .collect())
}

const NEXT_IDS: &str = "SELECT nextval('events_id_seq'), (SELECT coalesce(max(id), 0) FROM events)
     FROM generate_series(1, $1::bigint)";

/// Ids for `count` new events, ascending, and the highest id committed
/// before them. Called under the log lock, so no other writer commits in
/// between: every committed id is at most that head, every new id above it.
pub async fn next_ids(
    client: &ClientWrapper,
    statements: &WriterStatements,
    count: usize,
) -> Result<(EventId, Vec<EventId>), StoreError> {
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let rows = client
        .query(&statements.ids, &[&(count as i64)])
        .await
        .map_err(during("next ids"))?;
    let before: EventId = rows[0].get(1);
    let mut ids: Vec<EventId> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok((before, ids))
}

// A data-modifying WITH runs whether or not the query reads it.
const INSERT_EVENTS: &str = "WITH inserted AS (
         INSERT INTO events (id, topic, type, trace_id, payload, created_at, entity_id, version)
         SELECT i, t, y, r, p::json, c, e, v
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                       $7::text[], $8::bigint[])
             AS u(i, t, y, r, p, c, e, v))
     SELECT pg_notify($9, $10)";

/// Inserts the batch's events and, in the same statement, NOTIFYs
/// `notice`, the new head and this node's origin (delivered at commit, like
/// a separate NOTIFY, one round trip fewer).
pub async fn insert_events<'a>(
    client: &ClientWrapper,
    statements: &WriterStatements,
    events: impl Iterator<Item = &'a StoredEvent>,
    notice: Option<String>,
) -> Result<(), StoreError> {
    let mut ids = Vec::new();
    let mut topics = Vec::new();
    let mut types = Vec::new();
    let mut traces = Vec::new();
    let mut payloads = Vec::new();
    let mut times = Vec::new();
    let mut entities = Vec::new();
    let mut versions = Vec::new();
    for e in events {
        entities.push(e.entity.as_ref().map(|v| v.entity_id.as_str()));
        versions.push(e.entity.as_ref().map(|v| v.version));
        ids.push(e.id);
        topics.push(e.topic.as_str());
        types.push(e.event_type.as_str());
        traces.push(e.trace_id.as_str());
        payloads.push(e.payload.get());
        times.push(e.timestamp);
    }
    let Some(notice) = notice.filter(|_| !ids.is_empty()) else {
        return Ok(());
    };
    let params: [&(dyn ToSql + Sync); 10] = [
        &ids,
        &topics,
        &types,
        &traces,
        &payloads,
        &times,
        &entities,
        &versions,
        &NOTIFY_CHANNEL,
        &notice,
    ];
    client
        .query(&statements.insert_events, &params)
        .await
        .map_err(during("insert events"))?;
    Ok(())
}

const INSERT_KEYS: &str = "INSERT INTO idempotency_keys (scope, key, fingerprint, answer)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])";

/// Keeps each key with the answer its request gave, in the batch's
/// transaction.
pub async fn insert_keys(
    client: &ClientWrapper,
    statements: &WriterStatements,
    kept: &[(&IdempotencyKey, &Remembered)],
) -> Result<(), StoreError> {
    if kept.is_empty() {
        return Ok(());
    }
    let scopes: Vec<&str> = kept.iter().map(|(key, _)| key.scope.as_str()).collect();
    let names: Vec<&str> = kept.iter().map(|(key, _)| key.key.as_str()).collect();
    let fingerprints: Vec<&str> = kept.iter().map(|(key, _)| key.fingerprint.as_str()).collect();
    let answers: Vec<&str> = kept.iter().map(|(_, answer)| answer.0.as_str()).collect();
    client
        .execute(
            &statements.insert_keys,
            &[&scopes, &names, &fingerprints, &answers],
        )
        .await
        .map_err(during("insert keys"))?;
    Ok(())
}
