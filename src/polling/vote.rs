//! Voting. Votes ride batches (see `batches`): a batch is decided and
//! recorded with a handful of statements whatever its size. A vote with an
//! Idempotency-Key runs alone ([`CastVote`]), through the same code as a
//! batch of one.
//!
//! Every vote, accepted or not, is one event on its voter's own topic
//! (`vote:accepted`, `vote:rejected` or `error:general`), so a batch knows
//! its event count before it runs and takes its ids with the log lock.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::context::{Ctx, Stamp};
use super::outcome::{Accepted, Outcome, Refusal};
use super::results::BROADCAST_TEXTS;
use crate::domain::event::{NewEvent, StoredEvent, TraceId};
use crate::domain::polling::events::{error_general, vote_rejected};
use crate::domain::polling::ids::{ParticipantId, PollId, SessionId, VoteId};
use crate::domain::polling::model::{Participant, Poll, Session, Viewer, Vote};
use crate::domain::polling::{decide, Command as Rule, DomainEvent, RejectReason, Rejection, State};
use crate::store::tx::{BallotReads, Voters};
use crate::store::Tx;
use crate::store::{Command, StoreError};

/// A vote as the participant cast it, with who it is from (its token).
#[derive(Debug, Clone)]
pub struct VoteRequest {
    pub vote_id: VoteId,
    pub session_id: SessionId,
    pub participant_id: ParticipantId,
    pub poll_id: PollId,
    pub vote_data: Value,
    pub client_submitted_at: Option<DateTime<Utc>>,
}

/// One vote in a batch, with the trace id of its request.
#[derive(Debug, Clone)]
pub struct Ballot {
    pub request: VoteRequest,
    pub trace_id: TraceId,
}

/// `POST /v1/polls/{id}/votes` with an Idempotency-Key: one vote in a
/// transaction of its own, so its key is kept with it.
pub struct CastVote {
    pub ballot: Ballot,
    pub stamp: Stamp,
}

#[async_trait]
impl Command for CastVote {
    type Outcome = Outcome<Accepted>;
    type Decided = Outcome<Accepted>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let mut ctx = Ctx::new(tx, &self.stamp);
        let (events, mut outcomes) = vote_batch(&mut ctx, std::slice::from_ref(&self.ballot)).await?;
        let outcome = outcomes
            .pop()
            .unwrap_or(Err(Refusal::Internal("a vote without an outcome")));
        Ok((events, outcome))
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }

    fn known_event_count(&self) -> Option<usize> {
        Some(1)
    }
}

enum Verdict {
    Accept(Vote),
    Refuse(RejectReason, String),
    Fail(Refusal),
}

/// Decides and records many votes with a handful of statements, whatever
/// their number: the polls, sessions, participants and earlier votes they
/// need are read at once, the accepted votes are inserted by one statement
/// (whose unique constraint has the last word on duplicates), and each
/// poll's results are read with it. Events and outcomes come out in ballot
/// order.
pub async fn vote_batch(
    ctx: &mut Ctx<'_>,
    ballots: &[Ballot],
) -> Result<(Vec<NewEvent>, Vec<Outcome<Accepted>>), StoreError> {
    let mut poll_ids: Vec<PollId> = ballots.iter().map(|b| b.request.poll_id).collect();
    poll_ids.sort();
    poll_ids.dedup();
    let mut pairs: Vec<(ParticipantId, PollId)> = ballots
        .iter()
        .map(|b| (b.request.participant_id, b.request.poll_id))
        .collect();
    pairs.sort();
    pairs.dedup();
    let BallotReads { mut polls, voters } = ctx.tx.ballot_reads(&poll_ids, &pairs).await?;
    let mut states: HashMap<PollId, Option<State>> = poll_ids
        .iter()
        .map(|id| {
            (
                *id,
                polls.remove(id).map(|(session, poll)| vote_state(session, poll)),
            )
        })
        .collect();
    let Voters {
        participants,
        mut voted,
    } = voters;
    let at = ctx.at();
    let mut verdicts: Vec<Verdict> = ballots
        .iter()
        .map(|b| judge(&b.request, at, &mut states, &participants, &mut voted))
        .collect();

    let accepted: Vec<Vote> = verdicts
        .iter()
        .filter_map(|v| match v {
            Verdict::Accept(vote) => Some(vote.clone()),
            _ => None,
        })
        .collect();
    // The voter's confirmation carries the results only if a participant
    // who voted may see them (`always`, `after_vote`, or revealed): only
    // those polls' tallies are read.
    let voted_polls: Vec<&Poll> = poll_ids
        .iter()
        .filter(|id| accepted.iter().any(|vote| vote.poll_id == **id))
        .filter_map(|id| {
            states
                .get(id)
                .and_then(Option::as_ref)
                .map(|state| &state.polls[0])
        })
        .filter(|poll| poll.results_visible_to(Viewer::Participant { voted: true }))
        .collect();
    let (recorded, tallies) = ctx
        .tx
        .record_votes_and_tally(&accepted, &voted_polls, BROADCAST_TEXTS)
        .await?;
    let mut recorded = recorded.into_iter();
    for verdict in verdicts.iter_mut() {
        if matches!(verdict, Verdict::Accept(_)) && recorded.next() == Some(false) {
            *verdict = Verdict::Refuse(RejectReason::DuplicateVote, DUPLICATE.into());
        }
    }
    let results: HashMap<PollId, Value> = voted_polls
        .iter()
        .zip(&tallies)
        .map(|(poll, tally)| (poll.id, tally.results_json(poll)))
        .collect();
    let mut events = Vec::with_capacity(ballots.len());
    let mut outcomes = Vec::with_capacity(ballots.len());
    for (ballot, verdict) in ballots.iter().zip(verdicts) {
        let (event, outcome) = ballot_outcome(at, ballot, verdict, &states, &results);
        events.push(event);
        outcomes.push(outcome);
    }
    Ok((events, outcomes))
}

const DUPLICATE: &str = "participant already voted on this poll";

/// The state a vote is decided on: its session and poll. A vote reads
/// nothing else (not the session's open poll nor its poll count), so a
/// batch does not spend round trips loading them.
fn vote_state(session: Session, poll: Poll) -> State {
    State {
        poll_count: 0,
        participant_count: 0,
        session,
        polls: vec![poll],
        participant: None,
        has_voted: false,
    }
}

fn judge(
    request: &VoteRequest,
    at: DateTime<Utc>,
    states: &mut HashMap<PollId, Option<State>>,
    participants: &HashMap<ParticipantId, Participant>,
    voted: &mut HashSet<(PollId, ParticipantId)>,
) -> Verdict {
    let Some(Some(state)) = states.get_mut(&request.poll_id) else {
        return Verdict::Fail(Refusal::NotFound("no such poll"));
    };
    if state.session.id != request.session_id {
        return Verdict::Fail(Refusal::Forbidden("this poll belongs to another session".into()));
    }
    let Some(participant) = participants.get(&request.participant_id) else {
        return Verdict::Fail(Refusal::Forbidden("unknown participant".into()));
    };
    // The token names both; only a participant of the poll's session votes.
    if participant.session_id != request.session_id {
        return Verdict::Fail(Refusal::Forbidden(
            "this participant is not in the poll's session".into(),
        ));
    }
    let key = (request.poll_id, request.participant_id);
    // The poll's state is shared by the batch's ballots; only the voter's
    // part changes from one ballot to the next (no copy of the poll each).
    state.participant = Some(participant.clone());
    state.has_voted = voted.contains(&key);
    let rule = Rule::SubmitVote {
        vote_id: request.vote_id,
        participant_id: request.participant_id,
        poll_id: request.poll_id,
        vote_data: request.vote_data.clone(),
        at,
        client_submitted_at: request.client_submitted_at,
    };
    match decide(state, rule) {
        Ok(events) => match events.into_iter().next() {
            Some(DomainEvent::VoteAccepted { vote, .. }) => {
                voted.insert(key);
                Verdict::Accept(vote)
            }
            _ => Verdict::Fail(Refusal::Internal("a vote decided without vote:accepted")),
        },
        Err(Rejection::Vote { reason, message }) => Verdict::Refuse(reason, message),
        Err(other) => Verdict::Fail(other.into()),
    }
}

/// A ballot's event (on the voter's own topic) and outcome.
fn ballot_outcome(
    at: DateTime<Utc>,
    ballot: &Ballot,
    verdict: Verdict,
    states: &HashMap<PollId, Option<State>>,
    results: &HashMap<PollId, Value>,
) -> (NewEvent, Outcome<Accepted>) {
    let request = &ballot.request;
    let trace_id = &ballot.trace_id;
    match verdict {
        Verdict::Accept(vote) => {
            let results = results.get(&vote.poll_id);
            let accepted = DomainEvent::VoteAccepted {
                vote,
                session_id: request.session_id,
            };
            // The voter's answer is the event's payload: built and
            // serialized once, on the writer's path.
            let event = accepted.to_new_event(trace_id, results);
            let confirmation = event.payload.get().to_owned();
            (event, Ok(Accepted { confirmation }))
        }
        Verdict::Refuse(reason, message) => {
            let session_id = match states.get(&request.poll_id) {
                Some(Some(state)) => state.session.id,
                _ => request.session_id,
            };
            let event = vote_rejected(
                request.poll_id,
                session_id,
                request.participant_id,
                reason,
                &message,
                at,
                trace_id,
            );
            (event, Err(Refusal::Vote { reason, message }))
        }
        Verdict::Fail(refusal) => {
            // The voter's stream hears about it too, as error:general.
            let context = json!({ "eventName": "vote:submitted", "entityId": request.poll_id.to_string() });
            let event = error_general(
                request.participant_id,
                request.session_id,
                refusal.code(),
                refusal.message(),
                context,
                at,
                trace_id,
            );
            (event, Err(refusal))
        }
    }
}
