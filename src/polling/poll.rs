//! Poll commands: open a poll (closing the one open before it) and close it.

use async_trait::async_trait;

use super::context::{require_presenter, settle, Ctx, SessionKey, Stamp, Stop};
use super::outcome::Outcome;
use super::projection::apply;
use crate::domain::event::{NewEvent, StoredEvent};
use crate::domain::polling::ids::{PollId, PresenterId};
use crate::domain::polling::model::Poll;
use crate::domain::polling::{decide, Command as Rule};
use crate::store::Tx;
use crate::store::{Command, StoreError};

/// What becomes of a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMove {
    Activate,
    Close,
}

/// `POST /v1/polls/{id}/activate` and `/close`.
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
        settle(move_poll(&mut ctx, self.poll_id, self.presenter, self.to).await)
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

async fn move_poll(
    ctx: &mut Ctx<'_>,
    poll_id: PollId,
    presenter: PresenterId,
    to: PollMove,
) -> Result<(Vec<NewEvent>, Poll), Stop> {
    let poll = ctx.poll(poll_id).await?;
    // The session comes from the poll, so the rules never see a poll of
    // another session.
    let session = ctx.session(&SessionKey::Id(poll.session_id)).await?;
    require_presenter(&session, presenter)?;
    let state = ctx.state_of(session, vec![poll]).await?;
    let at = ctx.at();
    let rule = match to {
        PollMove::Activate => Rule::ActivatePoll { poll_id, at },
        PollMove::Close => Rule::ClosePoll { poll_id, at },
    };
    let events = decide(&state, rule).map_err(|rejection| Stop::Refused(rejection.into()))?;
    apply(ctx, &state, &events).await?;
    let poll = ctx.poll(poll_id).await?;
    Ok((ctx.events(&events), poll))
}
