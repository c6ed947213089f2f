//! Publishing from SQL: the drain that moves publishes made with
//! `pollcast.publish(…)` inside applications' own transactions from the
//! outbox into the log (`sql/0011_publish_from_sql.sql` says why there is
//! an outbox at all: an application's transaction must never hold the
//! log's lock).
//!
//! Every node runs an [`OutboxDrain`] on the Postgres store. Every
//! `--outbox-poll` (25 ms) it asks, with one index probe outside any transaction that
//! takes no lock, whether a committed row waits; if one does, it runs
//! [`DrainOutbox`] in the writer's batch: the rows are deleted and their
//! events appended in one transaction, under the log lock, so a row
//! becomes exactly one event however many nodes look (the first takes the
//! rows, the others find none).
//!
//! Why a poll and not a NOTIFY from the function: Postgres serializes the
//! commits of transactions that sent a NOTIFY, so every application
//! transaction that published would have waited for the others' commits
//! (8 pgbench clients: 484 commits/s with the NOTIFY, 3,590 without, same
//! sitting). The poll costs 40 small reads a second per node (about
//! 1.3 % of a core for an idle node and its Postgres backend, against
//! 0.15 % without; BENCHMARKS.md) and adds half of it to the latency on
//! average.
//!
//! A row is checked again with the rules a REST publish meets
//! ([`event_of`]): the SQL function checks the same things, so a row that
//! fails here was written around it; it is dropped with a warning, since
//! its transaction committed long ago and nobody waits for an answer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::reserved;
use super::versions::{key_of, version_check, EntityVersions, VersionCheck};
use crate::domain::event::{EventType, NewEvent, StoredEvent, TraceId};
use crate::domain::topic::{is_tenant_name, Topic};
use crate::store::tx::OutboxRow;
use crate::store::{execute, Answer, Command, EventStore, StoreError, Tx};

/// Most rows one drain takes: one writer transaction appends them all.
/// A fuller outbox is drained by the next run, at once.
pub const DRAIN_LIMIT: i64 = 1000;
/// How long a node waits before trying again after a failed look or drain.
const AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Largest payload accepted from SQL, as `pollcast.publish` enforces it:
/// the REST default body limit, so that what readers page through (replays,
/// the webhook waker) stays as large as REST publishes make it.
pub const MAX_SQL_PAYLOAD: usize = 64 * 1024;

/// Why a row of the outbox cannot become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowRefused {
    #[error("topic: {0}")]
    Topic(String),
    #[error("type: {0}")]
    EventType(String),
    #[error("payload: {0}")]
    Payload(String),
    #[error("tenant {0:?} is not a tenant's name")]
    Tenant(String),
    #[error("entity_id: {0}")]
    Entity(String),
}

/// The event a row of the outbox becomes, checked as a REST publish is:
/// the topic and type syntax, the reserved topics and types, an object
/// payload within [`MAX_SQL_PAYLOAD`], a tenant's name, an entity id; and
/// the version check of its entity, if it names one (never a conflict:
/// no version is expected, the entity gets its next one).
pub fn event_of(row: &OutboxRow) -> Result<(NewEvent, Option<VersionCheck>), RowRefused> {
    let check = version_check(row.entity_id.clone(), None).map_err(|e| RowRefused::Entity(e.message()))?;
    let topic = Topic::parse(&row.topic).map_err(|e| RowRefused::Topic(e.to_string()))?;
    reserved::check_topic(&topic).map_err(|e| RowRefused::Topic(e.message()))?;
    let event_type = EventType::parse(&row.event_type).map_err(RowRefused::EventType)?;
    reserved::check_event_type(&event_type).map_err(|e| RowRefused::EventType(e.message()))?;
    if row.payload.len() > MAX_SQL_PAYLOAD {
        return Err(RowRefused::Payload("larger than 64 KiB".into()));
    }
    let payload: serde_json::Value =
        serde_json::from_str(&row.payload).map_err(|e| RowRefused::Payload(e.to_string()))?;
    if !payload.is_object() {
        return Err(RowRefused::Payload("must be a JSON object".into()));
    }
    let topic = match &row.tenant {
        None => topic,
        Some(tenant) if is_tenant_name(tenant) => topic.in_tenant(tenant),
        Some(tenant) => return Err(RowRefused::Tenant(tenant.clone())),
    };
    let trace_id = TraceId::from_traceparent(&format!("00-{}-0000000000000001-00", row.trace_id))
        .unwrap_or_else(TraceId::generate);
    Ok((NewEvent::new(topic, event_type, trace_id, &payload), check))
}

/// Takes up to [`DRAIN_LIMIT`] rows from the outbox and appends their
/// events, in the writer's transaction. Its outcome: how many rows it took
/// (a full take means more may wait).
pub struct DrainOutbox;

#[async_trait]
impl Command for DrainOutbox {
    type Outcome = usize;
    type Decided = usize;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, usize), StoreError> {
        let rows = tx.take_outbox(DRAIN_LIMIT).await?;
        let mut accepted = Vec::with_capacity(rows.len());
        for row in &rows {
            match event_of(row) {
                Ok((event, check)) => accepted.push((row, event, check)),
                Err(refused) => dropped(row, &refused),
            }
        }
        let keys = accepted
            .iter()
            .filter_map(|(_, event, check)| check.as_ref().map(|check| key_of(event, check)));
        let mut versions = EntityVersions::read(tx, keys).await?;
        let mut events = Vec::with_capacity(accepted.len());
        for (row, mut event, check) in accepted {
            if let Some(check) = check {
                // No version is expected, so none can conflict.
                if let Err(rejection) = versions.stamp(&mut event, check) {
                    dropped(row, &RowRefused::Entity(rejection.message()));
                    continue;
                }
            }
            events.push(event);
        }
        versions.write(tx).await?;
        Ok((events, rows.len()))
    }

    fn outcome(taken: usize, events: &[StoredEvent]) -> usize {
        crate::metrics::outbox_taken(events.len(), taken - events.len());
        taken
    }
}

fn dropped(row: &OutboxRow, refused: &RowRefused) {
    tracing::warn!(
        seq = row.seq,
        topic = %row.topic,
        %refused,
        "dropped a row of pollcast.outbox that no publish may make"
    );
}

/// This node's outbox drain; see the module's header.
pub struct OutboxDrain;

impl OutboxDrain {
    /// Starts draining, on a store with an outbox (does nothing on one
    /// without). Stops with `stop`.
    pub fn start(store: Arc<dyn EventStore>, poll: Duration, stop: CancellationToken) {
        if !store.has_outbox() {
            return;
        }
        tokio::spawn(async move {
            // Said once when draining fails and once when it works again.
            let mut failing = false;
            loop {
                let result = match store.outbox_waiting().await {
                    Ok(true) => drain(&*store).await,
                    Ok(false) => Ok(()),
                    Err(error) => Err(error),
                };
                let pause = match result {
                    Ok(()) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("draining pollcast.outbox works again");
                        }
                        poll
                    }
                    Err(error) => {
                        if !failing {
                            failing = true;
                            tracing::warn!(error = %error.report(), "draining pollcast.outbox failed; trying again every second");
                        }
                        AFTER_FAILURE
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        });
    }
}

/// Drains until a take comes back short of the limit.
async fn drain(store: &dyn EventStore) -> Result<(), StoreError> {
    loop {
        let taken = match execute(store, DrainOutbox, None).await? {
            Answer::Fresh(taken) => taken,
            Answer::Replayed(_) | Answer::KeyReused => 0,
        };
        if (taken as i64) < DRAIN_LIMIT {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::versions::next_version;

    fn row(topic: &str, event_type: &str, payload: &str, tenant: Option<&str>) -> OutboxRow {
        OutboxRow {
            seq: 1,
            topic: topic.into(),
            event_type: event_type.into(),
            payload: payload.into(),
            tenant: tenant.map(str::to_string),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            entity_id: None,
        }
    }

    #[test]
    fn a_valid_row_becomes_its_event_with_its_trace_id() {
        let (event, check) =
            event_of(&row("orders:42", "order:updated", "{\"status\": \"paid\"}", None)).unwrap();
        assert!(check.is_none(), "no entity, no version");
        assert_eq!(event.topic.as_str(), "orders:42");
        assert_eq!(event.event_type.as_str(), "order:updated");
        assert_eq!(event.payload.get(), "{\"status\":\"paid\"}");
        assert_eq!(event.trace_id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_tenants_row_lands_on_the_tenants_topic() {
        let (event, _) = event_of(&row("orders:42", "order:updated", "{}", Some("acme"))).unwrap();
        assert_eq!(event.topic.as_str(), "~acme:orders:42");
        assert_eq!(event.topic.display_name(), "orders:42");
    }

    #[test]
    fn rows_a_rest_publish_could_not_make_are_refused() {
        let refused = |r: OutboxRow| event_of(&r).unwrap_err();
        assert!(matches!(
            refused(row("session:1", "a:b", "{}", None)),
            RowRefused::Topic(_)
        ));
        assert!(matches!(
            refused(row("Orders", "a:b", "{}", None)),
            RowRefused::Topic(_)
        ));
        assert!(matches!(
            refused(row("orders", "system:alert", "{}", None)),
            RowRefused::EventType(_)
        ));
        assert!(matches!(
            refused(row("orders", "nocolon", "{}", None)),
            RowRefused::EventType(_)
        ));
        assert!(matches!(
            refused(row("orders", "a:b", "[1]", None)),
            RowRefused::Payload(_)
        ));
        assert!(matches!(
            refused(row("orders", "a:b", "{}", Some("A B"))),
            RowRefused::Tenant(_)
        ));
        for entity in ["", "a\nb", &"x".repeat(201)] {
            let bad = OutboxRow {
                entity_id: Some(entity.to_string()),
                ..row("orders", "a:b", "{}", None)
            };
            assert!(matches!(refused(bad), RowRefused::Entity(_)), "{entity:?}");
        }
    }

    #[test]
    fn a_row_naming_an_entity_gets_its_next_version_whatever_it_is() {
        let named = OutboxRow {
            entity_id: Some("order-42".into()),
            ..row("orders:42", "order:updated", "{}", None)
        };
        let (_, check) = event_of(&named).unwrap();
        let check = check.expect("a version check");
        assert_eq!(check.entity_id(), "order-42");
        // No version is expected: the next one, never a conflict.
        for current in [0, 1, 41] {
            assert_eq!(next_version(&check, current), Ok(current + 1));
        }
    }

    #[test]
    fn a_bad_trace_id_gets_a_fresh_one() {
        let mut bad = row("orders", "a:b", "{}", None);
        bad.trace_id = "not hex".into();
        let (event, _) = event_of(&bad).unwrap();
        assert_eq!(event.trace_id.as_str().len(), 32);
    }
}
