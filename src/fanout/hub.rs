//! The hub: one node's live fan-out. It holds a ring of recently framed
//! events and the set of attached subscribers, each with a bounded queue.
//!
//! The seam between replay and live is decided by id under the hub's lock:
//! a subscriber attaches at a cursor, receives from the ring every matching
//! frame after that cursor, and every later frame through its queue, with
//! nothing in between. A cursor older than the ring must first be brought
//! forward from the store (`Attach::Behind`).
//!
//! Besides subscribers (streams, each with its own filter and queue), the
//! hub has observers: in-process followers of every published event (its
//! id and topic) that are not streams (the webhooks' waker). They share
//! one broadcast channel and are never dropped for being slow: one that
//! lags is told how much it missed and decides what to do (the waker
//! wakes everyone).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::frame::Frame;
use crate::domain::event::{EventId, StoredEvent};
use crate::domain::topic::{Topic, TopicFilter};
use crate::metrics;

#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Frames kept for reconnects and attaches without a store read.
    pub ring_capacity: usize,
    /// …and at most this many bytes of them: 4,096 frames of 64 KiB events
    /// would otherwise hold 256 MiB.
    pub ring_bytes: usize,
    /// Frames one subscriber may have queued; past that it is disconnected
    /// (it resumes with Last-Event-ID), so a stalled reader costs at most
    /// this many pointers.
    pub subscriber_buffer: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            ring_capacity: 4096,
            ring_bytes: 32 << 20,
            subscriber_buffer: 1024,
        }
    }
}

pub struct Hub {
    state: Mutex<State>,
    config: HubConfig,
    /// Subscribers dropped for being too slow, since start: load shed.
    slow_dropped: AtomicU64,
    /// Every event published, for observers; sent to only while one is
    /// attached (a send without receivers would still take its lock).
    observers: broadcast::Sender<Published>,
}

/// What an observer learns of each published event: which, and where. Not
/// the frame: an observer that lags must not hold thousands of bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: EventId,
    pub topic: Topic,
}

/// Frames an observer may fall behind by before it is told it lagged.
const OBSERVER_BACKLOG: usize = 4096;

struct State {
    /// Highest id published; every committed event up to it is in the ring
    /// or older than `ring_floor`.
    high: EventId,
    /// Every event with a greater id (up to `high`) is in the ring.
    ring_floor: EventId,
    ring: VecDeque<Arc<Frame>>,
    /// The bytes of the frames in the ring.
    ring_bytes: usize,
    subscribers: HashMap<u64, Subscriber>,
    /// Subscribers asking only for exact topics, indexed by topic, so an
    /// event touches only its own topic's subscribers…
    by_topic: HashMap<Arc<str>, HashSet<u64>>,
    /// …plus those with a wildcard, which are checked for every event.
    wildcard: HashSet<u64>,
    next_key: u64,
    /// Set at shutdown: no new subscriptions.
    closed: bool,
}

struct Subscriber {
    filter: TopicFilter,
    queue: mpsc::Sender<Arc<Frame>>,
    /// Cancelled when the subscriber is dropped for being slow: closes its
    /// HTTP connection even though nobody is reading from it.
    on_slow: Option<CancellationToken>,
}

/// Frames events once, outside the hub's lock.
fn frame_all(events: &[StoredEvent]) -> Vec<Arc<Frame>> {
    events.iter().map(|e| Arc::new(Frame::from_event(e))).collect()
}

/// The result of [`Hub::attach`].
pub enum Attach {
    /// Attached: send `backlog`, then whatever arrives on the subscription.
    Live {
        backlog: Vec<Arc<Frame>>,
        subscription: Subscription,
    },
    /// The cursor is older than the ring: read the store up to `high` first.
    Behind { high: EventId },
}

/// A live attachment. Dropping it detaches the subscriber.
pub struct Subscription {
    key: u64,
    hub: Arc<Hub>,
    pub frames: mpsc::Receiver<Arc<Frame>>,
}

impl Subscription {
    /// The hub's handle on this subscriber, for [`Hub::refilter`].
    pub fn key(&self) -> u64 {
        self.key
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().remove(self.key);
    }
}

impl State {
    fn remove(&mut self, key: u64) -> Option<Subscriber> {
        let subscriber = self.subscribers.remove(&key)?;
        self.unindex(key, &subscriber.filter);
        Some(subscriber)
    }

    fn index(&mut self, key: u64, filter: &TopicFilter) {
        match filter.exact_topics() {
            Some(topics) => {
                for topic in topics {
                    self.by_topic.entry(Arc::from(topic)).or_default().insert(key);
                }
            }
            None => {
                self.wildcard.insert(key);
            }
        }
    }

    fn unindex(&mut self, key: u64, filter: &TopicFilter) {
        match filter.exact_topics() {
            Some(topics) => {
                for topic in topics {
                    if let Some(keys) = self.by_topic.get_mut(topic) {
                        keys.remove(&key);
                        if keys.is_empty() {
                            self.by_topic.remove(topic);
                        }
                    }
                }
            }
            None => {
                self.wildcard.remove(&key);
            }
        }
    }

    /// Queues `frame` for one subscriber; a full or closed queue ends it
    /// as a delivery would.
    fn send_to(&mut self, key: u64, frame: Arc<Frame>) -> bool {
        let Some(subscriber) = self.subscribers.get(&key) else {
            return false;
        };
        match subscriber.queue.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                if let Some(token) = self.remove(key).and_then(|s| s.on_slow) {
                    token.cancel();
                }
                false
            }
            Err(TrySendError::Closed(_)) => {
                self.remove(key);
                false
            }
        }
    }
}

impl Hub {
    /// A hub whose live feed starts after `start` (the store's head).
    pub fn new(start: EventId, config: HubConfig) -> Arc<Self> {
        Arc::new(Hub {
            state: Mutex::new(State {
                high: start,
                ring_floor: start,
                ring: VecDeque::with_capacity(config.ring_capacity.min(4096)),
                ring_bytes: 0,
                subscribers: HashMap::new(),
                by_topic: HashMap::new(),
                wildcard: HashSet::new(),
                next_key: 0,
                closed: false,
            }),
            config,
            slow_dropped: AtomicU64::new(0),
            observers: broadcast::Sender::new(OBSERVER_BACKLOG),
        })
    }

    /// Every event published from now on, in id order. Those not received
    /// in time are lost to this observer, which then gets
    /// `RecvError::Lagged` (never a disconnect).
    pub fn observe(&self) -> broadcast::Receiver<Published> {
        self.observers.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation under this lock leaves the state consistent at each
        // step, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest id this node has published.
    pub fn high(&self) -> EventId {
        self.lock().high
    }

    /// How many subscribers were dropped for falling behind, since start.
    pub fn slow_dropped(&self) -> u64 {
        self.slow_dropped.load(Ordering::Relaxed)
    }

    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// How many live subscribers follow each selector (internal names; a
    /// subscriber reading every topic counts under `""`): the admin
    /// console's connections per topic. Walks every subscriber under the
    /// lock, so it is for an admin's occasional look, not a hot path.
    pub fn selector_counts(&self) -> HashMap<String, usize> {
        let state = self.lock();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for subscriber in state.subscribers.values() {
            let requested = subscriber.filter.requested();
            if requested.is_empty() {
                *counts.entry(String::new()).or_default() += 1;
            }
            for selector in requested {
                *counts.entry(selector.as_str().to_owned()).or_default() += 1;
            }
        }
        counts
    }

    /// Ends every live subscription (their streams see the end of their
    /// queue) and refuses new ones: the server is shutting down. Streams
    /// need not watch the shutdown signal themselves, which would put every
    /// delivery through one shared waiter list.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.subscribers.clear();
        state.by_topic.clear();
        state.wildcard.clear();
    }

    /// Attaches a subscriber that has seen everything up to `cursor`.
    pub fn attach(
        self: &Arc<Self>,
        cursor: EventId,
        filter: TopicFilter,
        on_slow: Option<CancellationToken>,
    ) -> Attach {
        let mut state = self.lock();
        if cursor < state.ring_floor {
            return Attach::Behind { high: state.high };
        }
        let backlog: Vec<Arc<Frame>> = state
            .ring
            .iter()
            .filter(|f| f.id > cursor && filter.matches(f.topic.as_str()))
            .cloned()
            .collect();
        let (queue, frames) = mpsc::channel(self.config.subscriber_buffer);
        if state.closed {
            // Dropping `queue` ends the subscription at once.
            return Attach::Live {
                backlog: Vec::new(),
                subscription: Subscription {
                    key: u64::MAX,
                    hub: Arc::clone(self),
                    frames,
                },
            };
        }
        let key = state.next_key;
        state.next_key += 1;
        state.index(key, &filter);
        state.subscribers.insert(
            key,
            Subscriber {
                filter,
                queue,
                on_slow,
            },
        );
        Attach::Live {
            backlog,
            subscription: Subscription {
                key,
                hub: Arc::clone(self),
                frames,
            },
        }
    }

    /// Replaces a live subscriber's filter (a room joined or left) and
    /// queues `notice` to it, both under the lock: every event published
    /// after the notice is matched against the new filter, none before it.
    /// `false` when the subscriber is gone.
    pub fn refilter(&self, key: u64, filter: TopicFilter, notice: Frame) -> bool {
        let mut state = self.lock();
        let Some(old) = state.subscribers.get(&key).map(|s| s.filter.clone()) else {
            return false;
        };
        state.unindex(key, &old);
        state.index(key, &filter);
        if let Some(subscriber) = state.subscribers.get_mut(&key) {
            subscriber.filter = filter;
        }
        state.send_to(key, Arc::new(notice))
    }

    /// Sends a frame that is not stored (`system:status`) to every live
    /// subscriber whose filter matches its topic; not kept in the ring.
    pub fn broadcast_transient(&self, frame: Frame) -> usize {
        let frame = Arc::new(frame);
        let mut state = self.lock();
        let topic = frame.topic.as_str();
        let keys: Vec<u64> = state
            .by_topic
            .get(topic)
            .into_iter()
            .flatten()
            .chain(state.wildcard.iter())
            .copied()
            .filter(|key| {
                state
                    .subscribers
                    .get(key)
                    .is_some_and(|s| s.filter.matches(topic))
            })
            .collect();
        keys.into_iter()
            .filter(|key| state.send_to(*key, Arc::clone(&frame)))
            .count()
    }

    /// Publishes committed events, in id order, to the ring and to every
    /// matching subscriber. Ids at or below `high` were already published
    /// and are skipped, so overlapping reads of the store are harmless.
    pub fn publish(&self, events: &[StoredEvent]) {
        let frames = frame_all(events);
        let mut state = self.lock();
        self.deliver(&mut state, frames);
    }

    /// Publishes a batch this node just committed, if the hub already has
    /// every event committed before it (`after`); otherwise does nothing
    /// and says so, and the tail reads the gap from the store.
    pub fn publish_after(&self, after: EventId, events: &[StoredEvent]) -> bool {
        let frames = frame_all(events);
        let mut state = self.lock();
        if state.high < after {
            return false;
        }
        self.deliver(&mut state, frames);
        true
    }

    fn deliver(&self, state: &mut State, frames: Vec<Arc<Frame>>) {
        let mut delivered = 0u64;
        let mut full = Vec::new();
        let mut closed = Vec::new();
        let observed = self.observers.receiver_count() > 0;
        for frame in frames {
            if frame.id <= state.high {
                continue;
            }
            state.high = frame.id;
            if observed {
                let _ = self.observers.send(Published {
                    id: frame.id,
                    topic: frame.topic.clone(),
                });
            }
            state.ring_bytes += frame.bytes.len();
            state.ring.push_back(Arc::clone(&frame));
            while state.ring.len() > self.config.ring_capacity
                || (state.ring_bytes > self.config.ring_bytes && state.ring.len() > 1)
            {
                if let Some(evicted) = state.ring.pop_front() {
                    state.ring_floor = evicted.id;
                    state.ring_bytes -= evicted.bytes.len();
                }
            }
            let exact = state.by_topic.get(frame.topic.as_str()).into_iter().flatten();
            for key in exact.chain(state.wildcard.iter()) {
                let Some(subscriber) = state.subscribers.get(key) else {
                    continue;
                };
                if !subscriber.filter.matches(frame.topic.as_str()) {
                    continue;
                }
                match subscriber.queue.try_send(Arc::clone(&frame)) {
                    Ok(()) => delivered += 1,
                    Err(TrySendError::Full(_)) => full.push(*key),
                    Err(TrySendError::Closed(_)) => closed.push(*key),
                }
            }
            for key in closed.drain(..) {
                state.remove(key);
            }
            for key in full.drain(..) {
                if let Some(subscriber) = state.remove(key) {
                    tracing::info!("dropping a subscriber whose buffer is full");
                    self.slow_dropped.fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(metrics::SLOW_CONSUMERS_DROPPED).increment(1);
                    if let Some(token) = subscriber.on_slow {
                        token.cancel();
                    }
                }
            }
        }
        ::metrics::counter!(metrics::DELIVERIES).increment(delivered);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    use super::*;
    use crate::domain::event::{EventType, TraceId};

    fn event(id: EventId, topic: &str) -> StoredEvent {
        StoredEvent {
            id,
            topic: Topic::parse(topic).unwrap(),
            event_type: EventType::parse("demo:said").unwrap(),
            trace_id: TraceId::from_stored("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            payload: RawValue::from_string("{}".into()).unwrap(),
            timestamp: chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            entity: None,
        }
    }

    fn received(observer: &mut broadcast::Receiver<Published>) -> Vec<(EventId, String)> {
        let mut got = Vec::new();
        while let Ok(published) = observer.try_recv() {
            got.push((published.id, published.topic.as_str().to_owned()));
        }
        got
    }

    #[test]
    fn an_observer_sees_every_published_frame_once_in_id_order() {
        // Given a hub at 10 and an observer, when batches are published,
        // one overlapping what came before (a re-read of the store), and
        // one this node committed after a gap (not published)...
        let hub = Hub::new(10, HubConfig::default());
        let mut observer = hub.observe();
        hub.publish(&[event(11, "a:1"), event(12, "b:2")]);
        hub.publish(&[event(12, "b:2"), event(13, "a:1")]);
        assert!(!hub.publish_after(20, &[event(21, "c:3")]));
        assert!(hub.publish_after(13, &[event(14, "c:3")]));
        // ...then it sees each published event once, in order, any topic.
        let got = received(&mut observer);
        let want = [(11, "a:1"), (12, "b:2"), (13, "a:1"), (14, "c:3")];
        assert_eq!(got, want.map(|(id, t)| (id, t.to_owned())));
        assert_eq!(observer.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    #[tokio::test]
    async fn an_observer_that_falls_behind_is_told_not_dropped() {
        let hub = Hub::new(0, HubConfig::default());
        let mut observer = hub.observe();
        let events: Vec<StoredEvent> = (1..=(OBSERVER_BACKLOG as EventId + 10))
            .map(|id| event(id, "a:1"))
            .collect();
        hub.publish(&events);
        assert!(matches!(observer.recv().await, Err(RecvError::Lagged(10))));
        // It goes on with what is still held, and with what comes next.
        assert_eq!(observer.recv().await.unwrap().id, 11);
        hub.publish(&[event(OBSERVER_BACKLOG as EventId + 11, "a:1")]);
        let last = received(&mut observer).pop().unwrap();
        assert_eq!(last.0, OBSERVER_BACKLOG as EventId + 11);
        // Observers are not subscribers: no stream counts them.
        assert_eq!(hub.subscriber_count(), 0);
    }
}
