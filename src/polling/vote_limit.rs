//! The per-participant vote rate limit, held across the cluster: each node
//! allows its share, `rate / live nodes` per second, so whatever way a load
//! balancer spreads one participant's requests, the cluster together never
//! lets through more than the configured rate. The live node count comes
//! from the nodes' heartbeats (see `presence`).

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;

use crate::domain::polling::ids::ParticipantId;

pub struct VoteLimit {
    rate: NonZeroU32,
    live_nodes: watch::Receiver<usize>,
    /// The limiter for the node count it was built for; rebuilt (its state
    /// forgotten) when the count changes, which is rare.
    current: RwLock<(usize, Arc<DefaultKeyedRateLimiter<ParticipantId>>)>,
}

impl VoteLimit {
    pub fn new(rate: NonZeroU32, live_nodes: watch::Receiver<usize>) -> Self {
        let nodes = (*live_nodes.borrow()).max(1);
        VoteLimit {
            rate,
            live_nodes,
            current: RwLock::new((nodes, Arc::new(RateLimiter::keyed(node_share(rate, nodes))))),
        }
    }

    /// Takes one vote from the participant's budget, or says how long to wait.
    pub fn check(&self, participant: ParticipantId) -> Result<(), Duration> {
        self.limiter()
            .check_key(&participant)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn limiter(&self) -> Arc<DefaultKeyedRateLimiter<ParticipantId>> {
        let nodes = (*self.live_nodes.borrow()).max(1);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == nodes {
                return Arc::clone(&current.1);
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.0 != nodes {
            tracing::info!(nodes, "live nodes changed: vote rate limit shared out again");
            *current = (nodes, Arc::new(RateLimiter::keyed(node_share(self.rate, nodes))));
        }
        Arc::clone(&current.1)
    }
}

/// One node's share of the rate: a vote every `nodes / rate` seconds, with
/// a burst of the share (at least one vote).
fn node_share(rate: NonZeroU32, nodes: usize) -> Quota {
    let nodes = nodes.max(1) as u32;
    let period = Duration::from_secs_f64(f64::from(nodes) / f64::from(rate.get()));
    let burst = NonZeroU32::new(rate.get() / nodes).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(rate))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn allowed_at_once(limit: &VoteLimit, participant: ParticipantId) -> usize {
        (0..100).filter(|_| limit.check(participant).is_ok()).count()
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
        let wait = limit.check(ParticipantId(Uuid::new_v4()));
        assert!(wait.is_ok());
    }
}
