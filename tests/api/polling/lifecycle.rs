//! The session and poll state machines over HTTP, and a snapshot that
//! meets its stream exactly.

use super::*;

async fn the_state_machine_refuses_what_it_does_not_allow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Rules").await;
    let p = |s: &str| format!("/v1/sessions/{}/{s}", session.id);
    let first = session.choice_poll(&app, true).await;
    let second = session.choice_poll(&app, true).await;
    let activate = |poll: &Value| poll_path(poll, "activate");
    // A poll opens only in an active session; a draft session cannot end.
    let (status, body) = post(&app, Some(&session.presenter), &activate(&first), json!({})).await;
    assert_eq!((status, error_code(&body)), (409, "conflict"));
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
    assert_eq!((status, error_code(&body)), (409, "conflict"));
}
on_both_stores!(state_machine, the_state_machine_refuses_what_it_does_not_allow);

async fn a_snapshot_and_a_stream_from_its_last_event_id_meet_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (session, poll) = session_with_open_poll(&app, "Snapshot", true).await;
    let voter = session.join(&app, None).await;
    vote(&app, &voter, &poll, selecting(&poll, 2)).await;
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
async fn with_a_public_url_sessions_carry_their_join_link() {
    for backend in [Backend::Memory, Backend::Postgres] {
        let public = pollcast::config::PublicUrl::parse("https://poll.example.org/room/").unwrap();
        let app = TestApp::spawn_with(backend, |c| c.public_url = Some(public)).await;
        let (status, created) = post(&app, None, "/v1/sessions", json!({"title": "All hands"})).await;
        assert_eq!(status, 201);
        let slug = created["slug"].as_str().unwrap();
        let expected = format!("https://poll.example.org/room/join?code={slug}");
        assert_eq!(created["joinUrl"], expected.as_str(), "{backend:?}");
        let (status, snapshot) = get(&app, None, &format!("/v1/sessions/{slug}")).await;
        assert_eq!(status, 200);
        assert_eq!(snapshot["joinUrl"], expected.as_str(), "{backend:?}");
    }
    // Without one, no link: the server does not know the audience's address.
    let app = TestApp::spawn(Backend::Memory).await;
    let (_, created) = post(&app, None, "/v1/sessions", json!({"title": "Local"})).await;
    assert!(created.get("joinUrl").is_none(), "{created}");
}
