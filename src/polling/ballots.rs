//! The ballot box: votes without an Idempotency-Key wait here for the
//! writer and go to the store as one command per batch, so a burst of votes
//! costs a handful of statements instead of a dozen per vote. A lone vote
//! waits for nothing; each voter is answered after its batch commits.
//!
//! The batch is formed late: the command queued in the writer takes the
//! waiting votes only when the writer starts it. While one batch commits,
//! the next command already waits in the writer's queue and the votes
//! arriving meanwhile gather behind it, so the writer goes from one batch
//! straight to the next, and each batch holds everything that came while
//! the one before it ran.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{oneshot, Semaphore};

use super::ops::{Ballot, BallotAnswers, Op, Traced, VoteRequest};
use crate::domain::event::{now_millis, TraceId};
use crate::error::ApiError;
use crate::store::polling::PollingTx;
use crate::store::{AppendRequest, CommandOutput, EventStore, StoreError, StoredResponse, TxCommand};

/// Most votes decided in one command.
const MAX_BATCH: usize = 512;

/// Most votes waiting at once; more wait for room (backpressure on the
/// handlers instead of an unbounded queue).
const MAX_WAITING: usize = 16 * MAX_BATCH;

type Reply = oneshot::Sender<Result<StoredResponse, ApiError>>;

#[derive(Clone)]
pub struct BallotBox {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn EventStore>,
    /// The server's runtime. A batch command can queue the next one from
    /// inside the store's writer, which may run on a runtime of its own;
    /// the submitting task belongs with the handlers.
    runtime: tokio::runtime::Handle,
    waiting: Mutex<Waiting>,
    room: Semaphore,
}

/// The votes no batch has taken yet.
#[derive(Default)]
struct Waiting {
    ballots: Vec<(Ballot, Reply)>,
    /// A batch command is in the writer's queue and has not started: it
    /// will take these, so no other is needed.
    batch_queued: bool,
}

impl BallotBox {
    pub fn start(store: Arc<dyn EventStore>) -> Self {
        BallotBox {
            shared: Arc::new(Shared {
                store,
                runtime: tokio::runtime::Handle::current(),
                waiting: Mutex::default(),
                room: Semaphore::new(MAX_WAITING),
            }),
        }
    }

    /// Casts one vote and waits for its answer (after commit).
    pub async fn cast(&self, request: VoteRequest, trace_id: &TraceId) -> Result<StoredResponse, ApiError> {
        let stopped = || ApiError::unavailable("the server is shutting down");
        let _room = self.shared.room.acquire().await.map_err(|_| stopped())?;
        let (reply, answer) = oneshot::channel();
        let ballot = Ballot {
            request,
            trace_id: trace_id.clone(),
        };
        let queue_batch = {
            let mut waiting = self.shared.lock();
            waiting.ballots.push((ballot, reply));
            !std::mem::replace(&mut waiting.batch_queued, true)
        };
        if queue_batch {
            self.shared.runtime.spawn(submit(Arc::clone(&self.shared)));
        }
        answer.await.map_err(|_| stopped())?
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes up to a batch of waiting votes. The queued command is now
    /// started, so votes that come next need a new one; if some are left
    /// over (more than a batch was waiting), it is queued right away.
    fn take_batch(self: &Arc<Self>) -> Vec<(Ballot, Reply)> {
        let (taken, queue_another) = {
            let mut waiting = self.lock();
            let size = waiting.ballots.len().min(MAX_BATCH);
            let rest = waiting.ballots.split_off(size);
            let taken = std::mem::replace(&mut waiting.ballots, rest);
            waiting.batch_queued = !waiting.ballots.is_empty();
            (taken, waiting.batch_queued)
        };
        if queue_another {
            self.runtime.spawn(submit(Arc::clone(self)));
        }
        taken
    }

    /// Every waiting vote, for a batch that could not be queued.
    fn take_all_for_failure(&self) -> Vec<Reply> {
        let mut waiting = self.lock();
        waiting.batch_queued = false;
        waiting.ballots.drain(..).map(|(_, reply)| reply).collect()
    }
}

/// What a batch command shares with the task that submitted it: the
/// replies of the votes it took and, once it ran, their answers.
#[derive(Default)]
struct Taken {
    taken: bool,
    replies: Vec<Reply>,
}

/// The command queued in the writer for the waiting votes.
struct BatchCommand {
    shared: Arc<Shared>,
    taken: Arc<Mutex<Taken>>,
    ballots: Vec<Ballot>,
    answers: BallotAnswers,
}

impl BatchCommand {
    fn take_waiting(&mut self) {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if taken.taken {
            return;
        }
        taken.taken = true;
        for (ballot, reply) in self.shared.take_batch() {
            self.ballots.push(ballot);
            taken.replies.push(reply);
        }
    }
}

#[async_trait]
impl TxCommand for BatchCommand {
    fn start(&mut self) {
        self.take_waiting();
    }

    fn known_event_count(&self) -> Option<usize> {
        Some(self.ballots.len())
    }

    async fn run(mut self: Box<Self>, tx: &mut dyn PollingTx) -> Result<CommandOutput, StoreError> {
        // A store that did not call `start` still gets the votes.
        self.take_waiting();
        count_batch(self.ballots.len());
        let command = Traced {
            op: Op::VoteBatch {
                ballots: std::mem::take(&mut self.ballots),
                answers: Arc::clone(&self.answers),
            },
            trace_id: TraceId::generate(),
            at: now_millis(),
        };
        Box::new(command).run(tx).await
    }
}

fn count_batch(size: usize) {
    metrics::histogram!("pollcast_vote_batch_size").record(size as f64);
}

/// Queues a batch command in the writer and, once its transaction is over,
/// answers the votes it took.
async fn submit(shared: Arc<Shared>) {
    let taken: Arc<Mutex<Taken>> = Arc::default();
    let answers: BallotAnswers = Arc::default();
    let command = BatchCommand {
        shared: Arc::clone(&shared),
        taken: Arc::clone(&taken),
        ballots: Vec::new(),
        answers: Arc::clone(&answers),
    };
    let request = AppendRequest {
        command: Box::new(command),
        idempotency: None,
    };
    let outcome = shared.store.append(request).await;
    let replies = {
        let mut taken = taken.lock().unwrap_or_else(|p| p.into_inner());
        if !taken.taken {
            // The command never started (the store refused it outright):
            // the votes it would have taken get this answer instead.
            taken.taken = true;
            taken.replies = shared.take_all_for_failure();
        }
        std::mem::take(&mut taken.replies)
    };
    let answers = answers.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (outcome, answers) {
        (Ok(_), Some(answers)) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        (Ok(_), None) => fail(replies, ApiError::internal()),
        (Err(error), _) => fail(replies, error.into()),
    }
}

fn fail(replies: Vec<Reply>, error: ApiError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::polling::ids::{ParticipantId, PollId, SessionId, VoteId};
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
                    ballots
                        .cast(ballot_for_unknown_poll(), &TraceId::generate())
                        .await
                })
            })
            .collect();
        for cast in casts {
            let answered = tokio::time::timeout(std::time::Duration::from_secs(10), cast).await;
            let answer = answered
                .expect("answered in time")
                .unwrap()
                .expect("an answer from the store");
            assert_eq!(answer.status, 404, "{}", answer.body);
        }
        assert!(ballots.shared.lock().ballots.is_empty());
        assert!(!ballots.shared.lock().batch_queued);
    }
}
