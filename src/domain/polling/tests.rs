//! Given/when/then tests of the polling rules (CONTRACT §2): the session and
//! poll state machines, presence, every vote rejection reason, poll
//! definitions, and the events' wire form. No IO, fixed times.

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

// ------------------------------------------------------ session lifecycle

#[test]
fn starting_a_draft_session_emits_session_started_with_the_participant_count() {
    let mut state = draft_session();
    state.participant_count = 4;
    let events = decide(&state, Command::StartSession { at: now() }).unwrap();
    assert_eq!(
        events,
        vec![DomainEvent::SessionStarted {
            session_id: state.session.id,
            at: now(),
            participant_count: 4
        }]
    );
}

#[test]
fn starting_an_active_session_is_a_conflict() {
    assert_conflict(decide(&active_session(), Command::StartSession { at: now() }));
}

#[test]
fn starting_an_ended_session_is_a_conflict() {
    assert_conflict(decide(&ended_session(), Command::StartSession { at: now() }));
}

#[test]
fn ending_an_active_session_without_an_open_poll_emits_only_session_ended() {
    let mut state = active_session();
    state.participant_count = 7;
    let events = decide(&state, Command::EndSession { at: now() }).unwrap();
    assert_eq!(
        events,
        vec![DomainEvent::SessionEnded {
            session_id: state.session.id,
            at: now(),
            final_participant_count: 7
        }]
    );
}

#[test]
fn ending_a_session_closes_its_open_poll_first() {
    let mut state = active_session();
    let mut open = rating_poll(&state, PollStatus::Open);
    open.vote_count = 12;
    let closed = rating_poll(&state, PollStatus::Closed);
    state = with_poll(with_poll(state, &closed), &open);
    state.participant_count = 9;
    let events = decide(&state, Command::EndSession { at: now() }).unwrap();
    assert_eq!(
        events,
        vec![
            DomainEvent::PollClosed {
                poll_id: open.id,
                session_id: state.session.id,
                at: now(),
                final_vote_count: 12
            },
            DomainEvent::SessionEnded {
                session_id: state.session.id,
                at: now(),
                final_participant_count: 9
            },
        ]
    );
}

#[test]
fn ending_a_draft_session_is_refused() {
    assert_conflict(decide(&draft_session(), Command::EndSession { at: now() }));
}

#[test]
fn ending_an_ended_session_is_a_conflict() {
    assert_conflict(decide(&ended_session(), Command::EndSession { at: now() }));
}

// --------------------------------------------------------- poll lifecycle

fn create(state: &State) -> Result<Vec<DomainEvent>, Rejection> {
    let draft = parse_poll(json!({ "question": "Ready?", "pollType": "rating_scale" })).unwrap();
    decide(
        state,
        Command::CreatePoll {
            poll_id: PollId::new(),
            draft,
            at: now(),
        },
    )
}

#[test]
fn creating_a_poll_places_it_after_the_sessions_existing_polls() {
    let mut state = active_session();
    state.poll_count = 2;
    let events = create(&state).unwrap();
    let [DomainEvent::PollCreated(poll)] = events.as_slice() else {
        panic!("expected one PollCreated, got {events:?}");
    };
    assert_eq!(poll.sequence_order, 3);
    assert_eq!(poll.session_id, state.session.id);
    assert_eq!(poll.status, PollStatus::Draft);
    assert_eq!(poll.question, "Ready?");
    assert_eq!(poll.kind, PollKind::RatingScale { min: 1, max: 5 });
    assert_eq!(
        (poll.created_at, poll.activated_at, poll.closed_at),
        (now(), None, None)
    );
    assert_eq!(poll.vote_count, 0);
}

#[test]
fn the_first_poll_of_a_draft_session_is_number_one() {
    let events = create(&draft_session()).unwrap();
    assert!(matches!(events.as_slice(), [DomainEvent::PollCreated(p)] if p.sequence_order == 1));
}

#[test]
fn creating_a_poll_in_an_ended_session_is_a_conflict() {
    assert_conflict(create(&ended_session()));
}

fn activate(state: &State, poll: &Poll) -> Result<Vec<DomainEvent>, Rejection> {
    decide(
        state,
        Command::ActivatePoll {
            poll_id: poll.id,
            at: now(),
        },
    )
}

fn close(state: &State, poll: &Poll) -> Result<Vec<DomainEvent>, Rejection> {
    decide(
        state,
        Command::ClosePoll {
            poll_id: poll.id,
            at: now(),
        },
    )
}

#[test]
fn activating_a_draft_poll_in_an_active_session_opens_it() {
    let state = active_session();
    let poll = choice_poll(&state, PollStatus::Draft, false);
    let state = with_poll(state, &poll);
    assert_eq!(
        activate(&state, &poll).unwrap(),
        vec![DomainEvent::PollActivated {
            poll_id: poll.id,
            session_id: state.session.id,
            question: poll.question.clone(),
            at: now()
        }]
    );
}

#[test]
fn activating_a_poll_in_a_draft_session_is_a_conflict() {
    let state = draft_session();
    let poll = choice_poll(&state, PollStatus::Draft, false);
    assert_conflict(activate(&with_poll(state, &poll), &poll));
}

#[test]
fn activating_a_poll_in_an_ended_session_is_a_conflict() {
    let state = ended_session();
    let poll = choice_poll(&state, PollStatus::Draft, false);
    assert_conflict(activate(&with_poll(state, &poll), &poll));
}

#[test]
fn activating_a_poll_while_another_is_open_closes_that_one_first() {
    let state = active_session();
    let mut open = text_poll(&state, PollStatus::Open);
    open.vote_count = 5;
    let next = choice_poll(&state, PollStatus::Draft, false);
    let state = with_poll(with_poll(state, &open), &next);
    assert_eq!(
        activate(&state, &next).unwrap(),
        vec![
            DomainEvent::PollClosed {
                poll_id: open.id,
                session_id: state.session.id,
                at: now(),
                final_vote_count: 5
            },
            DomainEvent::PollActivated {
                poll_id: next.id,
                session_id: state.session.id,
                question: next.question.clone(),
                at: now()
            },
        ]
    );
}

#[test]
fn an_open_poll_cannot_be_activated_again() {
    let state = active_session();
    let poll = choice_poll(&state, PollStatus::Open, false);
    assert_conflict(activate(&with_poll(state, &poll), &poll));
}

#[test]
fn a_closed_poll_never_reopens() {
    let state = active_session();
    let poll = choice_poll(&state, PollStatus::Closed, false);
    assert_conflict(activate(&with_poll(state, &poll), &poll));
}

#[test]
fn activating_a_poll_the_session_does_not_hold_is_a_conflict() {
    let state = active_session();
    let stranger = choice_poll(&active_session(), PollStatus::Draft, false);
    assert_conflict(activate(&state, &stranger));
}

#[test]
fn closing_an_open_poll_emits_poll_closed_with_its_final_vote_count() {
    let state = active_session();
    let mut poll = rating_poll(&state, PollStatus::Open);
    poll.vote_count = 42;
    let state = with_poll(state, &poll);
    assert_eq!(
        close(&state, &poll).unwrap(),
        vec![DomainEvent::PollClosed {
            poll_id: poll.id,
            session_id: state.session.id,
            at: now(),
            final_vote_count: 42
        }]
    );
}

#[test]
fn closing_a_draft_poll_is_a_conflict() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Draft);
    assert_conflict(close(&with_poll(state, &poll), &poll));
}

#[test]
fn closing_a_closed_poll_is_a_conflict() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Closed);
    assert_conflict(close(&with_poll(state, &poll), &poll));
}

// ----------------------------------------------------------- participants

fn join(state: &State, id: ParticipantId) -> Result<Vec<DomainEvent>, Rejection> {
    decide(
        state,
        Command::Join {
            participant_id: id,
            display_name: Some("Grace".into()),
            at: now(),
        },
    )
}

#[test]
fn joining_counts_the_new_participant() {
    let mut state = active_session();
    state.participant_count = 4;
    let id = ParticipantId::new();
    assert_eq!(
        join(&state, id).unwrap(),
        vec![DomainEvent::ParticipantJoined {
            participant: Participant {
                id,
                session_id: state.session.id,
                display_name: Some("Grace".into()),
                joined_at: now(),
                present: true
            },
            at: now(),
            participant_count: 5
        }]
    );
}

#[test]
fn joining_a_session_that_has_not_started_is_allowed() {
    let events = join(&draft_session(), ParticipantId::new()).unwrap();
    assert!(matches!(
        events.as_slice(),
        [DomainEvent::ParticipantJoined {
            participant_count: 1,
            ..
        }]
    ));
}

#[test]
fn joining_an_ended_session_is_a_conflict() {
    assert_conflict(join(&ended_session(), ParticipantId::new()));
}

fn mark_present(state: &State) -> Result<Vec<DomainEvent>, Rejection> {
    decide(
        state,
        Command::MarkPresent {
            participant_id: participant_id(state),
            at: now(),
        },
    )
}

fn mark_absent(state: &State) -> Result<Vec<DomainEvent>, Rejection> {
    decide(
        state,
        Command::MarkAbsent {
            participant_id: participant_id(state),
            at: now(),
        },
    )
}

#[test]
fn an_absent_participant_coming_back_is_joined_again() {
    let state = with_participant(active_session(), false);
    let before = state.participant.clone().unwrap();
    assert_eq!(
        mark_present(&state).unwrap(),
        vec![DomainEvent::ParticipantJoined {
            participant: Participant {
                present: true,
                ..before
            },
            at: now(),
            participant_count: 3
        }]
    );
}

#[test]
fn a_participant_already_present_is_not_joined_twice() {
    let state = with_participant(active_session(), true);
    assert_eq!(mark_present(&state).unwrap(), vec![]);
}

#[test]
fn coming_back_to_an_ended_session_changes_nothing() {
    let state = with_participant(ended_session(), false);
    assert_eq!(mark_present(&state).unwrap(), vec![]);
}

#[test]
fn a_present_participant_going_away_is_counted_out() {
    let state = with_participant(active_session(), true);
    assert_eq!(
        mark_absent(&state).unwrap(),
        vec![DomainEvent::ParticipantDisconnected {
            participant_id: participant_id(&state),
            session_id: state.session.id,
            at: now(),
            participant_count: 2
        }]
    );
}

#[test]
fn the_participant_count_never_drops_below_zero() {
    let mut state = with_participant(active_session(), true);
    state.participant_count = 0;
    let events = mark_absent(&state).unwrap();
    assert!(matches!(
        events.as_slice(),
        [DomainEvent::ParticipantDisconnected {
            participant_count: 0,
            ..
        }]
    ));
}

#[test]
fn an_absent_participant_going_away_again_changes_nothing() {
    let state = with_participant(active_session(), false);
    assert_eq!(mark_absent(&state).unwrap(), vec![]);
}

#[test]
fn presence_of_a_participant_the_state_does_not_hold_is_a_conflict() {
    let state = with_participant(active_session(), true);
    let stranger = ParticipantId::new();
    assert_conflict(decide(
        &state,
        Command::MarkPresent {
            participant_id: stranger,
            at: now(),
        },
    ));
    assert_conflict(decide(
        &state,
        Command::MarkAbsent {
            participant_id: stranger,
            at: now(),
        },
    ));
}

// ---------------------------------------------------------- vote: state

#[test]
fn a_vote_on_a_draft_poll_is_poll_not_active() {
    let state = with_participant(active_session(), true);
    let poll = rating_poll(&state, PollStatus::Draft);
    let state = with_poll(state, &poll);
    assert_eq!(
        reason_of(submit(&state, &poll, json!({ "ratingValue": 3 }))),
        RejectReason::PollNotActive
    );
}

#[test]
fn a_vote_on_a_closed_poll_is_poll_closed() {
    let state = with_participant(active_session(), true);
    let poll = rating_poll(&state, PollStatus::Closed);
    let state = with_poll(state, &poll);
    assert_eq!(
        reason_of(submit(&state, &poll, json!({ "ratingValue": 3 }))),
        RejectReason::PollClosed
    );
}

#[test]
fn a_second_vote_on_the_same_poll_is_duplicate_vote() {
    let (mut state, poll) = voting_on(rating_poll);
    state.has_voted = true;
    assert_eq!(
        reason_of(submit(&state, &poll, json!({ "ratingValue": 3 }))),
        RejectReason::DuplicateVote
    );
}

#[test]
fn a_closed_poll_with_garbage_data_is_poll_closed() {
    let state = with_participant(active_session(), true);
    let poll = choice_poll(&state, PollStatus::Closed, false);
    let state = with_poll(state, &poll);
    assert_eq!(
        reason_of(submit(&state, &poll, json!("garbage"))),
        RejectReason::PollClosed
    );
}

#[test]
fn a_draft_poll_with_garbage_data_is_poll_not_active() {
    let state = with_participant(active_session(), true);
    let poll = rating_poll(&state, PollStatus::Draft);
    let state = with_poll(state, &poll);
    assert_eq!(
        reason_of(submit(&state, &poll, json!({ "ratingValue": 99 }))),
        RejectReason::PollNotActive
    );
}

#[test]
fn a_duplicate_with_garbage_data_is_duplicate_vote() {
    let (mut state, poll) = voting_on(text_poll);
    state.has_voted = true;
    assert_eq!(
        reason_of(submit(&state, &poll, json!({ "textResponse": "" }))),
        RejectReason::DuplicateVote
    );
}

#[test]
fn a_vote_from_a_participant_the_state_does_not_hold_is_a_conflict() {
    let (state, poll) = voting_on(rating_poll);
    let result = decide(
        &state,
        Command::SubmitVote {
            vote_id: VoteId::new(),
            participant_id: ParticipantId::new(),
            poll_id: poll.id,
            vote_data: json!({ "ratingValue": 3 }),
            at: now(),
            client_submitted_at: None,
        },
    );
    assert_conflict(result);
}

// -------------------------------------------------------- vote: content

#[test]
fn an_unknown_option_is_invalid_option() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, false));
    let data = json!({ "selectedOptionIds": [OptionId::new().to_string()] });
    assert_eq!(
        reason_of(submit(&state, &poll, data)),
        RejectReason::InvalidOption
    );
}

#[test]
fn an_option_of_another_poll_is_invalid_option() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, false));
    let other = choice_poll(&state, PollStatus::Open, false);
    let data = json!({ "selectedOptionIds": [option_id(&other, 0)] });
    assert_eq!(
        reason_of(submit(&state, &poll, data)),
        RejectReason::InvalidOption
    );
}

#[test]
fn an_empty_selection_is_invalid_option() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, true));
    let data = json!({ "selectedOptionIds": [] });
    assert_eq!(
        reason_of(submit(&state, &poll, data)),
        RejectReason::InvalidOption
    );
}

#[test]
fn two_options_on_a_single_choice_poll_is_invalid_option() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, false));
    let data = json!({ "selectedOptionIds": [option_id(&poll, 0), option_id(&poll, 1)] });
    assert_eq!(
        reason_of(submit(&state, &poll, data)),
        RejectReason::InvalidOption
    );
}

#[test]
fn the_same_option_twice_is_invalid_option() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, true));
    let data = json!({ "selectedOptionIds": [option_id(&poll, 1), option_id(&poll, 1)] });
    assert_eq!(
        reason_of(submit(&state, &poll, data)),
        RejectReason::InvalidOption
    );
}

#[test]
fn missing_or_garbage_option_data_is_invalid_option() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, true));
    for data in [
        json!(null),
        json!({}),
        json!("garbage"),
        json!([option_id(&poll, 0)]),
        json!({ "selectedOptionIds": option_id(&poll, 0) }),
        json!({ "selectedOptionIds": [42] }),
        json!({ "selectedOptionIds": [null] }),
        json!({ "selectedOptionIds": ["not-a-uuid"] }),
        json!({ "selectedOptionIds": [option_id(&poll, 0), "not-a-uuid"] }),
        json!({ "ratingValue": 3 }),
    ] {
        assert_eq!(
            reason_of(submit(&state, &poll, data.clone())),
            RejectReason::InvalidOption,
            "{data}"
        );
    }
}

#[test]
fn a_rating_below_the_scale_is_invalid_rating() {
    let (state, poll) = voting_on(rating_poll);
    assert_eq!(
        reason_of(submit(&state, &poll, json!({ "ratingValue": 0 }))),
        RejectReason::InvalidRating
    );
}

#[test]
fn a_rating_above_the_scale_is_invalid_rating() {
    let (state, poll) = voting_on(rating_poll);
    assert_eq!(
        reason_of(submit(&state, &poll, json!({ "ratingValue": 6 }))),
        RejectReason::InvalidRating
    );
}

#[test]
fn a_non_integer_or_missing_rating_is_invalid_rating() {
    let (state, poll) = voting_on(rating_poll);
    for data in [
        json!({ "ratingValue": 3.5 }),
        json!({ "ratingValue": "3" }),
        json!({ "ratingValue": null }),
        json!({ "ratingValue": true }),
        json!({ "ratingValue": u64::MAX }),
        json!({}),
        json!(null),
        json!(3),
    ] {
        assert_eq!(
            reason_of(submit(&state, &poll, data.clone())),
            RejectReason::InvalidRating,
            "{data}"
        );
    }
}

#[test]
fn an_empty_or_blank_text_is_invalid_text() {
    let (state, poll) = voting_on(text_poll);
    for text in ["", "   ", "\n\t "] {
        let data = json!({ "textResponse": text });
        assert_eq!(
            reason_of(submit(&state, &poll, data)),
            RejectReason::InvalidText,
            "{text:?}"
        );
    }
}

#[test]
fn a_text_over_500_characters_is_invalid_text() {
    let (state, poll) = voting_on(text_poll);
    let data = json!({ "textResponse": "é".repeat(501) });
    assert_eq!(reason_of(submit(&state, &poll, data)), RejectReason::InvalidText);
}

#[test]
fn a_missing_or_non_string_text_is_invalid_text() {
    let (state, poll) = voting_on(text_poll);
    for data in [
        json!({}),
        json!(null),
        json!({ "textResponse": 5 }),
        json!({ "textResponse": ["a"] }),
    ] {
        assert_eq!(
            reason_of(submit(&state, &poll, data.clone())),
            RejectReason::InvalidText,
            "{data}"
        );
    }
}

#[test]
fn only_the_invalid_reasons_are_content_problems() {
    use RejectReason::*;
    for (reason, wire, content) in [
        (PollClosed, "poll_closed", false),
        (DuplicateVote, "duplicate_vote", false),
        (PollNotActive, "poll_not_active", false),
        (InvalidOption, "invalid_option", true),
        (InvalidRating, "invalid_rating", true),
        (InvalidText, "invalid_text", true),
    ] {
        assert_eq!(reason.as_str(), wire);
        assert_eq!(reason.is_content(), content, "{wire}");
    }
}

// ------------------------------------------------------ vote: acceptance

#[test]
fn a_single_choice_vote_is_accepted_as_recorded() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, false));
    let vote_id = VoteId::new();
    let events = decide(
        &state,
        Command::SubmitVote {
            vote_id,
            participant_id: participant_id(&state),
            poll_id: poll.id,
            vote_data: json!({ "selectedOptionIds": [option_id(&poll, 2)] }),
            at: now(),
            client_submitted_at: Some(t(59)),
        },
    )
    .unwrap();
    assert_eq!(
        events,
        vec![DomainEvent::VoteAccepted {
            vote: Vote {
                id: vote_id,
                poll_id: poll.id,
                participant_id: participant_id(&state),
                choice: Choice::Options(vec![poll.option_ids()[2]]),
                submitted_at: now(),
                client_submitted_at: Some(t(59)),
            },
            session_id: state.session.id,
        }]
    );
}

#[test]
fn a_multiple_choice_vote_keeps_every_option_in_order() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, true));
    let data = json!({ "selectedOptionIds": [option_id(&poll, 2), option_id(&poll, 0)] });
    let ids = poll.option_ids();
    assert_eq!(
        accepted_choice(submit(&state, &poll, data)),
        Choice::Options(vec![ids[2], ids[0]])
    );
}

#[test]
fn a_rating_at_either_end_of_the_scale_is_accepted() {
    let (state, poll) = voting_on(rating_poll);
    for value in [1, 5] {
        let choice = accepted_choice(submit(&state, &poll, json!({ "ratingValue": value })));
        assert_eq!(choice, Choice::Rating(value));
    }
}

#[test]
fn a_text_answer_is_accepted_trimmed() {
    let (state, poll) = voting_on(text_poll);
    let choice = accepted_choice(submit(
        &state,
        &poll,
        json!({ "textResponse": "  more demos \n" }),
    ));
    assert_eq!(choice, Choice::Text("more demos".into()));
}

#[test]
fn a_text_of_exactly_500_characters_is_accepted() {
    let (state, poll) = voting_on(text_poll);
    let text = "é".repeat(500);
    let choice = accepted_choice(submit(
        &state,
        &poll,
        json!({ "textResponse": format!("  {text}  ") }),
    ));
    assert_eq!(choice, Choice::Text(text));
}

#[test]
fn parse_choice_names_the_content_rule_that_failed() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Open);
    let (reason, message) = parse_choice(&poll, &json!({ "ratingValue": 9 })).unwrap_err();
    assert_eq!(reason, RejectReason::InvalidRating);
    assert!(
        message.contains("ratingValue") && message.contains('1') && message.contains('5'),
        "{message}"
    );
}

// ------------------------------------------------------- poll definitions

#[test]
fn a_choice_poll_needs_at_least_two_options() {
    assert_eq!(field_of(choice_input(1)), "options");
    assert_eq!(field_of(choice_input(0)), "options");
    assert!(parse_poll(choice_input(2)).is_ok());
}

#[test]
fn a_choice_poll_has_at_most_twenty_options() {
    assert!(parse_poll(choice_input(20)).is_ok());
    assert_eq!(field_of(choice_input(21)), "options");
}

#[test]
fn a_choice_poll_without_options_is_refused() {
    assert_eq!(
        field_of(json!({ "question": "Pick", "pollType": "multiple_choice" })),
        "options"
    );
}

#[test]
fn a_blank_option_text_is_refused() {
    let input = json!({ "question": "Pick", "pollType": "multiple_choice", "options": ["Yes", "  "] });
    assert_eq!(field_of(input), "options");
}

#[test]
fn options_are_trimmed_numbered_from_one_and_given_distinct_ids() {
    let input = json!({ "question": "Pick", "pollType": "multiple_choice", "options": [" Yes ", "No"] });
    let PollKind::MultipleChoice {
        options,
        allow_multiple,
    } = parse_poll(input).unwrap().kind
    else {
        panic!("expected a multiple choice poll");
    };
    assert!(!allow_multiple);
    let shown: Vec<(&str, i32)> = options
        .iter()
        .map(|o| (o.text.as_str(), o.sequence_order))
        .collect();
    assert_eq!(shown, vec![("Yes", 1), ("No", 2)]);
    assert_ne!(options[0].id, options[1].id);
}

#[test]
fn allow_multiple_is_kept_for_a_choice_poll() {
    let mut input = choice_input(3);
    input["allowMultiple"] = json!(true);
    let kind = parse_poll(input).unwrap().kind;
    assert!(matches!(
        kind,
        PollKind::MultipleChoice {
            allow_multiple: true,
            ..
        }
    ));
}

#[test]
fn a_rating_poll_defaults_to_one_to_five() {
    let draft = parse_poll(json!({ "question": "Rate", "pollType": "rating_scale" })).unwrap();
    assert_eq!(draft.kind, PollKind::RatingScale { min: 1, max: 5 });
}

#[test]
fn a_rating_poll_keeps_its_own_scale() {
    let input = json!({ "question": "Rate", "pollType": "rating_scale", "minRating": 0, "maxRating": 10 });
    assert_eq!(
        parse_poll(input).unwrap().kind,
        PollKind::RatingScale { min: 0, max: 10 }
    );
}

#[test]
fn a_rating_poll_whose_min_is_not_below_its_max_is_refused() {
    for (min, max) in [(5, 5), (7, 3)] {
        let input =
            json!({ "question": "Rate", "pollType": "rating_scale", "minRating": min, "maxRating": max });
        assert_eq!(field_of(input), "minRating", "{min}..{max}");
    }
    // Only a minimum given: the default maximum of 5 applies.
    let input = json!({ "question": "Rate", "pollType": "rating_scale", "minRating": 6 });
    assert_eq!(field_of(input), "minRating");
}

#[test]
fn options_on_a_rating_poll_are_refused() {
    let input = json!({ "question": "Rate", "pollType": "rating_scale", "options": ["a", "b"] });
    assert_eq!(field_of(input), "options");
}

#[test]
fn allow_multiple_on_a_rating_poll_is_refused() {
    let input = json!({ "question": "Rate", "pollType": "rating_scale", "allowMultiple": true });
    assert_eq!(field_of(input), "allowMultiple");
}

#[test]
fn ratings_on_a_choice_poll_are_refused() {
    let mut input = choice_input(2);
    input["maxRating"] = json!(5);
    assert_eq!(field_of(input), "minRating");
}

#[test]
fn an_open_text_poll_has_neither_options_nor_ratings() {
    assert_eq!(
        parse_poll(json!({ "question": "Why?", "pollType": "open_text" }))
            .unwrap()
            .kind,
        PollKind::OpenText
    );
    let with_options = json!({ "question": "Why?", "pollType": "open_text", "options": ["a", "b"] });
    assert_eq!(field_of(with_options), "options");
    let with_rating = json!({ "question": "Why?", "pollType": "open_text", "minRating": 1 });
    assert_eq!(field_of(with_rating), "minRating");
}

#[test]
fn an_empty_or_blank_question_is_refused() {
    for question in ["", "   ", "\n"] {
        assert_eq!(
            field_of(json!({ "question": question, "pollType": "open_text" })),
            "question"
        );
    }
}

#[test]
fn a_question_over_500_characters_is_refused() {
    let input = json!({ "question": "é".repeat(501), "pollType": "open_text" });
    assert_eq!(field_of(input), "question");
}

#[test]
fn a_question_of_500_characters_is_accepted_trimmed() {
    let question = "é".repeat(500);
    let draft = parse_poll(json!({ "question": format!(" {question} "), "pollType": "open_text" })).unwrap();
    assert_eq!(draft.question, question);
}

#[test]
fn an_unknown_poll_type_is_refused() {
    for poll_type in ["yes_no", "", "Multiple_Choice"] {
        assert_eq!(
            field_of(json!({ "question": "Q", "pollType": poll_type })),
            "pollType"
        );
    }
}

#[test]
fn a_poll_is_anonymous_unless_said_otherwise() {
    assert!(
        parse_poll(json!({ "question": "Q", "pollType": "open_text" }))
            .unwrap()
            .is_anonymous
    );
    let named = json!({ "question": "Q", "pollType": "open_text", "isAnonymous": false });
    assert!(!parse_poll(named).unwrap().is_anonymous);
}

#[test]
fn a_poll_input_with_an_unknown_field_does_not_parse() {
    let input = json!({ "question": "Q", "pollType": "open_text", "colour": "red" });
    assert!(serde_json::from_value::<PollInput>(input).is_err());
}

#[test]
fn required_text_trims_and_names_its_field() {
    assert_eq!(required_text("title", "  Town hall ", 200).unwrap(), "Town hall");
    let empty = required_text("title", " \t ", 200).unwrap_err();
    assert_eq!(empty.field, "title");
    assert!(empty.to_string().starts_with("title: "), "{empty}");
    assert!(required_text("title", &"x".repeat(200), 200).is_ok());
    assert_eq!(
        required_text("title", &"x".repeat(201), 200).unwrap_err().field,
        "title"
    );
}

#[test]
fn a_blank_display_name_means_none() {
    assert_eq!(display_name(None).unwrap(), None);
    assert_eq!(display_name(Some("   ")).unwrap(), None);
    assert_eq!(display_name(Some(" Ada ")).unwrap(), Some("Ada".into()));
}

#[test]
fn a_display_name_over_80_characters_is_refused() {
    assert!(display_name(Some(&"n".repeat(80))).is_ok());
    assert_eq!(
        display_name(Some(&"n".repeat(81))).unwrap_err().field,
        "displayName"
    );
}

// ------------------------------------------------------------- wire form

#[test]
fn session_created_carries_the_session_fields() {
    let session = session(SessionStatus::Draft);
    let (topic, kind, p) = wire(&DomainEvent::SessionCreated(session.clone()));
    assert_eq!(topic, format!("session:{}", session.id));
    assert_eq!(kind, "session:created");
    assert_eq!(p["sessionId"], session.id.to_string());
    assert_eq!(p["title"], "All hands");
    assert_eq!(p["slug"], "ABC123");
    assert_eq!(p["presenterId"], session.presenter_id.to_string());
    assert_eq!(p["status"], "draft");
    assert_eq!(p["createdAt"], "2027-01-15T08:00:00.000Z");
}

#[test]
fn session_started_carries_status_time_and_count() {
    let id = SessionId::new();
    let event = DomainEvent::SessionStarted {
        session_id: id,
        at: now(),
        participant_count: 4,
    };
    let (topic, kind, p) = wire(&event);
    assert_eq!(
        (topic, kind),
        (format!("session:{id}"), "session:started".to_string())
    );
    assert_eq!(
        p,
        json!({ "sessionId": id.to_string(), "status": "active", "startedAt": NOW_TEXT, "participantCount": 4 })
    );
}

#[test]
fn session_ended_carries_the_final_participant_count() {
    let id = SessionId::new();
    let event = DomainEvent::SessionEnded {
        session_id: id,
        at: now(),
        final_participant_count: 9,
    };
    let (topic, kind, p) = wire(&event);
    assert_eq!(
        (topic, kind),
        (format!("session:{id}"), "session:ended".to_string())
    );
    assert_eq!(
        p,
        json!({ "sessionId": id.to_string(), "status": "ended", "endedAt": NOW_TEXT, "finalParticipantCount": 9 })
    );
}

#[test]
fn poll_created_carries_the_whole_definition() {
    let state = active_session();
    let poll = choice_poll(&state, PollStatus::Draft, true);
    let (topic, kind, p) = wire(&DomainEvent::PollCreated(poll.clone()));
    assert_eq!(
        (topic, kind),
        (
            format!("session:{}", state.session.id),
            "poll:created".to_string()
        )
    );
    assert_has_fields(
        &p,
        &[
            "pollId",
            "sessionId",
            "question",
            "pollType",
            "allowMultiple",
            "isAnonymous",
            "options",
            "minRating",
            "maxRating",
            "sequenceOrder",
            "createdAt",
        ],
    );
    assert_eq!(p["pollId"], poll.id.to_string());
    assert_eq!(p["sessionId"], state.session.id.to_string());
    assert_eq!(p["pollType"], "multiple_choice");
    assert_eq!(p["allowMultiple"], true);
    assert_eq!(p["isAnonymous"], true);
    assert_eq!(p["sequenceOrder"], 1);
    assert_eq!(p["createdAt"], "2027-01-15T08:00:10.000Z");
    assert_eq!(
        p["options"][1],
        json!({ "optionId": option_id(&poll, 1), "optionText": "Option 2", "sequenceOrder": 2 })
    );
    assert_eq!(p["options"].as_array().unwrap().len(), 3);
}

#[test]
fn poll_created_for_a_rating_poll_carries_its_scale() {
    let state = active_session();
    let poll = poll(
        &state,
        PollKind::RatingScale { min: 0, max: 10 },
        PollStatus::Draft,
    );
    let (_, _, p) = wire(&DomainEvent::PollCreated(poll));
    assert_eq!(
        (
            p["pollType"].clone(),
            p["minRating"].clone(),
            p["maxRating"].clone()
        ),
        (json!("rating_scale"), json!(0), json!(10))
    );
    assert_eq!(p["options"], json!([]));
}

#[test]
fn poll_activated_and_poll_closed_carry_their_fields() {
    let (session_id, poll_id) = (SessionId::new(), PollId::new());
    let activated = DomainEvent::PollActivated {
        poll_id,
        session_id,
        question: "Q?".into(),
        at: now(),
    };
    let (topic, kind, p) = wire(&activated);
    assert_eq!(
        (topic.as_str(), kind.as_str()),
        (format!("session:{session_id}").as_str(), "poll:activated")
    );
    assert_eq!(
        p,
        json!({ "pollId": poll_id.to_string(), "sessionId": session_id.to_string(), "question": "Q?", "activatedAt": NOW_TEXT })
    );
    let closed = DomainEvent::PollClosed {
        poll_id,
        session_id,
        at: now(),
        final_vote_count: 3,
    };
    let (topic, kind, p) = wire(&closed);
    assert_eq!(
        (topic.as_str(), kind.as_str()),
        (format!("session:{session_id}").as_str(), "poll:closed")
    );
    assert_eq!(
        p,
        json!({ "pollId": poll_id.to_string(), "sessionId": session_id.to_string(), "closedAt": NOW_TEXT, "finalVoteCount": 3 })
    );
}

#[test]
fn participant_joined_and_disconnected_carry_their_fields() {
    let state = with_participant(active_session(), true);
    let who = state.participant.clone().unwrap();
    let joined = DomainEvent::ParticipantJoined {
        participant: who.clone(),
        at: now(),
        participant_count: 3,
    };
    let (topic, kind, p) = wire(&joined);
    assert_eq!(
        (topic, kind),
        (
            format!("session:{}", state.session.id),
            "participant:joined".to_string()
        )
    );
    assert_eq!(
        p,
        json!({
            "participantId": who.id.to_string(), "sessionId": state.session.id.to_string(),
            "displayName": "Ada", "joinedAt": NOW_TEXT, "participantCount": 3
        })
    );
    let gone = DomainEvent::ParticipantDisconnected {
        participant_id: who.id,
        session_id: state.session.id,
        at: now(),
        participant_count: 2,
    };
    let (topic, kind, p) = wire(&gone);
    assert_eq!(
        (topic, kind),
        (
            format!("session:{}", state.session.id),
            "participant:disconnected".to_string()
        )
    );
    assert_eq!(
        p,
        json!({
            "participantId": who.id.to_string(), "sessionId": state.session.id.to_string(),
            "disconnectedAt": NOW_TEXT, "participantCount": 2
        })
    );
}

#[test]
fn an_anonymous_joiner_has_a_null_display_name() {
    let events = decide(
        &active_session(),
        Command::Join {
            participant_id: ParticipantId::new(),
            display_name: None,
            at: now(),
        },
    )
    .unwrap();
    let (_, _, p) = wire(&events[0]);
    assert_eq!(p["displayName"], Value::Null);
}

#[test]
fn the_vote_confirmation_goes_to_the_voter_with_its_identity_and_results() {
    let (state, poll) = voting_on(|s, st| choice_poll(s, st, false));
    let events = submit(
        &state,
        &poll,
        json!({ "selectedOptionIds": [option_id(&poll, 0)] }),
    )
    .unwrap();
    let DomainEvent::VoteAccepted { vote, .. } = &events[0] else {
        panic!("{events:?}")
    };
    let results = tally_of(&poll, &[1, 0, 0]).results_json(&poll);
    let stored = events[0].to_new_event(&trace(), Some(&results));
    let voter = participant_id(&state);
    assert_eq!(stored.topic.as_str(), format!("participant:{voter}"));
    assert_eq!(stored.event_type.as_str(), "vote:accepted");
    let p = payload(&stored);
    assert_has_fields(
        &p,
        &[
            "voteId",
            "pollId",
            "sessionId",
            "participantId",
            "submittedAt",
            "currentVoteCount",
            "voteBreakdown",
            "averageRating",
            "ratingDistribution",
        ],
    );
    assert_eq!(p["voteId"], vote.id.to_string());
    assert_eq!(p["pollId"], poll.id.to_string());
    assert_eq!(p["sessionId"], state.session.id.to_string());
    assert_eq!(p["participantId"], voter.to_string());
    assert_eq!(p["submittedAt"], NOW_TEXT);
    assert_eq!(p["currentVoteCount"], 1);
    assert_eq!(p, vote_confirmation(vote, state.session.id, Some(&results)));
}

#[test]
fn the_results_broadcast_never_names_the_voter() {
    for anonymous in [true, false] {
        for make in [
            (|s: &State, st: PollStatus| choice_poll(s, st, false)) as fn(&State, PollStatus) -> Poll,
            rating_poll,
            text_poll,
        ] {
            let (state, mut poll) = voting_on(make);
            poll.is_anonymous = anonymous;
            let data = match &poll.kind {
                PollKind::MultipleChoice { .. } => json!({ "selectedOptionIds": [option_id(&poll, 0)] }),
                PollKind::RatingScale { .. } => json!({ "ratingValue": 4 }),
                PollKind::OpenText => json!({ "textResponse": "hi" }),
            };
            let events = submit(&state, &poll, data).unwrap();
            let DomainEvent::VoteAccepted { vote, .. } = &events[0] else {
                panic!("{events:?}")
            };
            let mut tally = tally_of(&poll, &[1, 0, 0]);
            tally.texts = vec!["hi".into()];
            let results = tally.results_json(&poll);
            let broadcast = results_broadcast(&poll, &results, Some((vote.id.to_string(), now())), &trace());
            assert_eq!(broadcast.topic.as_str(), format!("session:{}", state.session.id));
            assert_eq!(broadcast.event_type.as_str(), "vote:accepted");
            let text = broadcast.payload.get();
            let voter = participant_id(&state).to_string();
            assert!(!text.contains(&voter), "voter id in {text}");
            assert!(!text.contains("participantId"), "participantId key in {text}");
            let p = payload(&broadcast);
            assert_has_fields(
                &p,
                &[
                    "voteId",
                    "pollId",
                    "sessionId",
                    "submittedAt",
                    "currentVoteCount",
                    "voteBreakdown",
                    "averageRating",
                    "ratingDistribution",
                ],
            );
            assert_eq!(p["sessionId"], state.session.id.to_string());
            assert_eq!(p["submittedAt"], NOW_TEXT);
            // The unicast confirmation of the same vote does name the voter.
            let unicast = events[0].to_new_event(&trace(), Some(&results));
            assert!(unicast.payload.get().contains(&voter));
        }
    }
}

#[test]
fn a_results_broadcast_with_no_vote_yet_has_null_vote_fields() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Open);
    let results = rating_tally(&[]).results_json(&poll);
    let p = payload(&results_broadcast(&poll, &results, None, &trace()));
    assert_eq!(
        (p["voteId"].clone(), p["submittedAt"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(p["currentVoteCount"], 0);
}

#[test]
fn vote_rejected_goes_to_the_voter_with_its_reason() {
    let (session_id, poll_id, voter) = (SessionId::new(), PollId::new(), ParticipantId::new());
    let event = vote_rejected(
        poll_id,
        session_id,
        voter,
        RejectReason::PollClosed,
        "the poll is closed",
        now(),
        &trace(),
    );
    assert_eq!(event.topic.as_str(), format!("participant:{voter}"));
    assert_eq!(event.event_type.as_str(), "vote:rejected");
    assert_eq!(
        payload(&event),
        json!({
            "pollId": poll_id.to_string(), "sessionId": session_id.to_string(),
            "participantId": voter.to_string(), "reason": "poll_closed",
            "message": "the poll is closed", "timestamp": NOW_TEXT
        })
    );
}

#[test]
fn every_event_payload_carries_the_session_id_and_the_trace_id() {
    let state = with_participant(active_session(), true);
    let sid = state.session.id;
    let poll = rating_poll(&state, PollStatus::Open);
    let voter = participant_id(&state);
    let events = vec![
        DomainEvent::SessionCreated(state.session.clone()),
        DomainEvent::SessionStarted {
            session_id: sid,
            at: now(),
            participant_count: 0,
        },
        DomainEvent::SessionEnded {
            session_id: sid,
            at: now(),
            final_participant_count: 0,
        },
        DomainEvent::PollCreated(poll.clone()),
        DomainEvent::PollActivated {
            poll_id: poll.id,
            session_id: sid,
            question: "Q".into(),
            at: now(),
        },
        DomainEvent::PollClosed {
            poll_id: poll.id,
            session_id: sid,
            at: now(),
            final_vote_count: 0,
        },
        DomainEvent::VoteAccepted {
            vote: Vote {
                id: VoteId::new(),
                poll_id: poll.id,
                participant_id: voter,
                choice: Choice::Rating(3),
                submitted_at: now(),
                client_submitted_at: None,
            },
            session_id: sid,
        },
        DomainEvent::ParticipantJoined {
            participant: state.participant.clone().unwrap(),
            at: now(),
            participant_count: 1,
        },
        DomainEvent::ParticipantDisconnected {
            participant_id: voter,
            session_id: sid,
            at: now(),
            participant_count: 0,
        },
    ];
    for event in &events {
        let stored = event.to_new_event(&trace(), None);
        assert_eq!(payload(&stored)["sessionId"], sid.to_string(), "{event:?}");
        assert_eq!(stored.trace_id, trace());
        let expected_topic = if matches!(event, DomainEvent::VoteAccepted { .. }) {
            format!("participant:{voter}")
        } else {
            format!("session:{sid}")
        };
        assert_eq!(stored.topic.as_str(), expected_topic, "{event:?}");
        assert!(!stored.payload.get().contains('\n'));
    }
}

// ---------------------------------------------------------------- results

#[test]
fn percentages_are_shares_of_the_votes() {
    let state = active_session();
    let poll = poll(
        &state,
        PollKind::MultipleChoice {
            options: options(2),
            allow_multiple: false,
        },
        PollStatus::Open,
    );
    let r = tally_of(&poll, &[1, 3]).results_json(&poll);
    assert_eq!(r["currentVoteCount"], 4);
    assert_eq!(
        r["voteBreakdown"],
        json!([
            { "optionId": option_id(&poll, 0), "voteCount": 1, "percentage": 25.0 },
            { "optionId": option_id(&poll, 1), "voteCount": 3, "percentage": 75.0 },
        ])
    );
    assert_eq!(r["averageRating"], Value::Null);
    assert_eq!(r["ratingDistribution"], Value::Null);
    assert_eq!(r["pollId"], poll.id.to_string());
    assert_eq!(r["sessionId"], state.session.id.to_string());
    assert!(r.get("textResponses").is_none());
}

#[test]
fn percentages_are_rounded_to_two_decimals() {
    let state = active_session();
    let poll = choice_poll(&state, PollStatus::Open, false);
    let r = tally_of(&poll, &[1, 2, 0]).results_json(&poll);
    let shares: Vec<f64> = r["voteBreakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["percentage"].as_f64().unwrap())
        .collect();
    assert_eq!(shares, vec![33.33, 66.67, 0.0]);
}

#[test]
fn with_no_votes_every_percentage_is_zero() {
    let state = active_session();
    let poll = choice_poll(&state, PollStatus::Open, false);
    let r = tally_of(&poll, &[0, 0, 0]).results_json(&poll);
    assert_eq!(r["currentVoteCount"], 0);
    for item in r["voteBreakdown"].as_array().unwrap() {
        assert_eq!(item["percentage"].as_f64(), Some(0.0));
        assert_eq!(item["voteCount"], 0);
    }
}

#[test]
fn the_average_rating_is_the_mean_of_the_ratings() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Open);
    let r = rating_tally(&[1, 2, 3]).results_json(&poll);
    assert_eq!(r["averageRating"].as_f64(), Some(2.0));
    assert_eq!(
        r["ratingDistribution"],
        json!({ "1": 1, "2": 1, "3": 1, "4": 0, "5": 0 })
    );
    assert_eq!(r["currentVoteCount"], 3);
    assert_eq!(r["voteBreakdown"], json!([]));
}

#[test]
fn the_average_rating_is_rounded_to_two_decimals() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Open);
    assert_eq!(
        rating_tally(&[1, 2, 2]).results_json(&poll)["averageRating"].as_f64(),
        Some(1.67)
    );
}

#[test]
fn with_no_ratings_the_average_is_null() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Open);
    let r = rating_tally(&[]).results_json(&poll);
    assert_eq!(r["averageRating"], Value::Null);
    assert_eq!(
        r["ratingDistribution"],
        json!({ "1": 0, "2": 0, "3": 0, "4": 0, "5": 0 })
    );
}

#[test]
fn open_text_results_list_the_answers_without_their_authors() {
    let state = active_session();
    let poll = text_poll(&state, PollStatus::Open);
    let tally = Tally {
        vote_count: 2,
        texts: vec!["more demos".into(), "less slides".into()],
        ..Tally::default()
    };
    let r = tally.results_json(&poll);
    assert_eq!(r["textResponses"], json!(["more demos", "less slides"]));
    assert_eq!(r["pollType"], "open_text");
    assert_eq!(r["currentVoteCount"], 2);
}

#[test]
fn with_several_choices_allowed_percentages_are_shares_of_the_voters() {
    let state = active_session();
    let poll = poll(
        &state,
        PollKind::MultipleChoice {
            options: options(2),
            allow_multiple: true,
        },
        PollStatus::Open,
    );
    // Two voters: both picked the first option, one also the second.
    let tally = Tally {
        vote_count: 2,
        option_counts: vec![(poll.option_ids()[0], 2), (poll.option_ids()[1], 1)],
        ..Tally::default()
    };
    let shares: Vec<f64> = tally.results_json(&poll)["voteBreakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["percentage"].as_f64().unwrap())
        .collect();
    assert_eq!(shares, vec![100.0, 50.0]);
}

#[test]
fn leaving_an_ended_session_changes_no_attendance() {
    let state = with_participant(ended_session(), true);
    assert_eq!(mark_absent(&state).unwrap(), vec![]);
}
