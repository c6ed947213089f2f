//! Results visibility and timed polls: who sees a poll's results when,
//! what reveals them, and the server's own close of a timed poll.

use super::*;
use crate::domain::event::TraceId;
use crate::domain::polling::events::{results_broadcast, RevealReason};
use crate::domain::polling::input::PollDuration;
use crate::domain::polling::model::Viewer;

fn withheld(poll: Poll, visibility: ResultsVisibility) -> Poll {
    Poll {
        results_visibility: visibility,
        ..poll
    }
}

fn reveal(poll: &Poll) -> Command {
    Command::RevealResults {
        poll_id: poll.id,
        at: now(),
    }
}

// ---------------------------------------------------------------- who sees

#[test]
fn each_visibility_shows_the_results_to_whom_it_says() {
    use ResultsVisibility::*;
    let voter = Viewer::Participant { voted: true };
    let waiting = Viewer::Participant { voted: false };
    // visibility, revealed, [presenter, voter, waiting, audience]
    let table = [
        (Always, false, [true, true, true, true]),
        (AfterVote, false, [true, true, false, false]),
        (AfterVote, true, [true, true, true, true]),
        (AfterClose, false, [true, false, false, false]),
        (AfterClose, true, [true, true, true, true]),
        (Manual, false, [true, false, false, false]),
        (Manual, true, [true, true, true, true]),
    ];
    let state = active_session();
    for (visibility, revealed, expected) in table {
        let mut poll = withheld(single_choice_poll(&state, PollStatus::Open), visibility);
        poll.results_revealed_at = revealed.then(now);
        let seen = [Viewer::Presenter, voter, waiting, Viewer::Audience].map(|v| poll.results_visible_to(v));
        assert_eq!(seen, expected, "{visibility:?}, revealed: {revealed}");
    }
}

#[test]
fn withheld_results_reach_the_presenter_topic_and_only_a_count_the_session() {
    let state = active_session();
    let poll = withheld(
        single_choice_poll(&state, PollStatus::Open),
        ResultsVisibility::Manual,
    );
    let results = tally_of(&poll, &[2, 1, 0]).results_json(&poll);
    let events = results_broadcast(&poll, &results, None, &TraceId::generate());
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            format!("presenter:{}", state.session.id),
            format!("session:{}", state.session.id)
        ]
    );
    let public: Value = serde_json::from_str(events[1].payload.get()).unwrap();
    assert_eq!(public["currentVoteCount"], 3);
    assert_eq!(public["resultsWithheld"], true);
    for field in [
        "voteBreakdown",
        "averageRating",
        "ratingDistribution",
        "textResponses",
    ] {
        assert!(public.get(field).is_none(), "{field} leaked: {public}");
    }
    let private: Value = serde_json::from_str(events[0].payload.get()).unwrap();
    assert_eq!(private["voteBreakdown"][0]["voteCount"], 2);
}

// --------------------------------------------------------------- revealing

#[test]
fn revealing_a_manual_poll_announces_it() {
    let state = active_session();
    let poll = withheld(
        single_choice_poll(&state, PollStatus::Open),
        ResultsVisibility::Manual,
    );
    let state = state.with_poll(&poll);
    given(&state)
        .when(reveal(&poll))
        .then_events(&[DomainEvent::PollResultsRevealed {
            poll_id: poll.id,
            session_id: state.session.id,
            at: now(),
            reason: RevealReason::Presenter,
        }]);
}

#[test]
fn results_already_public_or_a_draft_poll_cannot_be_revealed() {
    let state = active_session();
    let public = single_choice_poll(&state, PollStatus::Open);
    given(&state.clone().with_poll(&public))
        .when(reveal(&public))
        .then_conflict();
    let mut shown = withheld(
        single_choice_poll(&state, PollStatus::Closed),
        ResultsVisibility::Manual,
    );
    shown.results_revealed_at = Some(t(30));
    given(&state.clone().with_poll(&shown))
        .when(reveal(&shown))
        .then_conflict();
    let draft = withheld(
        single_choice_poll(&state, PollStatus::Draft),
        ResultsVisibility::Manual,
    );
    given(&state.with_poll(&draft))
        .when(reveal(&draft))
        .then_conflict();
}

#[test]
fn closing_an_after_close_poll_reveals_its_results_but_not_a_manual_one() {
    let state = active_session();
    for (visibility, reveals) in [
        (ResultsVisibility::AfterClose, true),
        (ResultsVisibility::AfterVote, true),
        (ResultsVisibility::Manual, false),
        (ResultsVisibility::Always, false),
    ] {
        let poll = withheld(rating_poll(&state, PollStatus::Open), visibility).with_votes(4);
        let state = state.clone().with_poll(&poll);
        let events = given(&state).when(close(&poll)).events();
        let revealed = events.iter().any(|e| {
            matches!(
                e,
                DomainEvent::PollResultsRevealed {
                    reason: RevealReason::Closed,
                    ..
                }
            )
        });
        assert_eq!(revealed, reveals, "{visibility:?}: {events:?}");
        assert!(matches!(events[0], DomainEvent::PollClosed { .. }));
    }
}

// ------------------------------------------------------------------ timers

#[test]
fn a_timed_activation_says_when_the_poll_closes() {
    let state = active_session();
    let poll = single_choice_poll(&state, PollStatus::Draft);
    let state = state.with_poll(&poll);
    let duration = PollDuration::parse(90).unwrap();
    let events = given(&state)
        .when(Command::ActivatePoll {
            poll_id: poll.id,
            at: now(),
            duration: Some(duration),
        })
        .events();
    let DomainEvent::PollActivated { closes_at, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(*closes_at, Some(now() + chrono::Duration::seconds(90)));
}

#[test]
fn durations_outside_five_seconds_to_an_hour_are_refused() {
    assert!(PollDuration::parse(4).is_err());
    assert!(PollDuration::parse(-1).is_err());
    assert!(PollDuration::parse(3601).is_err());
    assert_eq!(PollDuration::parse(5).unwrap().seconds(), 5);
    assert_eq!(PollDuration::parse(3600).unwrap().seconds(), 3600);
}

fn close_by_timer(poll: &Poll, at: DateTime<Utc>) -> Command {
    Command::ClosePoll {
        poll_id: poll.id,
        at,
        reason: CloseReason::Timer,
    }
}

#[test]
fn the_timer_closes_a_poll_only_once_its_time_has_come() {
    let state = active_session();
    let mut poll = single_choice_poll(&state, PollStatus::Open).with_votes(2);
    poll.closes_at = Some(now());
    let state = state.with_poll(&poll);
    given(&state)
        .when(close_by_timer(&poll, now() - chrono::Duration::milliseconds(1)))
        .then_conflict();
    given(&state)
        .when(close_by_timer(&poll, now()))
        .then_events(&[DomainEvent::PollClosed {
            poll_id: poll.id,
            session_id: state.session.id,
            at: now(),
            final_vote_count: 2,
            reason: CloseReason::Timer,
        }]);
}

#[test]
fn the_timer_never_closes_an_untimed_or_already_closed_poll() {
    let state = active_session();
    let untimed = single_choice_poll(&state, PollStatus::Open);
    given(&state.clone().with_poll(&untimed))
        .when(close_by_timer(&untimed, now()))
        .then_conflict();
    // A second node's timer, after the first closed it: refused, so
    // `poll:closed` is written once.
    let mut closed = single_choice_poll(&state, PollStatus::Closed);
    closed.closes_at = Some(t(20));
    given(&state.with_poll(&closed))
        .when(close_by_timer(&closed, now()))
        .then_conflict();
}

// ------------------------------------------------------- hiding answers

fn hide(poll: &Poll, answer: &str, already_hidden: bool) -> Command {
    Command::HideAnswer {
        poll_id: poll.id,
        answer: answer.into(),
        already_hidden,
        at: now(),
    }
}

#[test]
fn the_presenter_hides_an_open_text_answer_once() {
    let state = active_session();
    let poll = text_poll(&state, PollStatus::Open);
    let state = state.with_poll(&poll);
    given(&state)
        .when(hide(&poll, "Rude word", false))
        .then_events(&[DomainEvent::AnswerHidden {
            poll_id: poll.id,
            session_id: state.session.id,
            answer: "Rude word".into(),
            at: now(),
        }]);
    given(&state)
        .when(hide(&poll, "rude  WORD", true))
        .then_conflict();
}

#[test]
fn only_open_text_answers_can_be_hidden() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Open);
    given(&state.with_poll(&poll))
        .when(hide(&poll, "4", false))
        .then_conflict();
}

#[test]
fn answers_differing_in_case_or_spacing_are_one_answer() {
    use crate::domain::polling::model::{answer_key, group_answers};
    assert_eq!(answer_key("  Team \t Spirit "), "team spirit");
    let groups = group_answers(["Speed", "focus", "FOCUS ", "speed", "Focus", "calm"], 2);
    let shown: Vec<(&str, i64)> = groups.iter().map(|g| (g.text.as_str(), g.count)).collect();
    assert_eq!(
        shown,
        [("focus", 3), ("Speed", 2)],
        "first spelling, most frequent first, capped"
    );
}
