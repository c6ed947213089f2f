//! Results broadcasts, coalesced per poll: after a vote commits, its poll
//! is marked dirty; at most one broadcast per poll per interval goes out,
//! each reading the tally in its own transaction. Every vote is followed
//! by a broadcast that starts after its commit, so the last broadcast of a
//! burst always carries the final totals, whichever node took the votes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use async_trait::async_trait;

use super::context::{settle, Ctx, Stamp, Stop};
use super::outcome::Outcome;
use super::retry::run_with_retry;
use crate::domain::event::{NewEvent, StoredEvent, TraceId};
use crate::domain::polling::events::results_broadcast;
use crate::domain::polling::ids::PollId;
use crate::domain::polling::model::Poll;
use crate::domain::polling::DomainEvent;
use crate::store::Tx;
use crate::store::{Command, EventStore, StoreError};

/// Open-text answers carried in a results broadcast (GET results has all).
pub const BROADCAST_TEXTS: usize = 50;

#[derive(Clone)]
pub struct ResultsCoalescer {
    dirty: mpsc::UnboundedSender<PollId>,
}

enum Message {
    Dirty(PollId),
    Due(PollId),
}

#[derive(Default)]
struct PollTimer {
    /// The earliest time the next broadcast may go out.
    next_allowed: Option<Instant>,
    /// A broadcast is already scheduled: more votes join it.
    scheduled: bool,
}

impl ResultsCoalescer {
    pub fn start(store: Arc<dyn EventStore>, interval: Duration, stop: CancellationToken) -> Self {
        let (dirty, mut incoming) = mpsc::unbounded_channel::<PollId>();
        let (due_tx, mut due) = mpsc::unbounded_channel::<PollId>();
        tokio::spawn(async move {
            let mut timers: HashMap<PollId, PollTimer> = HashMap::new();
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(poll) = incoming.recv() => Message::Dirty(poll),
                    Some(poll) = due.recv() => Message::Due(poll),
                };
                let now = Instant::now();
                match message {
                    Message::Dirty(poll) => {
                        let timer = timers.entry(poll).or_default();
                        if timer.scheduled {
                            continue;
                        }
                        timer.scheduled = true;
                        let at = timer.next_allowed.unwrap_or(now).max(now);
                        let due_tx = due_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep_until(at).await;
                            let _ = due_tx.send(poll);
                        });
                    }
                    Message::Due(poll) => {
                        let timer = timers.entry(poll).or_default();
                        timer.scheduled = false;
                        timer.next_allowed = Some(now + interval);
                        let store = Arc::clone(&store);
                        tokio::spawn(async move {
                            run_with_retry(&store, || EmitResults {
                                poll_id: poll,
                                stamp: Stamp::new(TraceId::generate()),
                            })
                            .await;
                        });
                    }
                }
                // Forget polls idle for a while, so the map stays small.
                timers.retain(|_, t| t.scheduled || t.next_allowed.is_some_and(|n| n + interval * 10 > now));
            }
        });
        ResultsCoalescer { dirty }
    }

    /// A vote on `poll` has committed.
    pub fn dirty(&self, poll: PollId) {
        let _ = self.dirty.send(poll);
    }
}

/// A results broadcast: the poll's tally as it stands now, on the session
/// topic (`vote:accepted` without a voter).
pub struct EmitResults {
    pub poll_id: PollId,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for EmitResults {
    type Outcome = Outcome<()>;
    type Decided = Outcome<()>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let emitted = async {
            let poll = ctx.poll(self.poll_id).await?;
            let tally = ctx.tx.tally(&poll, BROADCAST_TEXTS).await?;
            let latest = ctx.tx.latest_vote(poll.id).await?;
            let results = tally.results_json(&poll);
            let events = results_broadcast(&poll, &results, latest, &ctx.stamp.trace_id);
            Ok::<_, Stop>((events, ()))
        };
        settle(emitted.await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// The results broadcast of `poll` as its tally stands in this
/// transaction; none for a poll without votes (its results never moved).
pub async fn final_results(ctx: &mut Ctx<'_>, poll: &Poll) -> Result<Vec<NewEvent>, StoreError> {
    let tally = ctx.tx.tally(poll, BROADCAST_TEXTS).await?;
    if tally.vote_count == 0 {
        return Ok(Vec::new());
    }
    let latest = ctx.tx.latest_vote(poll.id).await?;
    let results = tally.results_json(poll);
    Ok(results_broadcast(poll, &results, latest, &ctx.stamp.trace_id))
}

/// Domain events as events to append, with this request's trace id; a
/// reveal carries its poll's results as they stand in this transaction
/// (after the command's writes).
pub async fn rendered(ctx: &mut Ctx<'_>, events: &[DomainEvent]) -> Result<Vec<NewEvent>, StoreError> {
    let mut appended = Vec::with_capacity(events.len());
    for event in events {
        let results = match event {
            DomainEvent::PollResultsRevealed { poll_id, .. } => match ctx.tx.poll(*poll_id).await? {
                Some(poll) => Some(ctx.tx.tally(&poll, BROADCAST_TEXTS).await?.results_json(&poll)),
                None => None,
            },
            _ => None,
        };
        appended.push(event.to_new_event(&ctx.stamp.trace_id, results.as_ref()));
    }
    Ok(appended)
}
