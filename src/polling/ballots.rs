//! The ballot box: votes without an Idempotency-Key wait here for the
//! writer and go to the store as one command per batch, so a burst of votes
//! costs a handful of statements instead of a dozen per vote. A lone vote
//! waits for nothing; each voter is answered after its batch commits.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::ops::{Ballot, BallotAnswers, Op, Traced, VoteRequest};
use crate::domain::event::{now_millis, TraceId};
use crate::error::ApiError;
use crate::store::{AppendRequest, EventStore, StoredResponse};

/// Most votes decided in one command.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<StoredResponse, ApiError>>;

#[derive(Clone)]
pub struct BallotBox {
    queue: mpsc::Sender<(Ballot, Reply)>,
}

impl BallotBox {
    pub fn start(store: Arc<dyn EventStore>) -> Self {
        let (queue, mut incoming) = mpsc::channel::<(Ballot, Reply)>(16 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (ballots, replies): (Vec<Ballot>, Vec<Reply>) =
                    std::mem::take(&mut batch).into_iter().unzip();
                count_batch(ballots.len());
                let answers = submit(&store, ballots).await;
                match answers {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(error) => {
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        BallotBox { queue }
    }

    /// Casts one vote and waits for its answer (after commit).
    pub async fn cast(&self, request: VoteRequest, trace_id: &TraceId) -> Result<StoredResponse, ApiError> {
        let (reply, answer) = oneshot::channel();
        let ballot = Ballot {
            request,
            trace_id: trace_id.clone(),
        };
        let stopped = || ApiError::unavailable("the server is shutting down");
        self.queue.send((ballot, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn count_batch(size: usize) {
    metrics::histogram!("pollcast_vote_batch_size").record(size as f64);
}

async fn submit(store: &Arc<dyn EventStore>, ballots: Vec<Ballot>) -> Result<Vec<StoredResponse>, ApiError> {
    let answers: BallotAnswers = Arc::default();
    let command = Traced {
        op: Op::VoteBatch {
            ballots,
            answers: Arc::clone(&answers),
        },
        trace_id: TraceId::generate(),
        at: now_millis(),
    };
    let request = AppendRequest {
        command: Box::new(command),
        idempotency: None,
    };
    store.append(request).await?;
    let answers = answers.lock().unwrap_or_else(|p| p.into_inner()).take();
    answers.ok_or_else(ApiError::internal)
}
