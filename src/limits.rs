//! Per-key rate limits held across the cluster (votes per participant,
//! publishes per token): each node allows its share, `rate / live nodes`
//! per second, so whatever way a load balancer spreads one caller's
//! requests, the cluster together never lets through more than the
//! configured rate. The live node count comes from the nodes' heartbeats
//! (see `polling::presence`).

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
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

pub struct ClusterRateLimit<K: Hash + Eq + Clone> {
    rate: NonZeroU32,
    live_nodes: watch::Receiver<usize>,
    /// The limiter for the node count it was built for; rebuilt (its state
    /// forgotten) when the count changes, which is rare.
    current: RwLock<(usize, Arc<DefaultKeyedRateLimiter<K>>)>,
}

impl<K: Hash + Eq + Clone> ClusterRateLimit<K> {
    pub fn new(rate: NonZeroU32, live_nodes: watch::Receiver<usize>) -> Self {
        let nodes = (*live_nodes.borrow()).max(1);
        ClusterRateLimit {
            rate,
            live_nodes,
            current: RwLock::new((nodes, Arc::new(RateLimiter::keyed(node_share(rate, nodes))))),
        }
    }

    /// Takes one request from the key's budget, or says how long to wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter()
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
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
    fn every_node_allows_at_least_one_vote() {
        let (_tx, rx) = watch::channel(10);
        let limit = VoteLimit::new(NonZeroU32::new(3).unwrap(), rx);
        assert_eq!(allowed_at_once(&limit, ParticipantId(Uuid::new_v4())), 1);
        let wait = limit.check(&ParticipantId(Uuid::new_v4()));
        assert!(wait.is_ok());
    }
}
