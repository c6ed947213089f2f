//! Live polling end to end: the catalog's three scenarios, privacy of
//! voters, concurrency, authorization, bad input, presence, snapshots.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{data, Backend, SseClient, TestApp};
use crate::on_both_stores;
use crate::polling_helpers::{create_session, get, option_id, post, vote, Participant};

/// The next stored events, checked against the expected types in order.
async fn expect(client: &mut SseClient, types: &[&str]) -> Vec<Value> {
    let mut payloads = Vec::new();
    for expected in types {
        let event = client.next_stored().await;
        assert_eq!(&event.event, expected, "got {} instead", event.data);
        let envelope = data(&event);
        assert_eq!(envelope["id"].as_str().unwrap(), event.id);
        assert_eq!(envelope["type"], *expected);
        payloads.push(envelope["payload"].clone());
    }
    payloads
}

/// The next stored event on one topic of a merged stream.
async fn next_on(client: &mut SseClient, topic: &str) -> eventsource_stream::Event {
    loop {
        let event = client.next_stored().await;
        if data(&event)["topic"] == topic {
            return event;
        }
    }
}

fn keys(value: &Value) -> HashSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn assert_fields(payload: &Value, fields: &[&str]) {
    for field in fields {
        assert!(payload.get(field).is_some(), "missing {field} in {payload}");
    }
    assert!(
        payload["sessionId"].is_string(),
        "every payload carries sessionId: {payload}"
    );
}

/// Scenario 2 of the catalog: the presenter creates a session and a poll,
/// starts the session, activates the poll; a watcher sees it all in order.
async fn presenter_starts_a_session_and_activates_a_poll(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "All hands").await;
    let mut watcher = session.watch(&app, None, Some("0")).await;
    assert_eq!(watcher.next().await.event, "connection:reconnected");
    let created = expect(&mut watcher, &["session:created"]).await;
    assert_fields(
        &created[0],
        &["sessionId", "title", "slug", "presenterId", "status", "createdAt"],
    );
    assert_eq!(created[0]["status"], "draft");
    assert_eq!(created[0]["title"], "All hands");

    let poll = session.choice_poll(&app, true).await;
    session.start(&app).await;
    session.activate(&app, &poll).await;
    let events = expect(
        &mut watcher,
        &["poll:created", "session:started", "poll:activated"],
    )
    .await;
    assert_fields(
        &events[0],
        &[
            "pollId",
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
    assert_eq!(events[0]["options"].as_array().unwrap().len(), 3);
    assert_eq!(events[0]["options"][0], poll["options"][0]);
    assert_fields(&events[1], &["status", "startedAt", "participantCount"]);
    assert_eq!(events[1]["status"], "active");
    assert_fields(&events[2], &["pollId", "question", "activatedAt"]);
    assert_eq!(events[2]["pollId"], poll["pollId"]);
}
on_both_stores!(
    scenario_presenter,
    presenter_starts_a_session_and_activates_a_poll
);

/// Scenario 1: a participant joins and votes. The session hears the join
/// and the results; only the voter hears its confirmation with its id.
async fn a_participant_joins_and_votes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Quiz").await;
    let poll = session.choice_poll(&app, false).await;
    session.start(&app).await;
    session.activate(&app, &poll).await;
    let mut room = session.watch(&app, None, None).await;
    assert_eq!(room.next().await.event, "connection:established");

    let ann = session.join(&app, Some("Ann")).await;
    let joined = expect(&mut room, &["participant:joined"]).await;
    assert_fields(
        &joined[0],
        &["participantId", "displayName", "joinedAt", "participantCount"],
    );
    assert_eq!(joined[0]["participantId"], ann.id);
    assert_eq!(joined[0]["displayName"], "Ann");
    assert_eq!(joined[0]["participantCount"], 1);

    let mut own = session.watch(&app, Some(&ann.token), None).await;
    own.next().await;
    let (status, confirmation) = vote(
        &app,
        &ann,
        &poll,
        json!({"selectedOptionIds": [option_id(&poll, 1)]}),
    )
    .await;
    assert_eq!(status, 201, "{confirmation}");
    assert_eq!(confirmation["participantId"], ann.id);

    let own_topic = format!("participant:{}", ann.id);
    let event = next_on(&mut own, &own_topic).await;
    assert_eq!(event.event, "vote:accepted");
    let unicast = [data(&event)["payload"].clone()];
    assert_fields(
        &unicast[0],
        &[
            "voteId",
            "pollId",
            "participantId",
            "submittedAt",
            "currentVoteCount",
            "voteBreakdown",
            "averageRating",
            "ratingDistribution",
        ],
    );
    assert_eq!(unicast[0]["participantId"], ann.id);
    assert_eq!(unicast[0], confirmation);

    let broadcast = expect(&mut room, &["vote:accepted"]).await;
    assert_fields(
        &broadcast[0],
        &[
            "voteId",
            "pollId",
            "submittedAt",
            "currentVoteCount",
            "voteBreakdown",
        ],
    );
    assert!(broadcast[0].get("participantId").is_none());
    assert_eq!(broadcast[0]["currentVoteCount"], 1);
    let breakdown = &broadcast[0]["voteBreakdown"];
    assert_eq!(breakdown[1]["voteCount"], 1);
    assert_eq!(breakdown[1]["percentage"], 100.0);
    assert_eq!(breakdown[0]["voteCount"], 0);

    // A second vote is refused, by HTTP and on the voter's own topic.
    let (status, refusal) = vote(
        &app,
        &ann,
        &poll,
        json!({"selectedOptionIds": [option_id(&poll, 0)]}),
    )
    .await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str().unwrap()),
        (409, "duplicate_vote")
    );
    let event = next_on(&mut own, &own_topic).await;
    assert_eq!(event.event, "vote:rejected");
    let rejected = [data(&event)["payload"].clone()];
    assert_fields(
        &rejected[0],
        &["pollId", "participantId", "reason", "message", "timestamp"],
    );
    assert_eq!(rejected[0]["reason"], "duplicate_vote");
    // The room hears nothing about the refused vote.
    assert!(room.next_within(Duration::from_millis(400)).await.is_none());
}
on_both_stores!(scenario_participant, a_participant_joins_and_votes);

/// Scenario 3: a participant's connection drops; it is reported gone after
/// the grace period; it reconnects with Last-Event-ID, gets what it
/// missed in order, and is counted again.
async fn a_client_reconnects_after_a_disconnect_and_replays(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.grace_period = Duration::from_millis(300)).await;
    let session = create_session(&app, "Town hall").await;
    let first = session.choice_poll(&app, true).await;
    let second = session
        .create_poll(&app, json!({"question": "Rate us", "pollType": "rating_scale"}))
        .await;
    session.start(&app).await;
    session.activate(&app, &first).await;
    let bob = session.join(&app, Some("Bob")).await;
    let mut room = session.watch(&app, None, None).await;
    room.next().await;

    let mut bobs = session.watch(&app, Some(&bob.token), None).await;
    bobs.next().await;
    let (status, _) = vote(
        &app,
        &bob,
        &first,
        json!({"selectedOptionIds": [option_id(&first, 0)]}),
    )
    .await;
    assert_eq!(status, 201);
    let seen = bobs.next_stored().await;
    assert_eq!(seen.event, "vote:accepted");
    let last_seen = seen.id.clone();
    drop(bobs);

    let gone = expect(&mut room, &["vote:accepted", "participant:disconnected"]).await;
    assert_fields(&gone[1], &["participantId", "disconnectedAt", "participantCount"]);
    assert_eq!(gone[1]["participantId"], bob.id);
    assert_eq!(gone[1]["participantCount"], 0);

    // While Bob is away: the next poll replaces the first, then the end.
    session.activate(&app, &second).await;
    session.end(&app).await;

    let mut back = session.watch(&app, Some(&bob.token), Some(&last_seen)).await;
    let hello = back.next().await;
    assert_eq!(hello.event, "connection:reconnected");
    let missed = [
        "vote:accepted",
        "participant:disconnected",
        "poll:closed",
        "poll:activated",
        "poll:closed",
        "session:ended",
    ];
    assert_eq!(data(&hello)["payload"]["replayCount"], missed.len());
    let replayed = expect(&mut back, &missed).await;
    assert_eq!(replayed[2]["pollId"], first["pollId"]);
    assert_eq!(replayed[2]["finalVoteCount"], 1);
    assert_eq!(replayed[3]["pollId"], second["pollId"]);
    assert_eq!(replayed[4]["pollId"], second["pollId"]);
    assert_fields(&replayed[5], &["status", "endedAt", "finalParticipantCount"]);
    // The session has ended: coming back is not a new presence.
    assert!(back.next_within(Duration::from_millis(400)).await.is_none());
}
on_both_stores!(
    scenario_reconnect,
    a_client_reconnects_after_a_disconnect_and_replays
);

async fn a_returning_participant_is_counted_again(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.grace_period = Duration::from_millis(200)).await;
    let session = create_session(&app, "Presence").await;
    session.start(&app).await;
    let mut room = session.watch(&app, None, None).await;
    room.next().await;
    let cleo = session.join(&app, None).await;
    let dan = session.join(&app, None).await; // never opens a stream: stays present
    expect(&mut room, &["participant:joined", "participant:joined"]).await;

    let stream = session.watch(&app, Some(&cleo.token), None).await;
    // A quick reconnect within the grace period does not flap.
    drop(stream);
    let again = session.watch(&app, Some(&cleo.token), None).await;
    assert!(
        room.next_within(Duration::from_millis(500)).await.is_none(),
        "no flap within the grace period"
    );
    drop(again);
    let left = expect(&mut room, &["participant:disconnected"]).await;
    assert_eq!(left[0]["participantCount"], 1, "Dan is still present");
    assert_eq!(session.snapshot(&app).await["participantCount"], 1);

    let _back = session.watch(&app, Some(&cleo.token), None).await;
    let rejoined = expect(&mut room, &["participant:joined"]).await;
    assert_eq!(rejoined[0]["participantId"], cleo.id);
    assert_eq!(rejoined[0]["participantCount"], 2);
    let _ = dan;
}
on_both_stores!(presence, a_returning_participant_is_counted_again);

/// No broadcast frame ever carries a voter's identity, for anonymous and
/// non-anonymous polls of every type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broadcast_frame_carries_a_voter_identity() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.results_interval = Duration::from_millis(20)
    })
    .await;
    let session = create_session(&app, "Privacy").await;
    let mut raw = app
        .http
        .get(app.url(&format!("/v1/sessions/{}/events", session.id)))
        .send()
        .await
        .unwrap();
    let polls = vec![
        session.choice_poll(&app, true).await,
        session.choice_poll(&app, false).await,
        session
            .create_poll(
                &app,
                json!({"question": "Rate", "pollType": "rating_scale", "isAnonymous": false}),
            )
            .await,
        session
            .create_poll(
                &app,
                json!({"question": "Say", "pollType": "open_text", "isAnonymous": false}),
            )
            .await,
        session
            .create_poll(
                &app,
                json!({"question": "Say", "pollType": "open_text", "isAnonymous": true}),
            )
            .await,
    ];
    session.start(&app).await;
    let mut voters = Vec::new();
    for n in 0..12 {
        voters.push(session.join(&app, Some(&format!("Voter {n}"))).await);
    }
    for poll in &polls {
        session.activate(&app, poll).await;
        for (n, voter) in voters.iter().enumerate() {
            let data = match poll["pollType"].as_str().unwrap() {
                "multiple_choice" => json!({"selectedOptionIds": [option_id(poll, n % 3)]}),
                "rating_scale" => json!({"ratingValue": 1 + (n % 5)}),
                _ => json!({"textResponse": format!("answer {n}")}),
            };
            assert_eq!(vote(&app, voter, poll, data).await.0, 201);
        }
    }
    session.end(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut text = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(500), raw.chunk())
        .await
        .map(|c| c.unwrap())
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let broadcasts = text.matches("event: vote:accepted").count();
    assert!(broadcasts >= polls.len(), "results were broadcast ({broadcasts})");
    for voter in &voters {
        for frame in text.split("\n\n").filter(|f| f.contains("event: vote:accepted")) {
            assert!(
                !frame.contains(&voter.id),
                "a results broadcast names a voter: {frame}"
            );
            assert!(
                !frame.contains("participantId"),
                "a results broadcast has a participantId: {frame}"
            );
            assert!(
                !frame.contains("Voter "),
                "a results broadcast has a display name: {frame}"
            );
        }
    }
    // The final broadcast of each poll carries its final totals.
    for poll in &polls {
        let id = poll["pollId"].as_str().unwrap();
        let last = text
            .split("\n\n")
            .filter(|f| f.contains("event: vote:accepted") && f.contains(id))
            .last()
            .unwrap();
        assert!(
            last.contains("\"currentVoteCount\":12"),
            "final totals in the last broadcast: {last}"
        );
    }
}

/// Hundreds of participants vote at once, some twice, some after close:
/// the counts equal the accepted votes, one per participant, and every
/// late vote is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_votes_end_with_exact_counts_and_one_vote_each() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let session = create_session(&app, "Storm").await;
    let poll = session.choice_poll(&app, true).await;
    session.start(&app).await;
    session.activate(&app, &poll).await;
    let mut participants = Vec::new();
    for _ in 0..300 {
        participants.push(session.join(&app, None).await);
    }
    let options: Vec<String> = (0..3).map(|i| option_id(&poll, i)).collect();
    let mut tasks = Vec::new();
    for (n, participant) in participants.iter().enumerate() {
        let times = if n % 5 == 0 { 2 } else { 1 };
        for t in 0..times {
            let http = app.http.clone();
            let url = app.url(&format!("/v1/polls/{}/votes", poll["pollId"].as_str().unwrap()));
            let token = participant.token.clone();
            let option = options[(n + t) % 3].clone();
            tasks.push(tokio::spawn(async move {
                let response = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"voteData": {"selectedOptionIds": [option]}}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (status, body)
            }));
        }
    }
    let mut accepted = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            201 => accepted += 1,
            409 => assert_eq!(body["error"]["code"], "duplicate_vote"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted, 300, "exactly one vote per participant");
    session.close(&app, &poll).await;
    let (status, late) = vote(
        &app,
        &participants[1],
        &poll,
        json!({"selectedOptionIds": [options[0].clone()]}),
    )
    .await;
    assert_eq!(
        (status, late["error"]["code"].as_str().unwrap()),
        (409, "poll_closed")
    );

    let db = app.db.as_ref().unwrap().client().await;
    let votes: i64 = db
        .query_one("SELECT count(*) FROM votes", &[])
        .await
        .unwrap()
        .get(0);
    let distinct: i64 = db
        .query_one("SELECT count(DISTINCT participant_id) FROM votes", &[])
        .await
        .unwrap()
        .get(0);
    let counter: i64 = db
        .query_one("SELECT vote_count FROM polls", &[])
        .await
        .unwrap()
        .get(0);
    let option_sum: i64 = db
        .query_one("SELECT sum(vote_count)::bigint FROM poll_options", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((votes, distinct, counter, option_sum), (300, 300, 300, 300));
    let (_, results) = get(
        &app,
        Some(&session.presenter),
        &format!("/v1/polls/{}/results", poll["pollId"].as_str().unwrap()),
    )
    .await;
    assert_eq!(results["currentVoteCount"], 300);
    let total: i64 = results["voteBreakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["voteCount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 300);
}

/// A room joins at once, by id and by join code, mixed with joins to an
/// ended session and to one that does not exist: every join to the live
/// session is answered 201 with its own id, working token and the count
/// after it (1 to N, each once); the others get their own 409 or 404
/// without disturbing anyone; the room sees one `participant:joined` per
/// participant and the session counts exactly N.
async fn a_room_joining_at_once_is_counted_exactly(backend: Backend) {
    const ROOM: usize = 150;
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Keynote").await;
    let poll = session.choice_poll(&app, true).await;
    session.start(&app).await;
    session.activate(&app, &poll).await;
    let over = create_session(&app, "Yesterday").await;
    over.start(&app).await;
    over.end(&app).await;
    let mut room = session.watch(&app, None, None).await;
    room.next().await;

    let unknown = uuid::Uuid::new_v4().to_string();
    let mut paths: Vec<(&str, String)> = (0..ROOM)
        .map(|n| {
            let key = if n % 2 == 0 {
                session.id.clone()
            } else {
                session.slug.to_uppercase()
            };
            ("live", key)
        })
        .collect();
    paths.extend((0..10).map(|_| ("ended", over.slug.clone())));
    paths.extend((0..10).map(|_| ("unknown", unknown.clone())));
    let joins: Vec<_> = paths
        .into_iter()
        .enumerate()
        .map(|(n, (kind, key))| {
            let http = app.http.clone();
            let url = app.url(&format!("/v1/sessions/{key}/participants"));
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .json(&json!({ "displayName": format!("guest {n}") }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (kind, status, response.json::<Value>().await.unwrap())
            })
        })
        .collect();

    let mut joined = Vec::new();
    for join in joins {
        let (kind, status, body) = join.await.unwrap();
        match kind {
            "live" => {
                assert_eq!(status, 201, "{body}");
                assert_eq!(body["sessionId"], session.id.as_str());
                joined.push(body);
            }
            "ended" => assert_eq!(
                (status, &body["error"]["code"]),
                (409, &json!("conflict")),
                "{body}"
            ),
            _ => assert_eq!(
                (status, &body["error"]["code"]),
                (404, &json!("not_found")),
                "{body}"
            ),
        }
    }
    let ids: HashSet<&str> = joined
        .iter()
        .map(|b| b["participantId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ROOM, "each participant has its own id");
    let mut counts: Vec<i64> = joined
        .iter()
        .map(|b| b["participantCount"].as_i64().unwrap())
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        (1..=ROOM as i64).collect::<Vec<_>>(),
        "each join counted once, in order"
    );
    assert_eq!(session.snapshot(&app).await["participantCount"], ROOM);

    let announced = expect(&mut room, &["participant:joined"; ROOM]).await;
    let announced_ids: HashSet<&str> = announced
        .iter()
        .map(|e| e["participantId"].as_str().unwrap())
        .collect();
    assert_eq!(announced_ids, ids);
    let last = announced.last().unwrap();
    assert_eq!(
        last["participantCount"], ROOM,
        "the room's last count is the total: {last}"
    );

    // The tokens are the participants': they vote as themselves.
    let option = option_id(&poll, 0);
    for body in joined.iter().take(3) {
        let participant = Participant {
            id: body["participantId"].as_str().unwrap().into(),
            token: body["participantToken"].as_str().unwrap().into(),
        };
        let (status, vote) = vote(
            &app,
            &participant,
            &poll,
            json!({"selectedOptionIds": [option.clone()]}),
        )
        .await;
        assert_eq!(status, 201, "{vote}");
        assert_eq!(vote["participantId"], participant.id.as_str());
    }
}
on_both_stores!(join_storm, a_room_joining_at_once_is_counted_exactly);

async fn the_state_machine_refuses_what_it_does_not_allow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Rules").await;
    let p = |s: &str| format!("/v1/sessions/{}/{s}", session.id);
    let first = session.choice_poll(&app, true).await;
    let second = session.choice_poll(&app, true).await;
    let activate = |poll: &Value| format!("/v1/polls/{}/activate", poll["pollId"].as_str().unwrap());
    // A poll opens only in an active session; a draft session cannot end.
    let (status, body) = post(&app, Some(&session.presenter), &activate(&first), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (409, "conflict")
    );
    assert_eq!(
        post(&app, Some(&session.presenter), &p("end"), json!({})).await.0,
        409
    );
    session.start(&app).await;
    assert_eq!(
        post(&app, Some(&session.presenter), &p("start"), json!({}))
            .await
            .0,
        409
    );

    let mut room = session.watch(&app, None, None).await;
    room.next().await;
    session.activate(&app, &first).await;
    session.activate(&app, &second).await;
    let events = expect(&mut room, &["poll:activated", "poll:closed", "poll:activated"]).await;
    assert_eq!(
        events[1]["pollId"], first["pollId"],
        "activating another closes the open one first"
    );
    // Nothing reopens.
    assert_eq!(
        post(&app, Some(&session.presenter), &activate(&first), json!({}))
            .await
            .0,
        409
    );
    let snapshot = session.snapshot(&app).await;
    assert_eq!(snapshot["activePollId"], second["pollId"]);

    session.end(&app).await;
    let ended = expect(&mut room, &["poll:closed", "session:ended"]).await;
    assert_eq!(ended[0]["pollId"], second["pollId"]);
    for path in [p("start"), p("end"), activate(&second)] {
        assert_eq!(
            post(&app, Some(&session.presenter), &path, json!({})).await.0,
            409,
            "{path}"
        );
    }
    let (status, body) = post(
        &app,
        None,
        &format!("/v1/sessions/{}/participants", session.slug),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (409, "conflict")
    );
}
on_both_stores!(state_machine, the_state_machine_refuses_what_it_does_not_allow);

async fn every_vote_rejection_reason_is_answered_and_told_to_the_voter(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.vote_rate = 100).await;
    let session = create_session(&app, "Reasons").await;
    let choice = session.choice_poll(&app, true).await;
    let other = session.choice_poll(&app, true).await;
    let (rating, text) = session.rating_and_text_polls(&app).await;
    session.start(&app).await;
    let eve = session.join(&app, None).await;
    let mut own = session.watch(&app, Some(&eve.token), None).await;
    own.next().await;

    let cases: Vec<(&Value, Value, u16, &str, Option<&Value>)> = vec![
        (
            &choice,
            json!({"selectedOptionIds": [option_id(&choice, 0)]}),
            409,
            "poll_not_active",
            None,
        ),
        (
            &choice,
            json!({"selectedOptionIds": [option_id(&other, 0)]}),
            422,
            "invalid_option",
            Some(&choice),
        ),
        (
            &choice,
            json!({"selectedOptionIds": [option_id(&choice, 0), option_id(&choice, 1)]}),
            422,
            "invalid_option",
            Some(&choice),
        ),
        (
            &rating,
            json!({"ratingValue": 4}),
            422,
            "invalid_rating",
            Some(&rating),
        ),
        (
            &text,
            json!({"textResponse": "   "}),
            422,
            "invalid_text",
            Some(&text),
        ),
        (
            &text,
            json!({"textResponse": "x".repeat(501)}),
            422,
            "invalid_text",
            Some(&text),
        ),
    ];
    for (poll, vote_data, status, reason, open_first) in cases {
        if let Some(poll) = open_first {
            if session.snapshot(&app).await["activePollId"] != poll["pollId"] {
                session.activate(&app, poll).await;
            }
        }
        let (got, body) = vote(&app, &eve, poll, vote_data).await;
        assert_eq!(
            (got, body["error"]["code"].as_str().unwrap()),
            (status, reason),
            "{body}"
        );
        let event = next_on(&mut own, &format!("participant:{}", eve.id)).await;
        assert_eq!(event.event, "vote:rejected");
        assert_eq!(data(&event)["payload"]["reason"], reason);
    }
    session.close(&app, &text).await;
    let (status, body) = vote(&app, &eve, &text, json!({"textResponse": "late"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (409, "poll_closed")
    );
}
on_both_stores!(
    rejections,
    every_vote_rejection_reason_is_answered_and_told_to_the_voter
);

/// Each confirmation carries the tally as it stands after that vote: the
/// rating distribution and its average (two decimals), the newest text answers oldest
/// first. On Postgres the tallies are read in the same round trip as the
/// vote's write, so this would catch a tally read before the write.
async fn each_confirmation_carries_the_tally_after_its_vote(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Tallies").await;
    let (rating, text) = session.rating_and_text_polls(&app).await;
    session.start(&app).await;
    let mut voters = Vec::new();
    for _ in 0..3 {
        voters.push(session.join(&app, None).await);
    }
    session.activate(&app, &rating).await;
    let expected = [
        (json!({"1": 0, "2": 0, "3": 1}), 3.0),
        (json!({"1": 1, "2": 0, "3": 1}), 2.0),
        (json!({"1": 1, "2": 0, "3": 2}), 2.33),
    ];
    for ((voter, value), (distribution, average)) in voters.iter().zip([3, 1, 3]).zip(expected) {
        let (status, body) = vote(&app, voter, &rating, json!({"ratingValue": value})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["ratingDistribution"], distribution);
        assert_eq!(body["averageRating"], average, "{body}");
    }
    session.activate(&app, &text).await;
    for (n, (voter, answer)) in voters.iter().zip(["first", "second", "third"]).enumerate() {
        let (status, body) = vote(&app, voter, &text, json!({"textResponse": answer})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["currentVoteCount"], n + 1);
        let said: Vec<&str> = ["first", "second", "third"][..=n].to_vec();
        assert_eq!(body["textResponses"], json!(said));
    }
}
on_both_stores!(tallies, each_confirmation_carries_the_tally_after_its_vote);

#[tokio::test]
async fn poll_definitions_outside_the_rules_are_422_naming_the_field_and_create_nothing() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let session = create_session(&app, "Definitions").await;
    let path = format!("/v1/sessions/{}/polls", session.id);
    let options = |n: usize| (0..n).map(|i| format!("option {i}")).collect::<Vec<_>>();
    let cases = vec![
        (
            json!({"question": "Q", "pollType": "multiple_choice", "options": options(1)}),
            "options",
        ),
        (
            json!({"question": "Q", "pollType": "multiple_choice", "options": options(21)}),
            "options",
        ),
        (
            json!({"question": "Q", "pollType": "rating_scale", "minRating": 5, "maxRating": 5}),
            "minRating",
        ),
        (json!({"question": "  ", "pollType": "open_text"}), "question"),
        (
            json!({"question": "Q".repeat(501), "pollType": "open_text"}),
            "question",
        ),
        (json!({"question": "Q", "pollType": "ranking"}), "pollType"),
        (
            json!({"question": "Q", "pollType": "multiple_choice", "options": ["a", "x".repeat(201)]}),
            "options",
        ),
        (json!({"pollType": "open_text"}), "question"),
    ];
    for (definition, field) in cases {
        let (status, body) = post(&app, Some(&session.presenter), &path, definition.clone()).await;
        assert_eq!(status, 422, "{definition}: {body}");
        assert_eq!(body["error"]["code"], "invalid_payload");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{field} named in {body}"
        );
    }
    assert_eq!(
        session.snapshot(&app).await["polls"],
        json!([]),
        "nothing half-created"
    );
    let ok = session
        .create_poll(
            &app,
            json!({"question": "Q", "pollType": "multiple_choice", "options": options(20)}),
        )
        .await;
    assert_eq!(ok["options"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn unknown_ids_are_404_and_malformed_ids_400() {
    let app = TestApp::spawn(Backend::Memory).await;
    let session = create_session(&app, "Ids").await;
    let unknown = uuid::Uuid::new_v4();
    let t = Some(session.presenter.as_str());
    assert_eq!(get(&app, None, &format!("/v1/sessions/{unknown}")).await.0, 404);
    assert_eq!(get(&app, None, "/v1/sessions/nosuchcode").await.0, 404);
    assert_eq!(get(&app, None, "/v1/sessions/not%20a%20code").await.0, 400);
    assert_eq!(
        post(&app, t, &format!("/v1/polls/{unknown}/activate"), json!({}))
            .await
            .0,
        404
    );
    assert_eq!(post(&app, t, "/v1/polls/xyz/activate", json!({})).await.0, 400);
    assert_eq!(post(&app, t, "/v1/sessions/xyz/start", json!({})).await.0, 400);
    assert_eq!(
        post(
            &app,
            None,
            &format!("/v1/sessions/{unknown}/participants"),
            json!({})
        )
        .await
        .0,
        404
    );
    let response = app
        .http
        .get(app.url(&format!("/v1/sessions/{unknown}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = app
        .http
        .get(app.url("/v1/sessions/bad/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Joining by slug or by id both work.
    assert_eq!(
        post(
            &app,
            None,
            &format!("/v1/sessions/{}/participants", session.id),
            json!({})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        post(
            &app,
            None,
            &format!("/v1/sessions/{}/participants", session.slug.to_uppercase()),
            json!({})
        )
        .await
        .0,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_right_people_may_do_each_thing() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mine = create_session(&app, "Mine").await;
    let theirs = create_session(&app, "Theirs").await;
    let poll = mine.choice_poll(&app, true).await;
    let named = mine.choice_poll(&app, false).await;
    mine.start(&app).await;
    mine.activate(&app, &poll).await;
    let alice = mine.join(&app, None).await;
    let mallory = theirs.join(&app, None).await;
    let poll_path = |s: &str| format!("/v1/polls/{}/{s}", poll["pollId"].as_str().unwrap());
    let start = format!("/v1/sessions/{}/start", mine.id);

    // Presenter commands: no token 401, participant or other presenter 403.
    assert_eq!(post(&app, None, &start, json!({})).await.0, 401);
    assert_eq!(post(&app, Some("garbage"), &start, json!({})).await.0, 401);
    assert_eq!(post(&app, Some(&alice.token), &start, json!({})).await.0, 403);
    assert_eq!(
        post(&app, Some(&theirs.presenter), &start, json!({})).await.0,
        403
    );
    assert_eq!(
        post(&app, Some(&theirs.presenter), &poll_path("close"), json!({}))
            .await
            .0,
        403
    );
    assert_eq!(
        post(&app, Some(&alice.token), &poll_path("close"), json!({}))
            .await
            .0,
        403
    );
    let generic = app.demo_token();
    assert_eq!(
        post(&app, Some(&generic), &poll_path("close"), json!({})).await.0,
        403
    );

    // Votes: only a participant of the poll's session, only as itself.
    let data = json!({"voteData": {"selectedOptionIds": [option_id(&poll, 0)]}});
    assert_eq!(post(&app, None, &poll_path("votes"), data.clone()).await.0, 401);
    assert_eq!(
        post(&app, Some(&mine.presenter), &poll_path("votes"), data.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        post(&app, Some(&mallory.token), &poll_path("votes"), data.clone())
            .await
            .0,
        403
    );
    let mut as_other = data.clone();
    as_other["participantId"] = json!(mallory.id);
    assert_eq!(
        post(&app, Some(&alice.token), &poll_path("votes"), as_other)
            .await
            .0,
        403
    );
    assert_eq!(
        post(&app, Some(&alice.token), &poll_path("votes"), data.clone())
            .await
            .0,
        201
    );

    // A participant's topic is readable with that participant's token only.
    let topic = format!("participant:{}", alice.id);
    for token in [&mallory.token, &mine.presenter] {
        let response = app
            .http
            .get(app.url("/v1/events"))
            .query(&[("topic", topic.as_str()), ("access_token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
    }
    let response = app
        .http
        .get(app.url("/v1/events"))
        .query(&[("topic", topic.as_str()), ("access_token", alice.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .http
        .get(app.url(&format!("/v1/sessions/{}/events", mine.id)))
        .query(&[("access_token", mallory.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "a token of another session");

    // Results: anyone in the session; voter identities: the presenter, on
    // non-anonymous polls only.
    assert_eq!(get(&app, Some(&alice.token), &poll_path("results")).await.0, 200);
    assert_eq!(
        get(&app, Some(&mallory.token), &poll_path("results")).await.0,
        403
    );
    assert_eq!(get(&app, None, &poll_path("results")).await.0, 401);
    assert_eq!(
        get(&app, Some(&mine.presenter), &poll_path("votes")).await.0,
        403,
        "anonymous poll"
    );
    assert_eq!(get(&app, Some(&alice.token), &poll_path("votes")).await.0, 403);
    mine.activate(&app, &named).await;
    let named_path = format!("/v1/polls/{}/votes", named["pollId"].as_str().unwrap());
    let named_data = json!({"voteData": {"selectedOptionIds": [option_id(&named, 2)]}});
    assert_eq!(
        post(&app, Some(&alice.token), &named_path, named_data).await.0,
        201
    );
    let (status, list) = get(&app, Some(&mine.presenter), &named_path).await;
    assert_eq!(status, 200);
    assert_eq!(list["votes"][0]["participantId"], alice.id);
    assert_eq!(get(&app, Some(&theirs.presenter), &named_path).await.0, 403);
}

async fn a_snapshot_and_a_stream_from_its_last_event_id_meet_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Snapshot").await;
    let poll = session.choice_poll(&app, true).await;
    session.start(&app).await;
    session.activate(&app, &poll).await;
    let voter = session.join(&app, None).await;
    vote(
        &app,
        &voter,
        &poll,
        json!({"selectedOptionIds": [option_id(&poll, 2)]}),
    )
    .await;
    // Let the coalesced results broadcast of that vote go out first.
    tokio::time::sleep(Duration::from_millis(400)).await;

    let snapshot = session.snapshot(&app).await;
    assert_eq!(snapshot["status"], "active");
    assert_eq!(snapshot["activePollId"], poll["pollId"]);
    assert_eq!(snapshot["participantCount"], 1);
    assert_eq!(snapshot["polls"][0]["results"]["currentVoteCount"], 1);
    for field in [
        "sessionId",
        "title",
        "slug",
        "presenterId",
        "createdAt",
        "lastEventId",
    ] {
        assert!(snapshot.get(field).is_some(), "{field}");
    }
    let later = session.join(&app, Some("Later")).await;
    let mut stream = session
        .watch(&app, None, Some(snapshot["lastEventId"].as_str().unwrap()))
        .await;
    let hello = stream.next().await;
    assert_eq!(hello.event, "connection:reconnected");
    let events = expect(&mut stream, &["participant:joined"]).await;
    assert_eq!(
        events[0]["participantId"], later.id,
        "exactly the events after the snapshot"
    );
}
on_both_stores!(
    snapshot,
    a_snapshot_and_a_stream_from_its_last_event_id_meet_exactly
);

#[tokio::test]
async fn retried_commands_with_an_idempotency_key_happen_once() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let create = |key: &'static str| {
        app.http
            .post(app.url("/v1/sessions"))
            .header("Idempotency-Key", key)
            .json(&json!({"title": "Once"}))
            .send()
    };
    let first: Value = create("session-key-1").await.unwrap().json().await.unwrap();
    let again: Value = create("session-key-1").await.unwrap().json().await.unwrap();
    assert_eq!(first, again);
    let session = crate::polling_helpers::Session {
        id: first["sessionId"].as_str().unwrap().into(),
        slug: first["slug"].as_str().unwrap().into(),
        presenter: first["presenterToken"].as_str().unwrap().into(),
    };
    let poll = session.choice_poll(&app, true).await;
    session.start(&app).await;
    session.activate(&app, &poll).await;
    let voter = session.join(&app, None).await;
    let url = app.url(&format!("/v1/polls/{}/votes", poll["pollId"].as_str().unwrap()));
    let send = || {
        app.http
            .post(&url)
            .bearer_auth(&voter.token)
            .header("Idempotency-Key", "vote-1")
            .json(&json!({"voteData": {"selectedOptionIds": [option_id(&poll, 0)]}}))
            .send()
    };
    let a = send().await.unwrap();
    assert_eq!(a.status(), 201);
    let a: Value = a.json().await.unwrap();
    let b = send().await.unwrap();
    assert_eq!(
        b.status(),
        201,
        "a retry gets the first answer, not duplicate_vote"
    );
    assert_eq!(a, b.json::<Value>().await.unwrap());
    let db = app.db.as_ref().unwrap().client().await;
    let sessions: i64 = db
        .query_one("SELECT count(*) FROM sessions", &[])
        .await
        .unwrap()
        .get(0);
    let votes: i64 = db
        .query_one("SELECT count(*) FROM votes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((sessions, votes), (1, 1));
}

#[tokio::test]
async fn votes_beyond_the_rate_are_429_with_retry_after() {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.vote_rate = 1).await;
    let session = create_session(&app, "Rate").await;
    let poll = session.choice_poll(&app, true).await;
    session.start(&app).await;
    session.activate(&app, &poll).await;
    let voter = session.join(&app, None).await;
    let data = json!({"selectedOptionIds": [option_id(&poll, 0)]});
    assert_eq!(vote(&app, &voter, &poll, data.clone()).await.0, 201);
    let path = format!("/v1/polls/{}/votes", poll["pollId"].as_str().unwrap());
    let response = app
        .http
        .post(app.url(&path))
        .bearer_auth(&voter.token)
        .json(&json!({ "voteData": data }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_votes_is_broadcast_coalesced_with_final_totals_last() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.results_interval = Duration::from_millis(200)
    })
    .await;
    let session = create_session(&app, "Burst").await;
    let poll = session
        .create_poll(&app, json!({"question": "Rate", "pollType": "rating_scale"}))
        .await;
    session.start(&app).await;
    session.activate(&app, &poll).await;
    let mut voters = Vec::new();
    for _ in 0..40 {
        voters.push(session.join(&app, None).await);
    }
    let mut room = session.watch(&app, None, None).await;
    room.next().await;
    let mut tasks = Vec::new();
    for (n, voter) in voters.into_iter().enumerate() {
        let app_url = app.url(&format!("/v1/polls/{}/votes", poll["pollId"].as_str().unwrap()));
        let http = app.http.clone();
        tasks.push(tokio::spawn(async move {
            http.post(app_url)
                .bearer_auth(voter.token)
                .json(&json!({"voteData": {"ratingValue": 1 + n % 5}}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 201);
    }
    let mut broadcasts = Vec::new();
    while let Some(event) = room.next_within(Duration::from_millis(800)).await {
        if event.event == "vote:accepted" {
            broadcasts.push(data(&event)["payload"].clone());
        }
    }
    assert!(!broadcasts.is_empty());
    assert!(
        broadcasts.len() < 40,
        "coalesced: {} broadcasts for 40 votes",
        broadcasts.len()
    );
    let last = broadcasts.last().unwrap();
    assert_eq!(last["currentVoteCount"], 40);
    assert_eq!(last["averageRating"], 3.0);
    assert_eq!(
        last["ratingDistribution"],
        json!({"1": 8, "2": 8, "3": 8, "4": 8, "5": 8})
    );
    let counts: Vec<i64> = broadcasts
        .iter()
        .map(|b| b["currentVoteCount"].as_i64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "totals only grow: {counts:?}"
    );
    let _ = keys(last);
}

#[tokio::test]
async fn the_admin_key_guards_session_creation_when_set() {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.admin_key = Some("let-me-in".into())).await;
    let (status, body) = post(&app, None, "/v1/sessions", json!({"title": "No key"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (401, "unauthorized")
    );
    let response = app
        .http
        .post(app.url("/v1/sessions"))
        .header("X-Admin-Key", "let-me-in")
        .json(&json!({"title": "Keyed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (status, _) = post(&app, Some("wrong"), "/v1/sessions", json!({"title": "Wrong"})).await;
    assert_eq!(status, 401);
}

/// The stream rows of a node that stopped heartbeating (it crashed) expire
/// after the TTL, and their participants are reported gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_streams_expire_and_their_participants_leave() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.presence_ttl = Duration::from_millis(900)).await;
    let session = create_session(&app, "Crash").await;
    session.start(&app).await;
    let ghost = session.join(&app, None).await;
    let mut room = session.watch(&app, None, None).await;
    room.next().await;
    // A row as a dead node left it: its last heartbeat long ago.
    let db = app.db.as_ref().unwrap().client().await;
    db.execute(
        "INSERT INTO presence_connections (id, node_id, session_id, participant_id, opened_at, last_seen)
         VALUES (gen_random_uuid(), gen_random_uuid(), $1::text::uuid, $2::text::uuid, now() - interval '1 hour', now() - interval '1 hour')",
        &[&session.id, &ghost.id],
    )
    .await
    .unwrap();
    let left = expect(&mut room, &["participant:disconnected"]).await;
    assert_eq!(left[0]["participantId"], ghost.id);
    assert_eq!(left[0]["participantCount"], 0);
    let rows: i64 = db
        .query_one("SELECT count(*) FROM presence_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_generic_token_never_reads_a_participants_own_topic() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let session = create_session(&app, "Private").await;
    session.start(&app).await;
    let poll = session.choice_poll(&app, false).await;
    session.activate(&app, &poll).await;
    let voter = session.join(&app, None).await;
    let firehose_token = app.token(&[], &["*:*", "participant:*"]);
    let firehose = app
        .subscribe_with(&app.token(&[], &["*:*"]), &["*:*"], None)
        .await;
    let (status, _) = vote(
        &app,
        &voter,
        &poll,
        json!({"selectedOptionIds": [option_id(&poll, 0)]}),
    )
    .await;
    assert_eq!(status, 201);

    // Asked for by name: refused, even with a permission that covers it.
    for path in [
        format!("/v1/events?topic=participant:{}", voter.id),
        format!("/v1/events/history?topic=participant:{}", voter.id),
        "/v1/events/history?topic=participant:*".to_string(),
    ] {
        let (status, body) = get(&app, Some(&firehose_token), &path).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Through a wildcard: the session's events, none of the voter's own.
    let (status, history) = get(&app, Some(&firehose_token), "/v1/events/history?topic=*:*").await;
    assert_eq!(status, 200);
    let topics: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["topic"].as_str().unwrap())
        .collect();
    assert!(topics.iter().any(|t| t.starts_with("session:")), "{topics:?}");
    assert!(
        !topics.iter().any(|t| t.starts_with("participant:")),
        "{topics:?}"
    );
    let mut firehose = firehose;
    let seen = firehose.stored(1).await;
    for event in seen
        .iter()
        .chain(firehose.next_within(Duration::from_millis(500)).await.iter())
    {
        assert!(!data(event)["topic"].as_str().unwrap().starts_with("participant:"));
    }
}
