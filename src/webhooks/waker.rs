//! Wakes a worker when an event its selectors match is committed, so that
//! idle webhooks cost nothing: one task per node follows the log (this
//! node's committed batches as they commit, other nodes' commits through
//! the commit hints and a read, like `fanout::tail`) and checks each
//! event's topic against every registered worker's filter, in memory. A
//! thousand idle webhooks then cost one read per commit, not a thousand.
//!
//! Nothing is read while no worker is registered. A wake-up may be
//! spurious (a worker reads and finds nothing); a missed one is covered by
//! the worker's own slow poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::store::EventStore;

/// Events read per query while catching up.
const PAGE: usize = 1000;

struct Entry {
    filter: TopicFilter,
    notify: Arc<Notify>,
}

/// The registered workers, and how far the log has been followed.
#[derive(Default)]
pub(super) struct Wakers {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    /// Every event up to this id was committed and seen by the waker.
    seen: AtomicI64,
}

/// A worker's registration; dropping it unregisters.
pub(super) struct WakeHandle {
    key: u64,
    pub notify: Arc<Notify>,
    wakers: Arc<Wakers>,
}

impl WakeHandle {
    /// The worker's selectors changed.
    pub fn set_filter(&self, filter: TopicFilter) {
        if let Some(entry) = self.wakers.lock().get_mut(&self.key) {
            entry.filter = filter;
        }
    }
}

impl Drop for WakeHandle {
    fn drop(&mut self) {
        self.wakers.lock().remove(&self.key);
    }
}

impl Wakers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn register(self: &Arc<Self>, filter: TopicFilter) -> WakeHandle {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        self.lock().insert(
            key,
            Entry {
                filter,
                notify: Arc::clone(&notify),
            },
        );
        WakeHandle {
            key,
            notify,
            wakers: Arc::clone(self),
        }
    }

    /// Every event up to this id was committed before it was read here.
    pub fn seen(&self) -> EventId {
        self.seen.load(Ordering::Acquire)
    }

    fn saw(&self, id: EventId) {
        self.seen.fetch_max(id, Ordering::AcqRel);
    }

    fn wake_matching(&self, events: &[StoredEvent]) {
        for entry in self.lock().values() {
            if events.iter().any(|e| entry.filter.matches(e.topic.as_str())) {
                entry.notify.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        self.lock().values().for_each(|entry| entry.notify.notify_one());
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Follows the log until `stop`, waking the workers concerned.
pub(super) async fn run(
    store: Arc<dyn EventStore>,
    wakers: Arc<Wakers>,
    poll: Duration,
    stop: CancellationToken,
) {
    let mut hints = store.commit_hints();
    let mut batches = store.committed_batches();
    let start = match store.bounds().await {
        Ok(bounds) => bounds.head,
        Err(_) => *hints.borrow_and_update(),
    };
    wakers.saw(start);
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let everything = TopicFilter::everything();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            batch = batches.recv() => match batch {
                Ok(batch) if batch.after <= wakers.seen() => {
                    wakers.wake_matching(&batch.events);
                    if let Some(last) = batch.events.last() {
                        wakers.saw(last.id);
                    }
                    continue;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            changed = hints.changed() => {
                if changed.is_err() {
                    return;
                }
                if *hints.borrow_and_update() <= wakers.seen() {
                    continue;
                }
            }
            _ = ticker.tick() => {}
        }
        if wakers.is_empty() {
            // Nobody to wake: a worker that registers later reads for itself.
            wakers.saw(*hints.borrow());
            continue;
        }
        loop {
            match store
                .read_range(wakers.seen(), EventId::MAX, &everything, PAGE)
                .await
            {
                Ok(events) => {
                    wakers.wake_matching(&events);
                    if let Some(last) = events.last() {
                        wakers.saw(last.id);
                    }
                    if events.len() < PAGE {
                        break;
                    }
                }
                Err(_) => {
                    // The workers meet the same error and retry on their own.
                    wakers.wake_all();
                    break;
                }
            }
        }
    }
}
