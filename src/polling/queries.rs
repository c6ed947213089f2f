//! Queries, each run on a consistent read-only snapshot (never in the
//! writer's queue): a session's snapshot, where a session stands, a poll's
//! results, a poll's voters.

use async_trait::async_trait;

use super::context::{require_presenter, settle, Actor, Ctx, SessionKey, Stamp, Stop};
use super::outcome::{Outcome, PollResults, PollVoters, Refusal, SessionState, Snapshot};
use super::results::BROADCAST_TEXTS;
use crate::domain::event::{NewEvent, StoredEvent};
use crate::domain::polling::ids::{PollId, PresenterId, SessionId};
use crate::store::Tx;
use crate::store::{Command, StoreError};

/// Open-text answers a results request returns (a broadcast carries
/// [`BROADCAST_TEXTS`]).
const ALL_TEXTS: usize = 100_000;

/// `GET /v1/sessions/{idOrCode}`: where to resync from.
pub struct GetSnapshot {
    pub key: SessionKey,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for GetSnapshot {
    type Outcome = Outcome<Snapshot>;
    type Decided = Outcome<Snapshot>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let snapshot = async {
            let session = ctx.session(&self.key).await?;
            let polls = ctx.tx.polls_of(session.id).await?;
            let mut with_results = Vec::with_capacity(polls.len());
            for poll in polls {
                let tally = ctx.tx.tally(&poll, BROADCAST_TEXTS).await?;
                with_results.push((poll, tally));
            }
            let participant_count = ctx.tx.present_count(session.id).await?;
            let last_event_id = ctx.tx.head_event_id().await?;
            let snapshot = Snapshot {
                session,
                polls: with_results,
                participant_count,
                last_event_id,
            };
            Ok::<_, Stop>((Vec::new(), snapshot))
        };
        settle(snapshot.await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// Where a session stands (draft, active, ended): what a session stream
/// checks before it opens.
pub struct GetSessionState {
    pub session_id: SessionId,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for GetSessionState {
    type Outcome = Outcome<SessionState>;
    type Decided = Outcome<SessionState>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let session = ctx.session(&SessionKey::Id(self.session_id)).await;
        settle(session.map(|session| (Vec::new(), session.status)))
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// `GET /v1/polls/{id}/results`, by a presenter or participant of the
/// poll's session.
pub struct GetResults {
    pub poll_id: PollId,
    pub actor: Actor,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for GetResults {
    type Outcome = Outcome<PollResults>;
    type Decided = Outcome<PollResults>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let results = async {
            let poll = ctx.poll(self.poll_id).await?;
            let session = match self.actor {
                Actor::Presenter(session, _) | Actor::Participant(session, _) => session,
            };
            if poll.session_id != session {
                return Err(Stop::Refused(Refusal::Forbidden(
                    "this poll belongs to another session".into(),
                )));
            }
            let tally = ctx.tx.tally(&poll, ALL_TEXTS).await?;
            Ok((Vec::new(), PollResults { poll, tally }))
        };
        settle(results.await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// `GET /v1/polls/{id}/votes`: who voted what, for the presenter of a poll
/// that is not anonymous.
pub struct GetVoters {
    pub poll_id: PollId,
    pub session_id: SessionId,
    pub presenter: PresenterId,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for GetVoters {
    type Outcome = Outcome<PollVoters>;
    type Decided = Outcome<PollVoters>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let voters = async {
            let poll = ctx.poll(self.poll_id).await?;
            let session = ctx.session(&SessionKey::Id(poll.session_id)).await?;
            if session.id != self.session_id {
                return Err(Stop::Refused(Refusal::Forbidden(
                    "this poll belongs to another session".into(),
                )));
            }
            require_presenter(&session, self.presenter)?;
            if poll.is_anonymous {
                return Err(Stop::Refused(Refusal::Forbidden(
                    "the poll is anonymous: its voters are shown to no one".into(),
                )));
            }
            let votes = ctx.tx.votes_of(self.poll_id).await?;
            Ok((Vec::new(), PollVoters { poll, votes }))
        };
        settle(voters.await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}
