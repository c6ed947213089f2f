//! Poll commands: open a poll (closing the one open before it, and timed
//! or not), close it, reveal its withheld results, hide an open-text
//! answer, and the server's own
//! close of a timed poll whose time ran out.

use async_trait::async_trait;

use super::context::{require_presenter, settle, Ctx, SessionKey, Stamp, Stop};
use super::outcome::Outcome;
use super::projection::apply;
use super::results::rendered;
use crate::domain::event::{NewEvent, StoredEvent};
use crate::domain::polling::ids::{PollId, PresenterId};
use crate::domain::polling::input::PollDuration;
use crate::domain::polling::model::{CloseReason, Poll};
use crate::domain::polling::{decide, Command as Rule};
use crate::store::Tx;
use crate::store::{Command, StoreError};

/// What becomes of a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollMove {
    /// Open it, for `duration` if it is timed.
    Activate {
        duration: Option<PollDuration>,
    },
    Close,
    /// Make its withheld results public.
    Reveal,
    /// Hide an open-text answer (already trimmed and checked).
    HideAnswer {
        answer: String,
    },
}

/// `POST /v1/polls/{id}/activate`, `/close`, `/reveal` and `/hidden-answers`.
pub struct MovePoll {
    pub poll_id: PollId,
    pub presenter: PresenterId,
    pub to: PollMove,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for MovePoll {
    type Outcome = Outcome<Poll>;
    type Decided = Outcome<Poll>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let at = ctx.at();
        let rule = match self.to.clone() {
            PollMove::Activate { duration } => Rule::ActivatePoll {
                poll_id: self.poll_id,
                at,
                duration,
            },
            PollMove::Close => Rule::ClosePoll {
                poll_id: self.poll_id,
                at,
                reason: CloseReason::Presenter,
            },
            PollMove::Reveal => Rule::RevealResults {
                poll_id: self.poll_id,
                at,
            },
            PollMove::HideAnswer { answer } => Rule::HideAnswer {
                poll_id: self.poll_id,
                already_hidden: ctx.tx.answer_hidden(self.poll_id, &answer).await?,
                answer,
                at,
            },
        };
        settle(move_poll(&mut ctx, self.poll_id, Some(self.presenter), rule).await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// The server closes a timed poll whose `closesAt` has passed. Refused
/// (and harmless) when the poll is closed already or not yet due, so any
/// number of nodes may try: the first to commit closes it, once.
pub struct CloseDuePoll {
    pub poll_id: PollId,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for CloseDuePoll {
    type Outcome = Outcome<Poll>;
    type Decided = Outcome<Poll>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let rule = Rule::ClosePoll {
            poll_id: self.poll_id,
            at: ctx.at(),
            reason: CloseReason::Timer,
        };
        settle(move_poll(&mut ctx, self.poll_id, None, rule).await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// Decides `rule` on the poll's session (as its presenter, unless the
/// server itself acts) and writes what it says.
async fn move_poll(
    ctx: &mut Ctx<'_>,
    poll_id: PollId,
    presenter: Option<PresenterId>,
    rule: Rule,
) -> Result<(Vec<NewEvent>, Poll), Stop> {
    let poll = ctx.poll(poll_id).await?;
    // The session comes from the poll, so the rules never see a poll of
    // another session.
    let session = ctx.session(&SessionKey::Id(poll.session_id)).await?;
    if let Some(presenter) = presenter {
        require_presenter(&session, presenter)?;
    }
    let state = ctx.state_of(session, vec![poll]).await?;
    let events = decide(&state, rule).map_err(|rejection| Stop::Refused(rejection.into()))?;
    apply(ctx, &state, &events).await?;
    let appended = rendered(ctx, &events).await?;
    let poll = ctx.poll(poll_id).await?;
    Ok((appended, poll))
}
