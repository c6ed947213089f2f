//! Queries, each run on a consistent read-only snapshot (never in the
//! writer's queue): a session's snapshot, where a session stands, a poll's
//! results, a poll's voters.

use async_trait::async_trait;

use super::context::{require_presenter, settle, Actor, Ctx, SessionKey, Stamp, Stop};
use super::outcome::{
    Outcome, PollResults, PollView, PollVoters, Refusal, SessionExport, SessionState, Snapshot,
};
use super::results::BROADCAST_TEXTS;
use crate::domain::event::{NewEvent, StoredEvent};
use crate::domain::polling::ids::{PollId, PresenterId, SessionId};
use crate::domain::polling::model::{Session, Viewer};
use crate::store::Tx;
use crate::store::{Command, StoreError};

/// Open-text answers a results request returns (a broadcast carries
/// [`BROADCAST_TEXTS`]).
const ALL_TEXTS: usize = 100_000;

/// `GET /v1/sessions/{idOrCode}`: where to resync from, as `viewer` may
/// see it (no token: the audience's view).
pub struct GetSnapshot {
    pub key: SessionKey,
    pub viewer: Option<Actor>,
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
            let mine = match self.viewer {
                Some(Actor::Participant(sid, participant)) if sid == session.id => {
                    let ids: Vec<PollId> = polls.iter().map(|p| p.id).collect();
                    ctx.tx.votes_by(participant, &ids).await?
                }
                _ => Vec::new(),
            };
            let mut with_results = Vec::with_capacity(polls.len());
            for poll in polls {
                let my_vote = mine.iter().find(|v| v.poll_id == poll.id).cloned();
                let viewer = viewer_of(self.viewer, &session, my_vote.is_some());
                let tally = match poll.results_visible_to(viewer) {
                    true => Some(ctx.tx.tally(&poll, BROADCAST_TEXTS).await?),
                    false => None,
                };
                with_results.push(PollView { poll, tally, my_vote });
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
            let voted = match self.actor {
                Actor::Participant(_, participant) => {
                    !ctx.tx.votes_by(participant, &[poll.id]).await?.is_empty()
                }
                Actor::Presenter(..) => false,
            };
            let session = ctx.session(&SessionKey::Id(poll.session_id)).await?;
            if !poll.results_visible_to(viewer_of(Some(self.actor), &session, voted)) {
                return Err(Stop::Refused(Refusal::Withheld));
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

/// `GET /v1/sessions/{id}/export.csv|json`: every poll of a session with
/// all its results, for its presenter.
pub struct GetExport {
    pub session_id: SessionId,
    pub presenter: PresenterId,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for GetExport {
    type Outcome = Outcome<SessionExport>;
    type Decided = Outcome<SessionExport>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let export = async {
            let session = ctx.session(&SessionKey::Id(self.session_id)).await?;
            require_presenter(&session, self.presenter)?;
            let mut polls = Vec::new();
            for poll in ctx.tx.polls_of(session.id).await? {
                let tally = ctx.tx.tally(&poll, ALL_TEXTS).await?;
                polls.push(PollResults { poll, tally });
            }
            let participant_count = ctx.tx.present_count(session.id).await?;
            let export = SessionExport {
                session,
                polls,
                participant_count,
                exported_at: ctx.at(),
            };
            Ok::<_, Stop>((Vec::new(), export))
        };
        settle(export.await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// Who `actor` is to `session`'s results: its presenter, one of its
/// participants (and whether it voted on the poll at hand), or anyone.
fn viewer_of(actor: Option<Actor>, session: &Session, voted: bool) -> Viewer {
    match actor {
        Some(Actor::Presenter(sid, presenter)) if sid == session.id && presenter == session.presenter_id => {
            Viewer::Presenter
        }
        Some(Actor::Participant(sid, _)) if sid == session.id => Viewer::Participant { voted },
        _ => Viewer::Audience,
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
