//! Which requests of a writer batch run, and how each is answered, from
//! their Idempotency-Keys: pure decisions, no database. A key the log
//! already remembers is replayed (or refused, with another body); a key
//! repeated inside the batch waits for its first request's answer.

use std::collections::HashMap;

use crate::store::command::Remembered;
use crate::store::error::StoreError;
use crate::store::event_store::{replay_or_conflict, AppendOutcome, AppendRequest, IdempotencyKey};

/// One request's answer from a batch: a command the database refused
/// fails alone, and the rest of its batch commits.
pub type Outcome = Result<AppendOutcome, StoreError>;

/// What the batch does with one append.
pub enum Plan {
    /// Append its events (index into the list of executed appends).
    Execute(usize),
    /// Already decided from a remembered idempotency key.
    Decided(AppendOutcome),
    /// Same key as an earlier append of this batch: answer like it.
    Follow(usize),
}

/// Decides, for each request, whether it runs or is answered from a key.
pub fn plan_appends(
    requests: &[AppendRequest],
    remembered: &HashMap<(String, String), (String, Remembered)>,
) -> (Vec<Plan>, usize) {
    let mut plans = Vec::with_capacity(requests.len());
    let mut first_with_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut executed = 0;
    for (index, request) in requests.iter().enumerate() {
        let plan = match &request.idempotency {
            None => None,
            Some(key) => {
                let id = (key.scope.as_str(), key.key.as_str());
                if let Some((fingerprint, response)) = remembered.get(&(key.scope.clone(), key.key.clone())) {
                    Some(Plan::Decided(replay_or_conflict(key, fingerprint, response)))
                } else if let Some(&leader) = first_with_key.get(&id) {
                    Some(Plan::Follow(leader))
                } else {
                    first_with_key.insert(id, index);
                    None
                }
            }
        };
        plans.push(plan.unwrap_or_else(|| {
            executed += 1;
            Plan::Execute(executed - 1)
        }));
    }
    (plans, executed)
}

/// One answer per request: a command that ran is committed (its outcome
/// went to its caller); a key seen before is replayed or refused; a key
/// repeated within the batch answers like its first request did.
pub fn resolve_outcomes(
    plans: Vec<Plan>,
    keys: &[Option<IdempotencyKey>],
    remembered: Vec<Result<Option<Remembered>, StoreError>>,
) -> Vec<Outcome> {
    let leader_of: Vec<Option<usize>> = plans
        .iter()
        .map(|p| match p {
            Plan::Execute(i) => Some(*i),
            _ => None,
        })
        .collect();
    plans
        .into_iter()
        .enumerate()
        .map(|(index, plan)| match plan {
            Plan::Execute(i) => remembered[i]
                .as_ref()
                .map(|_| AppendOutcome::Committed)
                .map_err(Clone::clone),
            Plan::Decided(decided) => Ok(decided),
            Plan::Follow(leader) => {
                let executed = leader_of[leader].expect("a leader always executes");
                let leader_key = keys[leader].as_ref().expect("a leader has a key");
                let key = keys[index].as_ref().expect("a follower has a key");
                match &remembered[executed] {
                    Ok(Some(answer)) => Ok(replay_or_conflict(key, &leader_key.fingerprint, answer)),
                    // The first request with this key was refused, and a
                    // refusal is not kept: decided afresh, on a retry.
                    Ok(None) => Err(StoreError::unavailable(
                        "a request with the same Idempotency-Key was decided at the same moment; retry",
                    )),
                    Err(error) => Err(error.clone()),
                }
            }
        })
        .collect()
}
