//! Session lifecycle: starting and ending a session.

use super::*;

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
