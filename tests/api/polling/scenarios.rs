//! The catalog's three live polling scenarios end to end: a presenter
//! runs a session, a participant joins and votes, a client reconnects and
//! replays what it missed.

use super::*;

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
    let (session, poll) = session_with_open_poll(&app, "Quiz", false).await;
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
    let (status, confirmation) = vote(&app, &ann, &poll, selecting(&poll, 1)).await;
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
    let (status, refusal) = vote(&app, &ann, &poll, selecting(&poll, 0)).await;
    assert_eq!((status, error_code(&refusal)), (409, "duplicate_vote"));
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
    let (status, _) = vote(&app, &bob, &first, selecting(&first, 0)).await;
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
