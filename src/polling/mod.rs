//! The live polling service: commands and queries with typed outcomes,
//! run in the store's transactions, and the per-node machinery around
//! them.
//!
//! - one module per command family: [`session`] (create, start, end, add
//!   a poll), [`poll`] (open, close), [`join`], [`vote`]; [`queries`]
//!   (snapshot, results, voters) on read snapshots;
//! - [`projection`]: what the tables become once events happened;
//! - [`batches`]: the boxes that turn bursts of votes and joins into one
//!   command per batch; [`results`]: coalesced results broadcasts;
//!   [`timers`]: timed polls closing by themselves;
//!   [`presence`]: who is present, and the node heartbeat;
//! - [`outcome`]: what comes back, and why a request is refused. Nothing
//!   here knows HTTP: the edge renders outcomes.

pub mod batches;
mod context;
pub mod join;
pub mod outcome;
pub mod poll;
pub mod presence;
mod projection;
pub mod queries;
pub mod results;
mod retry;
pub mod session;
pub mod timers;
pub mod vote;

pub use context::{Actor, SessionKey, Stamp};
pub use projection::new_session;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::polling::ids::ParticipantId;
use crate::limits::ClusterRateLimit;
use crate::store::{execute, query, Answer, Idempotent};
use crate::store::{Command, EventStore, StoreError};
use batches::{BallotBox, JoinBox};
use join::{Join, Joiner};
use outcome::{Accepted, Joined, Outcome};
use presence::Presence;
use results::ResultsCoalescer;
use timers::PollTimers;
use vote::{Ballot, CastVote};

#[derive(Debug, Clone)]
pub struct PollingSettings {
    pub results_interval: Duration,
    pub grace_period: Duration,
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
    settings: PollingSettings,
    results: ResultsCoalescer,
    timers: PollTimers,
    presence: Presence,
    ballots: BallotBox,
    joins: JoinBox,
    vote_limit: ClusterRateLimit<ParticipantId>,
    live_nodes: tokio::sync::watch::Receiver<usize>,
}

impl Polling {
    pub fn start(store: Arc<dyn EventStore>, settings: PollingSettings, stop: CancellationToken) -> Self {
        let results = ResultsCoalescer::start(Arc::clone(&store), settings.results_interval, stop.clone());
        let timers = PollTimers::start(Arc::clone(&store), stop.clone());
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
                settings,
                results,
                timers,
                presence,
                ballots,
                joins,
                vote_limit,
                live_nodes: live_nodes_seen,
            }),
        }
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

    /// Runs a command in the writer's transaction; its outcome once
    /// committed (or, for a retried Idempotency-Key, what it kept).
    pub async fn execute<C: Command>(
        &self,
        command: C,
        idempotency: Option<Idempotent<C::Outcome>>,
    ) -> Result<Answer<C::Outcome>, StoreError> {
        execute(&*self.inner.store, command, idempotency).await
    }

    /// A poll's results changed without a vote (an answer was hidden):
    /// broadcast them again.
    pub fn results_changed(&self, poll: crate::domain::polling::ids::PollId) {
        self.inner.results.dirty(poll);
    }

    /// A poll was opened with a timer on this node.
    pub fn timed_poll_opened(&self) {
        self.inner.timers.poll_opened();
    }

    /// Runs a query on a consistent read-only snapshot.
    pub async fn query<C: Command>(&self, command: C) -> Result<C::Outcome, StoreError> {
        query(&*self.inner.store, command).await
    }

    /// Casts a vote. Without an Idempotency-Key it joins the ballot box's
    /// next batch; with one it runs on its own, so its key is kept with it
    /// in the same transaction. An accepted vote makes its poll's results
    /// broadcast due.
    pub async fn vote(
        &self,
        ballot: Ballot,
        idempotency: Option<Idempotent<Outcome<Accepted>>>,
    ) -> Result<Answer<Outcome<Accepted>>, StoreError> {
        let poll_id = ballot.request.poll_id;
        let answer = match idempotency {
            Some(key) => {
                let stamp = Stamp::new(ballot.trace_id.clone());
                self.execute(CastVote { ballot, stamp }, Some(key)).await?
            }
            None => Answer::Fresh(self.inner.ballots.submit(ballot).await?),
        };
        if matches!(answer, Answer::Fresh(Ok(_))) {
            self.inner.results.dirty(poll_id);
        }
        Ok(answer)
    }

    /// Joins a participant to a session. Without an Idempotency-Key it
    /// rides the join box's next batch (a room of people scanning the join
    /// code at once); with one it runs on its own, so its key is kept with
    /// it in the same transaction.
    pub async fn join(
        &self,
        joiner: Joiner,
        idempotency: Option<Idempotent<Outcome<Joined>>>,
    ) -> Result<Answer<Outcome<Joined>>, StoreError> {
        match idempotency {
            Some(key) => {
                let stamp = Stamp::new(joiner.trace_id.clone());
                self.execute(Join { joiner, stamp }, Some(key)).await
            }
            None => Ok(Answer::Fresh(self.inner.joins.submit(joiner).await?)),
        }
    }

    /// Takes one vote from the participant's budget (this node's share of
    /// it), or says how long to wait.
    pub fn take_vote_budget(&self, participant: ParticipantId) -> Result<(), Duration> {
        self.inner.vote_limit.check(&participant)
    }
}
