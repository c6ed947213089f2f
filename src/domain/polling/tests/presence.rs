//! Participants: joining, and presence (coming back, going away).

use super::*;

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

#[test]
fn leaving_an_ended_session_changes_no_attendance() {
    let state = with_participant(ended_session(), true);
    assert_eq!(mark_absent(&state).unwrap(), vec![]);
}
