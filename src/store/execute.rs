//! Running a [`Command`]: in the writer's transaction ([`execute`]) or
//! on a read-only snapshot ([`query`]), with its typed outcome back.

use super::command::{Command, Remember, Remembered, Typed};
use super::error::StoreError;
use super::event_store::{AppendOutcome, AppendRequest, EventStore, IdempotencyKey};

/// What became of an [`execute`].
#[derive(Debug)]
pub enum Answer<O> {
    /// The command committed; here is its outcome.
    Fresh(O),
    /// The Idempotency-Key was seen before with the same request: nothing
    /// ran; here is what it kept of the first answer.
    Replayed(Remembered),
    /// The key was seen before with a different request: nothing ran.
    KeyReused,
}

/// An Idempotency-Key, and what to keep of the outcome with it.
pub struct Idempotent<O> {
    pub key: IdempotencyKey,
    pub remember: Remember<O>,
}

/// Runs `command` in the writer's transaction and returns its outcome once
/// committed.
pub async fn execute<C: Command>(
    store: &dyn EventStore,
    command: C,
    idempotency: Option<Idempotent<C::Outcome>>,
) -> Result<Answer<C::Outcome>, StoreError> {
    let (key, remember) = match idempotency {
        Some(Idempotent { key, remember }) => (Some(key), Some(remember)),
        None => (None, None),
    };
    let (typed, outcome) = Typed::new(command, remember);
    let request = AppendRequest {
        command: Box::new(typed),
        idempotency: key,
    };
    match store.append(request).await? {
        AppendOutcome::Committed => outcome
            .await
            .map(Answer::Fresh)
            .map_err(|_| StoreError::internal("a command committed without its outcome")),
        AppendOutcome::Replayed(remembered) => Ok(Answer::Replayed(remembered)),
        AppendOutcome::KeyReused => Ok(Answer::KeyReused),
    }
}

/// Runs `command` on a consistent read-only snapshot; its events, if any,
/// are discarded.
pub async fn query<C: Command>(store: &dyn EventStore, command: C) -> Result<C::Outcome, StoreError> {
    let (typed, outcome) = Typed::new(command, None);
    store.read(Box::new(typed)).await?;
    outcome
        .await
        .map_err(|_| StoreError::internal("a query ended without its outcome"))
}
