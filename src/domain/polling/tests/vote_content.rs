//! Vote content: every way a vote's data can be wrong for its poll, each
//! refused with its content reason (`invalid_option`, `invalid_rating`,
//! `invalid_text`), and which reasons count as content problems at all.

use super::*;
use crate::domain::polling::input::parse_choice;

// ---------------------------------------------------------------- options

#[test]
fn an_unknown_option_is_invalid_option() {
    let (state, poll) = voting_on(single_choice_poll);
    let data = json!({ "selectedOptionIds": [OptionId::new().to_string()] });
    given(&state)
        .when(vote(&state, &poll, data))
        .then_rejected(RejectReason::InvalidOption);
}

#[test]
fn an_option_of_another_poll_is_invalid_option() {
    let (state, poll) = voting_on(single_choice_poll);
    let other = single_choice_poll(&state, PollStatus::Open);
    let data = json!({ "selectedOptionIds": [option_id(&other, 0)] });
    given(&state)
        .when(vote(&state, &poll, data))
        .then_rejected(RejectReason::InvalidOption);
}

#[test]
fn an_empty_selection_is_invalid_option() {
    let (state, poll) = voting_on(multiple_choice_poll);
    let data = json!({ "selectedOptionIds": [] });
    given(&state)
        .when(vote(&state, &poll, data))
        .then_rejected(RejectReason::InvalidOption);
}

#[test]
fn two_options_on_a_single_choice_poll_is_invalid_option() {
    let (state, poll) = voting_on(single_choice_poll);
    let data = json!({ "selectedOptionIds": [option_id(&poll, 0), option_id(&poll, 1)] });
    given(&state)
        .when(vote(&state, &poll, data))
        .then_rejected(RejectReason::InvalidOption);
}

#[test]
fn the_same_option_twice_is_invalid_option() {
    let (state, poll) = voting_on(multiple_choice_poll);
    let data = json!({ "selectedOptionIds": [option_id(&poll, 1), option_id(&poll, 1)] });
    given(&state)
        .when(vote(&state, &poll, data))
        .then_rejected(RejectReason::InvalidOption);
}

#[test]
fn missing_or_garbage_option_data_is_invalid_option() {
    let (state, poll) = voting_on(multiple_choice_poll);
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
        given(&state)
            .when(vote(&state, &poll, data))
            .then_rejected(RejectReason::InvalidOption);
    }
}

// ---------------------------------------------------------------- ratings

#[test]
fn a_rating_below_the_scale_is_invalid_rating() {
    let (state, poll) = voting_on(rating_poll);
    given(&state)
        .when(vote(&state, &poll, json!({ "ratingValue": 0 })))
        .then_rejected(RejectReason::InvalidRating);
}

#[test]
fn a_rating_above_the_scale_is_invalid_rating() {
    let (state, poll) = voting_on(rating_poll);
    given(&state)
        .when(vote(&state, &poll, json!({ "ratingValue": 6 })))
        .then_rejected(RejectReason::InvalidRating);
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
        given(&state)
            .when(vote(&state, &poll, data))
            .then_rejected(RejectReason::InvalidRating);
    }
}

// ------------------------------------------------------------------ texts

#[test]
fn an_empty_or_blank_text_is_invalid_text() {
    let (state, poll) = voting_on(text_poll);
    for text in ["", "   ", "\n\t "] {
        given(&state)
            .when(vote(&state, &poll, json!({ "textResponse": text })))
            .then_rejected(RejectReason::InvalidText);
    }
}

#[test]
fn a_text_over_500_characters_is_invalid_text() {
    let (state, poll) = voting_on(text_poll);
    let data = json!({ "textResponse": "é".repeat(501) });
    given(&state)
        .when(vote(&state, &poll, data))
        .then_rejected(RejectReason::InvalidText);
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
        given(&state)
            .when(vote(&state, &poll, data))
            .then_rejected(RejectReason::InvalidText);
    }
}

// ---------------------------------------------------------------- reasons

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
