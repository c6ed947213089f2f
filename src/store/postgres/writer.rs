//! The writer: one per node, on a thread of its own with its own
//! connection. It drains queued appends into one transaction per batch
//! (group commit: one fsync for many commands), under a fixed advisory
//! lock so that ids are assigned and committed in order across every node.
//!
//! A batch, in round trips: BEGIN + lock + remembered keys (+ ids when the
//! event count is known) | the commands, each behind a savepoint | events
//! + NOTIFY + keys + COMMIT. Then each command gets its outcome.

use std::collections::HashMap;

use deadpool_postgres::{ClientWrapper, Pool};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

use super::error::{during, no_connection};
use super::idempotency::{plan_appends, resolve_outcomes, Outcome, Plan};
use super::notify::{commit_notice, raise};
use super::statements::{insert_events, insert_keys, next_ids, remembered_keys, WriterStatements};
use super::tx::PgTx;
use crate::domain::event::{EventId, NewEvent, StoredEvent};
use crate::store::command::{Remembered, TxCommand};
use crate::store::error::StoreError;
use crate::store::event_store::{AppendOutcome, AppendRequest, CommittedBatch, IdempotencyKey};

/// Advisory lock serializing every writer of the log, on every node
/// ("pollcast" in ASCII).
const LOG_LOCK: i64 = 0x706f_6c6c_6361_7374;
/// Most appends folded into one transaction: large enough to amortize the
/// commit, small enough that a batch's latency stays low.
const MAX_BATCH_APPENDS: usize = 512;

/// One queued append and where its answer goes.
pub struct Job {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
    /// The span of the request that queued it: the batch's span follows
    /// from it, and a failure of this job is logged in it (with its
    /// `trace_id`).
    pub span: tracing::Span,
}

pub async fn run_writer(
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
        let span = tracing::info_span!("writer_batch", commands = jobs.len());
        let mut requests = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            span.follows_from(&job.span);
            requests.push(job.request);
            replies.push((job.reply, job.span));
        }
        match commit_batch(&pool, requests, &origin).instrument(span).await {
            Ok((outcomes, appended)) => {
                if let Some(batch) = appended {
                    // The batch first: the tail takes it as it is instead
                    // of reading it back because of the hint.
                    let head = batch.events.last().map_or(batch.after, |e| e.id);
                    let _ = batches.send(batch);
                    hints.send_if_modified(|known| raise(known, head));
                }
                for ((reply, span), outcome) in replies.into_iter().zip(outcomes) {
                    if let Err(error) = &outcome {
                        span.in_scope(
                            || tracing::debug!(error = %error.report(), "command failed in its batch"),
                        );
                    }
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::warn!(error = %error.report(), "append batch failed");
                for (reply, span) in replies {
                    span.in_scope(|| tracing::debug!("its append batch failed"));
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
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
    let client = pool.get().await.map_err(no_connection)?;
    let result = run_batch(&client, requests, origin).await;
    if result.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

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
        head.map(|head| commit_notice(head, origin)),
    );
    let kept = kept_keys(&plans, &keys, &committed);
    let keys_stored = insert_keys(client, &statements, &kept);
    let commit = async {
        client
            .execute(&statements.commit, &[])
            .await
            .map_err(during("run batch"))
    };
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
    keys: Vec<Option<IdempotencyKey>>,
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
        let savepoint = async {
            client
                .execute(&statements.savepoint, &[])
                .await
                .map_err(during("run commands"))
        };
        let run = async { command.run(&mut PgTx::new(client)).await };
        let (saved, output) = futures::join!(savepoint, run);
        saved?;
        match output {
            Err(unavailable @ StoreError::Unavailable { .. }) => return Err(unavailable),
            Err(refused) => {
                tracing::warn!(error = %refused.report(), "a command failed; rolled back alone");
                client
                    .execute(&statements.rollback_to_savepoint, &[])
                    .await
                    .map_err(during("run commands"))?;
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
    let begin = async {
        client
            .execute(&statements.begin, &[])
            .await
            .map_err(during("open batch"))
    };
    let lock = async {
        client
            .execute(&statements.lock, &[&LOG_LOCK])
            .await
            .map_err(during("open batch"))
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

/// The keys to keep: each executed request's key with what its command
/// said to remember (nothing for a refusal, decided afresh on a retry).
fn kept_keys<'a>(
    plans: &[Plan],
    keys: &'a [Option<IdempotencyKey>],
    committed: &'a [Result<Settled, StoreError>],
) -> Vec<(&'a IdempotencyKey, &'a Remembered)> {
    plans
        .iter()
        .zip(keys)
        .filter_map(|(plan, key)| match (plan, key) {
            (Plan::Execute(i), Some(key)) => match &committed[*i] {
                Ok(Settled {
                    remembered: Some(answer),
                    ..
                }) => Some((key, answer)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
