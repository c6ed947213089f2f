//! Poll lifecycle: creating a poll (its place in the session), activating
//! one (closing the open one first), closing one; a closed poll never
//! reopens.

use super::*;

/// A valid rating-scale definition: "Ready?", 1 to 5.
fn ready_poll() -> PollDraft {
    parse_poll(json!({ "question": "Ready?", "pollType": "rating_scale" })).unwrap()
}

// --------------------------------------------------------------- creating

#[test]
fn creating_a_poll_places_it_after_the_sessions_existing_polls() {
    let state = active_session().with_poll_count(2);
    let events = given(&state).when(create_poll(ready_poll())).events();
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
    let events = given(&draft_session()).when(create_poll(ready_poll())).events();
    assert!(matches!(events.as_slice(), [DomainEvent::PollCreated(p)] if p.sequence_order == 1));
}

#[test]
fn creating_a_poll_in_an_ended_session_is_a_conflict() {
    given(&ended_session())
        .when(create_poll(ready_poll()))
        .then_conflict();
}

// ------------------------------------------------------------- activating

#[test]
fn activating_a_draft_poll_in_an_active_session_opens_it() {
    let state = active_session();
    let poll = single_choice_poll(&state, PollStatus::Draft);
    let state = state.with_poll(&poll);
    given(&state)
        .when(activate(&poll))
        .then_events(&[DomainEvent::PollActivated {
            poll_id: poll.id,
            session_id: state.session.id,
            question: poll.question.clone(),
            at: now(),
            closes_at: None,
        }]);
}

#[test]
fn activating_a_poll_in_a_draft_session_is_a_conflict() {
    let state = draft_session();
    let poll = single_choice_poll(&state, PollStatus::Draft);
    given(&state.with_poll(&poll))
        .when(activate(&poll))
        .then_conflict();
}

#[test]
fn activating_a_poll_in_an_ended_session_is_a_conflict() {
    let state = ended_session();
    let poll = single_choice_poll(&state, PollStatus::Draft);
    given(&state.with_poll(&poll))
        .when(activate(&poll))
        .then_conflict();
}

#[test]
fn activating_a_poll_while_another_is_open_closes_that_one_first() {
    let state = active_session();
    let open = text_poll(&state, PollStatus::Open).with_votes(5);
    let next = single_choice_poll(&state, PollStatus::Draft);
    let state = state.with_poll(&open).with_poll(&next);
    given(&state).when(activate(&next)).then_events(&[
        DomainEvent::PollClosed {
            poll_id: open.id,
            session_id: state.session.id,
            at: now(),
            final_vote_count: 5,
            reason: CloseReason::Replaced,
        },
        DomainEvent::PollActivated {
            poll_id: next.id,
            session_id: state.session.id,
            question: next.question.clone(),
            at: now(),
            closes_at: None,
        },
    ]);
}

#[test]
fn an_open_poll_cannot_be_activated_again() {
    let state = active_session();
    let poll = single_choice_poll(&state, PollStatus::Open);
    given(&state.with_poll(&poll))
        .when(activate(&poll))
        .then_conflict();
}

#[test]
fn a_closed_poll_never_reopens() {
    let state = active_session();
    let poll = single_choice_poll(&state, PollStatus::Closed);
    given(&state.with_poll(&poll))
        .when(activate(&poll))
        .then_conflict();
}

#[test]
fn activating_a_poll_the_session_does_not_hold_is_a_conflict() {
    let stranger = single_choice_poll(&active_session(), PollStatus::Draft);
    given(&active_session()).when(activate(&stranger)).then_conflict();
}

// ---------------------------------------------------------------- closing

#[test]
fn closing_an_open_poll_emits_poll_closed_with_its_final_vote_count() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Open).with_votes(42);
    let state = state.with_poll(&poll);
    given(&state)
        .when(close(&poll))
        .then_events(&[DomainEvent::PollClosed {
            poll_id: poll.id,
            session_id: state.session.id,
            at: now(),
            final_vote_count: 42,
            reason: CloseReason::Presenter,
        }]);
}

#[test]
fn closing_a_draft_poll_is_a_conflict() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Draft);
    given(&state.with_poll(&poll)).when(close(&poll)).then_conflict();
}

#[test]
fn closing_a_closed_poll_is_a_conflict() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Closed);
    given(&state.with_poll(&poll)).when(close(&poll)).then_conflict();
}
