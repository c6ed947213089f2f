//! Wakes a worker when an event its selectors match is committed, so that
//! idle webhooks cost nothing: one task per node observes the hub (which
//! the tail already feeds with every node's commits, in id order) and
//! checks each event's topic against every registered worker's filter, in
//! memory. A thousand idle webhooks cost no query per commit at all.
//!
//! With no worker registered, a frame costs a look at an empty map (the
//! task wakes once per published batch, as the tail does). A wake-up may be
//! spurious (a worker reads and finds nothing); one lost when the observer
//! lags is made up by waking every worker, and anything else by the
//! worker's own slow poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::event::EventId;
use crate::domain::topic::TopicFilter;
use crate::fanout::hub::Hub;

struct Entry {
    filter: TopicFilter,
    notify: Arc<Notify>,
}

/// The registered workers, and the hub their events come through.
pub(super) struct Wakers {
    hub: Arc<Hub>,
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
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
    pub fn new(hub: Arc<Hub>) -> Self {
        Wakers {
            hub,
            entries: Mutex::default(),
            next: AtomicU64::new(0),
        }
    }

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

    /// Every event up to this id is committed, and any later one will
    /// wake the workers it matches: a worker that read the log after
    /// taking this id and found nothing may sleep past it.
    pub fn seen(&self) -> EventId {
        self.hub.high()
    }

    fn wake_matching(&self, topic: &str) {
        for entry in self.lock().values() {
            if entry.filter.matches(topic) {
                entry.notify.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        self.lock().values().for_each(|entry| entry.notify.notify_one());
    }
}

/// Observes the hub until `stop`, waking the workers concerned.
pub(super) async fn run(wakers: Arc<Wakers>, stop: CancellationToken) {
    let mut published = wakers.hub.observe();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = published.recv() => match event {
                Ok(event) => wakers.wake_matching(event.topic.as_str()),
                // Which events were missed is unknown: everyone looks.
                Err(RecvError::Lagged(_)) => wakers.wake_all(),
                Err(RecvError::Closed) => return,
            },
        }
    }
}
