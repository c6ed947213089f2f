//! Parsing client input ("parse, don't validate"): poll definitions, and
//! the required texts and display names of sessions and participants.
//! Plain input → value or field error; no rules involved.

use super::*;
use crate::domain::polling::input::{display_name, required_text};

/// The field a refused definition names.
fn field_of(input: Value) -> &'static str {
    parse_poll(input).expect_err("the definition is refused").field
}

/// A multiple-choice definition with `n` options.
fn choice_input(n: usize) -> Value {
    let texts: Vec<String> = (1..=n).map(|i| format!("Option {i}")).collect();
    json!({ "question": "Pick one", "pollType": "multiple_choice", "options": texts })
}

// ------------------------------------------------------- poll definitions

#[test]
fn a_choice_poll_needs_at_least_two_options() {
    assert_eq!(field_of(choice_input(1)), "options");
    assert_eq!(field_of(choice_input(0)), "options");
    assert!(parse_poll(choice_input(2)).is_ok());
}

#[test]
fn a_choice_poll_has_at_most_twenty_options() {
    assert!(parse_poll(choice_input(20)).is_ok());
    assert_eq!(field_of(choice_input(21)), "options");
}

#[test]
fn a_choice_poll_without_options_is_refused() {
    assert_eq!(
        field_of(json!({ "question": "Pick", "pollType": "multiple_choice" })),
        "options"
    );
}

#[test]
fn a_blank_option_text_is_refused() {
    let input = json!({ "question": "Pick", "pollType": "multiple_choice", "options": ["Yes", "  "] });
    assert_eq!(field_of(input), "options");
}

#[test]
fn options_are_trimmed_numbered_from_one_and_given_distinct_ids() {
    let input = json!({ "question": "Pick", "pollType": "multiple_choice", "options": [" Yes ", "No"] });
    let PollKind::MultipleChoice {
        options,
        allow_multiple,
    } = parse_poll(input).unwrap().kind
    else {
        panic!("expected a multiple choice poll");
    };
    assert!(!allow_multiple);
    let shown: Vec<(&str, i32)> = options
        .iter()
        .map(|o| (o.text.as_str(), o.sequence_order))
        .collect();
    assert_eq!(shown, vec![("Yes", 1), ("No", 2)]);
    assert_ne!(options[0].id, options[1].id);
}

#[test]
fn allow_multiple_is_kept_for_a_choice_poll() {
    let mut input = choice_input(3);
    input["allowMultiple"] = json!(true);
    let kind = parse_poll(input).unwrap().kind;
    assert!(matches!(
        kind,
        PollKind::MultipleChoice {
            allow_multiple: true,
            ..
        }
    ));
}

#[test]
fn a_rating_poll_defaults_to_one_to_five() {
    let draft = parse_poll(json!({ "question": "Rate", "pollType": "rating_scale" })).unwrap();
    assert_eq!(draft.kind, PollKind::RatingScale { min: 1, max: 5 });
}

#[test]
fn a_rating_poll_keeps_its_own_scale() {
    let input = json!({ "question": "Rate", "pollType": "rating_scale", "minRating": 0, "maxRating": 10 });
    assert_eq!(
        parse_poll(input).unwrap().kind,
        PollKind::RatingScale { min: 0, max: 10 }
    );
}

#[test]
fn a_rating_poll_whose_min_is_not_below_its_max_is_refused() {
    for (min, max) in [(5, 5), (7, 3)] {
        let input =
            json!({ "question": "Rate", "pollType": "rating_scale", "minRating": min, "maxRating": max });
        assert_eq!(field_of(input), "minRating", "{min}..{max}");
    }
    // Only a minimum given: the default maximum of 5 applies.
    let input = json!({ "question": "Rate", "pollType": "rating_scale", "minRating": 6 });
    assert_eq!(field_of(input), "minRating");
}

#[test]
fn options_on_a_rating_poll_are_refused() {
    let input = json!({ "question": "Rate", "pollType": "rating_scale", "options": ["a", "b"] });
    assert_eq!(field_of(input), "options");
}

#[test]
fn allow_multiple_on_a_rating_poll_is_refused() {
    let input = json!({ "question": "Rate", "pollType": "rating_scale", "allowMultiple": true });
    assert_eq!(field_of(input), "allowMultiple");
}

#[test]
fn ratings_on_a_choice_poll_are_refused() {
    let mut input = choice_input(2);
    input["maxRating"] = json!(5);
    assert_eq!(field_of(input), "minRating");
}

#[test]
fn an_open_text_poll_has_neither_options_nor_ratings() {
    assert_eq!(
        parse_poll(json!({ "question": "Why?", "pollType": "open_text" }))
            .unwrap()
            .kind,
        PollKind::OpenText
    );
    let with_options = json!({ "question": "Why?", "pollType": "open_text", "options": ["a", "b"] });
    assert_eq!(field_of(with_options), "options");
    let with_rating = json!({ "question": "Why?", "pollType": "open_text", "minRating": 1 });
    assert_eq!(field_of(with_rating), "minRating");
}

#[test]
fn an_empty_or_blank_question_is_refused() {
    for question in ["", "   ", "\n"] {
        assert_eq!(
            field_of(json!({ "question": question, "pollType": "open_text" })),
            "question"
        );
    }
}

#[test]
fn a_question_over_500_characters_is_refused() {
    let input = json!({ "question": "é".repeat(501), "pollType": "open_text" });
    assert_eq!(field_of(input), "question");
}

#[test]
fn a_question_of_500_characters_is_accepted_trimmed() {
    let question = "é".repeat(500);
    let draft = parse_poll(json!({ "question": format!(" {question} "), "pollType": "open_text" })).unwrap();
    assert_eq!(draft.question, question);
}

#[test]
fn an_unknown_poll_type_is_refused() {
    for poll_type in ["yes_no", "", "Multiple_Choice"] {
        assert_eq!(
            field_of(json!({ "question": "Q", "pollType": poll_type })),
            "pollType"
        );
    }
}

#[test]
fn a_poll_is_anonymous_unless_said_otherwise() {
    assert!(
        parse_poll(json!({ "question": "Q", "pollType": "open_text" }))
            .unwrap()
            .is_anonymous
    );
    let named = json!({ "question": "Q", "pollType": "open_text", "isAnonymous": false });
    assert!(!parse_poll(named).unwrap().is_anonymous);
}

#[test]
fn a_poll_input_with_an_unknown_field_does_not_parse() {
    let input = json!({ "question": "Q", "pollType": "open_text", "colour": "red" });
    assert!(serde_json::from_value::<PollInput>(input).is_err());
}

#[test]
fn required_text_trims_and_names_its_field() {
    assert_eq!(required_text("title", "  Town hall ", 200).unwrap(), "Town hall");
    let empty = required_text("title", " \t ", 200).unwrap_err();
    assert_eq!(empty.field, "title");
    assert!(empty.to_string().starts_with("title: "), "{empty}");
    assert!(required_text("title", &"x".repeat(200), 200).is_ok());
    assert_eq!(
        required_text("title", &"x".repeat(201), 200).unwrap_err().field,
        "title"
    );
}

#[test]
fn a_blank_display_name_means_none() {
    assert_eq!(display_name(None).unwrap(), None);
    assert_eq!(display_name(Some("   ")).unwrap(), None);
    assert_eq!(display_name(Some(" Ada ")).unwrap(), Some("Ada".into()));
}

#[test]
fn a_display_name_over_80_characters_is_refused() {
    assert!(display_name(Some(&"n".repeat(80))).is_ok());
    assert_eq!(
        display_name(Some(&"n".repeat(81))).unwrap_err().field,
        "displayName"
    );
}
