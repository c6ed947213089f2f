//! Votes: which states refuse a vote, and what an accepted vote records.

use super::*;

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
