//! Joining a session. Joins ride batches (see `batches`): a room of people
//! scanning the join code at once costs a few statements, not a
//! transaction each. A join with an Idempotency-Key runs alone ([`Join`]),
//! through the same code as a batch of one.
//!
//! The participant's token names its session, which a join code only
//! reveals inside the transaction; it is signed at the edge, after commit,
//! from the [`Joined`] outcome: no signing key enters a transaction.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use async_trait::async_trait;

use super::context::{Ctx, SessionKey, Stamp};
use super::outcome::{Joined, Outcome, Refusal};
use crate::domain::event::{NewEvent, StoredEvent, TraceId};
use crate::domain::polling::ids::{ParticipantId, SessionId};
use crate::domain::polling::model::{Participant, Session};
use crate::domain::polling::{decide, Command as Rule, DomainEvent, State};
use crate::store::Tx;
use crate::store::{Command, StoreError};

/// One participant joining: the session it names, its new id, its display
/// name and its request's trace id.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub key: SessionKey,
    pub participant_id: ParticipantId,
    pub display_name: Option<String>,
    pub trace_id: TraceId,
}

/// `POST /v1/sessions/{idOrCode}/participants` with an Idempotency-Key:
/// one join in a transaction of its own, so its key is kept with it.
pub struct Join {
    pub joiner: Joiner,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for Join {
    type Outcome = Outcome<Joined>;
    type Decided = Outcome<Joined>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let (events, mut outcomes) = join_batch(&mut ctx, std::slice::from_ref(&self.joiner)).await?;
        let outcome = outcomes
            .pop()
            .unwrap_or(Err(Refusal::Internal("a join without an outcome")));
        Ok((events, outcome))
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// Decides and records many joins with a few statements, whatever their
/// number: each session named is read once with its present count, the
/// joins are decided in order on that state (so each outcome and event
/// carries the count after its own join), and the new participants are
/// inserted by one statement. Outcomes come out in joiner order; a join
/// refused (no such session, or it ended) has no event.
pub async fn join_batch(
    ctx: &mut Ctx<'_>,
    joiners: &[Joiner],
) -> Result<(Vec<NewEvent>, Vec<Outcome<Joined>>), StoreError> {
    let JoinStates { sessions, mut states } = read_join_states(ctx, joiners).await?;
    let mut joined = Vec::with_capacity(joiners.len());
    let mut events = Vec::with_capacity(joiners.len());
    let mut outcomes = Vec::with_capacity(joiners.len());
    for joiner in joiners {
        let state = sessions
            .get(&joiner.key)
            .copied()
            .flatten()
            .and_then(|id| states.get_mut(&id));
        match admit(joiner, ctx.at(), state) {
            Ok((event, participant, outcome)) => {
                events.push(event);
                joined.push(participant);
                outcomes.push(Ok(outcome));
            }
            Err(refusal) => outcomes.push(Err(refusal)),
        }
    }
    ctx.tx.insert_participants(&joined).await?;
    Ok((events, outcomes))
}

/// The sessions a join batch names, each read once.
struct JoinStates {
    /// What each key (an id, or a join code) names, if anything.
    sessions: HashMap<SessionKey, Option<SessionId>>,
    /// Each named session's state, shared by the joins that name it by
    /// id or by code.
    states: HashMap<SessionId, State>,
}

async fn read_join_states(ctx: &mut Ctx<'_>, joiners: &[Joiner]) -> Result<JoinStates, StoreError> {
    let mut sessions = HashMap::new();
    let mut states = HashMap::new();
    for joiner in joiners {
        if sessions.contains_key(&joiner.key) {
            continue;
        }
        let session = match &joiner.key {
            SessionKey::Id(id) => ctx.tx.session(*id).await?,
            SessionKey::Slug(slug) => ctx.tx.session_by_slug(slug).await?,
        };
        sessions.insert(joiner.key.clone(), session.as_ref().map(|s| s.id));
        if let Some(session) = session {
            if let Entry::Vacant(slot) = states.entry(session.id) {
                let present = ctx.tx.present_count(session.id).await?;
                slot.insert(join_state(session, present));
            }
        }
    }
    Ok(JoinStates { sessions, states })
}

/// The state a join is decided on: its session and how many are present.
fn join_state(session: Session, participant_count: i64) -> State {
    State {
        poll_count: 0,
        participant_count,
        session,
        polls: Vec::new(),
        participant: None,
        has_voted: false,
    }
}

/// One join decided on its session's state, which then counts it: the
/// `participant:joined` event, the participant to insert and the outcome.
fn admit(
    joiner: &Joiner,
    at: chrono::DateTime<chrono::Utc>,
    state: Option<&mut State>,
) -> Result<(NewEvent, Participant, Joined), Refusal> {
    let state = state.ok_or(Refusal::NotFound("no such session"))?;
    let rule = Rule::Join {
        participant_id: joiner.participant_id,
        display_name: joiner.display_name.clone(),
        at,
    };
    let events = decide(state, rule)?;
    let Some(
        joined @ DomainEvent::ParticipantJoined {
            participant,
            participant_count,
            ..
        },
    ) = events.first()
    else {
        return Err(Refusal::Internal("a join decided without participant:joined"));
    };
    state.participant_count = *participant_count;
    let outcome = Joined {
        participant: participant.clone(),
        session_id: state.session.id,
        participant_count: *participant_count,
    };
    Ok((
        joined.to_new_event(&joiner.trace_id, None),
        participant.clone(),
        outcome,
    ))
}
