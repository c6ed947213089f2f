//! pollcast carries real-time events over Server-Sent Events plus REST.
//!
//! Commands arrive as REST POSTs; each accepted command appends events to
//! one append-only log (Postgres, or memory for a zero-setup run) in one
//! transaction; every event streams to subscribers over SSE with its id; a
//! client that reconnects with `Last-Event-ID` gets what it missed, in
//! order, from the log. Several nodes can share one Postgres.
//!
//! # Layout
//!
//! Layers, their import rules and the path of a request file by file:
//! `docs/architecture.md` (checked by `scripts/check-architecture.py`).
//!
//! - [`config`]: flags with `POLLCAST_*` environment fallbacks.
//! - [`domain`]: pure value types and rules (topics, selectors, events, and
//!   the live polling rules `decide(state, command)`); no IO.
//! - [`auth`]: JWT tokens and what they allow.
//! - [`store`]: the event log trait, its Postgres writer/reader/listener, and
//!   the in-memory backend.
//! - [`fanout`]: the tail (store → hub, in id order), the hub (ring of framed
//!   events, subscribers), and SSE framing.
//! - [`http`]: the route table, handlers, the error boundary, the SSE
//!   stream state machine, and the server with its connection deadlines,
//!   request spans and graceful shutdown.
//! - [`polling`]: the live polling service: commands run in store
//!   transactions, coalesced results broadcasts, presence, vote rate limits.
//! - [`rooms`]: every open stream by connection id: joining and leaving
//!   topics while it stays open, and who is present on a topic.
//! - [`cluster`]: the bus between nodes (NOTIFY), for room changes and
//!   presence lists that concern a stream held by another node.
//! - [`topics`]: the topics service beside polling: reserved topics, the
//!   versioned publish, presence on topics (`presence:update` events,
//!   debounced by the grace period) and history reads, with typed outcomes.
//! - [`status`]: `system:status` and `system:alert` on the topic `system`.
//! - [`limits`]: per-token rate and stream limits held across the cluster.
//! - [`metrics`]: the Prometheus names and recorder.
//! - [`secret`]: secrets (keys, the database URL) that never print.
//! - [`webhooks`]: events POSTed to HTTP receivers, signed, at least once
//!   and in order, by one node at a time (a lease in the store).
//!
//! The path of one event: `http` parses and authorizes → `store` commits it
//! in a batch → `fanout::tail` reads it back in id order → `fanout::hub`
//! frames it once → every matching `http::stream` writes the shared bytes.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod fanout;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod polling;
pub mod revocation;
pub mod rooms;
pub mod secret;
pub mod status;
pub mod store;
pub mod streams;
pub mod topics;
pub mod webhooks;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use auth::TokenKeys;
use cluster::Cluster;
use config::ServeConfig;
use fanout::hub::{Hub, HubConfig};
use http::{AppShared, AppState, StreamSettings};
use limits::{ClusterRateLimit, Limits, StreamQuota};
use polling::{Polling, PollingSettings};
use rooms::Rooms;
use store::memory::MemoryStore;
use store::postgres::PostgresStore;
use store::{EventStore, StoreError};

/// A running server: its address, and the handle to stop it.
pub struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    state: AppState,
}

impl Server {
    /// Opens the store (applying migrations on Postgres), starts the tail,
    /// retention and the HTTP server on `listener`.
    pub async fn start(config: &ServeConfig, listener: TcpListener) -> Result<Server, StoreError> {
        let store = open_store(config).await?;
        let secret = config.token_secret.clone().unwrap_or_else(|| {
            tracing::warn!(
                "no --token-secret / POLLCAST_TOKEN_SECRET: using a random secret; the tokens it signs (live polling, \
                 HS256) will not survive a restart and other nodes will not accept them"
            );
            secret::Secret::from(TokenKeys::random_secret())
        });
        let head = store.bounds().await?.head;
        let hub = Hub::new(
            head,
            HubConfig {
                ring_capacity: config.ring_size as usize,
                ring_bytes: config.ring_bytes as usize,
                subscriber_buffer: config.subscriber_buffer as usize,
            },
        );
        let shutdown = CancellationToken::new();
        let keys =
            Arc::new(TokenKeys::new(secret.expose().as_bytes()).with_public_keys(config.public_keys()));
        for key in keys.public_keys().iter() {
            tracing::info!(alg = ?key.alg, kid = ?key.kid, source = %key.source, "verifying tokens with a public key");
        }
        let polling = Polling::start(
            Arc::clone(&store),
            PollingSettings {
                results_interval: config.results_interval,
                grace_period: config.grace_period,
                vote_rate: NonZeroU32::new(config.vote_rate).unwrap_or(NonZeroU32::MIN),
                node_id: uuid::Uuid::new_v4(),
                presence_ttl: config.presence_ttl,
            },
            shutdown.clone(),
        );
        let node_id = polling.settings().node_id;
        let presence =
            topics::presence::Announcer::start(Arc::clone(&store), config.grace_period, shutdown.clone());
        topics::sql_publish::OutboxDrain::start(Arc::clone(&store), config.outbox_poll, shutdown.clone());
        let rooms = Rooms::new(
            Arc::clone(&hub),
            store.commit_hints(),
            config.max_topics as usize,
            Some(presence),
        );
        let open_streams = streams::OpenStreams::new();
        let cluster = Cluster::start(
            node_id,
            Arc::clone(&store),
            Arc::clone(&rooms),
            polling.live_nodes(),
            Arc::clone(&open_streams),
            Arc::clone(keys.revocations()),
            shutdown.clone(),
        );
        // Revocations recorded before this start are in force at once.
        cluster.reload_revocations().await;
        let limits = Arc::new(Limits {
            publish: ClusterRateLimit::new(
                NonZeroU32::new(config.publish_rate).unwrap_or(NonZeroU32::MIN),
                polling.live_nodes(),
            ),
            streams: StreamQuota::new(config.streams_per_token as usize),
            max_topics: config.max_topics as usize,
            max_body: config.max_body as usize,
            body_timeout: config.body_timeout,
            streams_per_address: StreamQuota::new(config.streams_per_address as usize),
        });
        let webhooks = webhooks::Webhooks::new(
            Arc::clone(&store),
            Arc::clone(&hub),
            webhook_settings(config, node_id),
        )?;
        let connections = http::connections::Connections::new(connection_limits(config));
        let census = cluster::census::Census::start(
            node_id,
            Arc::clone(&store),
            Arc::clone(&hub),
            Arc::clone(&open_streams),
            polling.live_nodes(),
            shutdown.clone(),
        );
        let state = AppState::new(AppShared {
            store: Arc::clone(&store),
            hub: Arc::clone(&hub),
            polling,
            rooms,
            cluster,
            limits,
            keys,
            streams: StreamSettings {
                heartbeat: config.heartbeat,
                retry: config.retry,
            },
            shutdown: shutdown.clone(),
            connections: Arc::clone(&connections),
            open_streams: Arc::clone(&open_streams),
            admin_key: config.admin_key.clone(),
            public_url: config.public_url.clone(),
            catchups: Arc::new(tokio::sync::Semaphore::new(config.max_catchups as usize)),
            census,
            webhooks: webhooks.clone(),
        });
        metrics::handle();

        let addr = listener
            .local_addr()
            .map_err(|e| StoreError::internal("read the listening address").caused_by(e))?;
        // Nothing after this fails: the keys' fetchers cannot outlive a
        // start that did not happen. Their first fetch ends before the
        // server listens.
        auth::remote::start(Arc::clone(&state.keys), config.remote_keys(), shutdown.clone()).await;
        let mut tasks = JoinSet::new();
        tasks.spawn(fanout::tail::run(
            Arc::clone(&store),
            hub,
            config.tail_poll,
            shutdown.clone(),
        ));
        let (closing, hub_to_close) = (shutdown.clone(), Arc::clone(&state.hub));
        tasks.spawn(async move {
            closing.cancelled().await;
            hub_to_close.close();
        });
        tasks.spawn(
            status::Reporter {
                node_id,
                hub: Arc::clone(&state.hub),
                store: Arc::clone(&store),
                interval: config.status_interval,
            }
            .run(shutdown.clone()),
        );
        tasks.spawn(webhooks.run(shutdown.clone()));
        tasks.spawn(run_retention(
            Arc::clone(&store),
            config.retention,
            shutdown.clone(),
        ));
        tasks.spawn(http::server::serve(
            listener,
            http::router(state.clone()),
            http::server::ServerOptions {
                cors_origins: config.cors_origins.clone(),
                direct: config.direct_streams.then(|| {
                    http::direct::DirectStreams::new(state.clone(), !config.cors_origins.is_empty())
                }),
                connections,
            },
            shutdown.clone(),
        ));
        Ok(Server {
            addr,
            shutdown,
            tasks,
            state,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state, for tests and embedding programs.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Ends every stream, stops accepting, and waits (a few seconds at most)
    /// for connections to close.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// How this node delivers webhooks, from the flags.
fn webhook_settings(config: &ServeConfig, node_id: uuid::Uuid) -> webhooks::WebhookSettings {
    webhooks::WebhookSettings {
        node_id,
        lease: config.webhook_lease,
        timeout: config.webhook_timeout,
        retry: webhooks::RetryPolicy {
            base: config.webhook_retry_base,
            max: config.webhook_retry_max.max(config.webhook_retry_base),
            failing_after: config.webhook_failing_after,
            failing_retry: config.webhook_failing_retry,
        },
    }
}

/// The connection caps and deadlines from the flags. `--max-connections 0`
/// takes the open-files limit (raised to its hard limit first) minus a
/// reserve, so that at the cap the node still has descriptors for its
/// database connections, its listener's accept and its files.
fn connection_limits(config: &ServeConfig) -> http::connections::ConnectionLimits {
    let max_connections = match config.max_connections {
        0 => {
            let files = raise_open_files_limit();
            let reserve = (files / 10).max(256);
            let cap = files.saturating_sub(reserve).max(64);
            tracing::info!(
                open_files = files,
                max_connections = cap,
                "connection cap set from the open-files limit"
            );
            cap
        }
        n => n as usize,
    };
    http::connections::ConnectionLimits {
        head_timeout: config.head_timeout,
        idle_timeout: config.idle_timeout,
        max_connections,
        max_per_address: config.max_connections_per_address as usize,
        trusted_proxies: config.trusted_proxies.clone(),
    }
}

/// Raises this process's soft limit on open files to its hard limit and
/// returns the limit in effect (1,024 when it cannot be read).
fn raise_open_files_limit() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write `limit`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 1024;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX).min(1 << 24)
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

async fn open_store(config: &ServeConfig) -> Result<Arc<dyn EventStore>, StoreError> {
    match &config.database_url {
        Some(url) => Ok(PostgresStore::connect(url.expose()).await?),
        None => {
            tracing::warn!(
                "NO DATABASE_URL: events are kept IN MEMORY ONLY and are lost when the process exits. \
                 Set DATABASE_URL=postgres://… for durability and several nodes."
            );
            Ok(Arc::new(MemoryStore::with_budget(store::memory::MemoryBudget {
                max_events: config.memory_max_events as usize,
                max_bytes: config.memory_max_bytes as usize,
                max_rows: config.memory_max_rows as usize,
            })))
        }
    }
}

/// Drops events older than the retention window, through the store's one
/// maintenance path, a few times per window.
async fn run_retention(store: Arc<dyn EventStore>, retention: Duration, stop: CancellationToken) {
    let every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Ok(window) = chrono::Duration::from_std(retention) else {
            continue;
        };
        match store.prune(chrono::Utc::now() - window).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "retention dropped old events"),
            Err(error) => tracing::warn!(%error, "retention failed; will retry"),
        }
    }
}
