//! Results: what a poll's tally shows (`GET …/results` and the results of
//! `vote:accepted`): percentages of the voters, average ratings and their
//! distribution, open-text answers without their authors.

use super::*;

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
    let poll = single_choice_poll(&state, PollStatus::Open);
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
    let poll = single_choice_poll(&state, PollStatus::Open);
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
