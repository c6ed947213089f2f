//! Batch boxes: votes and joins without an Idempotency-Key wait here for
//! the writer and go to the store as one command per batch, so a burst costs
//! a handful of statements instead of several round trips and a commit per
//! request. A lone request waits for nothing; each gets its own typed
//! answer after its batch commits.
//!
//! The batch is formed late: the command queued in the writer takes the
//! waiting requests only when the writer starts it. While one batch
//! commits, the next command already waits in the writer's queue and the
//! requests arriving meanwhile gather behind it, so the writer goes from
//! one batch straight to the next, and each batch holds everything that
//! came while the one before it ran.
//!
//! What a batch is made of and how it is decided is a [`BatchKind`]:
//! [`Votes`] (the ballot box) and [`Joins`].

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{oneshot, Semaphore};

use super::context::{Ctx, Stamp};
use super::join::{join_batch, Joiner};
use super::outcome::{Accepted, Joined, Outcome};
use super::vote::{vote_batch, Ballot};
use crate::domain::event::{NewEvent, StoredEvent, TraceId};
use crate::store::Tx;
use crate::store::{execute, Answer};
use crate::store::{Command, EventStore, StoreError};

/// Most requests decided in one command.
const MAX_BATCH: usize = 512;

/// Most requests waiting at once; more wait for room (backpressure on the
/// handlers instead of an unbounded queue).
const MAX_WAITING: usize = 16 * MAX_BATCH;

/// What one kind of batch holds and how it is decided.
#[async_trait]
pub trait BatchKind: Send + Sync + 'static {
    /// Cloned once per batch: should the database refuse the batch, each
    /// request is tried again alone, so that one bad request fails alone.
    type Item: Clone + Send + Sync + 'static;
    /// Each request's outcome.
    type Answer: Send + Sync + 'static;
    /// The histogram of batch sizes.
    const SIZE_METRIC: &'static str;

    /// Decides `items` together: their events, and one answer per item, in
    /// order.
    async fn decide(
        ctx: &mut Ctx<'_>,
        items: &[Self::Item],
    ) -> Result<(Vec<NewEvent>, Vec<Self::Answer>), StoreError>;

    /// How many events `items` make, when that is known before deciding.
    fn known_event_count(_items: &[Self::Item]) -> Option<usize> {
        None
    }
}

/// Votes: the ballot box. Each vote is one event on its voter's topic.
pub struct Votes;

#[async_trait]
impl BatchKind for Votes {
    type Item = Ballot;
    type Answer = Outcome<Accepted>;
    const SIZE_METRIC: &'static str = crate::metrics::VOTE_BATCH_SIZE;

    async fn decide(
        ctx: &mut Ctx<'_>,
        ballots: &[Ballot],
    ) -> Result<(Vec<NewEvent>, Vec<Self::Answer>), StoreError> {
        vote_batch(ctx, ballots).await
    }

    fn known_event_count(ballots: &[Ballot]) -> Option<usize> {
        Some(ballots.len())
    }
}

/// Participants joining sessions.
pub struct Joins;

#[async_trait]
impl BatchKind for Joins {
    type Item = Joiner;
    type Answer = Outcome<Joined>;
    const SIZE_METRIC: &'static str = crate::metrics::JOIN_BATCH_SIZE;

    async fn decide(
        ctx: &mut Ctx<'_>,
        joiners: &[Joiner],
    ) -> Result<(Vec<NewEvent>, Vec<Self::Answer>), StoreError> {
        join_batch(ctx, joiners).await
    }
}

pub type BallotBox = BatchBox<Votes>;
pub type JoinBox = BatchBox<Joins>;

/// Where one request's answer goes.
type Reply<K> = oneshot::Sender<Result<<K as BatchKind>::Answer, StoreError>>;

pub struct BatchBox<K: BatchKind> {
    shared: Arc<Shared<K>>,
}

impl<K: BatchKind> Clone for BatchBox<K> {
    fn clone(&self) -> Self {
        BatchBox {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<K: BatchKind> {
    store: Arc<dyn EventStore>,
    /// The server's runtime. A batch command can queue the next one from
    /// inside the store's writer, which may run on a runtime of its own;
    /// the submitting task belongs with the handlers.
    runtime: tokio::runtime::Handle,
    waiting: Mutex<Waiting<K>>,
    room: Semaphore,
}

/// The requests no batch has taken yet.
struct Waiting<K: BatchKind> {
    items: Vec<(K::Item, Reply<K>)>,
    /// A batch command is in the writer's queue and has not started: it
    /// will take these, so no other is needed.
    batch_queued: bool,
}

impl<K: BatchKind> BatchBox<K> {
    pub fn start(store: Arc<dyn EventStore>) -> Self {
        BatchBox {
            shared: Arc::new(Shared {
                store,
                runtime: tokio::runtime::Handle::current(),
                waiting: Mutex::new(Waiting {
                    items: Vec::new(),
                    batch_queued: false,
                }),
                room: Semaphore::new(MAX_WAITING),
            }),
        }
    }

    /// Adds one request to the next batch and waits for its answer (after
    /// commit).
    pub async fn submit(&self, item: K::Item) -> Result<K::Answer, StoreError> {
        let stopped = || StoreError::unavailable("the server is shutting down");
        let _room = self.shared.room.acquire().await.map_err(|_| stopped())?;
        let (reply, answer) = oneshot::channel();
        let queue_batch = {
            let mut waiting = self.shared.lock();
            waiting.items.push((item, reply));
            !std::mem::replace(&mut waiting.batch_queued, true)
        };
        if queue_batch {
            self.shared.runtime.spawn(run_batch(Arc::clone(&self.shared)));
        }
        answer.await.map_err(|_| stopped())?
    }
}

impl<K: BatchKind> Shared<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting<K>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes up to a batch of waiting requests. The queued command is now
    /// started, so requests that come next need a new one; if some are
    /// left over (more than a batch was waiting), it is queued right away.
    fn take_batch(self: &Arc<Self>) -> Vec<(K::Item, Reply<K>)> {
        let (taken, queue_another) = {
            let mut waiting = self.lock();
            let size = waiting.items.len().min(MAX_BATCH);
            let rest = waiting.items.split_off(size);
            let taken = std::mem::replace(&mut waiting.items, rest);
            waiting.batch_queued = !waiting.items.is_empty();
            (taken, waiting.batch_queued)
        };
        if queue_another {
            self.runtime.spawn(run_batch(Arc::clone(self)));
        }
        taken
    }

    /// Every waiting request, for a batch that could not be queued.
    fn take_all_for_failure(&self) -> Vec<Reply<K>> {
        let mut waiting = self.lock();
        waiting.batch_queued = false;
        waiting.items.drain(..).map(|(_, reply)| reply).collect()
    }
}

/// What a batch command shares with the task that submitted it: the
/// replies of the requests it took, and a copy of the requests in case the
/// batch as a whole is refused.
struct Taken<K: BatchKind> {
    taken: bool,
    replies: Vec<Reply<K>>,
    items: Vec<K::Item>,
}

/// The command queued in the writer for the waiting requests: it takes
/// them when the writer starts it.
struct BatchCommand<K: BatchKind> {
    shared: Arc<Shared<K>>,
    taken: Arc<Mutex<Taken<K>>>,
    items: Vec<K::Item>,
    stamp: Stamp,
}

impl<K: BatchKind> BatchCommand<K> {
    fn take_waiting(&mut self) {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if taken.taken {
            return;
        }
        taken.taken = true;
        let (items, replies): (Vec<_>, Vec<_>) = self.shared.take_batch().into_iter().unzip();
        taken.replies = replies;
        taken.items = items.clone();
        metrics::histogram!(K::SIZE_METRIC).record(items.len() as f64);
        self.items = items;
    }
}

#[async_trait]
impl<K: BatchKind> Command for BatchCommand<K> {
    type Outcome = Vec<K::Answer>;
    type Decided = Vec<K::Answer>;

    fn start(&mut self) {
        self.take_waiting();
    }

    fn known_event_count(&self) -> Option<usize> {
        K::known_event_count(&self.items)
    }

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        // A store that did not call `start` still gets the requests.
        self.take_waiting();
        K::decide(&mut Ctx::new(tx, &self.stamp), &self.items).await
    }

    fn outcome(answers: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        answers
    }
}

/// Requests decided as a batch of their own, already taken.
struct Alone<K: BatchKind> {
    items: Vec<K::Item>,
    stamp: Stamp,
}

#[async_trait]
impl<K: BatchKind> Command for Alone<K> {
    type Outcome = Vec<K::Answer>;
    type Decided = Vec<K::Answer>;

    fn known_event_count(&self) -> Option<usize> {
        K::known_event_count(&self.items)
    }

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        K::decide(&mut Ctx::new(tx, &self.stamp), &self.items).await
    }

    fn outcome(answers: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        answers
    }
}

/// Queues a batch command in the writer and, once its transaction is over,
/// answers the requests it took.
async fn run_batch<K: BatchKind>(shared: Arc<Shared<K>>) {
    let taken = Arc::new(Mutex::new(Taken::<K> {
        taken: false,
        replies: Vec::new(),
        items: Vec::new(),
    }));
    let command = BatchCommand {
        shared: Arc::clone(&shared),
        taken: Arc::clone(&taken),
        items: Vec::new(),
        stamp: Stamp::new(TraceId::generate()),
    };
    let outcome = execute(&*shared.store, command, None).await;
    let (replies, items) = {
        let mut taken = taken.lock().unwrap_or_else(|p| p.into_inner());
        if !taken.taken {
            // The command never started (the store refused it outright):
            // the requests it would have taken get this answer instead.
            taken.taken = true;
            taken.replies = shared.take_all_for_failure();
        }
        (
            std::mem::take(&mut taken.replies),
            std::mem::take(&mut taken.items),
        )
    };
    match outcome {
        Ok(Answer::Fresh(answers)) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(_) => fail::<K>(replies, StoreError::internal("a batch without its answers")),
        // The database refused something in the batch: each request is
        // decided again on its own, so only the one at fault fails.
        Err(StoreError::Rejected { .. } | StoreError::Internal { .. }) if items.len() > 1 => {
            tracing::warn!(
                requests = items.len(),
                "a batch was refused; deciding its requests one by one"
            );
            for (item, reply) in items.into_iter().zip(replies) {
                shared.runtime.spawn(run_alone(Arc::clone(&shared), item, reply));
            }
        }
        Err(error) => fail::<K>(replies, error),
    }
}

/// One request of a refused batch, as a batch of its own.
async fn run_alone<K: BatchKind>(shared: Arc<Shared<K>>, item: K::Item, reply: Reply<K>) {
    let command = Alone::<K> {
        items: vec![item],
        stamp: Stamp::new(TraceId::generate()),
    };
    let answer = match execute(&*shared.store, command, None).await {
        Ok(Answer::Fresh(mut answers)) => answers
            .pop()
            .ok_or_else(|| StoreError::internal("a request without its answer")),
        Ok(_) => Err(StoreError::internal("a request without its answer")),
        Err(error) => Err(error),
    };
    let _ = reply.send(answer);
}

fn fail<K: BatchKind>(replies: Vec<Reply<K>>, error: StoreError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::polling::ids::{ParticipantId, PollId, SessionId, VoteId};
    use crate::polling::outcome::Refusal;
    use crate::polling::vote::VoteRequest;
    use crate::store::memory::MemoryStore;

    fn ballot_for_unknown_poll() -> VoteRequest {
        VoteRequest {
            vote_id: VoteId::new(),
            session_id: SessionId::new(),
            participant_id: ParticipantId::new(),
            poll_id: PollId::new(),
            vote_data: serde_json::json!({"selectedOptionIds": []}),
            client_submitted_at: None,
        }
    }

    /// More than a batch waits at once (on one thread every cast queues
    /// before the first batch starts): the batch takes its share, the rest
    /// rides the next one, and every voter gets an answer.
    #[tokio::test(flavor = "current_thread")]
    async fn every_waiting_vote_is_answered_when_more_than_a_batch_waits() {
        let store = Arc::new(MemoryStore::new());
        let ballots = BallotBox::start(store.clone());
        let voters = 3 * MAX_BATCH + 7;
        let casts: Vec<_> = (0..voters)
            .map(|_| {
                let ballots = ballots.clone();
                tokio::spawn(async move {
                    let ballot = Ballot {
                        request: ballot_for_unknown_poll(),
                        trace_id: TraceId::generate(),
                    };
                    ballots.submit(ballot).await
                })
            })
            .collect();
        for cast in casts {
            let answered = tokio::time::timeout(std::time::Duration::from_secs(10), cast).await;
            let answer = answered
                .expect("answered in time")
                .unwrap()
                .expect("an answer from the store");
            assert_eq!(answer.unwrap_err(), Refusal::NotFound("no such poll"));
        }
        assert!(ballots.shared.lock().items.is_empty());
        assert!(!ballots.shared.lock().batch_queued);
    }
}
