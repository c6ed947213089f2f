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

use super::ops::Op;
use super::run_with_retry;
use crate::domain::polling::ids::PollId;
use crate::store::EventStore;

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
                            run_with_retry(&store, || Op::EmitResults { poll_id: poll }).await;
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
