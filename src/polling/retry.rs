//! Background commands (presence, results broadcasts) have no client to
//! retry them through a short outage, so they retry themselves.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{execute, Answer, Command, EventStore};

/// Runs a background command (presence, results), retrying through short
/// outages: these have no client waiting to retry them. Returns its
/// outcome once it committed.
pub async fn run_with_retry<C: Command>(
    store: &Arc<dyn EventStore>,
    make: impl Fn() -> C,
) -> Option<C::Outcome> {
    for attempt in 0..6u32 {
        match execute(&**store, make(), None).await {
            Ok(Answer::Fresh(outcome)) => return Some(outcome),
            Ok(_) => return None,
            Err(error) => {
                tracing::warn!(error = %error.report(), attempt, "background polling update failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
        }
    }
    tracing::error!("background polling update failed for good");
    None
}
