//! The projection: what the polling tables become once events happened.
//! Every command that changes a session, a poll or a participant writes
//! through [`apply`]; votes are the one exception (their insert decides
//! whether a vote is a duplicate, see `vote`).

use chrono::{DateTime, Utc};

use super::context::Ctx;
use crate::domain::polling::ids::{PresenterId, SessionId};
use crate::domain::polling::model::{Poll, PollStatus, Session, SessionStatus};
use crate::domain::polling::{DomainEvent, State};
use crate::store::StoreError;

/// Writes what the events say happened, on the state they were decided on.
pub async fn apply(ctx: &mut Ctx<'_>, state: &State, events: &[DomainEvent]) -> Result<(), StoreError> {
    for event in events {
        match event {
            DomainEvent::SessionCreated(session) => ctx.tx.insert_session(session).await?,
            DomainEvent::SessionStarted { at, .. } => {
                let session = Session {
                    status: SessionStatus::Active,
                    started_at: Some(*at),
                    ..state.session.clone()
                };
                ctx.tx.update_session(&session).await?;
            }
            DomainEvent::SessionEnded { at, .. } => {
                let session = Session {
                    status: SessionStatus::Ended,
                    ended_at: Some(*at),
                    ..state.session.clone()
                };
                ctx.tx.update_session(&session).await?;
            }
            DomainEvent::PollCreated(poll) => ctx.tx.insert_poll(poll).await?,
            DomainEvent::PollActivated {
                poll_id,
                at,
                closes_at,
                ..
            } => {
                if let Some(poll) = state.polls.iter().find(|p| p.id == *poll_id) {
                    let open = Poll {
                        status: PollStatus::Open,
                        activated_at: Some(*at),
                        closes_at: *closes_at,
                        ..poll.clone()
                    };
                    ctx.tx.update_poll(&open).await?;
                }
            }
            DomainEvent::PollClosed { poll_id, at, .. } => {
                // Read again: a reveal in the same command writes after it.
                if let Some(poll) = ctx.tx.poll(*poll_id).await? {
                    let closed = Poll {
                        status: PollStatus::Closed,
                        closed_at: Some(*at),
                        ..poll
                    };
                    ctx.tx.update_poll(&closed).await?;
                }
            }
            DomainEvent::PollResultsRevealed { poll_id, at, .. } => {
                if let Some(poll) = ctx.tx.poll(*poll_id).await? {
                    let revealed = Poll {
                        results_revealed_at: Some(*at),
                        ..poll
                    };
                    ctx.tx.update_poll(&revealed).await?;
                }
            }
            DomainEvent::AnswerHidden {
                poll_id, answer, at, ..
            } => ctx.tx.hide_answer(*poll_id, answer, *at).await?,
            DomainEvent::ParticipantJoined { participant, .. } => {
                if ctx.tx.participant(participant.id).await?.is_some() {
                    ctx.tx.set_present(participant.id, true).await?;
                } else {
                    ctx.tx.insert_participant(participant).await?;
                }
            }
            DomainEvent::ParticipantDisconnected { participant_id, .. } => {
                ctx.tx.set_present(*participant_id, false).await?
            }
            // Recorded by the vote batch itself, which needs the insert's
            // verdict.
            DomainEvent::VoteAccepted { .. } => {}
        }
    }
    Ok(())
}

/// A new session in draft, with a fresh join code.
pub fn new_session(title: String, at: DateTime<Utc>) -> Session {
    Session {
        id: SessionId::new(),
        title,
        slug: new_slug(),
        presenter_id: PresenterId::new(),
        status: SessionStatus::Draft,
        created_at: at,
        started_at: None,
        ended_at: None,
    }
}

/// A short join code: 6 letters and digits, without look-alikes (0/o, 1/l/i).
pub fn new_slug() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..6)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect()
}
