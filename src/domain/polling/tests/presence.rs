//! Participants: joining a session, and presence afterwards: a participant
//! whose streams all closed is counted out after the grace period, and
//! counted in again when it comes back; attendance freezes when the session
//! ends.

use super::*;

// ---------------------------------------------------------------- joining

#[test]
fn joining_counts_the_new_participant() {
    let state = active_session().with_participant_count(4);
    let id = ParticipantId::new();
    given(&state)
        .when(join(id, Some("Grace")))
        .then_events(&[DomainEvent::ParticipantJoined {
            participant: Participant {
                id,
                session_id: state.session.id,
                display_name: Some("Grace".into()),
                joined_at: now(),
                present: true,
            },
            at: now(),
            participant_count: 5,
        }]);
}

#[test]
fn joining_a_session_that_has_not_started_is_allowed() {
    let events = given(&draft_session())
        .when(join(ParticipantId::new(), Some("Grace")))
        .events();
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
    given(&ended_session())
        .when(join(ParticipantId::new(), Some("Grace")))
        .then_conflict();
}

// --------------------------------------------------------------- presence

#[test]
fn an_absent_participant_coming_back_is_joined_again() {
    let state = active_session().with_absent_participant();
    let before = state.participant.clone().unwrap();
    given(&state)
        .when(mark_present(&state))
        .then_events(&[DomainEvent::ParticipantJoined {
            participant: Participant {
                present: true,
                ..before
            },
            at: now(),
            participant_count: 3,
        }]);
}

#[test]
fn a_participant_already_present_is_not_joined_twice() {
    let state = active_session().with_present_participant();
    given(&state).when(mark_present(&state)).then_nothing();
}

#[test]
fn coming_back_to_an_ended_session_changes_nothing() {
    let state = ended_session().with_absent_participant();
    given(&state).when(mark_present(&state)).then_nothing();
}

#[test]
fn a_present_participant_going_away_is_counted_out() {
    let state = active_session().with_present_participant();
    given(&state)
        .when(mark_absent(&state))
        .then_events(&[DomainEvent::ParticipantDisconnected {
            participant_id: the_participant(&state),
            session_id: state.session.id,
            at: now(),
            participant_count: 2,
        }]);
}

#[test]
fn the_participant_count_never_drops_below_zero() {
    let state = active_session()
        .with_present_participant()
        .with_participant_count(0);
    let events = given(&state).when(mark_absent(&state)).events();
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
    let state = active_session().with_absent_participant();
    given(&state).when(mark_absent(&state)).then_nothing();
}

#[test]
fn leaving_an_ended_session_changes_no_attendance() {
    let state = ended_session().with_present_participant();
    given(&state).when(mark_absent(&state)).then_nothing();
}

#[test]
fn presence_of_a_participant_the_state_does_not_hold_is_a_conflict() {
    let state = active_session().with_present_participant();
    let stranger = ParticipantId::new();
    given(&state)
        .when(Command::MarkPresent {
            participant_id: stranger,
            at: now(),
        })
        .then_conflict();
    given(&state)
        .when(Command::MarkAbsent {
            participant_id: stranger,
            at: now(),
        })
        .then_conflict();
}
