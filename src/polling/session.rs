//! Session commands: create a session, start it, end it, add a poll to it.
//! Each runs in the writer's transaction: load the session, check the
//! presenter, `decide`, write through the projection.

use async_trait::async_trait;

use super::context::{require_presenter, settle, Ctx, SessionKey, Stamp, Stop};
use super::outcome::{Outcome, SessionView};
use super::projection::{apply, new_slug};
use super::results::{final_results, rendered};
use crate::domain::event::{NewEvent, StoredEvent};
use crate::domain::polling::ids::{PollId, PresenterId, SessionId};
use crate::domain::polling::input::PollDraft;
use crate::domain::polling::model::{Poll, Session};
use crate::domain::polling::{decide, Command as Rule, DomainEvent, State};
use crate::store::Tx;
use crate::store::{Command, StoreError};

/// `POST /v1/sessions`: a new session in draft. Its join code is made
/// unique here, inside the transaction.
pub struct CreateSession {
    pub session: Session,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for CreateSession {
    type Outcome = Outcome<Session>;
    type Decided = Outcome<Session>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let ctx = Ctx::new(tx, &self.stamp);
        let mut session = self.session.clone();
        while ctx.tx.session_by_slug(&session.slug).await?.is_some() {
            session.slug = new_slug();
        }
        ctx.tx.insert_session(&session).await?;
        let events = ctx.events(&[DomainEvent::SessionCreated(session.clone())]);
        Ok((events, Ok(session)))
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// Where a session goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Start,
    End,
}

/// `POST /v1/sessions/{id}/start` and `/end`.
pub struct MoveSession {
    pub session_id: SessionId,
    pub presenter: PresenterId,
    pub to: Transition,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for MoveSession {
    type Outcome = Outcome<SessionView>;
    type Decided = Outcome<SessionView>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        settle(move_session(&mut ctx, self.session_id, self.presenter, self.to).await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

async fn move_session(
    ctx: &mut Ctx<'_>,
    session_id: SessionId,
    presenter: PresenterId,
    to: Transition,
) -> Result<(Vec<NewEvent>, SessionView), Stop> {
    let at = ctx.at();
    let rule = match to {
        Transition::Start => Rule::StartSession { at },
        Transition::End => Rule::EndSession { at },
    };
    let (state, events) = decide_on_session(ctx, session_id, presenter, rule).await?;
    // The open poll's last results go out before the session ends, whose
    // streams end with `session:ended`: a coalesced broadcast still waiting
    // for its interval would reach nobody.
    let last_results = match state.open_poll().filter(|_| to == Transition::End) {
        Some(poll) => final_results(ctx, poll).await?,
        None => Vec::new(),
    };
    apply(ctx, &state, &events).await?;
    let mut appended = last_results;
    appended.extend(rendered(ctx, &events).await?);
    let session = ctx.session(&SessionKey::Id(session_id)).await?;
    let view = SessionView {
        session,
        participant_count: state.participant_count,
    };
    Ok((appended, view))
}

/// `POST /v1/sessions/{id}/polls`: a new poll, closed until activated.
pub struct CreatePoll {
    pub session_id: SessionId,
    pub presenter: PresenterId,
    pub poll_id: PollId,
    pub draft: PollDraft,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for CreatePoll {
    type Outcome = Outcome<Poll>;
    type Decided = Outcome<Poll>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let rule = Rule::CreatePoll {
            poll_id: self.poll_id,
            draft: self.draft.clone(),
            at: ctx.at(),
        };
        let created = async {
            let (state, events) = decide_on_session(&mut ctx, self.session_id, self.presenter, rule).await?;
            apply(&mut ctx, &state, &events).await?;
            let poll = ctx.poll(self.poll_id).await?;
            Ok((ctx.events(&events), poll))
        };
        settle(created.await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// Loads the session with its present count, checks the presenter and
/// decides `rule` on it.
async fn decide_on_session(
    ctx: &mut Ctx<'_>,
    session_id: SessionId,
    presenter: PresenterId,
    rule: Rule,
) -> Result<(State, Vec<DomainEvent>), Stop> {
    let session = ctx.session(&SessionKey::Id(session_id)).await?;
    require_presenter(&session, presenter)?;
    let state = ctx.state_of(session, Vec::new()).await?;
    let events = decide(&state, rule).map_err(|rejection| Stop::Refused(rejection.into()))?;
    Ok((state, events))
}
