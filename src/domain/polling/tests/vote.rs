//! Votes: when the state refuses one (a poll not open yet, a closed poll, a
//! second vote, a stranger), which refusal wins over bad data, and what an
//! accepted vote records. Bad vote data itself is in `vote_content`.

use super::*;

// ------------------------------------------------------------ the state

#[test]
fn a_vote_on_a_draft_poll_is_poll_not_active() {
    let state = active_session().with_present_participant();
    let poll = rating_poll(&state, PollStatus::Draft);
    let state = state.with_poll(&poll);
    given(&state)
        .when(vote(&state, &poll, json!({ "ratingValue": 3 })))
        .then_rejected(RejectReason::PollNotActive);
}

#[test]
fn a_vote_on_a_closed_poll_is_poll_closed() {
    let state = active_session().with_present_participant();
    let poll = rating_poll(&state, PollStatus::Closed);
    let state = state.with_poll(&poll);
    given(&state)
        .when(vote(&state, &poll, json!({ "ratingValue": 3 })))
        .then_rejected(RejectReason::PollClosed);
}

#[test]
fn a_second_vote_on_the_same_poll_is_duplicate_vote() {
    let (state, poll) = voting_on(rating_poll);
    let state = state.having_voted();
    given(&state)
        .when(vote(&state, &poll, json!({ "ratingValue": 3 })))
        .then_rejected(RejectReason::DuplicateVote);
}

#[test]
fn a_vote_from_a_participant_the_state_does_not_hold_is_a_conflict() {
    let (state, poll) = voting_on(rating_poll);
    given(&state)
        .when(Command::SubmitVote {
            vote_id: VoteId::new(),
            participant_id: ParticipantId::new(),
            poll_id: poll.id,
            vote_data: json!({ "ratingValue": 3 }),
            at: now(),
            client_submitted_at: None,
        })
        .then_conflict();
}

// ------------------------------------------- the state before the content

#[test]
fn a_closed_poll_with_garbage_data_is_poll_closed() {
    let state = active_session().with_present_participant();
    let poll = single_choice_poll(&state, PollStatus::Closed);
    let state = state.with_poll(&poll);
    given(&state)
        .when(vote(&state, &poll, json!("garbage")))
        .then_rejected(RejectReason::PollClosed);
}

#[test]
fn a_draft_poll_with_garbage_data_is_poll_not_active() {
    let state = active_session().with_present_participant();
    let poll = rating_poll(&state, PollStatus::Draft);
    let state = state.with_poll(&poll);
    given(&state)
        .when(vote(&state, &poll, json!({ "ratingValue": 99 })))
        .then_rejected(RejectReason::PollNotActive);
}

#[test]
fn a_duplicate_with_garbage_data_is_duplicate_vote() {
    let (state, poll) = voting_on(text_poll);
    let state = state.having_voted();
    given(&state)
        .when(vote(&state, &poll, json!({ "textResponse": "" })))
        .then_rejected(RejectReason::DuplicateVote);
}

// ------------------------------------------------------------ acceptance

#[test]
fn a_single_choice_vote_is_accepted_as_recorded() {
    let (state, poll) = voting_on(single_choice_poll);
    let vote_id = VoteId::new();
    given(&state)
        .when(Command::SubmitVote {
            vote_id,
            participant_id: the_participant(&state),
            poll_id: poll.id,
            vote_data: json!({ "selectedOptionIds": [option_id(&poll, 2)] }),
            at: now(),
            client_submitted_at: Some(t(59)),
        })
        .then_events(&[DomainEvent::VoteAccepted {
            vote: Vote {
                id: vote_id,
                poll_id: poll.id,
                participant_id: the_participant(&state),
                choice: Choice::Options(vec![poll.option_ids()[2]]),
                submitted_at: now(),
                client_submitted_at: Some(t(59)),
            },
            session_id: state.session.id,
        }]);
}

#[test]
fn a_multiple_choice_vote_keeps_every_option_in_order() {
    let (state, poll) = voting_on(multiple_choice_poll);
    let data = json!({ "selectedOptionIds": [option_id(&poll, 2), option_id(&poll, 0)] });
    let ids = poll.option_ids();
    given(&state)
        .when(vote(&state, &poll, data))
        .then_accepted_as(Choice::Options(vec![ids[2], ids[0]]));
}

#[test]
fn a_rating_at_either_end_of_the_scale_is_accepted() {
    let (state, poll) = voting_on(rating_poll);
    for value in [1, 5] {
        given(&state)
            .when(vote(&state, &poll, json!({ "ratingValue": value })))
            .then_accepted_as(Choice::Rating(value));
    }
}

#[test]
fn a_text_answer_is_accepted_trimmed() {
    let (state, poll) = voting_on(text_poll);
    given(&state)
        .when(vote(&state, &poll, json!({ "textResponse": "  more demos \n" })))
        .then_accepted_as(Choice::Text("more demos".into()));
}

#[test]
fn a_text_of_exactly_500_characters_is_accepted() {
    let (state, poll) = voting_on(text_poll);
    let text = "é".repeat(500);
    given(&state)
        .when(vote(
            &state,
            &poll,
            json!({ "textResponse": format!("  {text}  ") }),
        ))
        .then_accepted_as(Choice::Text(text));
}
