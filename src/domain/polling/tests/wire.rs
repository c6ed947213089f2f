//! The events' wire form: the topic, type and payload each domain event is
//! stored and streamed with, the voter's own confirmation and rejection,
//! and the results broadcast that never names a voter.

use super::*;
use crate::domain::event::{NewEvent, TraceId};
use crate::domain::polling::events::{results_broadcast, vote_confirmation, vote_rejected};

fn trace() -> TraceId {
    TraceId::from_stored("4bf92f3577b34da6a3ce929d0e0e4736".into())
}

fn payload(event: &NewEvent) -> Value {
    serde_json::from_str(event.payload.get()).unwrap()
}

/// The event as stored: its topic, its type and its payload.
fn wire(event: &DomainEvent) -> (String, String, Value) {
    let stored = event.to_new_event(&trace(), None);
    (
        stored.topic.as_str().to_string(),
        stored.event_type.as_str().to_string(),
        payload(&stored),
    )
}

fn assert_has_fields(payload: &Value, fields: &[&str]) {
    for field in fields {
        assert!(payload.get(*field).is_some(), "missing {field} in {payload}");
    }
}

// ------------------------------------------------------------- wire form

#[test]
fn session_created_carries_the_session_fields() {
    let session = session(SessionStatus::Draft);
    let (topic, kind, p) = wire(&DomainEvent::SessionCreated(session.clone()));
    assert_eq!(topic, format!("session:{}", session.id));
    assert_eq!(kind, "session:created");
    assert_eq!(p["sessionId"], session.id.to_string());
    assert_eq!(p["title"], "All hands");
    assert_eq!(p["slug"], "ABC123");
    assert_eq!(p["presenterId"], session.presenter_id.to_string());
    assert_eq!(p["status"], "draft");
    assert_eq!(p["createdAt"], "2027-01-15T08:00:00.000Z");
}

#[test]
fn session_started_carries_status_time_and_count() {
    let id = SessionId::new();
    let event = DomainEvent::SessionStarted {
        session_id: id,
        at: now(),
        participant_count: 4,
    };
    let (topic, kind, p) = wire(&event);
    assert_eq!(
        (topic, kind),
        (format!("session:{id}"), "session:started".to_string())
    );
    assert_eq!(
        p,
        json!({ "sessionId": id.to_string(), "status": "active", "startedAt": NOW_TEXT, "participantCount": 4 })
    );
}

#[test]
fn session_ended_carries_the_final_participant_count() {
    let id = SessionId::new();
    let event = DomainEvent::SessionEnded {
        session_id: id,
        at: now(),
        final_participant_count: 9,
    };
    let (topic, kind, p) = wire(&event);
    assert_eq!(
        (topic, kind),
        (format!("session:{id}"), "session:ended".to_string())
    );
    assert_eq!(
        p,
        json!({ "sessionId": id.to_string(), "status": "ended", "endedAt": NOW_TEXT, "finalParticipantCount": 9 })
    );
}

#[test]
fn poll_created_carries_the_whole_definition() {
    let state = active_session();
    let poll = multiple_choice_poll(&state, PollStatus::Draft);
    let (topic, kind, p) = wire(&DomainEvent::PollCreated(poll.clone()));
    assert_eq!(
        (topic, kind),
        (
            format!("session:{}", state.session.id),
            "poll:created".to_string()
        )
    );
    assert_has_fields(
        &p,
        &[
            "pollId",
            "sessionId",
            "question",
            "pollType",
            "allowMultiple",
            "isAnonymous",
            "options",
            "minRating",
            "maxRating",
            "sequenceOrder",
            "createdAt",
        ],
    );
    assert_eq!(p["pollId"], poll.id.to_string());
    assert_eq!(p["sessionId"], state.session.id.to_string());
    assert_eq!(p["pollType"], "multiple_choice");
    assert_eq!(p["allowMultiple"], true);
    assert_eq!(p["isAnonymous"], true);
    assert_eq!(p["sequenceOrder"], 1);
    assert_eq!(p["createdAt"], "2027-01-15T08:00:10.000Z");
    assert_eq!(
        p["options"][1],
        json!({ "optionId": option_id(&poll, 1), "optionText": "Option 2", "sequenceOrder": 2 })
    );
    assert_eq!(p["options"].as_array().unwrap().len(), 3);
}

#[test]
fn poll_created_for_a_rating_poll_carries_its_scale() {
    let state = active_session();
    let poll = poll(
        &state,
        PollKind::RatingScale { min: 0, max: 10 },
        PollStatus::Draft,
    );
    let (_, _, p) = wire(&DomainEvent::PollCreated(poll));
    assert_eq!(
        (
            p["pollType"].clone(),
            p["minRating"].clone(),
            p["maxRating"].clone()
        ),
        (json!("rating_scale"), json!(0), json!(10))
    );
    assert_eq!(p["options"], json!([]));
}

#[test]
fn poll_activated_and_poll_closed_carry_their_fields() {
    let (session_id, poll_id) = (SessionId::new(), PollId::new());
    let activated = DomainEvent::PollActivated {
        poll_id,
        session_id,
        question: "Q?".into(),
        at: now(),
        closes_at: None,
    };
    let (topic, kind, p) = wire(&activated);
    assert_eq!(
        (topic.as_str(), kind.as_str()),
        (format!("session:{session_id}").as_str(), "poll:activated")
    );
    assert_eq!(
        p,
        json!({ "pollId": poll_id.to_string(), "sessionId": session_id.to_string(), "question": "Q?", "activatedAt": NOW_TEXT, "closesAt": null })
    );
    let closed = DomainEvent::PollClosed {
        poll_id,
        session_id,
        at: now(),
        final_vote_count: 3,
        reason: CloseReason::Timer,
    };
    let (topic, kind, p) = wire(&closed);
    assert_eq!(
        (topic.as_str(), kind.as_str()),
        (format!("session:{session_id}").as_str(), "poll:closed")
    );
    assert_eq!(
        p,
        json!({ "pollId": poll_id.to_string(), "sessionId": session_id.to_string(), "closedAt": NOW_TEXT, "finalVoteCount": 3, "reason": "timer" })
    );
}

#[test]
fn participant_joined_and_disconnected_carry_their_fields() {
    let state = active_session().with_present_participant();
    let who = state.participant.clone().unwrap();
    let joined = DomainEvent::ParticipantJoined {
        participant: who.clone(),
        at: now(),
        participant_count: 3,
    };
    let (topic, kind, p) = wire(&joined);
    assert_eq!(
        (topic, kind),
        (
            format!("session:{}", state.session.id),
            "participant:joined".to_string()
        )
    );
    assert_eq!(
        p,
        json!({
            "participantId": who.id.to_string(), "sessionId": state.session.id.to_string(),
            "displayName": "Ada", "joinedAt": NOW_TEXT, "participantCount": 3
        })
    );
    let gone = DomainEvent::ParticipantDisconnected {
        participant_id: who.id,
        session_id: state.session.id,
        at: now(),
        participant_count: 2,
    };
    let (topic, kind, p) = wire(&gone);
    assert_eq!(
        (topic, kind),
        (
            format!("session:{}", state.session.id),
            "participant:disconnected".to_string()
        )
    );
    assert_eq!(
        p,
        json!({
            "participantId": who.id.to_string(), "sessionId": state.session.id.to_string(),
            "disconnectedAt": NOW_TEXT, "participantCount": 2
        })
    );
}

#[test]
fn an_anonymous_joiner_has_a_null_display_name() {
    let events = given(&active_session())
        .when(join(ParticipantId::new(), None))
        .events();
    let (_, _, p) = wire(&events[0]);
    assert_eq!(p["displayName"], Value::Null);
}

#[test]
fn the_vote_confirmation_goes_to_the_voter_with_its_identity_and_results() {
    let (state, poll) = voting_on(single_choice_poll);
    let events = given(&state)
        .when(vote(
            &state,
            &poll,
            json!({ "selectedOptionIds": [option_id(&poll, 0)] }),
        ))
        .events();
    let DomainEvent::VoteAccepted { vote, .. } = &events[0] else {
        panic!("{events:?}")
    };
    let results = tally_of(&poll, &[1, 0, 0]).results_json(&poll);
    let stored = events[0].to_new_event(&trace(), Some(&results));
    let voter = the_participant(&state);
    assert_eq!(stored.topic.as_str(), format!("participant:{voter}"));
    assert_eq!(stored.event_type.as_str(), "vote:accepted");
    let p = payload(&stored);
    assert_has_fields(
        &p,
        &[
            "voteId",
            "pollId",
            "sessionId",
            "participantId",
            "submittedAt",
            "currentVoteCount",
            "voteBreakdown",
            "averageRating",
            "ratingDistribution",
        ],
    );
    assert_eq!(p["voteId"], vote.id.to_string());
    assert_eq!(p["pollId"], poll.id.to_string());
    assert_eq!(p["sessionId"], state.session.id.to_string());
    assert_eq!(p["participantId"], voter.to_string());
    assert_eq!(p["submittedAt"], NOW_TEXT);
    assert_eq!(p["currentVoteCount"], 1);
    assert_eq!(p, vote_confirmation(vote, state.session.id, Some(&results)));
}

#[test]
fn the_results_broadcast_never_names_the_voter() {
    for anonymous in [true, false] {
        for make in [
            single_choice_poll as fn(&State, PollStatus) -> Poll,
            rating_poll,
            text_poll,
        ] {
            let (state, mut poll) = voting_on(make);
            poll.is_anonymous = anonymous;
            let data = match &poll.kind {
                PollKind::MultipleChoice { .. } => json!({ "selectedOptionIds": [option_id(&poll, 0)] }),
                PollKind::RatingScale { .. } => json!({ "ratingValue": 4 }),
                PollKind::OpenText => json!({ "textResponse": "hi" }),
            };
            let events = given(&state).when(vote(&state, &poll, data)).events();
            let DomainEvent::VoteAccepted { vote, .. } = &events[0] else {
                panic!("{events:?}")
            };
            let mut tally = tally_of(&poll, &[1, 0, 0]);
            tally.texts = vec!["hi".into()];
            let results = tally.results_json(&poll);
            let broadcasts = results_broadcast(&poll, &results, Some((vote.id.to_string(), now())), &trace());
            assert_eq!(
                broadcasts.len(),
                1,
                "public results: one frame, on the session topic"
            );
            let broadcast = &broadcasts[0];
            assert_eq!(broadcast.topic.as_str(), format!("session:{}", state.session.id));
            assert_eq!(broadcast.event_type.as_str(), "vote:accepted");
            let text = broadcast.payload.get();
            let voter = the_participant(&state).to_string();
            assert!(!text.contains(&voter), "voter id in {text}");
            assert!(!text.contains("participantId"), "participantId key in {text}");
            let p = payload(broadcast);
            assert_has_fields(
                &p,
                &[
                    "voteId",
                    "pollId",
                    "sessionId",
                    "submittedAt",
                    "currentVoteCount",
                    "voteBreakdown",
                    "averageRating",
                    "ratingDistribution",
                ],
            );
            assert_eq!(p["sessionId"], state.session.id.to_string());
            assert_eq!(p["submittedAt"], NOW_TEXT);
            // The unicast confirmation of the same vote does name the voter.
            let unicast = events[0].to_new_event(&trace(), Some(&results));
            assert!(unicast.payload.get().contains(&voter));
        }
    }
}

#[test]
fn a_results_broadcast_with_no_vote_yet_has_null_vote_fields() {
    let state = active_session();
    let poll = rating_poll(&state, PollStatus::Open);
    let results = rating_tally(&[]).results_json(&poll);
    let p = payload(&results_broadcast(&poll, &results, None, &trace())[0]);
    assert_eq!(
        (p["voteId"].clone(), p["submittedAt"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(p["currentVoteCount"], 0);
}

#[test]
fn vote_rejected_goes_to_the_voter_with_its_reason() {
    let (session_id, poll_id, voter) = (SessionId::new(), PollId::new(), ParticipantId::new());
    let event = vote_rejected(
        poll_id,
        session_id,
        voter,
        RejectReason::PollClosed,
        "the poll is closed",
        now(),
        &trace(),
    );
    assert_eq!(event.topic.as_str(), format!("participant:{voter}"));
    assert_eq!(event.event_type.as_str(), "vote:rejected");
    assert_eq!(
        payload(&event),
        json!({
            "pollId": poll_id.to_string(), "sessionId": session_id.to_string(),
            "participantId": voter.to_string(), "reason": "poll_closed",
            "message": "the poll is closed", "timestamp": NOW_TEXT
        })
    );
}

#[test]
fn every_event_payload_carries_the_session_id_and_the_trace_id() {
    let state = active_session().with_present_participant();
    let sid = state.session.id;
    let poll = rating_poll(&state, PollStatus::Open);
    let voter = the_participant(&state);
    let events = vec![
        DomainEvent::SessionCreated(state.session.clone()),
        DomainEvent::SessionStarted {
            session_id: sid,
            at: now(),
            participant_count: 0,
        },
        DomainEvent::SessionEnded {
            session_id: sid,
            at: now(),
            final_participant_count: 0,
        },
        DomainEvent::PollCreated(poll.clone()),
        DomainEvent::PollActivated {
            poll_id: poll.id,
            session_id: sid,
            question: "Q".into(),
            at: now(),
            closes_at: None,
        },
        DomainEvent::PollClosed {
            poll_id: poll.id,
            session_id: sid,
            at: now(),
            final_vote_count: 0,
            reason: CloseReason::Presenter,
        },
        DomainEvent::VoteAccepted {
            vote: Vote {
                id: VoteId::new(),
                poll_id: poll.id,
                participant_id: voter,
                choice: Choice::Rating(3),
                submitted_at: now(),
                client_submitted_at: None,
            },
            session_id: sid,
        },
        DomainEvent::ParticipantJoined {
            participant: state.participant.clone().unwrap(),
            at: now(),
            participant_count: 1,
        },
        DomainEvent::ParticipantDisconnected {
            participant_id: voter,
            session_id: sid,
            at: now(),
            participant_count: 0,
        },
    ];
    for event in &events {
        let stored = event.to_new_event(&trace(), None);
        assert_eq!(payload(&stored)["sessionId"], sid.to_string(), "{event:?}");
        assert_eq!(stored.trace_id, trace());
        let expected_topic = if matches!(event, DomainEvent::VoteAccepted { .. }) {
            format!("participant:{voter}")
        } else {
            format!("session:{sid}")
        };
        assert_eq!(stored.topic.as_str(), expected_topic, "{event:?}");
        assert!(!stored.payload.get().contains('\n'));
    }
}
