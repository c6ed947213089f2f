//! The durable store on Postgres.
//!
//! Writes: one writer per node, on a thread of its own with its own
//! connection, drains queued appends into one transaction per batch (our
//! group commit: one fsync for many commands).
//! It takes a fixed advisory lock first, so ids are assigned and committed
//! in order across every node, and ends each batch with a NOTIFY carrying
//! the highest id. Nothing else assigns ids.
//!
//! Reads: plain id-range queries on the pool. A dedicated LISTEN connection
//! turns other nodes' NOTIFYs into commit hints; hints are only wake-ups,
//! the table is the truth.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    ClientWrapper, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Statement};
use tokio_util::sync::CancellationToken;

use super::postgres_polling::PgTx;
use super::{
    migrations, replay_or_conflict, AppendOutcome, AppendRequest, CommittedBatch, EventStore, LogBounds,
    Remembered, StoreError, TxCommand, COMMITTED_BATCH_BACKLOG,
};
use crate::domain::event::{EntityVersion, EventId, EventType, NewEvent, StoredEvent, TraceId};
use crate::domain::topic::{Selector, Topic, TopicFilter};
use crate::revocation::Revocation;

/// Advisory lock serializing every writer of the log, on every node
/// ("pollcast" in ASCII).
const LOG_LOCK: i64 = 0x706f_6c6c_6361_7374;
/// The NOTIFY channel carrying the highest committed id.
const NOTIFY_CHANNEL: &str = "pollcast_events";
/// The NOTIFY channel of the cluster bus: requests and replies between nodes.
const BUS_CHANNEL: &str = "pollcast_bus";
/// Bus messages kept for a slow reader before it starts missing some.
const BUS_BACKLOG: usize = 1024;
/// Most appends folded into one transaction: large enough to amortize the
/// commit, small enough that a batch's latency stays low.
const MAX_BATCH_APPENDS: usize = 512;
/// How many appends may wait for the writer before callers wait to queue.
const WRITER_QUEUE: usize = 8192;

pub struct PostgresStore {
    pool: Pool,
    writer: mpsc::Sender<Job>,
    hints: watch::Sender<EventId>,
    batches: broadcast::Sender<CommittedBatch>,
    bus: broadcast::Sender<String>,
    /// Stops the LISTEN task when the store is dropped.
    stop: CancellationToken,
}

struct Job {
    request: AppendRequest,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations, and starts the writer and the
    /// LISTEN tasks.
    pub async fn connect(url: &str) -> Result<Arc<Self>, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Internal(format!("bad database URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(3));
        if config.get_application_name().is_none() {
            config.application_name("pollcast");
        }

        let (mut client, connection) = config.connect(NoTls).await.map_err(classify)?;
        let driver = tokio::spawn(connection);
        let applied = migrations::apply(&mut client).await.map_err(classify)?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied database migrations");
        }
        drop(client);
        let _ = driver.await;

        // Generic plans for pooled statements. A custom plan is made from the
        // table's statistics, which lag behind freshly appended events until
        // autovacuum analyzes them: a replay page then planned a sort of
        // the whole remaining range (≈ 200 ms a page for the first five pages
        // of a 100,000-event replay; the generic plan walks the (topic, id)
        // index in 2 ms). Every pooled query is a simple index lookup, which
        // is what the generic plan picks.
        let mut pooled = config.clone();
        let options = pooled.get_options().map(str::to_string).unwrap_or_default();
        pooled.options(format!("{options} -c plan_cache_mode=force_generic_plan").trim());
        let pool = build_pool(pooled.clone(), 16)?;

        let head = read_head(&pool).await?;
        let (hints, _) = watch::channel(head);
        let (writer, queue) = mpsc::channel(WRITER_QUEUE);
        let stop = CancellationToken::new();
        let (batches, _) = broadcast::channel(COMMITTED_BATCH_BACKLOG);
        // Names this node's commits in their NOTIFYs, so that its listener
        // can leave them to the writer (see `Heard::origin`).
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let writer_pool = build_pool(pooled, 1)?;
        spawn_writer_thread(run_writer(
            writer_pool,
            queue,
            hints.clone(),
            batches.clone(),
            origin.clone(),
        ))?;
        let (bus, _) = broadcast::channel(BUS_BACKLOG);
        let (listening, listening_now) = watch::channel(false);
        let heard = Heard {
            origin,
            hints: hints.clone(),
            bus: bus.clone(),
            listening,
        };
        tokio::spawn(run_listener(config, heard, stop.clone()));
        // Bus replies and other nodes' commits are heard only once LISTEN
        // runs; waiting for it here means a node that answers /readyz hears
        // them. Should it not come up, the tail's polling still covers.
        let mut listening_now = listening_now;
        let _ = tokio::time::timeout(Duration::from_secs(3), listening_now.wait_for(|up| *up)).await;
        Ok(Arc::new(PostgresStore {
            pool,
            writer,
            hints,
            batches,
            bus,
            stop,
        }))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(classify_pool)
    }
}

/// A connection pool on `config`, at most `size` connections.
fn build_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // Short timeouts: during an outage a request should get its 503
    // quickly rather than hang.
    let timeouts = Timeouts {
        wait: Some(Duration::from_secs(3)),
        create: Some(Duration::from_secs(3)),
        recycle: Some(Duration::from_secs(3)),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .timeouts(timeouts)
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))
}

/// Runs the writer on a thread of its own, with its own connection (whose
/// driver task the writer's pool spawns on that thread's runtime).
///
/// Why: every commit waits on the writer's turns between round trips, and
/// on the shared runtime each wake-up queued behind whatever HTTP and
/// stream tasks were runnable: under load the writer spent more time
/// waiting for a worker than Postgres spent on its statements. The kernel
/// schedules a thread that mostly sleeps promptly when its socket wakes it.
/// The thread ends when the store is dropped (its queue closes).
fn spawn_writer_thread(
    writer: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Internal(format!("writer runtime: {e}")))?;
    std::thread::Builder::new()
        .name("pollcast-writer".into())
        .spawn(move || runtime.block_on(writer))
        .map_err(|e| StoreError::Internal(format!("writer thread: {e}")))?;
    Ok(())
}

async fn read_head(pool: &Pool) -> Result<EventId, StoreError> {
    let client = pool.get().await.map_err(classify_pool)?;
    let row = client
        .query_one("SELECT coalesce(max(id), 0) FROM events", &[])
        .await
        .map_err(classify)?;
    Ok(row.get(0))
}

/// Maps a database error to "retry later" (connection trouble, shutdown,
/// overload), "this value was refused" (a data exception, SQLSTATE class
/// 22, such as a NUL in text) or "internal" (everything else).
pub(super) fn classify(error: tokio_postgres::Error) -> StoreError {
    let transient = error.is_closed()
        || error.code().is_none_or(|code| {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
        });
    if transient {
        return StoreError::Unavailable(error.to_string());
    }
    match error.as_db_error() {
        Some(db) if db.code().code().starts_with("22") => StoreError::Rejected(db.message().to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}

/// Failing to get a connection is always "retry later", whatever the
/// server said (it may refuse new connections while it restarts).
fn classify_pool(error: PoolError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

// ---------------------------------------------------------------- writer --

async fn run_writer(
    pool: Pool,
    mut queue: mpsc::Receiver<Job>,
    hints: watch::Sender<EventId>,
    batches: broadcast::Sender<CommittedBatch>,
    origin: String,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH_APPENDS);
    // `recv_many` waits for the first job and then takes whatever else is
    // queued: a lone command waits for nothing, a burst shares one commit.
    while queue.recv_many(&mut batch, MAX_BATCH_APPENDS).await > 0 {
        let mut jobs = std::mem::take(&mut batch);
        for job in &mut jobs {
            job.request.command.start();
        }
        metrics::histogram!(crate::metrics::APPEND_BATCH_SIZE).record(jobs.len() as f64);
        let (requests, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        match commit_batch(&pool, requests, &origin).await {
            Ok((outcomes, appended)) => {
                if let Some(batch) = appended {
                    // The batch first: the tail takes it as it is instead
                    // of reading it back because of the hint.
                    let head = batch.events.last().map_or(batch.after, |e| e.id);
                    let _ = batches.send(batch);
                    hints.send_if_modified(|known| raise(known, head));
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "append batch failed");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn raise(known: &mut EventId, seen: EventId) -> bool {
    if seen > *known {
        *known = seen;
        true
    } else {
        false
    }
}

/// What the batch does with one append.
enum Plan {
    /// Append its events (index into the list of executed appends).
    Execute(usize),
    /// Already decided from a remembered idempotency key.
    Decided(AppendOutcome),
    /// Same key as an earlier append of this batch: answer like it.
    Follow(usize),
}

/// The writer's statements, prepared once per pooled connection: a plain
/// string would be parsed and described on every call, one more round trip
/// each inside the log lock. Holding them also lets a batch send several
/// at once (pipelined) and know each goes out in the order it was issued.
struct WriterStatements {
    begin: Statement,
    lock: Statement,
    ids: Statement,
    remembered: Statement,
    insert_events: Statement,
    insert_keys: Statement,
    savepoint: Statement,
    rollback_to_savepoint: Statement,
    commit: Statement,
}

impl WriterStatements {
    async fn prepare(client: &ClientWrapper) -> Result<Self, StoreError> {
        let prepare = |sql: &'static str| async move { client.prepare_cached(sql).await.map_err(classify) };
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

/// One transaction for the whole batch. Returns one outcome per request
/// and, when it appended anything, the batch for the tail (its events and
/// the head of the log before them).
///
/// The transaction is driven by hand (BEGIN and COMMIT are statements like
/// the others) so that they can share a round trip with their neighbours.
/// After a failure the connection leaves the pool instead of going back
/// mid-transaction; closing it makes Postgres roll back.
async fn commit_batch(
    pool: &Pool,
    requests: Vec<AppendRequest>,
    origin: &str,
) -> Result<(Vec<Outcome>, Option<CommittedBatch>), StoreError> {
    let client = pool.get().await.map_err(classify_pool)?;
    let result = run_batch(&client, requests, origin).await;
    if result.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

/// One request's answer from a batch: a command the database refused
/// fails alone, and the rest of its batch commits.
type Outcome = Result<AppendOutcome, StoreError>;

async fn run_batch(
    client: &ClientWrapper,
    requests: Vec<AppendRequest>,
    origin: &str,
) -> Result<(Vec<Outcome>, Option<CommittedBatch>), StoreError> {
    let statements = WriterStatements::prepare(client).await?;
    let Started {
        opening,
        plans,
        keys,
        runs,
    } = if requests.iter().all(|r| r.idempotency.is_none()) {
        start_keyless(client, &statements, requests).await?
    } else {
        start_keyed(client, &statements, requests).await?
    };
    let total: usize = runs.iter().flatten().map(|(_, events)| events.len()).sum();
    let (before, ids) = match opening.ids {
        Some(taken) if taken.1.len() == total => taken,
        _ => next_ids(client, &statements, total).await?,
    };
    let mut ids = ids.into_iter();
    let mut committed: Vec<Result<Settled, StoreError>> = Vec::with_capacity(runs.len());
    for run in runs {
        committed.push(run.map(|(mut command, events)| {
            let events: Vec<StoredEvent> = events
                .into_iter()
                .map(|e| StoredEvent::from_new(ids.next().expect("one id per event"), e))
                .collect();
            let remembered = command.settle(&events);
            Settled {
                command,
                events,
                remembered,
            }
        }));
    }
    let head = committed
        .iter()
        .flatten()
        .filter_map(|settled| settled.events.last())
        .map(|e| e.id)
        .max();
    // The events (with the NOTIFY of the new head), the keys and the
    // COMMIT go out together. Should a statement fail, the COMMIT of the
    // aborted transaction rolls back and the error is that statement's.
    let events = insert_events(
        client,
        &statements,
        committed.iter().flatten().flat_map(|settled| &settled.events),
        head.map(|head| format!("{head} {origin}")),
    );
    let keys_stored = insert_keys(client, &statements, &plans, &keys, &committed);
    let commit = async { client.execute(&statements.commit, &[]).await.map_err(classify) };
    futures::try_join!(events, keys_stored, commit)?;
    crate::metrics::events_appended(total);

    // The events move to the tail's batch; each command hands its outcome
    // to its caller; what was remembered answers the followers.
    let mut appended = Vec::with_capacity(total);
    let remembered: Vec<Result<Option<Remembered>, StoreError>> = committed
        .into_iter()
        .map(|done| {
            done.map(|settled| {
                appended.extend(settled.events);
                settled.command.deliver();
                settled.remembered
            })
        })
        .collect();
    let outcomes = resolve_outcomes(plans, &keys, remembered);
    let batch = head.map(|_| CommittedBatch {
        after: before,
        events: appended.into(),
    });
    Ok((outcomes, batch))
}

/// A batch with its transaction open and its commands run.
struct Started {
    opening: Opening,
    plans: Vec<Plan>,
    keys: Vec<Option<super::IdempotencyKey>>,
    /// One per executed command: it and its events, or why the database
    /// refused it.
    runs: Vec<Run>,
}

/// One executed command: it and its events, or why the database refused it.
type Run = Result<(Box<dyn TxCommand>, Vec<NewEvent>), StoreError>;

/// A command whose events have ids, waiting for the commit.
struct Settled {
    command: Box<dyn TxCommand>,
    events: Vec<StoredEvent>,
    /// What its Idempotency-Key keeps, if it has one and the edge keeps it.
    remembered: Option<Remembered>,
}

/// Without idempotency keys every command runs, so the commands do not
/// wait for the opening: polled after it, their first statements go out in
/// its round trip, behind BEGIN and the lock.
async fn start_keyless(
    client: &ClientWrapper,
    statements: &WriterStatements,
    requests: Vec<AppendRequest>,
) -> Result<Started, StoreError> {
    let known_count = known_event_count(&requests);
    let (plans, _) = plan_appends(&requests, &HashMap::new());
    let keys = vec![None; requests.len()];
    let commands = requests.into_iter().map(|r| r.command);
    let (opening, runs) = futures::try_join!(
        open_batch(client, statements, known_count, &[]),
        run_commands(client, statements, commands)
    )?;
    Ok(Started {
        opening,
        plans,
        keys,
        runs,
    })
}

/// With keys, the remembered ones decide which commands run, so the
/// commands wait for the opening, and the event count is not known ahead.
async fn start_keyed(
    client: &ClientWrapper,
    statements: &WriterStatements,
    requests: Vec<AppendRequest>,
) -> Result<Started, StoreError> {
    let wanted: Vec<(String, String)> = requests
        .iter()
        .filter_map(|r| r.idempotency.as_ref())
        .map(|k| (k.scope.clone(), k.key.clone()))
        .collect();
    let opening = open_batch(client, statements, None, &wanted).await?;
    let (plans, _) = plan_appends(&requests, &opening.remembered);
    let mut keys = Vec::with_capacity(plans.len());
    let mut runnable = Vec::with_capacity(plans.len());
    for (request, plan) in requests.into_iter().zip(&plans) {
        keys.push(request.idempotency.clone());
        if matches!(plan, Plan::Execute(_)) {
            runnable.push(request.command);
        }
    }
    let runs = run_commands(client, statements, runnable).await?;
    Ok(Started {
        opening,
        plans,
        keys,
        runs,
    })
}

/// What the first round trip of a batch learned.
struct Opening {
    remembered: HashMap<(String, String), (String, Remembered)>,
    /// The head before the batch and its ids, when the number of events
    /// was known before running any command.
    ids: Option<(EventId, Vec<EventId>)>,
}

/// Runs each command in order: a later one sees what an earlier one wrote.
///
/// A command that touches tables runs behind a savepoint, sent in the same
/// flight as its first statement (so it costs no round trip). Should the
/// database refuse something it writes, the batch rolls back to that
/// savepoint and goes on: the command fails alone, with its error, and
/// every other command of the batch still commits. Before this, one
/// request carrying a NUL in a title failed every request that shared its
/// batch. Connection trouble still fails the whole batch: nothing of it can
/// commit then.
async fn run_commands(
    client: &ClientWrapper,
    statements: &WriterStatements,
    commands: impl IntoIterator<Item = Box<dyn TxCommand>>,
) -> Result<Vec<Run>, StoreError> {
    let mut outputs = Vec::new();
    for mut command in commands {
        if !command.touches_tables() {
            let events = command.run(&mut PgTx::new(client)).await;
            outputs.push(events.map(|events| (command, events)));
            continue;
        }
        let savepoint = async { client.execute(&statements.savepoint, &[]).await.map_err(classify) };
        let run = async { command.run(&mut PgTx::new(client)).await };
        let (saved, output) = futures::join!(savepoint, run);
        saved?;
        match output {
            Err(StoreError::Unavailable(detail)) => return Err(StoreError::Unavailable(detail)),
            Err(refused) => {
                tracing::warn!(error = %refused, "a command failed; rolled back alone");
                client
                    .execute(&statements.rollback_to_savepoint, &[])
                    .await
                    .map_err(classify)?;
                outputs.push(Err(refused));
            }
            Ok(events) => outputs.push(Ok((command, events))),
        }
    }
    Ok(outputs)
}

/// BEGIN, the log lock, the remembered idempotency keys among `wanted`
/// and, when the batch's event count is known up front, the ids: sent
/// together, answered in one round trip. Postgres runs them in order, and
/// each statement takes its snapshot when it starts, so the ids query sees
/// every commit made before the lock was granted.
async fn open_batch(
    client: &ClientWrapper,
    statements: &WriterStatements,
    known_count: Option<usize>,
    wanted: &[(String, String)],
) -> Result<Opening, StoreError> {
    let begin = async { client.execute(&statements.begin, &[]).await.map_err(classify) };
    let lock = async {
        client
            .execute(&statements.lock, &[&LOG_LOCK])
            .await
            .map_err(classify)
    };
    let remembered = remembered_keys(client, statements, wanted);
    let ids = async {
        match known_count {
            Some(count) if count > 0 => next_ids(client, statements, count).await.map(Some),
            _ => Ok(None),
        }
    };
    let (_, _, remembered, ids) = futures::try_join!(begin, lock, remembered, ids)?;
    Ok(Opening { remembered, ids })
}

/// The event count of a keyless batch, when every command knows its own.
fn known_event_count(requests: &[AppendRequest]) -> Option<usize> {
    requests.iter().try_fold(0, |sum, request| {
        request.command.known_event_count().map(|n| sum + n)
    })
}

/// Decides, for each request, whether it runs or is answered from a key.
fn plan_appends(
    requests: &[AppendRequest],
    remembered: &HashMap<(String, String), (String, Remembered)>,
) -> (Vec<Plan>, usize) {
    let mut plans = Vec::with_capacity(requests.len());
    let mut first_with_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut executed = 0;
    for (index, request) in requests.iter().enumerate() {
        let plan = match &request.idempotency {
            None => None,
            Some(key) => {
                let id = (key.scope.as_str(), key.key.as_str());
                if let Some((fingerprint, response)) = remembered.get(&(key.scope.clone(), key.key.clone())) {
                    Some(Plan::Decided(replay_or_conflict(key, fingerprint, response)))
                } else if let Some(&leader) = first_with_key.get(&id) {
                    Some(Plan::Follow(leader))
                } else {
                    first_with_key.insert(id, index);
                    None
                }
            }
        };
        plans.push(plan.unwrap_or_else(|| {
            executed += 1;
            Plan::Execute(executed - 1)
        }));
    }
    (plans, executed)
}

const REMEMBERED_KEYS: &str = "SELECT k.scope, k.key, k.fingerprint, k.answer
       FROM idempotency_keys k
       JOIN unnest($1::text[], $2::text[]) AS wanted(scope, key) USING (scope, key)";

/// The remembered keys among `wanted`.
async fn remembered_keys(
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
        .map_err(classify)?;
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
async fn next_ids(
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
        .map_err(classify)?;
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
async fn insert_events<'a>(
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
        .map_err(classify)?;
    Ok(())
}

const INSERT_KEYS: &str = "INSERT INTO idempotency_keys (scope, key, fingerprint, answer)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])";

async fn insert_keys(
    client: &ClientWrapper,
    statements: &WriterStatements,
    plans: &[Plan],
    keys: &[Option<super::IdempotencyKey>],
    committed: &[Result<Settled, StoreError>],
) -> Result<(), StoreError> {
    let mut scopes = Vec::new();
    let mut names = Vec::new();
    let mut fingerprints = Vec::new();
    let mut answers = Vec::new();
    for (plan, key) in plans.iter().zip(keys) {
        if let (Plan::Execute(i), Some(key)) = (plan, key) {
            let Ok(Settled {
                remembered: Some(answer),
                ..
            }) = &committed[*i]
            else {
                continue;
            };
            scopes.push(key.scope.as_str());
            names.push(key.key.as_str());
            fingerprints.push(key.fingerprint.as_str());
            answers.push(answer.0.as_str());
        }
    }
    if scopes.is_empty() {
        return Ok(());
    }
    client
        .execute(
            &statements.insert_keys,
            &[&scopes, &names, &fingerprints, &answers],
        )
        .await
        .map_err(classify)?;
    Ok(())
}

/// One answer per request: a command that ran is committed (its outcome
/// went to its caller); a key seen before is replayed or refused; a key
/// repeated within the batch answers like its first request did.
fn resolve_outcomes(
    plans: Vec<Plan>,
    keys: &[Option<super::IdempotencyKey>],
    remembered: Vec<Result<Option<Remembered>, StoreError>>,
) -> Vec<Outcome> {
    let leader_of: Vec<Option<usize>> = plans
        .iter()
        .map(|p| match p {
            Plan::Execute(i) => Some(*i),
            _ => None,
        })
        .collect();
    plans
        .into_iter()
        .enumerate()
        .map(|(index, plan)| match plan {
            Plan::Execute(i) => remembered[i]
                .as_ref()
                .map(|_| AppendOutcome::Committed)
                .map_err(Clone::clone),
            Plan::Decided(decided) => Ok(decided),
            Plan::Follow(leader) => {
                let executed = leader_of[leader].expect("a leader always executes");
                let leader_key = keys[leader].as_ref().expect("a leader has a key");
                let key = keys[index].as_ref().expect("a follower has a key");
                match &remembered[executed] {
                    Ok(Some(answer)) => Ok(replay_or_conflict(key, &leader_key.fingerprint, answer)),
                    // The first request with this key was refused, and a
                    // refusal is not kept: decided afresh, on a retry.
                    Ok(None) => Err(StoreError::Unavailable(
                        "a request with the same Idempotency-Key was decided at the same moment; retry"
                            .into(),
                    )),
                    Err(error) => Err(error.clone()),
                }
            }
        })
        .collect()
}

// ----------------------------------------------------------------- reads --

/// Runs a read-only command in one snapshot, so that every query of the
/// command agrees with the others and with its lastEventId.
async fn read_in_snapshot(client: &ClientWrapper, mut command: Box<dyn TxCommand>) -> Result<(), StoreError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(classify)?;
    command.run(&mut PgTx::new(client)).await?;
    client.batch_execute("COMMIT").await.map_err(classify)?;
    command.settle(&[]);
    command.deliver();
    Ok(())
}

/// The SQL condition and parameters selecting the topics of a filter,
/// numbered from `$first`.
struct TopicCondition {
    sql: String,
    params: Vec<Vec<String>>,
}

fn topic_condition(filter: &TopicFilter, first: usize) -> TopicCondition {
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

fn row_to_event(row: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    let payload: String = row.get(4);
    Ok(StoredEvent {
        id: row.get(0),
        topic: Topic::from_stored(row.get(1)),
        event_type: EventType::from_stored(row.get(2)),
        trace_id: TraceId::from_stored(row.get(3)),
        payload: RawValue::from_string(payload)
            .map_err(|e| StoreError::Internal(format!("stored payload: {e}")))?,
        timestamp: row.get(5),
        entity: row
            .get::<_, Option<String>>(6)
            .zip(row.get::<_, Option<i64>>(7))
            .map(|(entity_id, version)| EntityVersion { entity_id, version }),
    })
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    async fn read(&self, command: Box<dyn TxCommand>) -> Result<(), StoreError> {
        let client = self.client().await?;
        let result = read_in_snapshot(&client, command).await;
        if result.is_err() {
            // It may still be inside the transaction: close it rather than
            // hand it to the next caller.
            drop(deadpool_postgres::Object::take(client));
        }
        result
    }

    async fn read_range(
        &self,
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
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(classify)?;
        let rows = client.query(&statement, &params).await.map_err(classify)?;
        rows.iter().map(row_to_event).collect()
    }

    async fn count_range(
        &self,
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
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(classify)?;
        let row = client.query_one(&statement, &params).await.map_err(classify)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn bounds(&self) -> Result<LogBounds, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT pruned_through, (SELECT max(id) FROM events) FROM log_state",
                &[],
            )
            .await
            .map_err(classify)?;
        let pruned_through: EventId = row.get(0);
        let max: Option<EventId> = row.get(1);
        Ok(LogBounds {
            pruned_through,
            head: max.unwrap_or(pruned_through).max(pruned_through),
        })
    }

    async fn prune(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT prune_events($1)", &[&cutoff])
            .await
            .map_err(classify)?;
        client
            .execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'",
                &[],
            )
            .await
            .map_err(classify)?;
        client
            .execute("DELETE FROM revocations WHERE until <= now()", &[])
            .await
            .map_err(classify)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO revocations (id, jti, sub, tenant, revoked_at, until) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &revocation.id,
                    &revocation.jti,
                    &revocation.subject,
                    &revocation.tenant,
                    &revocation.revoked_at,
                    &revocation.until,
                ],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, jti, sub, tenant, revoked_at, until FROM revocations WHERE until > now()",
                &[],
            )
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .map(|row| Revocation {
                id: row.get(0),
                jti: row.get(1),
                subject: row.get(2),
                tenant: row.get(3),
                revoked_at: row.get(4),
                until: row.get(5),
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await.map_err(classify)?;
        Ok(())
    }

    fn commit_hints(&self) -> watch::Receiver<EventId> {
        self.hints.subscribe()
    }

    fn committed_batches(&self) -> broadcast::Receiver<CommittedBatch> {
        self.batches.subscribe()
    }

    fn bus_messages(&self) -> broadcast::Receiver<String> {
        self.bus.subscribe()
    }

    async fn bus_send(&self, message: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&BUS_CHANNEL, &message])
            .await
            .map_err(classify)?;
        Ok(())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

// ---------------------------------------------------------------- listen --

/// Where the LISTEN connection hands what it hears.
struct Heard {
    /// This node's commits, named in their NOTIFYs. The listener ignores
    /// them: the writer hands each batch to the tail as it commits, and a
    /// NOTIFY heard first would send the tail to read the batch back from
    /// the table. Should the writer lose a batch's reply after its COMMIT,
    /// the tail's periodic read finds the events.
    origin: String,
    /// Commit hints from `pollcast_events`.
    hints: watch::Sender<EventId>,
    /// Cluster bus messages from `pollcast_bus`.
    bus: broadcast::Sender<String>,
    /// Whether LISTEN is in effect right now.
    listening: watch::Sender<bool>,
}

/// Keeps a LISTEN connection open and turns notifications into hints and
/// bus messages. After every (re)connect it raises a hint anyway:
/// notifications sent while it was down are lost, so readers must look at
/// the table (and bus requests time out).
async fn run_listener(config: tokio_postgres::Config, heard: Heard, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match listen_once(&config, &heard, &stop).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    heard: &Heard,
    stop: &CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let hints = &heard.hints;
    let (client, mut connection) = config.connect(NoTls).await?;
    // The plain connection future drops notifications; poll_message hands
    // them over.
    let (tx, mut notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel() == BUS_CHANNEL, n.payload().to_string()));
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}; LISTEN {BUS_CHANNEL}"))
        .await?;
    heard.listening.send_replace(true);
    hints.send_modify(|_| {});
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            next = notifications.recv() => match next {
                Some((true, message)) => {
                    let _ = heard.bus.send(message);
                }
                Some((false, payload)) => {
                    if let Some(id) = other_nodes_head(&payload, &heard.origin) {
                        hints.send_if_modified(|known| raise(known, id));
                    }
                }
                None => break,
            },
        }
    }
    heard.listening.send_replace(false);
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// The head a commit NOTIFY announces ("<head> <origin>"), unless this
/// node (`origin`) sent it.
fn other_nodes_head(payload: &str, origin: &str) -> Option<EventId> {
    let (head, from) = payload.split_once(' ').unwrap_or((payload, ""));
    if from == origin {
        return None;
    }
    head.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::other_nodes_head;

    #[test]
    fn a_commit_notice_counts_only_when_another_node_sent_it() {
        assert_eq!(other_nodes_head("42 abc", "def"), Some(42));
        assert_eq!(other_nodes_head("42 abc", "abc"), None);
        // A node that names no origin (an older version) still wakes us.
        assert_eq!(other_nodes_head("42", "abc"), Some(42));
        assert_eq!(other_nodes_head("junk def", "abc"), None);
    }
}
