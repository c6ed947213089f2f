//! Delivery of one webhook, on the node that holds its lease: the
//! matching events after its cursor, one at a time, in id order; each
//! POSTed until a 2xx, then the cursor moves to it (fenced on the lease
//! and the revision). A failure is recorded and waited out (`retry.rs`);
//! the same event is tried again, so nothing is skipped. Caught up, it
//! sleeps until the waker (`waker.rs`) sees a matching event committed,
//! on any node, or [`IDLE_POLL`] at most.
//!
//! A receiver that answers `410 Gone` has the webhook disabled (recorded
//! with the failure, fenced like it) and the worker stops; an admin
//! enables it again, and delivery resumes with that same event.
//!
//! At-least-once: an event whose POST succeeded but whose cursor write
//! did not land (a crash, a lost lease, a database outage in between) is
//! sent again, by this node or the next, with the same `webhook-id`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::retry::{heed_retry_after, retry_delay};
use super::shared::Shared;
use super::signing::{message_body, message_id, SigningKey};
use super::spec::stored_filter;
use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::store::webhooks::{AfterFailure, DeliveryError, WebhookRow};

/// Events read from the log at a time.
const PAGE: usize = 100;
/// How long to wait after the store failed before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// The longest a caught-up worker sleeps without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(10);

/// What the worker delivers with, from the row as the API last left it.
struct Target {
    row: WebhookRow,
    filter: TopicFilter,
}

impl Target {
    fn new(row: WebhookRow) -> Self {
        Target {
            filter: stored_filter(&row.topics, row.tenant.as_deref()),
            row,
        }
    }

    /// The keys an attempt made now is signed with: the secret's, then a
    /// replaced one's while it still signs. `None` if one does not parse.
    fn keys(&self) -> Option<Vec<SigningKey>> {
        let now = chrono::Utc::now();
        self.row
            .signing_secrets(now)
            .map(|secret| SigningKey::parse(secret).ok())
            .collect()
    }
}

/// What became of one attempt, as the loop acts on it.
enum Step {
    /// Delivered and recorded: on to the next event.
    Delivered,
    /// Failed; try again after this long.
    Retry(Duration),
    /// The row changed or the lease went: start over from the row.
    Fenced,
}

pub(super) struct Worker {
    shared: Arc<Shared>,
    row: watch::Receiver<WebhookRow>,
    /// Cancelled when the lease is gone or the node stops.
    lost: CancellationToken,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, row: watch::Receiver<WebhookRow>, lost: CancellationToken) -> Self {
        Worker { shared, row, lost }
    }

    pub async fn run(mut self) {
        let mut target = Target::new(self.row.borrow_and_update().clone());
        let wake = self.shared.wakers.register(target.filter.clone());
        // Every matching event up to here was delivered; may be past the
        // cursor when the events after it did not match.
        let mut scanned: EventId = target.row.cursor;
        let mut failures = target.row.consecutive_failures;
        // A webhook taken over while failing keeps its pace.
        let mut next_attempt = (failures > 0).then(|| Instant::now() + self.delay(failures));
        loop {
            if self.changed(&target) {
                target = Target::new(self.row.borrow_and_update().clone());
                wake.set_filter(target.filter.clone());
                scanned = target.row.cursor;
                failures = target.row.consecutive_failures;
                next_attempt = None; // an admin's change is tried at once
            }
            if let Some(at) = next_attempt.take() {
                tokio::select! {
                    biased;
                    _ = self.lost.cancelled() => return,
                    _ = self.row.changed() => continue,
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            // Committed before the read: what it does not return up to
            // here did not match.
            let floor = self.shared.wakers.seen();
            let events = match self
                .shared
                .store
                .read_range(scanned, EventId::MAX, &target.filter, PAGE)
                .await
            {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(webhook = %target.row.id, error = %error.report(), "cannot read events for a webhook");
                    next_attempt = Some(Instant::now() + STORE_RETRY);
                    continue;
                }
            };
            let mut complete = true;
            for event in &events {
                if self.lost.is_cancelled() {
                    return;
                }
                if self.changed(&target) {
                    complete = false;
                    break;
                }
                match self.attempt(&target, event, &mut failures).await {
                    Some(Step::Delivered) => scanned = event.id,
                    Some(Step::Retry(after)) => {
                        next_attempt = Some(Instant::now() + after);
                        complete = false;
                        break;
                    }
                    Some(Step::Fenced) => {
                        // Wait for the new row, or for the lease's end.
                        tokio::select! {
                        biased;
                                _ = self.lost.cancelled() => return,
                                _ = self.row.changed() => {}
                            }
                        complete = false;
                        break;
                    }
                    None => return,
                }
            }
            if !complete {
                continue;
            }
            if events.len() == PAGE {
                continue; // more to read at once
            }
            scanned = scanned.max(floor);
            tokio::select! {
                    biased;
                _ = self.lost.cancelled() => return,
                _ = self.row.changed() => {}
                _ = wake.notify.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    /// One attempt at one event; `None` when the worker must stop.
    async fn attempt(&self, target: &Target, event: &StoredEvent, failures: &mut u32) -> Option<Step> {
        let node = self.shared.settings.node_id;
        let row = &target.row;
        let sent = match target.keys() {
            Some(keys) => {
                let id = message_id(row.id, event);
                let body = message_body(event);
                tokio::select! {
                    biased;
                    _ = self.lost.cancelled() => return None,
                    sent = self.shared.sender.send(&row.url, &keys, &id, &body) => sent,
                }
            }
            // Only checked secrets are stored; should one not parse, say so.
            None => Err(super::sender::Failure::Other("the secret does not parse".into())),
        };
        crate::metrics::webhook_attempt(sent.is_ok());
        let recorded = match sent {
            Ok(()) => self
                .shared
                .hooks
                .record_delivery(row.id, node, row.revision, event.id)
                .await
                .map(|kept| kept.then_some(0)),
            Err(failure) => {
                let error = DeliveryError {
                    at: crate::domain::event::now_millis(),
                    message: failure.message(),
                };
                tracing::debug!(webhook = %row.id, event = event.id, error = %error.message, "webhook delivery failed");
                let then = if failure.is_gone() {
                    AfterFailure::Disable
                } else {
                    AfterFailure::Retry
                };
                let recorded = self
                    .shared
                    .hooks
                    .record_failure(row.id, node, row.revision, error, then)
                    .await;
                match recorded {
                    Ok(Some(_)) if then == AfterFailure::Disable => {
                        tracing::info!(webhook = %row.id, "the receiver answered 410 Gone: webhook disabled");
                        return None;
                    }
                    Ok(Some(count)) => {
                        *failures = count;
                        let delay = heed_retry_after(self.delay(count), failure.retry_after());
                        return Some(Step::Retry(delay));
                    }
                    Ok(None) => Ok(None),
                    Err(error) => Err(error),
                }
            }
        };
        match recorded {
            Ok(Some(_)) => {
                *failures = 0;
                Some(Step::Delivered)
            }
            Ok(None) => Some(Step::Fenced),
            Err(error) => {
                // Not recorded: the event goes again (at least once).
                tracing::warn!(webhook = %row.id, error = %error.report(), "cannot record a webhook attempt");
                *failures = failures.saturating_add(1);
                Some(Step::Retry(STORE_RETRY.max(self.delay(*failures))))
            }
        }
    }

    /// Whether the API changed the webhook since `target` was read.
    fn changed(&self, target: &Target) -> bool {
        self.row.borrow().revision != target.row.revision
    }

    fn delay(&self, failures: u32) -> Duration {
        retry_delay(failures, &self.shared.settings.retry, rand::random::<f64>())
    }
}
