//! Given/when/then tests of the polling rules (CONTRACT §2): the session and
//! poll state machines, presence, every vote rejection reason, poll
//! definitions, and the events' wire form. No IO, fixed times.
//!
//! Split by concern into the modules below; this file holds the fixtures
//! they share.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::decide::{decide, Command, RejectReason, Rejection, State};
use super::events::{results_broadcast, vote_confirmation, vote_rejected, DomainEvent};
use super::ids::{OptionId, ParticipantId, PollId, PresenterId, SessionId, VoteId};
use super::input::{display_name, parse_choice, required_text, FieldError, PollDraft, PollInput};
use super::model::{
    Choice, Participant, Poll, PollKind, PollOption, PollStatus, Session, SessionStatus, Tally, Vote,
};
use crate::domain::event::{NewEvent, TraceId};

mod input;
mod poll;
mod presence;
mod results;
mod session;
mod vote;
mod vote_content;
mod wire;

// ---------------------------------------------------------------- helpers

/// A fixed instant, `secs` after 2027-01-15T08:00:00Z.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

/// The time every command in these tests happens at.
fn now() -> DateTime<Utc> {
    t(60)
}

const NOW_TEXT: &str = "2027-01-15T08:01:00.000Z";

fn session(status: SessionStatus) -> Session {
    Session {
        id: SessionId::new(),
        title: "All hands".into(),
        slug: "ABC123".into(),
        presenter_id: PresenterId::new(),
        status,
        created_at: t(0),
        started_at: (status != SessionStatus::Draft).then(|| t(1)),
        ended_at: (status == SessionStatus::Ended).then(|| t(2)),
    }
}

fn state_of(status: SessionStatus) -> State {
    State {
        session: session(status),
        polls: Vec::new(),
        poll_count: 0,
        participant_count: 0,
        participant: None,
        has_voted: false,
    }
}

fn draft_session() -> State {
    state_of(SessionStatus::Draft)
}

fn active_session() -> State {
    state_of(SessionStatus::Active)
}

fn ended_session() -> State {
    state_of(SessionStatus::Ended)
}

fn options(n: usize) -> Vec<PollOption> {
    (0..n)
        .map(|i| PollOption {
            id: OptionId::new(),
            text: format!("Option {}", i + 1),
            sequence_order: i as i32 + 1,
        })
        .collect()
}

fn poll(state: &State, kind: PollKind, status: PollStatus) -> Poll {
    Poll {
        id: PollId::new(),
        session_id: state.session.id,
        question: "How was it?".into(),
        kind,
        is_anonymous: true,
        sequence_order: state.poll_count as i32 + 1,
        status,
        created_at: t(10),
        activated_at: (status != PollStatus::Draft).then(|| t(11)),
        closed_at: (status == PollStatus::Closed).then(|| t(12)),
        vote_count: 0,
    }
}

fn choice_poll(state: &State, status: PollStatus, allow_multiple: bool) -> Poll {
    let kind = PollKind::MultipleChoice {
        options: options(3),
        allow_multiple,
    };
    poll(state, kind, status)
}

fn rating_poll(state: &State, status: PollStatus) -> Poll {
    poll(state, PollKind::RatingScale { min: 1, max: 5 }, status)
}

fn text_poll(state: &State, status: PollStatus) -> Poll {
    poll(state, PollKind::OpenText, status)
}

/// The state with `poll` loaded (and counted).
fn with_poll(mut state: State, poll: &Poll) -> State {
    state.polls.push(poll.clone());
    state.poll_count += 1;
    state
}

/// The state with one participant, the one the command is about.
fn with_participant(mut state: State, present: bool) -> State {
    state.participant = Some(Participant {
        id: ParticipantId::new(),
        session_id: state.session.id,
        display_name: Some("Ada".into()),
        joined_at: t(5),
        present,
    });
    state.participant_count = if present { 3 } else { 2 };
    state
}

fn participant_id(state: &State) -> ParticipantId {
    state.participant.as_ref().expect("a participant in the state").id
}

/// An active session with one open poll and one present participant.
fn voting_on(make: impl Fn(&State, PollStatus) -> Poll) -> (State, Poll) {
    let state = with_participant(active_session(), true);
    let poll = make(&state, PollStatus::Open);
    (with_poll(state, &poll), poll)
}

fn option_id(poll: &Poll, index: usize) -> String {
    poll.option_ids()[index].to_string()
}

fn submit(state: &State, poll: &Poll, vote_data: Value) -> Result<Vec<DomainEvent>, Rejection> {
    decide(
        state,
        Command::SubmitVote {
            vote_id: VoteId::new(),
            participant_id: participant_id(state),
            poll_id: poll.id,
            vote_data,
            at: now(),
            client_submitted_at: Some(t(59)),
        },
    )
}

fn reason_of(result: Result<Vec<DomainEvent>, Rejection>) -> RejectReason {
    match result {
        Err(Rejection::Vote { reason, .. }) => reason,
        other => panic!("expected a vote rejection, got {other:?}"),
    }
}

fn assert_conflict(result: Result<Vec<DomainEvent>, Rejection>) {
    assert!(
        matches!(result, Err(Rejection::Conflict(_))),
        "expected a conflict, got {result:?}"
    );
}

/// The accepted choice of a vote that must have been accepted.
fn accepted_choice(result: Result<Vec<DomainEvent>, Rejection>) -> Choice {
    match result.expect("the vote is accepted").as_slice() {
        [DomainEvent::VoteAccepted { vote, .. }] => vote.choice.clone(),
        other => panic!("expected one VoteAccepted, got {other:?}"),
    }
}

fn trace() -> TraceId {
    TraceId::from_stored("4bf92f3577b34da6a3ce929d0e0e4736".into())
}

fn payload(event: &NewEvent) -> Value {
    serde_json::from_str(event.payload.get()).unwrap()
}

fn wire(event: &DomainEvent) -> (String, String, Value) {
    let stored = event.to_new_event(&trace(), None);
    (
        stored.topic.as_str().to_string(),
        stored.event_type.as_str().to_string(),
        payload(&stored),
    )
}

fn assert_has_fields(payload: &Value, fields: &[&str]) {
    for field in fields {
        assert!(payload.get(*field).is_some(), "missing {field} in {payload}");
    }
}

fn parse_poll(input: Value) -> Result<PollDraft, FieldError> {
    PollDraft::parse(serde_json::from_value::<PollInput>(input).expect("a well-formed PollInput"))
}

fn field_of(input: Value) -> &'static str {
    parse_poll(input).expect_err("the definition is refused").field
}

fn choice_input(n: usize) -> Value {
    let texts: Vec<String> = (1..=n).map(|i| format!("Option {i}")).collect();
    json!({ "question": "Pick one", "pollType": "multiple_choice", "options": texts })
}

fn tally_of(poll: &Poll, counts: &[i64]) -> Tally {
    Tally {
        vote_count: counts.iter().sum(),
        option_counts: poll
            .option_ids()
            .into_iter()
            .zip(counts.iter().copied())
            .collect(),
        ..Tally::default()
    }
}

fn rating_tally(values: &[i32]) -> Tally {
    let mut counts: BTreeMap<i32, i64> = (1..=5).map(|v| (v, 0)).collect();
    for v in values {
        *counts.get_mut(v).unwrap() += 1;
    }
    Tally {
        vote_count: values.len() as i64,
        rating_counts: counts,
        ..Tally::default()
    }
}
