//! Per-key rate limits held across the cluster (votes per participant,
//! publishes per token): each node allows its share, `rate / live nodes`
//! per second, so whatever way a load balancer spreads one caller's
//! requests, the cluster together never lets through more than the
//! configured rate. The live node count comes from the nodes' heartbeats
//! (see `polling::presence`).
//!
//! A keyed limiter keeps a state per key it has seen, so every participant
//! or token ever seen would stay in memory for good; [`ClusterRateLimit`]
//! therefore forgets idle keys (those whose budget is full again, so that
//! forgetting them changes no answer) at most once per [`SWEEP_EVERY`],
//! on the first check after it is due.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;

/// The limits the HTTP edge applies per token (CONTRACT §5 `rate_limited`).
pub struct Limits {
    /// Publishes per token identity, shared out among the live nodes.
    pub publish: ClusterRateLimit<String>,
    /// Open streams per token identity on this node.
    pub streams: Arc<StreamQuota>,
    /// Most topic selectors one stream (or history request) follows.
    pub max_topics: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Open streams per client address on this node.
    pub streams_per_address: Arc<StreamQuota>,
}

/// How often a keyed limiter drops the keys it no longer needs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct ClusterRateLimit<K: Hash + Eq + Clone> {
    rate: NonZeroU32,
    live_nodes: watch::Receiver<usize>,
    /// The limiter for the node count it was built for; rebuilt (its state
    /// forgotten) when the count changes, which is rare.
    current: RwLock<(usize, Arc<DefaultKeyedRateLimiter<K>>)>,
    /// The limiter clock's reading at construction: sweep times count
    /// from it.
    born: <DefaultClock as Clock>::Instant,
    /// Nanoseconds after `born` when idle keys are next dropped.
    next_sweep: AtomicU64,
    sweep_every: Duration,
}

impl<K: Hash + Eq + Clone> ClusterRateLimit<K> {
    pub fn new(rate: NonZeroU32, live_nodes: watch::Receiver<usize>) -> Self {
        Self::sweeping_every(rate, live_nodes, SWEEP_EVERY)
    }

    fn sweeping_every(rate: NonZeroU32, live_nodes: watch::Receiver<usize>, sweep_every: Duration) -> Self {
        let nodes = (*live_nodes.borrow()).max(1);
        ClusterRateLimit {
            rate,
            live_nodes,
            current: RwLock::new((nodes, Arc::new(RateLimiter::keyed(node_share(rate, nodes))))),
            born: DefaultClock::default().now(),
            next_sweep: AtomicU64::new(nanos(sweep_every)),
            sweep_every,
        }
    }

    /// Takes one request from the key's budget, or says how long to wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let limiter = self.limiter();
        let now = limiter.clock().now();
        let result = limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(now));
        self.sweep_if_due(&limiter, now);
        result
    }

    /// Keys the limiter holds a state for right now.
    pub fn tracked_keys(&self) -> usize {
        self.limiter().len()
    }

    /// Drops the state of every key whose budget is full again (a request
    /// from it would be answered the same without it), and the memory it
    /// took.
    pub fn forget_idle(&self) {
        let limiter = self.limiter();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }

    /// On the hot path: one clock reading (shared with the check) and one
    /// relaxed atomic load; the one caller that wins the compare-exchange
    /// once per `sweep_every` does the sweep, the others go on.
    fn sweep_if_due(&self, limiter: &DefaultKeyedRateLimiter<K>, now: <DefaultClock as Clock>::Instant) {
        let elapsed = u64::from(now.duration_since(self.born));
        let due = self.next_sweep.load(Ordering::Relaxed);
        if elapsed < due {
            return;
        }
        let next = elapsed.saturating_add(nanos(self.sweep_every));
        if self
            .next_sweep
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn limiter(&self) -> Arc<DefaultKeyedRateLimiter<K>> {
        let nodes = (*self.live_nodes.borrow()).max(1);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == nodes {
                return Arc::clone(&current.1);
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.0 != nodes {
            tracing::info!(nodes, "live nodes changed: rate limit shared out again");
            *current = (nodes, Arc::new(RateLimiter::keyed(node_share(self.rate, nodes))));
        }
        Arc::clone(&current.1)
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One node's share of the rate: a request every `nodes / rate` seconds,
/// with a burst of the share (at least one).
fn node_share(rate: NonZeroU32, nodes: usize) -> Quota {
    let nodes = nodes.max(1) as u32;
    let period = Duration::from_secs_f64(f64::from(nodes) / f64::from(rate.get()));
    let burst = NonZeroU32::new(rate.get() / nodes).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(rate))
        .allow_burst(burst)
}

/// Open streams per token on this node: a stream takes a permit while it
/// is open and gives it back when dropped, however it ends.
pub struct StreamQuota {
    per_token: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl StreamQuota {
    pub fn new(per_token: usize) -> Arc<Self> {
        Arc::new(StreamQuota {
            per_token,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A permit for one more stream of `identity`, or `None` at the limit.
    pub fn acquire(self: &Arc<Self>, identity: &str) -> Option<StreamPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(identity.to_string()).or_default();
        if *count >= self.per_token {
            return None;
        }
        *count += 1;
        Some(StreamPermit {
            quota: Arc::clone(self),
            identity: identity.to_string(),
        })
    }

    pub fn limit(&self) -> usize {
        self.per_token
    }
}

pub struct StreamPermit {
    quota: Arc<StreamQuota>,
    identity: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.quota.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.identity) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::polling::ids::ParticipantId;
    use uuid::Uuid;

    type VoteLimit = ClusterRateLimit<ParticipantId>;

    #[test]
    fn stream_permits_are_counted_per_identity_and_returned_on_drop() {
        let quota = StreamQuota::new(2);
        let first = quota.acquire("sub:a").unwrap();
        let _second = quota.acquire("sub:a").unwrap();
        assert!(quota.acquire("sub:a").is_none());
        assert!(quota.acquire("sub:b").is_some());
        drop(first);
        assert!(quota.acquire("sub:a").is_some());
    }

    fn allowed_at_once(limit: &VoteLimit, participant: ParticipantId) -> usize {
        (0..100).filter(|_| limit.check(&participant).is_ok()).count()
    }

    #[test]
    fn one_node_allows_the_whole_rate() {
        let (_tx, rx) = watch::channel(1);
        let limit = VoteLimit::new(NonZeroU32::new(6).unwrap(), rx);
        assert_eq!(allowed_at_once(&limit, ParticipantId(Uuid::new_v4())), 6);
    }

    #[test]
    fn nodes_share_the_rate_out() {
        let (tx, rx) = watch::channel(1);
        let limit = VoteLimit::new(NonZeroU32::new(6).unwrap(), rx);
        tx.send(3).unwrap();
        assert_eq!(allowed_at_once(&limit, ParticipantId(Uuid::new_v4())), 2);
    }

    #[test]
    fn idle_keys_are_forgotten_and_their_memory_released() {
        let (_tx, rx) = watch::channel(1);
        // 1000 per second: a key used once is idle again after 1 ms.
        let limit = ClusterRateLimit::<u32>::sweeping_every(
            NonZeroU32::new(1000).unwrap(),
            rx,
            Duration::from_millis(100),
        );
        for key in 0..500 {
            assert!(limit.check(&key).is_ok());
        }
        assert_eq!(limit.tracked_keys(), 500);

        std::thread::sleep(Duration::from_millis(150));
        // The next check is past the sweep time: it sweeps the idle keys
        // and keeps only its own.
        assert!(limit.check(&10_000).is_ok());
        assert_eq!(limit.tracked_keys(), 1);
    }

    #[test]
    fn a_key_still_limited_is_not_forgotten() {
        let (_tx, rx) = watch::channel(1);
        // 1 per second: a key that used its budget stays limited for a second.
        let limit = ClusterRateLimit::<u32>::new(NonZeroU32::new(1).unwrap(), rx);
        assert!(limit.check(&1).is_ok());
        assert!(limit.check(&1).is_err());
        limit.forget_idle();
        assert_eq!(limit.tracked_keys(), 1);
        assert!(
            limit.check(&1).is_err(),
            "forgetting must not reset a limited key"
        );
    }

    #[test]
    fn sweeps_wait_for_their_interval() {
        let (_tx, rx) = watch::channel(1);
        let limit = ClusterRateLimit::<u32>::new(NonZeroU32::new(1000).unwrap(), rx);
        for key in 0..50 {
            assert!(limit.check(&key).is_ok());
        }
        std::thread::sleep(Duration::from_millis(10));
        // Idle, but the 60 s sweep is not due yet: nothing is dropped on
        // the hot path.
        assert!(limit.check(&1_000).is_ok());
        assert_eq!(limit.tracked_keys(), 51);
        // By hand, the 50 idle ones go; the one just used stays.
        limit.forget_idle();
        assert_eq!(limit.tracked_keys(), 1);
    }

    #[test]
    fn every_node_allows_at_least_one_vote() {
        let (_tx, rx) = watch::channel(10);
        let limit = VoteLimit::new(NonZeroU32::new(3).unwrap(), rx);
        assert_eq!(allowed_at_once(&limit, ParticipantId(Uuid::new_v4())), 1);
        let wait = limit.check(&ParticipantId(Uuid::new_v4()));
        assert!(wait.is_ok());
    }
}
