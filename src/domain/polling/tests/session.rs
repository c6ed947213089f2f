//! Session lifecycle: a draft session starts, an active session ends
//! (closing its open poll first), and every other transition is a conflict.

use super::*;

#[test]
fn starting_a_draft_session_emits_session_started_with_the_participant_count() {
    let state = draft_session().with_participant_count(4);
    given(&state)
        .when(start_session())
        .then_events(&[DomainEvent::SessionStarted {
            session_id: state.session.id,
            at: now(),
            participant_count: 4,
        }]);
}

#[test]
fn starting_an_active_session_is_a_conflict() {
    given(&active_session()).when(start_session()).then_conflict();
}

#[test]
fn starting_an_ended_session_is_a_conflict() {
    given(&ended_session()).when(start_session()).then_conflict();
}

#[test]
fn ending_an_active_session_without_an_open_poll_emits_only_session_ended() {
    let state = active_session().with_participant_count(7);
    given(&state)
        .when(end_session())
        .then_events(&[DomainEvent::SessionEnded {
            session_id: state.session.id,
            at: now(),
            final_participant_count: 7,
        }]);
}

#[test]
fn ending_a_session_closes_its_open_poll_first() {
    let state = active_session();
    let open = rating_poll(&state, PollStatus::Open).with_votes(12);
    let closed = rating_poll(&state, PollStatus::Closed);
    let state = state
        .with_poll(&closed)
        .with_poll(&open)
        .with_participant_count(9);
    given(&state).when(end_session()).then_events(&[
        DomainEvent::PollClosed {
            poll_id: open.id,
            session_id: state.session.id,
            at: now(),
            final_vote_count: 12,
            reason: CloseReason::SessionEnded,
        },
        DomainEvent::SessionEnded {
            session_id: state.session.id,
            at: now(),
            final_participant_count: 9,
        },
    ]);
}

#[test]
fn ending_a_draft_session_is_refused() {
    given(&draft_session()).when(end_session()).then_conflict();
}

#[test]
fn ending_an_ended_session_is_a_conflict() {
    given(&ended_session()).when(end_session()).then_conflict();
}
