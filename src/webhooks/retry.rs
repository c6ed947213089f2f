//! When to try a failed delivery again, and what state a webhook is in:
//! pure decisions, tested on their own.
//!
//! Exponential backoff with full jitter (a uniform draw between zero and
//! `base · 2^(failures-1)`, capped at `max`): retries of many webhooks
//! failing at once spread out instead of arriving together. After
//! `failing_after` consecutive failures the circuit opens: the webhook is
//! `failing` and is tried only every `failing_retry` (one probe, no
//! burst), until a delivery succeeds or an admin re-enables it.
//!
//! A receiver that answers with `Retry-After` gets at least that long (up
//! to [`RETRY_AFTER_CAP`]) before the next attempt, whatever the backoff
//! says: its own word on when it can take more beats a guess.

use std::time::Duration;

/// The longest wait a receiver's `Retry-After` can ask for: past it, the
/// backoff or the circuit decides alone (a huge value must not park a
/// webhook for days while its events pile up unseen).
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// How a node retries failed deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The backoff ceiling after the first failure.
    pub base: Duration,
    /// The highest backoff ceiling.
    pub max: Duration,
    /// Consecutive failures that make a webhook `failing`.
    pub failing_after: u32,
    /// How often a `failing` webhook is tried.
    pub failing_retry: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            failing_after: 8,
            failing_retry: Duration::from_secs(60),
        }
    }
}

/// A webhook's state, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Delivering; the last attempt (if any) succeeded.
    Active,
    /// The last attempts failed; retrying with backoff.
    Retrying,
    /// The circuit is open: too many failures in a row, tried slowly.
    Failing,
    /// Turned off by an admin: nothing is delivered.
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Retrying => "retrying",
            Status::Failing => "failing",
            Status::Disabled => "disabled",
        }
    }
}

/// The state of a webhook with this many consecutive failures.
pub fn status(enabled: bool, failures: u32, policy: &RetryPolicy) -> Status {
    if !enabled {
        Status::Disabled
    } else if failures == 0 {
        Status::Active
    } else if failures < policy.failing_after.max(1) {
        Status::Retrying
    } else {
        Status::Failing
    }
}

/// The longest wait after `failures` consecutive failures (zero before
/// the first): `base · 2^(failures-1)`, at most `max`.
pub fn backoff_ceiling(failures: u32, policy: &RetryPolicy) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(32);
    policy
        .base
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(policy.max)
        .min(policy.max)
}

/// How long to wait before the next attempt after `failures` consecutive
/// failures, given `unit`, a uniform draw from `[0, 1)`: full jitter below
/// the ceiling while retrying, `failing_retry` once failing.
pub fn retry_delay(failures: u32, policy: &RetryPolicy, unit: f64) -> Duration {
    match status(true, failures, policy) {
        Status::Failing => policy.failing_retry,
        _ => backoff_ceiling(failures, policy).mul_f64(unit.clamp(0.0, 1.0)),
    }
}

/// The wait before the next attempt: `delay` from the backoff, or what the
/// receiver `asked` for with `Retry-After` when longer (capped at
/// [`RETRY_AFTER_CAP`]).
pub fn heed_retry_after(delay: Duration, asked: Option<Duration>) -> Duration {
    asked.map_or(delay, |asked| delay.max(asked.min(RETRY_AFTER_CAP)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            failing_after: 5,
            failing_retry: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_ceiling_doubles_from_the_base_up_to_the_cap() {
        let p = policy();
        let ceilings: Vec<u128> = (0..9).map(|n| backoff_ceiling(n, &p).as_millis()).collect();
        assert_eq!(ceilings, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // However many failures: never past the cap, never an overflow.
        for n in [40, 1_000, u32::MAX] {
            assert_eq!(backoff_ceiling(n, &p), p.max);
        }
    }

    #[test]
    fn a_retry_waits_between_zero_and_the_ceiling() {
        let p = policy();
        for failures in 1..p.failing_after {
            let ceiling = backoff_ceiling(failures, &p);
            assert_eq!(retry_delay(failures, &p, 0.0), Duration::ZERO);
            assert!(retry_delay(failures, &p, 0.999_999) <= ceiling);
            assert_eq!(retry_delay(failures, &p, 0.5), ceiling / 2);
            // Draws outside [0, 1) are clamped, never past the ceiling.
            assert_eq!(retry_delay(failures, &p, 7.0), ceiling);
            assert_eq!(retry_delay(failures, &p, -1.0), Duration::ZERO);
        }
        // Random draws stay inside the bounds.
        for _ in 0..1_000 {
            let failures = rand::random::<u32>() % 4 + 1;
            let delay = retry_delay(failures, &p, rand::random::<f64>());
            assert!(delay <= backoff_ceiling(failures, &p));
        }
    }

    #[test]
    fn after_enough_failures_the_circuit_opens_and_retries_slowly() {
        let p = policy();
        assert_eq!(status(true, 0, &p), Status::Active);
        assert_eq!(status(true, 1, &p), Status::Retrying);
        assert_eq!(status(true, 4, &p), Status::Retrying);
        assert_eq!(status(true, 5, &p), Status::Failing);
        assert_eq!(status(true, 500, &p), Status::Failing);
        assert_eq!(retry_delay(5, &p, 0.0), p.failing_retry);
        assert_eq!(retry_delay(99, &p, 0.9), p.failing_retry);
        // Success resets the count, and so the state.
        assert_eq!(status(true, 0, &p), Status::Active);
    }

    #[test]
    fn a_retry_after_longer_than_the_backoff_is_heeded_up_to_the_cap() {
        let ms = Duration::from_millis;
        // Nothing asked: the backoff decides.
        assert_eq!(heed_retry_after(ms(300), None), ms(300));
        // Asked for less than the backoff: the backoff still decides.
        assert_eq!(heed_retry_after(ms(300), Some(ms(100))), ms(300));
        // Asked for more: the receiver's word.
        assert_eq!(heed_retry_after(ms(300), Some(ms(2_000))), ms(2_000));
        // Asked for a day: an hour at most.
        assert_eq!(
            heed_retry_after(ms(300), Some(Duration::from_secs(86_400))),
            RETRY_AFTER_CAP
        );
        assert_eq!(
            heed_retry_after(Duration::from_secs(7_200), Some(Duration::MAX)),
            Duration::from_secs(7_200)
        );
    }

    #[test]
    fn a_disabled_webhook_is_disabled_whatever_its_failures() {
        let p = policy();
        for failures in [0, 1, 5, 100] {
            assert_eq!(status(false, failures, &p), Status::Disabled);
        }
        assert_eq!(
            ["active", "retrying", "failing", "disabled"],
            [
                Status::Active,
                Status::Retrying,
                Status::Failing,
                Status::Disabled
            ]
            .map(Status::as_str)
        );
    }
}
