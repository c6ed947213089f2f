//! The live polling service: turns authorized requests into commands run
//! in the store's transactions (`ops`), and keeps the per-node machinery
//! around them: the batch boxes that turn bursts of votes and joins into
//! one command per batch (`batches`), coalesced results broadcasts
//! (`results`), presence (`presence`) and the per-participant vote rate
//! limit.

pub mod batches;
pub mod ops;
pub mod presence;
pub mod results;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::TokenKeys;
use crate::domain::event::{now_millis, TraceId};
use crate::domain::polling::ids::{ParticipantId, PollId};
use crate::error::ApiError;
use crate::limits::ClusterRateLimit;
use crate::store::{AppendOutcome, AppendRequest, EventStore, IdempotencyKey, StoredResponse};
use batches::{BallotBox, JoinBox};
use ops::{Ballot, Joiner, Op, Traced, VoteRequest};
use presence::Presence;
use results::ResultsCoalescer;

#[derive(Debug, Clone)]
pub struct PollingSettings {
    pub results_interval: Duration,
    pub grace_period: Duration,
    /// When set, creating a session requires it.
    pub admin_key: Option<String>,
    /// Votes per second one participant may submit (also the burst).
    pub vote_rate: NonZeroU32,
    /// This node, in presence rows.
    pub node_id: Uuid,
    /// How long the stream rows of a silent node count as open.
    pub presence_ttl: Duration,
}

/// Cloning is a reference-count increment.
#[derive(Clone)]
pub struct Polling {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    keys: Arc<TokenKeys>,
    settings: PollingSettings,
    results: ResultsCoalescer,
    presence: Presence,
    ballots: BallotBox,
    joins: JoinBox,
    vote_limit: ClusterRateLimit<ParticipantId>,
    live_nodes: tokio::sync::watch::Receiver<usize>,
}

impl Polling {
    pub fn start(
        store: Arc<dyn EventStore>,
        keys: Arc<TokenKeys>,
        settings: PollingSettings,
        stop: CancellationToken,
    ) -> Self {
        let results = ResultsCoalescer::start(Arc::clone(&store), settings.results_interval, stop.clone());
        let (live_nodes, live_nodes_seen) = tokio::sync::watch::channel(1);
        let presence = Presence::start(
            Arc::clone(&store),
            settings.node_id,
            settings.grace_period,
            settings.presence_ttl,
            live_nodes,
            stop,
        );
        let vote_limit = ClusterRateLimit::new(settings.vote_rate, live_nodes_seen.clone());
        let ballots = BallotBox::start(Arc::clone(&store));
        let joins = JoinBox::start(Arc::clone(&store));
        Polling {
            inner: Arc::new(Inner {
                store,
                keys,
                settings,
                results,
                presence,
                ballots,
                joins,
                vote_limit,
                live_nodes: live_nodes_seen,
            }),
        }
    }

    pub fn keys(&self) -> &Arc<TokenKeys> {
        &self.inner.keys
    }

    /// How many nodes share the database, from their heartbeats: what
    /// cluster-wide limits divide by.
    pub fn live_nodes(&self) -> tokio::sync::watch::Receiver<usize> {
        self.inner.live_nodes.clone()
    }

    pub fn settings(&self) -> &PollingSettings {
        &self.inner.settings
    }

    pub fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    /// Runs a command in the writer's transaction; the answer is the
    /// command's (or the first one, for a retried Idempotency-Key).
    pub async fn execute(
        &self,
        op: Op,
        trace_id: &TraceId,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<StoredResponse, ApiError> {
        let command = Traced {
            op,
            trace_id: trace_id.clone(),
            at: now_millis(),
        };
        let request = AppendRequest {
            command: Box::new(command),
            idempotency,
        };
        match self.inner.store.append(request).await? {
            AppendOutcome::Committed { response, .. } | AppendOutcome::Replayed(response) => Ok(response),
            AppendOutcome::KeyReused => Err(ApiError::conflict(
                "this Idempotency-Key was already used with a different request",
            )),
        }
    }

    /// Runs a query on a consistent snapshot.
    pub async fn query(&self, op: Op, trace_id: &TraceId) -> Result<StoredResponse, ApiError> {
        let command = Traced {
            op,
            trace_id: trace_id.clone(),
            at: now_millis(),
        };
        Ok(self.inner.store.read(Box::new(command)).await?)
    }

    /// Casts a vote. Without an Idempotency-Key it joins the ballot box's
    /// next batch; with one it runs on its own, so its key is recorded with
    /// it in the same transaction.
    pub async fn vote(
        &self,
        request: VoteRequest,
        trace_id: &TraceId,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<StoredResponse, ApiError> {
        match idempotency {
            Some(key) => self.execute(Op::Vote(request), trace_id, Some(key)).await,
            None => {
                let ballot = Ballot {
                    request,
                    trace_id: trace_id.clone(),
                };
                self.inner.ballots.submit(ballot).await
            }
        }
    }

    /// Joins a participant to a session. Without an Idempotency-Key it
    /// rides the join box's next batch (a room of people scanning the join
    /// code at once); with one it runs on its own, so its key is recorded
    /// with it in the same transaction.
    pub async fn join(
        &self,
        joiner: Joiner,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<StoredResponse, ApiError> {
        match idempotency {
            Some(key) => {
                let trace_id = joiner.trace_id.clone();
                self.execute(Op::Join(joiner), &trace_id, Some(key)).await
            }
            None => self.inner.joins.submit(joiner).await,
        }
    }

    /// Takes one vote from the participant's budget (this node's share of
    /// it), or says how long to wait.
    pub fn take_vote_budget(&self, participant: ParticipantId) -> Result<(), Duration> {
        self.inner.vote_limit.check(&participant)
    }

    /// A vote on `poll` committed: its results broadcast is due.
    pub fn vote_committed(&self, poll: PollId) {
        self.inner.results.dirty(poll);
    }
}

/// Runs a background op (presence, results), retrying through short
/// outages: these have no client waiting to retry them. Returns the op's
/// answer once it committed.
pub(crate) async fn run_with_retry(
    store: &Arc<dyn EventStore>,
    make: impl Fn() -> Op,
) -> Option<StoredResponse> {
    for attempt in 0..6u32 {
        let command = Traced {
            op: make(),
            trace_id: TraceId::generate(),
            at: now_millis(),
        };
        let request = AppendRequest {
            command: Box::new(command),
            idempotency: None,
        };
        match store.append(request).await {
            Ok(AppendOutcome::Committed { response, .. } | AppendOutcome::Replayed(response)) => {
                return Some(response)
            }
            Ok(AppendOutcome::KeyReused) => return None,
            Err(error) => {
                tracing::warn!(%error, attempt, "background polling update failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
        }
    }
    tracing::error!("background polling update failed for good");
    None
}
