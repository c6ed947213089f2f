//! The durable store on Postgres.
//!
//! Writes: one writer per node (`writer.rs`) drains queued appends into
//! one transaction per batch, under a lock shared by every node, and ends
//! each batch with a NOTIFY carrying the highest id (`notify.rs`). Nothing
//! else assigns ids. Which requests of a batch run is decided from their
//! Idempotency-Keys (`idempotency.rs`); the SQL it sends is
//! `statements.rs`. Commands read and write the tables through `tx/`.
//!
//! Reads: plain id-range queries on the pool (`reads.rs`). A dedicated
//! LISTEN connection (`listener.rs`) turns other nodes' NOTIFYs into commit
//! hints; hints are only wake-ups, the table is the truth.
//!
//! ```text
//! mod.rs ─► writer.rs ─► idempotency.rs, statements.rs ─► notify.rs
//!   │             └────► tx/ (the repositories on the batch's transaction)
//!   ├──► reads.rs ─► tx/
//!   └──► listener.rs ─► notify.rs
//! ```

mod error;
mod idempotency;
mod listener;
mod migrations;
mod notify;
mod reads;
mod statements;
mod tx;
mod webhooks;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::revocation::Revocation;
use crate::store::command::TxCommand;
use crate::store::error::StoreError;
use crate::store::event_store::{
    AppendOutcome, AppendRequest, CommittedBatch, EventStore, LogBounds, COMMITTED_BATCH_BACKLOG,
};
use error::{during, no_connection};
use listener::{run_listener, Heard};
use notify::BUS_CHANNEL;
use writer::{run_writer, Job};

/// Bus messages kept for a slow reader before it starts missing some.
const BUS_BACKLOG: usize = 1024;
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
    /// The webhooks table, on the same pool.
    webhooks: Arc<webhooks::PgWebhooks>,
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
            .map_err(|e| StoreError::internal("parse the database URL").caused_by(e))?;
        config.connect_timeout(Duration::from_secs(3));
        if config.get_application_name().is_none() {
            config.application_name("pollcast");
        }

        let (mut client, connection) = config.connect(NoTls).await.map_err(during("connect"))?;
        let driver = tokio::spawn(connection);
        let applied = migrations::apply(&mut client).await.map_err(during("connect"))?;
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
            webhooks: Arc::new(webhooks::PgWebhooks::new(pool.clone())),
            pool,
            writer,
            hints,
            batches,
            bus,
            stop,
        }))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(no_connection)
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
        .map_err(|e| StoreError::internal("build a connection pool").caused_by(e))
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
        .map_err(|e| StoreError::internal("start the writer's runtime").caused_by(e))?;
    std::thread::Builder::new()
        .name("pollcast-writer".into())
        .spawn(move || runtime.block_on(writer))
        .map_err(|e| StoreError::internal("start the writer's thread").caused_by(e))?;
    Ok(())
}

async fn read_head(pool: &Pool) -> Result<EventId, StoreError> {
    let client = pool.get().await.map_err(no_connection)?;
    let row = client
        .query_one("SELECT coalesce(max(id), 0) FROM events", &[])
        .await
        .map_err(during("read head"))?;
    Ok(row.get(0))
}

// ---------------------------------------------------------------- writer --

// ----------------------------------------------------------------- reads --

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job {
                request,
                reply,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| StoreError::unavailable("the writer stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("the writer stopped"))?
    }

    async fn read(&self, command: Box<dyn TxCommand>) -> Result<(), StoreError> {
        let client = self.client().await?;
        let result = reads::read_in_snapshot(&client, command).await;
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
        reads::read_range(&*self.client().await?, after, up_to, filter, limit).await
    }

    async fn count_range(
        &self,
        after: EventId,
        up_to: EventId,
        filter: &TopicFilter,
    ) -> Result<u64, StoreError> {
        reads::count_range(&*self.client().await?, after, up_to, filter).await
    }

    async fn bounds(&self) -> Result<LogBounds, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT pruned_through, (SELECT max(id) FROM events) FROM log_state",
                &[],
            )
            .await
            .map_err(during("bounds"))?;
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
            .map_err(during("prune"))?;
        client
            .execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'",
                &[],
            )
            .await
            .map_err(during("prune"))?;
        client
            .execute("DELETE FROM revocations WHERE until <= now()", &[])
            .await
            .map_err(during("prune"))?;
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
            .map_err(during("revoke"))?;
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
            .map_err(during("revocations"))?;
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
        client.execute("SELECT 1", &[]).await.map_err(during("ping"))?;
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

    fn has_outbox(&self) -> bool {
        true
    }

    async fn outbox_waiting(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM pollcast.outbox ORDER BY seq LIMIT 1)")
            .await
            .map_err(during("look at the outbox"))?;
        let row = client
            .query_one(&statement, &[])
            .await
            .map_err(during("look at the outbox"))?;
        Ok(row.get(0))
    }

    async fn bus_send(&self, message: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&BUS_CHANNEL, &message])
            .await
            .map_err(during("bus send"))?;
        Ok(())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn webhooks(&self) -> Arc<dyn crate::store::webhooks::WebhookStore> {
        self.webhooks.clone()
    }
}
