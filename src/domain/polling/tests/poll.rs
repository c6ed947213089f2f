//! Poll lifecycle: creating, activating and closing polls.

use super::*;

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
