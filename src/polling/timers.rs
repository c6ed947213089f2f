//! Timed polls close by themselves. Every node runs [`PollTimers`]: it
//! reads the open timed polls from the store every [`SWEEP`] (and at once
//! when a poll is opened on this node), keeps one sleeping task per poll,
//! and when the time comes runs [`CloseDuePoll`]. Any number of nodes may
//! do so for the same poll: the writers' transactions are serialized, the
//! first one closes it and the rules refuse the others ("already
//! closed"), so `poll:closed` is written exactly once. The deadline lives
//! in the database, so a restart (or the death of every node) delays a
//! close by at most one sweep after a node comes back; it never loses it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::context::Stamp;
use super::poll::CloseDuePoll;
use super::retry::run_with_retry;
use crate::domain::event::{NewEvent, StoredEvent, TraceId};
use crate::domain::polling::ids::PollId;
use crate::store::Tx;
use crate::store::{query, Command, EventStore, StoreError};

/// How often a node looks for timed polls opened elsewhere. A poll lasts
/// at least 5 s, so a timer set on a sweep is on time; after a restart a
/// due poll closes within one sweep.
pub const SWEEP: Duration = Duration::from_secs(1);

/// This node's poll timers.
#[derive(Clone)]
pub struct PollTimers {
    /// Wakes the sweep early: a poll was just opened with a timer here.
    wake: Arc<Notify>,
}

impl PollTimers {
    pub fn start(store: Arc<dyn EventStore>, stop: CancellationToken) -> Self {
        let wake = Arc::new(Notify::new());
        let woken = Arc::clone(&wake);
        tokio::spawn(async move {
            // The poll each sleeping task waits for, and when it is due.
            let mut armed: HashMap<PollId, DateTime<Utc>> = HashMap::new();
            // Said once when the store fails and once when it is back, not
            // every second of an outage.
            let mut failing = false;
            loop {
                match query(&*store, TimedPolls).await {
                    Ok(timed) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("reading timed polls works again");
                        }
                        armed.retain(|id, _| timed.iter().any(|(t, _)| t == id));
                        let now = Utc::now();
                        for (poll, due) in timed {
                            // New here, or overdue and still open (its close
                            // failed for good, or another node's did): try.
                            if armed.insert(poll, due) != Some(due) || due <= now {
                                arm(Arc::clone(&store), poll, due, stop.clone());
                            }
                        }
                    }
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(error = %error.report(), "reading timed polls failed; retrying every second");
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = woken.notified() => {}
                    _ = tokio::time::sleep(SWEEP) => {}
                }
            }
        });
        PollTimers { wake }
    }

    /// A poll with a timer was opened on this node: look now, not at the
    /// next sweep.
    pub fn poll_opened(&self) {
        self.wake.notify_one();
    }
}

/// Sleeps until `due`, then closes the poll (a refusal means another node,
/// or the presenter, closed it first).
fn arm(store: Arc<dyn EventStore>, poll: PollId, due: DateTime<Utc>, stop: CancellationToken) {
    tokio::spawn(async move {
        let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let closed = run_with_retry(&store, || CloseDuePoll {
            poll_id: poll,
            stamp: Stamp::new(TraceId::generate()),
        })
        .await;
        if let Some(Ok(_)) = closed {
            tracing::info!(%poll, "timed poll closed");
        }
    });
}

/// The open timed polls of every session.
struct TimedPolls;

#[async_trait]
impl Command for TimedPolls {
    type Outcome = Vec<(PollId, DateTime<Utc>)>;
    type Decided = Vec<(PollId, DateTime<Utc>)>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        Ok((Vec::new(), tx.timed_polls().await?))
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}
